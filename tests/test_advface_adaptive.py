"""The ``advface_adaptive`` attack: adaptive attacker vs feature protections, and AdvFace's cost vs shadow data."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from facepriv import testing
from facepriv.advface.adaptive import ATTACKER_SEED_OFFSET, attacker_copy, finetune_decoder
from facepriv.advface.adaptive_attack import AdvFaceAdaptive
from facepriv.advface.cost import wilson
from facepriv.attacks.base import AttackData
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.registry import create, describe, get_class

N_IDS, PER_ID = 12, 4
#: small, fast settings; the numbers are not the point here (docs/advface.md has measured ones)
FAST = {"size": 32, "epochs": 1, "batch_size": 8, "steps": 3, "max_eval": 16, "methods": ["advface", "dp"],
        "adaptive_eps": [0.2], "adaptive_epochs": 1, "adaptive_images": 8, "shadow_sizes": [4, 8], "seed": 5}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
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


def _data(real, work_dir=None) -> AttackData:
    es = real["es"]
    half = np.arange(len(es)) < len(es) // 2
    return AttackData(clean=es, attacker=np.flatnonzero(half), victim=np.flatnonzero(~half),
                      protection=create("protection", "unprotected"), model=real["model"], image_root=real["root"],
                      seed=11, work_dir=work_dir)


def test_registered_and_documented():
    cls = get_class("attack", "advface_adaptive")
    assert cls is AdvFaceAdaptive and cls.needs_images and cls.only_protections == ("unprotected",)
    d = describe("attack", "advface_adaptive")
    assert all(p["meaning"] for p in d["params"].values())
    # the shared decoder / noise defaults are advface_table1's
    t1 = describe("attack", "advface_table1")["params"]
    for p in ("arch", "size", "epochs", "batch_size", "lr", "eps", "alpha", "steps", "bound", "seed"):
        assert d["params"][p]["default"] == t1[p]["default"]
    testing.check_component(AdvFaceAdaptive())


@pytest.mark.parametrize("param, value", [
    ("methods", ["advface", "blur"]), ("methods", "advface"), ("adaptive_eps", []),
    ("adaptive_eps", [0.1, 0.3]), ("adaptive_eps", [-0.1, 0.2]), ("adaptive_epochs", 0), ("adaptive_images", 1),
    ("shadow_sizes", [1]), ("shadow_sizes", "100"), ("max_eval", 0), ("eps", -1.0), ("arch", "vgg"),
])
def test_bad_values_name_the_parameter(param, value):
    with pytest.raises(ParameterError) as exc:
        AdvFaceAdaptive(**{param: value}).validate_params()
    assert exc.value.param == param


def test_adaptive_eps_need_not_hold_eps_without_advface():
    AdvFaceAdaptive(methods=["dp"], adaptive_eps=[0.5]).validate_params()


def test_finetuning_works_on_a_copy_and_is_seeded():
    """Fine-tuning leaves the attacker's non-adaptive decoder as it was; the same seed gives the same weights."""
    from facepriv.advface.decoders import build_decoder

    torch.manual_seed(0)
    dec = build_decoder("resrec", (4, 6, 6), 16).eval()
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10, 4, 6, 6)).astype(np.float32)
    crops = rng.integers(0, 256, size=(10, 20, 20, 3), dtype=np.uint8)
    a = finetune_decoder(dec, z, crops, 16, epochs=1, lr=1e-2, batch_size=4, seed=3)
    b = finetune_decoder(dec, z, crops, 16, epochs=1, lr=1e-2, batch_size=4, seed=3)
    assert all(torch.equal(before[k], v) for k, v in dec.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in a.state_dict().items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_attacker_noise_is_not_the_servers():
    """The adaptive attacker draws its own noise: it does not know the server's secret seed."""
    from facepriv.advface.protect import LaplaceDP, RandomNoise

    z = np.zeros((3, 2, 4, 4), np.float32)
    mine = attacker_copy("random", 0.2, None, None, 0.2, 5, "ball", seed=9).transform(z)
    server = RandomNoise(eps=0.2, alpha=0.2, steps=5, seed=9).transform(z)
    assert not np.array_equal(mine, server) and np.abs(mine).max() <= 0.2 + 1e-6
    dp = attacker_copy("dp", 0.2, None, None, 0.2, 5, "ball", seed=9)
    assert dp.seed == 9 + ATTACKER_SEED_OFFSET and not np.array_equal(dp.transform(z), LaplaceDP(seed=9).transform(z))
    with pytest.raises(ValueError, match="unknown method"):
        attacker_copy("blur", 0.2, None, None, 0.2, 5, "ball", seed=9)


def test_wilson_helper():
    lo, hi = wilson(0.5, 100)
    assert lo < 0.5 < hi and wilson(0.3, 0)[0] != wilson(0.3, 0)[0]  # nan without trials


@pytest.mark.slow
def test_keeps_the_attack_contract_with_its_tables(real):
    out = testing.check_attack(AdvFaceAdaptive(**FAST), _data(real))
    assert out.headline["metric"] == "srra (adaptive attacker, advface eps 0.2)"
    assert 0.0 <= out.headline["value"] <= 1.0 and out.headline["ci_low"] <= out.headline["value"]
    rows = out.tables["adaptive vs non-adaptive attacker"]["rows"]
    assert [(r[0], r[1]) for r in rows] == [("advface", 0.2), ("dp", 0.2)]
    for r in rows:
        assert all(0.0 <= v <= 1.0 for v in (r[2], r[3], r[6], r[7]))
    cost = out.tables["AdvFace cost vs shadow training set"]["rows"]
    assert [(r[0], r[2]) for r in cost] == [(4, 0.0), (4, 0.2), (8, 0.0), (8, 0.2)]
    for r in cost:
        lo, hi = r[4]
        assert lo <= r[3] <= hi
    assert set(out.curves) == {"adaptive_advface", "adaptive_dp", "cost_vs_shadow_images"}
    assert out.curves["cost_vs_shadow_images"]["x"] == [4, 8]
