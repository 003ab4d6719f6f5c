"""Privacy rates on hand-made numbers: success rate (RSR/SRRA), PSR@k, top-k accuracy, ranks."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from facepriv.errors import ParameterError
from facepriv.metrics.privacy import Rate, psr_at_k, rank_of_true_identity, success_rate, topk_accuracy
from facepriv.metrics.stats import wilson_interval


def test_success_rate_hand_made():
    scores = [0.1, 0.5, 0.7, 0.9]
    r = success_rate(scores, {0.001: 0.8, 0.01: 0.5, 0.1: 0.05})
    assert r[0.001] == 0.25 and r[0.01] == 0.75 and r[0.1] == 1.0  # score == threshold is accepted
    assert (r[0.01].successes, r[0.01].n) == (3, 4)
    assert (r[0.01].ci_low, r[0.01].ci_high) == wilson_interval(3, 4)
    assert r[0.01].percent == 75.0
    assert json.loads(json.dumps(r[0.01])) == 0.75  # usable as a plain number
    d = r[0.001].to_dict()
    assert d["value"] == 0.25 and d["successes"] == 1 and d["n"] == 4 and d["ci_low"] < 0.25 < d["ci_high"]


def test_success_rate_with_report_thresholds():
    from facepriv.metrics.verification import verification_report

    rng = np.random.default_rng(0)
    imp = rng.normal(0, 1, 10000)
    rep = verification_report(rng.normal(3, 1, 500), imp)
    # impostors scored against the system's own thresholds succeed at (at most) the target FMR
    r = success_rate(imp, rep.threshold_at_fmr)
    for fmr, rate in r.items():
        assert rate <= fmr and rate == pytest.approx(fmr, abs=1e-3)


def test_psr_hand_made():
    ranks = np.array([0, 1, 5, 10, 50])  # 0-based rank of the true identity
    psr = psr_at_k(ranks, ks=(1, 5, 10, 25, 50))
    # within top-k: k=1 -> {0}; 5 -> {0,1}; 10 -> {0,1,5}; 25, 50 -> {0,1,5,10}
    assert {k: float(v) for k, v in psr.items()} == {1: 80.0, 5: 60.0, 10: 40.0, 25: 20.0, 50: 20.0}
    assert psr[1].successes == 4 and psr[1].n == 5  # protected samples
    lo, hi = wilson_interval(4, 5)
    assert psr[1].ci_low == pytest.approx(100 * lo) and psr[1].ci_high == pytest.approx(100 * hi)
    assert psr[1].percent == 80.0


def test_psr_counts_unidentifiable_samples_as_protected():
    # 0-based ranks of 8 probes; inf = the invader's detector found no face (cannot be identified)
    ranks = np.array([0, 0, 1, 4, 5, 29, 59, np.inf])
    psr = psr_at_k(ranks, (1, 5, 10, 25, 50))
    assert {k: float(v) for k, v in psr.items()} == {1: 75.0, 5: 50.0, 10: 37.5, 25: 37.5, 50: 25.0}
    assert psr[50].successes == 2 and psr[50].n == 8  # 59 and inf are protected at k = 50
    acc = topk_accuracy(ranks, (1,))
    assert float(acc[1]) == 0.25
    with pytest.raises(ParameterError, match="whole numbers"):
        psr_at_k([np.nan, 1.0], (1,))


def test_psr_value_is_eq6_literally():
    # 100 - 100/N * c, not 100 * (N - c) / N (they differ in the last bit, e.g. N = 3, c = 1)
    psr = psr_at_k([0, 5, 7], (1,))
    assert float(psr[1]) == 100.0 - 100.0 / 3 * 1.0 == 66.66666666666666
    assert psr[1].successes == 2 and psr[1].n == 3


def test_topk_hand_made():
    acc = topk_accuracy([0, 0, 3, 7], ks=(1, 4, 10))
    assert {k: float(v) for k, v in acc.items()} == {1: 0.5, 4: 0.75, 10: 1.0}
    # PSR@k = 100 * (1 - top-k accuracy)
    psr = psr_at_k([0, 0, 3, 7], ks=(1, 4, 10))
    assert all(float(psr[k]) == pytest.approx(100 * (1 - float(acc[k]))) for k in acc)


def test_rank_of_true_identity_with_ties():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.2, 0.1], [0.5, 0.7, 0.6]])
    ranks = rank_of_true_identity(scores, [0, 1, 0])
    assert ranks.tolist() == [0, 0, 2]  # a tie with the best counts in the attacker's favour


def test_rate_copy_keeps_counts():
    r = Rate(3, 4)
    c = copy.deepcopy(r)
    assert c == 0.75 and c.successes == 3 and c.n == 4 and c.ci_low == r.ci_low


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: success_rate([], {0.01: 0.5}), "empty"),
        (lambda: success_rate([np.nan, 0.3], {0.01: 0.5}), "NaN"),
        (lambda: success_rate([0.3], {}), "at least one threshold"),
        (lambda: success_rate([0.3], {0.01: np.nan}), "not finite"),
        (lambda: psr_at_k([], (1,)), "empty"),
        (lambda: psr_at_k([-1, 2], (1,)), ">= 0"),
        (lambda: psr_at_k([0.5], (1,)), "whole numbers"),
        (lambda: psr_at_k([0, 1], (0,)), ">= 1"),
        (lambda: rank_of_true_identity(np.zeros((2, 3)), [0, 3]), r"\[0, 3\)"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ParameterError, match=match):
        call()
