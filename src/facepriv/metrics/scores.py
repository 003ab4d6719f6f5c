"""Genuine and impostor comparison scores of an embeddings set (all pairs, or listed pairs).

Scores are similarities from the set's own comparator (higher = same person): cosine for
unprotected templates, the protection's comparator (e.g. PE-MIU) for protected ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.progress import progress

# Upper bound on the entries of one score block (float64): 8M entries = 64 MB.
_BLOCK_ENTRIES = 1 << 23
# Rows per strip of a diagonal block for comparators that score each pair on its own.
_STRIP_ROWS = 32


@dataclass(frozen=True)
class Scores:
    """Genuine and impostor comparison scores (similarities, float64)."""

    genuine: np.ndarray
    impostor: np.ndarray

    def __iter__(self):  # allows ``gen, imp = scores_all_pairs(...)``
        return iter((self.genuine, self.impostor))


def _identity_codes(identity: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(identity).astype(str), return_inverse=True)[1].ravel()


def scores_all_pairs(
    es: EmbeddingSet | tuple[np.ndarray, np.ndarray],
    comparator: Any = None,
    block_rows: int | None = None,
) -> Scores:
    """Scores of all unordered pairs of templates (upper triangle), split by identity.

    Parameters
    ----------
    es : EmbeddingSet or (embeddings (N, D), identity (N,))
    comparator : Comparator, optional
        Object with ``pairwise(a, b)``. Default: the comparator recorded in ``es``
        (:func:`facepriv.protections.base.comparator_for`), cosine for a bare tuple.
    block_rows : int, optional
        Rows per block; default keeps one block under ~64 MB.

    Returns
    -------
    Scores
        ``genuine`` (same identity) and ``impostor`` (different identities) in float64.
    """
    from facepriv.protections.base import CosineComparator, comparator_for

    if isinstance(es, EmbeddingSet):
        emb, identity = es.embeddings, es.identity
        comp = comparator if comparator is not None else comparator_for(es)
    else:
        emb, identity = es
        emb = np.asarray(emb)
        comp = comparator if comparator is not None else CosineComparator()
    n = len(emb)
    if emb.ndim != 2 or len(identity) != n:
        raise ParameterError(f"need embeddings (N, D) and N identities, got {emb.shape} and {len(identity)}")
    if n < 2:
        raise ParameterError(f"need at least 2 templates to form a pair, got {n}")
    codes = _identity_codes(identity)
    counts = np.bincount(codes)
    n_gen = int((counts * (counts - 1) // 2).sum())
    n_imp = n * (n - 1) // 2 - n_gen
    genuine = np.empty(n_gen, dtype=np.float64)
    impostor = np.empty(n_imp, dtype=np.float64)
    rows = block_rows or max(1, min(n, _BLOCK_ENTRIES // n, 512))
    # A comparator that solves each pair on its own (PE-MIU: an assignment problem per pair) would
    # spend up to rows / n of its time on the lower-left of the diagonal blocks (half of them at
    # n ~ 1000): there the square is compared in strips, so only thin triangles are wasted. Its
    # scores do not depend on the blocking; matrix-product comparators keep one call per block.
    strip = _STRIP_ROWS if getattr(comp, "per_pair", False) else rows
    g = i = 0
    for r0 in progress(range(0, n - 1, rows), desc="scoring pairs", unit="block"):
        r1 = min(n - 1, r0 + rows)
        if strip < r1 - r0:
            block = np.empty((r1 - r0, n - r0))
            block[:, r1 - r0 :] = comp.pairwise(emb[r0:r1], emb[r1:])
            for s0 in range(r0, r1, strip):  # the square [r0, r1)^2, upper part, strip by strip
                s1 = min(r1, s0 + strip)
                block[s0 - r0 : s1 - r0, s0 - r0 : r1 - r0] = comp.pairwise(emb[s0:s1], emb[s0:r1])
        else:
            block = np.asarray(comp.pairwise(emb[r0:r1], emb[r0:]), dtype=np.float64)
        # keep column c > row r only (upper triangle); block column j is template r0 + j
        upper = np.arange(r0, r1)[:, None] < np.arange(r0, n)[None, :]
        vals = block[upper]
        same = (codes[r0:r1, None] == codes[None, r0:])[upper]
        ng, ni = int(same.sum()), int((~same).sum())
        genuine[g : g + ng] = vals[same]
        impostor[i : i + ni] = vals[~same]
        g, i = g + ng, i + ni
    return Scores(genuine, impostor)


def scores_for_pairs(
    es: EmbeddingSet,
    id1: np.ndarray,
    id2: np.ndarray,
    comparator: Any = None,
    block: int = 65536,
) -> np.ndarray:
    """Scores of listed pairs of sample ids (e.g. a verification protocol), shape (M,).

    Raises
    ------
    ParameterError
        If a pair names a sample id that is not in ``es`` (the message says how many).
    """
    from facepriv.protections.base import comparator_for

    comp = comparator if comparator is not None else comparator_for(es)
    index = {str(s): k for k, s in enumerate(es.ids)}
    missing = sorted({str(s) for s in (*id1, *id2)} - index.keys())
    if missing:
        raise ParameterError(
            f"{len(missing)} sample id(s) of the pairs are not in the embeddings, e.g. {missing[:3]}"
        )
    a = np.array([index[str(s)] for s in id1], dtype=np.int64)
    b = np.array([index[str(s)] for s in id2], dtype=np.int64)
    out = np.empty(len(a), dtype=np.float64)
    for s in range(0, len(a), block):
        out[s : s + block] = comp.paired(es.embeddings[a[s : s + block]], es.embeddings[b[s : s + block]])
    return out
