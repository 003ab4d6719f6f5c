"""Exact top-k nearest-neighbour search of probes in a gallery, with any comparator.

:func:`top_k` returns, for every probe, the ``k`` best-scoring gallery templates (similarities,
higher = more alike) in decreasing score order. It dispatches on the comparator:

* ``metric = "cosine"`` (and :class:`~facepriv.protections.base.CosineComparator`): FAISS
  ``IndexFlatIP`` on L2-normalised float32 templates (inner product = cosine);
* ``metric = "hamming"``: FAISS ``IndexBinaryFlat`` on bit-packed templates (``np.packbits`` of
  ``template > 0``, so {0, 1} and {-1, +1} codes both work); similarity = ``1 - d / L`` with ``L``
  the code length in bits;
* anything else (e.g. PE-MIU's compiled block re-alignment): ``comparator.pairwise`` over gallery
  chunks, keeping a running top-k with ``np.argpartition``.

**Comparator attribute.** A comparator declares which fast path is exact for it with the class
attribute ``metric`` (:data:`METRIC_ATTRIBUTE`): ``"cosine"`` when ``pairwise`` is the cosine of
the raw templates, ``"hamming"`` when it is ``1 - hamming_distance / L`` of binary codes. A
comparator without it (or with any other value) takes the generic path, which is always exact.

All paths are exact (no approximate index). Memory stays bounded: probes are searched ``chunk`` at
a time (the FAISS index holds the gallery once: N x D float32, or N x L/8 bytes for codes), and
the generic path also walks the gallery in chunks, so it never holds more than
``chunk x gallery_chunk`` scores. Ties are ordered by the lower gallery index on the generic path;
FAISS orders ties its own way (callers needing tie-exact ranks count scores, see
:mod:`facepriv.metrics.identification`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.errors import ParameterError

__all__ = ["METRIC_ATTRIBUTE", "comparator_metric", "top_k", "top_k_numpy"]

#: Name of the comparator class attribute that selects a fast exact path ("cosine" | "hamming").
METRIC_ATTRIBUTE = "metric"


def comparator_metric(comparator: Any) -> str:
    """``"cosine"``, ``"hamming"`` or ``"generic"``: the search path used for ``comparator``."""
    from facepriv.protections.base import CosineComparator

    m = getattr(comparator, METRIC_ATTRIBUTE, None)
    if m in ("cosine", "hamming"):
        return str(m)
    # cosine comparators of the base class predate the attribute; subclasses overriding pairwise do not qualify
    if isinstance(comparator, CosineComparator) and type(comparator).pairwise is CosineComparator.pairwise:
        return "cosine"
    return "generic"


def _check(probes: np.ndarray, gallery: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray, int]:
    p = np.asarray(probes)
    g = np.asarray(gallery)
    if p.ndim != 2 or g.ndim != 2:
        raise ParameterError(f"probes and gallery must be 2-d (N, D), got shapes {p.shape} and {g.shape}")
    if p.shape[1] != g.shape[1]:
        raise ParameterError(f"probes have dimension {p.shape[1]} but the gallery has {g.shape[1]}")
    if len(g) == 0:
        raise ParameterError("the gallery is empty")
    if isinstance(k, bool) or int(k) < 1:
        raise ParameterError(f"k must be >= 1, got {k!r}", param="k")
    if int(chunk) < 1:
        raise ParameterError(f"chunk must be >= 1, got {chunk!r}", param="chunk")
    return p, g, min(int(k), len(g))


def _unit_float32(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(n == 0, 1.0, n), dtype=np.float32)


def _search_cosine(p: np.ndarray, g: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(g.shape[1])
    index.add(_unit_float32(g))
    scores = np.empty((len(p), k), dtype=np.float64)
    idx = np.empty((len(p), k), dtype=np.int64)
    for s in range(0, len(p), chunk):
        d, i = index.search(_unit_float32(p[s : s + chunk]), k)
        scores[s : s + chunk], idx[s : s + chunk] = d, i
    return scores, idx


def _search_hamming(p: np.ndarray, g: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    bits = g.shape[1]
    # pad to whole bytes; padded zeros add no distance (same in probes and gallery)
    index = faiss.IndexBinaryFlat(8 * ((bits + 7) // 8))
    index.add(np.packbits(g > 0, axis=1))
    scores = np.empty((len(p), k), dtype=np.float64)
    idx = np.empty((len(p), k), dtype=np.int64)
    for s in range(0, len(p), chunk):
        d, i = index.search(np.packbits(p[s : s + chunk] > 0, axis=1), k)
        scores[s : s + chunk], idx[s : s + chunk] = 1.0 - d / bits, i
    return scores, idx


def _merge(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k best of two candidate sets per row (unsorted)."""
    cs = np.concatenate([best_s, s], axis=1)
    ci = np.concatenate([best_i, i], axis=1)
    if cs.shape[1] <= k:
        return cs, ci
    part = np.argpartition(-cs, k - 1, axis=1)[:, :k]
    return np.take_along_axis(cs, part, axis=1), np.take_along_axis(ci, part, axis=1)


def _sort_rows(s: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decreasing score, ties by increasing gallery index (deterministic)."""
    order = np.lexsort((i, -s), axis=1) if s.size else np.zeros(s.shape, dtype=np.int64)
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def top_k_numpy(comparator: Any, probes: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 256,
                gallery_chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """The generic exact path: ``comparator.pairwise`` over gallery chunks with a running top-k.

    Same arguments and result as :func:`top_k`; ``gallery_chunk`` bounds the gallery rows scored
    at once (memory ~ ``chunk x gallery_chunk`` float64).
    """
    p, g, k = _check(probes, gallery, k, chunk)
    gchunk = max(1, int(gallery_chunk))
    scores = np.empty((len(p), k), dtype=np.float64)
    idx = np.empty((len(p), k), dtype=np.int64)
    for s in range(0, len(p), chunk):
        pc = p[s : s + chunk]
        bs = np.empty((len(pc), 0))
        bi = np.empty((len(pc), 0), dtype=np.int64)
        for g0 in range(0, len(g), gchunk):
            block = np.asarray(comparator.pairwise(pc, g[g0 : g0 + gchunk]), dtype=np.float64)
            cols = np.broadcast_to(np.arange(g0, g0 + block.shape[1], dtype=np.int64), block.shape)
            bs, bi = _merge(bs, bi, block, cols, k)
        scores[s : s + chunk], idx[s : s + chunk] = _sort_rows(bs, bi)
    return scores, idx


def top_k(comparator: Any, probes: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024,
          gallery_chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Exact k best gallery matches of every probe under ``comparator``.

    Parameters
    ----------
    comparator : Comparator
        Scores templates (``pairwise``); its ``metric`` attribute selects a FAISS path.
    probes : ndarray (P, D)
    gallery : ndarray (G, D)
    k : int
        Matches per probe (capped at G).
    chunk : int
        Probes searched at once (bounds memory).
    gallery_chunk : int
        Gallery rows scored at once on the generic path.

    Returns
    -------
    scores : ndarray of float64 (P, k)
        Similarities in decreasing order per row.
    indices : ndarray of int64 (P, k)
        Gallery rows of those scores.
    """
    p, g, k = _check(probes, gallery, k, chunk)
    path = comparator_metric(comparator)
    if path == "generic":
        return top_k_numpy(comparator, p, g, k, min(int(chunk), 256), gallery_chunk)
    scores, idx = (_search_cosine if path == "cosine" else _search_hamming)(p, g, k, int(chunk))
    _check_declared(comparator, path, p, g, scores, idx)
    return scores, idx


def _check_declared(comparator: Any, path: str, p: np.ndarray, g: np.ndarray, scores: np.ndarray,
                    idx: np.ndarray) -> None:
    """The FAISS scores of a few probes must equal the comparator's own: a wrong ``metric`` fails loudly."""
    m = min(8, len(p))
    if m == 0:
        return
    own = np.asarray(comparator.paired(p[:m], g[idx[:m, 0]]), dtype=np.float64)
    if not np.allclose(own, scores[:m, 0], atol=1e-4):
        raise ParameterError(f"{type(comparator).__name__} declares {METRIC_ATTRIBUTE} = {path!r}, but its scores "
                             f"differ from that metric's (e.g. {own[0]:.6g} vs {scores[0, 0]:.6g})")
