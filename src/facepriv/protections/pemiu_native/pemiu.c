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
 * Kernels, chosen at run time (pick_kernel): portable (double; portable.h), AVX2 + FMA (float32,
 * B <= 32, the a2_*() functions of avx2_solver.h and avx2_check.h: compiled into every x86-64
 * build and used when cpuid reports AVX2 and FMA) and AVX-512 (float32, B <= 16, the slot_*()
 * functions of avx512_solver.h and avx512_check.h; in builds with AVX-512 enabled; 16 < B <= 32
 * goes to the AVX2 kernel there).
 * jv_unique() is the portable fast solver. The float kernels first run the same algorithm in
 * float32 on float costs, several problems at once, and check the result with rigorous error
 * bounds against the exact distances (slot_certify32: same or larger margin); about 2 % of random
 * pairs (near ties at float precision) then get double costs, the check of the float solution in
 * double, and if needed jv_unique and lsa(). This file: the includes in dependency order, then the
 * entry points called from pe_native.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "portable.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_STREAM16 1
#include "avx512_solver.h"
#include "avx512_check.h"
#endif

/* ---- AVX2 + FMA kernel (B <= 32), chosen at run time (see pick_kernel) ----
 * For CPUs without AVX-512 (e.g. AMD Zen 2/3): compiled for AVX2 + FMA whatever the build flags
 * (target pragma), and used only when cpuid reports both. Per pair:
 * - float costs (a2_costs): float32 block dot products with FMAs, 6 (then 4) rows x 16 columns
 *   per pass at B <= 16, 3 (then 2) rows x 32 columns at B <= 32 (12 or 8 accumulators in ymm
 *   registers, one FMA chain each), c = sqrt(max(|a_i|^2 + |b_j|^2 - 2 g, FLT_MIN)) with the
 *   correctly rounded vsqrtps; returns the rigorous bound delta on |c - d| of costs32 (d = exact
 *   distance of the double blocks; derivation there) with m = k;
 * - float solver (a2_load, a2_start, a2_step): the AVX-512 slot solver's algorithm (column
 *   reduction, Dijkstra shortest augmenting paths on reduced costs, labels packed with their column
 *   in the 4 (B <= 16) or 5 (B <= 32) low mantissa bits so that one integer min gives label and
 *   column, A2_SLOTS problems interleaved), the columns of a row in NV = 2 (B <= 16) or 4
 *   (B <= 32) ymm registers: one source, instantiated with a constant NV;
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
#include "avx2_solver.h"
#include "avx2_check.h"
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

/* Kernels: 1 portable (double), 2 AVX2 + FMA (float, B <= 32), 3 AVX-512 (float, B <= 16; only in
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
    /* the AVX2 kernel: its own choice for B <= 32; with the AVX-512 kernel (B <= 16 only) for
     * 16 < B <= 32, since a CPU with AVX-512 has AVX2 and FMA too */
    const int use_a2 = nblk <= 32 && (kern == 2 || (kern == 3 && nblk > 16 && kernel_available(2)));
#ifndef HAVE_AVX2_KERNEL
    (void)use_a2;
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
        uint8_t *cols2 = malloc(A2_MAXN * pt * 64);
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
            if (use_a2) {
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
    if (mode == 3 && (n > (kern == 2 ? 32 : 16) || kern == 1)) { ws_free(w); return -1; }
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
