/* AVX-512 kernel (B <= 16), second half: float and double certificates, fallbacks, scores, the stream of problems. Part of pemiu.c (one translation unit; included there). */
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
