"""BioHashing: projection maths, Hamming comparator, keys (system / per-user), record, inversion (synthetic)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import comparator_for, protection_from_record
from facepriv.protections.biohashing import BioHash, HammingComparator, biohash_matrix
from facepriv.protections.keys import derive_seed
from facepriv.registry import create

KEY = 918273645


def _set(n_ids: int = 6, per: int = 4, dim: int = 32, seed: int = 0) -> EmbeddingSet:
    """Synthetic non-centred templates: a common offset plus an identity direction plus noise."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=dim)
    centres = rng.normal(size=(n_ids, dim))
    x = np.concatenate([offset + c + 0.3 * rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
    ident = np.repeat([f"id{i}" for i in range(n_ids)], per)
    return EmbeddingSet(x, np.array([f"s{i}" for i in range(len(x))]), ident, {}, "synthetic")


def test_matrix_has_orthonormal_columns_and_depends_on_the_key():
    w = biohash_matrix(KEY, 40, 24)
    assert w.shape == (40, 24)
    np.testing.assert_allclose(w.T @ w, np.eye(24), atol=1e-10)
    np.testing.assert_array_equal(w, biohash_matrix(KEY, 40, 24))
    assert np.abs(w - biohash_matrix(KEY + 1, 40, 24)).max() > 0.1


def test_codes_are_signs_of_the_centred_projection():
    es = _set()
    bh = BioHash(length=16, seed=KEY).fit(es)
    codes = bh.transform(es.embeddings)
    assert codes.dtype == np.float32 and set(np.unique(codes)) <= {-1.0, 1.0}
    centre = np.round(es.embeddings.astype(np.float64).mean(0), 4)
    want = np.where((es.embeddings - centre) @ biohash_matrix(KEY, 32, 16) > 0, 1.0, -1.0)
    np.testing.assert_array_equal(codes, want)


@pytest.mark.parametrize("zero_one", [False, True])
def test_hamming_comparator_matches_counting_bits(zero_one):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, size=(7, 37)).astype(np.float32)
    b = rng.integers(0, 2, size=(5, 37)).astype(np.float32)
    if not zero_one:
        a, b = 2 * a - 1, 2 * b - 1
    comp = HammingComparator()
    want = np.array([[1 - np.mean((x > 0) != (y > 0)) for y in b] for x in a])
    np.testing.assert_allclose(comp.pairwise(a, b), want, atol=1e-12)
    np.testing.assert_allclose(comp.paired(a[:5], b), np.diag(want[:5]), atol=1e-12)
    with pytest.raises(ParameterError, match="length mismatch"):
        comp.pairwise(a, b[:, :30])


def test_same_person_codes_are_closer_than_other_people():
    es = _set(n_ids=10, per=4, dim=64)
    bh = BioHash(length=64, seed=KEY).fit(es)
    s = bh.comparator().pairwise(bh.transform(es.embeddings), bh.transform(es.embeddings))
    same = es.identity[:, None] == es.identity[None, :]
    off = ~np.eye(len(es), dtype=bool)
    assert s[same & off].mean() > s[~same].mean() + 0.2


def test_centre_is_recorded_and_rebuilds_the_same_codes_the_key_is_not():
    es = _set()
    out = BioHash(length=16, seed=KEY).protect(es)
    text = json.dumps(out.protection)
    assert str(KEY) not in text and out.protection["params"]["seed"] == "<secret>"
    assert len(out.protection["params"]["center"]) == es.dim
    again = protection_from_record(out.protection, secrets={"seed": KEY})
    np.testing.assert_array_equal(again.fit().transform(es.embeddings), out.embeddings)
    assert isinstance(comparator_for(out), HammingComparator)
    with pytest.raises(ParameterError, match="keyed"):
        protection_from_record(out.protection, require_key=True)


def test_uncentred_variant_thresholds_the_raw_projection():
    es = _set()
    codes = BioHash(length=8, center=None, seed=KEY).fit().transform(es.embeddings)
    np.testing.assert_array_equal(codes, np.where(es.embeddings @ biohash_matrix(KEY, 32, 8) > 0, 1.0, -1.0))


def test_per_user_keys_come_from_the_seed_and_the_label():
    es = _set()
    bh = BioHash(length=16, key_scope="user", seed=KEY).fit(es)
    with pytest.raises(ParameterError, match="identity") as err:
        bh.transform(es.embeddings)
    assert err.value.param == "key_scope"
    x = np.repeat(es.embeddings[:1], 2, axis=0)
    codes = bh.transform(x, identity=np.array(["alice", "bob"]))
    assert not np.array_equal(codes[0], codes[1])  # same template, two users, two keys
    w = biohash_matrix(derive_seed(KEY, "alice", "biohash"), 32, 16)
    np.testing.assert_array_equal(codes[0], np.where((x[0] - bh.centre(32)) @ w > 0, 1.0, -1.0))
    assert derive_seed(KEY, "alice", "biohash") != derive_seed(KEY + 1, "alice", "biohash")
    assert derive_seed(KEY, "alice", "biohash") != derive_seed(KEY, "alice", "polyprotect")
    np.testing.assert_array_equal(bh.protect(es).embeddings, bh.transform(es.embeddings, identity=es.identity))


@pytest.mark.parametrize(("params", "param"), [
    ({"length": 0}, "length"), ({"length": 2.5}, "length"), ({"key_scope": "team"}, "key_scope"),
    ({"center": "mean"}, "center"), ({"center": [1.0, float("nan")]}, "center"), ({"seed": -3}, "seed"),
    ({"seed": "abc"}, "seed"),
])
def test_bad_parameters_name_the_parameter(params, param):
    with pytest.raises(ParameterError) as err:
        create("protection", "biohash", params)
    assert err.value.param == param


def test_length_above_the_dimension_and_one_dimensional_input_are_refused():
    es = _set(dim=32)
    with pytest.raises(ParameterError, match="length 64 exceeds"):
        BioHash(length=64, seed=KEY).fit(es)
    bh = BioHash(length=16, seed=KEY).fit(es)
    with pytest.raises(ParameterError, match="2-d"):
        bh.transform(es.embeddings[0])
    with pytest.raises(ParameterError, match="center='fit'"):
        BioHash(seed=KEY).fit()


def test_inversion_with_the_key_recovers_the_direction_and_fails_without_it():
    rng = np.random.default_rng(7)
    dim = 64
    mean = 2.0 * rng.normal(size=dim)  # far from centred, like real embeddings
    scale = rng.uniform(0.5, 1.5, size=dim)
    x = (mean + scale * rng.normal(size=(300, dim))).astype(np.float32)
    own, att = x[:100], x[100:]
    es = EmbeddingSet(att, np.arange(len(att)).astype(str), np.arange(len(att)).astype(str), {}, "synthetic")
    bh = BioHash(length=64, seed=KEY).fit(es)
    est = bh.invert(bh.transform(own), att)
    assert est.shape == own.shape and np.isfinite(est).all()

    def centred_cos(a: np.ndarray) -> np.ndarray:  # cosine after removing the mean both share
        u, v = a - mean, own - mean
        return (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)

    assert centred_cos(est).mean() > 0.7  # random directions would give ~0 (sd 1/8)
    wrong = BioHash(length=64, seed=KEY + 1).fit(es)
    assert abs(centred_cos(wrong.invert(bh.transform(own), att)).mean()) < 0.2
    with pytest.raises(ParameterError, match="bits"):
        bh.invert(bh.transform(own)[:, :10], att)
