"""End-to-end ``facepriv deid run`` / ``eval`` / ``plot`` on real faces, and the bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facepriv.attacks.deid.protocol import split_gallery_probes
from facepriv.cli.main import main
from facepriv.images import load_rgb

PEOPLE = {"Steve_Carell": 5, "America_Ferrera": 4, "Bill_Hader": 4}


def _dataset(facescrub_dir, root, labels, blank_probes: str = "first", offset: int = 0):
    """3 identities of real FaceScrub photos; the Steve_Carell probe (``first``), every probe
    (``all``) or none (``none``) is a blank, faceless image; ``offset`` picks other photos.
    Returns the blank probes."""
    images, ident = [], []
    for person, n in PEOPLE.items():
        for j in range(n):
            images.append(f"{person}/img{j}.jpg")
            ident.append(person)
    split = split_gallery_probes(images, ident, probes_per_identity=1, min_gallery=3, seed=0)
    blanks = [im for im, i in split.probes if blank_probes == "all" or (blank_probes == "first" and i == "Steve_Carell")]
    for person in PEOPLE:
        src = sorted((facescrub_dir / person).iterdir())
        (root / person).mkdir(parents=True)
        for j in range(PEOPLE[person]):
            dst = root / person / f"img{j}.jpg"
            if f"{person}/img{j}.jpg" in blanks:
                Image.new("RGB", (200, 200), (128, 120, 110)).save(dst)
            else:
                shutil.copy(src[j + offset], dst)
    labels.write_text("image,identity\n" + "".join(f"{a},{b}\n" for a, b in zip(images, ident, strict=True)))
    return blanks


def _run_args(root, labels, out, *extra):
    return ["-q", "deid", "run", "--images", str(root), "--labels", str(labels), "--source", "dlib_resnet",
            "--probes-per-identity", "1", "--eps", "4", "--max-side", "250", "--out", str(out), *extra]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("facepriv: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, err)
    return lines[0]


@pytest.fixture(scope="module")
def bim_run(facescrub_dir, tmp_path_factory):
    """One BIM run (eps 4) on 3 identities: the folder, the dataset root, labels and the blank probe."""
    base = tmp_path_factory.mktemp("deid")
    root, labels = base / "data", base / "labels.csv"
    (blank,) = _dataset(facescrub_dir, root, labels)
    run = base / "run"
    assert main(_run_args(root, labels, run, "--method", "bim")) == 0
    return run, root, labels, blank


@pytest.mark.slow
def test_run_eval_plot_end_to_end(bim_run, tmp_path, capsys):
    run, root, labels, blank = bim_run
    rec = json.loads((run / "run.json").read_text())
    assert rec["counts"]["probes"] == 2 and rec["counts"]["probes_without_face"] == 1
    assert rec["no_face"][0]["image"] == blank
    assert rec["storage"] == "jpeg q95" and rec["protection"]["name"] == "bim_cloak"
    assert rec["config"]["labels"] == str(labels.resolve())
    e4 = rec["per_eps"]["4"]
    assert e4["iterations"] == 5 and e4["loss_after_mean"] > e4["loss_before_mean"]
    assert 0.8 < rec["quality"]["4"]["ssim"] < rec["quality"]["0"]["ssim"] <= 1.0
    split = (run / "split.csv").read_text()
    assert f"{blank},Steve_Carell,no_face" in split and split.count(",probe") == 2
    key = rec["source_head"]["key"]
    assert (run / "heads" / f"dlib_resnet.{key[:16]}.pt").is_file() and len(key) == 64
    assert len(sorted((run / "cloaks" / "eps4").rglob("*.jpg"))) == 2
    # refuses to overwrite without --overwrite
    assert main(_run_args(root, labels, run)) == 2
    _one_line_error(capsys, "already exists")

    ev = tmp_path / "eval"
    assert main(["-q", "deid", "eval", str(run), "--ks", "1,2", "--out", str(ev)]) == 0  # targets: the source
    s = json.loads((ev / "summary.json").read_text())
    assert s["targets"] == ["dlib_resnet"]
    psr = s["psr"]["dlib_resnet"]["dlib_resnet"]
    assert set(psr) == {"0", "4"} and set(psr["4"]) == {"1", "2"}
    assert psr["0"]["1"] == 0.0  # the clean probes are identified
    assert s["detection_rate"]["dlib_resnet"]["dlib_resnet"]["0"] == 100.0
    assert s["identification_clean_topk"]["dlib_resnet"]["dlib_resnet"]["1"] == 100.0
    assert "eps 4" in (ev / "summary.md").read_text()
    assert (ev / "psr_dlib_resnet.png").stat().st_size > 1000
    assert main(["-q", "deid", "plot", str(ev / "summary.json"), "--ks", "1", "--out", str(tmp_path / "fig")]) == 0
    assert list((tmp_path / "fig").glob("psr_dlib_resnet_bim.png"))


@pytest.mark.slow
def test_eval_refuses_missing_or_corrupt_cloaks_but_counts_faceless_ones(bim_run, tmp_path, capsys):
    """Issue 14 item 1: a deleted eps folder or a corrupt stored probe is an error, not 'protected'."""
    run = bim_run[0]
    gone = tmp_path / "gone"
    shutil.copytree(run, gone)
    shutil.rmtree(gone / "cloaks" / "eps4")
    ev = tmp_path / "ev"
    assert main(["-q", "deid", "eval", str(gone), "--out", str(ev)]) == 2
    _one_line_error(capsys, str(gone / "cloaks" / "eps4"), "missing")
    assert not ev.exists()

    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    victim = sorted((bad / "cloaks" / "eps4").rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated JPEG
    assert main(["-q", "deid", "eval", str(bad), "--out", str(ev)]) == 2
    _one_line_error(capsys, str(victim))
    assert not ev.exists()  # checked before any work: nothing written

    # a readable cloak without a detectable face still counts as protected (the paper's N)
    blank = tmp_path / "blank"
    shutil.copytree(run, blank)
    for f in (blank / "cloaks").glob("eps*/Bill_Hader/*.jpg"):
        Image.new("RGB", (250, 250), (90, 90, 90)).save(f, quality=95)
    assert main(["-q", "deid", "eval", str(blank), "--out", str(ev)]) == 0
    s = json.loads((ev / "summary.json").read_text())
    assert s["detection_rate"]["dlib_resnet"]["dlib_resnet"]["0"] == 50.0
    assert s["psr"]["dlib_resnet"]["dlib_resnet"]["0"]["1"] == 50.0  # 1 of 2 probes unidentifiable


@pytest.mark.slow
def test_eval_never_overwrites_any_output_without_overwrite(bim_run, tmp_path, capsys):
    """Issue 14 item 7: every file deid eval writes is protected, not only summary.json."""
    run = bim_run[0]
    for name in ("summary.md", "psr_dlib_resnet.png"):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_text("mine")
        assert main(["-q", "deid", "eval", str(run), "--out", str(out)]) == 2
        _one_line_error(capsys, str(out / name), "--overwrite")
        assert sorted(p.name for p in out.iterdir()) == [name] and (out / name).read_text() == "mine"


@pytest.mark.slow
def test_overwrite_with_another_seed_does_not_reuse_the_old_head(bim_run, tmp_path):
    """Issue 14 item 2: cp -r R R2; run --seed 8 --overwrite into R2 == a fresh run with --seed 8."""
    run, root, labels, _ = bim_run
    r2, r3 = tmp_path / "r2", tmp_path / "r3"
    shutil.copytree(run, r2)
    assert main(_run_args(root, labels, r2, "--seed", "8", "--eps", "2", "--overwrite")) == 0
    assert main(_run_args(root, labels, r3, "--seed", "8", "--eps", "2")) == 0
    a, b = (json.loads((r / "run.json").read_text()) for r in (r2, r3))
    old = json.loads((run / "run.json").read_text())
    assert a["source_head"] == b["source_head"] and a["source_head"]["key"] != old["source_head"]["key"]
    assert a["per_eps"]["2"]["psr_source_in_memory"] == b["per_eps"]["2"]["psr_source_in_memory"]
    assert (r2 / "split.csv").read_text() == (r3 / "split.csv").read_text()
    assert not (r2 / "cloaks" / "eps4").exists()  # the old run's cloaks are gone
    for f in (r3 / "cloaks").rglob("*.jpg"):
        assert (r2 / f.relative_to(r3)).read_bytes() == f.read_bytes()


@pytest.mark.slow
def test_failed_run_then_another_dataset_in_the_same_folder(facescrub_dir, bim_run, tmp_path, capsys):
    """Issue 14 item 2: a failed run's head is not reused by the next run, and its message is right."""
    faceless, good = tmp_path / "faceless", tmp_path / "good"
    _dataset(facescrub_dir, faceless, tmp_path / "faceless.csv", blank_probes="all")
    _dataset(facescrub_dir, good, tmp_path / "good.csv", blank_probes="none", offset=6)  # other photos
    out = tmp_path / "out"
    assert main(_run_args(faceless, tmp_path / "faceless.csv", out)) == 2
    _one_line_error(capsys, "none of the 3 probe photos can be cloaked", "3 without a face")
    assert not out.exists() or not any(out.rglob("*"))  # the failed run wrote nothing
    ref = tmp_path / "ref"
    assert main(_run_args(good, tmp_path / "good.csv", ref)) == 0
    key = json.loads((ref / "run.json").read_text())["source_head"]["key"]
    # a foreign head planted under the very name this run uses (another dataset's) is not trusted
    (out / "heads").mkdir(parents=True)
    for f in (bim_run[0] / "heads").glob("dlib_resnet.*"):
        shutil.copy(f, out / "heads" / f"dlib_resnet.{key[:16]}{f.suffix}")
    assert main(_run_args(good, tmp_path / "good.csv", out)) == 0  # no --overwrite needed: no run.json yet
    rec = json.loads((out / "run.json").read_text())
    assert rec["counts"]["probes"] == 3 and rec["counts"]["probes_without_face"] == 0
    assert rec["source_head"] == json.loads((ref / "run.json").read_text())["source_head"]
    assert (out / "split.csv").read_text() == (ref / "split.csv").read_text()
    assert json.loads((out / "heads" / f"dlib_resnet.{key[:16]}.json").read_text())["key"] == key  # replaced


@pytest.mark.slow
def test_png_storage_keeps_the_budget_exactly(facescrub_dir, tmp_path):
    root, labels = tmp_path / "data", tmp_path / "labels.csv"
    _dataset(facescrub_dir, root, labels)
    run = tmp_path / "run"
    assert main(_run_args(root, labels, run, "--method", "illc", "--png")) == 0
    rec = json.loads((run / "run.json").read_text())
    assert rec["storage"] == "png" and rec["per_eps"]["4"]["loss_after_mean"] < rec["per_eps"]["4"]["loss_before_mean"]
    for clean in (run / "cloaks" / "eps0").rglob("*.png"):
        adv = run / "cloaks" / "eps4" / clean.relative_to(run / "cloaks" / "eps0")
        d = np.abs(load_rgb(adv).astype(int) - load_rgb(clean).astype(int))
        assert d.max() == 4  # exactly at the budget, never above


def test_bad_inputs_exit_2_with_a_clear_message(facescrub_dir, tmp_path, capsys):
    labels = facescrub_dir / "labels.csv"
    out = tmp_path / "o"
    base = ["-q", "deid", "run", "--images", str(facescrub_dir), "--labels", str(labels), "--out", str(out)]
    src = ["--source", "dlib_resnet"]
    cases = [
        (["--source", "no_such_model"], ["--source", "unknown model 'no_such_model'"]),
        (src + ["--eps", "4,0"], ["--eps", "must be > 0"]),
        (src + ["--eps", "-8"], ["--eps", "must be > 0"]),
        (src + ["--eps", "4,4"], ["--eps", "repeat"]),
        (src + ["--eps", "four"], ["--eps", "comma-separated numbers"]),
        (src + ["--batch-size", "0"], ["--batch-size", ">= 1"]),
        (src + ["--method", "nope"], ["--method", "unknown image protection 'nope'"]),
        (src + ["--method", "pe_miu"], ["--method", "not an image protection"]),
        (src + ["--method-params", "{"], ["--method-params", "JSON"]),
        (src + ["--method-params", '{"strength": 2}'], ["unknown parameter(s) strength"]),
        (src + ["--probes-per-identity", "140"], ["fewer than 143 images"]),
        (src + ["--method", "illc", "--jpeg-quality", "0"], ["--jpeg-quality"]),
    ]
    for extra, msgs in cases:
        assert main(base + extra) == 2, extra
        _one_line_error(capsys, *msgs)
        assert not out.exists(), extra
    small = tmp_path / "small.csv"
    small.write_text("image,identity\nSteve_Carell/" + sorted(p.name for p in (facescrub_dir / "Steve_Carell").iterdir())[0]
                     + ",Steve_Carell\n" + "".join(f"Bill_Hader/{p.name},Bill_Hader\n" for p in sorted((facescrub_dir / "Bill_Hader").iterdir())[:6]))
    assert main(["-q", "deid", "run", "--images", str(facescrub_dir), "--labels", str(small), *src, "--out", str(out)]) == 2
    _one_line_error(capsys, "Steve_Carell (1)", "min_images")
    assert main(["-q", "deid", "eval", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    _one_line_error(capsys, "run.json missing")
    (tmp_path / "s.json").write_text("[1, 2]")
    assert main(["-q", "deid", "plot", str(tmp_path / "s.json"), "--out", str(tmp_path / "p")]) == 2
    _one_line_error(capsys, "s.json", "not a 'facepriv deid eval' summary")


def test_cli_defaults_are_the_components():
    """The flags take every default from the deid attack (one source); --ks from PAPER_KS."""
    from facepriv.attacks.deid.attack import DeidAttack
    from facepriv.attacks.deid.protocol import PAPER_KS
    from facepriv.cli.main import build_parser

    args = build_parser().parse_args(["deid", "run", "--images", "x", "--labels", "y", "--source", "dlib_resnet",
                                      "--out", "o"])
    from facepriv.cli.deid_cmd import attack_params

    assert attack_params(args) == {"source": "dlib_resnet"}  # nothing else: the component's defaults apply
    a = DeidAttack(**attack_params(args))
    assert a.eps == (4, 8, 16, 32) and a.jpeg_quality == 95 and a.method == "bim"
    ev = build_parser().parse_args(["deid", "eval", "r", "--out", "o"])
    assert ev.ks == ",".join(map(str, PAPER_KS))
    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "deid" in a.choices)
    text = next(a for a in sub.choices["deid"]._actions if getattr(a, "choices", None)).choices["run"].format_help()
    text = " ".join(text.split())
    assert "(default 4,8,16,32)" in text and "(default 95)" in text
