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
 * Kernels, chosen at run time (pick_kernel): portable (double, below), AVX2 + FMA (float32, B <= 16,
 * the a2_*() functions near the end: compiled into every x86-64 build and used when cpuid reports
 * AVX2 and FMA) and AVX-512 (float32, B <= 16; in builds with AVX-512 enabled).
 * jv_unique() is the portable fast solver. With AVX-512 and B <= 16 blocks the slot_*() functions
 * below first run the same algorithm in float32 on float costs, several problems at once, and
 * check the result with rigorous error bounds against the exact distances (slot_certify32: same
 * or larger margin); about 2 % of random pairs (near ties at float precision) then get double
 * costs, the check of the float solution in double, and if needed jv_unique and lsa(). */
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
/* B <= 16 with AVX-512: costs and solver in float32, the 16 columns of a row in one register
 * (half the work of double). The float solution is accepted when a check with rigorous error
 * bounds proves it the unique optimum of the exact costs (slot_certify32); otherwise the double
 * costs are computed and the same solution is checked in double (slot_certify), then come the
 * double fast solver and the SciPy-order solver, as on the portable path. Scores are computed in
 * double per tile once its pairs are assigned (tile_scores).
 * Each Dijkstra step is a strictly serial chain (vector min -> column -> its row -> relax that
 * row), so SLOTS independent problems are solved at once, one step of each in turn, and the
 * out-of-order core overlaps their chains. That only works without mispredicted branches (a flush
 * discards the other problems' work too), so a step has no data-dependent branch: it always
 * relaxes and always prepares the end of a search (dual update, augmentation, start of the next
 * search), and masks select what applies (measured: the kernel ~10 % faster). The augmenting
 * path needs no pointer chase: path[j] is the set of columns on the search tree's path to column
 * j, kept up to date when j is relaxed. */
#define SLOTS 4

typedef struct {
    float c32[256]; /* float costs, row stride 16, lanes >= n zero (the solver's input) */
    int32_t key[16]; /* packed labels, see pack_key() */
    int32_t pred[16], path[16], row4col[16]; /* row a column was reached from; path mask; matching */
    float v[16]; /* column duals */
    double c[256], g[256]; /* double costs and dot products, stride n (fallbacks) */
    int col4row[16];
    int f, ok32; /* root row of the current search; 0: the float solver cannot be used */
    uint32_t done, freerows;
    double eps, cmax, delta; /* margin; largest cost; bound on |float cost - exact distance| */
    int64_t t, p, q; /* problem index (-1 when empty); its pair of templates */
} __attribute__((aligned(64))) slot_t;

/* Where the problems come from: pairs (p, q) of templates (costs computed here) or cost matrices. */
typedef struct {
    int n, k;
    const double *A, *BT, *sqa, *sqb, *na, *nb; /* pairs: rows p0, p0 + 1, ... x columns [q0, q0 + nq) */
    const float *A32, *BT32; /* float copies of A and BT */
    const double *B, *sqa32, *sqb32; /* b's blocks (cb, n, k) for the scores; squared norms of the float blocks */
    int64_t p0, q0, nq, cb, pi, qi; /* pi, qi: the next pair */
    double *out;
    uint8_t *cols; /* pairs: assignment of pair (pi, qi) at ((pi - p0) * nq + qi - q0) * 16 */
    const double *cost; /* cost matrices (tests); col_out, unique: results */
    int64_t *col_out, *unique;
    int tiers; /* solvers tried in turn: 3 = float, double fast, SciPy order; 2 = float, double fast; 1 = float */
    int64_t nfb, n32, n64; /* problems solved in SciPy's order; not settled by the float check; by the double one */
    int failed;
} source_t;

static inline __m512d ld(const double *p, __mmask8 m) { return _mm512_maskz_loadu_pd(m, p); }

/* 16 doubles (lanes by masks m0, m1; others 0) rounded to float in one register */
static inline __m512 ld16f(const double *p, __mmask8 m0, __mmask8 m1)
{
    __m256d lo = _mm256_castps_pd(_mm512_cvtpd_ps(ld(p, m0))), hi = _mm256_castps_pd(_mm512_cvtpd_ps(ld(p + 8, m1)));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
}

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

static inline __m512 fast_sqrt32(__m512 x) /* sqrt(max(x, FLT_MIN)), relative error < 8 * 2^-24 */
{
    x = _mm512_max_ps(x, _mm512_set1_ps(1.17549435e-38f));
    __m512 y = _mm512_rsqrt14_ps(x), s = _mm512_mul_ps(x, y);
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), y), _mm512_fnmadd_ps(s, s, x), s);
}

static inline double hmax(const int n, const double *x)
{
    double m = 0;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* Float costs of one pair into c32 (row stride 16, lanes >= n zero): g = float dot products of the
 * float blocks (a: n x k, bt: k x n), c = sqrt(|a_i|^2 + |b_j|^2 - 2 g). Returns a bound on
 * |c32_ij - d_ij|, d_ij the exact distance of the double blocks:
 * - the float blocks a', b' differ from the double ones by <= u |a_i|, u |b_j| (u = 2^-24), so
 *   their distance d' is within u (|a_i| + |b_j|) of d;
 * - x = fl(fl(sa + sb) - 2 g') (sa, sb: squared norms of a', b' summed in double, then rounded to
 *   float) is within E2 = (gamma_m + 4.1 u)(sa + sb) of d'^2: gamma_m = m u / (1 - m u) with
 *   m = ceil(k / 2) + 1 bounds g' (two FMA chains, then their sum) relative to
 *   sum |a_t b_t| <= (sa + sb) / 2, the roundings to float add
 *   <= 4.02 u (sa + sb), the double sums far less than the remaining 0.08 u;
 * - so |sqrt(x) - d'| <= |x - d'^2| / sqrt(x) <= E2 (1 + 8u) / c32, and always <= sqrt(E2);
 *   fast_sqrt32 adds < 8u c32 (the clamp to FLT_MIN adds < 1e-19).
 * Maxima over the pair are used: sa + sb <= max sa + max sb, c32 >= its minimum. The 1e-30 in
 * E2 covers underflow (absolute errors < 1e-43); sa + sb >= 1e30 (overflow) returns infinity. */
static inline __attribute__((always_inline)) double
costs32(const int n, const int k, const float *restrict a, const float *restrict bt,
        const double *restrict sqa, const double *restrict sqb, float *restrict c32, double *cmax_out)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const __mmask16 valid = (__mmask16)((uint32_t)m0 | ((uint32_t)m1 << 8));
    const __m512 zero = _mm512_setzero_ps(), two = _mm512_set1_ps(2.0f);
    const __m512 sb = ld16f(sqb, m0, m1);
    __m512 mx = zero, mn = _mm512_set1_ps(INFINITY);
    for (int i = 0; i < n; i += 8) {
        /* eight rows of a at a time, two accumulators each (even and odd t: half the error
         * bound; named: the compiler keeps them in registers); rows past the end repeat the last */
#define ROW(q) (a + (i + q < n ? i + q : n - 1) * k)
        const float *r0 = ROW(0), *r1 = ROW(1), *r2 = ROW(2), *r3 = ROW(3);
        const float *r4 = ROW(4), *r5 = ROW(5), *r6 = ROW(6), *r7 = ROW(7);
#undef ROW
        __m512 x0 = zero, x1 = zero, x2 = zero, x3 = zero, x4 = zero, x5 = zero, x6 = zero, x7 = zero;
        __m512 y0 = zero, y1 = zero, y2 = zero, y3 = zero, y4 = zero, y5 = zero, y6 = zero, y7 = zero;
#define ACC(x, r, t, b) x = _mm512_fmadd_ps(_mm512_set1_ps(r[t]), b, x)
#define ACC8(x, t, b) ACC(x##0, r0, t, b); ACC(x##1, r1, t, b); ACC(x##2, r2, t, b); ACC(x##3, r3, t, b); \
                      ACC(x##4, r4, t, b); ACC(x##5, r5, t, b); ACC(x##6, r6, t, b); ACC(x##7, r7, t, b)
        int t = 0;
        for (; t + 2 <= k; t += 2) {
            const __m512 b0 = _mm512_maskz_loadu_ps(valid, bt + t * n);
            const __m512 b1 = _mm512_maskz_loadu_ps(valid, bt + t * n + n);
            ACC8(x, t, b0);
            ACC8(y, t + 1, b1);
        }
        if (t < k) {
            const __m512 b0 = _mm512_maskz_loadu_ps(valid, bt + t * n);
            ACC8(x, t, b0);
        }
#undef ACC8
#undef ACC
        x0 = _mm512_add_ps(x0, y0), x1 = _mm512_add_ps(x1, y1), x2 = _mm512_add_ps(x2, y2), x3 = _mm512_add_ps(x3, y3);
        x4 = _mm512_add_ps(x4, y4), x5 = _mm512_add_ps(x5, y5), x6 = _mm512_add_ps(x6, y6), x7 = _mm512_add_ps(x7, y7);
        const __m512 xs[8] = {x0, x1, x2, x3, x4, x5, x6, x7};
        for (int q = 0; q < 8 && i + q < n; q++) {
            __m512 sab = _mm512_add_ps(_mm512_set1_ps((float)sqa[i + q]), sb);
            __m512 c = _mm512_maskz_mov_ps(valid, fast_sqrt32(_mm512_fnmadd_ps(two, xs[q], sab)));
            _mm512_store_ps(c32 + 16 * (i + q), c);
            mx = _mm512_max_ps(mx, c);
            mn = _mm512_mask_min_ps(mn, valid, mn, c);
        }
    }
    const double u = 5.9604644775390625e-8, sa = hmax(n, sqa), sbm = hmax(n, sqb);
    const double m = (k + 1) / 2 + 1, e2 = (m * u / (1 - m * u) + 4.1 * u) * (sa + sbm) + 1e-30;
    const double cmin = _mm512_reduce_min_ps(mn), cmax = _mm512_reduce_max_ps(mx), s = sqrt(e2);
    *cmax_out = cmax;
    if (!(sa + sbm < 1e30)) return INFINITY; /* products could overflow the float range */
    return (cmin >= s ? e2 * (1 + 8.1 * u) / cmin : s) + 8.1 * u * cmax + u * (sqrt(sa) + sqrt(sbm)) * 1.000001;
}

/* Put problem t into slot S: float costs, column reduction on them (v = column minima; a column
 * goes to its first minimal row if that row is free), list of free rows. */
static inline __attribute__((always_inline)) void
slot_load(const int n, const int k, slot_t *restrict S, source_t *restrict src, int64_t t)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const __mmask16 valid = (__mmask16)((uint32_t)m0 | ((uint32_t)m1 << 8));
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
        for (int i = 0; i < n; i++) /* rounded to nearest: off by <= 2^-24 |c| */
            _mm512_store_ps(S->c32 + 16 * i, ld16f(S->c + i * n, m0, m1));
        S->delta = 5.9604645e-8 * cmax + 1e-45;
    } else {
        int64_t p = src->pi, q = src->qi;
        if (++src->qi == src->q0 + src->nq) { src->qi = src->q0; src->pi++; }
        S->p = p;
        S->q = q;
        S->delta = costs32(n, k, src->A32 + p * n * k, src->BT32 + q * n * k, src->sqa32 + p * n,
                           src->sqb32 + q * n, S->c32, &cmax);
    }
    S->eps = 1e-9 * cmax + 1e-300;
    S->cmax = cmax;
    S->ok32 = cmax < 1e30 && S->delta < 1e30; /* float range, with room for the duals; false for NaN */
    __m512 v = _mm512_set1_ps(INFINITY);
    __m512i arg = _mm512_setzero_si512();
    for (int i = 0; i < n; i++) {
        __m512 r = _mm512_load_ps(S->c32 + 16 * i);
        __mmask16 l = _mm512_mask_cmp_ps_mask(valid, r, v, _CMP_LT_OQ);
        v = _mm512_mask_mov_ps(v, l, r);
        arg = _mm512_mask_mov_epi32(arg, l, _mm512_set1_epi32(i));
    }
    _mm512_store_ps(S->v, _mm512_maskz_mov_ps(valid, v));
    _mm512_store_si512(S->pred, arg);
    /* without branches (their outcome is random): a column goes to its row if the row is free */
    uint32_t taken = 0;
    for (int j = 0; j < 16; j++) S->row4col[j] = -1;
    for (int j = 0; j < n; j++) {
        int i = S->pred[j];
        uint32_t fr = ~taken >> i & 1u;
        taken |= 1u << i;
        S->row4col[j] = fr ? i : -1;
    }
    S->freerows = S->ok32 ? ~taken & valid : 0;
}

/* Dijkstra labels are >= 0, so their bit patterns order like the numbers. A label is stored with its
 * column index in the 4 lowest mantissa bits: one integer min over the vector then gives both the
 * least label and its column (labels perturbed by < 16 float ulp: the checks, slot_certify32 and
 * slot_certify, do not rely on the solver's accuracy). */
#define KEY_NONE 0x7FFFFFFF

static inline __m512i pack_key(__m512 x, __m512i lane)
{
    /* max(x, 0) on the bits: negative floats are negative integers (1-cycle integer max) */
    __m512i bits = _mm512_max_epi32(_mm512_castps_si512(x), _mm512_setzero_si512());
    return _mm512_or_si512(_mm512_andnot_si512(_mm512_set1_epi32(15), bits), lane);
}

static inline __m512 key_label(__m512i k) { return _mm512_castsi512_ps(_mm512_andnot_si512(_mm512_set1_epi32(15), k)); }

static inline __m512i lanes(void) { return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0); }

static inline __m512i lane_bits(void) { return _mm512_sllv_epi32(_mm512_set1_epi32(1), lanes()); }

/* Start the Dijkstra search from the first free row (later searches start inside slot_step). */
static inline __attribute__((always_inline)) void slot_start(const int n, slot_t *restrict S)
{
    const __mmask16 valid = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    int f = __builtin_ctz(S->freerows);
    S->freerows &= S->freerows - 1;
    S->f = f;
    _mm512_store_si512(S->key, pack_key(_mm512_sub_ps(_mm512_load_ps(S->c32 + 16 * f), _mm512_load_ps(S->v)), lanes()));
    _mm512_store_si512(S->pred, _mm512_set1_epi32(f));
    _mm512_store_si512(S->path, lane_bits());
    S->done = ~(uint32_t)valid & 0xFFFFu;
}

/* One Dijkstra step (scan the column of least label). When that column is free, the search ends:
 * dual update of the scanned columns (v += d - mu: all reduced costs stay >= 0 and the path
 * becomes tight), augmentation along the path, start of the search from the next free row.
 * Returns 1 when no free row is left (problem solved), 2 when the float solver broke down
 * (non-finite values), else 0. */
static inline __attribute__((always_inline)) int slot_step(const int n, slot_t *restrict S)
{
    const __mmask16 valid = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __m512i lane = lanes(), fifteen = _mm512_set1_epi32(15);
    uint32_t done = S->done;
    /* key of a scanned column stays its final label (its d in the dual update); masked out here */
    __m512i k = _mm512_load_si512(S->key);
    __m512i m = _mm512_mask_mov_epi32(k, (__mmask16)done, _mm512_set1_epi32(KEY_NONE));
    m = _mm512_min_epi32(m, _mm512_shuffle_i32x4(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm512_min_epi32(m, _mm512_shuffle_i32x4(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
    m = _mm512_min_epi32(m, _mm512_shuffle_epi32(m, _MM_PERM_BADC));
    m = _mm512_min_epi32(m, _mm512_shuffle_epi32(m, _MM_PERM_CDAB)); /* the minimum in every lane */
    int kmin = _mm_cvtsi128_si32(_mm512_castsi512_si128(m));
    if (kmin == KEY_NONE) return 2;
    int jm = kmin & 15;
    __m512 mu = _mm512_castsi512_ps(_mm512_andnot_si512(fifteen, m));
    done |= 1u << jm;
    int i = S->row4col[jm];
    /* selects by masks: left as ?: the compiler makes some of them unpredictable branches */
    const int32_t e = i >> 31; /* -1 when column jm is free (the search ends), else 0 */
    const uint32_t end = (uint32_t)e & 0xFFFFu;
    const int f = S->f;
    __m512 v = _mm512_load_ps(S->v);
    /* relax from the row matched to jm (from row 15 when jm is free: results discarded). The
     * steps' serial chain bounds the speed, hence the forms here: row i & 15 (no select), label
     * via row i mu + (rv - rv_jm) as (rv + mu) - rv_jm (rv + mu does not wait for rv_jm), the
     * keys' update as a masked min (does not wait for the comparison), max with 0 on the bits
     * (pack_key); together ~7 % faster */
    __m512 rv = _mm512_sub_ps(_mm512_load_ps(S->c32 + 16 * (i & 15)), v);
    __m512 rvjm = _mm512_permutexvar_ps(_mm512_and_si512(m, fifteen), rv);
    __m512i r = pack_key(_mm512_sub_ps(_mm512_add_ps(rv, mu), rvjm), lane);
    __mmask16 upd = _mm512_mask_cmplt_epi32_mask((__mmask16)(~done & ~end), r, k);
    k = _mm512_mask_min_epi32(k, (__mmask16)(~done & ~end), k, r);
    __m512i pred = _mm512_mask_mov_epi32(_mm512_load_si512(S->pred), upd, _mm512_set1_epi32(i));
    __m512i path = _mm512_load_si512(S->path);
    const uint32_t pathjm = (uint32_t)S->path[jm];
    path = _mm512_mask_or_epi32(path, upd, _mm512_set1_epi32((int)pathjm), lane_bits());
    /* end of the search (masked by end): dual update (adds 0 at jm), augmentation, next root */
    v = _mm512_mask_add_ps(v, (__mmask16)(done & end & valid), v, _mm512_sub_ps(key_label(k), mu));
    _mm512_mask_store_epi32(S->row4col, (__mmask16)(pathjm & end), pred);
    const uint32_t fr = S->freerows;
    const int f2 = f ^ ((f ^ __builtin_ctz(fr | 0x8000u)) & e); /* row 15 when none is left (unused) */
    S->freerows = fr ^ (fr & (0u - fr) & (uint32_t)e);
    S->f = f2;
    __m512i k2 = pack_key(_mm512_sub_ps(_mm512_load_ps(S->c32 + 16 * f2), v), lane);
    _mm512_store_si512(S->key, _mm512_mask_mov_epi32(k, (__mmask16)end, k2));
    _mm512_store_si512(S->pred, _mm512_mask_mov_epi32(pred, (__mmask16)end, _mm512_set1_epi32(f2)));
    _mm512_store_si512(S->path, _mm512_mask_mov_epi32(path, (__mmask16)end, lane_bits()));
    _mm512_store_ps(S->v, v);
    S->done = done ^ ((done ^ (~(uint32_t)valid & 0xFFFFu)) & (uint32_t)e);
    return (int)((uint32_t)e & (fr == 0));
}

/* Is the slot's float solution the unique optimum of the exact costs d? Checked in float on c32,
 * with |c32 - d| <= delta (see costs32). Take the duals as exact numbers: v (float), and
 * u_i = fl(c32_i,col(i) - v_col(i)), so the computed reduced costs r_ij = fl(fl(c32_ij - v_j) - u_i)
 * vanish on the assignment. The true ones rho_ij = d_ij - u_i - v_j differ from r_ij by at most
 * E = delta + e_r, e_r <= 2.01 u M the two roundings (u = 2^-24, M = max|c32| + max|u| + max|v|
 * <= 2 (cmax + max|v|)); on the assignment |rho| <= E. Any other assignment s differs from col on
 * rows that form alternating cycles; with no cycle of edges with r <= T, one of its edges has
 * rho > T - E, the others (at most n - 1) have rho >= -A - E, and the assignment's own edges on
 * those rows (at most n) have rho <= E. The extra cost of s is the sum of rho over its edges minus
 * that over col's, > T - (n - 1) A - 2 n E = eps for T = eps + (n - 1) A + 2 n E (T rounded up,
 * A down to float): more than the double certificate's 0.75 eps. A = 2e-6 * cmax absorbs the
 * float solver's own rounding and packed labels. */
static inline __attribute__((always_inline)) int slot_certify32(const int n, slot_t *restrict S)
{
    const __mmask16 valid = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __m512 v = _mm512_load_ps(S->v);
    const double vmax = _mm512_reduce_max_ps(_mm512_maskz_mov_ps(valid, _mm512_abs_ps(v)));
    const double E = S->delta + 2.01 * 5.9604644775390625e-8 * 2 * (S->cmax + vmax) + 1e-44; /* + underflow */
    const double A = 2e-6 * S->cmax, T = S->eps + (n - 1) * A + 2 * n * E;
    const __m512 vT = _mm512_set1_ps((float)(T * (1 + 1e-6)));
    float u[16] __attribute__((aligned(64)));
    for (int i = 0; i < n; i++) u[i] = S->c32[16 * i + S->col4row[i]] - S->v[S->col4row[i]];
    /* tight edges by column: the row holding column j0 has r <= T at the columns in adj[j0] */
    uint16_t adj[16] __attribute__((aligned(32))) = {0};
    const __m512 vA = _mm512_set1_ps(-(float)(A * (1 - 1e-6)));
    uint32_t bad = 0;
    for (int i = 0; i < n; i++) {
        __m512 r = _mm512_sub_ps(_mm512_sub_ps(_mm512_load_ps(S->c32 + 16 * i), v), _mm512_set1_ps(u[i]));
        int j0 = S->col4row[i];
        adj[j0] = (uint16_t)(_mm512_mask_cmp_ps_mask(valid, r, vT, _CMP_LE_OQ) & ~(1u << j0));
        bad |= (uint32_t)_mm512_mask_cmp_ps_mask(valid, r, vA, _CMP_NGE_UQ); /* NaN: bad */
    }
    if (bad) return 0;
    /* peel, as in slot_certify, on 16-bit lanes; first a fixed number of rounds, without the
     * data-dependent loop exit (a mispredicted branch discards the other slots' work too) */
    const __m256i av = _mm256_load_si256((const __m256i *)adj);
    uint32_t alive = _mm256_test_epi16_mask(av, av);
    for (int it = 0; it < 6; it++) alive &= (uint32_t)_mm256_test_epi16_mask(av, _mm256_set1_epi16((short)alive));
    while (alive) {
        uint32_t keep = (uint32_t)_mm256_test_epi16_mask(av, _mm256_set1_epi16((short)alive)) & alive;
        if (keep == alive) break;
        alive = keep;
    }
    return alive == 0;
}

/* Is the slot's float solution the unique optimum of the double costs c (margin eps)? Checked in
 * double, with v = the float duals (exact in double) and u_i = c_i,col(i) - v_col(i), so that the
 * true reduced costs rho_ij = c_ij - u_i - v_j vanish on the assignment. The computed r_ij differ
 * from rho_ij by e_r <= 3 * 2^-53 * (|c| + |u| + |v|) <= 1e-12 * cmax, as |v| <= 1e3 * cmax is
 * required (and then |u| <= cmax + |v|). Any other assignment s differs from col on rows that form
 * alternating cycles; with no cycle of edges with r <= T, one of its edges has rho > T - e_r, and
 * the others (at most n - 1) have rho >= -A - e_r. Its extra cost, the sum of rho over its edges,
 * is then > T - (n - 1) A - n e_r = eps - n e_r > 0.75 eps for T = eps + (n - 1) A: the same
 * margin as jv_unique()'s certificate, far above rounding (see the top). A = 1e-6 * cmax absorbs
 * the float solver's rounding and packed labels and the float costs' deviation from c (typically
 * ~1e-7 * cmax). On random templates 1 in 12 of the pairs checked here fails (then jv_unique). */
static inline __attribute__((always_inline)) int slot_certify(const int n, slot_t *restrict S)
{
    const __mmask8 m0 = n >= 8 ? 0xFF : (__mmask8)((1u << n) - 1);
    const __mmask8 m1 = n >= 16 ? 0xFF : n > 8 ? (__mmask8)((1u << (n - 8)) - 1) : 0;
    const uint32_t valid = (uint32_t)m0 | ((uint32_t)m1 << 8);
    const __m512d v0 = _mm512_cvtps_pd(_mm256_load_ps(S->v)), v1 = _mm512_cvtps_pd(_mm256_load_ps(S->v + 8));
    const double A = 1e-6 * S->cmax, T = S->eps + (n - 1) * A;
    const __m512d vT = _mm512_set1_pd(T), vA = _mm512_set1_pd(-A), vmax = _mm512_set1_pd(1e3 * S->cmax);
    double vd[16] __attribute__((aligned(64)));
    _mm512_store_pd(vd, v0);
    _mm512_store_pd(vd + 8, v1);
    uint32_t adj[16] __attribute__((aligned(64))) = {0}, alive = 0, bad = 0;
    bad |= (uint32_t)_mm512_cmp_pd_mask(_mm512_abs_pd(v0), vmax, _CMP_NLE_UQ) |
           ((uint32_t)_mm512_cmp_pd_mask(_mm512_abs_pd(v1), vmax, _CMP_NLE_UQ) << 8);
    for (int i = 0; i < n; i++) {
        const double *ci = S->c + i * n;
        int j0 = S->col4row[i];
        __m512d ui = _mm512_set1_pd(ci[j0] - vd[j0]);
        __m512d r0 = _mm512_sub_pd(_mm512_sub_pd(ld(ci, m0), v0), ui);
        __m512d r1 = _mm512_sub_pd(_mm512_sub_pd(ld(ci + 8, m1), v1), ui);
        uint32_t t = (uint32_t)_mm512_cmp_pd_mask(r0, vT, _CMP_LE_OQ) |
                     ((uint32_t)_mm512_cmp_pd_mask(r1, vT, _CMP_LE_OQ) << 8);
        bad |= (uint32_t)_mm512_cmp_pd_mask(r0, vA, _CMP_NGE_UQ) |
               ((uint32_t)_mm512_cmp_pd_mask(r1, vA, _CMP_NGE_UQ) << 8);
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

/* Score of a pair with assignment col: sum_i a_i . b_col(i) / (|a| |b|), in double (a, b: n x k). */
static inline __attribute__((always_inline)) double
pair_score(const int n, const int k, const double *restrict a, const double *restrict b, const uint8_t *col, double den)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0; /* named: kept in registers */
    for (int i = 0; i < n; i++) {
        const double *ai = a + i * k, *bj = b + col[i] * k;
        int t = 0;
        for (; t + 32 <= k; t += 32) {
            s0 = _mm512_fmadd_pd(_mm512_loadu_pd(ai + t), _mm512_loadu_pd(bj + t), s0);
            s1 = _mm512_fmadd_pd(_mm512_loadu_pd(ai + t + 8), _mm512_loadu_pd(bj + t + 8), s1);
            s2 = _mm512_fmadd_pd(_mm512_loadu_pd(ai + t + 16), _mm512_loadu_pd(bj + t + 16), s2);
            s3 = _mm512_fmadd_pd(_mm512_loadu_pd(ai + t + 24), _mm512_loadu_pd(bj + t + 24), s3);
        }
        for (; t < k; t += 8) {
            __mmask8 m = k - t >= 8 ? 0xFF : (__mmask8)((1u << (k - t)) - 1);
            s0 = _mm512_fmadd_pd(ld(ai + t, m), ld(bj + t, m), s0);
        }
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3)));
    return den > 0 ? sum / den : 0.0;
}

/* Scores of the tile of pairs once all are assigned: b's template in the inner loop stays in L1
 * (cheaper than scoring each pair as its solver finishes, when b's blocks have left L1). */
static inline __attribute__((always_inline)) void
tile_scores(const int n, const int k, const source_t *restrict src, int64_t np)
{
    for (int64_t dq = 0; dq < src->nq; dq++)
        for (int64_t dp = 0; dp < np; dp++) {
            int64_t p = src->p0 + dp, q = src->q0 + dq;
            src->out[p * src->cb + q] = pair_score(n, k, src->A + p * n * k, src->B + q * n * k,
                                                   src->cols + (dp * src->nq + dq) * 16, src->na[p] * src->nb[q]);
        }
}

/* Finish the slot's problem: float check; else double costs and the double check of the same
 * solution; else the double fast solver, then the SciPy-order solver (tiers permitting); result. */
static inline __attribute__((always_inline)) void
slot_finish(const int n, const int k, slot_t *restrict S, source_t *restrict src, ws_t *w)
{
    int64_t t = S->t;
    int ok = 0;
    if (S->ok32) {
        for (int j = 0; j < n; j++) S->col4row[S->row4col[j]] = j;
        ok = slot_certify32(n, S);
    } else {
        for (int i = 0; i < n; i++) S->col4row[i] = i; /* no float solution (tiers 1: reported uncertified) */
    }
    const int *col = S->col4row;
    if (!ok && src->tiers >= 2) {
        src->n32++;
        if (!src->cost) {
            S->cmax = costs16(n, k, src->A + S->p * n * k, src->BT + S->q * n * k, src->sqa + S->p * n,
                              src->sqb + S->q * n, S->g, S->c);
            S->eps = 1e-9 * S->cmax + 1e-300;
        }
        ok = S->ok32 && slot_certify(n, S);
        if (!ok) {
            src->n64++;
            int r = jv_unique(n, S->c, w->col, S->eps, &w->jv);
            if (r < 0 && src->tiers == 2) { src->failed = 1; return; }
            col = w->col;
            ok = r == 1;
            if (!ok && src->tiers == 3) {
                if (!src->cost) exact_costs(n, S, src);
                if (lsa(n, S->c, w->col4row, w->u, w->v, w->spc, w->path, w->row4col, w->SR, w->SC, w->rem) != 0) {
                    src->failed = 1;
                    return;
                }
                for (int i = 0; i < n; i++) w->col[i] = (int)w->col4row[i];
                src->nfb++;
            }
        }
    }
    if (src->cost) {
        for (int i = 0; i < n; i++) src->col_out[t * n + i] = col[i];
        if (src->unique) src->unique[t] = ok;
        return;
    }
    uint8_t *dst = src->cols + ((S->p - src->p0) * src->nq + S->q - src->q0) * 16;
    for (int i = 0; i < n; i++) dst[i] = (uint8_t)col[i];
}

/* Finish the slot's problem (if any) and load the next one that needs a search.
 * Returns 0 when no problem is left for it. */
static inline __attribute__((always_inline)) int
slot_advance(const int n, const int k, slot_t *restrict S, source_t *restrict src, ws_t *w, int64_t *next,
             int64_t count)
{
    for (;;) {
        if (S->t >= 0) { slot_finish(n, k, S, src, w); S->t = -1; }
        if (*next >= count || src->failed) return 0;
        slot_load(n, k, S, src, (*next)++);
        if (S->freerows) { slot_start(n, S); return 1; }
    }
}

/* Solve problems 0..count-1 of src, SLOTS at a time. */
static inline __attribute__((always_inline)) void
stream16(const int n, const int k, source_t *restrict src, int64_t count, slot_t *slots, ws_t *w)
{
    int64_t next = 0;
    uint32_t active = 0;
    for (int s = 0; s < SLOTS; s++) {
        slots[s].t = -1;
        memset(slots[s].c32, 0, sizeof slots[s].c32); /* rows >= n: read, never used */
        if (slot_advance(n, k, &slots[s], src, w, &next, count)) active |= 1u << s;
    }
    while (active) {
        for (int s = 0; s < SLOTS; s++) {
            if (!(active >> s & 1)) continue;
            int r = slot_step(n, &slots[s]);
            if (r == 2) slots[s].ok32 = 0; /* the double solvers take over */
            if (r && !slot_advance(n, k, &slots[s], src, w, &next, count)) active &= ~(1u << s);
        }
    }
}

static void stream16_any(int n, source_t *src, int64_t count, slot_t *slots, ws_t *w)
{
    /* constant n and k: masks and loop bounds known to the compiler (block sizes 32, 16, 8 of
     * 512-d and 128-d templates) */
    const int k = src->k;
    const int64_t np = src->nq ? count / src->nq : 0; /* pairs: rows of the tile */
#define STREAM(n_, k_) do { \
        stream16(n_, k_, src, count, slots, w); \
        if (!src->cost && !src->failed) tile_scores(n_, k_, src, np); \
    } while (0)
    if (n == 16 && k == 32) STREAM(16, 32);
    else if (n == 16 && k == 8) STREAM(16, 8);
    else if (n == 8 && k == 16) STREAM(8, 16);
    else if (n == 16) STREAM(16, k);
    else STREAM(n, k);
#undef STREAM
}
#endif

/* ---- AVX2 + FMA kernel (B <= 16), chosen at run time (see pick_kernel) ----
 * For CPUs without AVX-512 (e.g. AMD Zen 2/3): compiled for AVX2 + FMA whatever the build flags
 * (target pragma), and used only when cpuid reports both. Per pair:
 * - float costs (a2_costs): float32 block dot products with FMAs, 6 (then 4) rows x 16 columns
 *   per pass (12 or 8 accumulators in ymm registers, one FMA chain each), c = sqrt(max(|a_i|^2 + |b_j|^2 - 2 g,
 *   FLT_MIN)) with the correctly rounded vsqrtps; returns the rigorous bound delta on |c - d| of
 *   costs32 (d = exact distance of the double blocks; derivation there) with m = k;
 * - float solver (a2_load, a2_start, a2_step): the AVX-512 slot solver's algorithm (column
 *   reduction, Dijkstra shortest augmenting paths on reduced costs, labels packed with their column
 *   in the 4 low mantissa bits so that one integer min gives label and column, A2_SLOTS problems
 *   interleaved), the 16 columns of a row in two ymm registers;
 * - float check (a2_certify): slot_certify32's rigorous check that the float solution is the
 *   unique optimum of the exact costs d with margin eps = 1e-9 x cmax;
 * - otherwise (near ties at float precision, ~2 % of random pairs) double costs, the float
 *   solution checked in double (a2_certify64: slot_certify's argument), and only when that fails
 *   the portable solvers (jv_unique with its certificate, then SciPy's order);
 * - the score in double: sum_i a_i . b_col(i) / (|a| |b|). */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_KERNEL 1
#include <immintrin.h>
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif


#define A2_KEY_NONE 0x7FFFFFFF

static inline __m256i a2_pack(__m256 x, __m256i lane) /* see pack_key */
{
    __m256i bits = _mm256_max_epi32(_mm256_castps_si256(x), _mm256_setzero_si256());
    return _mm256_or_si256(_mm256_andnot_si256(_mm256_set1_epi32(15), bits), lane);
}

static inline __attribute__((always_inline)) double
a2_costs(const int n, const int k, const float *restrict a, const float *restrict bt,
         const double *restrict sqa, const double *restrict sqb, float *restrict c32, double *cmax_out)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mlo = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
    const __m256i mhi = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8), lane);
    float sbf[16] __attribute__((aligned(32))) = {0};
    for (int j = 0; j < n; j++) sbf[j] = (float)sqb[j];
    const __m256 sb0 = _mm256_load_ps(sbf), sb1 = _mm256_load_ps(sbf + 8);
    const __m256 zero = _mm256_setzero_ps(), two = _mm256_set1_ps(2.0f), tiny = _mm256_set1_ps(1.17549435e-38f);
    const __m256 inf = _mm256_set1_ps(INFINITY);
    __m256 mx = zero, mn = inf;
#define LD(p, m) (n >= 16 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m))
    /* 6 rows of a x 16 columns per pass, then 4 (rows past the end repeat); one FMA chain per
     * accumulator, so each cost is computed exactly as before. Each load of bt feeds all the pass's
     * rows, and 12 chains leave slack over the 8 that the FMA latency needs (Zen 3: 0.254 -> 0.236
     * us per pair; 4 rows x 16 had been 0.26 vs 0.32 for 2 rows x even/odd t) */
#define FM(x, y, s_) x = _mm256_fmadd_ps(s_, bl, x); y = _mm256_fmadd_ps(s_, bh, y)
#define OUT(q, X0, X1) if (i + (q) < n) { \
            const __m256 sa = _mm256_set1_ps((float)sqa[i + (q)]); \
            __m256 c0 = _mm256_sqrt_ps(_mm256_max_ps(_mm256_fnmadd_ps(two, X0, _mm256_add_ps(sa, sb0)), tiny)); \
            __m256 c1 = _mm256_sqrt_ps(_mm256_max_ps(_mm256_fnmadd_ps(two, X1, _mm256_add_ps(sa, sb1)), tiny)); \
            c0 = _mm256_and_ps(c0, _mm256_castsi256_ps(mlo)); \
            c1 = _mm256_and_ps(c1, _mm256_castsi256_ps(mhi)); \
            _mm256_store_ps(c32 + 16 * (i + (q)), c0); \
            _mm256_store_ps(c32 + 16 * (i + (q)) + 8, c1); \
            mx = _mm256_max_ps(mx, _mm256_max_ps(c0, c1)); \
            mn = _mm256_min_ps(mn, _mm256_min_ps(_mm256_blendv_ps(inf, c0, _mm256_castsi256_ps(mlo)), \
                                                 _mm256_blendv_ps(inf, c1, _mm256_castsi256_ps(mhi)))); \
        }
#define ROW(q) (a + (i + (q) < n ? i + (q) : n - 1) * k)
    int i = 0;
    for (; n - i >= 6 && n - i != 7 && n - i != 8; i += 6) { /* 8 = 4 + 4, 7 = 4 + 4 (3 rows): less waste */
        const float *r0 = ROW(0), *r1 = ROW(1), *r2 = ROW(2), *r3 = ROW(3), *r4 = ROW(4), *r5 = ROW(5);
        __m256 x00 = zero, x01 = zero, x10 = zero, x11 = zero, x20 = zero, x21 = zero, x30 = zero, x31 = zero;
        __m256 x40 = zero, x41 = zero, x50 = zero, x51 = zero;
        for (int t = 0; t < k; t++) {
            const float *b0 = bt + t * n;
            __m256 bl = LD(b0, mlo), bh = LD(b0 + 8, mhi);
            /* in registers: otherwise the compiler folds each load into all the rows' FMAs, and
             * the loads, not the FMAs, bound the loop */
            __asm__("" : "+x"(bl), "+x"(bh));
            FM(x00, x01, _mm256_broadcast_ss(r0 + t)); FM(x10, x11, _mm256_broadcast_ss(r1 + t));
            FM(x20, x21, _mm256_broadcast_ss(r2 + t)); FM(x30, x31, _mm256_broadcast_ss(r3 + t));
            FM(x40, x41, _mm256_broadcast_ss(r4 + t)); FM(x50, x51, _mm256_broadcast_ss(r5 + t));
        }
        OUT(0, x00, x01) OUT(1, x10, x11) OUT(2, x20, x21) OUT(3, x30, x31) OUT(4, x40, x41) OUT(5, x50, x51)
    }
    for (; i < n; i += 4) {
        const float *r0 = ROW(0), *r1 = ROW(1), *r2 = ROW(2), *r3 = ROW(3);
        __m256 x00 = zero, x01 = zero, x10 = zero, x11 = zero, x20 = zero, x21 = zero, x30 = zero, x31 = zero;
        for (int t = 0; t < k; t++) {
            const float *b0 = bt + t * n;
            __m256 bl = LD(b0, mlo), bh = LD(b0 + 8, mhi);
            __asm__("" : "+x"(bl), "+x"(bh));
            FM(x00, x01, _mm256_broadcast_ss(r0 + t)); FM(x10, x11, _mm256_broadcast_ss(r1 + t));
            FM(x20, x21, _mm256_broadcast_ss(r2 + t)); FM(x30, x31, _mm256_broadcast_ss(r3 + t));
        }
        OUT(0, x00, x01) OUT(1, x10, x11) OUT(2, x20, x21) OUT(3, x30, x31)
    }
#undef FM
#undef OUT
#undef ROW
#undef LD
    float fx[8] __attribute__((aligned(32))), fn[8] __attribute__((aligned(32)));
    _mm256_store_ps(fx, mx);
    _mm256_store_ps(fn, mn);
    double cmax = 0, cmin = INFINITY, sa = 0, sbm = 0;
    for (int j = 0; j < 8; j++) { cmax = fx[j] > cmax ? fx[j] : cmax; cmin = fn[j] < cmin ? fn[j] : cmin; }
    for (int j = 0; j < n; j++) { sa = sqa[j] > sa ? sqa[j] : sa; sbm = sqb[j] > sbm ? sqb[j] : sbm; }
    /* the bound of costs32 with m = k: one chain of k FMAs (k roundings; costs32 sums two chains of
     * ceil(k / 2), m = ceil(k / 2) + 1); vsqrtps is within the 8 u allowed there for the root */
    const double u = 5.9604644775390625e-8;
    const double m = k, e2 = (m * u / (1 - m * u) + 4.1 * u) * (sa + sbm) + 1e-30, s = sqrt(e2);
    *cmax_out = cmax;
    if (!(sa + sbm < 1e30)) return INFINITY;
    return (cmin >= s ? e2 * (1 + 8.1 * u) / cmin : s) + 8.1 * u * cmax + u * (sqrt(sa) + sqrt(sbm)) * 1.000001;
}

/* sum_i a_i . b_col(i) / den in double (a, b: n x k) */
static inline __attribute__((always_inline)) double
a2_score(const int n, const int k, const double *restrict a, const double *restrict b, const int *col, double den)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    double tail = 0;
    for (int i = 0; i < n; i++) {
        const double *ai = a + i * k, *bj = b + col[i] * k;
        int t = 0;
        for (; t + 16 <= k; t += 16) {
            s0 = _mm256_fmadd_pd(_mm256_loadu_pd(ai + t), _mm256_loadu_pd(bj + t), s0);
            s1 = _mm256_fmadd_pd(_mm256_loadu_pd(ai + t + 4), _mm256_loadu_pd(bj + t + 4), s1);
            s2 = _mm256_fmadd_pd(_mm256_loadu_pd(ai + t + 8), _mm256_loadu_pd(bj + t + 8), s2);
            s3 = _mm256_fmadd_pd(_mm256_loadu_pd(ai + t + 12), _mm256_loadu_pd(bj + t + 12), s3);
        }
        for (; t + 4 <= k; t += 4) s0 = _mm256_fmadd_pd(_mm256_loadu_pd(ai + t), _mm256_loadu_pd(bj + t), s0);
        for (; t < k; t++) tail += ai[t] * bj[t];
    }
    double h[4] __attribute__((aligned(32)));
    _mm256_store_pd(h, _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3)));
    const double sum = (h[0] + h[1]) + (h[2] + h[3]) + tail;
    return den > 0 ? sum / den : 0.0;
}

/* The float solver runs A2_SLOTS problems interleaved, one Dijkstra step of each in turn: the
 * design of the AVX-512 slot_*() functions (see there), with 16 columns in two ymm registers,
 * except that the end of a search is a branch, resolved early (see a2_step, a2_pick). Measured
 * on AMD Zen 3 (C harness, solver + checks + fallbacks, us per pair): 0.87 with the branch-free
 * step of the AVX-512 kernel (best with 2 slots), 0.72 with a branch on the search end taken in
 * the step itself (4 slots), 0.63 with the branch resolved early (3, 4 or 6 slots alike). */
#define A2_SLOTS 4

typedef struct {
    float c32[256]; /* float costs, row stride 16, lanes >= n zero */
    int32_t key[16], pred[16], path[16], row4col[16]; /* packed labels; tree; path masks; matching */
    int32_t dv[16]; /* all ones: column scanned in this search, or lane >= n */
    float v[16]; /* column duals */
    int col4row[16];
    int f, ok32; /* root row of the current search; 0: the float solver cannot be used */
    int jm, irow; /* next column to scan (-1: none left, breakdown) and its row (-1: free) */
    int32_t mubits; /* its label */
    uint32_t freerows;
    double cmax, delta; /* largest float cost; bound on |float cost - exact distance| */
    int64_t t, p, q; /* problem index (-1 when empty); its pair of templates */
} __attribute__((aligned(32))) a2_slot;

/* lanes >= n: all ones */
static inline __m256i a2_invalid0(const int n) { return _mm256_cmpgt_epi32(_mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8), _mm256_set1_epi32(n)); }
static inline __m256i a2_invalid1(const int n) { return _mm256_cmpgt_epi32(_mm256_setr_epi32(9, 10, 11, 12, 13, 14, 15, 16), _mm256_set1_epi32(n)); }

typedef struct {
    int n, k;
    const double *A, *BT, *B, *sqa, *sqb, *na, *nb; /* pairs: rows p0, p0 + 1, ... x columns [q0, q0 + nq) */
    const float *A32, *BT32;
    const double *sqa32, *sqb32;
    int64_t p0, q0, nq, cb, pi, qi;
    double *out;
    uint8_t *cols; /* assignment of pair (p, q) at ((p - p0) * nq + q - q0) * 16 */
    const double *cost; /* cost matrices (tests: float solver and check only); results: */
    int64_t *col_out, *unique;
    int64_t nfb, n32, n64; /* solved in SciPy's order; not settled by the float check; = nfb */
    int failed;
} a2_src;

static inline __m256i a2_lanes0(void) { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
static inline __m256i a2_lanes1(void) { return _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15); }
static inline __m256i a2_bits0(void) { return _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128); }
static inline __m256i a2_bits1(void) { return _mm256_setr_epi32(256, 512, 1024, 2048, 4096, 8192, 16384, 32768); }
static inline __m256i a2_vmask(uint32_t m, __m256i bits) /* lanes whose bit is set in m: all ones */
{
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)m), bits), bits);
}
static inline __m256 a2_label(__m256i k) { return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_set1_epi32(15), k)); }

/* Problem t into slot S: float costs, column reduction, free rows (see slot_load). */
static inline __attribute__((always_inline)) void
a2_load(const int n, const int k, a2_slot *restrict S, a2_src *restrict src, int64_t t)
{
    const uint32_t valid = (1u << n) - 1;
    double cmax = 0;
    S->t = t;
    if (src->cost) {
        const double *c = src->cost + t * n * n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                const double x = c[i * n + j];
                S->c32[16 * i + j] = (float)x; /* rounded to nearest: off by <= 2^-24 |x| */
                cmax = fabs(x) > cmax ? fabs(x) : cmax;
            }
        S->delta = 5.9604645e-8 * cmax + 1e-45;
    } else {
        const int64_t p = src->pi, q = src->qi;
        if (++src->qi == src->q0 + src->nq) { src->qi = src->q0; src->pi++; }
        S->p = p;
        S->q = q;
        S->delta = a2_costs(n, k, src->A32 + p * n * k, src->BT32 + q * n * k, src->sqa32 + p * n,
                            src->sqb32 + q * n, S->c32, &cmax);
    }
    S->cmax = cmax;
    S->ok32 = cmax < 1e30 && S->delta < 1e30; /* float range, with room for the duals */
    /* column minima and their first rows, in registers (left to itself, the compiler made masked
     * stores and branches of it) */
    int32_t arg[16] __attribute__((aligned(32)));
    __m256 v0 = _mm256_load_ps(S->c32), v1 = _mm256_load_ps(S->c32 + 8);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    for (int i = 1; i < n; i++) {
        const __m256 x0 = _mm256_load_ps(S->c32 + 16 * i), x1 = _mm256_load_ps(S->c32 + 16 * i + 8);
        const __m256 l0 = _mm256_cmp_ps(x0, v0, _CMP_LT_OQ), l1 = _mm256_cmp_ps(x1, v1, _CMP_LT_OQ);
        const __m256i iv = _mm256_set1_epi32(i);
        v0 = _mm256_blendv_ps(v0, x0, l0);
        v1 = _mm256_blendv_ps(v1, x1, l1);
        a0 = _mm256_blendv_epi8(a0, iv, _mm256_castps_si256(l0));
        a1 = _mm256_blendv_epi8(a1, iv, _mm256_castps_si256(l1));
    }
    _mm256_store_ps(S->v, v0);
    _mm256_store_ps(S->v + 8, v1);
    _mm256_store_si256((__m256i *)arg, a0);
    _mm256_store_si256((__m256i *)(arg + 8), a1);
    uint32_t taken = 0;
    for (int j = 0; j < 16; j++) S->row4col[j] = -1;
    for (int j = 0; j < n; j++) { /* without branches: a column goes to its row if the row is free */
        const int i = arg[j];
        const uint32_t fr = ~taken >> i & 1u;
        taken |= 1u << i;
        S->row4col[j] = fr ? i : -1;
    }
    S->freerows = S->ok32 ? ~taken & valid : 0;
}

/* Choose the next column to scan (least label among the unscanned) and look up its row, for the
 * slot's next step: its branch (search ends or not) then depends on data computed a round
 * earlier, so a misprediction is found early and discards little work. k, d: keys and scanned
 * masks in registers; stores them with jm marked scanned. */
static inline __attribute__((always_inline)) void
a2_pick(a2_slot *restrict S, __m256i k0, __m256i k1, __m256i d0, __m256i d1)
{
    const __m256i none = _mm256_set1_epi32(A2_KEY_NONE);
    __m256i m = _mm256_min_epi32(_mm256_blendv_epi8(k0, none, d0), _mm256_blendv_epi8(k1, none, d1));
    m = _mm256_min_epi32(m, _mm256_permute2x128_si256(m, m, 1));
    m = _mm256_min_epi32(m, _mm256_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm256_min_epi32(m, _mm256_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1))); /* the minimum in every lane */
    const int kmin = _mm256_cvtsi256_si32(m);
    const int jm = kmin & 15;
    const __m256i jmv = _mm256_and_si256(m, _mm256_set1_epi32(15));
    _mm256_store_si256((__m256i *)S->key, k0);
    _mm256_store_si256((__m256i *)(S->key + 8), k1);
    _mm256_store_si256((__m256i *)S->dv, _mm256_or_si256(d0, _mm256_cmpeq_epi32(a2_lanes0(), jmv)));
    _mm256_store_si256((__m256i *)(S->dv + 8), _mm256_or_si256(d1, _mm256_cmpeq_epi32(a2_lanes1(), jmv)));
    S->jm = kmin == A2_KEY_NONE ? -1 : jm;
    S->mubits = kmin & ~15;
    S->irow = S->row4col[jm];
}

static inline __attribute__((always_inline)) void a2_start(const int n, a2_slot *restrict S)
{
    const int f = __builtin_ctz(S->freerows);
    S->freerows &= S->freerows - 1;
    S->f = f;
    _mm256_store_si256((__m256i *)S->key, a2_pack(_mm256_sub_ps(_mm256_load_ps(S->c32 + 16 * f), _mm256_load_ps(S->v)), a2_lanes0()));
    _mm256_store_si256((__m256i *)(S->key + 8),
                       a2_pack(_mm256_sub_ps(_mm256_load_ps(S->c32 + 16 * f + 8), _mm256_load_ps(S->v + 8)), a2_lanes1()));
    _mm256_store_si256((__m256i *)S->pred, _mm256_set1_epi32(f));
    _mm256_store_si256((__m256i *)(S->pred + 8), _mm256_set1_epi32(f));
    _mm256_store_si256((__m256i *)S->path, a2_bits0());
    _mm256_store_si256((__m256i *)(S->path + 8), a2_bits1());
    a2_pick(S, _mm256_load_si256((const __m256i *)S->key), _mm256_load_si256((const __m256i *)(S->key + 8)),
            a2_invalid0(n), a2_invalid1(n));
}

/* One Dijkstra step: scan the column chosen by a2_pick; as slot_step, returns 1 when solved, 2
 * when the float solver broke down, else 0. Unlike slot_step, the end of a search (17 % of the
 * steps) is a branch, resolved early (see a2_pick): on AMD Zen 3 that costs less than preparing
 * the end in every step under masks (the whole kernel ~15 % faster). */
static inline __attribute__((always_inline)) int a2_step(const int n, a2_slot *restrict S)
{
    const __m256i l0 = a2_lanes0(), l1 = a2_lanes1(), b0 = a2_bits0(), b1 = a2_bits1();
    const int jm = S->jm, i = S->irow;
    if (jm < 0) return 2;
    const __m256 mu = _mm256_castsi256_ps(_mm256_set1_epi32(S->mubits));
    __m256i k0 = _mm256_load_si256((const __m256i *)S->key), k1 = _mm256_load_si256((const __m256i *)(S->key + 8));
    const __m256i d0 = _mm256_load_si256((const __m256i *)S->dv), d1 = _mm256_load_si256((const __m256i *)(S->dv + 8));
    __m256 v0 = _mm256_load_ps(S->v), v1 = _mm256_load_ps(S->v + 8);
    if (i >= 0) {
        /* relax from the row matched to jm: label via row i as (rv + mu) - rv_jm */
        const float *ci = S->c32 + 16 * i;
        const __m256 rv0 = _mm256_sub_ps(_mm256_load_ps(ci), v0), rv1 = _mm256_sub_ps(_mm256_load_ps(ci + 8), v1);
        const __m256 rvjm = _mm256_set1_ps(ci[jm] - S->v[jm]);
        const __m256i r0 = a2_pack(_mm256_sub_ps(_mm256_add_ps(rv0, mu), rvjm), l0);
        const __m256i r1 = a2_pack(_mm256_sub_ps(_mm256_add_ps(rv1, mu), rvjm), l1);
        const __m256i u0 = _mm256_andnot_si256(d0, _mm256_cmpgt_epi32(k0, r0));
        const __m256i u1 = _mm256_andnot_si256(d1, _mm256_cmpgt_epi32(k1, r1));
        const __m256i iv = _mm256_set1_epi32(i);
        k0 = _mm256_blendv_epi8(k0, r0, u0);
        k1 = _mm256_blendv_epi8(k1, r1, u1);
        _mm256_store_si256((__m256i *)S->pred, _mm256_blendv_epi8(_mm256_load_si256((const __m256i *)S->pred), iv, u0));
        _mm256_store_si256((__m256i *)(S->pred + 8),
                           _mm256_blendv_epi8(_mm256_load_si256((const __m256i *)(S->pred + 8)), iv, u1));
        const __m256i pj = _mm256_set1_epi32(S->path[jm]);
        _mm256_store_si256((__m256i *)S->path,
                           _mm256_blendv_epi8(_mm256_load_si256((const __m256i *)S->path), _mm256_or_si256(pj, b0), u0));
        _mm256_store_si256((__m256i *)(S->path + 8),
                           _mm256_blendv_epi8(_mm256_load_si256((const __m256i *)(S->path + 8)), _mm256_or_si256(pj, b1), u1));
        a2_pick(S, k0, k1, d0, d1);
        return 0;
    }
    /* column jm is free: the search ends. Dual update of the scanned valid columns (v += d - mu;
     * adds 0 at jm), augmentation along jm's path, next root */
    const __m256i inv0 = a2_invalid0(n), inv1 = a2_invalid1(n);
    const __m256 w0 = _mm256_castsi256_ps(_mm256_andnot_si256(inv0, d0));
    const __m256 w1 = _mm256_castsi256_ps(_mm256_andnot_si256(inv1, d1));
    v0 = _mm256_add_ps(v0, _mm256_and_ps(w0, _mm256_sub_ps(a2_label(k0), mu)));
    v1 = _mm256_add_ps(v1, _mm256_and_ps(w1, _mm256_sub_ps(a2_label(k1), mu)));
    _mm256_store_ps(S->v, v0);
    _mm256_store_ps(S->v + 8, v1);
    const uint32_t pathjm = (uint32_t)S->path[jm];
    const __m256i p0 = _mm256_load_si256((const __m256i *)S->pred), p1 = _mm256_load_si256((const __m256i *)(S->pred + 8));
    _mm256_store_si256((__m256i *)S->row4col,
                       _mm256_blendv_epi8(_mm256_load_si256((const __m256i *)S->row4col), p0, a2_vmask(pathjm, b0)));
    _mm256_store_si256((__m256i *)(S->row4col + 8),
                       _mm256_blendv_epi8(_mm256_load_si256((const __m256i *)(S->row4col + 8)), p1, a2_vmask(pathjm, b1)));
    const uint32_t fr = S->freerows;
    if (!fr) return 1;
    const int f2 = __builtin_ctz(fr);
    S->freerows = fr & (fr - 1);
    S->f = f2;
    const __m256i fv = _mm256_set1_epi32(f2);
    _mm256_store_si256((__m256i *)S->pred, fv);
    _mm256_store_si256((__m256i *)(S->pred + 8), fv);
    _mm256_store_si256((__m256i *)S->path, b0);
    _mm256_store_si256((__m256i *)(S->path + 8), b1);
    a2_pick(S, a2_pack(_mm256_sub_ps(_mm256_load_ps(S->c32 + 16 * f2), v0), l0),
            a2_pack(_mm256_sub_ps(_mm256_load_ps(S->c32 + 16 * f2 + 8), v1), l1), inv0, inv1);
    return 0;
}

/* No cycle in the graph of tight edges on columns (adj[j0]: the columns j != j0 at which the row
 * holding j0 has a tight edge)? Peels the columns without an edge into the kept set, all columns
 * at once per round (as slot_certify32): a cycle <=> something is left. Six rounds without a
 * data-dependent exit first: a scalar peel's branches were mispredicted several times per
 * problem. */
static inline __attribute__((always_inline)) int a2_acyclic(const int32_t *adj)
{
    const __m256i a0 = _mm256_load_si256((const __m256i *)adj), a1 = _mm256_load_si256((const __m256i *)(adj + 8));
    const __m256i z = _mm256_setzero_si256();
#define A2_KEEP(s) ((uint32_t)(~_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(a0, s), z))) & 0xFF) | \
                    (uint32_t)(~_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(a1, s), z))) & 0xFF) << 8)
    uint32_t alive = A2_KEEP(_mm256_set1_epi32(-1));
    for (int it = 0; it < 6; it++) alive &= A2_KEEP(_mm256_set1_epi32((int)alive));
    while (alive) {
        const uint32_t keep = A2_KEEP(_mm256_set1_epi32((int)alive)) & alive;
        if (keep == alive) break;
        alive = keep;
    }
#undef A2_KEEP
    return alive == 0;
}

/* Is the slot's float solution (col4row, float duals v) the unique optimum of the double costs c
 * (row stride n, largest cmax) with margin eps = 1e-9 cmax? slot_certify's argument (see there),
 * A = 1e-6 cmax: on random templates most pairs the float check leaves are settled here, without
 * the double solver. */
static inline __attribute__((always_inline)) int a2_certify64(const int n, const a2_slot *restrict S, const double *restrict c,
                                                             const double cmax)
{
    const double eps = 1e-9 * cmax + 1e-300, A = 1e-6 * cmax, T = eps + (n - 1) * A, vlim = 1e3 * cmax;
    double vd[16];
    int bad = 0;
    for (int j = 0; j < n; j++) { vd[j] = S->v[j]; bad |= !(fabs(vd[j]) <= vlim); }
    int32_t adj[16] __attribute__((aligned(32))) = {0};
    for (int i = 0; i < n; i++) {
        const double *ci = c + i * n;
        const int j0 = S->col4row[i];
        const double ui = ci[j0] - vd[j0];
        uint32_t t = 0;
        for (int j = 0; j < n; j++) {
            const double r = ci[j] - vd[j] - ui;
            t |= (uint32_t)(r <= T) << j;
            bad |= !(r >= -A);
        }
        adj[j0] = (int32_t)(t & ~(1u << j0));
    }
    return !bad && a2_acyclic(adj);
}

/* Is the slot's float solution (col4row, duals v) the unique optimum of the exact costs d,
 * |c32 - d| <= delta, with margin eps = 1e-9 cmax? The argument of slot_certify32 (see there),
 * in the same float arithmetic. */
static inline __attribute__((always_inline)) int a2_certify(const int n, a2_slot *restrict S)
{
    const float *restrict c = S->c32, *restrict v = S->v;
    const uint32_t valid = (1u << n) - 1;
    const __m256 v0 = _mm256_load_ps(v), v1 = _mm256_load_ps(v + 8);
    /* largest |v_j| (columns >= n hold 0) */
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m128 mx = _mm_max_ps(_mm256_castps256_ps128(_mm256_max_ps(_mm256_and_ps(v0, absm), _mm256_and_ps(v1, absm))),
                           _mm256_extractf128_ps(_mm256_max_ps(_mm256_and_ps(v0, absm), _mm256_and_ps(v1, absm)), 1));
    mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
    mx = _mm_max_ss(mx, _mm_shuffle_ps(mx, mx, 1));
    const double vmax = _mm_cvtss_f32(mx);
    const double eps = 1e-9 * S->cmax + 1e-300;
    const double E = S->delta + 2.01 * 5.9604644775390625e-8 * 2 * (S->cmax + vmax) + 1e-44;
    const double A = 2e-6 * S->cmax, T = eps + (n - 1) * A + 2 * n * E;
    const __m256 vT = _mm256_set1_ps((float)(T * (1 + 1e-6))), vA = _mm256_set1_ps(-(float)(A * (1 - 1e-6)));
    /* tight edges by column: the row holding column j0 has r <= T at the columns in adj[j0] */
    int32_t adj[16] __attribute__((aligned(32))) = {0};
    uint32_t bad = 0;
    for (int i = 0; i < n; i++) {
        const int j0 = S->col4row[i];
        const __m256 ui = _mm256_set1_ps(c[16 * i + j0] - v[j0]);
        const __m256 r0 = _mm256_sub_ps(_mm256_sub_ps(_mm256_load_ps(c + 16 * i), v0), ui);
        const __m256 r1 = _mm256_sub_ps(_mm256_sub_ps(_mm256_load_ps(c + 16 * i + 8), v1), ui);
        const uint32_t t = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(r0, vT, _CMP_LE_OQ)) |
                           (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(r1, vT, _CMP_LE_OQ)) << 8;
        bad |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(r0, vA, _CMP_NGE_UQ)) |
               (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(r1, vA, _CMP_NGE_UQ)) << 8; /* NaN: bad */
        adj[j0] = (int32_t)(t & valid & ~(1u << j0));
    }
    if (bad & valid) return 0;
    return a2_acyclic(adj);
}

/* Finish the slot's problem: float check; else double costs and the portable solvers; result. */
static inline __attribute__((always_inline)) void
a2_finish(const int n, const int k, a2_slot *restrict S, a2_src *restrict src, ws_t *w)
{
    int ok = 0;
    if (S->ok32) {
        for (int j = 0; j < n; j++) S->col4row[S->row4col[j]] = j;
        ok = a2_certify(n, S);
    } else {
        for (int i = 0; i < n; i++) S->col4row[i] = i; /* no float solution (tests: reported uncertified) */
    }
    const int *col = S->col4row;
    if (src->cost) {
        for (int i = 0; i < n; i++) src->col_out[S->t * n + i] = col[i];
        src->unique[S->t] = ok;
        return;
    }
    if (!ok) {
        src->n32++;
        const int64_t p = S->p, q = S->q;
        const double cm = block_costs(n, k, src->A + p * n * k, src->BT + q * n * k, src->sqa + p * n,
                                      src->sqb + q * n, w->g, w->c);
        if (!(S->ok32 && a2_certify64(n, S, w->c, cm))) { /* else: the float solution, checked in double */
            src->n64++;
            const int r = solve(n, w->c, cm, w);
            if (r < 0) { src->failed = 1; return; }
            src->nfb += r;
            col = w->col;
        }
    }
    uint8_t *dst = src->cols + ((S->p - src->p0) * src->nq + S->q - src->q0) * 16;
    for (int i = 0; i < n; i++) dst[i] = (uint8_t)col[i];
}

static inline __attribute__((always_inline)) int
a2_advance(const int n, const int k, a2_slot *restrict S, a2_src *restrict src, ws_t *w, int64_t *next, int64_t count)
{
    for (;;) {
        if (S->t >= 0) { a2_finish(n, k, S, src, w); S->t = -1; }
        if (*next >= count || src->failed) return 0;
        a2_load(n, k, S, src, (*next)++);
        if (S->freerows) { a2_start(n, S); return 1; }
    }
}

/* Solve problems 0..count-1 of src, A2_SLOTS at a time; then the tile's scores (pairs). */
static inline __attribute__((always_inline)) void
a2_stream(const int n, const int k, a2_src *restrict src, int64_t count, a2_slot *slots, ws_t *w)
{
    int64_t next = 0;
    uint32_t active = 0;
    for (int s = 0; s < A2_SLOTS; s++) {
        slots[s].t = -1;
        memset(slots[s].c32, 0, sizeof slots[s].c32); /* rows >= n: read, never used */
        if (a2_advance(n, k, &slots[s], src, w, &next, count)) active |= 1u << s;
    }
    while (active) {
        for (int s = 0; s < A2_SLOTS; s++) {
            if (!(active >> s & 1)) continue;
            const int r = a2_step(n, &slots[s]);
            if (r == 2) slots[s].ok32 = 0; /* the double solvers take over */
            if (r && !a2_advance(n, k, &slots[s], src, w, &next, count)) active &= ~(1u << s);
        }
    }
    if (src->cost || src->failed) return;
    const int64_t np = count / src->nq;
    for (int64_t dq = 0; dq < src->nq; dq++) /* b's template stays in L1 for the tile's rows */
        for (int64_t dp = 0; dp < np; dp++) {
            const int64_t p = src->p0 + dp, q = src->q0 + dq;
            int col[16];
            const uint8_t *cc = src->cols + (dp * src->nq + dq) * 16;
            for (int i = 0; i < n; i++) col[i] = cc[i];
            src->out[p * src->cb + q] = a2_score(n, k, src->A + p * n * k, src->B + q * n * k, col, src->na[p] * src->nb[q]);
        }
}

static void a2_stream_any(int n, a2_src *src, int64_t count, a2_slot *slots, ws_t *w)
{
    const int k = src->k;
    if (n == 16 && k == 32) a2_stream(16, 32, src, count, slots, w);
    else if (n == 16 && k == 8) a2_stream(16, 8, src, count, slots, w);
    else if (n == 8 && k == 16) a2_stream(8, 16, src, count, slots, w);
    else if (n == 16) a2_stream(16, k, src, count, slots, w);
    else a2_stream(n, k, src, count, slots, w);
}

/* Scores of rows [p0, p1) of a against all of b, in tiles of 64 templates of b. */
static int a2_rows(const a2_src *args, int64_t p0, int64_t p1, a2_slot *slots, uint8_t *cols, ws_t *w,
                   int64_t *nfb, int64_t *n32, int64_t *n64)
{
    const int64_t qt = 64, cb = args->cb;
    for (int64_t q0 = 0; q0 < cb; q0 += qt) {
        const int64_t q1 = q0 + qt < cb ? q0 + qt : cb;
        a2_src src = *args;
        src.p0 = src.pi = p0;
        src.q0 = src.qi = q0;
        src.nq = q1 - q0;
        src.cols = cols;
        src.nfb = src.n32 = src.n64 = 0;
        src.failed = 0;
        a2_stream_any(src.n, &src, (p1 - p0) * (q1 - q0), slots, w);
        *nfb += src.nfb;
        *n32 += src.n32;
        *n64 += src.n64;
        if (src.failed) return -1;
    }
    return 0;
}

/* Float solver and check on cost matrices (tests). */
static int a2_lsa_float(const double *cost, int64_t count, int n, int64_t *col_out, int64_t *unique, ws_t *w)
{
    a2_slot *slots = aligned_alloc(32, sizeof(a2_slot) * A2_SLOTS);
    if (!slots) return -1;
    a2_src src;
    memset(&src, 0, sizeof src);
    src.n = n;
    src.nq = 1;
    src.cost = cost;
    src.col_out = col_out;
    src.unique = unique;
    a2_stream_any(n, &src, count, slots, w);
    free(slots);
    return src.failed ? -1 : 0;
}

#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static int cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static __attribute__((unused)) int cpu_has_avx2(void) { return 0; }
#endif

/* Kernels: 1 portable (double), 2 AVX2 + FMA (float, B <= 16), 3 AVX-512 (float, B <= 16; only in
 * builds with AVX-512 enabled, i.e. -march=native on such a CPU). */
int kernel_available(int64_t kernel)
{
    switch (kernel) {
    case 1: return 1;
#ifdef HAVE_AVX2_KERNEL
    case 2: return cpu_has_avx2();
#endif
#ifdef HAVE_STREAM16
    case 3: return 1;
#endif
    default: return 0;
    }
}

/* The kernel that runs for `kernel` (0 = the best this CPU supports), or -1 when unavailable. */
int pick_kernel(int64_t kernel)
{
    if (kernel == 0) return kernel_available(3) ? 3 : kernel_available(2) ? 2 : 1;
    return kernel_available(kernel) ? (int)kernel : -1;
}

/* All-pairs scores out (ca, cb). A: (ca, n, k) blocks of a; BT: (cb, k, n) blocks of b transposed;
 * sqa (ca, n), sqb (cb, n): squared block norms; na, nb: template norms; A32, BT32: float copies
 * of A, BT, with squared block norms sqa32, sqb32; B: (cb, n, k) blocks of b (AVX-512 path).
 * stats[0] += pairs that needed the SciPy-order fallback, stats[1] += pairs the float check did
 * not settle, stats[2] += pairs the double check did not settle. Returns 0, or -1 on failure
 * (non-finite input). */
int pemiu_pairwise(const double *A, const double *BT, const double *sqa, const double *sqb, const double *na,
                   const double *nb, const float *A32, const float *BT32, const double *B, const double *sqa32,
                   const double *sqb32, int64_t ca, int64_t cb, int64_t nblk, int64_t k, double *out, int64_t *stats,
                   int64_t kernel)
{
    int failed = 0;
    int64_t fb = 0, n32 = 0, n64 = 0;
    const int kern = pick_kernel(kernel);
    if (kern < 0) return -2;
#ifndef HAVE_AVX2_KERNEL
    (void)A32; (void)BT32; (void)B; (void)sqa32; (void)sqb32; /* float kernels only */
#endif
    const int64_t pt = 8; /* tiles: 8 templates of a (x 64 of b) stay in cache */
    #pragma omp parallel reduction(|:failed) reduction(+:fb, n32, n64)
    {
        ws_t *w = ws_new(nblk);
#ifdef HAVE_STREAM16
        slot_t *slots = aligned_alloc(64, sizeof(slot_t) * SLOTS);
        uint8_t *cols = malloc(16 * pt * 64);
        if (!slots || !cols) failed = 1;
#endif
#ifdef HAVE_AVX2_KERNEL
        a2_slot *s2 = aligned_alloc(32, sizeof(a2_slot) * A2_SLOTS);
        uint8_t *cols2 = malloc(16 * pt * 64);
        if (!s2 || !cols2) failed = 1;
        const a2_src args = {(int)nblk, (int)k, A, BT, B, sqa, sqb, na, nb, A32, BT32, sqa32, sqb32,
                             0, 0, 0, cb, 0, 0, out, NULL, NULL, NULL, NULL, 0, 0, 0, 0};
#endif
        if (!ws_ok(w)) failed = 1;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t p0 = 0; p0 < ca; p0 += pt) {
            if (failed) continue;
            int64_t p1 = p0 + pt < ca ? p0 + pt : ca;
#ifdef HAVE_AVX2_KERNEL
            if (kern == 2 && nblk <= 16) {
                if (a2_rows(&args, p0, p1, s2, cols2, w, &fb, &n32, &n64)) failed = 1;
                continue;
            }
#endif
#ifdef HAVE_STREAM16
            if (kern == 3 && nblk <= 16) {
                const int64_t qt = 64;
                for (int64_t q0 = 0; q0 < cb && !failed; q0 += qt) {
                    int64_t q1 = q0 + qt < cb ? q0 + qt : cb;
                    source_t src = {(int)nblk, (int)k, A, BT, sqa, sqb, na, nb, A32, BT32, B, sqa32, sqb32,
                                    p0, q0, q1 - q0, cb, p0, q0, out, cols,
                                    NULL, NULL, NULL, 3, 0, 0, 0, 0};
                    stream16_any((int)nblk, &src, (p1 - p0) * (q1 - q0), slots, w);
                    fb += src.nfb;
                    n32 += src.n32;
                    n64 += src.n64;
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
        free(cols);
#endif
#ifdef HAVE_AVX2_KERNEL
        free(s2);
        free(cols2);
#endif
        ws_free(w);
    }
    stats[0] += fb;
    stats[1] += n32;
    stats[2] += n64;
    return failed ? -1 : 0;
}

/* Assignments of a batch of n x n cost matrices (to test the solvers against SciPy). mode 0: the
 * solver of pemiu_pairwise (certified fast solver, SciPy-order fallback; equals SciPy); 1: the
 * SciPy-order solver only; 2: the fast solver only, unique[t] = its certificate; 3: the float
 * solver and its float check only (kernels 2 and 3, n <= 16). kernel: as pick_kernel (the
 * AVX2 kernel's modes 0-2 are the portable solvers). Returns the number of fallbacks, or -1 on
 * failure. */
int lsa_batch(const double *cost, int64_t count, int64_t n, int64_t *col_out, int64_t mode, int64_t *unique,
              int64_t kernel)
{
    const int kern = pick_kernel(kernel);
    ws_t *w = ws_new(n);
    int64_t fb = 0;
    if (kern < 0 || !ws_ok(w) || (mode == 2 && n > FASTN)) { ws_free(w); return -1; }
    if (mode == 3 && (n > 16 || kern == 1)) { ws_free(w); return -1; }
#ifdef HAVE_AVX2_KERNEL
    if (mode == 3 && kern == 2) {
        int r = a2_lsa_float(cost, count, (int)n, col_out, unique, w);
        ws_free(w);
        return r;
    }
#endif
#ifdef HAVE_STREAM16
    if (kern == 3 && mode != 1 && n <= 16) {
        slot_t *slots = aligned_alloc(64, sizeof(slot_t) * SLOTS);
        source_t src = {(int)n, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                        0, 0, 1, 0, 0, 0, NULL, NULL, cost, col_out, mode >= 2 ? unique : NULL,
                        mode == 0 ? 3 : mode == 2 ? 2 : 1, 0, 0, 0, 0};
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
/* Returns the previous count so the caller can restore it: the OpenMP runtime may be shared
   with torch, whose thread count must not change behind its back. */
int set_threads(int t) { int before = omp_get_max_threads(); omp_set_num_threads(t > 0 ? t : 1); return before; }
int has_openmp(void) { return 1; }
#else
int set_threads(int t) { (void)t; return 1; }
int has_openmp(void) { return 0; }
#endif
