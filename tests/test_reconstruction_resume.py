"""Crash consistency of ``facepriv reconstruct train``: SIGKILL at several points, resume == uninterrupted, bit for bit.

A real ``facepriv reconstruct train`` process is killed (SIGKILL: no clean-up code runs)

* before its first checkpoint (the folder holds config.json and split.json only): a plain ``train``
  restarts it, no ``--overwrite`` needed;
* while it writes a checkpoint (``.checkpoint.pt.*.tmp*`` on disk, the previous checkpoint
  intact): ``--resume`` removes the stale temporary file and continues;
* right after a checkpoint.

Every resumed run's decoder equals the uninterrupted run's bit for bit, and so do the evaluation
numbers.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facepriv.cli.main import main
from facepriv.embeddings import EmbeddingSet, save_embeddings

pytestmark = pytest.mark.slow

N_IDS, PER_ID = 8, 6
EPOCHS = "3"
SETTINGS = ["--size", "64", "--batch-size", "8", "--test-fraction", "0.25", "--seed", "5", "--id-weight", "1.8",
            "--threads", "1"]


@pytest.fixture(scope="module")
def setup(celeba_dir, tmp_path_factory):
    """48 real photos of 8 people embedded by dlib_resnet, and an uninterrupted run with its evaluation."""
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    with open(celeba_dir / "labels.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["gender"]]
    by: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["image"]):
        by.setdefault(r["identity"], []).append(r)
    picked = [r for i in [i for i in sorted(by) if len(by[i]) >= PER_ID + 1][:N_IDS] for r in by[i][:PER_ID]]
    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [r["image"] for r in picked], model.card.alignment)
    lab = {r["image"]: r for r in picked}
    es = EmbeddingSet(model.embed(ac.crops), np.array(ac.ids), np.array([lab[i]["identity"] for i in ac.ids]),
                      {"gender": np.array([lab[i]["gender"] for i in ac.ids])}, "dlib_resnet")
    root = tmp_path_factory.mktemp("recon-resume")
    save_embeddings(es, root / "E.npz")
    ref = root / "reference"
    assert main(_train(root / "E.npz", celeba_dir, ref)) == 0
    return {"E": root / "E.npz", "images": celeba_dir, "ref": ref, "ref_eval": _evaluate(root / "E.npz", celeba_dir, ref)}


def _train(emb: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "reconstruct", "train", "--embeddings", str(emb), "--images", str(images), "--out", str(out),
            "--epochs", EPOCHS, *SETTINGS, "--protection", "pe_miu", "--block-size", "32", "--protection-seed", "9",
            *extra]


def _evaluate(emb: Path, images: Path, run: Path) -> dict:
    out = run.parent / f"{run.name}-eval"
    assert main(["-q", "reconstruct", "eval", str(run), "--embeddings", str(emb), "--images", str(images),
                 "--out", str(out), "--threads", "1", "--seed", "5"]) == 0
    s = json.loads((out / "summary.json").read_text())
    s.pop("run")
    return s


def _kill_when(argv: list[str], ready, timeout: float = 300.0) -> None:
    """Start ``facepriv`` in a child process and SIGKILL it as soon as ``ready()`` holds."""
    env = {**os.environ, "FACEPRIV_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "facepriv.cli.main", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the training ended (exit {proc.returncode}) before the kill point: "
                            f"{proc.stderr.read().decode()[-800:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail("kill point not reached in time")
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _tmp_checkpoints(run: Path) -> list[Path]:
    return sorted(run.glob(".checkpoint.pt.*.tmp*"))


def _epoch(run: Path) -> int:
    return int(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"])


def _assert_same_as_reference(setup, run: Path) -> None:
    ref = torch.load(setup["ref"] / "decoder.pt", weights_only=True)
    got = torch.load(run / "decoder.pt", weights_only=True)
    assert ref.keys() == got.keys()
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    ref_hist = json.loads((setup["ref"] / "history.json").read_text())
    hist = json.loads((run / "history.json").read_text())
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in hist] == \
        [{k: v for k, v in h.items() if k != "seconds"} for h in ref_hist]


def test_killed_before_first_checkpoint_then_mid_checkpoint_write(setup, tmp_path):
    run = tmp_path / "run"
    argv = _train(setup["E"], setup["images"], run)
    # 1. killed before the first epoch ended: config.json and split.json, no checkpoint
    _kill_when(argv, lambda: (run / "split.json").is_file())
    assert (run / "config.json").is_file() and not (run / "checkpoint.pt").exists()
    # 2. a plain `train` restarts it (no --overwrite), killed while writing the epoch-2 checkpoint
    _kill_when(argv, lambda: (run / "checkpoint.pt").is_file() and bool(_tmp_checkpoints(run)))
    assert _tmp_checkpoints(run), "the kill did not land inside the checkpoint write"
    assert _epoch(run) == 1  # the last complete checkpoint is intact
    # 3. resume: the stale temporary file goes, training continues from epoch 1
    assert main([*argv, "--resume"]) == 0
    assert not _tmp_checkpoints(run) and not list(run.glob(".*.tmp*"))
    _assert_same_as_reference(setup, run)
    assert _evaluate(setup["E"], setup["images"], run) == setup["ref_eval"]


def test_killed_right_after_a_checkpoint(setup, tmp_path):
    run = tmp_path / "run"
    argv = _train(setup["E"], setup["images"], run)
    _kill_when(argv, lambda: (run / "checkpoint.pt").is_file() and not _tmp_checkpoints(run))
    assert 1 <= _epoch(run) < int(EPOCHS)
    assert main([*argv, "--resume"]) == 0
    _assert_same_as_reference(setup, run)
