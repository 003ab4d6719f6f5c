"""Compiled path of the PE-MIU comparator: the C source below, built with the system C compiler.

The all-vs-all PE-MIU score matrix needs one small assignment problem per pair. Pure numpy (see
:mod:`facepriv.protections.lsa_batch`) is exact but slow, so at first use this module compiles the
C source below into the cache folder (``$FACEPRIV_CACHE`` or ``~/.cache/facepriv``) and loads it
with ctypes. The kernel computes the block distances itself and solves each assignment with a fast
solver whose optimum is certified unique, falling back to a port of SciPy's own algorithm (same
tie-breaking as ``scipy.optimize.linear_sum_assignment``) when it is not; see the comment at the top
of :data:`C_SOURCE`. No ``-ffast-math``. On Linux it is built with ``-march=native`` (AVX-512 path
when available); the file name includes a hash of the source, the compiler, the flags and the CPU
(model and feature flags), so a cache folder shared between machines never loads a library built
for another CPU. No compiler, a failed build or ``FACEPRIV_NO_NATIVE=1`` -> :func:`load` returns
None and callers use the numpy path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

C_SOURCE = r"""
/* PE-MIU all-pairs scores. Per pair: Euclidean block costs from dot products, the minimum-cost
 * block assignment, the cosine of the re-ordered templates. Written for facepriv; compiled at
 * first use (see pe_native.py).
 *
 * The scores depend on which assignment is chosen when several have the same cost, and the
 * reference is scipy.optimize.linear_sum_assignment. Hence two solvers:
 * - a fast one (Jonker-Volgenant style: column reduction, then Dijkstra shortest augmenting paths
 *   on reduced costs) that ends with a certificate, checked on the final dual values: all reduced
 *   costs >= -eps/(4n) and no alternating cycle of tight edges (reduced cost <= eps). Then every
 *   other assignment costs more than 0.75 eps extra (eps = 1e-9 x the largest cost), far above
 *   rounding, so any exact solver, SciPy's included, returns the same assignment.
 * - lsa(): SciPy's shortest augmenting path algorithm (Crouse 2016) with SciPy's order of
 *   operations and tie-breaking, used when the certificate fails (ties or near ties).
 * jv_unique() is the portable fast solver; with AVX-512 and B <= 16 blocks the slot_*() functions
 * below run the same algorithm on several problems at once. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FASTN 64 /* jv_unique keeps the tight-edge graph in 64-bit masks */

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

typedef struct {
    double v[FASTN], key[FASTN], dsc[FASTN];
    int64_t pred[FASTN];
    int row4col[FASTN], scan[FASTN];
    uint64_t adj[FASTN];
} jv_ws;

/* Minimum-cost assignment of the n x n matrix c (n <= FASTN) into col4row.
 * Returns 1 when the optimum is certified unique (margin eps), 0 when not, -1 on failure. */
static inline __attribute__((always_inline)) int
jv_unique(const int n, const double *restrict c, int *restrict col4row, const double eps, jv_ws *restrict w)
{
    double *restrict v = w->v, *restrict key = w->key, *restrict dsc = w->dsc;
    int64_t *restrict arg = w->pred;
    int *restrict row4col = w->row4col, *restrict scan = w->scan;
    /* column reduction: v = column minima; a column goes to its first minimal row if that is free */
    for (int j = 0; j < n; j++) { v[j] = c[j]; arg[j] = 0; }
    for (int i = 1; i < n; i++)
        for (int j = 0; j < n; j++) {
            double x = c[i * n + j];
            arg[j] = x < v[j] ? i : arg[j];
            v[j] = x < v[j] ? x : v[j];
        }
    for (int i = 0; i < n; i++) col4row[i] = -1;
    for (int j = 0; j < n; j++) {
        int i = (int)arg[j];
        row4col[j] = -1;
        if (col4row[i] < 0) { col4row[i] = j; row4col[j] = i; }
    }
    /* each free row: Dijkstra over columns on reduced costs c - u - v (u implicit: a matched row's
     * u makes its own edge tight); key = NaN marks scanned columns (NaN never compares less) */
    int64_t *restrict pred = w->pred;
    for (int f = 0; f < n; f++) {
        if (col4row[f] >= 0) continue;
        const double *cf = c + f * n;
        for (int j = 0; j < n; j++) { key[j] = cf[j] - v[j]; pred[j] = f; }
        int ns = 0, sink;
        double mu;
        for (;;) {
            int jm = -1;
            mu = INFINITY;
            for (int j = 0; j < n; j++) if (key[j] < mu) { mu = key[j]; jm = j; }
            if (jm < 0) return -1; /* only with non-finite costs */
            dsc[jm] = mu;
            key[jm] = NAN;
            scan[ns++] = jm;
            int i = row4col[jm];
            if (i < 0) { sink = jm; break; }
            const double *ci = c + i * n;
            double h = ci[jm] - v[jm] - mu;
            for (int j = 0; j < n; j++) {
                double cr = ci[j] - v[j] - h;
                int upd = cr < key[j];
                pred[j] = upd ? i : pred[j];
                key[j] = upd ? cr : key[j];
            }
        }
        /* dual update keeps every reduced cost >= 0 and makes the tree edges tight */
        for (int t = 0; t < ns - 1; t++) { int j = scan[t]; v[j] += dsc[j] - mu; }
        for (int j = sink;;) {
            int i = (int)pred[j];
            row4col[j] = i;
            int t = col4row[i];
            col4row[i] = j;
            j = t;
            if (i == f) break;
        }
    }
    /* certificate (see the top): graph of tight edges on columns, j0 -> j when the row holding j0
     * has reduced cost <= eps at j; another optimum would be a cycle in it. Peel columns without
     * out-edges; acyclic <=> all peeled. */
    uint64_t *restrict adj = w->adj;
    const double neg = -eps / (4 * n);
    int feasible = 1;
    for (int i = 0; i < n; i++) {
        const double *ci = c + i * n;
        int j0 = col4row[i];
        double ui = ci[j0] - v[j0];
        uint64_t m = 0;
        for (int j = 0; j < n; j++) {
            double r = ci[j] - v[j] - ui;
            m |= (uint64_t)(r <= eps) << j;
            feasible &= r >= neg;
        }
        adj[j0] = m & ~((uint64_t)1 << j0);
    }
    if (!feasible) return 0;
    uint64_t alive = 0;
    for (int j = 0; j < n; j++) if (adj[j]) alive |= (uint64_t)1 << j;
    for (;;) {
        uint64_t keep = 0;
        for (uint64_t s = alive; s; s &= s - 1) {
            int j = __builtin_ctzll(s);
            if (adj[j] & alive) keep |= (uint64_t)1 << j;
        }
        if (keep == alive) break;
        alive = keep;
    }
    return alive == 0;
}

typedef double v4d __attribute__((vector_size(32), aligned(8))); /* GCC/Clang vector extension */

/* Costs of one pair: g = dot products of the blocks (a: n x k rows, bt: k x n, b transposed),
 * c = Euclidean distances sqrt(|a_i|^2 + |b_j|^2 - 2 a_i.b_j); returns the largest cost. With n a
 * multiple of 4 the columns are accumulated as 4-wide vectors in registers (left to itself the
 * compiler vectorised over t, with shuffles and spills). */
static inline __attribute__((always_inline)) double
block_costs(const int n, const int k, const double *restrict a, const double *restrict bt,
            const double *restrict sqa, const double *restrict sqb, double *restrict g, double *restrict c)
{
    for (int i = 0; i < n; i++) {
        double *restrict gi = g + i * n;
        const double *ai = a + i * k;
        if (n % 4 == 0) {
            int j = 0;
            for (; j + 16 <= n; j += 16) { /* four independent accumulators hide the FMA latency */
                v4d x0 = {0, 0, 0, 0}, x1 = x0, x2 = x0, x3 = x0;
                for (int t = 0; t < k; t++) {
                    const double s = ai[t];
                    const v4d *b = (const v4d *)(bt + t * n + j);
                    x0 += s * b[0]; x1 += s * b[1]; x2 += s * b[2]; x3 += s * b[3];
                }
                *(v4d *)(gi + j) = x0; *(v4d *)(gi + j + 4) = x1;
                *(v4d *)(gi + j + 8) = x2; *(v4d *)(gi + j + 12) = x3;
            }
            for (; j < n; j += 4) {
                v4d x0 = {0, 0, 0, 0};
                for (int t = 0; t < k; t++) x0 += ai[t] * *(const v4d *)(bt + t * n + j);
                *(v4d *)(gi + j) = x0;
            }
        } else {
            for (int j = 0; j < n; j++) gi[j] = 0;
            for (int t = 0; t < k; t++) {
                const double s = ai[t], *b = bt + t * n;
                for (int j = 0; j < n; j++) gi[j] += s * b[j];
            }
        }
        for (int j = 0; j < n; j++) {
            double d2 = sqa[i] + sqb[j] - 2.0 * gi[j];
            c[i * n + j] = sqrt(d2 > 0 ? d2 : 0.0);
        }
    }
    double cmax = 0;
    for (int j = 0; j < n * n; j++) cmax = c[j] > cmax ? c[j] : cmax;
    return cmax;
}

/* Workspace of lsa() plus the cost/dot-product buffers of one thread. */
typedef struct {
    double *u, *v, *spc, *g, *c;
    int64_t *path, *row4col, *col4row, *rem;
    char *SR, *SC;
    int *col;
    jv_ws jv;
} ws_t;

static ws_t *ws_new(int64_t n)
{
    ws_t *w = calloc(1, sizeof(ws_t));
    if (!w) return NULL;
    w->u = malloc(sizeof(double) * n); w->v = malloc(sizeof(double) * n);
    w->spc = malloc(sizeof(double) * n);
    w->g = malloc(sizeof(double) * n * n); w->c = malloc(sizeof(double) * n * n);
    w->path = malloc(sizeof(int64_t) * n); w->row4col = malloc(sizeof(int64_t) * n);
    w->col4row = malloc(sizeof(int64_t) * n); w->rem = malloc(sizeof(int64_t) * n);
    w->SR = malloc(n); w->SC = malloc(n);
    w->col = malloc(sizeof(int) * n);
    return w;
}

static void ws_free(ws_t *w)
{
    if (!w) return;
    free(w->u); free(w->v); free(w->spc); free(w->g); free(w->c); free(w->path); free(w->row4col);
    free(w->col4row); free(w->rem); free(w->SR); free(w->SC); free(w->col); free(w);
}

static int ws_ok(const ws_t *w)
{
    return w && w->u && w->v && w->spc && w->g && w->c && w->path && w->row4col && w->col4row && w->rem &&
           w->SR && w->SC && w->col;
}

/* Assignment of one cost matrix into w->col: the certified fast solver, else SciPy's algorithm.
 * Returns 0 (fast), 1 (fallback used) or -1 (failure). */
static inline __attribute__((always_inline)) int
solve(const int n, const double *c, const double cmax, ws_t *w)
{
    if (n <= FASTN) {
        int r = jv_unique(n, c, w->col, 1e-9 * cmax + 1e-300, &w->jv);
        if (r == 1) return 0;
    }
    if (lsa(n, c, w->col4row, w->u, w->v, w->spc, w->path, w->row4col, w->SR, w->SC, w->rem) != 0) return -1;
    for (int i = 0; i < n; i++) w->col[i] = (int)w->col4row[i];
    return 1;
}

/* Scores of rows [p0, p1) of a against all of b, q in tiles that stay in cache. */
static inline __attribute__((always_inline)) int
score_rows(const int n, const int k, const double *A, const double *BT, const double *sqa, const double *sqb,
           const double *na, const double *nb, int64_t p0, int64_t p1, int64_t cb, double *out, ws_t *w,
           int64_t *nfallback)
{
    const int64_t qt = 64;
    for (int64_t q0 = 0; q0 < cb; q0 += qt) {
        int64_t q1 = q0 + qt < cb ? q0 + qt : cb;
        for (int64_t p = p0; p < p1; p++) {
            const double *a = A + p * n * k, *sa = sqa + p * n;
            for (int64_t q = q0; q < q1; q++) {
                double cmax = block_costs(n, k, a, BT + q * n * k, sa, sqb + q * n, w->g, w->c);
                int r = solve(n, w->c, cmax, w);
                if (r < 0) return -1;
                *nfallback += r;
                double s = 0;
                for (int i = 0; i < n; i++) s += w->g[i * n + w->col[i]];
                double den = na[p] * nb[q];
                out[p * cb + q] = den > 0 ? s / den : 0.0;
            }
        }
    }
    return 0;
}

#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_STREAM16 1
/* B <= 16 with AVX-512: the 16 columns of a row fit in two 8-lane registers. One Dijkstra step is
 * a short but strictly serial chain (vector min -> column -> its row -> relax that row), so
 * SLOTS independent problems are solved at once, one step of each in turn, and the out-of-order
 * core overlaps their chains (measured: ~1.5x faster than one at a time). Same algorithm and
 * certificate as jv_unique(). */
#define SLOTS 4

typedef struct {
    double c[256], g[256]; /* costs and dot products, row-major with stride n */
    double v[16];
    int64_t key[16]; /* packed labels, see pack_key() */
    int64_t pred[16];
    int row4col[16], col4row[16];
    int f;
    uint32_t done, freerows;
    double eps;
    int64_t t, p, q; /* problem index (-1 when empty); its pair of templates */
} __attribute__((aligned(64))) slot_t;

/* Where the problems come from: pairs (p, q) of templates (costs computed here) or cost matrices. */
typedef struct {
    int n, k;
    const double *A, *BT, *sqa, *sqb, *na, *nb; /* pairs: rows p0, p0 + 1, ... x columns [q0, q0 + nq) */
    int64_t p0, q0, nq, cb, pi, qi; /* pi, qi: the next pair */
    double *out;
    const double *cost; /* cost matrices (tests); col_out, unique: results */
    int64_t *col_out, *unique;
    int fallback; /* 1: SciPy-order solver when not certified; 0: none (unique[t] = certificate) */
    int64_t nfb;
    int failed;
} source_t;

static inline __m512d ld(const double *p, __mmask8 m) { return _mm512_maskz_loadu_pd(m, p); }

/* sqrt(max(x, 0)) to a few ulp, without the slow vsqrtpd: 14-bit reciprocal square root, one
 * Newton step on 1/sqrt, one on sqrt. Enough for the solver (its certificate has a 1e-9 margin);
 * the SciPy-order fallback recomputes correctly rounded costs (see exact_costs). x is clamped to
 * DBL_MIN so that zero distances give ~1.5e-154, not NaN. */
static inline __m512d fast_sqrt(__m512d x)
{
    x = _mm512_max_pd(x, _mm512_set1_pd(2.2250738585072014e-308));
    __m512d y = _mm512_rsqrt14_pd(x);
    const __m512d half = _mm512_set1_pd(0.5), three_half = _mm512_set1_pd(1.5);
    __m512d hx = _mm512_mul_pd(half, x);
    y = _mm512_mul_pd(y, _mm512_fnmadd_pd(_mm512_mul_pd(hx, y), y, three_half));
    __m512d s = _mm512_mul_pd(x, y);
    return _mm512_fmadd_pd(_mm512_mul_pd(half, y), _mm512_fnmadd_pd(s, s, x), s);
}

static inline __attribute__((always_inline)) double
costs16(const int n, const int k, const double *restrict a, const double *restrict bt,
        const double *restrict sqa, const double *restrict sqb, double *restrict g, double *restrict c)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const __m512d zero = _mm512_setzero_pd(), two = _mm512_set1_pd(2.0);
    const __m512d sb0 = ld(sqb, m0), sb1 = ld(sqb + 8, m1);
    __m512d cmax = zero;
    for (int i = 0; i < n; i += 4) {
        /* four rows of a at a time, accumulators in registers: each load of bt feeds four FMAs;
         * rows past the end repeat the last row (results not stored): no branches in the loop */
        const double *r0 = a + i * k, *r1 = a + (i + 1 < n ? i + 1 : n - 1) * k;
        const double *r2 = a + (i + 2 < n ? i + 2 : n - 1) * k, *r3 = a + (i + 3 < n ? i + 3 : n - 1) * k;
        __m512d x00 = zero, x01 = zero, x10 = zero, x11 = zero, x20 = zero, x21 = zero, x30 = zero, x31 = zero;
        for (int t = 0; t < k; t++) {
            __m512d b0 = ld(bt + t * n, m0), b1 = ld(bt + t * n + 8, m1);
            __m512d s0 = _mm512_set1_pd(r0[t]), s1 = _mm512_set1_pd(r1[t]);
            __m512d s2 = _mm512_set1_pd(r2[t]), s3 = _mm512_set1_pd(r3[t]);
            x00 = _mm512_fmadd_pd(s0, b0, x00);
            x10 = _mm512_fmadd_pd(s1, b0, x10);
            x20 = _mm512_fmadd_pd(s2, b0, x20);
            x30 = _mm512_fmadd_pd(s3, b0, x30);
            if (n > 8) {
                x01 = _mm512_fmadd_pd(s0, b1, x01);
                x11 = _mm512_fmadd_pd(s1, b1, x11);
                x21 = _mm512_fmadd_pd(s2, b1, x21);
                x31 = _mm512_fmadd_pd(s3, b1, x31);
            }
        }
        const __m512d xs[4][2] = {{x00, x01}, {x10, x11}, {x20, x21}, {x30, x31}};
        for (int r = 0; r < 4 && i + r < n; r++) {
            __m512d sa = _mm512_set1_pd(sqa[i + r]);
            __m512d c0 = fast_sqrt(_mm512_fnmadd_pd(two, xs[r][0], _mm512_add_pd(sa, sb0)));
            _mm512_mask_storeu_pd(g + (i + r) * n, m0, xs[r][0]);
            _mm512_mask_storeu_pd(c + (i + r) * n, m0, c0);
            cmax = _mm512_max_pd(cmax, _mm512_maskz_mov_pd(m0, c0));
            if (n > 8) {
                __m512d c1 = fast_sqrt(_mm512_fnmadd_pd(two, xs[r][1], _mm512_add_pd(sa, sb1)));
                _mm512_mask_storeu_pd(g + (i + r) * n + 8, m1, xs[r][1]);
                _mm512_mask_storeu_pd(c + (i + r) * n + 8, m1, c1);
                cmax = _mm512_max_pd(cmax, _mm512_maskz_mov_pd(m1, c1));
            }
        }
    }
    return _mm512_reduce_max_pd(cmax);
}

/* Put problem t into slot S: costs, column reduction (v = column minima; a column goes to its
 * first minimal row if that row is free), list of free rows. */
static inline __attribute__((always_inline)) void
slot_load(const int n, slot_t *restrict S, source_t *restrict src, int64_t t)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const __m512d inf = _mm512_set1_pd(INFINITY);
    double cmax;
    S->t = t;
    if (src->cost) {
        const double *c = src->cost + t * n * n;
        __m512d mx = _mm512_setzero_pd();
        for (int j = 0; j < n * n; j += 8) {
            __m512d x = ld(c + j, n * n - j >= 8 ? 0xFF : (__mmask8)((1u << (n * n - j)) - 1));
            _mm512_storeu_pd(S->c + j, x);
            mx = _mm512_max_pd(mx, _mm512_abs_pd(x));
        }
        cmax = _mm512_reduce_max_pd(mx);
    } else {
        int64_t p = src->pi, q = src->qi;
        if (++src->qi == src->q0 + src->nq) { src->qi = src->q0; src->pi++; }
        S->p = p;
        S->q = q;
        cmax = costs16(n, src->k, src->A + p * n * src->k, src->BT + q * n * src->k, src->sqa + p * n,
                       src->sqb + q * n, S->g, S->c);
    }
    S->eps = 1e-9 * cmax + 1e-300;
    __m512d v0 = inf, v1 = inf;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    for (int i = 0; i < n; i++) {
        __m512d r0 = ld(S->c + i * n, m0), r1 = ld(S->c + i * n + 8, m1);
        __mmask8 l0 = _mm512_cmp_pd_mask(r0, v0, _CMP_LT_OQ), l1 = _mm512_cmp_pd_mask(r1, v1, _CMP_LT_OQ);
        v0 = _mm512_mask_mov_pd(v0, l0, r0);
        v1 = _mm512_mask_mov_pd(v1, l1, r1);
        a0 = _mm512_mask_mov_epi64(a0, l0, _mm512_set1_epi64(i));
        a1 = _mm512_mask_mov_epi64(a1, l1, _mm512_set1_epi64(i));
    }
    _mm512_store_pd(S->v, v0);
    _mm512_store_pd(S->v + 8, v1);
    _mm512_store_si512(S->pred, a0);
    _mm512_store_si512(S->pred + 8, a1);
    /* without branches (their outcome is random): a column goes to its row if the row is free */
    uint32_t taken = 0;
    for (int i = 0; i < n; i++) S->col4row[i] = -1;
    for (int j = 0; j < n; j++) {
        int i = (int)S->pred[j];
        uint32_t fr = ~taken >> i & 1u;
        taken |= 1u << i;
        S->col4row[i] = fr ? j : S->col4row[i];
        S->row4col[j] = fr ? i : -1;
    }
    S->freerows = ~taken & (((uint32_t)m0 | ((uint32_t)m1 << 8)));
}

/* Dijkstra labels are >= 0, so their bit patterns order like the numbers. A label is stored with its
 * column index in the 4 lowest mantissa bits: one integer min over the vector then gives both the
 * least label and its column (labels perturbed by < 16 ulp, far inside the certificate's margin). */
#define KEY_NONE 0x7FFFFFFFFFFFFFFFLL

static inline __m512i pack_key(__m512d x, __m512i lane)
{
    __m512i bits = _mm512_castpd_si512(_mm512_max_pd(x, _mm512_setzero_pd()));
    return _mm512_or_si512(_mm512_andnot_si512(_mm512_set1_epi64(15), bits), lane);
}

static inline __m512d key_label(__m512i k) { return _mm512_castsi512_pd(_mm512_andnot_si512(_mm512_set1_epi64(15), k)); }

/* Start the Dijkstra search from the next free row. */
static inline __attribute__((always_inline)) void slot_start(const int n, slot_t *restrict S)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const __m512i lane0 = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), lane1 = _mm512_add_epi64(lane0, _mm512_set1_epi64(8));
    int f = __builtin_ctz(S->freerows);
    S->freerows &= S->freerows - 1;
    S->f = f;
    const double *cf = S->c + f * n;
    _mm512_store_si512(S->key, pack_key(_mm512_sub_pd(ld(cf, m0), _mm512_load_pd(S->v)), lane0));
    _mm512_store_si512(S->key + 8, pack_key(_mm512_sub_pd(ld(cf + 8, m1), _mm512_load_pd(S->v + 8)), lane1));
    _mm512_store_si512(S->pred, _mm512_set1_epi64(f));
    _mm512_store_si512(S->pred + 8, _mm512_set1_epi64(f));
    S->done = ~((uint32_t)m0 | ((uint32_t)m1 << 8)) & 0xFFFFu;
}

/* One Dijkstra step (scan the column of least label). Returns 1 when the search reached a free
 * column and the augmentation is done, -1 on non-finite costs, else 0. */
static inline __attribute__((always_inline)) int slot_step(const int n, slot_t *restrict S)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const __m512i none = _mm512_set1_epi64(KEY_NONE);
    const __m512i lane0 = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), lane1 = _mm512_add_epi64(lane0, _mm512_set1_epi64(8));
    /* key of a scanned column stays its final label (its d in the dual update); masked out here */
    uint32_t done = S->done;
    __m512i k0 = _mm512_load_si512(S->key), k1 = _mm512_load_si512(S->key + 8);
    long long kmin = _mm512_reduce_min_epi64(_mm512_min_epi64(_mm512_mask_mov_epi64(k0, (__mmask8)done, none),
                                                              _mm512_mask_mov_epi64(k1, (__mmask8)(done >> 8), none)));
    if (kmin == KEY_NONE) return -1;
    int jm = (int)(kmin & 15);
    double mu;
    long long kbits = kmin & ~15LL;
    memcpy(&mu, &kbits, sizeof mu);
    __m512d vmu = _mm512_set1_pd(mu);
    uint32_t bit = 1u << jm;
    done |= bit;
    S->done = done;
    int i = S->row4col[jm];
    if (i >= 0) {
        const double *ci = S->c + i * n;
        __m512d h = _mm512_set1_pd(ci[jm] - S->v[jm] - mu);
        __m512i r0 = pack_key(_mm512_sub_pd(_mm512_sub_pd(ld(ci, m0), _mm512_load_pd(S->v)), h), lane0);
        __m512i r1 = pack_key(_mm512_sub_pd(_mm512_sub_pd(ld(ci + 8, m1), _mm512_load_pd(S->v + 8)), h), lane1);
        __mmask8 u0 = _mm512_mask_cmplt_epi64_mask((__mmask8)~done, r0, k0);
        __mmask8 u1 = _mm512_mask_cmplt_epi64_mask((__mmask8)(~done >> 8), r1, k1);
        _mm512_store_si512(S->key, _mm512_mask_mov_epi64(k0, u0, r0));
        _mm512_store_si512(S->key + 8, _mm512_mask_mov_epi64(k1, u1, r1));
        __m512i vi = _mm512_set1_epi64(i);
        _mm512_store_si512(S->pred, _mm512_mask_mov_epi64(_mm512_load_si512(S->pred), u0, vi));
        _mm512_store_si512(S->pred + 8, _mm512_mask_mov_epi64(_mm512_load_si512(S->pred + 8), u1, vi));
        return 0;
    }
    /* reached free column jm: dual update of the scanned columns (v += d - mu, zero at jm) keeps
     * all reduced costs >= 0 and makes the path tight; then augment along the path */
    uint32_t sc = done & ~bit & ((uint32_t)m0 | ((uint32_t)m1 << 8));
    _mm512_store_pd(S->v, _mm512_mask_add_pd(_mm512_load_pd(S->v), (__mmask8)sc, _mm512_load_pd(S->v),
                                             _mm512_sub_pd(key_label(k0), vmu)));
    _mm512_store_pd(S->v + 8, _mm512_mask_add_pd(_mm512_load_pd(S->v + 8), (__mmask8)(sc >> 8),
                                                 _mm512_load_pd(S->v + 8), _mm512_sub_pd(key_label(k1), vmu)));
    for (int j = jm, f = S->f;;) {
        int r = (int)S->pred[j];
        S->row4col[j] = r;
        int tmp = S->col4row[r];
        S->col4row[r] = j;
        j = tmp;
        if (r == f) break;
    }
    return 1;
}

/* The certificate of jv_unique() for the slot's solution: 1 = unique optimum (margin eps). */
static inline __attribute__((always_inline)) int slot_certify(const int n, slot_t *restrict S)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const uint32_t valid = (uint32_t)m0 | ((uint32_t)m1 << 8);
    const __m512d v0 = _mm512_load_pd(S->v), v1 = _mm512_load_pd(S->v + 8);
    const __m512d veps = _mm512_set1_pd(S->eps), vneg = _mm512_set1_pd(-S->eps / (4 * n));
    uint32_t adj[16] __attribute__((aligned(64))) = {0}, alive = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        const double *ci = S->c + i * n;
        int j0 = S->col4row[i];
        __m512d ui = _mm512_set1_pd(ci[j0] - S->v[j0]);
        __m512d r0 = _mm512_sub_pd(_mm512_sub_pd(ld(ci, m0), v0), ui);
        __m512d r1 = _mm512_sub_pd(_mm512_sub_pd(ld(ci + 8, m1), v1), ui);
        uint32_t t = (uint32_t)_mm512_cmp_pd_mask(r0, veps, _CMP_LE_OQ) |
                     ((uint32_t)_mm512_cmp_pd_mask(r1, veps, _CMP_LE_OQ) << 8);
        bad |= (uint32_t)_mm512_cmp_pd_mask(r0, vneg, _CMP_LT_OQ) |
               ((uint32_t)_mm512_cmp_pd_mask(r1, vneg, _CMP_LT_OQ) << 8);
        t &= valid & ~(1u << j0);
        adj[j0] = t;
        alive |= (uint32_t)(t != 0) << j0;
    }
    if (bad & valid) return 0;
    /* peel: keep the columns with an edge into the kept set, all 16 at once */
    const __m512i av = _mm512_load_si512(adj);
    for (;;) {
        uint32_t keep = (uint32_t)_mm512_test_epi32_mask(av, _mm512_set1_epi32((int)alive)) & alive;
        if (keep == alive) break;
        alive = keep;
    }
    return alive == 0;
}

/* Correctly rounded costs (as the generic path computes them), for the SciPy-order fallback. */
static void exact_costs(const int n, slot_t *restrict S, const source_t *restrict src)
{
    const double *sa = src->sqa + S->p * n, *sb = src->sqb + S->q * n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double d2 = sa[i] + sb[j] - 2.0 * S->g[i * n + j];
            S->c[i * n + j] = sqrt(d2 > 0 ? d2 : 0.0);
        }
}

/* Finish the slot's problem: certificate, SciPy-order fallback, result. */
static inline __attribute__((always_inline)) void slot_finish(const int n, slot_t *restrict S, source_t *restrict src, ws_t *w)
{
    int64_t t = S->t;
    int ok = slot_certify(n, S);
    const int *col = S->col4row;
    if (!ok && src->fallback) {
        if (!src->cost) exact_costs(n, S, src);
        if (lsa(n, S->c, w->col4row, w->u, w->v, w->spc, w->path, w->row4col, w->SR, w->SC, w->rem) != 0) {
            src->failed = 1;
            return;
        }
        for (int i = 0; i < n; i++) w->col[i] = (int)w->col4row[i];
        col = w->col;
        src->nfb++;
    }
    if (src->cost) {
        for (int i = 0; i < n; i++) src->col_out[t * n + i] = col[i];
        if (src->unique) src->unique[t] = ok;
        return;
    }
    int64_t p = S->p, q = S->q;
    double s = 0;
    for (int i = 0; i < n; i++) s += S->g[i * n + col[i]];
    double den = src->na[p] * src->nb[q];
    src->out[p * src->cb + q] = den > 0 ? s / den : 0.0;
}

/* Bring slot S to its next Dijkstra search, finishing and loading problems as needed.
 * Returns 0 when no problem is left for it. */
static inline __attribute__((always_inline)) int
slot_advance(const int n, slot_t *restrict S, source_t *restrict src, ws_t *w, int64_t *next, int64_t count)
{
    for (;;) {
        if (S->freerows) { slot_start(n, S); return 1; }
        if (S->t >= 0) { slot_finish(n, S, src, w); S->t = -1; }
        if (*next >= count || src->failed) return 0;
        slot_load(n, S, src, (*next)++);
    }
}

/* Solve problems 0..count-1 of src, SLOTS at a time. */
static inline __attribute__((always_inline)) void
stream16(const int n, source_t *restrict src, int64_t count, slot_t *slots, ws_t *w)
{
    int64_t next = 0;
    uint32_t active = 0;
    for (int s = 0; s < SLOTS; s++) {
        slots[s].t = -1;
        slots[s].freerows = 0;
        if (slot_advance(n, &slots[s], src, w, &next, count)) active |= 1u << s;
    }
    while (active) {
        for (int s = 0; s < SLOTS; s++) {
            if (!(active >> s & 1)) continue;
            int r = slot_step(n, &slots[s]);
            if (r < 0) { src->failed = 1; return; }
            if (r && !slot_advance(n, &slots[s], src, w, &next, count)) active &= ~(1u << s);
        }
    }
}

static void stream16_any(int n, source_t *src, int64_t count, slot_t *slots, ws_t *w)
{
    switch (n) { /* constant n: masks and loop bounds known to the compiler */
    case 8: stream16(8, src, count, slots, w); break;
    case 16: stream16(16, src, count, slots, w); break;
    default: stream16(n, src, count, slots, w);
    }
}
#endif

/* All-pairs scores out (ca, cb). A: (ca, n, k) blocks of a; BT: (cb, k, n) blocks of b transposed;
 * sqa (ca, n), sqb (cb, n): squared block norms; na, nb: template norms. stats[0] += number of
 * pairs that needed the SciPy-order fallback. Returns 0, or -1 on failure (non-finite input). */
int pemiu_pairwise(const double *A, const double *BT, const double *sqa, const double *sqb, const double *na,
                   const double *nb, int64_t ca, int64_t cb, int64_t nblk, int64_t k, double *out, int64_t *stats)
{
    int failed = 0;
    int64_t fb = 0;
    const int64_t pt = 8; /* tiles: 8 templates of a (x 64 of b) stay in cache */
    #pragma omp parallel reduction(|:failed) reduction(+:fb)
    {
        ws_t *w = ws_new(nblk);
#ifdef HAVE_STREAM16
        slot_t *slots = aligned_alloc(64, sizeof(slot_t) * SLOTS);
        if (!slots) failed = 1;
#endif
        if (!ws_ok(w)) failed = 1;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t p0 = 0; p0 < ca; p0 += pt) {
            if (failed) continue;
            int64_t p1 = p0 + pt < ca ? p0 + pt : ca;
#ifdef HAVE_STREAM16
            if (nblk <= 16) {
                const int64_t qt = 64;
                for (int64_t q0 = 0; q0 < cb && !failed; q0 += qt) {
                    int64_t q1 = q0 + qt < cb ? q0 + qt : cb;
                    source_t src = {(int)nblk, (int)k, A, BT, sqa, sqb, na, nb, p0, q0, q1 - q0, cb, p0, q0,
                                    out, NULL, NULL, NULL, 1, 0, 0};
                    stream16_any((int)nblk, &src, (p1 - p0) * (q1 - q0), slots, w);
                    fb += src.nfb;
                    if (src.failed) failed = 1;
                }
                continue;
            }
#endif
            int r;
            /* constant n lets the compiler unroll and vectorise the column loops */
            switch (nblk) {
            case 8: r = score_rows(8, (int)k, A, BT, sqa, sqb, na, nb, p0, p1, cb, out, w, &fb); break;
            case 16: r = score_rows(16, (int)k, A, BT, sqa, sqb, na, nb, p0, p1, cb, out, w, &fb); break;
            case 32: r = score_rows(32, (int)k, A, BT, sqa, sqb, na, nb, p0, p1, cb, out, w, &fb); break;
            default: r = score_rows((int)nblk, (int)k, A, BT, sqa, sqb, na, nb, p0, p1, cb, out, w, &fb);
            }
            if (r) failed = 1;
        }
#ifdef HAVE_STREAM16
        free(slots);
#endif
        ws_free(w);
    }
    stats[0] += fb;
    return failed ? -1 : 0;
}

/* Assignments of a batch of n x n cost matrices (to test the solvers against SciPy). mode 0: the
 * solver of pemiu_pairwise (certified fast solver, SciPy-order fallback; equals SciPy); 1: the
 * SciPy-order solver only; 2: the fast solver only, unique[t] = its certificate. Returns the
 * number of fallbacks, or -1 on failure. */
int lsa_batch(const double *cost, int64_t count, int64_t n, int64_t *col_out, int64_t mode, int64_t *unique)
{
    ws_t *w = ws_new(n);
    int64_t fb = 0;
    if (!ws_ok(w) || (mode == 2 && n > FASTN)) { ws_free(w); return -1; }
#ifdef HAVE_STREAM16
    if (mode != 1 && n <= 16) {
        slot_t *slots = aligned_alloc(64, sizeof(slot_t) * SLOTS);
        source_t src = {(int)n, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 1, 0, 0, 0, NULL,
                        cost, col_out, mode == 2 ? unique : NULL, mode == 0, 0, 0};
        if (slots) stream16_any((int)n, &src, count, slots, w);
        free(slots);
        ws_free(w);
        return !slots || src.failed ? -1 : (int)(src.nfb > 2147483647 ? 2147483647 : src.nfb);
    }
#endif
    for (int64_t t = 0; t < count && fb >= 0; t++) {
        const double *c = cost + t * n * n;
        double cmax = 0;
        for (int64_t j = 0; j < n * n; j++) cmax = fabs(c[j]) > cmax ? fabs(c[j]) : cmax;
        if (mode == 2) {
            int r = jv_unique((int)n, c, w->col, 1e-9 * cmax + 1e-300, &w->jv);
            if (r < 0) { fb = -1; break; }
            unique[t] = r;
        } else if (mode == 1) {
            if (lsa(n, c, w->col4row, w->u, w->v, w->spc, w->path, w->row4col, w->SR, w->SC, w->rem) != 0) {
                fb = -1; break;
            }
            for (int64_t i = 0; i < n; i++) w->col[i] = (int)w->col4row[i];
        } else {
            int r = solve((int)n, c, cmax, w);
            if (r < 0) { fb = -1; break; }
            fb += r;
        }
        for (int64_t i = 0; i < n; i++) col_out[t * n + i] = w->col[i];
    }
    ws_free(w);
    return fb < 0 ? -1 : (int)(fb > 2147483647 ? 2147483647 : fb);
}

#ifdef HAVE_STREAM16
int has_avx512(void) { return 1; }
#else
int has_avx512(void) { return 0; }
#endif

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
_built_with = ""
_BASE_FLAGS = ["-O2", "-fno-math-errno", "-shared", "-fPIC"]  # -O3 measured no faster, slower with AVX2


def _cache_dir() -> Path:
    return Path(os.environ.get("FACEPRIV_CACHE", Path.home() / ".cache" / "facepriv")) / "native"


def _cpu_signature() -> str:
    """Model and feature flags of this CPU from /proc/cpuinfo; empty when unavailable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    keep = [ln.strip() for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(sorted(set(keep)))


def _flag_sets(cpu: str) -> list[list[str]]:
    """Compiler flags to try in order: native code only when the CPU is identified (it is part of
    the cache key, so a library built here is never loaded on a different CPU)."""
    native = [["-march=native"]] if cpu else []
    return [[*_BASE_FLAGS, *arch, *omp] for arch in [*native, []] for omp in (["-fopenmp"], [])]


def _build(out: Path, cc: str, flag_sets: list[list[str]]) -> bool:
    out.parent.mkdir(parents=True, exist_ok=True)
    err = ""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "pemiu_lsa.c"
        src.write_text(C_SOURCE, encoding="utf-8")
        so = Path(tmp) / out.name
        for flags in flag_sets:
            cmd = [cc, *flags, "-o", str(so), str(src), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode == 0:
                log.debug("built the PE-MIU native comparator: %s", " ".join(cmd))
                out.with_suffix(".flags").write_text(" ".join(flags), encoding="utf-8")
                os.replace(so, out)
                return True
            err = res.stderr.strip()
    log.warning("building the PE-MIU native comparator failed (%s); using the numpy path", err[:300])
    return False


def _self_test(lib: ctypes.CDLL) -> bool:
    """Solve a few small problems with known answers (guards against a miscompiled library)."""
    rng = np.random.default_rng(0)
    for n in (3, 8, 16, 20):
        perm = rng.permutation(n)
        cost = rng.uniform(1.0, 2.0, size=(1, n, n))
        cost[0, np.arange(n), perm] = 0.5  # unique optimum: the permutation
        out = np.empty((1, n), dtype=np.int64)
        flags = np.zeros(1, dtype=np.int64)
        if lib.lsa_batch(cost, 1, n, out, 0, flags) < 0 or not np.array_equal(out[0], perm):
            return False
    return True


def load() -> ctypes.CDLL | None:
    """The compiled library, building it on first use; None when unavailable."""
    global _lib, _tried, _built_with
    if os.environ.get("FACEPRIV_NO_NATIVE", "") not in ("", "0"):
        return None
    if _tried:
        return _lib
    _tried = True
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        log.info("no C compiler found; PE-MIU comparator uses the numpy path")
        return None
    cpu = _cpu_signature()
    flag_sets = _flag_sets(cpu)
    ident = "\0".join([C_SOURCE, cc, repr(flag_sets), platform.machine(), cpu])
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    path = _cache_dir() / f"pemiu_lsa_{key}.so"
    try:
        if not path.is_file() and not _build(path, cc, flag_sets):
            return None
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        log.warning("loading the PE-MIU native comparator failed (%s); using the numpy path", exc)
        return None
    dp = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
    ip = np.ctypeslib.ndpointer(dtype=np.int64, flags="C_CONTIGUOUS")
    i64 = ctypes.c_int64
    lib.pemiu_pairwise.argtypes = [dp, dp, dp, dp, dp, dp, i64, i64, i64, i64, dp, ip]
    lib.pemiu_pairwise.restype = ctypes.c_int
    lib.lsa_batch.argtypes = [dp, i64, i64, ip, i64, ip]
    lib.lsa_batch.restype = ctypes.c_int
    lib.set_threads.argtypes = [ctypes.c_int]
    lib.set_threads.restype = None
    lib.has_openmp.restype = ctypes.c_int
    lib.has_avx512.restype = ctypes.c_int
    flags_file = path.with_suffix(".flags")
    _built_with = f"{Path(cc).name} {flags_file.read_text(encoding='utf-8')}" if flags_file.is_file() else cc
    if not _self_test(lib):
        log.warning("the PE-MIU native comparator failed its self-test; using the numpy path")
        return None
    _lib = lib
    return lib


def build_info() -> str:
    """How the loaded library was built (for benchmarks and logs)."""
    lib = load()
    if lib is None:
        return "not available"
    kernel = "AVX-512 kernel for B <= 16" if lib.has_avx512() else "portable kernel"
    return f"{_built_with}; {kernel}; OpenMP {'yes' if lib.has_openmp() else 'no'}"


_MODES = {"auto": 0, "scipy": 1, "fast": 2}


def _checked_costs(cost: np.ndarray) -> np.ndarray:
    c = np.ascontiguousarray(cost, dtype=np.float64)
    if c.ndim != 3 or c.shape[1] != c.shape[2]:
        raise ValueError(f"cost must have shape (N, B, B), got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("assignment failed: cost matrices must be finite")
    return c


def lsa_batch(cost: np.ndarray, solver: str = "auto") -> np.ndarray | None:
    """Assignments of a batch (N, B, B) with the compiled solvers; None when unavailable.

    Parameters
    ----------
    cost : ndarray, shape (N, B, B)
        Finite cost matrices.
    solver : {"auto", "scipy"}
        ``"auto"``: the comparator's solver (certified fast solver, SciPy-order fallback), equal to
        ``scipy.optimize.linear_sum_assignment``; ``"scipy"``: the SciPy-order solver only.

    Returns
    -------
    ndarray of int64, shape (N, B), or None
        Column of each row.
    """
    lib = load()
    if lib is None:
        return None
    c = _checked_costs(cost)
    out = np.empty(c.shape[:2], dtype=np.int64)
    flags = np.zeros(len(c), dtype=np.int64)
    if lib.lsa_batch(c, c.shape[0], c.shape[1], out, _MODES[solver], flags) < 0:
        raise ValueError("assignment failed: cost matrices must be finite")
    return out


def fast_lsa_batch(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The fast solver alone (B <= 64), for tests: assignments and their uniqueness certificates.

    Returns
    -------
    (ndarray of int64, shape (N, B), ndarray of bool, shape (N,)) or None
        An optimal assignment per problem and whether it was certified the unique optimum (then
        SciPy returns the same one). None when the library is unavailable.
    """
    lib = load()
    if lib is None:
        return None
    c = _checked_costs(cost)
    out = np.empty(c.shape[:2], dtype=np.int64)
    flags = np.zeros(len(c), dtype=np.int64)
    if lib.lsa_batch(c, c.shape[0], c.shape[1], out, _MODES["fast"], flags) < 0:
        raise ValueError("assignment failed: cost matrices must be finite and B <= 64")
    return out, flags.astype(bool)


def pemiu_pairwise(a: np.ndarray, b: np.ndarray, threads: int = 1) -> tuple[np.ndarray, int] | None:
    """All-pairs PE-MIU scores of block-shaped templates; None when the library is unavailable.

    Parameters
    ----------
    a, b : ndarray, shapes (Na, B, K) and (Nb, B, K)
        Templates cut into B blocks of size K (float64).
    threads : int
        OpenMP threads.

    Returns
    -------
    (ndarray, shape (Na, Nb), int) or None
        Scores and the number of pairs that needed the SciPy-order fallback (ties).
    """
    lib = load()
    if lib is None:
        return None
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # the kernel clamps, it does not check
        raise ValueError("PE-MIU comparison failed: templates must be finite")
    na_, nblk, k = a.shape
    nb_ = len(b)
    bt = np.ascontiguousarray(b.transpose(0, 2, 1))  # (Nb, K, B): rows of b's blocks side by side
    sqa = np.einsum("pik,pik->pi", a, a)
    sqb = np.einsum("pik,pik->pi", b, b)
    out = np.empty((na_, nb_), dtype=np.float64)
    stats = np.zeros(1, dtype=np.int64)
    lib.set_threads(int(threads))
    rc = lib.pemiu_pairwise(
        a, bt, sqa, np.ascontiguousarray(sqb), np.sqrt(sqa.sum(1)), np.sqrt(sqb.sum(1)),
        na_, nb_, nblk, k, out, stats,
    )
    if rc != 0:
        raise ValueError("PE-MIU assignment failed: templates must be finite")
    return out, int(stats[0])
