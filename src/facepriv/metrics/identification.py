"""1:N identification (ISO/IEC 19795-1): closed-set rank-k / CMC, open-set DIR at FPIR.

**Protocol** (:func:`enrolment_split`): of every enrolled subject, the first sample (in file
order) is its one gallery template; its other samples are mated probes. Samples of subjects that
are not enrolled are non-mated probes (open set). Gallery and probes are protected with the same
key and scored with the protection's own comparator through :func:`facepriv.search.top_k`.

**Ranks** follow :mod:`facepriv.metrics.privacy`: 0-based, rank = number of gallery templates
scoring strictly higher than the probe's own subject (ties count in the system's favour); a
subject not among the ``max_rank`` best gets rank ``inf``. Rank-k identification rate =
``topk_accuracy`` = #(rank < k) / N, so "rank-1" is ``k = 1``; the CMC is that rate for k = 1..R.

**Open set**: threshold t at FPIR f = the lowest threshold with at most ``floor(f * N_nm)``
non-mated probes whose best score is ``>= t`` (:func:`facepriv.metrics.verification.threshold_at_fmr`
on the non-mated best scores). DIR(t) = share of mated probes whose own subject is ranked first
(rank 0) with a score ``>= t``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from facepriv.errors import ParameterError
from facepriv.metrics.privacy import Rate, topk_accuracy
from facepriv.metrics.verification import threshold_at_fmr
from facepriv.search import top_k

__all__ = ["CHUNK", "FPIRS", "MAX_RANK", "RANKS", "Identification", "cmc", "dir_at_fpir", "enrolment_split", "identify",
           "ranks_from_top_k"]

#: Defaults of the reported ranks, CMC length, FPIR targets and probe chunk (attack and CLI read these).
RANKS: tuple[int, ...] = (1, 5, 10)
MAX_RANK = 20
FPIRS: tuple[float, ...] = (0.01, 0.1)
CHUNK = 1024


def enrolment_split(identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the gallery (first sample of each subject) and of the mated probes (the others)."""
    ident = np.asarray(identity).astype(str)
    _, first = np.unique(ident, return_index=True)
    gallery = np.sort(first)
    probes = np.setdiff1d(np.arange(ident.size), gallery)
    return gallery, probes


def ranks_from_top_k(scores: np.ndarray, indices: np.ndarray, true_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each probe's true gallery row within its top-k (inf if absent), and its score.

    The rank counts top-k scores strictly higher than the true one; the score is NaN when absent.
    """
    hit = indices == np.asarray(true_index)[:, None]
    found = hit.any(axis=1)
    true_score = np.where(found, np.where(hit, scores, -np.inf).max(axis=1), np.nan)
    ranks = np.full(len(scores), np.inf)
    ranks[found] = (scores[found] > true_score[found, None]).sum(axis=1)
    return ranks, true_score


def cmc(ranks: Any, max_rank: int) -> np.ndarray:
    """Identification rate at rank 1..max_rank (fractions)."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.array([float(v) for v in topk_accuracy(r, range(1, int(max_rank) + 1)).values()])


def dir_at_fpir(mated_rank: Any, mated_true_score: Any, nonmated_best: Any,
                fpirs: Iterable[float] = FPIRS) -> dict[float, tuple[float, Rate]]:
    """FPIR -> (threshold, DIR) of the open-set protocol (see the module docstring)."""
    r = np.asarray(mated_rank, dtype=np.float64)
    s = np.asarray(mated_true_score, dtype=np.float64)
    out: dict[float, tuple[float, Rate]] = {}
    for f in fpirs:
        t = threshold_at_fmr(nonmated_best, float(f))
        ok = (r == 0) & np.nan_to_num(s >= t, nan=False)
        out[float(f)] = (t, Rate(int(ok.sum()), r.size))
    return out


@dataclass(frozen=True)
class Identification:
    """Closed- and open-set identification results."""

    n_gallery: int
    n_mated: int
    n_nonmated: int
    ranks: np.ndarray
    cmc: np.ndarray
    rank_k: dict[int, Rate]
    dir: dict[float, tuple[float, Rate]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {
            "n_gallery": self.n_gallery, "n_mated_probes": self.n_mated, "n_nonmated_probes": self.n_nonmated,
            "rank_k": {str(k): v.to_dict() for k, v in self.rank_k.items()},
            "cmc": [float(x) for x in self.cmc],
            "dir_at_fpir": {repr(f): {"threshold": t, **d.to_dict()} for f, (t, d) in self.dir.items()},
        }


def identify(comparator: Any, gallery: np.ndarray, gallery_identity: np.ndarray, probes: np.ndarray,
             probe_identity: np.ndarray, nonmated: np.ndarray | None = None, ks: Iterable[int] = RANKS,
             max_rank: int = MAX_RANK, fpirs: Iterable[float] = FPIRS, chunk: int = CHUNK) -> Identification:
    """Closed-set rank-k / CMC and (with ``nonmated``) open-set DIR at FPIR, by exact search.

    Parameters
    ----------
    comparator : Comparator
        The protection's comparator.
    gallery, probes, nonmated : ndarray (N, D)
        Enrolled templates (one per subject), mated probes, non-enrolled probes (optional).
    gallery_identity, probe_identity : ndarray of str
        Subjects; every probe's subject must be enrolled and gallery subjects unique.
    ks : iterable of int
        Ranks k of the rank-k rates (1-based counts: k = 1 is rank-1).
    max_rank : int
        Length of the CMC (capped at the gallery size).
    fpirs : iterable of float
        FPIR targets of the open set.
    chunk : int
        Probes searched at once.
    """
    gid = np.asarray(gallery_identity).astype(str)
    pid = np.asarray(probe_identity).astype(str)
    if np.unique(gid).size != gid.size:
        raise ParameterError("the gallery must hold one template per subject")
    if gid.size < 2:
        raise ParameterError("identification needs at least 2 enrolled subjects")
    pos = {s: i for i, s in enumerate(gid)}
    missing = sorted(set(pid) - pos.keys())
    if missing:
        raise ParameterError(f"{len(missing)} probe subject(s) are not enrolled, e.g. {missing[:3]}")
    if pid.size == 0:
        raise ParameterError("no mated probes (every enrolled subject has a single sample)")
    ks = sorted({int(k) for k in ks})
    depth = min(max(int(max_rank), max(ks)), gid.size)
    sc, ix = top_k(comparator, probes, gallery, depth, chunk=chunk)
    ranks, true_score = ranks_from_top_k(sc, ix, np.array([pos[s] for s in pid]))
    rank_k = topk_accuracy(ranks, [k for k in ks if k <= gid.size])
    curve = cmc(ranks, min(int(max_rank), gid.size))
    dirs: dict[float, tuple[float, Rate]] = {}
    n_nm = 0
    if nonmated is not None and len(nonmated):
        best, _ = top_k(comparator, nonmated, gallery, 1, chunk=chunk)
        n_nm = len(nonmated)
        dirs = dir_at_fpir(ranks, true_score, best[:, 0], fpirs)
    return Identification(int(gid.size), int(pid.size), n_nm, ranks, curve, rank_k, dirs)
