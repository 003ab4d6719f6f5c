/* AVX2 + FMA kernel (B <= 16), first half: float costs, double scores, slots, column reduction, Dijkstra steps. Part of pemiu.c (one translation unit; included there). */
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
    /* one pass: R = 6 or 4 rows (a compile-time constant; rows 4 and 5 vanish when R = 4) */
#define PASS(R) do { \
        const float *r0 = ROW(0), *r1 = ROW(1), *r2 = ROW(2), *r3 = ROW(3), *r4 = ROW(4), *r5 = ROW(5); \
        __m256 x00 = zero, x01 = zero, x10 = zero, x11 = zero, x20 = zero, x21 = zero, x30 = zero, x31 = zero; \
        __m256 x40 = zero, x41 = zero, x50 = zero, x51 = zero; \
        for (int t = 0; t < k; t++) { \
            const float *b0 = bt + t * n; \
            __m256 bl = LD(b0, mlo), bh = LD(b0 + 8, mhi); \
            /* in registers: otherwise the compiler folds each load into all the rows' FMAs, and \
             * the loads, not the FMAs, bound the loop */ \
            __asm__("" : "+x"(bl), "+x"(bh)); \
            FM(x00, x01, _mm256_broadcast_ss(r0 + t)); FM(x10, x11, _mm256_broadcast_ss(r1 + t)); \
            FM(x20, x21, _mm256_broadcast_ss(r2 + t)); FM(x30, x31, _mm256_broadcast_ss(r3 + t)); \
            if ((R) == 6) { FM(x40, x41, _mm256_broadcast_ss(r4 + t)); FM(x50, x51, _mm256_broadcast_ss(r5 + t)); } \
        } \
        OUT(0, x00, x01) OUT(1, x10, x11) OUT(2, x20, x21) OUT(3, x30, x31) \
        if ((R) == 6) { OUT(4, x40, x41) OUT(5, x50, x51) } \
    } while (0)
    int i = 0;
    for (; n - i >= 6 && n - i != 7 && n - i != 8; i += 6) PASS(6); /* 8 = 4 + 4, 7 = 4 + 4 (3 rows): less waste */
    for (; i < n; i += 4) PASS(4);
#undef PASS
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
