"""DET curve plots (PNG) with normal-deviate (probit) axes, as NIST and bob.measure draw them.

Each curve is FNMR against FMR over all thresholds; both axes are scaled by the inverse normal
CDF so that normal score distributions give straight lines. Several systems (e.g. unprotected vs.
protected templates) share one plot, each with its label and its EER marked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from facepriv.errors import ParameterError
from facepriv.fileio import atomic_path, check_writable
from facepriv.metrics.verification import det_rates, eer

# Tick positions of the probit axes (fractions) and their labels.
_TICKS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)
_MAX_POINTS = 4000  # impostor thresholds per curve (geometric in FMR); rates stay exact


@dataclass(frozen=True)
class DetCurve:
    """One labelled curve: genuine and impostor scores of a system."""

    label: str
    genuine: np.ndarray
    impostor: np.ndarray


def _tick_label(t: float) -> str:
    pct = 100 * t
    return f"{pct:g}%"


def plot_det(
    curves: Sequence[DetCurve],
    path: str | os.PathLike[str],
    title: str = "DET curve",
    overwrite: bool = False,
    limits: tuple[float, float] = (0.0001, 0.5),
) -> Path:
    """Draw DET curves of several systems on one probit-scaled plot and save a PNG atomically.

    Parameters
    ----------
    curves : sequence of DetCurve
    path : path of the PNG
    title : plot title
    overwrite : replace an existing file
    limits : (low, high) range of both axes, as fractions

    Returns
    -------
    Path of the written PNG.
    """
    if not curves:
        raise ParameterError("plot_det needs at least one curve")
    lo, hi = limits
    if not 0 < lo < hi < 1:
        raise ParameterError(f"DET axis limits must satisfy 0 < low < high < 1, got {limits}")
    out = check_writable(path, overwrite)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    try:
        eps = lo / 10  # rates of 0 are drawn just outside the visible range
        styles = ("-", "--", "-.", ":")  # identical curves (e.g. a protection that changes nothing) stay visible
        for k, c in enumerate(curves):
            det = det_rates(c.genuine, c.impostor, max_impostor_points=_MAX_POINTS)
            e = eer(c.genuine, c.impostor)
            fmr, fnmr = det.fmr, det.fnmr
            x = norm.ppf(np.clip(fmr, eps, 1 - eps))
            y = norm.ppf(np.clip(fnmr, eps, 1 - eps))
            (line,) = ax.plot(x, y, drawstyle="steps-post", lw=2.2 - 0.4 * (k % 4), ls=styles[k % 4], label=f"{c.label} (EER {100 * e.eer:.2f}%)")
            pe = norm.ppf(np.clip(e.eer, eps, 1 - eps))
            ax.plot([pe], [pe], "o", color=line.get_color(), ms=6, mfc="none", mew=1.5)
        ticks = [t for t in _TICKS if lo <= t <= hi]
        pos = norm.ppf(ticks)
        ax.set_xticks(pos, [_tick_label(t) for t in ticks], rotation=45)
        ax.set_yticks(pos, [_tick_label(t) for t in ticks])
        ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
        ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
        diag = norm.ppf([lo, hi])
        ax.plot(diag, diag, ":", color="0.6", lw=1, label="FMR = FNMR")
        ax.set_xlabel("False match rate (FMR)")
        ax.set_ylabel("False non-match rate (FNMR)")
        ax.set_title(title)
        ax.grid(True, color="0.85", lw=0.6)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out
