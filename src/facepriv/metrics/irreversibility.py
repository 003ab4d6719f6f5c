"""Irreversibility under key disclosure (ISO/IEC 30136): how often an inverted template works.

The attacker knows the key, inverts each protected template back to an estimate of the
unprotected template (``protection.invert``), and presents it to the **unprotected** system: the
estimate is compared (cosine) with the victim's original template. The *inversion success rate*
at an FMR is the share of estimates accepted at the unprotected system's threshold for that FMR
(set on its impostor scores). Reported at FMR 0.1 / 1 / 10 % and as a curve over FMR; 0 =
irreversible, 1 = every template can be inverted into one that matches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.errors import ParameterError
from facepriv.metrics.privacy import Rate, success_rate
from facepriv.metrics.renewability import thresholds_at_fmr
from facepriv.metrics.verification import FMR_TARGETS

__all__ = ["fmr_grid", "inversion_success"]


def fmr_grid(n_impostor: int, points_per_decade: int = 4, top: float = 0.1) -> list[float]:
    """FMR values from the smallest resolvable one (>= 1 / n_impostor) to ``top``, log-spaced."""
    if n_impostor < 1:
        raise ParameterError("the FMR grid needs at least one impostor score")
    lo = max(1.0 / n_impostor, 1e-6)
    if lo >= top:
        return [float(top)]
    n = int(np.ceil(np.log10(top / lo) * points_per_decade)) + 1
    return [float(x) for x in np.geomspace(lo, top, n)]


def inversion_success(inverted_vs_original: Any, impostor: Any,
                      fmrs: tuple[float, ...] = FMR_TARGETS) -> dict[float, Rate]:
    """Share of inverted templates accepted against their originals at each FMR threshold.

    Parameters
    ----------
    inverted_vs_original : array-like (N,)
        Unprotected-system score (cosine) of each inverted template vs. its original.
    impostor : array-like
        Impostor scores of the unprotected system (thresholds).
    fmrs : tuple of float
        FMR operating points.
    """
    return success_rate(np.asarray(inverted_vs_original, dtype=np.float64), thresholds_at_fmr(impostor, fmrs))
