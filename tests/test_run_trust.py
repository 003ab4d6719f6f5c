"""`facepriv run` trust contract on real faces: validation before any work, keys never written,
one run per folder, user files never deleted, failed cells end with exit code 2."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from facepriv.cli.main import main
from facepriv.errors import FacePrivError
from facepriv.experiments.config import parse_config, resolve
from facepriv.experiments.runner import LOCK, run_experiment
from facepriv.fileio import FolderLock

pytestmark = pytest.mark.slow

KEY = 918273645


def _raw(celeba_dir: Path, protections=None, attacks=None) -> dict:
    return {
        "name": "trust",
        "seed": 3,
        "dataset": {"name": "folder", "params": {"root": str(celeba_dir), "labels": str(celeba_dir / "labels.csv")}},
        "subset": {"max_identities": 6, "max_per_identity": 4, "require_gender": True, "balance_gender": True},
        "models": ["dlib_resnet"],
        "protections": protections or ["unprotected", {"name": "pe_miu", "label": "pe", "params": {"block_size": 16, "seed": KEY}}],
        "attacks": attacks if attacks is not None else [{"name": "similarity", "params": {"top_n": [1, 3]}},
                                                        {"name": "classifier", "params": {"classifier": "knn"}}],
        "metrics": ["eer"],
    }


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _texts(run: Path, include_private: bool = False) -> dict[str, str]:
    return {p.relative_to(run).as_posix(): p.read_bytes().decode("latin-1") for p in run.rglob("*")
            if p.is_file() and (include_private or "private" not in p.relative_to(run).parts)}


def test_keys_never_reach_an_output_or_log(celeba_dir, tmp_path, capsys):
    """Config keys and drawn keys: grep every file of the run and the logs for them."""
    raw = _raw(celeba_dir, protections=["unprotected",
                                        {"name": "pe_miu", "label": "given", "params": {"block_size": 16, "seed": KEY}},
                                        {"name": "pe_miu", "label": "drawn", "params": {"block_size": 32}}])
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(out)]) == 0
    logs = capsys.readouterr()
    store = json.loads((out / "private" / "keys.json").read_text())
    assert set(store) == {"drawn"} and (out / "private" / "keys.json").stat().st_mode & 0o077 == 0
    drawn = str(store["drawn"]["seed"])
    texts = _texts(out)
    assert "report.html" in texts and "config.resolved.yaml" in texts and "metrics.json" in texts
    for key in (str(KEY), drawn):
        hits = [name for name, t in texts.items() if key in t]
        assert not hits, f"key {key} written to {hits}"
        assert key not in logs.out and key not in logs.err
    resolved = yaml.safe_load(texts["config.resolved.yaml"])
    assert resolved["protections"][1]["params"]["seed"] == "<secret>"
    assert "seed" not in resolved["protections"][2]["params"]  # drawn, never derived from the master seed


def test_invalid_protection_for_the_model_is_refused_before_any_work(celeba_dir, tmp_path, capsys):
    raw = _raw(celeba_dir, protections=["unprotected", {"name": "pe_miu", "params": {"block_size": 48}}])
    cfg = _write(tmp_path, raw)
    out = tmp_path / "run"
    assert main(["-q", "run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("facepriv: error:") and str(cfg) in err[-1] and "protections[1]" in err[-1]
    assert "block_size 48 does not divide" in err[-1] and "128" in err[-1]
    assert not out.exists()  # no half-made run folder


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(celeba_dir, tmp_path, capsys):
    out = tmp_path / "thesis"
    (out / "cells").mkdir(parents=True)
    (out / "cells" / "chapter1.tex").write_text("precious")
    (out / "report.md").write_text("mine")
    cfg = _write(tmp_path, _raw(celeba_dir))
    assert main(["-q", "run", str(cfg), "--out", str(out), "--overwrite"]) == 2
    assert "is not empty and holds no facepriv run" in capsys.readouterr().err
    assert (out / "cells" / "chapter1.tex").read_text() == "precious" and (out / "report.md").read_text() == "mine"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["-q", "run", str(cfg), "--out", str(afile)]) == 2
    assert "is not a folder" in capsys.readouterr().err and afile.read_text() == "x"


def test_a_second_concurrent_run_is_refused(celeba_dir, tmp_path):
    cfg = resolve(parse_config(_raw(celeba_dir, attacks=[]), "t"))
    out = tmp_path / "run"
    out.mkdir()
    holding, release = threading.Event(), threading.Event()

    def hold():
        with FolderLock(out, "facepriv run"):
            holding.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(30)
    try:
        with pytest.raises(FacePrivError, match="another facepriv run .* is writing to this folder"):
            run_experiment(cfg, out, report=False)
        assert not (out / "metrics.json").exists()
    finally:
        release.set()
        t.join()
    run_experiment(cfg, out, report=False)  # free again: runs
    assert (out / "metrics.json").is_file() and (out / LOCK).exists()


def test_a_failed_cell_is_recorded_and_the_command_exits_2(celeba_dir, tmp_path, capsys, monkeypatch):
    from facepriv.attacks.classifiers import ClassifierAttack
    from facepriv.errors import ParameterError

    def refuse(self, data):
        raise ParameterError("the attacker set is too small for this classifier")

    monkeypatch.setattr(ClassifierAttack, "run", refuse)
    out = tmp_path / "run"
    assert main(["-q", "run", str(_write(tmp_path, _raw(celeba_dir))), "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("facepriv: error: 2 cell(s) failed") and "too small" in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["models"]["dlib_resnet"]["protections"]["pe"]["attacks"]["classifier(classifier=knn)"]["status"] == "failed"
    assert m["models"]["dlib_resnet"]["protections"]["pe"]["attacks"]["similarity(top_n=[1,3])"]["status"] == "ok"


def test_cell_results_do_not_depend_on_the_cells_before_them(celeba_dir, tmp_path):
    """A cell alone gives the same numbers as the same cell after others (no shared random state)."""
    both = resolve(parse_config(_raw(celeba_dir), "t"))
    alone = resolve(parse_config(_raw(celeba_dir, attacks=[{"name": "classifier", "params": {"classifier": "knn"}}]), "t"))
    a = json.loads((run_experiment(both, tmp_path / "a", report=False) / "metrics.json").read_text())
    b = json.loads((run_experiment(alone, tmp_path / "b", report=False) / "metrics.json").read_text())
    for prot in ("unprotected", "pe"):
        ca = a["models"]["dlib_resnet"]["protections"][prot]["attacks"]["classifier(classifier=knn)"]
        cb = b["models"]["dlib_resnet"]["protections"][prot]["attacks"]["classifier(classifier=knn)"]
        assert ca == cb


def _cli(args: list[str], kill_after_checkpoint: bool = False):
    """``facepriv ARGS`` in a fresh process; optionally SIGKILLed right after the first decoder
    checkpoint is on disk (mid-cell: the reconstruction cell has more epochs to go)."""
    import subprocess
    import sys

    script = "import os, signal, sys\n"
    if kill_after_checkpoint:
        script += (
            "from facepriv.attacks.reconstruction import trainer\n"
            "save = trainer._save_checkpoint\n"
            "def save_then_die(*a, **k):\n"
            "    save(*a, **k)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "trainer._save_checkpoint = save_then_die\n"
        )
    script += "from facepriv.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", script, "-q", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=600)


def test_killed_mid_cell_resumes_to_the_uninterrupted_result(celeba_dir, tmp_path):
    """SIGKILL inside a reconstruction cell (after its first epoch checkpoint), rerun: the matrix
    equals an uninterrupted run's, cell for cell, and no temporary file is left behind."""
    rec = {"name": "reconstruction", "label": "rec",
           "params": {"size": 64, "epochs": 2, "max_train": 12, "w_id": 0.0, "test_fraction": 0.3, "gender": False}}
    cfg = _write(tmp_path, _raw(celeba_dir, protections=["unprotected"],
                                attacks=[{"name": "classifier", "params": {"classifier": "knn"}}, rec]))
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert _cli(["run", str(cfg), "--out", str(ref), "--no-report"]).returncode == 0
    killed = _cli(["run", str(cfg), "--out", str(out), "--no-report"], kill_after_checkpoint=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    assert list(out.rglob("checkpoint.pt")), "the kill did not land inside the reconstruction cell"
    resumed = _cli(["run", str(cfg), "--out", str(out), "--no-report"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert b == a
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
