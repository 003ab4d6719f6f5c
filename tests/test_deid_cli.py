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


def _dataset(facescrub_dir, tmp_path):
    """3 identities of real FaceScrub photos; one probe of the first is a blank (faceless) image."""
    root = tmp_path / "data"
    people = {"Steve_Carell": 5, "America_Ferrera": 4, "Bill_Hader": 4}
    images, ident = [], []
    for person, n in people.items():
        for j in range(n):
            images.append(f"{person}/img{j}.jpg")
            ident.append(person)
    split = split_gallery_probes(images, ident, probes_per_identity=1, min_gallery=3, seed=0)
    blank = next(im for im, i in split.probes if i == "Steve_Carell")
    for person in people:
        src = sorted((facescrub_dir / person).iterdir())
        (root / person).mkdir(parents=True)
        for j in range(people[person]):
            dst = root / person / f"img{j}.jpg"
            if f"{person}/img{j}.jpg" == blank:
                Image.new("RGB", (200, 200), (128, 120, 110)).save(dst)
            else:
                shutil.copy(src[j], dst)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,identity\n" + "".join(f"{a},{b}\n" for a, b in zip(images, ident, strict=True)))
    return root, labels, blank


def _run_args(root, labels, out, *extra):
    return ["-q", "deid", "run", "--images", str(root), "--labels", str(labels), "--source", "dlib_resnet",
            "--probes-per-identity", "1", "--eps", "4", "--max-side", "250", "--out", str(out), *extra]


@pytest.mark.slow
def test_run_eval_plot_end_to_end(facescrub_dir, tmp_path, capsys):
    root, labels, blank = _dataset(facescrub_dir, tmp_path)
    run = tmp_path / "run"
    assert main(_run_args(root, labels, run, "--method", "bim")) == 0
    rec = json.loads((run / "run.json").read_text())
    assert rec["counts"]["probes"] == 2 and rec["counts"]["probes_without_face"] == 1
    assert rec["no_face"][0]["image"] == blank
    assert rec["storage"] == "jpeg q95"
    e4 = rec["per_eps"]["4"]
    assert e4["iterations"] == 5 and e4["loss_after_mean"] > e4["loss_before_mean"]
    assert 0.8 < rec["quality"]["4"]["ssim"] < rec["quality"]["0"]["ssim"] <= 1.0
    split = (run / "split.csv").read_text()
    assert f"{blank},Steve_Carell,no_face" in split and split.count(",probe") == 2
    assert (run / "heads" / "dlib_resnet.pt").is_file() and (run / "heads" / "dlib_resnet.json").is_file()
    cloaks = sorted((run / "cloaks" / "eps4").rglob("*.jpg"))
    assert len(cloaks) == 2
    # refuses to overwrite without --overwrite
    assert main(_run_args(root, labels, run)) == 2
    assert "already exists" in capsys.readouterr().err

    ev = tmp_path / "eval"
    assert main(["-q", "deid", "eval", str(run), "--targets", "dlib_resnet", "--ks", "1,2", "--out", str(ev)]) == 0
    s = json.loads((ev / "summary.json").read_text())
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
def test_png_storage_keeps_the_budget_exactly(facescrub_dir, tmp_path):
    root, labels, _ = _dataset(facescrub_dir, tmp_path)
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
    base = ["-q", "deid", "run", "--images", str(facescrub_dir), "--labels", str(labels), "--out", str(tmp_path / "o")]
    cases = [
        (["--source", "no_such_model"], "unknown model 'no_such_model'"),
        (["--eps", "4,0"], "must be > 0"),
        (["--eps", "-8"], "must be > 0"),
        (["--eps", "four"], "comma-separated numbers"),
        (["--probes-per-identity", "140"], "fewer than 143 images"),
        (["--method", "illc", "--jpeg-quality", "0"], "--jpeg-quality"),
    ]
    for extra, msg in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert "facepriv: error:" in err and msg in err, (extra, err)
    small = tmp_path / "small.csv"
    small.write_text("image,identity\nSteve_Carell/" + sorted(p.name for p in (facescrub_dir / "Steve_Carell").iterdir())[0]
                     + ",Steve_Carell\n" + "".join(f"Bill_Hader/{p.name},Bill_Hader\n" for p in sorted((facescrub_dir / "Bill_Hader").iterdir())[:6]))
    assert main(["-q", "deid", "run", "--images", str(facescrub_dir), "--labels", str(small), "--out", str(tmp_path / "o")]) == 2
    assert "Steve_Carell (1)" in capsys.readouterr().err
    assert main(["-q", "deid", "eval", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "run.json missing" in capsys.readouterr().err
