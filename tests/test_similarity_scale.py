"""Similarity attack on large attacker databases: chunked / FAISS top-n == the dense path, ties included.

Ties are made exact, not left to rounding: "dyadic" templates have 16 entries of +-0.25 and the
rest 0, so they are unit vectors exactly and every cosine is an exact multiple of 1/16 in float32
and float64 alike — many probes then have several gallery rows tied at the n-th place.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import celeba_rows, dlib_templates

from facepriv import search
from facepriv.attacks.fusion import fuse, top_scores
from facepriv.attacks.sets import prepare_sets
from facepriv.attacks.soft_biometric import SimilarityAttack
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import Comparator, CosineComparator
from facepriv.protections.pe_miu import PEMIU
from facepriv.search import top_k, top_k_numpy, top_k_scores


def _dyadic(n: int, rng: np.random.Generator, d: int = 64, nnz: int = 16) -> np.ndarray:
    x = np.zeros((n, d), dtype=np.float32)
    cols = np.argsort(rng.random((n, d)), axis=1)[:, :nnz]
    np.put_along_axis(x, cols, rng.choice([-0.25, 0.25], size=(n, nnz)).astype(np.float32), axis=1)
    return x


def _brute(scores: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stable argsort of the full rows: decreasing score, ties by the lower gallery row."""
    rows = np.arange(scores.shape[1]) if rows is None else rows
    order = np.argsort(-scores[:, rows], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores[:, rows], order, axis=1), rows[order]


@pytest.fixture
def paths(monkeypatch):
    """Counts the generic-path calls made from inside :func:`top_k` (fallbacks, small galleries)."""
    calls = []
    real = search.top_k_numpy

    def spy(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "top_k_numpy", spy)
    return calls


class Hamming(Comparator):
    """1 - normalised Hamming distance of {0, 1} codes (declares the FAISS binary path)."""

    metric = "hamming"

    def pairwise(self, a, b):
        a, b = (np.asarray(a) > 0).astype(np.float64), (np.asarray(b) > 0).astype(np.float64)
        return 1.0 - (a @ (1 - b).T + (1 - a) @ b.T) / a.shape[1]

    def paired(self, a, b):
        return np.array([self.pairwise(x[None], y[None])[0, 0] for x, y in zip(a, b)])


class Quantised(Comparator):
    """Cosine rounded to quarters: a generic comparator with ties everywhere."""

    def pairwise(self, a, b):
        return np.round(4 * CosineComparator().pairwise(a, b)) / 4


def test_rescored_faiss_equals_dense_with_ties(paths):
    rng = np.random.default_rng(0)
    g = _dyadic(3000, rng)
    g[1000:1100] = g[:100]  # exact duplicates too
    p = np.vstack([_dyadic(50, rng), g[:10]])
    rows = np.flatnonzero(np.arange(3000) % 3 != 0)  # a "class": every row but one in three
    comp = CosineComparator()
    dense = comp.pairwise(p, g)
    for k in (1, 10, 40):
        s, i = top_k(comp, p, g, k, chunk=16, rows=rows, rescore=True)
        bs, bi = _brute(dense, k, rows)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(s, bs)  # exact multiples of 1/16 on both paths
        ds, di = top_k_scores(dense, k, rows)
        np.testing.assert_array_equal(di, bi)
        np.testing.assert_array_equal(ds, bs)
    # ties at the k-th place were really there (else the test would not test them)
    assert ((dense[:, rows] == bs[:, -1:]).sum(1) > (bs == bs[:, -1:]).sum(1)).mean() > 0.5
    assert paths == []  # certified by wider FAISS searches, no generic fallback at this size


def test_rescore_falls_back_to_the_generic_path_when_ties_do_not_resolve(paths):
    rng = np.random.default_rng(1)
    g = _dyadic(5, rng)[rng.integers(0, 5, 20000)]  # 5 templates, ~4,000 copies each: ~4,000-way ties
    p = _dyadic(6, rng)
    comp = CosineComparator()
    s, i = top_k(comp, p, g, 1, rescore=True)
    bs, bi = _brute(comp.pairwise(p, g), 1)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(s, bs)
    assert paths and sum(paths) <= len(p)


def test_rescored_faiss_on_random_templates_certifies_at_once(paths):
    rng = np.random.default_rng(2)
    g, p = rng.normal(size=(5000, 128)).astype(np.float32), rng.normal(size=(40, 128)).astype(np.float32)
    comp = CosineComparator()
    s, i = top_k(comp, p, g, 20, chunk=7, rescore=True)
    bs, bi = _brute(comp.pairwise(p, g), 20)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, rtol=0, atol=1e-12)
    assert paths == []


def test_rescored_hamming_equals_dense_with_ties():
    rng = np.random.default_rng(3)
    g = (rng.random((4000, 37)) > 0.5).astype(np.float32)  # 37 bits: distances tie a lot
    p = (rng.random((30, 37)) > 0.5).astype(np.float32)
    comp = Hamming()
    s, i = top_k(comp, p, g, 5, rescore=True)
    bs, bi = _brute(comp.pairwise(p, g), 5)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, rtol=0, atol=1e-12)


def test_generic_path_keeps_the_lowest_rows_among_ties_across_chunks():
    rng = np.random.default_rng(4)
    g, p = rng.normal(size=(300, 16)), rng.normal(size=(25, 16))
    comp = Quantised()
    dense = comp.pairwise(p, g)
    for k in (1, 4, 30):
        s, i = top_k_numpy(comp, p, g, k, chunk=6, gallery_chunk=7)
        bs, bi = _brute(dense, k)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(s, bs)


def test_chunked_pe_miu_top_n_equals_full_pairwise():
    rng = np.random.default_rng(5)
    px = PEMIU(block_size=16, seed=5).fit().transform(rng.normal(size=(90, 64)).astype(np.float32))
    comp = PEMIU(block_size=16).comparator()
    probes, rows = px[:14], np.flatnonzero(np.arange(90) % 2 == 1)
    dense = comp.pairwise(probes, px)
    for k in (1, 9):
        s, i = top_k(comp, probes, px, k, chunk=5, gallery_chunk=11, rows=rows, rescore=True)
        bs, bi = _brute(dense, k, rows)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_allclose(s, bs, rtol=0, atol=1e-12)


def _old_decide(att: SimilarityAttack, scores: np.ndarray) -> dict:
    """The attack's decisions as computed before the search path (full rows, stable argsort)."""
    glab = att.gallery_.gender
    classes = att.classes_
    nsg = [n for n in att.top_n if n <= min(np.sum(glab == c) for c in classes)]
    tops = [top_scores(scores[:, glab == c], max(nsg)) for c in classes]
    out = {}
    for rule in att.rules:
        for n in nsg:
            f = np.stack([fuse(t, rule, n) for t in tops], axis=1)
            out[(rule, n, "galleries")] = np.asarray(classes)[np.argmax(f, axis=1)]
    order = np.argsort(-scores, axis=1, kind="stable")
    lab = np.searchsorted(classes, glab)[order]
    for n in att.top_n:
        counts = np.stack([(lab[:, :n] == k).sum(1) for k in range(len(classes))], axis=1)
        first = np.stack([np.argmax(lab[:, :n] == k, axis=1) for k in range(len(classes))], axis=1)
        first = np.where(counts == counts.max(1, keepdims=True), first, n + 1)
        out[("vote", n, "vote")] = np.asarray(classes)[np.argmin(first, axis=1)]
    return out


def _labelled(x: np.ndarray, prefix: str, protection: dict | None = None) -> EmbeddingSet:
    ids = np.array([f"{prefix}{i}" for i in range(len(x))])
    sex = np.where(np.arange(len(x)) % 3 == 0, "female", "male")
    return EmbeddingSet(x, ids, ids, {"gender": sex}, "synthetic", protection)


def test_attack_search_path_equals_dense_decisions_with_ties(paths):
    rng = np.random.default_rng(6)
    g = _dyadic(2400, rng)
    g[1200:1300] = g[:100]
    gal, probes = _labelled(g, "g"), _labelled(np.vstack([_dyadic(40, rng), g[:8]]), "p")
    att = SimilarityAttack(top_n=(1, 2, 5, 20), decision="both").fit(gal)
    dense = att.scores(probes)
    ref = att.decide(dense, probes.gender, probes.ids)
    old = _old_decide(att, dense)
    for res in (att.evaluate(probes), att.evaluate(probes, chunk=7)):
        assert res.predictions.keys() == ref.predictions.keys() == old.keys()
        for key, pred in res.predictions.items():
            np.testing.assert_array_equal(pred, ref.predictions[key])
            np.testing.assert_array_equal(pred, old[key])
        for key, f in res.fused.items():
            np.testing.assert_array_equal(f, ref.fused[key])
    assert paths == []  # the FAISS path did the work


def test_attack_pe_miu_chunked_equals_dense():
    rng = np.random.default_rng(7)
    prot = PEMIU(block_size=16, seed=3).fit()
    rec = prot.record()
    gal = _labelled(prot.transform(rng.normal(size=(70, 64)).astype(np.float32)), "g", rec)
    probes = _labelled(prot.transform(rng.normal(size=(12, 64)).astype(np.float32)), "p", rec)
    att = SimilarityAttack(top_n=(1, 3, 10), decision="both").fit(gal)
    dense = att.scores(probes)
    ref, old = att.decide(dense, probes.gender, probes.ids), _old_decide(att, dense)
    res = att.evaluate(probes, chunk=5, gallery_chunk=9)
    for key, pred in res.predictions.items():
        np.testing.assert_array_equal(pred, ref.predictions[key])
        np.testing.assert_array_equal(pred, old[key])
    for key, f in res.fused.items():
        np.testing.assert_allclose(f, ref.fused[key], rtol=0, atol=1e-12)


def test_bad_rows_and_wrong_metric():
    rng = np.random.default_rng(8)
    g, p = rng.normal(size=(600, 8)), rng.normal(size=(3, 8))
    for rows, msg in ((np.array([3, 2]), "increasing"), (np.array([0, 600]), "increasing"),
                      (np.array([0.5]), "integer"), (np.array([], dtype=int), "empty")):
        with pytest.raises(ParameterError, match=msg):
            top_k(CosineComparator(), p, g, 1, rows=rows)

    class NotCosine(Comparator):
        metric = "cosine"

        def pairwise(self, a, b):
            return -np.linalg.norm(np.asarray(a)[:, None] - np.asarray(b)[None], axis=-1)

    with pytest.raises(ParameterError, match="declares metric = 'cosine'"):
        top_k(NotCosine(), p, g, 2, rescore=True)


@pytest.fixture(scope="module")
def celeba_dlib(celeba_dir):
    """dlib templates of 5 photos each of 12 CelebA people (6 female, 6 male)."""
    return dlib_templates(celeba_dir, celeba_rows(celeba_dir, 12, 5))["es"]


@pytest.mark.parametrize("protection", [None, PEMIU(block_size=16, seed=11)], ids=["unprotected", "pe_miu16"])
def test_real_faces_small_chunks_and_faiss_give_the_same_attack(celeba_dlib, protection, monkeypatch):
    gal, probes = prepare_sets(celeba_dlib, celeba_dlib, "gender", protection, seed=0, split_fraction=0.5)
    att = SimilarityAttack(top_n=(1, 3, 5, 10), decision="both").fit(gal)
    ref = att.decide(att.scores(probes), probes.gender, probes.ids)
    runs = [att.evaluate(probes), att.evaluate(probes, chunk=3, gallery_chunk=4)]
    monkeypatch.setattr(search, "DENSE_SHARE", 2.0)  # FAISS (cosine) even on this small gallery
    runs.append(att.evaluate(probes, chunk=3))
    for res in runs:
        assert res.rows() == ref.rows()
        for key, pred in res.predictions.items():
            np.testing.assert_array_equal(pred, ref.predictions[key])
        for key, f in res.fused.items():
            np.testing.assert_allclose(f, ref.fused[key], rtol=0, atol=1e-12)
    assert ref.best()["accuracy"] > 0.5
