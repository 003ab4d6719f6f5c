/* Portable double kernel: SciPy-order solver lsa(), certified fast solver jv_unique(), double block costs, per-row scoring. Part of pemiu.c (one translation unit; included there). */
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
            for (int j = 0; j < n; j++) { /* selects as bit masks: with "upd ? i : pred[j]" GCC made a
                                           * branch per vector around a masked store (1.28x slower) */
                const double cr = ci[j] - v[j] - h, kj = key[j];
                const int64_t upd = -(int64_t)(cr < kj);
                pred[j] ^= (pred[j] ^ (int64_t)i) & upd;
                key[j] = cr < kj ? cr : kj;
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

/* GCC/Clang vector extension, as wide as the target's registers: 4 doubles with AVX, else 2
 * (SSE2, NEON). Wider than the registers, GCC splits every operation through memory (measured: the
 * costs took 8.8 instead of 2 us per pair at B = 16 in an x86 build without AVX). */
#if defined(__AVX__)
#define VW 4
#else
#define VW 2
#endif
typedef double vd __attribute__((vector_size(8 * VW), aligned(8)));

/* Costs of one pair: g = dot products of the blocks (a: n x k rows, bt: k x n, b transposed),
 * c = Euclidean distances sqrt(|a_i|^2 + |b_j|^2 - 2 a_i.b_j); returns the largest cost. With n a
 * multiple of VW the columns are accumulated as VW-wide vectors in registers (left to itself the
 * compiler vectorised over t, with shuffles and spills); each entry is summed over t in order. */
static inline __attribute__((always_inline)) double
block_costs(const int n, const int k, const double *restrict a, const double *restrict bt,
            const double *restrict sqa, const double *restrict sqb, double *restrict g, double *restrict c)
{
    const vd zero = {0};
    for (int i = 0; i < n; i++) {
        double *restrict gi = g + i * n;
        const double *ai = a + i * k;
        if (n % VW == 0) {
            int j = 0;
            for (; j + 4 * VW <= n; j += 4 * VW) { /* four independent accumulators hide the FMA latency */
                vd x0 = zero, x1 = zero, x2 = zero, x3 = zero;
                for (int t = 0; t < k; t++) {
                    const double s = ai[t];
                    const vd *b = (const vd *)(bt + t * n + j);
                    x0 += s * b[0]; x1 += s * b[1]; x2 += s * b[2]; x3 += s * b[3];
                }
                *(vd *)(gi + j) = x0; *(vd *)(gi + j + VW) = x1;
                *(vd *)(gi + j + 2 * VW) = x2; *(vd *)(gi + j + 3 * VW) = x3;
            }
            for (; j < n; j += VW) {
                vd x0 = zero;
                for (int t = 0; t < k; t++) x0 += ai[t] * *(const vd *)(bt + t * n + j);
                *(vd *)(gi + j) = x0;
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
