"""The ``deid`` attack component and the image-protection protocol (built-ins and a plug-in cloak)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from facepriv.errors import ParameterError
from facepriv.protections.image import Cloaked, ImageProtection
from facepriv.registry import create, describe, get_class, protocol_problem


class NoiseCloak(ImageProtection):
    """Baseline photo cloak: seeded uniform noise in [-eps, eps] on every pixel (no model used).

    Parameters
    ----------
    eps : sequence of float
        Budgets.
    alpha : float
        Unused.
    jpeg_quality : int or None
        Storage.
    max_side : int
        Working resolution.
    batch_size : int
        Batch size.
    seed : int
        Seeds the noise.
    scale : float
        Share of the budget the noise uses (0..1].
    """

    def __init__(self, eps=(4, 8, 16, 32), alpha=1.0, jpeg_quality=95, max_side=400, batch_size=8, seed=0, scale=1.0):
        super().__init__(eps, alpha, jpeg_quality, max_side, batch_size, seed)
        self.scale = scale

    def cloak(self, photos, matrices, labels, ids, source, eps):
        out = []
        for photo, s in zip(photos, self.photo_seeds(ids, eps), strict=True):
            noise = np.random.default_rng(s).integers(-1, 2, size=photo.shape) * np.floor(eps * self.scale)
            out.append(np.clip(photo.astype(np.int16) + noise, 0, 255).astype(np.uint8))
        return Cloaked(photos=np.stack(out))


class OverBudgetCloak(NoiseCloak):
    """Breaks the contract: moves pixels by eps + 1.

    Parameters
    ----------
    eps : sequence of float
        Budgets.
    alpha : float
        Unused.
    jpeg_quality : int or None
        Storage.
    max_side : int
        Working resolution.
    batch_size : int
        Batch size.
    seed : int
        Seed.
    scale : float
        Unused.
    """

    def cloak(self, photos, matrices, labels, ids, source, eps):
        return Cloaked(photos=np.clip(photos.astype(np.int16) + int(eps) + 1, 0, 255).astype(np.uint8))


def test_built_in_cloaks_are_image_protections():
    for name, method in (("bim_cloak", "bim"), ("illc_cloak", "illc"), ("push_cloak", "push")):
        cls = get_class("protection", name)
        assert issubclass(cls, ImageProtection) and cls.kind == "image" and cls.method == method
        assert protocol_problem("protection", cls) is None
        p = create("protection", name, {"eps": [2, 4], "seed": 3})
        assert p.clone().get_params() == p.get_params()
        with pytest.raises(ParameterError, match="protects photos, not templates"):
            p.transform(np.zeros((2, 128), np.float32))
        d = describe("protection", name)
        assert d["protection_kind"] == "image" and d["params"]["eps"]["default"] == (4, 8, 16, 32)
        assert all(v["meaning"] for v in d["params"].values())


@pytest.mark.parametrize("params, param", [({"eps": [-4]}, "eps"), ({"eps": [0]}, "eps"), ({"eps": []}, "eps"),
                                           ({"eps": [300]}, "eps"), ({"alpha": 0}, "alpha"), ({"seed": -1}, "seed"),
                                           ({"jpeg_quality": 101}, "jpeg_quality"), ({"max_side": 10}, "max_side"),
                                           ({"batch_size": 0}, "batch_size")])
def test_cloak_and_attack_parameters_are_validated_by_name(params, param):
    for kind, name in (("protection", "bim_cloak"), ("attack", "deid")):
        with pytest.raises(ParameterError) as ei:
            create(kind, name, params)
        assert ei.value.param == param and str(ei.value).startswith(f"{param}: ") and "--" not in str(ei.value)


def test_deid_attack_is_the_one_source_of_parameters():
    from facepriv.attacks.deid.attack import DeidAttack
    from facepriv.protections.base import build_protection

    cls = get_class("attack", "deid")
    assert cls is DeidAttack and cls.needs_images and cls.applies_to == ("template", "image")
    d = DeidAttack.param_defaults()
    for k, v in ImageProtection.param_defaults().items():  # the cloak parameters read the protection's defaults
        assert d[k] == v
    assert d["eps"] == (4, 8, 16, 32) and d["source"] is None and d["targets"] is None
    assert cls.not_applicable(build_protection("pe_miu", {"block_size": 16}), True).startswith("cloaks photos")
    assert cls.not_applicable(build_protection("illc_cloak", {"eps": [4]}), True) is None  # an image-protection row
    assert cls.not_applicable(build_protection("unprotected"), False) is not None
    assert cls.not_applicable(build_protection("unprotected"), True) is None
    info = describe("attack", "deid")
    assert all(v["meaning"] for v in info["params"].values()), info["params"]
    for bad, param in (({"method": "pe_miu"}, "method"), ({"targets": ["nope"]}, "targets"), ({"source": "x"}, "source"),
                       ({"targets": "dlib_resnet"}, "targets"), ({"method_params": {"eps": [4]}}, "method_params"),
                       ({"min_gallery": 0}, "min_gallery")):
        with pytest.raises(ParameterError) as ei:
            create("attack", "deid", bad)
        assert ei.value.param == param, (bad, ei.value)
    # a plug-in cloak is accepted by reference, with its own parameters
    a = create("attack", "deid", {"method": "test_deid_attack:NoiseCloak", "method_params": {"scale": 0.5}})
    assert a.run_config("dlib_resnet").protection().scale == 0.5


def _data(facescrub_dir, root):
    people = ("Steve_Carell", "America_Ferrera", "Bill_Hader")
    lines = ["image,identity"]
    for person in people:
        (root / person).mkdir(parents=True)
        for j, f in enumerate(sorted((facescrub_dir / person).iterdir())[:4]):
            shutil.copy(f, root / person / f"img{j}.jpg")
            lines.append(f"{person}/img{j}.jpg,{person}")
    (root.parent / "labels.csv").write_text("\n".join(lines) + "\n")
    return root.parent / "labels.csv"


def _attack_data(root, labels, work_dir):
    from facepriv.attacks.base import AttackData
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import embed_folder
    from facepriv.protections.base import build_protection

    es, _, _ = embed_folder(root, "dlib_resnet", labels)
    idx = np.arange(len(es))
    return AttackData(clean=es, attacker=idx, victim=idx, protection=build_protection("unprotected"),
                      model=get_model("dlib_resnet"), image_root=root, seed=123, work_dir=work_dir)


@pytest.mark.slow
def test_in_memory_attack_equals_the_cli_route(facescrub_dir, tmp_path):
    """DeidAttack.run (in memory, no labels file) gives the numbers of deid run + deid eval."""
    from facepriv.attacks.deid.attack import outcome
    from facepriv.cli.main import main

    root = tmp_path / "data" / "photos"
    labels = _data(facescrub_dir, root)
    data = _attack_data(root, labels, tmp_path / "cell")
    params = {"eps": [2], "probes_per_identity": 1, "max_side": 250, "targets": ["dlib_resnet"]}
    res = create("attack", "deid", params).run(data)
    assert not (tmp_path / "cell" / "labels.csv").exists()  # in memory: no labels file for the library
    assert res.headline["unit"] == "percent" and 0.0 <= res.headline["value"] <= 100.0
    assert res.curves["psr_vs_eps"]["x"] == [0.0, 2.0] and res.metrics["probes"] == 3

    run = tmp_path / "run"
    assert main(["-q", "deid", "run", "--images", str(root), "--labels", str(labels), "--source", "dlib_resnet",
                 "--eps", "2", "--probes-per-identity", "1", "--max-side", "250", "--out", str(run)]) == 0
    assert main(["-q", "deid", "eval", str(run), "--out", str(tmp_path / "ev")]) == 0
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    s["psr"] = {src: {t: {e: {int(k): v for k, v in by.items()} for e, by in per.items()} for t, per in d.items()}
                for src, d in s["psr"].items()}
    cli = outcome(s, "dlib_resnet", ["dlib_resnet"])
    assert cli.to_dict() == res.to_dict()
    # same cloak bytes as the CLI's
    for f in (run / "cloaks").rglob("*.jpg"):
        assert (tmp_path / "cell" / "cloaks" / f.relative_to(run)).read_bytes() == f.read_bytes()


@pytest.mark.slow
def test_plug_in_image_protection_runs_and_its_contract_is_checked(facescrub_dir, tmp_path):
    from facepriv.attacks.deid.run import run_cloaks

    root = tmp_path / "data" / "photos"
    labels = _data(facescrub_dir, root)
    data = _attack_data(root, labels, None)  # no work folder: a temporary one
    a = create("attack", "deid", {"method": "test_deid_attack:NoiseCloak", "eps": [8], "probes_per_identity": 1,
                                  "max_side": 250, "jpeg_quality": None})
    res = a.run(data)
    assert res.metrics["probes"] == 3 and 0.0 <= res.metrics["psr@1_dlib_resnet_eps8"] <= 100.0
    bad = create("attack", "deid", {"method": "test_deid_attack:OverBudgetCloak", "eps": [4], "probes_per_identity": 1,
                                    "max_side": 250})
    with pytest.raises(ParameterError, match="changed a pixel by 5 at eps 4") as ei:
        run_cloaks(bad.run_config("dlib_resnet", images=str(root)), data.clean.ids.tolist(),
                   data.clean.identity.tolist(), root, tmp_path / "bad")
    assert ei.value.param == "method"
