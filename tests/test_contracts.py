"""facepriv.testing over every built-in component, on real CelebA faces (the plugin authors' suite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import celeba_rows, dlib_templates

from facepriv import testing
from facepriv.attacks.base import AttackData
from facepriv.registry import available, create
from facepriv.splits import split_two

N_IDS = 8
PER_ID = 5


@pytest.fixture(scope="module")
def real(celeba_dir):
    """Aligned crops and dlib templates of 40 real photos (5 of 4 female and 4 male people)."""
    return dlib_templates(celeba_dir, celeba_rows(celeba_dir, N_IDS, PER_ID))


def _protection_params(name: str, tmp_path: Path) -> dict | None:
    if name == "advface":
        return None  # needs a trained shadow decoder: checked in tests/test_advface*.py
    if name == "pe_miu":
        return {"block_size": 16, "seed": 4242}
    return {}


@pytest.mark.parametrize("name", sorted(available("protection")))
def test_every_builtin_protection_keeps_the_contract(name, real, tmp_path):
    params = _protection_params(name, tmp_path)
    if params is None:
        pytest.skip(f"{name} needs a trained shadow decoder (its own tests cover it)")
    prot = create("protection", name, params)
    if prot.kind == "feature":
        pytest.skip(f"{name} protects feature maps; checked on AdvFace features in tests/test_advface*.py")
    testing.check_template_protection(prot, real["es"])


# Small parameters so that 40 photos suffice; every other parameter keeps its default.
TEMPLATE_ATTACK_PARAMS = {
    "similarity": {"top_n": [1, 3]},
    "classifier": {"classifier": "knn"},
    "score_only": {"queries": [2, 8], "max_victims": None},
    "unlinkability": {},
    "renewability": {},
    "irreversibility": {},
    "identification": {},
}


@pytest.mark.parametrize("name", sorted(TEMPLATE_ATTACK_PARAMS))
def test_template_attacks_keep_the_contract(name, real):
    es = real["es"]
    att, vic = split_two(es.identity, 0.5, seed=3, strata=es.gender)
    for prot in (create("protection", "unprotected"), create("protection", "pe_miu", {"block_size": 16, "seed": 98765})):
        data = AttackData(clean=es, attacker=att, victim=vic, protection=prot, model=real["model"], seed=11)
        out = testing.check_attack(create("attack", name, TEMPLATE_ATTACK_PARAMS[name]), data)
        assert 0.0 <= out.headline["value"] <= 1.0


@pytest.mark.parametrize("name", sorted(n for n in available("model") if n != "onnx_file"))
def test_every_builtin_model_keeps_the_contract(name, celeba_dir):
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    model = get_model(name)
    rows = celeba_rows(celeba_dir, N_IDS, PER_ID)[:4]
    ac = align_images(celeba_dir, [r[0] for r in rows], model.card.alignment)
    testing.check_model(model, ac.crops)


def test_every_builtin_dataset_keeps_the_contract(celeba_dir, tmp_path):
    testing.check_dataset(create("dataset", "folder", {"root": str(celeba_dir), "labels": str(celeba_dir / "labels.csv")}))
    testing.check_dataset(create("dataset", "lfw", {"root": str(celeba_dir.parent / "facescrub6")}))


def test_checks_catch_broken_components(real):
    """The checks fail loudly on the defects they are for (a check that cannot fail is no check)."""
    from facepriv.protections.base import TemplateProtection

    class LeakyNoise(TemplateProtection):
        """Adds key-seeded noise and records the key.

        Parameters
        ----------
        key : int
            The secret.
        """

        summary = "test double"
        secret_params = ("key",)
        threat_model = "key_secret"

        def __init__(self, key: int = 0) -> None:
            self.key = key

        def transform(self, x):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 2:
                raise ValueError("2-d please")
            return x + np.random.default_rng(self.key).normal(size=x.shape).astype(np.float32)

        def record(self):
            return {"name": "leaky", "params": {"key": self.key}}

    with pytest.raises(AssertionError, match="secret"):
        testing.check_template_protection(LeakyNoise(key=123456), real["es"])

    class Unseeded(LeakyNoise):
        """Draws fresh noise on every call.

        Parameters
        ----------
        key : int
            Ignored.
        """

        def transform(self, x):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 2:
                raise ValueError("2-d please")
            return x + np.random.default_rng().normal(size=x.shape).astype(np.float32)

        def record(self):
            return {"name": "unseeded", "params": {"key": "<secret>"}}

    with pytest.raises(AssertionError, match="not deterministic"):
        testing.check_template_protection(Unseeded(key=5), real["es"])
