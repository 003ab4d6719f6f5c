"""Confidence intervals for proportions (attack accuracy, success rates) and accuracy summaries."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import norm


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    successes : int
        Number of successes k (0 <= k <= n).
    n : int
        Number of trials; n == 0 gives (nan, nan).
    confidence : float
        Two-sided confidence level, e.g. 0.95.

    Returns
    -------
    (low, high) : tuple of float
        Bounds in [0, 1].
    """
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def balanced_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``true``."""
    classes = np.unique(true)
    return float(np.mean([np.mean(pred[true == c] == c) for c in classes]))


def chance_level(true: np.ndarray) -> float:
    """Majority-class share of ``true`` (accuracy of always guessing the commonest class)."""
    _, counts = np.unique(true, return_counts=True)
    return float(counts.max() / counts.sum())


def accuracy_entry(true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Accuracy of ``pred`` against ``true`` with its 95 % Wilson interval, balanced accuracy and counts."""
    n = len(true)
    k = int(np.sum(pred == true))
    lo, hi = wilson_interval(k, n)
    return {
        "accuracy": k / n if n else float("nan"),
        "balanced_accuracy": balanced_accuracy(true, pred),
        "ci_low": lo,
        "ci_high": hi,
        "correct": k,
        "n_probes": n,
    }
