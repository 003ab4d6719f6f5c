"""The invaders: oblivious, adaptive (FaceCure adapter) and training-time (Fawkes) de-identification attacks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from facepriv import testing
from facepriv.attacks.deid.invader_eval import fit_adapter
from facepriv.errors import ParameterError
from facepriv.registry import create, describe, get_class


def test_adapter_maps_cloaked_embeddings_back_to_their_clean_originals():
    # synthetic maths check: "cloaking" adds one fixed direction (a systematic shift) plus noise
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(60, 16)).astype(np.float32)
    clean /= np.linalg.norm(clean, axis=1, keepdims=True)
    shift = rng.normal(size=16).astype(np.float32)
    cloaked = clean + 1.5 * shift / np.linalg.norm(shift) + 0.05 * rng.normal(size=clean.shape).astype(np.float32)
    a = fit_adapter(clean, cloaked, epochs=150)
    cos = torch.nn.functional.cosine_similarity
    c, z = torch.from_numpy(clean), torch.from_numpy(cloaked)
    before = float(cos(z, c).mean())
    with torch.no_grad():
        after = float(cos(a(z), c).mean())
        kept = float(cos(a(c), c).mean())
    assert before < 0.7 and after > 0.9 and kept > 0.9, (before, after, kept)
    assert not any(p.requires_grad for p in a.parameters())


def test_invaders_are_registered_components_with_documented_parameters():
    for name in ("deid_oblivious", "deid_adaptive", "deid_training"):
        cls = get_class("attack", name)
        assert cls.needs_images and cls.applies_to == ("template", "image")
        info = describe("attack", name)
        assert all(v["meaning"] for v in info["params"].values()), (name, info["params"])
        testing.check_component(create("attack", name, {"eps": [4]}))
    assert describe("attack", "deid_adaptive")["params"]["setting"]["default"] == "probe"
    assert describe("attack", "deid_training")["params"]["setting"]["default"] == "training"


@pytest.mark.parametrize("name, params, param", [
    ("deid_adaptive", {"setting": "both"}, "setting"), ("deid_adaptive", {"invader_photos": 0}, "invader_photos"),
    ("deid_adaptive", {"adapter_epochs": 0}, "adapter_epochs"), ("deid_training", {"setting": "probe"}, "setting"),
    ("deid_training", {"published_per_identity": 0}, "published_per_identity"),
    ("deid_adaptive", {"postprocess": ["x:1"]}, "postprocess"), ("deid", {"postprocess": ["jpeg:-1"]}, "postprocess"),
    ("deid", {"method_params": {"ensemble": ["no_such_model"]}}, "ensemble")])
def test_bad_invader_parameters_are_named(name, params, param):
    with pytest.raises(ParameterError) as ei:
        create("attack", name, params)
    assert ei.value.param == param


def _photos(celeba_dir, root, people=6, per=6):
    """The first ``per`` photos of the first ``people`` CelebA identities with enough photos, copied."""
    import csv

    from facepriv.embeddings import EmbeddingSet

    by: dict[str, list[str]] = {}
    with open(celeba_dir / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            by.setdefault(r["identity"], []).append(r["image"])
    ids, ident = [], []
    for person in [p for p in sorted(by) if len(by[p]) >= per][:people]:
        (root / person).mkdir(parents=True)
        for j, im in enumerate(sorted(by[person])[:per]):
            shutil.copy(celeba_dir / im, root / person / f"img{j}.jpg")
            ids.append(f"{person}/img{j}.jpg")
            ident.append(person)
    return EmbeddingSet(np.zeros((len(ids), 2), np.float32), np.array(ids), np.array(ident))


def _data(es, root, protection=None):
    from facepriv.attacks.base import AttackData
    from facepriv.protections.base import build_protection
    from facepriv.splits import split_two

    att, vic = split_two(es.identity, 0.5, seed=3)
    return AttackData(clean=es, attacker=att, victim=vic, protection=protection or build_protection("unprotected"),
                      image_root=root, seed=1)


def test_oblivious_invader_refuses_a_target_that_made_the_cloak(tmp_path):
    from facepriv.embeddings import EmbeddingSet
    from facepriv.protections.base import build_protection

    es = EmbeddingSet(np.zeros((2, 2), np.float32), np.array(["a/1.jpg", "b/1.jpg"]), np.array(["a", "b"]))
    with pytest.raises(ParameterError, match="oblivious") as ei:
        create("attack", "deid_oblivious", {"source": "dlib_resnet", "targets": ["edgeface", "dlib_resnet"]}).run(
            _data(es, tmp_path))
    assert ei.value.param == "targets"
    ens = build_protection("bim_cloak", {"eps": [4], "ensemble": ["sface"]})
    with pytest.raises(ParameterError, match="sface"):
        create("attack", "deid_oblivious", {"source": "dlib_resnet", "targets": ["sface"]}).run(_data(es, tmp_path, ens))
    assert not list(tmp_path.iterdir())  # refused before any work


@pytest.mark.slow
def test_adaptive_invader_keeps_the_attack_contract(celeba_dir, tmp_path):
    es = _photos(celeba_dir, tmp_path / "photos")
    params = {"source": "dlib_resnet", "targets": ["sface"], "eps": [2], "probes_per_identity": 1, "min_gallery": 3,
              "max_side": 250, "invader_photos": 2, "adapter_epochs": 50}
    out = testing.check_attack(create("attack", "deid_adaptive", params), _data(es, tmp_path / "photos"))
    rows = out.tables["psr@1 (probe setting, source dlib_resnet)"]["rows"]
    assert [r[:2] for r in rows] == [["sface", "fixed"], ["sface", "adaptive"]]
    assert all(0.0 <= v <= 100.0 for r in rows for v in r[2:])
    assert out.curves["psr_vs_eps"]["x"] == [0.0, 2.0] and out.metrics["probes"] == 3


@pytest.mark.slow
def test_training_time_invader_probes_clean_photos(celeba_dir, tmp_path):
    es = _photos(celeba_dir, tmp_path / "photos")
    params = {"source": "dlib_resnet", "targets": ["dlib_resnet"], "eps": [4], "published_per_identity": 3,
              "min_gallery": 2, "max_side": 250}
    out = create("attack", "deid_training", params).run(_data(es, tmp_path / "photos"))
    rows = out.tables["psr@1 (training setting, source dlib_resnet)"]["rows"]
    assert [r[:2] for r in rows] == [["dlib_resnet", "fixed"]]
    # eps 0: the head trained on the clean published photos identifies the clean probes of 3 people
    assert out.metrics["psr@1_dlib_resnet_fixed_eps0"] < 50.0
    assert out.metrics["setting"] == "training" and out.metrics["identities"] == 3
