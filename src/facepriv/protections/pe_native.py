"""Compiled path of the PE-MIU comparator: the C source below, built with the system C compiler.

The all-vs-all PE-MIU score matrix needs one small assignment problem per pair. Pure numpy (see
:mod:`facepriv.protections.lsa_batch`) is exact but slow, so at first use this module compiles the
C source below (same algorithm and tie-breaking as ``scipy.optimize.linear_sum_assignment``;
no ``-ffast-math``, so the arithmetic is SciPy's) into the cache folder (``$FACEPRIV_CACHE`` or
``~/.cache/facepriv``), keyed by the source hash, and loads it with ctypes. No compiler, a failed
build or ``FACEPRIV_NO_NATIVE=1`` -> :func:`load` returns None and callers use the numpy path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

C_SOURCE = r"""
/* PE-MIU all-pairs scores: per pair, Euclidean block costs from a Gram matrix, minimum-cost block
 * assignment (the shortest augmenting path algorithm of scipy.optimize.linear_sum_assignment,
 * Crouse 2016, with SciPy's order of operations and tie-breaking), then the cosine of the
 * re-ordered templates. Written for facepriv; compiled at first use (see pe_native.py). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Solve one square problem of size n; cost row-major; writes col4row. Returns 0 on success. */
static int lsa(int64_t n, const double *cost, int64_t *col4row, double *u, double *v, double *spc,
               int64_t *path, int64_t *row4col, char *SR, char *SC, int64_t *rem)
{
    for (int64_t i = 0; i < n; i++) { u[i] = 0; v[i] = 0; col4row[i] = -1; row4col[i] = -1; }
    for (int64_t cur = 0; cur < n; cur++) {
        double minVal = 0;
        int64_t nrem = n, i = cur, sink = -1;
        for (int64_t it = 0; it < n; it++) {
            rem[it] = n - it - 1; SR[it] = 0; SC[it] = 0; spc[it] = INFINITY; path[it] = -1;
        }
        while (sink == -1) {
            int64_t index = -1;
            double lowest = INFINITY;
            SR[i] = 1;
            for (int64_t it = 0; it < nrem; it++) {
                int64_t j = rem[it];
                double r = minVal + cost[i * n + j] - u[i] - v[j];
                if (r < spc[j]) { path[j] = i; spc[j] = r; }
                if (spc[j] < lowest || (spc[j] == lowest && row4col[j] == -1)) { lowest = spc[j]; index = it; }
            }
            minVal = lowest;
            if (minVal == INFINITY || index < 0) return -1;
            int64_t j = rem[index];
            if (row4col[j] == -1) sink = j; else i = row4col[j];
            SC[j] = 1;
            rem[index] = rem[--nrem];
        }
        u[cur] += minVal;
        for (int64_t r = 0; r < n; r++)
            if (SR[r] && r != cur) u[r] += minVal - spc[col4row[r]];
        for (int64_t j = 0; j < n; j++)
            if (SC[j]) v[j] -= minVal - spc[j];
        int64_t j = sink;
        for (;;) {
            int64_t r = path[j];
            row4col[j] = r;
            int64_t t = col4row[r]; col4row[r] = j; j = t;
            if (r == cur) break;
        }
    }
    return 0;
}

/* Shortcut: when every row's minimum is clearly below the rest of its row (relative margin
 * 1e-9) and the row minima lie in distinct columns, that assignment is the unique optimum, so any
 * exact solver (SciPy's included) returns it. Returns 1 and fills col4row, else 0. */
static int rowmin_assignment(int64_t n, const double *cost, int64_t *col4row, char *used)
{
    for (int64_t j = 0; j < n; j++) used[j] = 0;
    for (int64_t i = 0; i < n; i++) {
        const double *c = cost + i * n;
        int64_t best = 0;
        for (int64_t j = 1; j < n; j++) if (c[j] < c[best]) best = j;
        double margin = 1e-9 * (fabs(c[best]) + 1e-300);
        for (int64_t j = 0; j < n; j++) if (j != best && c[j] - c[best] <= margin) return 0;
        if (used[best]) return 0;
        used[best] = 1;
        col4row[i] = best;
    }
    return 1;
}

/* Scores of ca x cb template pairs.
 * G: (ca*nb_, cb*nb_) row-major Gram of blocks, G[(p*nb_+i), (q*nb_+j)] = a_p,i . b_q,j
 * sqa: (ca*nb_) squared block norms of a; sqb: (cb*nb_) of b; na, nb: template norms.
 * out: (ca, cb). col_out: optional (ca, cb, nb_) assignments (NULL to skip). */
int pemiu_scores(const double *G, const double *sqa, const double *sqb, const double *na,
                 const double *nb, int64_t ca, int64_t cb, int64_t nblk, double *out, int64_t *col_out)
{
    int failed = 0;
    #pragma omp parallel reduction(|:failed)
    {
        int64_t n = nblk;
        double *cost = malloc(sizeof(double) * n * n);
        double *u = malloc(sizeof(double) * n), *v = malloc(sizeof(double) * n);
        double *spc = malloc(sizeof(double) * n);
        int64_t *path = malloc(sizeof(int64_t) * n), *row4col = malloc(sizeof(int64_t) * n);
        int64_t *col4row = malloc(sizeof(int64_t) * n), *rem = malloc(sizeof(int64_t) * n);
        char *SR = malloc(n), *SC = malloc(n);
        int64_t ld = cb * n;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < ca; p++) {
            for (int64_t q = 0; q < cb; q++) {
                for (int64_t i = 0; i < n; i++) {
                    const double *g = G + (p * n + i) * ld + q * n;
                    for (int64_t j = 0; j < n; j++) {
                        double d2 = sqa[p * n + i] + sqb[q * n + j] - 2.0 * g[j];
                        cost[i * n + j] = sqrt(d2 > 0 ? d2 : 0.0);
                    }
                }
                if (!rowmin_assignment(n, cost, col4row, SR) &&
                    lsa(n, cost, col4row, u, v, spc, path, row4col, SR, SC, rem) != 0) { failed = 1; continue; }
                double s = 0;
                for (int64_t i = 0; i < n; i++) s += G[(p * n + i) * ld + q * n + col4row[i]];
                double den = na[p] * nb[q];
                out[p * cb + q] = den > 0 ? s / den : 0.0;
                if (col_out)
                    for (int64_t i = 0; i < n; i++) col_out[(p * cb + q) * n + i] = col4row[i];
            }
        }
        free(cost); free(u); free(v); free(spc); free(path); free(row4col); free(col4row); free(rem);
        free(SR); free(SC);
    }
    return failed ? -1 : 0;
}

/* Assignment of a batch of (n x n) cost matrices (used to test the solver against SciPy). */
int lsa_batch(const double *cost, int64_t count, int64_t n, int64_t *col_out)
{
    double *u = malloc(sizeof(double) * n), *v = malloc(sizeof(double) * n);
    double *spc = malloc(sizeof(double) * n);
    int64_t *path = malloc(sizeof(int64_t) * n), *row4col = malloc(sizeof(int64_t) * n);
    int64_t *rem = malloc(sizeof(int64_t) * n);
    char *SR = malloc(n), *SC = malloc(n);
    int failed = 0;
    for (int64_t k = 0; k < count && !failed; k++)
        failed = lsa(n, cost + k * n * n, col_out + k * n, u, v, spc, path, row4col, SR, SC, rem) != 0;
    free(u); free(v); free(spc); free(path); free(row4col); free(rem); free(SR); free(SC);
    return failed ? -1 : 0;
}

#ifdef _OPENMP
#include <omp.h>
void set_threads(int t) { omp_set_num_threads(t > 0 ? t : 1); }
int has_openmp(void) { return 1; }
#else
void set_threads(int t) { (void)t; }
int has_openmp(void) { return 0; }
#endif
"""

_lib: ctypes.CDLL | None = None
_tried = False


def _cache_dir() -> Path:
    return Path(os.environ.get("FACEPRIV_CACHE", Path.home() / ".cache" / "facepriv")) / "native"


def _build(out: Path) -> bool:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        log.info("no C compiler found; PE-MIU comparator uses the numpy path")
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "pemiu_lsa.c"
        src.write_text(C_SOURCE, encoding="utf-8")
        so = Path(tmp) / out.name
        for extra in (["-fopenmp"], []):
            cmd = [cc, "-O2", "-shared", "-fPIC", *extra, "-o", str(so), str(src), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode == 0:
                os.replace(so, out)
                return True
        log.warning("building the PE-MIU native comparator failed (%s); using the numpy path", res.stderr.strip()[:300])
    return False


def load() -> ctypes.CDLL | None:
    """The compiled library, building it on first use; None when unavailable."""
    global _lib, _tried
    if os.environ.get("FACEPRIV_NO_NATIVE", "") not in ("", "0"):
        return None
    if _tried:
        return _lib
    _tried = True
    key = hashlib.sha256(C_SOURCE.encode()).hexdigest()[:16]
    path = _cache_dir() / f"pemiu_lsa_{key}.so"
    try:
        if not path.is_file() and not _build(path):
            return None
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        log.warning("loading the PE-MIU native comparator failed (%s); using the numpy path", exc)
        return None
    dp = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
    ip = np.ctypeslib.ndpointer(dtype=np.int64, flags="C_CONTIGUOUS")
    i64 = ctypes.c_int64
    lib.pemiu_scores.argtypes = [dp, dp, dp, dp, dp, i64, i64, i64, dp, ctypes.c_void_p]
    lib.pemiu_scores.restype = ctypes.c_int
    lib.lsa_batch.argtypes = [dp, i64, i64, ip]
    lib.lsa_batch.restype = ctypes.c_int
    lib.set_threads.argtypes = [ctypes.c_int]
    lib.set_threads.restype = None
    _lib = lib
    return lib


def lsa_batch(cost: np.ndarray) -> np.ndarray | None:
    """Assignments of a batch (N, B, B) with the compiled solver; None when unavailable."""
    lib = load()
    if lib is None:
        return None
    c = np.ascontiguousarray(cost, dtype=np.float64)
    out = np.empty(c.shape[:2], dtype=np.int64)
    if lib.lsa_batch(c, c.shape[0], c.shape[1], out) != 0:
        raise ValueError("assignment failed: cost matrices must be finite")
    return out


def pemiu_scores(
    g: np.ndarray, sqa: np.ndarray, sqb: np.ndarray, na: np.ndarray, nb: np.ndarray, nblk: int, threads: int = 1
) -> np.ndarray | None:
    """Score matrix (ca, cb) from a block Gram matrix; None when the library is unavailable."""
    lib = load()
    if lib is None:
        return None
    ca, cb = len(na), len(nb)
    out = np.empty((ca, cb), dtype=np.float64)
    lib.set_threads(int(threads))
    rc = lib.pemiu_scores(
        np.ascontiguousarray(g, dtype=np.float64),
        np.ascontiguousarray(sqa, dtype=np.float64),
        np.ascontiguousarray(sqb, dtype=np.float64),
        np.ascontiguousarray(na, dtype=np.float64),
        np.ascontiguousarray(nb, dtype=np.float64),
        ca, cb, nblk, out, None,
    )
    if rc != 0:
        raise ValueError("PE-MIU assignment failed: templates must be finite")
    return out
