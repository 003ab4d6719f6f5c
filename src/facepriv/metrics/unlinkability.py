"""Unlinkability of protected templates (ISO/IEC 30136; Gomez-Barrero et al., IEEE TIFS 2018).

Two templates protected under **different keys** are compared. Mated scores: same subject
(different samples); non-mated scores: different subjects. If the two score densities coincide,
nobody can tell from a score whether two protected templates belong to one person: the templates
are unlinkable.

* **Densities** are histograms on common bins over the joint score range. Bins: ``bins`` if given,
  else ``min(n_mated // 10, 100)`` (at least 2), the rule of the authors' implementation.
* **Likelihood ratio** per bin: ``LR(s) = p(s | mated) / p(s | non-mated)``.
* **Local linkability** with prior ratio ``omega`` = P(mated) / P(non-mated) (default 1):
  ``D(s) = 2 * omega*LR(s) / (1 + omega*LR(s)) - 1`` where ``omega*LR(s) > 1``, else 0; where the
  non-mated density is 0 and the mated one is not, ``D(s) = 1``.
* **Global linkability** ``Dsys = sum_s D(s) * p(s | mated) * bin_width`` in [0, 1]: 0 = fully
  unlinkable, 1 = fully linkable.

Pure functions; :mod:`facepriv.metrics.iso_plots` draws the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facepriv.errors import ParameterError

__all__ = ["MAX_PAIRS", "OMEGA", "Linkability", "default_bins", "linkability", "local_linkability", "score_pairs"]

#: Default prior ratio and pair budget (the attack and the CLI both read these).
OMEGA = 1.0
MAX_PAIRS = 20000


@dataclass(frozen=True)
class Linkability:
    """Result of :func:`linkability` (all arrays per bin)."""

    edges: np.ndarray
    mated_density: np.ndarray
    nonmated_density: np.ndarray
    local: np.ndarray  # D<->(s)
    dsys: float
    omega: float
    n_mated: int
    n_nonmated: int

    @property
    def centres(self) -> np.ndarray:
        """Bin centres."""
        return (self.edges[:-1] + self.edges[1:]) / 2

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: Dsys, the D<->(s) extremes and where linkability starts."""
        pos = self.local > 0
        return {
            "dsys": self.dsys, "omega": self.omega, "bins": int(self.local.size),
            "n_mated": self.n_mated, "n_nonmated": self.n_nonmated,
            "local_max": float(self.local.max()),
            # lowest score from which D<->(s) > 0 (a score above it hints at a link)
            "linkable_from_score": float(self.edges[:-1][pos][0]) if pos.any() else None,
        }


def _scores(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ParameterError(f"{name} scores are empty")
    if not np.isfinite(a).all():
        raise ParameterError(f"{name} scores hold NaN or infinite values")
    return a


def default_bins(n_mated: int) -> int:
    """``min(n_mated // 10, 100)``, at least 2."""
    return max(2, min(int(n_mated) // 10, 100))


def local_linkability(mated_density: np.ndarray, nonmated_density: np.ndarray, omega: float = 1.0) -> np.ndarray:
    """D<->(s) per bin from the two densities (see the module docstring)."""
    if not (np.isfinite(omega) and omega > 0):
        raise ParameterError(f"omega must be a positive number, got {omega!r}", param="omega")
    pm = np.asarray(mated_density, dtype=np.float64)
    pn = np.asarray(nonmated_density, dtype=np.float64)
    d = np.zeros_like(pm)
    both = pn > 0
    olr = np.zeros_like(pm)
    olr[both] = omega * pm[both] / pn[both]
    link = both & (olr > 1.0)
    d[link] = 2.0 * olr[link] / (1.0 + olr[link]) - 1.0
    d[~both & (pm > 0)] = 1.0  # only mated scores fall here
    return d


def linkability(mated: Any, nonmated: Any, omega: float = 1.0, bins: int | None = None) -> Linkability:
    """Local D<->(s) and global Dsys from mated and non-mated scores.

    Parameters
    ----------
    mated : array-like
        Scores of same-subject pairs protected under different keys.
    nonmated : array-like
        Scores of different-subject pairs protected under different keys.
    omega : float
        Prior ratio P(mated) / P(non-mated) (1 = equal priors).
    bins : int, optional
        Number of histogram bins over the joint score range; default :func:`default_bins`.
    """
    m = _scores(mated, "mated")
    n = _scores(nonmated, "non-mated")
    nb = default_bins(m.size) if bins is None else int(bins)
    if nb < 1:
        raise ParameterError(f"bins must be >= 1, got {bins!r}", param="bins")
    lo, hi = float(min(m.min(), n.min())), float(max(m.max(), n.max()))
    if hi <= lo:  # every score equal: one bin of unit width around it
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, nb + 1)
    pm, _ = np.histogram(m, bins=edges, density=True)
    pn, _ = np.histogram(n, bins=edges, density=True)
    local = local_linkability(pm, pn, omega)
    dsys = float(np.sum(local * pm * np.diff(edges)))
    return Linkability(edges, pm, pn, local, min(max(dsys, 0.0), 1.0), float(omega), int(m.size), int(n.size))


def score_pairs(identity: np.ndarray, mated: bool, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ordered index pairs (i, j), i != j, of the same (``mated``) or of different subjects.

    All such pairs when there are at most ``max_pairs``, else ``max_pairs`` distinct pairs drawn
    uniformly with ``rng``. Ordered, because template i is taken under one key and j under the other.
    """
    ident = np.unique(np.asarray(identity).astype(str), return_inverse=True)[1].ravel()
    n = ident.size
    same = ident[:, None] == ident[None, :] if n <= 4096 else None
    if same is not None:
        want = same if mated else ~same
        np.fill_diagonal(want, False)
        i, j = np.nonzero(want)
        if i.size > max_pairs:
            pick = np.sort(rng.choice(i.size, size=max_pairs, replace=False))
            i, j = i[pick], j[pick]
        return i.astype(np.int64), j.astype(np.int64)
    # large sets: draw candidates and keep the wanted kind (no N x N matrix)
    if mated:
        groups = [np.flatnonzero(ident == c) for c in np.unique(ident)]
        pairs = [(a, b) for g in groups if g.size > 1 for a in g for b in g if a != b]
        arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        if len(arr) > max_pairs:
            arr = arr[np.sort(rng.choice(len(arr), size=max_pairs, replace=False))]
        return arr[:, 0], arr[:, 1]
    got = np.empty((0, 2), dtype=np.int64)
    while len(got) < max_pairs:
        c = rng.integers(0, n, size=(2 * max_pairs, 2))
        c = c[ident[c[:, 0]] != ident[c[:, 1]]]
        got = np.unique(np.concatenate([got, c]), axis=0)
    got = got[np.sort(rng.choice(len(got), size=max_pairs, replace=False))]
    return got[:, 0], got[:, 1]
