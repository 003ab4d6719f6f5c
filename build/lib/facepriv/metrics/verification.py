"""Biometric verification metrics: DET rates, EER with interval, FNMR@FMR, AUC, the report.

Genuine/impostor scores come from :mod:`facepriv.metrics.scores` (re-exported here:
``scores_all_pairs``, ``scores_for_pairs``, ``Scores``).

Scores are similarities: higher means "more likely the same person". A comparison is accepted at
threshold ``t`` when ``score >= t``, so

* FMR(t)  = #(impostor >= t) / n_impostor   (false match rate),
* FNMR(t) = #(genuine  <  t) / n_genuine    (false non-match rate).

Rules (docs/verification.md explains them with examples):

* **DET rates** are exact, at every distinct observed score plus one threshold just above the
  highest score (everything rejected), in increasing threshold order. Any other threshold gives
  the same rates as the next one in that list.
* **EER** follows the FVC2000 rule (Maio et al., 2002): ``t2`` = the lowest listed threshold with
  FNMR >= FMR, ``t1`` = the listed threshold just below it (FNMR < FMR): the two sides of the
  crossing. If FNMR(t1)+FMR(t1) <= FNMR(t2)+FMR(t2) the interval is [FNMR(t1), FMR(t1)] at
  threshold t1, else [FMR(t2), FNMR(t2)] at t2; EER = (low + high) / 2. When FNMR == FMR at
  ``t2`` the curves meet: EER = low = high = that rate, at ``t2``.
* **Operating point at FMR target** = the lowest listed threshold with FMR <= target (counted in
  whole comparisons: #impostors accepted <= floor(target * n_impostor)); FNMR is read there.
* **AUC** = P(genuine > impostor) + P(genuine == impostor) / 2 (Mann-Whitney), identical to the
  area under the ROC step curve with ties handled like scikit-learn's ``roc_auc_score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facepriv.errors import ParameterError
from facepriv.metrics.scores import Scores, scores_all_pairs, scores_for_pairs

__all__ = [
    "FMR_TARGETS", "DetRates", "Eer", "Scores", "VerificationReport", "det_rates", "eer", "eer_from_det",
    "operating_point", "roc_auc", "scores_all_pairs", "scores_for_pairs", "threshold_at_fmr",
    "verification_report",
]

#: FMR targets of every report (0.1 %, 1 %, 10 %).
FMR_TARGETS: tuple[float, ...] = (0.001, 0.01, 0.1)


# ------------------------------------------------------------------------------------------- DET
@dataclass(frozen=True)
class DetRates:
    """Error rates at increasing thresholds (exact at every distinct score unless thinned).

    ``fmr`` falls from 1 to 0, ``fnmr`` rises from 0 to 1 (the last threshold rejects everything).
    """

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray
    n_genuine: int
    n_impostor: int


def _check_scores(genuine: Any, impostor: Any) -> tuple[np.ndarray, np.ndarray]:
    gen = np.asarray(genuine, dtype=np.float64).ravel()
    imp = np.asarray(impostor, dtype=np.float64).ravel()
    for name, arr in (("genuine", gen), ("impostor", imp)):
        if arr.size == 0:
            hint = " (every template has a different identity?)" if name == "genuine" else " (only one identity?)"
            raise ParameterError(f"no {name} scores: verification metrics need both genuine and impostor comparisons{hint}")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ParameterError(f"{int(bad.sum())} {name} score(s) are NaN or infinite; scores must be finite")
    return gen, imp


class _Sorted:
    """Sorted genuine/impostor scores; error counts at any threshold by binary search.

    Everything the report needs is computed from these two sorted arrays without materialising the
    full DET (13 M impostor scores would need ~1 GB of rate arrays).
    """

    def __init__(self, genuine: Any, impostor: Any) -> None:
        gen, imp = _check_scores(genuine, impostor)
        self.g, self.i = np.sort(gen), np.sort(imp)
        self.ng, self.ni = int(self.g.size), int(self.i.size)
        self.top = float(np.nextafter(max(self.g[-1], self.i[-1]), np.inf))  # rejects everything

    def counts(self, t: Any) -> tuple[Any, Any]:
        """(false non-matches, false matches) at threshold(s) ``t``."""
        return np.searchsorted(self.g, t, "left"), self.ni - np.searchsorted(self.i, t, "left")

    def diff(self, t: float) -> int:
        """Sign-exact FNMR - FMR at ``t`` as the integer fnm * n_imp - fm * n_gen."""
        fnm, fm = self.counts(t)
        return int(fnm) * self.ni - int(fm) * self.ng

    def rates(self, t: float) -> tuple[float, float]:
        """(fmr, fnmr) at ``t``."""
        fnm, fm = self.counts(t)
        return int(fm) / self.ni, int(fnm) / self.ng

    def next_candidate(self, v: float) -> float:
        """Smallest listed threshold (a score, or ``top``) strictly above ``v``."""
        out = self.top
        for arr in (self.g, self.i):
            k = int(np.searchsorted(arr, v, "right"))
            if k < arr.size:
                out = min(out, float(arr[k]))
        return out

    def prev_candidate(self, v: float) -> float:
        """Largest score strictly below ``v`` (``v`` must be above the lowest score)."""
        out = -np.inf
        for arr in (self.g, self.i):
            k = int(np.searchsorted(arr, v, "left"))
            if k > 0:
                out = max(out, float(arr[k - 1]))
        return out

    def first_nonnegative_diff(self) -> float:
        """Lowest listed threshold with FNMR >= FMR (binary search; the diff is monotone)."""

        def bisect(arr: np.ndarray, lo: int, hi: int) -> int:  # first index in [lo, hi) with diff >= 0
            while lo < hi:
                mid = (lo + hi) // 2
                if self.diff(float(arr[mid])) >= 0:
                    hi = mid
                else:
                    lo = mid + 1
            return lo

        k = bisect(self.g, 0, self.ng)
        g_hit = float(self.g[k]) if k < self.ng else self.top
        g_before = float(self.g[k - 1]) if k > 0 else -np.inf
        # impostor scores strictly between the previous genuine score and g_hit are candidates too
        lo = int(np.searchsorted(self.i, g_before, "right"))
        hi = int(np.searchsorted(self.i, g_hit, "left"))
        j = bisect(self.i, lo, hi)
        return float(self.i[j]) if j < hi else g_hit


def det_rates(genuine: Any, impostor: Any, max_impostor_points: int | None = None) -> DetRates:
    """FMR and FNMR at every distinct score (accept when score >= threshold), exact.

    The thresholds are the sorted distinct scores of both sets plus one value just above the
    maximum, where FMR = 0 and FNMR = 1. With ``max_impostor_points`` (for plots of large sets),
    every genuine score is kept but only about that many impostor scores, geometrically spaced in
    FMR so the low-FMR tail keeps its detail; the rates at the kept thresholds stay exact.
    """
    srt = _Sorted(genuine, impostor)
    if max_impostor_points is None or srt.ni <= max_impostor_points:
        imp_thr = srt.i
    else:
        ranks = np.unique(np.geomspace(1, srt.ni, max_impostor_points).astype(np.int64))
        imp_thr = srt.i[srt.ni - ranks]
    thr = np.unique(np.concatenate([srt.g, imp_thr, [srt.top]]))
    fnm, fm = srt.counts(thr)
    return DetRates(thr, fm / srt.ni, fnm / srt.ng, srt.ng, srt.ni)


@dataclass(frozen=True)
class Eer:
    """Equal error rate with its FVC2000 interval and threshold."""

    eer: float
    low: float
    high: float
    threshold: float


def _fvc(t1: float, fmr1: float, fnmr1: float, t2: float, fmr2: float, fnmr2: float) -> Eer:
    if fnmr1 + fmr1 <= fnmr2 + fmr2:
        low, high, t = fnmr1, fmr1, t1
    else:
        low, high, t = fmr2, fnmr2, t2
    return Eer((low + high) / 2, low, high, t)


def eer(genuine: Any, impostor: Any) -> Eer:
    """EER with its interval by the FVC2000 rule (module docstring), in O(n log n) time."""
    return _eer_sorted(_Sorted(genuine, impostor))


def _eer_sorted(srt: _Sorted) -> Eer:
    t2 = srt.first_nonnegative_diff()
    fmr2, fnmr2 = srt.rates(t2)
    if srt.diff(t2) == 0:  # the curves meet at a threshold
        return Eer(fnmr2, fnmr2, fnmr2, t2)
    t1 = srt.prev_candidate(t2)  # exists: at the lowest score FMR = 1 > FNMR = 0
    return _fvc(t1, *srt.rates(t1), t2, fmr2, fnmr2)


def eer_from_det(det: DetRates) -> Eer:
    """EER by the same rule from exact DET rates (a slow reference for :func:`eer`)."""
    # exact integer comparison of FNMR and FMR: fnmr*n_gen and fmr*n_imp are whole counts
    fn = np.rint(det.fnmr * det.n_genuine).astype(np.int64)
    fm = np.rint(det.fmr * det.n_impostor).astype(np.int64)
    diff = fn * det.n_impostor - fm * det.n_genuine  # sign of FNMR - FMR, non-decreasing
    i2 = int(np.searchsorted(diff, 0, side="left"))  # first with FNMR >= FMR (exists: last is 1 vs 0)
    f = (float(det.fnmr[i2]), float(det.fmr[i2]))
    if diff[i2] == 0:
        return Eer(f[0], f[0], f[0], float(det.thresholds[i2]))
    i1 = i2 - 1
    return _fvc(float(det.thresholds[i1]), float(det.fmr[i1]), float(det.fnmr[i1]),
                float(det.thresholds[i2]), f[1], f[0])


def _allowed_false_matches(target_fmr: float, n_impostor: int) -> int:
    if not 0.0 <= target_fmr <= 1.0:
        raise ParameterError(f"target FMR must be in [0, 1], got {target_fmr}")
    return math.floor(target_fmr * n_impostor + 1e-9)  # whole false matches allowed


def operating_point(det: DetRates, target_fmr: float) -> tuple[float, float, float]:
    """(threshold, fmr, fnmr) at the lowest listed threshold with FMR <= ``target_fmr``."""
    allowed = _allowed_false_matches(target_fmr, det.n_impostor)
    false_matches = np.rint(det.fmr * det.n_impostor)  # non-increasing
    k = int(np.argmax(false_matches <= allowed))  # exists: the last threshold has 0
    return float(det.thresholds[k]), float(det.fmr[k]), float(det.fnmr[k])


def _operating_point_sorted(srt: _Sorted, target_fmr: float) -> tuple[float, float, float]:
    allowed = _allowed_false_matches(target_fmr, srt.ni)
    if allowed >= srt.ni:
        t = float(min(srt.g[0], srt.i[0]))
    else:  # the (allowed+1)-th highest impostor score must be rejected
        t = srt.next_candidate(float(srt.i[srt.ni - allowed - 1]))
    return (t, *srt.rates(t))


def threshold_at_fmr(impostor: Any, fmr: float) -> float:
    """Lowest threshold with FMR <= ``fmr`` given impostor scores alone.

    The smallest impostor score above the allowed false matches, or just above the top score.
    With genuine scores known, :func:`verification_report` may pick a lower threshold (a genuine
    score in that gap) with the same FMR.
    """
    imp = np.asarray(impostor, dtype=np.float64).ravel()
    if imp.size == 0 or not np.isfinite(imp).all():
        raise ParameterError("threshold_at_fmr needs a non-empty array of finite impostor scores")
    imp = np.sort(imp)
    allowed = _allowed_false_matches(fmr, imp.size)
    if allowed >= imp.size:
        return float(imp[0])
    v = float(imp[imp.size - allowed - 1])  # the (allowed+1)-th highest must be rejected
    k = int(np.searchsorted(imp, v, "right"))
    return float(imp[k]) if k < imp.size else float(np.nextafter(v, np.inf))


def _auc_sorted(srt: _Sorted) -> float:
    below = np.searchsorted(srt.i, srt.g, "left").sum(dtype=np.int64)
    below_eq = np.searchsorted(srt.i, srt.g, "right").sum(dtype=np.int64)
    return float((int(below) + int(below_eq)) / (2 * srt.ng * srt.ni))


def roc_auc(genuine: Any, impostor: Any) -> float:
    """Area under the ROC curve, P(gen > imp) + 0.5 P(gen == imp) (ties as scikit-learn)."""
    return _auc_sorted(_Sorted(genuine, impostor))


# ---------------------------------------------------------------------------------------- report
def _fmr_key(f: float) -> str:
    return repr(float(f))  # 0.001 -> "0.001"


@dataclass(frozen=True)
class VerificationReport:
    """Summary of a verification experiment (rates are fractions in [0, 1]).

    ``fnmr_at_fmr`` and ``threshold_at_fmr`` map each FMR target (float) to the FNMR and
    threshold at the operating point; ``kfold_accuracy_mean/std`` are set when a pairs protocol
    was evaluated (see :mod:`facepriv.metrics.kfold`).
    """

    eer: float
    eer_low: float
    eer_high: float
    eer_threshold: float
    auc: float
    genuine_mean: float
    impostor_mean: float
    n_genuine: int
    n_impostor: int
    fnmr_at_fmr: dict[float, float]
    threshold_at_fmr: dict[float, float]
    fmr_at_fmr: dict[float, float] = field(default_factory=dict)
    kfold_accuracy_mean: float | None = None
    kfold_accuracy_std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; FMR targets become string keys ("0.001", "0.01", "0.1")."""
        out: dict[str, Any] = {
            "eer": self.eer,
            "eer_low": self.eer_low,
            "eer_high": self.eer_high,
            "eer_threshold": self.eer_threshold,
            "auc": self.auc,
            "genuine_mean": self.genuine_mean,
            "impostor_mean": self.impostor_mean,
            "n_genuine": self.n_genuine,
            "n_impostor": self.n_impostor,
            "fnmr_at_fmr": {_fmr_key(k): v for k, v in self.fnmr_at_fmr.items()},
            "threshold_at_fmr": {_fmr_key(k): v for k, v in self.threshold_at_fmr.items()},
        }
        if self.kfold_accuracy_mean is not None:
            out["kfold_accuracy_mean"] = self.kfold_accuracy_mean
            out["kfold_accuracy_std"] = self.kfold_accuracy_std
        return out


def verification_report(
    genuine: Any,
    impostor: Any,
    fmr_targets: tuple[float, ...] = FMR_TARGETS,
    kfold: Any = None,
) -> VerificationReport:
    """EER (with interval), AUC, FNMR/threshold at FMR targets and score statistics.

    Parameters
    ----------
    genuine, impostor : array-like of float
        Similarity scores of mated and non-mated comparisons.
    fmr_targets : tuple of float
        FMR operating points.
    kfold : KFoldResult, optional
        Adds ``kfold_accuracy_mean`` and ``kfold_accuracy_std``.
    """
    srt = _Sorted(genuine, impostor)
    e = _eer_sorted(srt)
    fnmr, thr, fmr = {}, {}, {}
    for t in fmr_targets:
        thr[t], fmr[t], fnmr[t] = _operating_point_sorted(srt, t)
    return VerificationReport(
        eer=e.eer,
        eer_low=e.low,
        eer_high=e.high,
        eer_threshold=e.threshold,
        auc=_auc_sorted(srt),
        genuine_mean=float(srt.g.mean()),
        impostor_mean=float(srt.i.mean()),
        n_genuine=srt.ng,
        n_impostor=srt.ni,
        fnmr_at_fmr=fnmr,
        threshold_at_fmr=thr,
        fmr_at_fmr=fmr,
        kfold_accuracy_mean=None if kfold is None else float(kfold.mean),
        kfold_accuracy_std=None if kfold is None else float(kfold.std),
    )
