"""Post-processing of published cloaks (JPEG / downscale / blur), EOT, and the transfer cloaks on real photos."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from facepriv.attacks.deid.postprocess import (
    apply,
    differentiable,
    parse_list,
    parse_postprocess,
    postprocess_run,
)
from facepriv.errors import OutputExistsError, ParameterError
from facepriv.registry import create


@pytest.mark.parametrize("spec, label", [("jpeg:75", "jpeg75"), ("resize:0.5", "resize0.5"), ("blur:1.5", "blur1.5"),
                                         ("JPEG:50", "jpeg50")])
def test_specs_parse(spec, label):
    assert parse_postprocess(spec).label == label


@pytest.mark.parametrize("spec", ["warp:3", "jpeg:-5", "jpeg:0", "jpeg:101", "jpeg:7.5", "resize:1", "resize:0",
                                  "blur:0", "blur:x", "jpeg", 3])
def test_bad_specs_are_refused_naming_the_parameter(spec):
    with pytest.raises(ParameterError) as ei:
        parse_postprocess(spec, "eot")
    assert ei.value.param == "eot" and str(ei.value).startswith("eot: ")


def test_lists_refuse_strings_empties_and_repeats():
    assert parse_list(None, "p") == []
    for bad in ("jpeg:75", [], ["jpeg:75", "jpeg:75.0"]):
        with pytest.raises(ParameterError, match="^p: "):
            parse_list(bad, "p")


def test_real_and_differentiable_operations_agree_in_shape_and_roughly_in_value():
    rng = np.random.default_rng(0)
    # a smooth photo (JPEG and blur barely change it) with a little texture
    yy, xx = np.mgrid[0:64, 0:80]
    photo = np.stack([yy * 3, xx * 2, (yy + xx)], -1).astype(np.float64)
    photo = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float().requires_grad_(True)
    for spec in ("jpeg:75", "resize:0.5", "blur:1.5"):
        pp = parse_postprocess(spec)
        real = apply(photo, pp)
        y = differentiable(pp)(x)
        assert y.shape == x.shape
        (g,) = torch.autograd.grad(y.sum(), x)
        assert float(g.abs().sum()) > 0  # differentiable
        if pp.kind != "resize":  # same size: compare values (the codecs/filters differ in detail)
            diff = np.abs(y.detach()[0].permute(1, 2, 0).numpy() - real.astype(np.float64)).mean()
            assert diff < 4.0, (spec, diff)
        else:
            assert real.shape == (32, 40, 3)


def _data(facescrub_dir, root):
    people = ("Steve_Carell", "America_Ferrera", "Bill_Hader")
    images, identity = [], []
    for person in people:
        (root / person).mkdir(parents=True)
        for j, f in enumerate(sorted((facescrub_dir / person).iterdir())[:4]):
            shutil.copy(f, root / person / f"img{j}.jpg")
            images.append(f"{person}/img{j}.jpg")
            identity.append(person)
    return images, identity


def _hashes(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_transfer_cloak_end_to_end_stays_in_budget_and_postprocessing_never_touches_it(facescrub_dir, tmp_path):
    """MI + DI + TI + VMI on an ensemble of two sources with EOT: every stored cloak within eps of
    the published clean photo; post-processed copies go to their own folder, cloaks untouched."""
    from facepriv.attacks.deid.run import run_cloaks
    from facepriv.images import load_rgb

    root = tmp_path / "photos"
    images, identity = _data(facescrub_dir, root)
    mp = {"momentum": 1.0, "diversity_prob": 0.5, "ti_kernel": 5, "vmi_samples": 1, "ensemble": ["sface"],
          "eot": ["jpeg:75"]}
    a = create("attack", "deid", {"eps": [4], "probes_per_identity": 1, "max_side": 250, "jpeg_quality": None,
                                  "method_params": mp})
    run = run_cloaks(a.run_config("dlib_resnet", images=str(root)), images, identity, root, tmp_path / "run")
    rec = run.record
    assert rec["protection"]["params"]["ensemble"] == ["sface"] and rec["counts"]["probes"] == 3
    assert rec["per_eps"]["4"]["loss_after_mean"] > rec["per_eps"]["4"]["loss_before_mean"]
    probes = [im for im, _, role in run.rows if role == "probe"]
    moved = 0
    for im in probes:
        png = im.replace(".jpg", ".png")
        clean = np.asarray(load_rgb(run.dir / "cloaks" / "eps0" / png)).astype(int)
        cloak = np.asarray(load_rgb(run.dir / "cloaks" / "eps4" / png)).astype(int)
        d = np.abs(cloak - clean)
        assert int(d.max()) <= 4  # exact: PNG storage, integer budget
        moved += int((d > 0).sum())
    assert moved > 0
    before = _hashes(run.dir)
    pp = parse_postprocess("jpeg:50")
    with pytest.raises(ParameterError, match="inside the run folder"):
        postprocess_run(run, pp, run.dir / "cloaks" / "post")
    post = postprocess_run(run, pp, tmp_path / "post" / pp.label)
    assert _hashes(run.dir) == before  # never over a cloak
    for im in probes:
        f = post.dir / "cloaks" / "eps4" / im.replace(".jpg", ".png")
        assert f.is_file() and f.read_bytes() != (run.dir / "cloaks" / "eps4" / im.replace(".jpg", ".png")).read_bytes()
    assert post.record["postprocess"]["label"] == "jpeg50"
    with pytest.raises(OutputExistsError):
        postprocess_run(run, pp, tmp_path / "post" / pp.label)
