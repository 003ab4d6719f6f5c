"""`facepriv run --scheduler`: the cells of a matrix on Dask workers, on real faces.

A LocalCluster of 2 single-threaded worker processes gives byte-identical metrics to the serial
run; a worker killed inside a cell (by the cell itself, so the moment is exact) costs only that
cell; a scheduler that does not answer ends the command at once with exit code 2 and nothing
written. ``KillOnceAttack`` below is a plugin attack referenced from the configs as
``test_dask_runner:KillOnceAttack`` (the workers import this module by that name).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from facepriv.attacks.base import AttackData, AttackOutcome
from facepriv.attacks.classifiers import ClassifierAttack

pytestmark = pytest.mark.slow

KEY = 736251904  # PE-MIU key set in the config: must never reach an output or a log line
KILL_ENV = "FACEPRIV_TEST_KILL_MARKER"  # path of the marker file; unset = never kill


class KillOnceAttack(ClassifierAttack):
    """kNN gender classifier that SIGKILLs its own Dask worker the first time (marker file) it runs.

    Parameters
    ----------
    attribute, classifier, cv, seed
        As :class:`~facepriv.attacks.classifiers.ClassifierAttack`.
    """

    summary = "test attack: kills its Dask worker process once, then classifies as kNN"

    def __init__(self, attribute: str = "gender", classifier: str = "knn", cv: int = 0, seed: int = 0) -> None:
        super().__init__(attribute, classifier, cv, seed)

    def run(self, data: AttackData) -> AttackOutcome:
        """Die once inside a Dask worker (never in the driver), then run the classifier."""
        marker = os.environ.get(KILL_ENV)
        if marker and _in_dask_worker():
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # exactly one cell dies
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().run(data)


def _in_dask_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _raw(celeba_dir: Path) -> dict:
    return {
        "name": "dask",
        "seed": 4,
        "dataset": {"name": "folder", "params": {"root": str(celeba_dir), "labels": str(celeba_dir / "labels.csv")}},
        "subset": {"max_identities": 6, "max_per_identity": 4, "require_gender": True, "balance_gender": True},
        "models": ["dlib_resnet"],
        "protections": ["unprotected", {"name": "pe_miu", "label": "given", "params": {"block_size": 16, "seed": KEY}},
                        {"name": "pe_miu", "label": "drawn", "params": {"block_size": 32}}],
        "attacks": [{"name": "similarity", "label": "sim", "params": {"top_n": [1, 3]}},
                    {"name": "test_dask_runner:KillOnceAttack", "label": "killer"}],
        "metrics": ["eer"],
    }


N_CELLS = 9  # 3 protections x (utility + 2 attacks)


@pytest.fixture(scope="module")
def serial(celeba_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(config file, finished serial run folder) of the small matrix."""

    base = tmp_path_factory.mktemp("serial")
    cfg = base / "dask.yaml"
    cfg.write_text(yaml.safe_dump(_raw(celeba_dir)))
    # in a fresh process, as the cluster's workers are: what earlier tests left in this process
    # (a forced PE-MIU kernel, thread limits) must not make the reference differ in the last digit
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent)}
    r = subprocess.run([sys.executable, "-m", "facepriv.cli.main", "-q", "run", str(cfg), "--out", str(base / "ref"),
                        "--no-report"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return cfg, base / "ref"


def _resume_folder(ref: Path, out: Path) -> Path:
    """An unstarted run folder of the same config with the serial run's drawn key (so the
    ``drawn`` row is comparable): the config and the key store, nothing else."""
    (out / "private").mkdir(parents=True)
    for name in ("config.resolved.yaml", "private/keys.json"):
        (out / name).write_bytes((ref / name).read_bytes())
    os.chmod(out / "private" / "keys.json", 0o600)
    return out


def _cells(out: Path) -> set[str]:
    return {p.relative_to(out / "cells").as_posix() for p in (out / "cells").rglob("*.json")} if (out / "cells").is_dir() else set()


def test_local_cluster_gives_the_serial_metrics_and_logs_no_key(serial, tmp_path, capfd, caplog):
    from facepriv.cli.main import main

    cfg, ref = serial
    out = _resume_folder(ref, tmp_path / "dask")
    caplog.set_level(logging.INFO, logger="facepriv")
    assert main(["run", str(cfg), "--out", str(out), "--no-report", "--scheduler", "local:2"]) == 0
    assert (out / "metrics.json").read_bytes() == (ref / "metrics.json").read_bytes()
    assert _cells(out) == _cells(ref)
    done = [m for m in caplog.messages if m.startswith("cell dlib_resnet/") and ": done in " in m]
    assert len(done) == N_CELLS and f"[{N_CELLS}/{N_CELLS}]" in done[-1]  # one progress line per cell
    timings = json.loads((out / "timings.json").read_text())
    assert len(timings) == N_CELLS and all(v >= 0 for v in timings.values())
    # keys: neither the config's nor the drawn one in any output file, the driver's or a worker's output
    drawn = str(json.loads((out / "private" / "keys.json").read_text())["drawn"]["seed"])
    logs = capfd.readouterr()
    texts = [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file() and "private" not in p.parts]
    for key in (str(KEY), drawn):
        assert key not in logs.out and key not in logs.err and key not in "\n".join(caplog.messages)
        assert not [t for t in texts if key in t]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_a_worker_killed_mid_cell_is_rerun_and_the_run_completes(serial, tmp_path, monkeypatch):
    from facepriv.cli.main import main

    cfg, ref = serial
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_ENV, str(marker))  # before the cluster starts: the workers inherit it
    out = _resume_folder(ref, tmp_path / "dask")
    assert main(["-q", "run", str(cfg), "--out", str(out), "--no-report", "--scheduler", "local:2"]) == 0
    assert marker.exists(), "no worker was killed"
    assert (out / "metrics.json").read_bytes() == (ref / "metrics.json").read_bytes()


def test_a_cell_lost_with_its_worker_stops_cleanly_and_resumes(serial, tmp_path, monkeypatch, capsys):
    """No retries allowed: the killed worker's cell is lost, the others are written, exit 2 and no
    metrics.json; the same command (here serial) computes only the missing cells."""
    import dask
    import distributed  # noqa: F401 - before dask.config.set: leaving the block would drop defaults loaded inside it

    from facepriv.cli.main import main
    from facepriv.experiments.config import load_config
    from facepriv.experiments.runner import execute

    cfg, ref = serial
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_ENV, str(marker))
    out = _resume_folder(ref, tmp_path / "dask")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        rc = main(["-q", "run", str(cfg), "--out", str(out), "--no-report", "--scheduler", "local:2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and marker.exists()
    assert err[-1].startswith("facepriv: error:") and "lost with their Dask worker" in err[-1] and "resume" in err[-1]
    assert not (out / "metrics.json").exists()
    kept = _cells(out)
    assert kept and kept < _cells(ref)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    runner = execute(load_config(cfg), out, report=False)
    assert len(runner.ran) == N_CELLS - len(kept)  # a finished cell is never recomputed
    assert (out / "metrics.json").read_bytes() == (ref / "metrics.json").read_bytes()


def test_a_running_scheduler_by_its_tcp_address(serial, tmp_path, monkeypatch):
    """`--scheduler tcp://HOST:PORT`: a scheduler started elsewhere (here: this test), one worker."""
    from distributed import LocalCluster

    from facepriv.cli.main import main

    cfg, ref = serial
    out = _resume_folder(ref, tmp_path / "dask")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
              "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(k, raising=False)  # restored after the test (the nanny sets some here)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main(["-q", "run", str(cfg), "--out", str(out), "--no-report", "--scheduler",
                     cluster.scheduler_address]) == 0
    assert (out / "metrics.json").read_bytes() == (ref / "metrics.json").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _not_dask_server(reply: bytes = b""):
    """A local port that accepts connections and sends ``reply`` (nothing: it stays silent); yields
    the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held: list[socket.socket] = []

    def serve() -> None:
        for _ in range(4):
            c = srv.accept()[0]
            held.append(c)
            if reply:
                c.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
        for c in held:
            c.close()


def test_a_scheduler_that_does_not_answer_ends_with_exit_2_and_nothing_written(celeba_dir, tmp_path, capsys,
                                                                               monkeypatch):
    from facepriv.cli.main import main
    from facepriv.experiments import dask_runner

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_raw(celeba_dir)))
    out = tmp_path / "run"
    t0 = time.monotonic()
    assert main(["-q", "run", str(cfg), "--out", str(out), "--scheduler", f"tcp://127.0.0.1:{_free_port()}"]) == 2
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facepriv: error: --scheduler tcp://127.0.0.1:")
    assert "no Dask scheduler answers" in err[0] and "nothing was written" in err[0]
    assert not out.exists()

    # a port that accepts but never speaks Dask: bounded by the connect timeout
    monkeypatch.setattr(dask_runner, "CONNECT_TIMEOUT_S", 2.0)
    with _not_dask_server() as port:
        t0 = time.monotonic()
        assert main(["-q", "run", str(cfg), "--out", str(out), "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
        assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Dask scheduler answers" in err[0] and not out.exists()
    assert "did not complete Dask's handshake" in err[0]


def test_a_server_that_is_not_dask_is_named_as_such(celeba_dir, tmp_path, capsys, monkeypatch):
    """A port whose server replies with bytes that are no Dask message (here: a frame length of
    exabytes, which Dask's decoder turns into a MemoryError): one line saying so, exit 2."""
    from facepriv.cli.main import main
    from facepriv.experiments import dask_runner

    monkeypatch.setattr(dask_runner, "CONNECT_TIMEOUT_S", 5.0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_raw(celeba_dir)))
    out = tmp_path / "run"
    with _not_dask_server(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4) as port:
        t0 = time.monotonic()
        assert main(["-q", "run", str(cfg), "--out", str(out), "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
        assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Dask scheduler answers" in err[0] and not out.exists()
    assert "does not speak Dask's protocol" in err[0] and "EiB" not in err[0]  # not the decoder's words


def test_without_dask_the_error_says_how_to_install(celeba_dir, tmp_path, capsys, monkeypatch):
    from facepriv.cli.main import main

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_raw(celeba_dir)))
    assert main(["-q", "run", str(cfg), "--out", str(tmp_path / "run"), "--scheduler", "local:2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[cluster]"' in err[0] and not (tmp_path / "run").exists()


def test_scheduler_key_cli_override_and_no_dask_import_when_serial(tmp_path):
    from facepriv.experiments.config import ConfigError, load_config
    from facepriv.experiments.runner import Runner
    from facepriv.experiments.scheduler import check_scheduler_spec

    assert check_scheduler_spec(None) is None and check_scheduler_spec("serial") is None
    assert check_scheduler_spec("local:3") == "local:3" and check_scheduler_spec("tcp://node7:8786") == "tcp://node7:8786"
    for bad in ("local:0", "local", "http://x:1", "tcp://x", 4):
        with pytest.raises(Exception, match="local:N"):
            check_scheduler_spec(bad)
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    text = demo.read_text(encoding="utf-8")
    p = tmp_path / "d.yaml"
    p.write_text(text + "\nscheduler: tcp://127.0.0.1:9\n", encoding="utf-8")
    cfg = load_config(p)
    assert cfg.scheduler == "tcp://127.0.0.1:9" and "scheduler" not in cfg.as_dict()  # a run-time choice
    assert Runner(cfg, tmp_path / "r").scheduler == "tcp://127.0.0.1:9"
    assert Runner(cfg, tmp_path / "r", scheduler="serial").scheduler is None  # --scheduler serial wins
    assert Runner(cfg, tmp_path / "r", scheduler="local:2").scheduler == "local:2"
    p.write_text(text + "\nscheduler: everywhere\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"d\.yaml: scheduler: must be serial, local:N"):
        load_config(p)
    code = ("import sys\nfrom facepriv.cli.main import build_parser\nfrom facepriv.experiments import runner\n"
            "build_parser().parse_args(['run', 'x.yaml'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
