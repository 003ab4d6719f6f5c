"""Exact top-k nearest-neighbour search of probes in a gallery, with any comparator.

:func:`top_k` returns, for every probe, the ``k`` best-scoring gallery templates (similarities,
higher = more alike) in decreasing score order. It dispatches on the comparator:

* ``metric = "cosine"`` (and :class:`~facepriv.protections.base.CosineComparator`): FAISS
  ``IndexFlatIP`` on L2-normalised float32 templates (inner product = cosine);
* ``metric = "hamming"``: FAISS ``IndexBinaryFlat`` on bit-packed templates (``np.packbits`` of
  ``template > 0``, so {0, 1} and {-1, +1} codes both work); similarity = ``1 - d / L`` with ``L``
  the code length in bits;
* anything else (e.g. PE-MIU's compiled block re-alignment): ``comparator.pairwise`` over gallery
  chunks, keeping a running top-k (:func:`top_k_numpy`).

**Comparator attribute.** A comparator declares which fast path is exact for it with the class
attribute ``metric`` (:data:`METRIC_ATTRIBUTE`): ``"cosine"`` when ``pairwise`` is the cosine of
the raw templates, ``"hamming"`` when it is ``1 - hamming_distance / L`` of binary codes. A
comparator without it (or with any other value) takes the generic path, which is always exact.

All paths are exact (no approximate index). Memory stays bounded: probes are searched ``chunk`` at
a time, the FAISS index holds the gallery once (N x D float32, or N x L/8 bytes for codes; it is
filled ``ADD_CHUNK`` rows at a time, so no normalised copy of the whole gallery is made), and the
generic path walks the gallery in chunks, never holding more than ``chunk x gallery_chunk`` scores.
``rows`` restricts the search to some gallery rows (e.g. one class) without copying them.

**Ties and rescoring.** The generic path and :func:`top_k_scores` rank by decreasing score, ties
by the lower gallery row — also at the k-th place (of several equal scores there, the lowest rows
are kept), exactly like a stable ``argsort`` of the full score row. FAISS orders ties its own way
and scores in float32; with ``rescore=True`` the FAISS candidates (``k`` plus a margin) are
re-scored with the comparator's own ``pairwise`` (float64) and ranked the same way, and a probe's
list is accepted only when it is certified complete: its k-th exact score exceeds the last
candidate's FAISS score by more than the FAISS error bound (:func:`faiss_tolerance`), so no row
left out can score as high. Uncertified probes are searched again with 4x the candidates, then
(beyond ``max(16 k, 4096)`` candidates) by the generic path. Where the first candidates would be
``DENSE_SHARE`` of the searched rows or more (small galleries), the generic path scores every row
instead: cheaper (re-scoring gathered rows costs ~17x more per pair than a chunk of the dense
product), same result. The result equals the generic path's: same rows, same tie order, the
comparator's float64 scores (to the last bit or so: a 1 x K block instead of a chunk).
Identification metrics, which count scores rather than trust tie order, use the plain FAISS
result (``rescore=False``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.errors import ParameterError

__all__ = ["ADD_CHUNK", "DENSE_SHARE", "METRIC_ATTRIBUTE", "comparator_metric", "faiss_tolerance", "rank_order", "top_k",
           "top_k_numpy", "top_k_scores"]

#: Name of the comparator class attribute that selects a fast exact path ("cosine" | "hamming").
METRIC_ATTRIBUTE = "metric"
#: Gallery rows normalised / packed and added to a FAISS index at once.
ADD_CHUNK = 16384
#: Rescore mode takes the generic path when the first FAISS candidates are this share of the rows or more.
DENSE_SHARE = 0.1


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


def faiss_tolerance(path: str, dim: int) -> float:
    """Bound on |FAISS score - comparator score| used to certify rescored lists.

    Cosine: float32 normalisation and a float32 dot product of D terms err by at most about
    (D + 16) 2^-24 for unit vectors; a factor 4 covers the comparator's own rounding. Hamming:
    distances are exact integers, only the comparator's float rounding remains.
    """
    return 4.0 * (dim + 16) * 2.0**-24 if path == "cosine" else 1e-9


def _check(probes: np.ndarray, gallery: np.ndarray, k: int, chunk: int,
           rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    p = np.asarray(probes)
    g = np.asarray(gallery)
    if p.ndim != 2 or g.ndim != 2:
        raise ParameterError(f"probes and gallery must be 2-d (N, D), got shapes {p.shape} and {g.shape}")
    if p.shape[1] != g.shape[1]:
        raise ParameterError(f"probes have dimension {p.shape[1]} but the gallery has {g.shape[1]}")
    if rows is not None:
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise ParameterError(f"rows must be a 1-d integer array, got {rows.dtype} of shape {rows.shape}")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows[0] < 0 or rows[-1] >= len(g) or (np.diff(rows) <= 0).any()):
            raise ParameterError(f"rows must be increasing gallery rows in [0, {len(g)})")
    n = len(g) if rows is None else len(rows)
    if n == 0:
        raise ParameterError("the gallery is empty")
    if isinstance(k, bool) or int(k) < 1:
        raise ParameterError(f"k must be >= 1, got {k!r}", param="k")
    if int(chunk) < 1:
        raise ParameterError(f"chunk must be >= 1, got {chunk!r}", param="chunk")
    return p, g, rows, min(int(k), n)


def _rows(g: np.ndarray, rows: np.ndarray | None, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Gallery rows s:e of the searched set (a view when ``rows`` is None) and their row numbers."""
    if rows is None:
        return g[s:e], np.arange(s, min(e, len(g)), dtype=np.int64)
    return g[rows[s:e]], rows[s:e]


def _unit_float32(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(n == 0, 1.0, n), dtype=np.float32)


def _pack(x: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(x) > 0, axis=1)


def _reserve(index: Any, n: int) -> None:
    """Allocate the index's code storage for ``n`` rows at once.

    Adding chunks would otherwise grow the storage vector by doubling, holding the old and the
    new buffer at once (~15 % more peak memory at 500k x 512). Growing and shrinking the vector
    keeps its capacity (``std::vector``); without that API nothing is done.
    """
    codes = getattr(index, "codes", None) if hasattr(index, "codes") else getattr(index, "xb", None)
    if hasattr(codes, "resize"):
        codes.resize(n * index.code_size)
        codes.resize(0)


class _Index:
    """A FAISS flat index of the searched gallery rows, filled ``ADD_CHUNK`` rows at a time."""

    def __init__(self, path: str, g: np.ndarray, rows: np.ndarray | None) -> None:
        import faiss

        self.path, self.bits, self.rows = path, g.shape[1], rows
        if path == "cosine":
            self.index, self.encode = faiss.IndexFlatIP(g.shape[1]), _unit_float32
        else:  # pad to whole bytes; padded zeros add no distance (same in probes and gallery)
            self.index, self.encode = faiss.IndexBinaryFlat(8 * ((self.bits + 7) // 8)), _pack
        n = len(g) if rows is None else len(rows)
        _reserve(self.index, n)
        for s in range(0, n, ADD_CHUNK):
            self.index.add(self.encode(_rows(g, rows, s, s + ADD_CHUNK)[0]))
        self.n = n

    def search(self, p: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS scores (float64, decreasing) and gallery rows of the k best, ``chunk`` probes at a time."""
        scores = np.empty((len(p), k), dtype=np.float64)
        idx = np.empty((len(p), k), dtype=np.int64)
        for s in range(0, len(p), chunk):
            d, i = self.index.search(self.encode(p[s : s + chunk]), k)
            scores[s : s + chunk] = d if self.path == "cosine" else 1.0 - d / self.bits
            idx[s : s + chunk] = i if self.rows is None else self.rows[i]
        return scores, idx


def rank_order(scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-row order by decreasing score, ties by increasing index (``np.lexsort``)."""
    if scores.size == 0:
        return np.zeros(scores.shape, dtype=np.int64)
    return np.lexsort((indices, -scores), axis=-1)


def _sort_rows(s: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decreasing score, ties by increasing gallery index (deterministic)."""
    order = rank_order(s, i)
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def _best_k(s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row by (decreasing score, increasing index), unsorted.

    ``argpartition`` picks an arbitrary subset of the values tied at the k-th place; rows where
    it left out a tied value are re-selected by a full (score, index) sort.
    """
    if s.shape[1] <= k:
        return s, i
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    bs, bi = np.take_along_axis(s, part, axis=1), np.take_along_axis(i, part, axis=1)
    kth = bs.min(axis=1, keepdims=True)
    redo = np.flatnonzero((s == kth).sum(axis=1) > (bs == kth).sum(axis=1))
    if redo.size:
        order = rank_order(s[redo], i[redo])[:, :k]
        bs[redo] = np.take_along_axis(s[redo], order, axis=1)
        bi[redo] = np.take_along_axis(i[redo], order, axis=1)
    return bs, bi


def _merge(best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k best of two candidate sets per row (unsorted)."""
    return _best_k(np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1), k)


def top_k_scores(scores: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best of a precomputed (P, G) score matrix (columns ``rows`` only), ranked as :func:`top_k`.

    Returns float64 scores (P, k) in decreasing order and their column numbers, ties by the lower
    column; equal to a stable ``argsort`` of each row.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ParameterError(f"scores must be 2-d (P, G), got shape {s.shape}")
    cols = np.arange(s.shape[1], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows is not None:
        s = s[:, cols]
    if cols.size == 0:
        raise ParameterError("the gallery is empty")
    return _sort_rows(*_best_k(s, np.broadcast_to(cols, s.shape), min(int(k), cols.size)))


def top_k_numpy(comparator: Any, probes: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 256,
                gallery_chunk: int = 16384, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The generic exact path: ``comparator.pairwise`` over gallery chunks with a running top-k.

    Same arguments and result as :func:`top_k`; ``gallery_chunk`` bounds the gallery rows scored
    at once (memory ~ ``chunk x gallery_chunk`` float64).
    """
    p, g, rows, k = _check(probes, gallery, k, chunk, rows)
    n = len(g) if rows is None else len(rows)
    gchunk = max(1, int(gallery_chunk))
    scores = np.empty((len(p), k), dtype=np.float64)
    idx = np.empty((len(p), k), dtype=np.int64)
    for s in range(0, len(p), chunk):
        pc = p[s : s + chunk]
        bs = np.empty((len(pc), 0))
        bi = np.empty((len(pc), 0), dtype=np.int64)
        for g0 in range(0, n, gchunk):
            gb, gi = _rows(g, rows, g0, g0 + gchunk)
            block = np.asarray(comparator.pairwise(pc, gb), dtype=np.float64)
            bs, bi = _merge(bs, bi, block, np.broadcast_to(gi, block.shape), k)
        scores[s : s + chunk], idx[s : s + chunk] = _sort_rows(bs, bi)
    return scores, idx


def top_k(comparator: Any, probes: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024,
          gallery_chunk: int = 16384, rows: np.ndarray | None = None,
          rescore: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k best gallery matches of every probe under ``comparator``.

    Parameters
    ----------
    comparator : Comparator
        Scores templates (``pairwise``); its ``metric`` attribute selects a FAISS path.
    probes : ndarray (P, D)
    gallery : ndarray (G, D)
    k : int
        Matches per probe (capped at the number of searched rows).
    chunk : int
        Probes searched at once (bounds memory; at most 256 on the generic path).
    gallery_chunk : int
        Gallery rows scored at once on the generic path.
    rows : ndarray of int, optional
        Increasing gallery rows to search (default: all), e.g. one class; not copied.
    rescore : bool
        FAISS paths: re-score and certify the candidates with ``comparator.pairwise`` so scores,
        rows and tie order equal the generic path's (see the module notes).

    Returns
    -------
    scores : ndarray of float64 (P, k)
        Similarities in decreasing order per row.
    indices : ndarray of int64 (P, k)
        Gallery rows of those scores.
    """
    p, g, rows, k = _check(probes, gallery, k, chunk, rows)
    path = comparator_metric(comparator)
    if path == "generic":
        return top_k_numpy(comparator, p, g, k, min(int(chunk), 256), gallery_chunk, rows)
    n = len(g) if rows is None else len(rows)
    if rescore and _first_candidates(k, n) >= DENSE_SHARE * n:  # small gallery: scoring every row is cheaper
        return top_k_numpy(comparator, p, g, k, min(int(chunk), 256), gallery_chunk, rows)
    index = _Index(path, g, rows)
    if rescore:
        return _top_k_rescored(comparator, index, p, g, k, int(chunk), gallery_chunk)
    scores, idx = index.search(p, k, int(chunk))
    _check_declared(comparator, path, p, g, scores, idx)
    return scores, idx


def _first_candidates(k: int, n: int) -> int:
    """FAISS candidates re-scored per probe in the first round: k plus a margin."""
    return min(n, k + max(16, k // 4))


def _rescore(comparator: Any, p: np.ndarray, g: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Comparator scores of probe i with its candidate rows cand[i, :], (P, K) float64.

    One ``pairwise`` call per probe (a 1 x K block): 6x faster than ``paired`` on gathered pairs.
    """
    out = np.empty(cand.shape, dtype=np.float64)
    for i in range(len(p)):
        out[i] = np.asarray(comparator.pairwise(p[i : i + 1], g[cand[i]]), dtype=np.float64)[0]
    return out


def _top_k_rescored(comparator: Any, index: _Index, p: np.ndarray, g: np.ndarray, k: int, chunk: int,
                    gallery_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS candidates re-scored by the comparator, certified complete (module notes), else widened."""
    tol = faiss_tolerance(index.path, g.shape[1])
    scores = np.empty((len(p), k), dtype=np.float64)
    idx = np.empty((len(p), k), dtype=np.int64)
    todo = np.arange(len(p))
    kk = _first_candidates(k, index.n)
    while todo.size:
        failed = []
        for s in range(0, len(todo), chunk):
            q = todo[s : s + chunk]
            f, cand = index.search(p[q], kk, chunk)
            exact = _rescore(comparator, p[q], g, cand)
            if np.abs(exact - f).max() > tol:
                raise ParameterError(f"{type(comparator).__name__} declares {METRIC_ATTRIBUTE} = {index.path!r}, but "
                                     f"its scores differ from that metric's by {np.abs(exact - f).max():.3g}")
            es, ei = _sort_rows(exact, cand)
            ok = np.full(len(q), kk >= index.n) | (es[:, k - 1] > f[:, -1] + tol)
            scores[q[ok]], idx[q[ok]] = es[ok, :k], ei[ok, :k]
            failed.append(q[~ok])
        todo = np.concatenate(failed)
        kk = min(index.n, 4 * kk)
        if todo.size and kk < index.n and kk > max(16 * k, 4096):
            scores[todo], idx[todo] = top_k_numpy(comparator, p[todo], g, k, min(chunk, 256), gallery_chunk,
                                                  index.rows)
            break
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
