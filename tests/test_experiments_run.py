"""End-to-end runs on real CelebA photos: determinism, resume after a failed cell, refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from facepriv.errors import FacePrivError, OutputExistsError
from facepriv.experiments import cells
from facepriv.experiments.config import parse_config, resolve
from facepriv.experiments.runner import Runner, run_experiment

pytestmark = pytest.mark.slow


def small_config(celeba_dir: Path, seed: int = 0, protections=None):
    """8 identities (4 female, 4 male) x 5 photos of the CelebA crops."""
    raw = {
        "name": "small",
        "seed": seed,
        "dataset": {"name": "folder", "params": {"root": str(celeba_dir), "labels": str(celeba_dir / "labels.csv")}},
        "subset": {"max_identities": 8, "max_per_identity": 5, "require_gender": True, "balance_gender": True},
        "models": ["dlib_resnet"],
        "protections": protections or ["unprotected", {"name": "pe_miu", "params": {"block_size": 16}}],
        "attacks": [{"name": "similarity", "params": {"top_n": [1, 3, 5]}},
                    {"name": "classifier", "params": {"classifier": "knn"}}],
    }
    return resolve(parse_config(raw, "small"))


@pytest.fixture(scope="module")
def two_runs(celeba_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    cfg = small_config(celeba_dir)
    a = run_experiment(cfg, base / "a", report=False)
    b = run_experiment(cfg, base / "b", report=False)
    return cfg, a, b


def test_run_writes_everything_and_numbers(two_runs):
    cfg, a, _ = two_runs
    for name in ("config.resolved.yaml", "env.json", "metrics.json", "timings.json"):
        assert (a / name).is_file(), name
    m = json.loads((a / "metrics.json").read_text())
    assert m["dataset"]["identities"] == 8 and m["dataset"]["images"] == 40
    assert m["dataset"]["male_identities"] == m["dataset"]["female_identities"] == 4
    prots = m["models"]["dlib_resnet"]["protections"]
    assert list(prots) == ["unprotected", "pe_miu(block_size=16)"]
    for p in prots.values():
        u = p["utility"]
        assert u["status"] == "ok"
        assert isinstance(u["metrics"]["eer"], float) and 0 <= u["metrics"]["eer"] < 0.5
        assert 0.5 < u["metrics"]["kfold_accuracy_mean"] <= 1.0
        for c in p["attacks"].values():
            assert c["status"] == "ok", c
            h = c["headline"]
            assert 0.0 <= h["ci_low"] <= h["value"] <= h["ci_high"] <= 1.0
    # the paper's finding in miniature: the similarity attack beats chance on unprotected templates
    sim = prots["unprotected"]["attacks"]["similarity(top_n=[1,3,5])"]
    assert sim["headline"]["value"] > sim["metrics"]["chance"]
    env = json.loads((a / "env.json").read_text())
    assert env["packages"]["numpy"] and env["seed"] == 0
    assert len(env["dataset"]["listing_sha256"]) == 64
    assert len(env["model_files"]["dlib_resnet"]["sha256"]) == 64
    resolved = (a / "config.resolved.yaml").read_text()
    assert "seed: <secret>" in resolved  # PE-MIU's seed is a secret parameter: never written
    assert "timing" not in (a / "metrics.json").read_text() and "seconds" not in (a / "metrics.json").read_text()


def test_same_config_and_seed_give_identical_metrics(two_runs):
    _, a, b = two_runs
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()


def test_finished_run_is_never_overwritten(two_runs):
    cfg, a, _ = two_runs
    before = (a / "metrics.json").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_experiment(cfg, a, report=False)
    assert (a / "metrics.json").read_bytes() == before


def test_resume_after_a_failing_cell(celeba_dir, tmp_path, monkeypatch):
    cfg = small_config(celeba_dir)
    out = tmp_path / "run"
    real = cells.attacks()["classifier"]
    calls = {"n": 0}

    def boom(ctx):
        calls["n"] += 1
        if ctx.protection_name == "pe_miu":
            raise RuntimeError("simulated crash in a cell")
        return real.run(ctx)

    monkeypatch.setitem(cells.ATTACKS, "classifier", dataclasses.replace(real, run=boom))
    with pytest.raises(RuntimeError, match="simulated crash"):
        Runner(cfg, out).run()
    assert not (out / "metrics.json").exists()
    done = sorted(p.relative_to(out).as_posix() for p in (out / "cells").rglob("*.json"))
    assert "cells/dlib_resnet/unprotected/classifier-classifier=knn.json" in done
    assert "cells/dlib_resnet/pe_miu-block_size=16/utility.json" in done
    assert not any(p.endswith("pe_miu-block_size=16/classifier-classifier=knn.json") for p in done)

    monkeypatch.setitem(cells.ATTACKS, "classifier", real)
    r = Runner(cfg, out)
    r.run()
    assert r.ran == ["dlib_resnet/pe_miu(block_size=16)/classifier(classifier=knn)"]  # only the lost cell
    assert (out / "metrics.json").is_file()
    # a run that resumed gives the same numbers as an uninterrupted one
    fresh = run_experiment(cfg, tmp_path / "fresh", report=False)
    assert (out / "metrics.json").read_bytes() == (fresh / "metrics.json").read_bytes()


def test_different_config_in_unfinished_folder_is_refused(celeba_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.resolved.yaml").write_text("name: something else\n")
    with pytest.raises(FacePrivError, match="different config"):
        run_experiment(small_config(celeba_dir), out, report=False)


def test_missing_component_is_reported_not_crashed(celeba_dir, tmp_path, monkeypatch):
    cfg = small_config(celeba_dir, protections=["unprotected"])
    ad = cells.attacks()["similarity"]
    monkeypatch.setitem(cells.ATTACKS, "similarity",
                        dataclasses.replace(ad, modules=("facepriv.attacks.not_in_this_build",)))
    run_experiment(cfg, tmp_path / "r", report=False)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    c = m["models"]["dlib_resnet"]["protections"]["unprotected"]["attacks"]["similarity(top_n=[1,3,5])"]
    assert c["status"] == "unavailable"
    assert "attack similarity not available in this build" in c["message"]
