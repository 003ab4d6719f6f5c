/* AVX-512 kernel (B <= 16), first half: slots, float costs, column reduction, Dijkstra steps. Part of pemiu.c (one translation unit; included there). */
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
