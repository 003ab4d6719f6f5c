"""IVE: which dimensions are eliminated, the recorded mask, errors, and the mean-fill inversion."""

from __future__ import annotations

import numpy as np
import pytest

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import protection_from_record
from facepriv.protections.ive import IVE
from facepriv.registry import create

INFORMATIVE = [3, 7, 11, 19]


def _labelled(n: int = 160, dim: int = 24, seed: int = 0) -> EmbeddingSet:
    """Synthetic templates whose INFORMATIVE dimensions carry the gender, the rest is noise."""
    rng = np.random.default_rng(seed)
    g = np.array(["female", "male"])[rng.integers(0, 2, size=n)]
    x = rng.normal(size=(n, dim))
    x[:, INFORMATIVE] += np.where(g == "male", 1.5, -1.5)[:, None] * np.array([1.0, 0.9, 0.8, 0.7])
    return EmbeddingSet(x.astype(np.float32), np.arange(n).astype(str), np.arange(n).astype(str),
                        {"gender": g}, "synthetic")


def test_eliminates_the_attribute_dimensions_first():
    es = _labelled()
    ive = IVE(n_remove=2, steps=2, n_estimators=30, seed=1).fit(es)
    assert sorted(ive.removed_) == INFORMATIVE
    out = ive.protect(es)
    assert out.dim == 20
    np.testing.assert_array_equal(out.embeddings, np.delete(es.embeddings, INFORMATIVE, axis=1))
    assert out.protection["params"]["removed"] == ive.removed_


def test_recorded_mask_protects_other_files_the_same_way_without_labels():
    es = _labelled()
    out = IVE(n_remove=2, steps=2, n_estimators=30, seed=1).protect(es)
    again = protection_from_record(out.protection)
    unlabelled = EmbeddingSet(es.embeddings, es.ids, es.identity, {}, "synthetic")
    np.testing.assert_array_equal(again.protect(unlabelled).embeddings, out.embeddings)


def test_fit_needs_the_attribute_labels():
    es = _labelled()
    bare = EmbeddingSet(es.embeddings, es.ids, es.identity, {}, "synthetic")
    with pytest.raises(ParameterError, match="no 'gender' labels") as err:
        IVE().fit(bare)
    assert err.value.param == "attribute"
    with pytest.raises(ParameterError, match="gender"):
        IVE().fit(None)
    one_class = EmbeddingSet(es.embeddings, es.ids, es.identity, {"gender": np.full(len(es), "male")}, "s")
    with pytest.raises(ParameterError, match="2 classes"):
        IVE(n_remove=2, steps=2).fit(one_class)
    with pytest.raises(ParameterError, match="not fitted"):
        IVE().transform(es.embeddings)


@pytest.mark.parametrize(("params", "param"), [
    ({"n_remove": 0}, "n_remove"), ({"steps": -1}, "steps"), ({"n_estimators": 0}, "n_estimators"),
    ({"removed": [1, 1]}, "removed"), ({"removed": []}, "removed"), ({"attribute": ""}, "attribute"),
])
def test_bad_parameters_name_the_parameter(params, param):
    with pytest.raises(ParameterError) as err:
        create("protection", "ive", params)
    assert err.value.param == param


def test_removing_every_dimension_is_refused():
    with pytest.raises(ParameterError, match="at least one must remain"):
        IVE(n_remove=6, steps=4).fit(_labelled(dim=24))
    with pytest.raises(ParameterError, match="dimension 30"):
        IVE(removed=[30]).fit(_labelled(dim=24))


def test_invert_fills_eliminated_dimensions_from_the_attacker_mean():
    es = _labelled()
    ive = IVE(removed=INFORMATIVE).fit()
    att = np.random.default_rng(5).normal(size=(50, 24))
    est = ive.invert(ive.transform(es.embeddings[:10]), att)
    kept = np.setdiff1d(np.arange(24), INFORMATIVE)
    np.testing.assert_allclose(est[:, kept], es.embeddings[:10, kept], rtol=1e-6)
    np.testing.assert_allclose(est[:, INFORMATIVE], np.tile(att.mean(0)[INFORMATIVE], (10, 1)), rtol=1e-5)
