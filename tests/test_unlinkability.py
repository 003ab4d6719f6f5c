"""Unlinkability maths (Gomez-Barrero et al. 2018) on synthetic scores, renewability/irreversibility rates."""

from __future__ import annotations

import numpy as np
import pytest

from facepriv.errors import ParameterError
from facepriv.metrics.irreversibility import fmr_grid, inversion_success
from facepriv.metrics.renewability import renewability_failure
from facepriv.metrics.unlinkability import default_bins, linkability, local_linkability, score_pairs


def test_identical_distributions_give_zero():
    s = np.random.default_rng(0).normal(size=5000)
    res = linkability(s, s.copy())
    assert res.dsys == 0.0 and (res.local == 0).all()


def test_same_distribution_different_samples_is_near_zero():
    rng = np.random.default_rng(1)
    res = linkability(rng.normal(size=200_000), rng.normal(size=200_000), bins=50)
    assert res.dsys < 0.05


def test_disjoint_distributions_give_one():
    rng = np.random.default_rng(2)
    res = linkability(rng.uniform(0.6, 1.0, 3000), rng.uniform(-1.0, 0.3, 3000))
    assert res.dsys == pytest.approx(1.0, abs=1e-12)


def test_partial_overlap_is_between_and_omega_moves_it():
    rng = np.random.default_rng(3)
    m, n = rng.normal(1.0, 1.0, 20000), rng.normal(0.0, 1.0, 20000)
    d1 = linkability(m, n).dsys
    assert 0.2 < d1 < 0.8
    assert linkability(m, n, omega=4.0).dsys > d1 > linkability(m, n, omega=0.25).dsys


def test_local_is_zero_where_lr_at_most_one_over_omega():
    pm = np.array([0.1, 0.2, 0.5, 0.8, 0.0, 0.3])
    pn = np.array([0.4, 0.2, 0.25, 0.1, 0.2, 0.0])
    for omega in (0.5, 1.0, 2.0):
        d = local_linkability(pm, pn, omega)
        lr = np.divide(pm, pn, out=np.full_like(pm, np.inf), where=pn > 0)
        assert (d[lr <= 1 / omega] == 0).all()
        olr = omega * lr[(lr > 1 / omega) & np.isfinite(lr)]
        np.testing.assert_allclose(d[(lr > 1 / omega) & np.isfinite(lr)], 2 * olr / (1 + olr) - 1)
        assert d[5] == 1.0  # non-mated density 0, mated not


def test_default_bins_and_bad_input():
    assert default_bins(50) == 5 and default_bins(100_000) == 100 and default_bins(3) == 2
    with pytest.raises(ParameterError, match="omega"):
        linkability([0.1, 0.2], [0.3], omega=0)
    with pytest.raises(ParameterError, match="empty"):
        linkability([], [0.3])
    with pytest.raises(ParameterError, match="NaN"):
        linkability([np.nan], [0.3])


def test_score_pairs_kinds():
    ident = np.array(["a", "a", "a", "b", "b", "c"])
    rng = np.random.default_rng(0)
    i, j = score_pairs(ident, True, 1000, rng)
    assert len(i) == 3 * 2 + 2 and (ident[i] == ident[j]).all() and (i != j).all()
    i, j = score_pairs(ident, False, 1000, rng)
    assert len(i) == 36 - 6 - 8 and (ident[i] != ident[j]).all()
    i, j = score_pairs(ident, False, 5, rng)
    assert len(i) == 5 and len(set(zip(i, j))) == 5


def test_renewability_and_inversion_rates():
    imp = np.linspace(-1, 0.5, 1000)  # FMR 1 % threshold sits just above the 990th score
    cross = np.array([0.9, 0.8, 0.45, 0.0])
    r = renewability_failure(cross, imp, (0.001, 0.01))
    assert r[0.01].successes == 2 and r[0.01].n == 4
    s = inversion_success(cross, imp)
    assert set(s) == {0.001, 0.01, 0.1} and s[0.1].successes == 3
    g = fmr_grid(1000)
    assert g[0] == pytest.approx(0.001) and g[-1] == pytest.approx(0.1) and len(g) == 9


def test_score_pairs_large_sets_without_a_full_matrix():
    ident = np.repeat(np.arange(500), 10).astype(str)  # 5000 rows: the sampling branch
    rng = np.random.default_rng(5)
    for mated in (True, False):
        i, j = score_pairs(ident, mated, 1000, rng)
        assert len(i) == 1000 and len(set(zip(i.tolist(), j.tolist()))) == 1000 and (i != j).all()
        assert ((ident[i] == ident[j]) == mated).all()
