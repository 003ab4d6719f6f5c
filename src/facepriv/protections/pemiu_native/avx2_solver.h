/* AVX2 + FMA kernel (B <= 32), first half: float costs, double scores, slots, column reduction,
 * Dijkstra steps. Part of pemiu.c (one translation unit; included there).
 * A row of B columns lives in NV ymm registers of 8 floats: NV = 2 for B <= 16, 4 for B <= 32.
 * Every function takes NV as its first argument and is always inlined with a constant NV, so the
 * loops over the NV vectors unroll and their arrays stay in registers. */
#define A2_KEY_NONE 0x7FFFFFFF
#define A2_MAXN 32 /* columns of a slot row */
#define A2_UNROLL _Pragma("GCC unroll 8")

/* lanes 8h .. 8h + 7 and their column bits */
static const int32_t a2_lane_tab[A2_MAXN] __attribute__((aligned(32))) = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static inline __m256i a2_lanes(const int h) { return _mm256_load_si256((const __m256i *)(a2_lane_tab + 8 * h)); }
static inline __m256i a2_bits(const int h) { return _mm256_sllv_epi32(_mm256_set1_epi32(1), a2_lanes(h)); }
/* lanes >= n: all ones */
static inline __m256i a2_invalid(const int n, const int h)
{
    return _mm256_cmpgt_epi32(_mm256_add_epi32(a2_lanes(h), _mm256_set1_epi32(1)), _mm256_set1_epi32(n));
}
/* low bits of a packed key that hold the column: 4 for B <= 16, 5 for B <= 32 (labels perturbed
 * by < 16 or 32 float ulp; the checks do not rely on the solver's accuracy, see pack_key) */
static inline int a2_cm(const int NV) { return 8 * NV - 1; }
static inline uint32_t a2_valid(const int n) { return n >= 32 ? 0xFFFFFFFFu : (1u << n) - 1; }

static inline __m256i a2_pack(const int NV, __m256 x, __m256i lane) /* see pack_key */
{
    __m256i bits = _mm256_max_epi32(_mm256_castps_si256(x), _mm256_setzero_si256());
    return _mm256_or_si256(_mm256_andnot_si256(_mm256_set1_epi32(a2_cm(NV)), bits), lane);
}
static inline __m256 a2_label(const int NV, __m256i k)
{
    return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_set1_epi32(a2_cm(NV)), k));
}

/* Costs of R rows of a from row i (rows past n - 1 repeat the last one and are not stored),
 * NV vectors of columns each: one FMA chain per accumulator, R x NV = 12 or 8 chains, slack
 * over the 8 that the FMA latency needs. Each load of bt feeds all the pass's rows. */
static inline __attribute__((always_inline)) void
a2_pass(const int NV, const int R, const int n, const int k, const int i, const float *restrict a,
        const float *restrict bt, const double *restrict sqa, const __m256 *sb, const __m256i *msk,
        float *restrict c32, __m256 *mx, __m256 *mn)
{
    const __m256 zero = _mm256_setzero_ps(), two = _mm256_set1_ps(2.0f), tiny = _mm256_set1_ps(1.17549435e-38f);
    const __m256 inf = _mm256_set1_ps(INFINITY);
    const float *r[6];
    A2_UNROLL for (int q = 0; q < R; q++) r[q] = a + (i + q < n ? i + q : n - 1) * k;
    __m256 x[6][4];
    A2_UNROLL for (int q = 0; q < R; q++) A2_UNROLL for (int h = 0; h < NV; h++) x[q][h] = zero;
    for (int t = 0; t < k; t++) {
        const float *b0 = bt + t * n;
        __m256 bv[4];
        A2_UNROLL for (int h = 0; h < NV; h++) {
            bv[h] = n >= 8 * NV ? _mm256_loadu_ps(b0 + 8 * h) : _mm256_maskload_ps(b0 + 8 * h, msk[h]);
            /* in registers: otherwise the compiler folds each load into all the rows' FMAs, and the
             * loads, not the FMAs, bound the loop */
            __asm__("" : "+x"(bv[h]));
        }
        A2_UNROLL for (int q = 0; q < R; q++) {
            const __m256 s = _mm256_broadcast_ss(r[q] + t);
            A2_UNROLL for (int h = 0; h < NV; h++) x[q][h] = _mm256_fmadd_ps(s, bv[h], x[q][h]);
        }
    }
    A2_UNROLL for (int q = 0; q < R; q++) {
        if (i + q >= n) continue;
        const __m256 sa = _mm256_set1_ps((float)sqa[i + q]);
        A2_UNROLL for (int h = 0; h < NV; h++) {
            __m256 c = _mm256_sqrt_ps(_mm256_max_ps(_mm256_fnmadd_ps(two, x[q][h], _mm256_add_ps(sa, sb[h])), tiny));
            c = _mm256_and_ps(c, _mm256_castsi256_ps(msk[h]));
            _mm256_store_ps(c32 + 8 * NV * (i + q) + 8 * h, c);
            *mx = _mm256_max_ps(*mx, c);
            *mn = _mm256_min_ps(*mn, _mm256_blendv_ps(inf, c, _mm256_castsi256_ps(msk[h])));
        }
    }
}

/* Float costs c = sqrt(max(|a_i|^2 + |b_j|^2 - 2 g, FLT_MIN)) (g: float32 block dot products with
 * FMAs, correctly rounded vsqrtps) into c32 (row stride 8 NV, lanes >= n zero); returns the
 * rigorous bound delta on |c - d| of costs32 (d = exact distance of the double blocks; derivation
 * there) with m = k. */
static inline __attribute__((always_inline)) double
a2_costs(const int NV, const int n, const int k, const float *restrict a, const float *restrict bt,
         const double *restrict sqa, const double *restrict sqb, float *restrict c32, double *cmax_out)
{
    __m256i msk[4];
    __m256 sb[4];
    float sbf[A2_MAXN] __attribute__((aligned(32))) = {0};
    for (int j = 0; j < n; j++) sbf[j] = (float)sqb[j];
    A2_UNROLL for (int h = 0; h < NV; h++) {
        msk[h] = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), a2_lanes(h));
        sb[h] = _mm256_load_ps(sbf + 8 * h);
    }
    __m256 mx = _mm256_setzero_ps(), mn = _mm256_set1_ps(INFINITY);
    /* passes of 12 chains (6 rows of 16 columns, 3 of 32), then of 8 (rows past the end repeat);
     * B = 16: 6 rows x 16 took 0.236 us per pair, 4 rows 0.254 (AMD Zen 3). Row counts that 12
     * chains would split badly (7 or 8 rows left at NV = 2, 4 at NV = 4) go in passes of 8. */
    const int R1 = NV == 2 ? 6 : 3, R2 = NV == 2 ? 4 : 2;
    int i = 0;
    for (; n - i >= R1 && !(NV == 2 && (n - i == 7 || n - i == 8)) && !(NV == 4 && n - i == 4); i += R1)
        a2_pass(NV, R1, n, k, i, a, bt, sqa, sb, msk, c32, &mx, &mn);
    for (; i < n; i += R2) a2_pass(NV, R2, n, k, i, a, bt, sqa, sb, msk, c32, &mx, &mn);
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
 * design of the AVX-512 slot_*() functions (see there), with the columns of a row in NV ymm
 * registers, except that the end of a search is a branch, resolved early (see a2_step, a2_pick).
 * Measured on AMD Zen 3 (C harness, B = 16, solver + checks + fallbacks, us per pair): 0.87 with
 * the branch-free step of the AVX-512 kernel (best with 2 slots), 0.72 with a branch on the
 * search end taken in the step itself (4 slots), 0.63 with the branch resolved early (3, 4 or 6
 * slots alike). */
#define A2_SLOTS 4

typedef struct {
    float c32[A2_MAXN * A2_MAXN]; /* float costs, row stride 8 NV, lanes >= n zero */
    int32_t key[A2_MAXN], pred[A2_MAXN], path[A2_MAXN], row4col[A2_MAXN]; /* packed labels; tree; path masks; matching */
    int32_t dv[A2_MAXN]; /* all ones: column scanned in this search, or lane >= n */
    float v[A2_MAXN]; /* column duals */
    int col4row[A2_MAXN];
    int f, ok32; /* root row of the current search; 0: the float solver cannot be used */
    int jm, irow; /* next column to scan (-1: none left, breakdown) and its row (-1: free) */
    int32_t mubits; /* its label */
    uint32_t freerows;
    double cmax, delta; /* largest float cost; bound on |float cost - exact distance| */
    int64_t t, p, q; /* problem index (-1 when empty); its pair of templates */
} __attribute__((aligned(32))) a2_slot;

typedef struct {
    int n, k;
    const double *A, *BT, *B, *sqa, *sqb, *na, *nb; /* pairs: rows p0, p0 + 1, ... x columns [q0, q0 + nq) */
    const float *A32, *BT32;
    const double *sqa32, *sqb32;
    int64_t p0, q0, nq, cb, pi, qi;
    double *out;
    uint8_t *cols; /* assignment of pair (p, q) at ((p - p0) * nq + q - q0) * A2_MAXN */
    const double *cost; /* cost matrices (tests: float solver and check only); results: */
    int64_t *col_out, *unique;
    int64_t nfb, n32, n64; /* solved in SciPy's order; not settled by the float check; = nfb */
    int failed;
} a2_src;

static inline __m256i a2_vmask(uint32_t m, __m256i bits) /* lanes whose bit is set in m: all ones */
{
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)m), bits), bits);
}
#define A2_LD(p) _mm256_load_si256((const __m256i *)(p))
#define A2_ST(p, x) _mm256_store_si256((__m256i *)(p), x)

/* Problem t into slot S: float costs, column reduction, free rows (see slot_load). */
static inline __attribute__((always_inline)) void
a2_load(const int NV, const int n, const int k, a2_slot *restrict S, a2_src *restrict src, int64_t t)
{
    const int W = 8 * NV;
    double cmax = 0;
    S->t = t;
    if (src->cost) {
        const double *c = src->cost + t * n * n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                const double x = c[i * n + j];
                S->c32[W * i + j] = (float)x; /* rounded to nearest: off by <= 2^-24 |x| */
                cmax = fabs(x) > cmax ? fabs(x) : cmax;
            }
        S->delta = 5.9604645e-8 * cmax + 1e-45;
    } else {
        const int64_t p = src->pi, q = src->qi;
        if (++src->qi == src->q0 + src->nq) { src->qi = src->q0; src->pi++; }
        S->p = p;
        S->q = q;
        S->delta = a2_costs(NV, n, k, src->A32 + p * n * k, src->BT32 + q * n * k, src->sqa32 + p * n,
                            src->sqb32 + q * n, S->c32, &cmax);
    }
    S->cmax = cmax;
    S->ok32 = cmax < 1e30 && S->delta < 1e30; /* float range, with room for the duals */
    /* column minima and their first rows, in registers (left to itself, the compiler made masked
     * stores and branches of it) */
    int32_t arg[A2_MAXN] __attribute__((aligned(32)));
    __m256 v[4];
    __m256i am[4];
    A2_UNROLL for (int h = 0; h < NV; h++) { v[h] = _mm256_load_ps(S->c32 + 8 * h); am[h] = _mm256_setzero_si256(); }
    for (int i = 1; i < n; i++) {
        const __m256i iv = _mm256_set1_epi32(i);
        A2_UNROLL for (int h = 0; h < NV; h++) {
            const __m256 x = _mm256_load_ps(S->c32 + W * i + 8 * h), l = _mm256_cmp_ps(x, v[h], _CMP_LT_OQ);
            v[h] = _mm256_blendv_ps(v[h], x, l);
            am[h] = _mm256_blendv_epi8(am[h], iv, _mm256_castps_si256(l));
        }
    }
    A2_UNROLL for (int h = 0; h < NV; h++) {
        _mm256_store_ps(S->v + 8 * h, v[h]);
        A2_ST(arg + 8 * h, am[h]);
        A2_ST(S->row4col + 8 * h, _mm256_set1_epi32(-1));
    }
    uint32_t taken = 0;
    for (int j = 0; j < n; j++) { /* without branches: a column goes to its row if the row is free */
        const int i = arg[j];
        const uint32_t fr = ~taken >> i & 1u;
        taken |= 1u << i;
        S->row4col[j] = fr ? i : -1;
    }
    S->freerows = S->ok32 ? ~taken & a2_valid(n) : 0;
}

/* Choose the next column to scan (least label among the unscanned) and look up its row, for the
 * slot's next step: its branch (search ends or not) then depends on data computed a round
 * earlier, so a misprediction is found early and discards little work. k, d: keys and scanned
 * masks in registers; stores them with jm marked scanned. */
static inline __attribute__((always_inline)) void
a2_pick(const int NV, a2_slot *restrict S, const __m256i *k, const __m256i *d)
{
    const int cm = a2_cm(NV);
    const __m256i none = _mm256_set1_epi32(A2_KEY_NONE);
    __m256i m = _mm256_blendv_epi8(k[0], none, d[0]);
    A2_UNROLL for (int h = 1; h < NV; h++) m = _mm256_min_epi32(m, _mm256_blendv_epi8(k[h], none, d[h]));
    m = _mm256_min_epi32(m, _mm256_permute2x128_si256(m, m, 1));
    m = _mm256_min_epi32(m, _mm256_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm256_min_epi32(m, _mm256_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1))); /* the minimum in every lane */
    const int kmin = _mm256_cvtsi256_si32(m);
    const int jm = kmin & cm;
    const __m256i jmv = _mm256_and_si256(m, _mm256_set1_epi32(cm));
    A2_UNROLL for (int h = 0; h < NV; h++) {
        A2_ST(S->key + 8 * h, k[h]);
        A2_ST(S->dv + 8 * h, _mm256_or_si256(d[h], _mm256_cmpeq_epi32(a2_lanes(h), jmv)));
    }
    S->jm = kmin == A2_KEY_NONE ? -1 : jm;
    S->mubits = kmin & ~cm;
    S->irow = S->row4col[jm];
}

/* A new search from free row f: labels c_f - v, every column's predecessor f, paths {j}. */
static inline __attribute__((always_inline)) void
a2_root(const int NV, const int n, a2_slot *restrict S, const int f, const __m256 *v)
{
    const int W = 8 * NV;
    __m256i k[4], d[4];
    S->f = f;
    const __m256i fv = _mm256_set1_epi32(f);
    A2_UNROLL for (int h = 0; h < NV; h++) {
        k[h] = a2_pack(NV, _mm256_sub_ps(_mm256_load_ps(S->c32 + W * f + 8 * h), v[h]), a2_lanes(h));
        d[h] = a2_invalid(n, h);
        A2_ST(S->pred + 8 * h, fv);
        A2_ST(S->path + 8 * h, a2_bits(h));
    }
    a2_pick(NV, S, k, d);
}

static inline __attribute__((always_inline)) void a2_start(const int NV, const int n, a2_slot *restrict S)
{
    const int f = __builtin_ctz(S->freerows);
    S->freerows &= S->freerows - 1;
    __m256 v[4];
    A2_UNROLL for (int h = 0; h < NV; h++) v[h] = _mm256_load_ps(S->v + 8 * h);
    a2_root(NV, n, S, f, v);
}

/* One Dijkstra step: scan the column chosen by a2_pick; as slot_step, returns 1 when solved, 2
 * when the float solver broke down, else 0. Unlike slot_step, the end of a search (17 % of the
 * steps at B = 16) is a branch, resolved early (see a2_pick): on AMD Zen 3 that costs less than
 * preparing the end in every step under masks (the whole kernel ~15 % faster). */
static inline __attribute__((always_inline)) int a2_step(const int NV, const int n, a2_slot *restrict S)
{
    const int W = 8 * NV;
    const int jm = S->jm, i = S->irow;
    if (jm < 0) return 2;
    const __m256 mu = _mm256_castsi256_ps(_mm256_set1_epi32(S->mubits));
    __m256i k[4], d[4];
    __m256 v[4];
    A2_UNROLL for (int h = 0; h < NV; h++) {
        k[h] = A2_LD(S->key + 8 * h);
        d[h] = A2_LD(S->dv + 8 * h);
        v[h] = _mm256_load_ps(S->v + 8 * h);
    }
    if (i >= 0) {
        /* relax from the row matched to jm: label via row i as (rv + mu) - rv_jm */
        const float *ci = S->c32 + W * i;
        const __m256 rvjm = _mm256_set1_ps(ci[jm] - S->v[jm]);
        const __m256i iv = _mm256_set1_epi32(i), pj = _mm256_set1_epi32(S->path[jm]);
        A2_UNROLL for (int h = 0; h < NV; h++) {
            const __m256 rv = _mm256_sub_ps(_mm256_load_ps(ci + 8 * h), v[h]);
            const __m256i r = a2_pack(NV, _mm256_sub_ps(_mm256_add_ps(rv, mu), rvjm), a2_lanes(h));
            const __m256i u = _mm256_andnot_si256(d[h], _mm256_cmpgt_epi32(k[h], r));
            k[h] = _mm256_blendv_epi8(k[h], r, u);
            A2_ST(S->pred + 8 * h, _mm256_blendv_epi8(A2_LD(S->pred + 8 * h), iv, u));
            A2_ST(S->path + 8 * h, _mm256_blendv_epi8(A2_LD(S->path + 8 * h), _mm256_or_si256(pj, a2_bits(h)), u));
        }
        a2_pick(NV, S, k, d);
        return 0;
    }
    /* column jm is free: the search ends. Dual update of the scanned valid columns (v += d - mu;
     * adds 0 at jm), augmentation along jm's path, next root */
    const uint32_t pathjm = (uint32_t)S->path[jm];
    A2_UNROLL for (int h = 0; h < NV; h++) {
        const __m256 w = _mm256_castsi256_ps(_mm256_andnot_si256(a2_invalid(n, h), d[h]));
        v[h] = _mm256_add_ps(v[h], _mm256_and_ps(w, _mm256_sub_ps(a2_label(NV, k[h]), mu)));
        _mm256_store_ps(S->v + 8 * h, v[h]);
        A2_ST(S->row4col + 8 * h, _mm256_blendv_epi8(A2_LD(S->row4col + 8 * h), A2_LD(S->pred + 8 * h),
                                                     a2_vmask(pathjm, a2_bits(h))));
    }
    const uint32_t fr = S->freerows;
    if (!fr) return 1;
    S->freerows = fr & (fr - 1);
    a2_root(NV, n, S, __builtin_ctz(fr), v);
    return 0;
}
