"""End-to-end runs on real CelebA photos: determinism, resume after a failed cell, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facepriv.errors import FacePrivError, OutputExistsError
from facepriv.experiments.config import parse_config, resolve
from facepriv.experiments.runner import Runner, run_experiment

pytestmark = pytest.mark.slow


def small_config(celeba_dir: Path, seed: int = 0, protections=None):
    """8 identities (4 female, 4 male) x 5 photos of the CelebA crops."""
    return resolve(parse_config(small_raw(celeba_dir, seed, protections), "small"))


def small_raw(celeba_dir: Path, seed: int = 0, protections=None) -> dict:
    """The YAML content of :func:`small_config`."""
    return {
        "name": "small",
        "seed": seed,
        "dataset": {"name": "folder", "params": {"root": str(celeba_dir), "labels": str(celeba_dir / "labels.csv")}},
        "subset": {"max_identities": 8, "max_per_identity": 5, "require_gender": True, "balance_gender": True},
        "models": ["dlib_resnet"],
        "protections": protections or ["unprotected", {"name": "pe_miu", "label": "pe_miu(block_size=16)",
                                                       "params": {"block_size": 16, "seed": 5}}],
        "attacks": [{"name": "similarity", "params": {"top_n": [1, 3, 5]}},
                    {"name": "classifier", "params": {"classifier": "knn"}}],
    }


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
    # the config has PE-MIU rows: which comparator path computed their scores (and how it was built)
    assert env["pe_miu_comparator"]["path"] in ("compiled C", "numba", "numpy")
    if env["pe_miu_comparator"]["path"] == "compiled C":
        assert "kernel:" in env["pe_miu_comparator"]["build"]
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
    from facepriv.attacks.classifiers import ClassifierAttack

    cfg = small_config(celeba_dir)
    out = tmp_path / "run"
    real = ClassifierAttack.run

    def boom(self, data):
        if data.protection_name == "pe_miu":
            raise RuntimeError("simulated crash in a cell")
        return real(self, data)

    monkeypatch.setattr(ClassifierAttack, "run", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Runner(cfg, out).run()
    assert not (out / "metrics.json").exists()
    done = sorted(p.relative_to(out).as_posix() for p in (out / "cells").rglob("*.json"))
    assert "cells/dlib_resnet/unprotected/classifier-classifier=knn.json" in done
    assert "cells/dlib_resnet/pe_miu-block_size=16/utility.json" in done
    assert not any(p.endswith("pe_miu-block_size=16/classifier-classifier=knn.json") for p in done)

    monkeypatch.setattr(ClassifierAttack, "run", real)
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


def test_demo_on_a_user_folder(celeba_dir, tmp_path, capsys):
    """`facepriv demo --data DIR --labels CSV`: the demo experiment on any labelled folder."""
    import csv
    import os

    from facepriv.cli.main import main

    with open(celeba_dir / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["gender"]]
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(r)
    chosen = [i for i in sorted(by_id) if len(by_id[i]) >= 6]
    fem = [i for i in chosen if by_id[i][0]["gender"] == "female"][:3]
    mal = [i for i in chosen if by_id[i][0]["gender"] == "male"][:3]
    data = tmp_path / "photos"
    lines = ["image,identity,gender"]
    for ident in fem + mal:
        # one identity with too few photos for a de-identification gallery: left out of that cell only
        for r in by_id[ident][: 4 if ident == fem[0] else 6]:
            dst = data / r["image"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(celeba_dir / r["image"], dst)
            lines.append(f"{r['image']},{ident},{r['gender']}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--data", str(data), "--labels", str(tmp_path / "labels.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report:  {out / 'report.html'}" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"]["identities"] == 6 and m["dataset"]["name"] == "folder"
    cloak = m["models"]["dlib_resnet"]["protections"]["unprotected"]["attacks"]["BIM cloak"]
    assert cloak["status"] == "ok", cloak["message"]
    assert (out / "report.html").is_file()
    # rerunning the same demo shows the finished run and changes nothing
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["-q", "demo", "--data", str(data), "--labels", str(tmp_path / "labels.csv"), "--out", str(out)]) == 0
    assert "already run" in capsys.readouterr().out and (out / "metrics.json").read_bytes() == before
    # the demo of another dataset into the same folder is refused with exit code 2
    assert main(["-q", "demo", "--out", str(out)]) == 2


def test_demo_default_dataset_end_to_end(tmp_path, capsys):
    """`facepriv demo` on the 5 Celebrity Faces photos (skipped when they are not cached: no network in tests)."""
    from facepriv.cli.main import main
    from facepriv.experiments.fetch import dataset_dir

    if not (dataset_dir("five-celebrities") / "labels.csv").is_file():
        pytest.skip("5 Celebrity Faces not cached (run `facepriv data fetch five-celebrities` once)")
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    assert f"report:  {out / 'report.html'}" in capsys.readouterr().out
    # running the README's first command again shows the finished demo instead of failing
    assert main(["-q", "demo", "--out", str(out)]) == 0
    assert "already run" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"]["images"] == 118 and m["dataset"]["identities"] == 5
    prots = m["models"]["dlib_resnet"]["protections"]
    assert list(prots) == ["unprotected", "pe_miu(block_size=16)", "pe_miu(block_size=32)"]
    assert all(c["status"] == "ok" for p in prots.values() for c in [p["utility"], *p["attacks"].values()]
               if c["status"] != "not_applicable")
    # the photo cloak runs on the photos (unprotected row) and is reported for both target models
    cloak = prots["unprotected"]["attacks"]["BIM cloak"]
    assert cloak["status"] == "ok"
    assert prots["pe_miu(block_size=16)"]["attacks"]["BIM cloak"]["status"] == "not_applicable"
    html = (out / "report.html").read_text()
    assert "Privacy-utility matrix" in html and html.count("data:image/png;base64,") >= 2


def test_image_attack_adapters_reconstruction_and_deid(celeba_dir, tmp_path):
    """The reconstruction and de-identification adapters on a tiny real run (CPU-sized settings)."""
    raw = {
        "name": "img",
        "dataset": {"name": "folder", "params": {"root": str(celeba_dir), "labels": str(celeba_dir / "labels.csv")}},
        "subset": {"max_identities": 8, "max_per_identity": 6, "min_per_identity": 6},
        "models": ["dlib_resnet"],
        "protections": ["unprotected", {"name": "pe_miu", "label": "K16P4", "params": {"block_size": 16, "moved_blocks": 4}},
                        {"name": "illc_cloak", "label": "illc3", "params": {"eps": [3], "max_side": 160}}],
        "attacks": [
            {"name": "reconstruction", "label": "rec",
             "params": {"epochs": 1, "max_train": 16, "w_id": 0.0, "test_fraction": 0.3, "gender": False}},
            {"name": "deid", "label": "bim", "params": {"eps": [2], "probes_per_identity": 1, "max_identities": 4,
                                                        "max_side": 160, "min_gallery": 3}},
        ],
        "metrics": ["eer"],
    }
    out = run_experiment(resolve(parse_config(raw, "img")), tmp_path / "run")
    m = json.loads((out / "metrics.json").read_text())
    prots = m["models"]["dlib_resnet"]["protections"]
    for plabel in ("unprotected", "K16P4"):
        rec = prots[plabel]["attacks"]["rec"]
        assert rec["status"] == "ok", rec
        assert rec["headline"]["metric"] == "rsr@fmr0.001" and 0.0 <= rec["headline"]["value"] <= 1.0
        assert 0.0 < rec["metrics"]["ssim"] < 1.0 and rec["metrics"]["n_test_identities"] >= 2
        assert (out / "cells" / "dlib_resnet" / plabel / "rec" / "eval" / "samples.png").is_file()
    bim = prots["unprotected"]["attacks"]["bim"]
    assert bim["status"] == "ok", bim
    assert bim["curves"]["psr_vs_eps"]["x"] == [0.0, 2.0]
    assert 0.0 <= bim["headline"]["value"] <= 100.0 and bim["headline"]["unit"] == "percent"
    assert prots["K16P4"]["attacks"]["bim"]["status"] == "not_applicable"
    # an image protection as a row: the deid attack runs the row's cloak (its eps), on the same split
    illc = prots["illc3"]["attacks"]["bim"]
    assert illc["status"] == "ok", illc
    assert illc["curves"]["psr_vs_eps"]["x"] == [0.0, 3.0]
    assert illc["metrics"]["probes"] == bim["metrics"]["probes"]
    assert prots["illc3"]["utility"]["status"] == "not_applicable"
    assert prots["illc3"]["attacks"]["rec"]["status"] == "not_applicable"
    md = (out / "report.md").read_text()
    assert "rec on unprotected (dlib_resnet): samples" in md and "protection success rate vs. eps" in md
    assert "- bim: n/a for K16P4 (cloaks photos" in md  # why a cell is empty, said once


def test_resume_after_killing_the_process(celeba_dir, tmp_path, two_runs):
    """A `facepriv run` process is SIGKILLed right after its first cell finished (by itself, so the
    moment is exact whatever the machine's speed); the rerun completes the matrix and gives the same
    metrics.json as an uninterrupted run."""
    import subprocess
    import sys

    import yaml

    _, uninterrupted, _ = two_runs
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text(yaml.safe_dump(small_raw(celeba_dir)))
    out = tmp_path / "run"
    # the CLI, with Runner._finish_cell wrapped to kill the process once the first cell is on disk
    script = (
        "import os, signal, sys\n"
        "from facepriv.experiments import runner\n"
        "finish = runner.Runner._finish_cell\n"
        "def finish_then_die(self, *a, **k):\n"
        "    finish(self, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "runner.Runner._finish_cell = finish_then_die\n"
        "from facepriv.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, "-q", "run", str(cfg_file), "--out", str(out), "--no-report"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == -9  # killed, not finished
    assert not (out / "metrics.json").exists()
    finished_before = {p.name for p in (out / "cells").rglob("*.json")}
    assert finished_before
    r = Runner(small_config(celeba_dir), out)
    r.run()
    assert len(r.ran) == 6 - len(finished_before)  # 2 protections x (utility + 2 attacks), minus the kept ones
    assert (out / "metrics.json").read_bytes() == (uninterrupted / "metrics.json").read_bytes()
