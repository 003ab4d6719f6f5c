"""Figures of the ISO/IEC 30136 metrics and of identification (PNG, written atomically).

* :func:`plot_unlinkability` - mated and non-mated score densities with the local linkability
  D<->(s) on a second axis and Dsys in the title (the figure of Gomez-Barrero et al. 2018);
* :func:`plot_cmc` - cumulative match characteristic of one or more systems.

Curves of the matrix (inversion success vs. FMR, CMC) are drawn by the report from the outcomes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from facepriv.fileio import atomic_path, check_writable
from facepriv.metrics.unlinkability import Linkability


def _save(fig, out: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_unlinkability(link: Linkability, path: str | os.PathLike[str], title: str = "",
                       overwrite: bool = False) -> Path:
    """Both score densities (bars) and D<->(s) (line, right axis); Dsys in the title."""
    out = check_writable(path, overwrite)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    w = np.diff(link.edges)
    ax.bar(link.edges[:-1], link.nonmated_density, width=w, align="edge", alpha=0.5, color="tab:red",
           label=f"non-mated ({link.n_nonmated})")
    ax.bar(link.edges[:-1], link.mated_density, width=w, align="edge", alpha=0.5, color="tab:blue",
           label=f"mated ({link.n_mated})")
    ax.set_xlabel("score (templates under different keys)")
    ax.set_ylabel("probability density")
    ax2 = ax.twinx()
    # bins without any score carry no evidence: leave the line out there instead of drawing 0
    local = np.where((link.mated_density > 0) | (link.nonmated_density > 0), link.local, np.nan)
    ax2.plot(link.centres, local, color="black", lw=1.5, label="D<->(s)")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("local linkability D<->(s)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    head = f"Dsys = {link.dsys:.3f} (omega = {link.omega:g})"
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=10)
    return _save(fig, out)


def plot_cmc(curves: Mapping[str, Sequence[float]], path: str | os.PathLike[str], title: str = "CMC",
             overwrite: bool = False) -> Path:
    """Identification rate vs. rank (1-based) of each labelled system."""
    out = check_writable(path, overwrite)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for label, ys in curves.items():
        ax.plot(np.arange(1, len(ys) + 1), ys, marker="o", ms=3, label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, out)

