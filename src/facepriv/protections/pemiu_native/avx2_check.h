/* AVX2 + FMA kernel (B <= 32), second half: float and double certificates, fallbacks, the stream
 * of problems. Part of pemiu.c (one translation unit; included there). NV: see avx2_solver.h. */
/* No cycle in the graph of tight edges on columns (adj[j0]: the columns j != j0 at which the row
 * holding j0 has a tight edge)? Peels the columns without an edge into the kept set, all columns
 * at once per round (as slot_certify32): a cycle <=> something is left. Six rounds without a
 * data-dependent exit first: a scalar peel's branches were mispredicted several times per
 * problem. */
static inline __attribute__((always_inline)) uint32_t a2_keep(const int NV, const __m256i *a, const uint32_t alive)
{
    const __m256i s = _mm256_set1_epi32((int)alive), z = _mm256_setzero_si256();
    uint32_t keep = 0;
    A2_UNROLL for (int h = 0; h < NV; h++)
        keep |= (uint32_t)(~_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(a[h], s), z))) & 0xFF)
                << (8 * h);
    return keep;
}

static inline __attribute__((always_inline)) int a2_acyclic(const int NV, const int32_t *adj)
{
    __m256i a[4];
    A2_UNROLL for (int h = 0; h < NV; h++) a[h] = A2_LD(adj + 8 * h);
    uint32_t alive = a2_keep(NV, a, 0xFFFFFFFFu);
    for (int it = 0; it < 6; it++) alive &= a2_keep(NV, a, alive);
    while (alive) {
        const uint32_t keep = a2_keep(NV, a, alive) & alive;
        if (keep == alive) break;
        alive = keep;
    }
    return alive == 0;
}

/* Is the slot's float solution (col4row, float duals v) the unique optimum of the double costs c
 * (row stride n, largest cmax) with margin eps = 1e-9 cmax? slot_certify's argument (see there),
 * A = 1e-6 cmax: on random templates most pairs the float check leaves are settled here, without
 * the double solver. */
static inline __attribute__((always_inline)) int
a2_certify64(const int NV, const int n, const a2_slot *restrict S, const double *restrict c, const double cmax)
{
    const double eps = 1e-9 * cmax + 1e-300, A = 1e-6 * cmax, T = eps + (n - 1) * A, vlim = 1e3 * cmax;
    double vd[A2_MAXN];
    int bad = 0;
    for (int j = 0; j < n; j++) { vd[j] = S->v[j]; bad |= !(fabs(vd[j]) <= vlim); }
    int32_t adj[A2_MAXN] __attribute__((aligned(32))) = {0};
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
    return !bad && a2_acyclic(NV, adj);
}

/* Is the slot's float solution (col4row, duals v) the unique optimum of the exact costs d,
 * |c32 - d| <= delta, with margin eps = 1e-9 cmax? The argument of slot_certify32 (see there),
 * in the same float arithmetic. */
static inline __attribute__((always_inline)) int a2_certify(const int NV, const int n, a2_slot *restrict S)
{
    const int W = 8 * NV;
    const float *restrict c = S->c32, *restrict v = S->v;
    const uint32_t valid = a2_valid(n);
    __m256 vv[4];
    /* largest |v_j| (columns >= n hold 0) */
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 am = _mm256_setzero_ps();
    A2_UNROLL for (int h = 0; h < NV; h++) {
        vv[h] = _mm256_load_ps(v + 8 * h);
        am = _mm256_max_ps(am, _mm256_and_ps(vv[h], absm));
    }
    __m128 mx = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
    mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
    mx = _mm_max_ss(mx, _mm_shuffle_ps(mx, mx, 1));
    const double vmax = _mm_cvtss_f32(mx);
    const double eps = 1e-9 * S->cmax + 1e-300;
    const double E = S->delta + 2.01 * 5.9604644775390625e-8 * 2 * (S->cmax + vmax) + 1e-44;
    const double A = 2e-6 * S->cmax, T = eps + (n - 1) * A + 2 * n * E;
    const __m256 vT = _mm256_set1_ps((float)(T * (1 + 1e-6))), vA = _mm256_set1_ps(-(float)(A * (1 - 1e-6)));
    /* tight edges by column: the row holding column j0 has r <= T at the columns in adj[j0] */
    int32_t adj[A2_MAXN] __attribute__((aligned(32))) = {0};
    uint32_t bad = 0;
    for (int i = 0; i < n; i++) {
        const int j0 = S->col4row[i];
        const __m256 ui = _mm256_set1_ps(c[W * i + j0] - v[j0]);
        uint32_t t = 0;
        A2_UNROLL for (int h = 0; h < NV; h++) {
            const __m256 r = _mm256_sub_ps(_mm256_sub_ps(_mm256_load_ps(c + W * i + 8 * h), vv[h]), ui);
            t |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(r, vT, _CMP_LE_OQ)) << (8 * h);
            bad |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(r, vA, _CMP_NGE_UQ)) << (8 * h); /* NaN: bad */
        }
        adj[j0] = (int32_t)(t & valid & ~(1u << j0));
    }
    if (bad & valid) return 0;
    return a2_acyclic(NV, adj);
}

/* Finish the slot's problem: float check; else double costs and the portable solvers; result. */
static inline __attribute__((always_inline)) void
a2_finish(const int NV, const int n, const int k, a2_slot *restrict S, a2_src *restrict src, ws_t *w)
{
    int ok = 0;
    if (S->ok32) {
        for (int j = 0; j < n; j++) S->col4row[S->row4col[j]] = j;
        ok = a2_certify(NV, n, S);
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
        if (!(S->ok32 && a2_certify64(NV, n, S, w->c, cm))) { /* else: the float solution, checked in double */
            src->n64++;
            const int r = solve(n, w->c, cm, w);
            if (r < 0) { src->failed = 1; return; }
            src->nfb += r;
            col = w->col;
        }
    }
    uint8_t *dst = src->cols + ((S->p - src->p0) * src->nq + S->q - src->q0) * A2_MAXN;
    for (int i = 0; i < n; i++) dst[i] = (uint8_t)col[i];
}

static inline __attribute__((always_inline)) int
a2_advance(const int NV, const int n, const int k, a2_slot *restrict S, a2_src *restrict src, ws_t *w, int64_t *next, int64_t count)
{
    for (;;) {
        if (S->t >= 0) { a2_finish(NV, n, k, S, src, w); S->t = -1; }
        if (*next >= count || src->failed) return 0;
        a2_load(NV, n, k, S, src, (*next)++);
        if (S->freerows) { a2_start(NV, n, S); return 1; }
    }
}

/* Solve problems 0..count-1 of src, A2_SLOTS at a time; then the tile's scores (pairs). */
static inline __attribute__((always_inline)) void
a2_stream(const int NV, const int n, const int k, a2_src *restrict src, int64_t count, a2_slot *slots, ws_t *w)
{
    int64_t next = 0;
    uint32_t active = 0;
    for (int s = 0; s < A2_SLOTS; s++) {
        slots[s].t = -1;
        memset(slots[s].c32, 0, sizeof slots[s].c32); /* rows >= n: read, never used */
        if (a2_advance(NV, n, k, &slots[s], src, w, &next, count)) active |= 1u << s;
    }
    while (active) {
        for (int s = 0; s < A2_SLOTS; s++) {
            if (!(active >> s & 1)) continue;
            const int r = a2_step(NV, n, &slots[s]);
            if (r == 2) slots[s].ok32 = 0; /* the double solvers take over */
            if (r && !a2_advance(NV, n, k, &slots[s], src, w, &next, count)) active &= ~(1u << s);
        }
    }
    if (src->cost || src->failed) return;
    const int64_t np = count / src->nq;
    for (int64_t dq = 0; dq < src->nq; dq++) /* b's template stays in L1 for the tile's rows */
        for (int64_t dp = 0; dp < np; dp++) {
            const int64_t p = src->p0 + dp, q = src->q0 + dq;
            int col[A2_MAXN];
            const uint8_t *cc = src->cols + (dp * src->nq + dq) * A2_MAXN;
            for (int i = 0; i < n; i++) col[i] = cc[i];
            src->out[p * src->cb + q] = a2_score(n, k, src->A + p * n * k, src->B + q * n * k, col, src->na[p] * src->nb[q]);
        }
}

static void a2_stream_any(int n, a2_src *src, int64_t count, a2_slot *slots, ws_t *w)
{
    const int k = src->k;
    if (n == 16 && k == 32) a2_stream(2, 16, 32, src, count, slots, w);
    else if (n == 16 && k == 8) a2_stream(2, 16, 8, src, count, slots, w);
    else if (n == 8 && k == 16) a2_stream(2, 8, 16, src, count, slots, w);
    else if (n == 32 && k == 16) a2_stream(4, 32, 16, src, count, slots, w);
    else if (n == 16) a2_stream(2, 16, k, src, count, slots, w);
    else if (n == 32) a2_stream(4, 32, k, src, count, slots, w);
    else if (n <= 16) a2_stream(2, n, k, src, count, slots, w);
    else a2_stream(4, n, k, src, count, slots, w);
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
