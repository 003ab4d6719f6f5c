"""One cell of the protection x attack matrix as a unit of work: a small task, a pure function.

:class:`CellTask` is everything a cell needs besides the shared templates (keys sealed);
:func:`run_cell` computes it in whatever process it is given to (the ``facepriv run`` process, or a
Dask worker, :mod:`facepriv.experiments.dask_runner`) and returns a :class:`CellOutcome`; only the
driver (:class:`facepriv.experiments.runner.Runner`) writes it into the run folder.
:class:`SerialCells` is the default executor: each cell at once, in the config's order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facepriv.attacks.base import AttackData
from facepriv.determinism import reseed_globals
from facepriv.errors import FacePrivError
from facepriv.experiments.config import ComponentSpec

if TYPE_CHECKING:
    from facepriv.experiments.runner import Runner

log = logging.getLogger("facepriv.experiments.runner")  # the serial progress lines keep their logger name


class Sealed:
    """A value that is sent where it is needed but never shown: its ``repr`` is ``<secret>``.

    Protection parameters hold keys (from the config or the key store); a :class:`CellTask` carries
    them sealed so that no log line, traceback summary or Dask "compute failed" message that prints
    a task's arguments can show them.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    def __getstate__(self) -> tuple[Any]:
        return (self.value,)  # never falsy: copy and pickle always call __setstate__

    def __setstate__(self, state: tuple[Any]) -> None:
        self.value = state[0]


@dataclass(frozen=True)
class CellTask:
    """Everything one cell needs besides the shared templates: small, picklable, keys sealed.

    Attributes
    ----------
    key : str
        ``model/protection/cell`` labels (public; used in logs, ``timings.json``).
    protection : str
        Registered name (or ``module:Class``) of the protection.
    params : Sealed
        The protection's parameters including its key (``params.value``).
    attack : ComponentSpec or None
        The attack; None for the utility cell.
    metrics : tuple of str
        Utility metrics (utility cell only).
    seed : int
        The cell's seed (:func:`cell_seed`).
    work_dir : Path
        The cell's work folder (checkpoints, images).
    image_root : Path or None
    device : str
    model : ComponentSpec or None
        The recognition model, re-created where the cell runs (None for an embeddings file).
    threads : dict or None
        The driver's thread counts (``torch``, ``machine`` = :func:`~facepriv.determinism.machine_threads`,
        ``blas``), applied where the cell runs so that it sums in the same order as a serial run;
        None = as the process is.
    """

    key: str
    protection: str
    params: Sealed = field(repr=False)
    attack: ComponentSpec | None
    metrics: tuple[str, ...]
    seed: int
    work_dir: Path
    image_root: Path | None
    device: str
    model: ComponentSpec | None = None
    threads: dict[str, int] | None = None


@dataclass
class CellOutcome:
    """What a cell sends back to the driver (which alone writes files).

    ``result`` is the cell's JSON content; ``failed`` a user error's message (recorded, the run
    goes on); ``error`` an unexpected exception (``Type: message``) with its ``trace``, caught
    where the cell ran (Dask only; a serial run lets it propagate).
    """

    result: dict[str, Any] | None = None
    scores: dict[str, np.ndarray] | None = None
    failed: str | None = None
    error: str | None = None
    trace: str = ""
    seconds: float = 0.0
    where: str = ""


def run_cell(task: CellTask, clean, att: np.ndarray, vic: np.ndarray, model: Any) -> CellOutcome:
    """Compute one cell in this process (the driver or a worker); writes only its work folder.

    Parameters
    ----------
    task : CellTask
    clean : EmbeddingSet
        Unprotected templates of every sample.
    att, vic : ndarray of int
        Attacker and victim rows of ``clean``.
    model : RecognitionModel or None

    Returns
    -------
    CellOutcome
        ``result`` (and ``scores`` for the utility cell), or ``failed`` when the attack raised a
        :class:`~facepriv.errors.FacePrivError`. Any other exception propagates.
    """
    from facepriv.registry import create

    t0 = time.perf_counter()
    data = AttackData(clean=clean, attacker=att, victim=vic,
                      protection=create("protection", task.protection, task.params.value), model=model,
                      image_root=task.image_root, seed=task.seed, work_dir=task.work_dir, device=task.device)
    reseed_globals(data.seed)
    if task.attack is None:
        from facepriv.experiments.utility import utility_cell

        res, scores = utility_cell(data, task.metrics)
        return CellOutcome(result=res.to_dict(), scores=scores, seconds=time.perf_counter() - t0)
    try:
        out = create("attack", task.attack.name, task.attack.params).run(data)  # type: ignore[attr-defined]
    except FacePrivError as exc:  # e.g. too few identities for this attack: recorded, the run goes on
        return CellOutcome(failed=str(exc), seconds=time.perf_counter() - t0)
    return CellOutcome(result=out.to_dict(), seconds=time.perf_counter() - t0)


class SerialCells:
    """Runs each cell at once, in this process, in the config's order (the default)."""

    def share(self, clean, att: np.ndarray, vic: np.ndarray, model: Any) -> Any:
        """The per-model data the cells of a model read (here: the objects themselves)."""
        return (clean, att, vic, model)

    def submit(self, runner: Runner, task: CellTask, shared: Any, sink: dict[str, Any], slot: str,
               cell_path: Path) -> None:
        """Run ``task`` now and record it (``sink[slot]`` = its result)."""
        log.info("cell %s", task.key)
        runner.record(task, run_cell(task, *shared), sink, slot, cell_path)

    def drain(self, runner: Runner) -> None:
        """Nothing pending: every cell ran when it was submitted."""

    def close(self) -> None:
        """Nothing to release."""
