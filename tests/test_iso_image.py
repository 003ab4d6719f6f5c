"""Image-level irreversibility (key disclosed -> inverted template -> decoded face -> re-embedded), real faces.

Tiny settings (one epoch, 64 px, a few photos): the contract, not the numbers, is under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import celeba_rows, dlib_templates

from facepriv import testing
from facepriv.attacks.base import AttackData
from facepriv.errors import ParameterError
from facepriv.registry import create

N_IDS, PER_ID = 8, 4
TINY = {"size": 64, "epochs": 1, "batch_size": 8, "max_templates": 8}
KEY = 24681357  # must appear in no output


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def real(celeba_dir):
    """dlib templates of 32 real photos (8 people, 4 each, both genders) and their model."""
    return dlib_templates(celeba_dir, celeba_rows(celeba_dir, N_IDS, PER_ID, min_photos=PER_ID + 2))


def _data(real, protection) -> AttackData:
    es = real["es"]
    ids = np.unique(es.identity)
    att = np.isin(es.identity, ids[::2])  # identity-disjoint halves
    return AttackData(clean=es, attacker=np.flatnonzero(att), victim=np.flatnonzero(~att), protection=protection,
                      model=real["model"], image_root=real["root"], seed=11)


def test_image_irreversibility_keeps_the_contract_and_hides_the_key(real):
    prot = create("protection", "biohash", {"seed": KEY})
    out = testing.check_attack(create("attack", "irreversibility_image", TINY), _data(real, prot))
    assert out.status == "ok"
    m = out.metrics
    assert m["n_victims"] == 8 and set(m["image_inversion_success"]) == {"0.001", "0.01", "0.1"}
    assert 0.0 <= out.headline["value"] <= 1.0 and out.headline["value"] == m["image_inversion_success"]["0.01"]
    # success can only grow with the FMR (lower thresholds)
    s = m["image_inversion_success"]
    assert s["0.001"] <= s["0.01"] <= s["0.1"]
    assert set(m["unprotected_reference_success"]) == {"0.001", "0.01", "0.1"}
    assert str(KEY) not in str(out.to_dict())


def test_without_invert_or_photos_it_says_why(real):
    from facepriv.protections.base import TemplateProtection

    class NoInverse(TemplateProtection):
        """A protection that offers no key-disclosure inversion.

        Parameters
        ----------
        seed : int
            Unused.
        """

        summary = "test double"

        def __init__(self, seed: int = 0) -> None:
            self.seed = seed

        def transform(self, x):
            return np.asarray(x, dtype=np.float32)[:, ::-1].copy()

    out = create("attack", "irreversibility_image", TINY).run(_data(real, NoInverse()))
    assert out.status == "not_applicable" and "invert" in out.message
    data = _data(real, create("protection", "biohash", {"seed": KEY}))
    data.image_root = None
    out = create("attack", "irreversibility_image", TINY).run(data)
    assert out.status == "not_applicable"


@pytest.mark.parametrize(("params", "param"), [({"size": 50}, "size"), ({"epochs": 0}, "epochs"),
                                               ({"max_templates": 1}, "max_templates"), ({"max_train": 0}, "max_train")])
def test_bad_parameters_name_the_parameter(params, param):
    with pytest.raises(ParameterError) as e:
        create("attack", "irreversibility_image", params)
    assert e.value.param == param
