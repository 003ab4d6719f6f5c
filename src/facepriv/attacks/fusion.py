"""Score fusion of the similarity attack (Osorio-Roig et al., TBIOM 2022).

Scores of a probe against a gallery are sorted in descending order, s_1 >= s_2 >= ... >= s_n, and
the top n are fused with one of four rules (ranks r start at 1):

* ``max``: s_1
* ``mean``: (1/n) sum_r s_r
* ``log``: sum_r log10((r + 1) / r) * s_r
* ``linear``: sum_r s_r / (r + 1)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from facepriv.errors import ParameterError

log = logging.getLogger(__name__)

RULES = ("max", "mean", "log", "linear")
DEFAULT_TOP_N = (1, 5, 10, 50, 100, 200, 400, 600)


def rank_weights(rule: str, n: int) -> np.ndarray:
    """Weights w_r (r = 1..n) such that the fused score is sum_r w_r s_r."""
    r = np.arange(1, n + 1, dtype=np.float64)
    if rule == "max":
        w = np.zeros(n)
        w[0] = 1.0
        return w
    if rule == "mean":
        return np.full(n, 1.0 / n)
    if rule == "log":
        return np.log10((r + 1) / r)
    if rule == "linear":
        return 1.0 / (r + 1)
    raise ParameterError(f"unknown fusion rule {rule!r}; rules are {', '.join(RULES)}")


def top_scores(scores: np.ndarray, n_max: int) -> np.ndarray:
    """The ``n_max`` highest scores of each row, in descending order, shape (P, n_max)."""
    scores = np.asarray(scores, dtype=np.float64)
    g = scores.shape[1]
    n_max = min(n_max, g)
    if n_max < g:
        part = np.partition(scores, g - n_max, axis=1)[:, g - n_max :]
    else:
        part = scores
    return -np.sort(-part, axis=1)[:, :n_max]


def fuse(sorted_scores: np.ndarray, rule: str, n: int) -> np.ndarray:
    """Fuse the top ``n`` of descending-sorted scores (P, >= n) with ``rule``, shape (P,)."""
    if n < 1 or n > sorted_scores.shape[1]:
        raise ParameterError(f"top-n {n} must be between 1 and the {sorted_scores.shape[1]} available scores")
    # column-major, as the dense path's class columns always were: the same summation order, the same bits
    return np.asfortranarray(sorted_scores[:, :n]) @ rank_weights(rule, n)


def cap_top_n(top_n: Sequence[int], gallery_size: int, what: str = "gallery") -> list[int]:
    """Validate top-n values and cap those larger than the gallery (warning; error if none fits)."""
    values = []
    for n in top_n:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ParameterError(f"top-n values must be positive integers, got {n!r}")
        values.append(int(n))
    if not values:
        raise ParameterError("no top-n values given")
    if gallery_size < 1:
        raise ParameterError(f"the {what} is empty: nothing to compare probes with")
    if all(n > gallery_size for n in values):
        raise ParameterError(
            f"every top-n value ({', '.join(map(str, values))}) exceeds the {what} size {gallery_size}"
        )
    big = [n for n in values if n > gallery_size]
    if big:
        log.warning(
            "top-n %s exceed the %s size %d; capped to %d", ", ".join(map(str, big)), what, gallery_size, gallery_size
        )
    return sorted({min(n, gallery_size) for n in values})
