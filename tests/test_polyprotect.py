"""PolyProtect: window layout and output size, keys, the polynomial map, and the key-disclosure solve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import CosineComparator, comparator_for
from facepriv.protections.keys import derive_seed
from facepriv.protections.polyprotect import PolyProtect, output_dim, polyprotect_key
from facepriv.registry import create

KEY = 555001777


@pytest.mark.parametrize(("overlap", "want"), [(0, 26), (1, 32), (2, 42), (3, 63), (4, 124)])
def test_output_dimension_of_128d_templates(overlap, want):
    assert output_dim(128, 5, overlap) == want
    pp = PolyProtect(m=5, overlap=overlap, seed=KEY)
    assert pp.transform(np.ones((2, 128))).shape == (2, want)
    idx = pp.windows(128)
    assert set(idx.ravel().tolist()) >= set(range(128))  # every element enters a window
    assert (np.diff(idx[:, 0]) == 5 - overlap).all() and idx.max() < 128 + 5


def test_key_is_distinct_nonzero_coefficients_and_a_permutation_of_exponents():
    c, e = polyprotect_key(KEY, 5)
    assert len(set(c.tolist())) == 5 and np.all(c != 0) and np.all(np.abs(c) <= 50)
    assert sorted(e.tolist()) == [1, 2, 3, 4, 5]
    c2, e2 = polyprotect_key(KEY + 1, 5)
    assert not (np.array_equal(c, c2) and np.array_equal(e, e2))


def test_map_is_the_window_polynomial_with_zero_padding():
    x = np.random.default_rng(0).normal(size=(3, 12))
    pp = PolyProtect(m=4, overlap=1, seed=KEY)  # step 3: windows 0-3, 3-6, 6-9, 9-12 (one pad)
    c, e = polyprotect_key(KEY, 4)
    xp = np.pad(x, ((0, 0), (0, 1)))
    want = np.stack([[sum(c[i] * xp[r, s + i] ** e[i] for i in range(4)) for s in (0, 3, 6, 9)] for r in range(3)])
    np.testing.assert_allclose(pp.transform(x), want, rtol=1e-5, atol=1e-5)


def test_per_user_keys_and_record():
    rng = np.random.default_rng(1)
    es = EmbeddingSet(rng.normal(size=(6, 20)).astype(np.float32), np.arange(6).astype(str),
                      np.array(["a", "a", "b", "b", "c", "c"]), {}, "synthetic")
    pp = PolyProtect(m=5, overlap=2, key_scope="user", seed=KEY)
    with pytest.raises(ParameterError, match="identity"):
        pp.transform(es.embeddings)
    out = pp.protect(es)
    c, e = polyprotect_key(derive_seed(KEY, "b", "polyprotect"), 5)
    alone = PolyProtect(m=5, overlap=2, seed=derive_seed(KEY, "b", "polyprotect")).transform(es.embeddings[2:4])
    np.testing.assert_array_equal(out.embeddings[2:4], alone)
    assert str(KEY) not in json.dumps(out.protection)
    assert type(comparator_for(out)) is CosineComparator


@pytest.mark.parametrize(("params", "param"), [
    ({"m": 1}, "m"), ({"m": 200}, "m"), ({"overlap": 5}, "overlap"), ({"overlap": -1}, "overlap"),
    ({"key_scope": None}, "key_scope"), ({"seed": 1.5}, "seed"),
])
def test_bad_parameters_name_the_parameter(params, param):
    with pytest.raises(ParameterError) as err:
        create("protection", "polyprotect", params)
    assert err.value.param == param


def test_too_short_templates_are_refused():
    with pytest.raises(ParameterError, match="shorter than one window"):
        PolyProtect(m=5, seed=KEY).transform(np.ones((2, 4)))


def _faces(seed: int = 1, dim: int = 32, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like values: a shared mean (|x| ~ 0.1) plus individual variation."""
    rng = np.random.default_rng(seed)
    mean = 0.1 * rng.normal(size=dim)
    return mean + 0.03 * rng.normal(size=(n, dim)), mean


def test_solve_finds_exact_preimages_and_with_overlap_4_the_template():
    x, _ = _faces()
    own, att = x[:15], x[15:]
    mu = att.mean(0)
    pp = PolyProtect(m=5, overlap=4, seed=KEY)
    p = pp.transform(own)
    est = pp.invert(p, att)
    rms = np.sqrt((p.astype(np.float64) ** 2).mean())
    assert pp.invert_residual(est, p).max() < 1e-4 * rms  # noise-free: the window equations hold
    rel = np.linalg.norm(est - own, axis=1) / np.linalg.norm(own - mu, axis=1)
    assert np.median(rel) < 0.5  # D' = D - 4 equations pin the template down (the mean alone: 1.0)
    wrong = PolyProtect(m=5, overlap=4, seed=KEY + 1).invert(p, att)
    rel_wrong = np.linalg.norm(wrong - own, axis=1) / np.linalg.norm(own - mu, axis=1)
    assert np.median(rel_wrong) > 0.9


def test_solve_with_little_overlap_recovers_less():
    x, _ = _faces()
    own, att = x[:15], x[15:]
    mu = att.mean(0)
    errs = {}
    for ov in (0, 4):
        pp = PolyProtect(m=5, overlap=ov, seed=KEY)
        est = pp.invert(pp.transform(own), att)
        errs[ov] = np.median(np.linalg.norm(est - own, axis=1) / np.linalg.norm(own - mu, axis=1))
    assert errs[4] < errs[0] - 0.2


def test_invert_checks_shapes():
    x, _ = _faces()
    pp = PolyProtect(m=5, overlap=2, seed=KEY)
    with pytest.raises(ParameterError, match="dimension"):
        pp.invert(np.ones((2, 7)), x)
