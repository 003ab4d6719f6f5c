"""Privacy rates: success rates of attacks at verification thresholds, PSR@k, top-k accuracy.

* :func:`success_rate` - share of attack comparisons accepted by the system, i.e. with
  ``score >= threshold`` at each FMR operating point. Used for the reversibility success rate
  (RSR: reconstruction re-embedded vs. the original template) and the success rate of replay
  attacks (SRRA). Fractions in [0, 1]; ``Rate.percent`` gives percent as the papers print them.
* :func:`psr_at_k` - protection success rate of a de-identification (Ghafourian et al. 2023):
  PSR@k = 100 - 100 / N * #(true identity ranked within the top k), in percent.
* :func:`topk_accuracy` - #(true identity within the top k) / N.
* :func:`rank_of_true_identity` - 0-based rank of the true class in a score matrix.

Ranks are 0-based: rank 0 means the true identity has the best score, so "within the top k"
is ``rank < k``. A rank of ``inf`` marks a sample that cannot be identified at all (e.g. the
invader's detector finds no face in a cloaked photo): it is never within the top k, so it counts
as protected in PSR and as a miss in top-k accuracy. This is the one PSR of facepriv: the photo
de-identification attack (:mod:`facepriv.attacks.deid`) and every other caller use it.

Every rate is a :class:`Rate` (a float carrying its counts and a 95 % Wilson interval), so it can
be used as a number and still report its uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from facepriv.errors import ParameterError
from facepriv.metrics.stats import wilson_interval


class Rate(float):
    """A proportion ``successes / n`` as a float, with its counts and Wilson interval.

    For PSR (a percentage) the float value is in percent and ``ci_low``/``ci_high`` too.
    """

    successes: int
    n: int
    ci_low: float
    ci_high: float
    scale: float

    def __new__(cls, successes: int, n: int, scale: float = 1.0, complement: bool = False,
                confidence: float = 0.95) -> Rate:
        """``successes`` of ``n``; ``complement`` reports the share of the others, (n - successes) / n."""
        k = int(n - successes if complement else successes)
        lo, hi = wilson_interval(k, int(n), confidence)
        obj = super().__new__(cls, scale * k / n)  # e.g. 100 * k / N exactly as PSR's formula
        obj.successes = k
        obj.n = int(n)
        obj.ci_low = scale * lo
        obj.ci_high = scale * hi
        obj.scale = scale
        return obj

    @property
    def value(self) -> float:
        """The rate as a plain float."""
        return float(self)

    @property
    def percent(self) -> float:
        """The rate in percent."""
        return float(self) * 100.0 / self.scale

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: value, successes, n, ci_low, ci_high."""
        return {"value": float(self), "successes": self.successes, "n": self.n,
                "ci_low": self.ci_low, "ci_high": self.ci_high}

    def __reduce__(self):  # copy/pickle keep the counts
        return (_rebuild_rate, (float(self), self.successes, self.n, self.ci_low, self.ci_high, self.scale))

    def __repr__(self) -> str:
        return f"Rate({float(self):.6g}, {self.successes}/{self.n}, CI [{self.ci_low:.4g}, {self.ci_high:.4g}])"


def _rebuild_rate(value: float, successes: int, n: int, lo: float, hi: float, scale: float) -> Rate:
    obj = float.__new__(Rate, value)
    obj.successes, obj.n, obj.ci_low, obj.ci_high, obj.scale = successes, n, lo, hi, scale
    return obj


def _finite_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ParameterError(f"{name} is empty; a rate needs at least one value")
    if not np.isfinite(a).all():
        raise ParameterError(f"{name} holds {int((~np.isfinite(a)).sum())} NaN or infinite value(s)")
    return a


def success_rate(scores: Any, thresholds: Mapping[float, float]) -> dict[float, Rate]:
    """Share of attack scores accepted (``score >= threshold``) at each operating point.

    Parameters
    ----------
    scores : array-like (N,)
        Similarity of each attack sample to its target (e.g. reconstruction vs. original).
    thresholds : mapping FMR -> threshold
        E.g. ``VerificationReport.threshold_at_fmr``.

    Returns
    -------
    dict FMR -> Rate
        Fraction in [0, 1] with counts and 95 % Wilson interval.
    """
    s = _finite_1d(scores, "scores")
    if not thresholds:
        raise ParameterError("success_rate needs at least one threshold")
    out: dict[float, Rate] = {}
    for fmr, thr in thresholds.items():
        if not np.isfinite(thr):
            raise ParameterError(f"threshold at FMR {fmr} is not finite: {thr}")
        out[fmr] = Rate(int((s >= thr).sum()), s.size)
    return out


def _ranks(rank: Any) -> np.ndarray:
    """Ranks as float64 (N,): whole numbers >= 0, or +inf for a sample that cannot be identified."""
    r = np.asarray(rank)
    if r.size == 0:
        raise ParameterError("ranks are empty; a rate needs at least one sample")
    if r.dtype.kind in "iu":
        r = r.astype(np.float64).ravel()
    elif r.dtype.kind == "f":
        r = r.astype(np.float64).ravel()
        fin = np.isfinite(r)
        if np.isnan(r).any() or not (r[fin] == np.round(r[fin])).all():
            raise ParameterError("ranks must be whole numbers (0 = true identity ranked first) or inf (not identifiable)")
    else:
        raise ParameterError("ranks must be whole numbers (0 = true identity ranked first)")
    if (r < 0).any():
        raise ParameterError("ranks must be >= 0 (0-based: 0 = true identity ranked first)")
    return r


def _check_ks(ks: Iterable[int]) -> list[int]:
    out = [int(k) for k in ks]
    if not out or min(out) < 1:
        raise ParameterError(f"k values must be >= 1, got {out}")
    return out


def topk_accuracy(rank_of_true_identity: Any, ks: Iterable[int] = (1, 5, 10)) -> dict[int, Rate]:
    """Fraction of samples whose true identity is within the top k (0-based ``rank < k``; inf never is)."""
    r = _ranks(rank_of_true_identity)
    return {k: Rate(int((r < k).sum()), r.size) for k in _check_ks(ks)}


def psr_at_k(rank_of_true_identity: Any, ks: Iterable[int] = (1, 5, 10, 25, 50)) -> dict[int, Rate]:
    """Protection success rate PSR@k = 100 - 100/N * #(rank < k), in percent (Ghafourian et al., Eq. 6).

    Parameters
    ----------
    rank_of_true_identity : array-like (N,)
        **0-based** rank of the true identity per sample (0 = ranked first, see
        :func:`rank_of_true_identity`); ``inf`` for a sample that cannot be identified at all (no
        face detected): it counts as protected. N counts every sample, inf included.
    ks : iterable of int
        Values of k (>= 1).

    Returns
    -------
    dict k -> Rate
        In percent, computed exactly as the formula above (``100 - 100 / N * within``); the
        Rate's counts are the protected samples (true identity *not* in the top k).
    """
    r = _ranks(rank_of_true_identity)
    out: dict[int, Rate] = {}
    for k in _check_ks(ks):
        within = int((r < k).sum())
        rate = Rate(within, r.size, scale=100.0, complement=True)
        # the value as Eq. 6 writes it (100 * (N - c) / N can differ in the last bit)
        out[k] = _rebuild_rate(100.0 - 100.0 / r.size * float(within), rate.successes, rate.n,
                               rate.ci_low, rate.ci_high, rate.scale)
    return out


def rank_of_true_identity(scores: Any, true_index: Any) -> np.ndarray:
    """0-based rank of the true class: the number of classes scoring strictly higher.

    Ties count in the attacker's favour (the true class shares the best rank), which makes PSR a
    conservative (lower) estimate of protection.

    Parameters
    ----------
    scores : array-like (N, C)
        Similarity or logit of each sample to each class (higher = more likely).
    true_index : array-like of int (N,)
        Column of the true class of each sample.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(true_index).astype(np.int64).ravel()
    if s.ndim != 2 or s.shape[0] != t.size:
        raise ParameterError(f"scores must be (N, C) with N = len(true_index), got {s.shape} and {t.size}")
    if ((t < 0) | (t >= s.shape[1])).any():
        raise ParameterError(f"true_index must be in [0, {s.shape[1]})")
    if not np.isfinite(s).all():
        raise ParameterError("scores hold NaN or infinite values")
    true_score = s[np.arange(t.size), t]
    return (s > true_score[:, None]).sum(axis=1)
