"""The registered ``advface_table1`` attack and the AdvFace protections as components, on real faces in memory."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from facepriv import testing
from facepriv.advface.attack import AdvFaceTable1
from facepriv.advface.protect import AdvFace, LaplaceDP, RandomNoise
from facepriv.attacks.base import AttackData
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import FeatureProtection
from facepriv.registry import create, describe, get_class

N_IDS, PER_ID = 12, 4
#: small, fast settings; the numbers are not the point here
FAST = {"size": 32, "epochs": 1, "batch_size": 8, "steps": 3, "sweep": [0.0, 0.2], "max_eval": 16, "seed": 5}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """The attack works with OMP_NUM_THREADS torch threads (else every CPU): one, like the other tests."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def real(celeba_dir):
    """dlib templates of 48 real photos (12 people, 4 each) under the CelebA folder, and the model."""
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    with open(celeba_dir / "labels.csv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])
    by: dict[str, list[str]] = {}
    for r in rows:
        by.setdefault(r["identity"], []).append(r["image"])
    people = [i for i in sorted(by) if len(by[i]) >= PER_ID + 2][:N_IDS]
    picked = [(im, i) for i in people for im in by[i][:PER_ID]]
    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [p for p, _ in picked], model.card.alignment)
    ident = dict(picked)
    es = EmbeddingSet(model.embed(ac.crops), np.array(ac.ids), np.array([ident[i] for i in ac.ids]), {}, "dlib_resnet")
    return {"es": es, "model": model, "root": celeba_dir}


def _data(real, work_dir=None, aligned=None) -> AttackData:
    es = real["es"]
    half = np.arange(len(es)) < len(es) // 2  # the attacker / victim rows are not used by this attack
    return AttackData(clean=es, attacker=np.flatnonzero(half), victim=np.flatnonzero(~half),
                      protection=create("protection", "unprotected"), model=real["model"], image_root=real["root"],
                      seed=11, work_dir=work_dir, aligned=aligned)


def test_registered_with_one_documented_default_per_parameter():
    cls = get_class("attack", "advface_table1")
    assert cls is AdvFaceTable1 and cls.needs_images and cls.only_protections == ("unprotected",)
    d = describe("attack", "advface_table1")
    assert all(p["meaning"] for p in d["params"].values())
    assert d["params"]["eps"]["default"] == AdvFace.param_defaults()["eps"] == RandomNoise.param_defaults()["eps"]
    assert d["params"]["steps"]["default"] == 40 and d["params"]["epochs"]["default"] == 10
    for comp in (AdvFaceTable1(), AdvFace(shadow="x"), RandomNoise(seed=7), LaplaceDP(seed=7)):
        testing.check_component(comp)
    for cls_ in (AdvFace, RandomNoise, LaplaceDP):
        assert issubclass(cls_, FeatureProtection) and cls_.kind == "feature"
    assert "<secret>" in json.dumps(RandomNoise(seed=123457).record()) and "123457" not in repr(LaplaceDP(seed=123457))
    why = AdvFaceTable1.not_applicable(create("protection", "pe_miu", {"block_size": 16}), True)
    assert why and "unprotected" in why
    assert AdvFaceTable1.not_applicable(create("protection", "unprotected"), False)


@pytest.mark.parametrize("param, value", [
    ("eps", -0.2), ("eps", float("nan")), ("alpha", 0), ("steps", 0), ("bound", "cube"), ("arch", "vgg"),
    ("size", 0), ("epochs", 0), ("batch_size", 1), ("lr", -1.0), ("lr", float("nan")), ("max_images", -3),
    ("max_images", 0), ("sweep", []), ("sweep", [0.1, -0.1]), ("sweep", "0.1"), ("max_eval", -4), ("max_eval", 0),
    ("offline_epochs", -1), ("seed", -1), ("seed", 2**40), ("seed", 1.5), ("cut", ""),
])
def test_yaml_values_are_refused_by_the_component_naming_the_parameter(param, value):
    """What a YAML ``params:`` entry reaches: create() validates before any work, naming the parameter."""
    with pytest.raises(ParameterError) as err:
        create("attack", "advface_table1", {param: value})
    assert err.value.param == param and str(err.value).startswith(f"{param}: ")
    assert "--" not in str(err.value)  # a library message names the parameter, not a flag


@pytest.mark.parametrize("name, params, bad", [
    ("advface", {"eps": -0.2}, "eps"), ("advface", {"batch_size": 1}, "batch_size"),
    ("random_noise", {"alpha": float("inf")}, "alpha"), ("random_noise", {"seed": -3}, "seed"),
    ("laplace_dp", {"budget": 0}, "budget"), ("laplace_dp", {"eps": float("nan")}, "eps"),
])
def test_bad_protection_parameters_name_the_parameter(name, params, bad):
    with pytest.raises(ParameterError) as err:
        create("protection", name, params)
    assert err.value.param == bad


def test_feature_protections_refuse_templates_and_need_a_shadow():
    with pytest.raises(ParameterError, match="4-d"):
        RandomNoise().transform(np.zeros((3, 128), np.float32))
    with pytest.raises(ParameterError) as err:
        AdvFace().fit()
    assert err.value.param == "shadow"


def test_alignment_comes_from_the_model_card(real):
    """Another model's photos are aligned with its own recipe (arcface112), not dlib's."""
    asked: list[str] = []

    class Stop(Exception):
        pass

    def aligned(recipe):
        asked.append(recipe)
        raise Stop

    data = _data(real, aligned=aligned)
    data.model = create("model", "mobilefacenet")
    with pytest.raises(Stop):
        AdvFaceTable1(**FAST).run(data)
    assert asked == [data.model.card.alignment] == ["arcface112"]


@pytest.mark.slow
def test_keeps_the_attack_contract_and_resumes_from_its_work_folder(real, tmp_path):
    """In memory and with a work folder: the same outcome; a second run resumes the finished decoders."""
    out = testing.check_attack(AdvFaceTable1(**FAST), _data(real))  # twice, global RNG disturbed in between
    assert out.images == [] and out.headline["metric"] == "srra (advface)"
    rows = out.tables["AdvFace Table 1"]["rows"]
    assert [r[0] for r in rows] == ["unprotected", "random", "dp", "advface"]
    assert out.curves["eps_sweep"]["x"] == [0.0, 0.2]
    m = out.metrics
    assert m["eval_identities"] >= 2 and m["eval_images"] <= 16
    for meth in ("unprotected", "random", "dp", "advface"):
        assert 0 <= m[f"{meth}_ssim"] <= 1 and 0 <= m[f"{meth}_srra"] <= 1 and 0 <= m[f"{meth}_accuracy"] <= 1
    work = tmp_path / "cell"
    first = AdvFaceTable1(**FAST).run(_data(real, work_dir=work))
    assert first.images == ["eval/reconstructions.png", "eval/tradeoff_psnr_accuracy.png"]
    assert all((work / p).stat().st_size > 1000 for p in first.images)
    assert {first.to_dict()[k] == out.to_dict()[k] for k in ("headline", "metrics", "curves", "tables")} == {True}
    ckpt = work / "shadow-resrec" / "decoder.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = AdvFaceTable1(**FAST).run(_data(real, work_dir=work))
    assert ckpt.stat().st_mtime_ns == stamp  # the finished decoder was resumed, not retrained
    assert again.to_dict() == first.to_dict()
    # other settings in the same work folder: trained again from scratch, not a stale decoder reused
    other = AdvFaceTable1(**{**FAST, "seed": 6}).run(_data(real, work_dir=work))
    assert ckpt.stat().st_mtime_ns != stamp
    assert json.loads((work / "shadow-resrec" / "config.json").read_text())["seed"] == 6
    assert other.to_dict()["metrics"] != first.to_dict()["metrics"]
