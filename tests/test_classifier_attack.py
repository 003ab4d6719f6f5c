"""Classifier baselines: training on the attacker's set, CV mode, parameters."""

from __future__ import annotations

import numpy as np
import pytest

from facepriv.attacks.classifiers import CLASSIFIERS, ClassifierAttack, make_classifier
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.registry import create


def _es(seed: int, n_id: int = 24, per: int = 5, d: int = 32, shift: float = 3.0) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    ids = np.arange(n_id)
    sex = np.where(ids % 2 == 0, "female", "male")
    centres = rng.normal(size=(n_id, d))
    centres[:, :4] += np.where(ids % 2 == 0, shift, -shift)[:, None]  # gender lives in 4 dims
    x = centres[np.repeat(ids, per)] + 0.3 * rng.normal(size=(n_id * per, d))
    return EmbeddingSet(
        x.astype(np.float32),
        np.array([f"s{seed}_{i}" for i in range(n_id * per)]),
        np.array([f"s{seed}_{i}" for i in np.repeat(ids, per)]),
        {"gender": np.repeat(sex, per)},
    )


def test_every_classifier_learns_a_separable_attribute():
    res = ClassifierAttack(classifier="all").fit(_es(1)).evaluate(_es(2))
    rows = {r["classifier"]: r for r in res.rows()}
    assert set(rows) == set(CLASSIFIERS)
    for name in ("knn", "svm_rbf", "logreg"):
        assert rows[name]["accuracy"] > 0.85, name
        assert rows[name]["ci_low"] <= rows[name]["accuracy"] <= rows[name]["ci_high"]
    assert res.chance() == 0.5
    d = res.to_dict()
    assert d["n"] == 120 and 0 < d["correct"] <= 120


def test_no_signal_gives_chance_level():
    a, b = _es(1, shift=0.0), _es(2, shift=0.0)
    res = ClassifierAttack(classifier="logreg").fit(a).evaluate(b)
    assert 0.3 < res.rows()[0]["accuracy"] < 0.7


def test_cv_mode_is_identity_grouped_and_seeded():
    a, b = _es(1), _es(2)
    r1 = ClassifierAttack(classifier="knn", cv=5, seed=0).fit(a).evaluate(b)
    r2 = ClassifierAttack(classifier="knn", cv=5, seed=0).fit(a).evaluate(b)
    assert len(r1.true) == len(a) + len(b)
    np.testing.assert_array_equal(r1.predictions["knn"], r2.predictions["knn"])
    assert r1.rows()[0]["accuracy"] > 0.85


def test_knn_is_k3_and_svm_c100():
    knn = make_classifier("knn")[-1]
    svm = make_classifier("svm_poly")[-1]
    assert knn.n_neighbors == 3 and svm.C == 100 and svm.kernel == "poly"


@pytest.mark.parametrize("params", [{"classifier": "tree"}, {"cv": 1}, {"cv": -3}])
def test_bad_parameters(params):
    with pytest.raises(ParameterError):
        create("attack", "classifier", params)


def test_bad_inputs():
    a = _es(1)
    single = a.subset(np.flatnonzero(a.gender == "male"))
    with pytest.raises(ParameterError, match="single"):
        ClassifierAttack().fit(single)
    with pytest.raises(ParameterError, match="dimension mismatch"):
        ClassifierAttack(classifier="knn").fit(a).evaluate(_es(2, d=16))
    with pytest.raises(ParameterError, match="identities"):
        ClassifierAttack(classifier="knn", cv=10).fit(_es(1, n_id=4)).evaluate(_es(2, n_id=4))
