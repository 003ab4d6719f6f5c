"""Renewability (ISO/IEC 30136): templates of the same photo under two keys must not match.

A protection is renewable when a template re-issued under a new key cannot be matched with the
old one. For every photo we compare its template protected under key 1 with its template
protected under key 2 and count how many such pairs the system **accepts** (``score >=
threshold``) at its operating points: the *renewability failure rate* (0 = renewable, 1 = the
new key changes nothing).

Thresholds are set at FMR 0.1 % / 1 % from impostor scores (:func:`facepriv.metrics.verification.threshold_at_fmr`):
the protected system's own impostors (same comparator, one key) for the headline, and also the
unprotected system's (cosine) impostors, the reference operating point. The two agree for
cosine-scale comparators; only the first is meaningful for another score scale (e.g. the
normalised Hamming similarity of binary codes, whose impostors sit near 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from facepriv.metrics.privacy import Rate, success_rate
from facepriv.metrics.verification import threshold_at_fmr

__all__ = ["RENEWABILITY_FMRS", "renewability_failure", "thresholds_at_fmr"]

#: FMR operating points of the renewability rate.
RENEWABILITY_FMRS: tuple[float, ...] = (0.001, 0.01)


def thresholds_at_fmr(impostor: Any, fmrs: Iterable[float]) -> dict[float, float]:
    """FMR -> lowest threshold with FMR <= target on these impostor scores."""
    return {float(f): threshold_at_fmr(impostor, float(f)) for f in fmrs}


def renewability_failure(cross_key_scores: Any, impostor: Any,
                         fmrs: Iterable[float] = RENEWABILITY_FMRS) -> dict[float, Rate]:
    """Share of same-photo, different-key pairs accepted at each FMR threshold.

    Parameters
    ----------
    cross_key_scores : array-like (N,)
        Score of photo i under key 1 vs. photo i under key 2, for every photo.
    impostor : array-like
        Impostor scores of the system whose thresholds apply.
    fmrs : iterable of float
        FMR operating points.

    Returns
    -------
    dict FMR -> Rate
        Renewability failure rate with its Wilson interval.
    """
    return success_rate(np.asarray(cross_key_scores, dtype=np.float64), thresholds_at_fmr(impostor, fmrs))
