"""Cells of a run on a Dask cluster: ``facepriv run CONFIG --scheduler local:N | tcp://HOST:PORT``.

The driver (the ``facepriv run`` process) does what a serial run does up to the cells: it
validates, takes the run folder's lock, draws or reads the keys, and embeds each model's photos
once. The cells not yet finished are then submitted to the Dask workers; each finished cell comes
back to the driver as a :class:`~facepriv.experiments.cells.CellOutcome` and the driver, the only
writer, writes it (scores, then the cell's JSON, atomically) and logs one progress line. A cell
computes exactly what it computes in a serial run (same :class:`CellTask`, same seed, same torch
thread count), so ``metrics.json`` is identical.

How the templates reach the workers: they are **scattered** from the driver's memory, once per
model (:meth:`DaskCells.share`); each worker fetches them once and keeps them while the model's
cells run. Not read from ``RUN/cache`` by the workers, because (1) a ``tcp://`` cluster (SLURM
nodes) need not mount the run folder at the same path, or at all, for template-only attacks, and
the driver's copy is the one the serial run uses; (2) the workers then never open a file of the
run folder they did not write, so the single-writer rule is simple; (3) the data are small (a
5,000 x 512 float32 set is 10 MB). The model is not sent: a worker re-creates it from its spec
(weights load lazily) the first time a cell needs it. Attacks that write working files
(reconstruction checkpoints, sample images) write them into their own cell folder under ``--out``,
so those need a shared file system on a ``tcp://`` cluster, as they need the photos.

Keys: a task carries the protection's parameters in a :class:`~facepriv.experiments.cells.Sealed`
box whose ``repr`` is ``<secret>``, and every exception is caught on the worker and returned as
text, so Dask's "compute failed" log lines (which print a task's arguments) never fire. Dask
moves tasks and data with pickle between the driver and workers this run connected to (its own
processes for ``local:N``); a ``tcp://`` scheduler must be one you trust (use ``tls://`` across
networks).

A worker that dies mid-cell (killed, out of memory) loses only that cell: the scheduler re-runs it
on another worker (``distributed.scheduler.allowed-failures`` times, default 3); past that the
cell is reported lost, the others are kept, and running the same command again resumes it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from facepriv.errors import FacePrivError
from facepriv.experiments.cells import CellOutcome, CellTask, run_cell
from facepriv.experiments.config import ComponentSpec, slug
from facepriv.experiments.runner import Runner

log = logging.getLogger(__name__)

#: seconds to wait for a ``tcp://`` scheduler to answer before giving up
CONNECT_TIMEOUT_S = 10.0
#: variables Dask's nanny sets in its workers (BLAS / OpenMP threads to 1, glibc's trim threshold
#: to 64 KiB) that ``local:N`` keeps as they are in this process: the threads decide the float
#: summation order, and the trim threshold (which also fixes glibc's mmap threshold, so every large
#: tensor is mapped and unmapped again) made a reconstruction cell 2x slower on a worker
SERIAL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")
INSTALL_HINT = 'pip install -e ".[cluster]" (or pip install "dask[distributed]")'


class ClusterError(FacePrivError):
    """The Dask cluster cannot be used (dask missing, scheduler unreachable, cells lost)."""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"--scheduler needs Dask, which is not installed: {INSTALL_HINT}") from None
    return distributed


class DaskCells:
    """Runs cells on Dask workers; the driver records them as they finish.

    Parameters
    ----------
    scheduler : str
        ``local:N`` (a LocalCluster of N single-threaded worker processes on this machine) or the
        address of a running scheduler (``tcp://HOST:PORT``, ``tls://HOST:PORT``).
    connect_timeout : float, optional
        Seconds to wait for a remote scheduler (default :data:`CONNECT_TIMEOUT_S`).
    """

    def __init__(self, scheduler: str, connect_timeout: float | None = None) -> None:
        distributed = _import_distributed()
        if connect_timeout is None:
            connect_timeout = CONNECT_TIMEOUT_S
        self.scheduler = scheduler
        self.cluster: Any = None
        self.client: Any = None
        self.pending: dict[Any, tuple[CellTask, dict[str, Any], str, Path]] = {}
        self._threads = _driver_threads()
        self._environ = dict(os.environ)  # a LocalCluster's nanny writes into this process's environment
        # Dask's own INFO lines (nanny start/stop, closed comms at shutdown) would drown the
        # progress lines; shown with -v only
        self._dask_log = logging.getLogger("distributed")
        self._dask_level = self._dask_log.level
        if not log.isEnabledFor(logging.DEBUG):
            self._dask_log.setLevel(logging.WARNING)
        try:
            self._connect(distributed, connect_timeout)
            self._check_versions()
        except BaseException:
            self.close()  # a started LocalCluster, a half-open client: never left behind
            raise

    def _connect(self, distributed: Any, connect_timeout: float) -> None:
        t0 = time.perf_counter()
        scheduler = self.scheduler
        if scheduler.startswith("local:"):
            n = int(scheduler.split(":", 1)[1])
            # processes: torch and NumPy release the GIL only in parts; one thread per worker,
            # the torch thread count of a cell is set per task (see CellTask.threads)
            import dask

            # None: the nanny leaves these as they are here (see SERIAL_ENV), so a worker computes
            # like a serial run on this machine (identical numbers; N workers x this process's threads)
            keep = {k: None for k in SERIAL_ENV}
            try:
                with dask.config.set({"distributed.nanny.pre-spawn-environ": {
                        **dask.config.get("distributed.nanny.pre-spawn-environ", {}), **keep}}):
                    self.cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                            dashboard_address=None, silence_logs=logging.ERROR)
                self.client = distributed.Client(self.cluster, set_as_default=False)
            except Exception as exc:  # noqa: BLE001 - one line, like every user-facing failure
                raise ClusterError(f"--scheduler {scheduler}: could not start a local Dask cluster "
                                   f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                                   "nothing was written") from None
        else:
            probe_scheduler(scheduler, connect_timeout)
            try:
                self.client = distributed.Client(scheduler, timeout=connect_timeout, set_as_default=False)
            except Exception as exc:  # noqa: BLE001 - answered the probe, then failed: one line too
                raise ClusterError(f"--scheduler {scheduler}: cannot connect ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:200]}); nothing was written") from None
        workers = self.client.scheduler_info().get("workers", {})
        log.info("dask: %s, %d worker(s) (%.1f s to connect)", scheduler, len(workers), time.perf_counter() - t0)
        if not workers:
            log.warning("dask: the scheduler has no workers yet; cells wait until workers join")

    def _check_versions(self) -> None:
        """Workers must run the same facepriv: a cell's numbers depend on its code."""
        import facepriv

        try:
            found = self.client.run(_worker_version)
        except Exception as exc:  # noqa: BLE001 - a worker without facepriv cannot even unpickle the call
            raise ClusterError(f"--scheduler {self.scheduler}: a worker cannot run facepriv "
                               f"({type(exc).__name__}); install facepriv {facepriv.__version__} on every worker") from None
        bad = {w: v for w, v in found.items() if v != facepriv.__version__}
        if bad:
            raise ClusterError(f"--scheduler {self.scheduler}: worker(s) run another facepriv "
                               f"({', '.join(f'{w}: {v}' for w, v in sorted(bad.items()))}); this driver "
                               f"runs {facepriv.__version__}")

    # ------------------------------------------------------------------ executor protocol
    def share(self, clean, att, vic, model: Any) -> Any:
        """Scatter one model's templates and splits to the cluster (once; see the module doc)."""
        return self.client.scatter([(clean, att, vic)], hash=False)[0]

    def submit(self, runner: Runner, task: CellTask, shared: Any, sink: dict[str, Any], slot: str,
               cell_path: Path) -> None:
        """Send ``task`` to a worker; :meth:`drain` records it when it finishes."""
        from dataclasses import replace

        task = replace(task, threads=self._threads, work_dir=Path(os.path.abspath(task.work_dir)),
                       image_root=None if task.image_root is None else Path(os.path.abspath(task.image_root)))
        key = f"facepriv-cell-{slug(task.key)}-{uuid.uuid4().hex[:8]}"
        fut = self.client.submit(_work, task, shared, key=key, pure=False)
        self.pending[fut] = (task, sink, slot, cell_path)
        log.debug("cell %s submitted", task.key)

    def drain(self, runner: Runner) -> None:
        """Record every cell as it finishes (one progress line each); raise when cells were lost.

        Raises
        ------
        ClusterError
            A cell's worker died more often than the scheduler allows: the other cells are
            written; the same command resumes the lost ones.
        RuntimeError
            A cell raised an unexpected exception (after the other cells were recorded).
        """
        from distributed import as_completed

        total, done = len(self.pending), 0
        lost: list[str] = []
        crashed: list[str] = []
        for fut in as_completed(list(self.pending), loop=self.client.loop):
            task, sink, slot, cell_path = self.pending.pop(fut)
            done += 1
            try:
                outcome: CellOutcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, CancelledError, a lost connection
                log.warning("cell %s lost (%s: %s) [%d/%d]", task.key, type(exc).__name__,
                            " ".join(str(exc).split())[:200], done, total)
                lost.append(task.key)
                continue
            finally:
                fut.release()
            if outcome.error is not None:
                log.error("cell %s crashed on %s: %s\n%s", task.key, outcome.where, outcome.error, outcome.trace)
                crashed.append(f"{task.key}: {outcome.error}")
                continue
            runner.record(task, outcome, sink, slot, cell_path)
            state = "failed" if outcome.failed is not None else "done"
            log.info("cell %s: %s in %.1f s on %s [%d/%d]", task.key, state, outcome.seconds, outcome.where,
                     done, total)
        if crashed:
            raise RuntimeError(f"{len(crashed)} cell(s) raised on the cluster (the others are written): "
                               + "; ".join(crashed))
        if lost:
            raise ClusterError(f"{len(lost)} cell(s) lost with their Dask worker (killed or out of memory, "
                               f"more often than the scheduler's allowed-failures): {', '.join(lost)}; "
                               "the finished cells are written: run the same command again to resume")

    def close(self) -> None:
        """Disconnect; a LocalCluster this object started is shut down."""
        for fut in list(self.pending):
            fut.cancel()
        self.pending.clear()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        for k in set(os.environ) - set(self._environ):
            del os.environ[k]
        os.environ.update(self._environ)
        self._dask_log.setLevel(self._dask_level)


def probe_scheduler(address: str, timeout: float) -> None:
    """Check, within ``timeout`` seconds, that a Dask scheduler answers at ``address``.

    A TCP connection first (a refused port fails at once), then Dask's handshake, both bounded:
    a closed port, a host that drops packets or a server that is not Dask all end in one line.

    Raises
    ------
    ClusterError
        Nothing answered, or not a Dask scheduler.
    """
    import asyncio
    from urllib.parse import urlsplit

    deadline = time.monotonic() + timeout
    u = urlsplit(address)
    host, port = u.hostname or "", u.port or 0
    fail = f"--scheduler {address}: no Dask scheduler answers there (waited at most {timeout:g} s)"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"{fail} ({type(exc).__name__}: {exc.strerror or exc}); nothing was written") from None

    async def handshake() -> None:
        from distributed.comm import connect
        from distributed.security import Security

        left = max(0.5, deadline - time.monotonic())
        comm = await connect(address, timeout=left, **Security().get_connection_args("client"))
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), max(1.0, deadline - time.monotonic() + 1.0)))
    except (TimeoutError, asyncio.TimeoutError, OSError) as exc:  # silent server, reset connection
        why = "a server accepts connections there but did not complete Dask's handshake in time" \
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "Timed out" in str(exc) \
            else f"{type(exc).__name__}: {' '.join(str(exc).split())[:150]}"
        raise ClusterError(f"{fail} ({why}); nothing was written") from None
    except Exception as exc:  # noqa: BLE001 - a server that is not Dask: its reply decodes to garbage
        # (e.g. a frame length of exabytes -> MemoryError); the decoder's own words would mislead
        raise ClusterError(f"{fail} (the server there does not speak Dask's protocol: its reply could not be "
                           f"read as a Dask message, {type(exc).__name__}); nothing was written") from None


# ---------------------------------------------------------------------- on the worker
_MODELS: dict[str, Any] = {}


def _driver_threads() -> dict[str, int]:
    """This process's thread counts: torch, :func:`machine_threads` and BLAS (NumPy's)."""
    import torch
    from threadpoolctl import threadpool_info

    from facepriv.determinism import machine_threads

    blas = [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"torch": int(torch.get_num_threads()), "machine": machine_threads(),
            "blas": blas[0] if blas else machine_threads()}


def _worker_version() -> str:
    import facepriv

    return facepriv.__version__


def _model(spec: ComponentSpec | None) -> Any:
    """The recognition model of ``spec``, created once per worker process."""
    if spec is None:
        return None
    from facepriv.experiments.config import dump_yaml
    from facepriv.registry import create

    key = dump_yaml(spec.as_dict())
    if key not in _MODELS:
        _MODELS[key] = create("model", spec.name, spec.params)
    return _MODELS[key]


def _work(task: CellTask, shared: tuple[Any, Any, Any]) -> CellOutcome:
    """Run one cell on a worker; every exception comes back as text (never logged with the task)."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    os.environ["FACEPRIV_NO_PROGRESS"] = "1"  # bars of parallel cells would interleave; the driver logs each cell
    try:
        import torch
        from threadpoolctl import threadpool_limits

        before = (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
        n = task.threads or {}
        # the driver's counts, so that the cell sums in the same order as a serial run: BLAS and
        # OpenMP libraries (a remote worker's nanny sets them to 1), then torch's own pool
        with threadpool_limits(limits={"blas": n["blas"], "openmp": n["machine"]} if n else None):
            try:
                if n:
                    torch.set_num_threads(n["torch"])
                    os.environ["OMP_NUM_THREADS"] = str(n["machine"])  # machine_threads() in the cell
                clean, att, vic = shared
                outcome = run_cell(task, clean, att, vic, _model(task.model))
            finally:
                torch.set_num_threads(before[0])
                if before[1] is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = before[1]
    except Exception as exc:  # noqa: BLE001 - reported by the driver, with the traceback's code lines
        return CellOutcome(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                           trace=traceback.format_exc(limit=20), where=where)
    outcome.where = where
    return outcome
