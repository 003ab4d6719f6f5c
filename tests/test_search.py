"""Exact top-k search: FAISS paths equal the numpy brute force (ties avoided by construction)."""

from __future__ import annotations

import numpy as np
import pytest

from facepriv.errors import ParameterError
from facepriv.protections.base import Comparator, CosineComparator
from facepriv.search import comparator_metric, top_k, top_k_numpy


class Hamming(Comparator):
    """1 - normalised Hamming distance of {0, 1} codes (declares the fast path)."""

    metric = "hamming"

    def pairwise(self, a, b):
        a, b = np.asarray(a) > 0, np.asarray(b) > 0
        return 1.0 - (a[:, None, :] != b[None, :, :]).sum(-1) / a.shape[1]

    def paired(self, a, b):
        return np.diag(self.pairwise(a, b))


class Euclid(Comparator):
    """A comparator without a fast path: negative Euclidean distance."""

    def pairwise(self, a, b):
        return -np.linalg.norm(np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :], axis=-1)


def _brute(comp, p, g, k):
    s = np.asarray(comp.pairwise(p, g), dtype=np.float64)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def test_cosine_faiss_equals_brute_force():
    rng = np.random.default_rng(0)
    g, p = rng.normal(size=(700, 64)), rng.normal(size=(90, 64))
    comp = CosineComparator()
    assert comparator_metric(comp) == "cosine"
    s, i = top_k(comp, p, g, 7, chunk=32)
    bs, bi = _brute(comp, p, g, 7)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, atol=1e-5)
    s2, i2 = top_k_numpy(comp, p, g, 7, chunk=16, gallery_chunk=100)  # generic path, chunked gallery
    np.testing.assert_array_equal(i2, bi)
    np.testing.assert_allclose(s2, bs, atol=1e-12)


def test_hamming_faiss_equals_brute_force():
    rng = np.random.default_rng(1)
    bits = 100  # not a multiple of 8: padding must not change distances
    g = (rng.random((300, bits)) > 0.5).astype(np.float32)
    p = g[rng.choice(300, 40, replace=False)].copy()
    flip = rng.random(p.shape) < 0.1
    p[flip] = 1 - p[flip]
    comp = Hamming()
    s, i = top_k(comp, p, g, 1)
    bs, bi = _brute(comp, p, g, 1)
    np.testing.assert_allclose(s, bs, atol=1e-12)
    # top-1 is unique here (the source code is ~10 bits away, any other ~50): indices equal too
    assert (bs[:, 0] > np.sort(np.asarray(comp.pairwise(p, g)), axis=1)[:, -2]).all()
    np.testing.assert_array_equal(i, bi)
    # {-1, +1} codes give the same result
    s2, i2 = top_k(comp, 2 * p - 1, 2 * g - 1, 1)
    np.testing.assert_array_equal(i2, i)


def test_generic_path_and_k_capped():
    rng = np.random.default_rng(2)
    g, p = rng.normal(size=(50, 8)), rng.normal(size=(20, 8))
    comp = Euclid()
    assert comparator_metric(comp) == "generic"
    s, i = top_k(comp, p, g, 100, gallery_chunk=7)
    assert s.shape == (20, 50)
    bs, bi = _brute(comp, p, g, 50)
    np.testing.assert_array_equal(i, bi)
    assert (np.diff(s, axis=1) <= 0).all()


def test_pe_miu_comparator_takes_the_generic_path():
    from facepriv.protections.pe_miu import PEMIU

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 64)).astype(np.float32)
    prot = PEMIU(block_size=16, seed=5).fit()
    px = prot.transform(x)
    comp = prot.comparator()
    assert comparator_metric(comp) == "generic"
    s, i = top_k(comp, px[:10], px, 3, gallery_chunk=25)
    bs, bi = _brute(comp, px[:10], px, 3)
    np.testing.assert_array_equal(i, bi)
    assert (i[:, 0] == np.arange(10)).all()  # each template finds itself first


@pytest.mark.parametrize(("p", "g", "k", "msg"), [
    (np.zeros((2, 4)), np.zeros((3, 5)), 1, "dimension"), (np.zeros(4), np.zeros((3, 4)), 1, "2-d"),
    (np.zeros((2, 4)), np.zeros((0, 4)), 1, "empty"), (np.zeros((2, 4)), np.zeros((3, 4)), 0, "k must"),
])
def test_bad_input(p, g, k, msg):
    with pytest.raises(ParameterError, match=msg):
        top_k(CosineComparator(), p, g, k)


def test_a_wrongly_declared_metric_fails_loudly():
    class NotCosine(Euclid):
        metric = "cosine"

        def paired(self, a, b):
            return -np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1)

    rng = np.random.default_rng(4)
    with pytest.raises(ParameterError, match="declares metric = 'cosine'"):
        top_k(NotCosine(), rng.normal(size=(5, 8)), rng.normal(size=(30, 8)), 2)
