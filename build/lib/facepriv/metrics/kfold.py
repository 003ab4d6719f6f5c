"""k-fold verification accuracy, as in the LFW protocol.

For each fold, the decision threshold that maximises accuracy on the other folds is chosen and
the accuracy on the held-out fold is recorded. The reported figures are the mean accuracy and the
standard deviation over folds, sigma = sqrt(sum (p_i - mean)^2 / (k - 1)) (the LFW README's
definition), together with the standard error sigma / sqrt(k).

Threshold rule: a pair is accepted when ``score >= t``. Among the distinct training scores, the
lowest one that maximises training accuracy is found; the threshold is placed midway between it and
the next lower distinct training score (the middle of the gap, which gives the same training
accuracy); below the lowest score it is the lowest score minus 1, above the highest score plus 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from facepriv.errors import ParameterError


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold thresholds and accuracies with their mean and spread."""

    accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]
    folds: tuple[int, ...]
    mean: float
    std: float
    stderr: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "kfold_accuracy_mean": self.mean,
            "kfold_accuracy_std": self.std,
            "kfold_accuracy_stderr": self.stderr,
            "kfold_folds": list(self.folds),
            "kfold_accuracies": list(self.accuracies),
            "kfold_thresholds": list(self.thresholds),
        }


def best_threshold(scores: np.ndarray, genuine: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of ``score >= threshold`` on these pairs.

    See the module docstring for the tie and placement rule.
    """
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(genuine, dtype=bool)
    if s.size == 0:
        raise ParameterError("cannot choose a threshold on zero pairs")
    order = np.argsort(s, kind="stable")
    s_sorted, g_sorted = s[order], g[order]
    uniq, first = np.unique(s_sorted, return_index=True)
    # candidate k accepts uniq[k:] (k = 0..U; k = U rejects all). Counts strictly below uniq[k]:
    gen_below = np.concatenate([[0], np.cumsum(g_sorted)])[np.append(first, s.size)]
    imp_below = np.append(first, s.size) - gen_below
    n_gen = int(g.sum())
    correct = (n_gen - gen_below) + imp_below  # genuine accepted + impostors rejected
    k = int(np.argmax(correct))  # lowest maximiser
    if k == 0:
        thr = float(uniq[0]) - 1.0
    elif k == uniq.size:
        thr = float(uniq[-1]) + 1.0
    else:
        thr = float((uniq[k - 1] + uniq[k]) / 2.0)
    return thr, float(correct[k] / s.size)


def kfold_accuracy(scores: Any, genuine: Any, folds: Any) -> KFoldResult:
    """Cross-validated verification accuracy (LFW style).

    Parameters
    ----------
    scores : array-like (M,)
        Similarity score of each protocol pair.
    genuine : array-like of bool (M,)
        True for mated pairs.
    folds : array-like of int (M,)
        Fold of each pair; at least 2 distinct folds.

    Returns
    -------
    KFoldResult
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(genuine, dtype=bool).ravel()
    f = np.asarray(folds).ravel()
    if not (s.size == g.size == f.size):
        raise ParameterError(f"scores, genuine and folds must have equal length, got {s.size}, {g.size}, {f.size}")
    if s.size == 0:
        raise ParameterError("k-fold accuracy needs at least one pair")
    if not np.isfinite(s).all():
        raise ParameterError(f"{int((~np.isfinite(s)).sum())} protocol score(s) are NaN or infinite")
    fold_ids = np.unique(f)
    if fold_ids.size < 2:
        raise ParameterError(f"k-fold accuracy needs at least 2 folds, got {fold_ids.size}")
    accs, thrs = [], []
    for k in fold_ids:
        test = f == k
        thr, _ = best_threshold(s[~test], g[~test])
        pred = s[test] >= thr
        accs.append(float((pred == g[test]).mean()))
        thrs.append(thr)
    acc = np.array(accs)
    std = float(acc.std(ddof=1))
    return KFoldResult(
        accuracies=tuple(accs),
        thresholds=tuple(thrs),
        folds=tuple(fold_ids.tolist()),
        mean=float(acc.mean()),
        std=std,
        stderr=std / math.sqrt(acc.size),
    )
