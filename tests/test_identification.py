"""Identification metrics (ISO/IEC 19795-1) on synthetic templates with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from facepriv.errors import ParameterError
from facepriv.metrics.identification import cmc, dir_at_fpir, enrolment_split, identify, ranks_from_top_k
from facepriv.protections.base import CosineComparator


def test_enrolment_split_first_sample_per_subject():
    g, p = enrolment_split(np.array(["b", "a", "b", "c", "a", "b"]))
    assert g.tolist() == [0, 1, 3] and p.tolist() == [2, 4, 5]


def test_ranks_count_strictly_higher_scores():
    scores = np.array([[0.9, 0.8, 0.7], [0.9, 0.9, 0.1], [0.5, 0.4, 0.3]])
    idx = np.array([[3, 1, 2], [0, 4, 2], [0, 1, 2]])
    r, s = ranks_from_top_k(scores, idx, np.array([1, 4, 7]))
    assert r.tolist() == [1.0, 0.0, np.inf]  # tie with the best counts as rank 0 (1st)
    assert s[0] == 0.8 and np.isnan(s[2])
    np.testing.assert_allclose(cmc(r, 3), [1 / 3, 2 / 3, 2 / 3])


def test_identify_known_ranks_and_dir():
    """Probe i is its subject's template plus noise that puts it at a chosen rank by construction."""
    rng = np.random.default_rng(0)
    d, n = 64, 40
    gallery = np.linalg.qr(rng.normal(size=(d, d)))[0][:n]  # orthonormal: clean separations
    gid = np.array([f"s{i}" for i in range(n)])
    # probe i = 0.9 * own + w * other: rank 0 when w < 0.9, rank 1 when w > 0.9
    w = np.where(np.arange(n) % 4 == 0, 1.0, 0.5)
    probes = 0.9 * gallery + w[:, None] * gallery[(np.arange(n) + 1) % n]
    nonmated = rng.normal(size=(200, d)) * 0.05 + 0.3 * gallery[rng.integers(0, n, 200)]
    res = identify(CosineComparator(), gallery, gid, probes, gid, nonmated, ks=(1, 2), max_rank=5, fpirs=(0.01, 0.1))
    assert res.ranks.tolist() == [1.0 if i % 4 == 0 else 0.0 for i in range(n)]
    assert float(res.rank_k[1]) == 0.75 and float(res.rank_k[2]) == 1.0
    assert res.cmc.tolist() == [0.75, 1, 1, 1, 1]
    # non-mated best scores (~0.98 cosine to a gallery subject after noise) vs mated true (~0.87 or ~0.67)
    t, rate = res.dir[0.1]
    assert rate.n == n and float(rate) == pytest.approx(((res.ranks == 0) & (0.9 / np.hypot(0.9, 0.5) >= t)).mean())
    d = res.to_dict()
    assert d["n_gallery"] == n and set(d["dir_at_fpir"]) == {"0.01", "0.1"}


def test_dir_threshold_from_nonmated_best():
    r = np.zeros(4)
    s = np.array([0.95, 0.85, 0.75, 0.65])
    nm = np.linspace(0, 0.8, 100)  # FPIR 10 %: at most 10 of 100 above -> threshold just above 0.72
    out = dir_at_fpir(r, s, nm, (0.1,))
    t, rate = out[0.1]
    assert 0.72 < t <= 0.73 and rate.successes == 3


@pytest.mark.parametrize(("gid", "pid", "msg"), [
    (["a", "a"], ["a"], "one template per subject"), (["a"], ["a"], "at least 2"),
    (["a", "b"], ["c"], "not enrolled"),
])
def test_bad_protocol(gid, pid, msg):
    x = np.eye(4)
    with pytest.raises(ParameterError, match=msg):
        identify(CosineComparator(), x[: len(gid)], np.array(gid), x[: len(pid)], np.array(pid))
