"""Numba path of the PE-MIU comparator: the fast path where no C compiler is available.

:mod:`pe_native` compiles ``pemiu_native/pemiu.c`` at first use; a slim container image or Windows may have
no compiler. Numba (a PyPI wheel, no compiler needed) JIT-compiles the functions below instead.
Per pair: the B x B Euclidean block costs from dot products (the Gram form of the numpy path),
then the assignment, then the cosine of the re-ordered templates. The assignment takes a shortcut
when each row's minimum is clearly (relative margin 1e-9) below the rest of its row and the minima
fall in distinct columns (then that assignment is the unique optimum, and SciPy returns it);
every other pair runs the C kernel's portable solver (:func:`jv_unique`: column reduction, then
Dijkstra shortest augmenting paths) whose optimum is certified unique, and pairs it cannot certify
(ties, near ties) run a port of SciPy's own algorithm (Crouse's shortest augmenting path, the same
order of operations and tie-breaking as ``scipy.optimize.linear_sum_assignment``), so the scores
equal the reference's, ties included. Rows of the score matrix run in parallel (``prange``).

``FACEPRIV_NO_NUMBA=1`` disables this path (then the numpy path runs).
"""

from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger(__name__)

try:  # this module is imported lazily (only when the comparator needs it): numba takes ~0.5 s to import
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is a declared dependency
    numba = None

# Kernels at module level (not in a closure) so that Numba's on-disk cache (cache=True) applies:
# compiled once (~10 s), then loaded in every later process.
if numba is not None:

    @njit(cache=True, nogil=True)
    def augment(pred, row4col, col4row, sink, root):
        """Flip the matching along the augmenting path that ends at the free column ``sink``
        (``pred``: the row each column was reached from) back to the free row ``root``."""
        j = sink
        while True:
            i = pred[j]
            row4col[j] = i
            prev = col4row[i]
            col4row[i] = j
            j = prev
            if i == root:
                break

    @njit(cache=True, nogil=True)
    def sap(c, col4row, row4col, u, v, spc, path, sr, sc, rem, cur):
        """One shortest augmenting path from free row cur (SciPy's steps, any feasible duals)."""
        n = c.shape[0]
        for j in range(n):
            spc[j] = np.inf
            path[j] = -1
            sr[j] = False
            sc[j] = False
            rem[j] = n - 1 - j
        cnt = n
        i = cur
        min_val = 0.0
        sink = -1
        while sink == -1:
            sr[i] = True
            lowest = np.inf
            index = -1
            for it in range(cnt):
                j = rem[it]
                r = min_val + c[i, j] - u[i] - v[j]
                if r < spc[j]:
                    path[j] = i
                    spc[j] = r
                if spc[j] < lowest or (spc[j] == lowest and row4col[j] == -1):
                    lowest = spc[j]
                    index = it
            min_val = lowest
            if min_val == np.inf:
                return False
            j = rem[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            sc[j] = True
            cnt -= 1
            rem[index] = rem[cnt]
        u[cur] += min_val
        for i in range(n):
            if sr[i] and i != cur:
                u[i] += min_val - spc[col4row[i]]
        for j in range(n):
            if sc[j]:
                v[j] -= min_val - spc[j]
        augment(path, row4col, col4row, sink, cur)
        return True

    @njit(cache=True, nogil=True)
    def lsa(c, col4row, row4col, u, v, spc, path, sr, sc, rem):
        """SciPy's algorithm: zero duals, every row free, rows augmented in order. False: failed."""
        n = c.shape[0]
        for j in range(n):
            row4col[j] = -1
            v[j] = 0.0
            col4row[j] = -1
            u[j] = 0.0
        for cur in range(n):
            if not sap(c, col4row, row4col, u, v, spc, path, sr, sc, rem, cur):
                return False
        return True

    @njit(cache=True, nogil=True)
    def jv_unique(c, col4row, row4col, v, key, dsc, pred, scan):
        """An optimal assignment (column reduction, then Dijkstra shortest augmenting paths on
        reduced costs, row duals implicit: the C kernel's portable solver), and whether it is
        certified the unique optimum: final reduced costs >= -eps/(4n) and no alternating cycle of
        tight edges (reduced cost <= eps, eps = 1e-9 x the largest cost). Then any other assignment
        costs more than 0.75 eps extra, far above rounding, so SciPy returns the same one.
        1: certified, 0: not certified, -1: failed. Needs n <= 64 (columns kept in 64-bit masks)."""
        n = c.shape[0]
        cmax = 0.0
        for j in range(n):
            v[j] = c[0, j]
            pred[j] = 0
        for i in range(n):
            for j in range(n):
                x = c[i, j]
                if abs(x) > cmax:
                    cmax = abs(x)
                if x < v[j]:
                    v[j] = x
                    pred[j] = i
        for i in range(n):
            col4row[i] = -1
        for j in range(n):  # a column goes to its first minimal row if that row is free
            i = pred[j]
            row4col[j] = -1
            if col4row[i] < 0:
                col4row[i] = j
                row4col[j] = i
        for f in range(n):
            if col4row[f] >= 0:
                continue
            for j in range(n):
                key[j] = c[f, j] - v[j]
                pred[j] = f
            ns = 0
            sink = -1
            mu = 0.0
            while sink < 0:
                jm = -1
                mu = np.inf
                for j in range(n):  # key NaN: scanned (NaN never compares less)
                    if key[j] < mu:
                        mu = key[j]
                        jm = j
                if jm < 0:
                    return -1  # only with non-finite costs
                dsc[jm] = mu
                key[jm] = np.nan
                scan[ns] = jm
                ns += 1
                i = row4col[jm]
                if i < 0:
                    sink = jm
                    break
                h = c[i, jm] - v[jm] - mu
                for j in range(n):  # selects without branches (NaN key: scanned, never updated)
                    cr = c[i, j] - v[j] - h
                    kj = key[j]
                    upd = -np.int64(cr < kj)
                    pred[j] ^= (pred[j] ^ i) & upd
                    key[j] = cr if cr < kj else kj
            for t in range(ns - 1):  # dual update: reduced costs stay >= 0, tree edges tight
                j = scan[t]
                v[j] += dsc[j] - mu
            augment(pred, row4col, col4row, sink, f)
        eps = 1e-9 * cmax + 1e-300
        adj = np.zeros(n, np.uint64)
        alive = np.uint64(0)
        one = np.uint64(1)
        for i in range(n):
            j0 = col4row[i]
            ui = c[i, j0] - v[j0]
            m = np.uint64(0)
            for j in range(n):
                r = c[i, j] - v[j] - ui
                if r < -eps / (4 * n):
                    return 0
                if j != j0 and r <= eps:
                    m |= one << np.uint64(j)
            adj[j0] = m
            if m:
                alive |= one << np.uint64(j0)
        while alive:  # peel columns with no edge into the kept set: left over = on or before a cycle
            keep = np.uint64(0)
            for j in range(n):
                if (alive >> np.uint64(j)) & one and adj[j] & alive:
                    keep |= one << np.uint64(j)
            if keep == alive:
                return 0
            alive = keep
        return 1

    @njit(cache=True, nogil=True)
    def assign(c, col, seen, ws_i, ws_f, ws_b):
        """Assignment of c into col: the certified shortcut, else SciPy's algorithm."""
        n = c.shape[0]
        for j in range(n):
            seen[j] = False
        easy = True
        for i in range(n):
            best = 0
            for j in range(1, n):
                if c[i, j] < c[i, best]:
                    best = j
            margin = 1e-9 * abs(c[i, best])
            for j in range(n):
                if j != best and c[i, j] - c[i, best] <= margin:
                    easy = False
            if seen[best]:
                easy = False
            seen[best] = True
            col[i] = best
            if not easy:
                break
        if easy:
            return True
        if n <= 64:
            r = jv_unique(c, col, ws_i[0], ws_f[0], ws_f[1], ws_f[2], ws_i[1], ws_i[2])
            if r == 1:
                return True
        # ties or near ties (or B > 64): SciPy's algorithm from scratch, SciPy's tie-breaking
        return lsa(c, col, ws_i[0], ws_f[0], ws_f[1], ws_f[2], ws_i[1], ws_b[0], ws_b[1], ws_i[2])

    @njit(cache=True, nogil=True)
    def block_gram(ap, btq, g):
        """g = ap @ btq: ap (B, K) blocks of one template, btq (K, B) of the other, transposed.
        Each entry is summed over t in order; the inner loop over j (independent sums) vectorises,
        and 4 rows per pass share each load of a btq row (measured: 1.0 us per pair at B = 16,
        K = 32, against 2.0 one row at a time)."""
        n, k = ap.shape
        i = 0
        while i + 4 <= n:
            g0, g1, g2, g3 = g[i], g[i + 1], g[i + 2], g[i + 3]
            a0, a1, a2, a3 = ap[i], ap[i + 1], ap[i + 2], ap[i + 3]
            for j in range(n):
                g0[j] = 0.0
                g1[j] = 0.0
                g2[j] = 0.0
                g3[j] = 0.0
            for t in range(k):
                x0, x1, x2, x3 = a0[t], a1[t], a2[t], a3[t]
                row = btq[t]
                for j in range(n):
                    r = row[j]
                    g0[j] += x0 * r
                    g1[j] += x1 * r
                    g2[j] += x2 * r
                    g3[j] += x3 * r
            i += 4
        while i < n:
            gi, ai = g[i], ap[i]
            for j in range(n):
                gi[j] = 0.0
            for t in range(k):
                x, row = ai[t], btq[t]
                for j in range(n):
                    gi[j] += x * row[j]
            i += 1

    @njit(cache=True, parallel=True)
    def pairwise(a, bt, sqa, sqb, norma, normb, out):
        """All-pairs scores: a (Na, B, K), bt (Nb, K, B) (b's blocks side by side); returns failed pairs."""
        na, n, k = a.shape
        nb = bt.shape[0]
        failed = 0
        for p in prange(na):
            g = np.empty((n, n))
            c = np.empty((n, n))
            col = np.empty(n, np.int64)
            seen = np.empty(n, np.bool_)
            ws_i = np.empty((3, n), np.int64)
            ws_f = np.empty((3, n))
            ws_b = np.empty((2, n), np.bool_)
            for q in range(nb):
                block_gram(a[p], bt[q], g)
                for i in range(n):
                    for j in range(n):
                        d2 = sqa[p, i] + sqb[q, j] - 2.0 * g[i, j]
                        c[i, j] = np.sqrt(d2) if d2 > 0.0 else 0.0
                if not assign(c, col, seen, ws_i, ws_f, ws_b):
                    failed += 1
                    out[p, q] = np.nan
                    continue
                s = 0.0
                for i in range(n):
                    s += g[i, col[i]]
                den = norma[p] * normb[q]
                out[p, q] = s / den if den > 0 else 0.0
        return failed

    @njit(cache=True, parallel=True)
    def lsa_many(cost, out):
        """SciPy's assignment of each (B, B) matrix of cost (N, B, B); returns failed problems."""
        count, n, _ = cost.shape
        failed = 0
        for t in prange(count):
            seen = np.empty(n, np.bool_)
            ws_i = np.empty((3, n), np.int64)
            ws_f = np.empty((3, n))
            ws_b = np.empty((2, n), np.bool_)
            col = np.empty(n, np.int64)
            if not assign(cost[t], col, seen, ws_i, ws_f, ws_b):
                failed += 1
            out[t] = col
        return failed


def load():
    """The JIT-compiled kernels, or None when Numba is missing or ``FACEPRIV_NO_NUMBA=1``.

    A tuple (pairwise, lsa_many, get_num_threads, set_num_threads, jv_unique).
    """
    if os.environ.get("FACEPRIV_NO_NUMBA", "") not in ("", "0"):
        return None
    if numba is None:
        return None
    return pairwise, lsa_many, numba.get_num_threads, numba.set_num_threads, jv_unique


def _prepared(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"templates must have shape (N, B, K), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("PE-MIU comparison failed: templates must be finite")
    sq = np.einsum("pik,pik->pi", x, x)
    return x, sq, np.sqrt(sq.sum(1))


def pemiu_pairwise(a: np.ndarray, b: np.ndarray, threads: int = 1) -> np.ndarray | None:
    """All-pairs PE-MIU scores of block-shaped templates (Na, B, K) x (Nb, B, K); None without Numba.

    Parameters
    ----------
    a, b : ndarray
        Templates cut into B blocks of size K.
    threads : int
        Numba threads (at most Numba's configured maximum).

    Returns
    -------
    ndarray, shape (Na, Nb), or None
    """
    kern = load()
    if kern is None:
        return None
    pairwise, _, get_threads, set_threads = kern[:4]
    xa, sqa, norma = _prepared(a)
    xb, sqb, normb = _prepared(b)
    if xa.shape[1:] != xb.shape[1:]:
        raise ValueError(f"block shapes differ: {xa.shape[1:]} vs {xb.shape[1:]}")
    out = np.empty((len(xa), len(xb)))
    from numba import config

    before = get_threads()
    set_threads(max(1, min(int(threads), config.NUMBA_NUM_THREADS)))
    try:
        failed = pairwise(xa, np.ascontiguousarray(xb.transpose(0, 2, 1)), sqa, sqb, norma, normb, out)
    finally:
        set_threads(before)
    if failed:
        raise ValueError("PE-MIU assignment failed: templates must be finite")
    return out


def lsa_batch(cost: np.ndarray) -> np.ndarray | None:
    """SciPy's assignment of each (B, B) matrix of a batch (N, B, B); None without Numba."""
    kern = load()
    if kern is None:
        return None
    c = np.ascontiguousarray(cost, dtype=np.float64)
    if c.ndim != 3 or c.shape[1] != c.shape[2]:
        raise ValueError(f"cost must have shape (N, B, B), got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("assignment failed: cost matrices must be finite")
    out = np.empty(c.shape[:2], dtype=np.int64)
    if len(c) and c.shape[1] and kern[1](c, out):
        raise ValueError("assignment failed: cost matrices must be finite")
    return out
