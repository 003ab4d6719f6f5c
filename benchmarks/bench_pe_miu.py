"""Benchmark: PE-MIU all-vs-all scores, batched comparator vs. the per-pair reference loop.

The reference is the straightforward implementation (``cdist`` block distances,
``scipy.optimize.linear_sum_assignment``, cosine of the re-ordered template) called once per pair.
Timing the reference on all 10^6 pairs would take minutes, so it runs on the first ``--ref-rows``
rows of the score matrix (``--ref-rows`` x N pairs) and its per-pair time is scaled; the scores of
those rows are compared with the batched result (max |difference| must be <= 1e-6).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pe_miu.py          # 1000 x 1000, 512-d, block 32
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pe_miu.py --embeddings E.npz --block-size 8

Both wall-clock and process CPU time are reported (the machine may be shared). Process CPU time
counts every thread of the process, so keep OpenBLAS to one thread (its idle threads spin).

The compiled path is timed with every kernel this CPU runs (``--kernels``: portable double,
AVX2+FMA float32, AVX-512 float32; the default ``auto`` one is what the comparator uses). For each
the benchmark prints an arithmetic (FLOP) estimate per pair and the achieved fraction of this CPU's
float32 matrix-multiply throughput, measured in the same run (numpy float32 matmul, one thread).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="templates on each side (default 1000)")
    ap.add_argument("--dim", type=int, default=512, help="dimension of random templates (default 512)")
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--embeddings", help="use real templates from this .npz instead of random ones")
    ap.add_argument("--ref-rows", type=int, default=20, help="rows of the matrix the reference loop scores")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts of the compiled path")
    ap.add_argument("--numpy", action="store_true", help="also time the pure numpy batched path (slow)")
    ap.add_argument("--kernels", nargs="+", default=None,
                    help="compiled kernels to time with 1 thread (default: all this CPU runs)")
    ap.add_argument("--no-numba", action="store_true", help="skip the Numba path")
    ap.add_argument("--realign", action="store_true",
                    help="instead of timing: share of pairs whose true block order PE-MIU's re-alignment recovers, "
                    "for block sizes D/2 ... 4 (with --embeddings)")
    ap.add_argument("--all-pairs", action="store_true",
                    help="instead: all unordered pairs of --n templates (utility scoring, scores_all_pairs), "
                    "the diagonal blocks compared in strips (PE-MIU's per_pair) vs in one call per block")
    args = ap.parse_args()
    if args.realign:
        realign(args)
        return
    if args.all_pairs:
        all_pairs(args)
        return

    from facepriv.protections import pe_native
    from facepriv.protections.pe_miu import PEMIU, PEMIUComparator, reference_score

    rng = np.random.default_rng(0)
    if args.embeddings:
        from facepriv.embeddings import load_embeddings

        x = load_embeddings(args.embeddings).embeddings
        idx = rng.choice(len(x), size=min(2 * args.n, len(x)), replace=False)
        x = x[idx]
        a_clean, b_clean = x[: len(x) // 2], x[len(x) // 2 :]
        source = f"{args.embeddings} ({x.shape[1]}-d real templates)"
    else:
        a_clean = rng.normal(size=(args.n, args.dim)).astype(np.float32)
        b_clean = rng.normal(size=(args.n, args.dim)).astype(np.float32)
        source = f"random normal {args.dim}-d templates"
    prot = PEMIU(block_size=args.block_size, seed=1)
    a = prot.transform(a_clean)
    b = PEMIU(block_size=args.block_size, seed=2).transform(b_clean)
    nblk = a.shape[1] // args.block_size
    print(f"# PE-MIU pairwise benchmark: {len(a)} x {len(b)} {source}, block {args.block_size} (B={nblk})")
    print(f"# {platform.processor() or platform.machine()} ({_cpu_model()}), {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    gflops_w, gflops_c = matmul_gflops()
    print(f"float32 matmul 1024^3, 1 thread, best of 5: {gflops_w:.1f} GFLOP/s wall, {gflops_c:.1f} GFLOP/s CPU")
    k = args.block_size
    # Dijkstra steps per random problem after column reduction, counted in the float kernel:
    # ~10, 30-34, 58, 90 at B = 8, 16, 24, 32, i.e. ~0.33 B^1.6; each step ~2 flop per column
    steps = round(0.33 * nblk**1.6)
    flop = {"block dot products 2 B^2 K": 2 * nblk * nblk * k, "costs ~4 B^2": 4 * nblk * nblk,
            f"assignment ~{steps} Dijkstra steps x 2 B (rough)": steps * 2 * nblk, "score 2 D": 2 * nblk * k}
    flop_pair = sum(flop.values())
    print(f"FLOP estimate per pair: {flop_pair} ({', '.join(f'{n} = {v}' for n, v in flop.items())}) "
          f"-> {1e6 * flop_pair / (1e9 * gflops_c):.3f} us/pair at the matmul rate (CPU)")

    r = args.ref_rows
    w0, c0 = time.perf_counter(), time.process_time()
    ref = np.array([[reference_score(x, y, args.block_size) for y in b] for x in a[:r]])
    w_ref = (time.perf_counter() - w0) / ref.size
    c_ref = (time.process_time() - c0) / ref.size
    n_pairs = len(a) * len(b)
    print(f"reference loop: {1e6 * w_ref:.2f} us/pair wall, {1e6 * c_ref:.2f} us/pair CPU "
          f"-> {n_pairs * w_ref:.1f} s for all {n_pairs} pairs (scaled from {ref.size})")
    runs = []
    lib = pe_native.load()
    if lib is not None:
        print(f"compiled path: {pe_native.build_info()}")
        pa = pe_native.prepare(a.reshape(len(a), nblk, -1).astype(np.float64))
        pb = pe_native.prepare(b.reshape(len(b), nblk, -1).astype(np.float64))
        for kern in args.kernels or pe_native.kernels():
            counts: dict[str, int] = {}
            w0, c0 = time.perf_counter(), time.process_time()
            res = pe_native.pemiu_pairwise(pa, pb, counts=counts, kernel=kern)
            w, c = time.perf_counter() - w0, time.process_time() - c0
            assert res is not None
            print(f"kernel {kern}: {counts['float_unsettled']} of {n_pairs} pairs not settled by the float check "
                  f"(float kernels; double costs computed), {counts['double_unsettled']} not by the double check "
                  f"either, {counts['scipy_order']} solved in SciPy's order (ties); "
                  f"achieved {100 * flop_pair * n_pairs / (1e9 * gflops_c) / c:.1f} % of the matmul rate (CPU)")
            runs.append((f"compiled kernel {kern}, 1 thread (pe_native.pemiu_pairwise)", w, c, res[0]))
        for t in args.threads:
            comp = PEMIUComparator(args.block_size, threads=t)
            w0, c0 = time.perf_counter(), time.process_time()
            s = comp.pairwise(a, b)
            runs.append((f"compiled (comparator, kernel {pe_native.kernel_name()}), {t} thread(s)",
                         time.perf_counter() - w0, time.process_time() - c0, s))
    else:
        print("compiled path unavailable (no C compiler)")
    from facepriv.protections import pe_numba

    if not args.no_numba and pe_numba.load() is not None:
        pe_numba.pemiu_pairwise(a[:2].reshape(2, nblk, -1), b[:2].reshape(2, nblk, -1))  # JIT compile (cached)
        os.environ["FACEPRIV_NO_NATIVE"] = "1"
        for t in args.threads:
            comp = PEMIUComparator(args.block_size, threads=t)
            w0, c0 = time.perf_counter(), time.process_time()
            s = comp.pairwise(a, b)
            runs.append((f"numba, {t} thread(s)", time.perf_counter() - w0, time.process_time() - c0, s))
        os.environ.pop("FACEPRIV_NO_NATIVE")
    if args.numpy or lib is None:
        os.environ["FACEPRIV_NO_NATIVE"] = "1"
        os.environ["FACEPRIV_NO_NUMBA"] = "1"
        w0, c0 = time.perf_counter(), time.process_time()
        s = PEMIUComparator(args.block_size).pairwise(a, b)
        runs.append(("numpy batched", time.perf_counter() - w0, time.process_time() - c0, s))
    for name, w, c, s in runs:
        diff = float(np.abs(s[:r] - ref).max())
        print(f"{name}: {w:.2f} s wall ({1e6 * w / n_pairs:.3f} us/pair), {c:.2f} s CPU ({1e6 * c / n_pairs:.3f} "
              f"us/pair); speed-up vs reference {n_pairs * w_ref / w:.1f}x wall, {n_pairs * c_ref / c:.1f}x CPU; "
              f"{100 * flop_pair * n_pairs / (1e9 * gflops_c) / c:.1f} % of the float32 matmul rate (CPU); "
              f"max |score - reference| = {diff:.2e}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return "?"
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    simd = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    return f"{model}; {' '.join(simd) or 'no AVX2'}"


def matmul_gflops(n: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """Float32 matmul throughput of this CPU with one BLAS thread: (GFLOP/s by wall, by CPU time), best of ``repeats``."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits

        one_thread = threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # then OPENBLAS_NUM_THREADS=1 (see the docstring) must do it
        one_thread = contextlib.nullcontext()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, n)).astype(np.float32)
    y = rng.normal(size=(n, n)).astype(np.float32)
    best_w = best_c = float("inf")
    with one_thread:
        x @ y  # warm up
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            x @ y
            best_w = min(best_w, time.perf_counter() - w0)
            best_c = min(best_c, time.process_time() - c0)
    flop = 2.0 * n**3
    return flop / best_w / 1e9, flop / max(best_c, 1e-9) / 1e9


def all_pairs(args: argparse.Namespace) -> None:
    """scores_all_pairs on --n random templates with PE-MIU: strips on the diagonal vs whole blocks."""
    from facepriv.metrics.scores import scores_all_pairs
    from facepriv.protections.pe_miu import PEMIU, PEMIUComparator

    rng = np.random.default_rng(0)
    x = PEMIU(block_size=args.block_size, seed=1).transform(rng.normal(size=(args.n, args.dim)).astype(np.float32))
    ident = np.arange(args.n)  # identities do not change the work: every pair is scored
    comp = PEMIUComparator(args.block_size, threads=1)
    comp.pairwise(x[:2], x[:8])  # build / load the kernel outside the timing
    pairs = args.n * (args.n - 1) // 2
    print(f"# scores_all_pairs, PE-MIU block {args.block_size}, {args.n} random {args.dim}-d templates "
          f"({pairs} pairs), 1 thread, best of 3")
    results = {}
    for per_pair in (False, True):
        comp.per_pair = per_pair
        best = np.inf
        for _ in range(3):
            t = time.process_time()
            s = scores_all_pairs((x, ident), comp)
            best = min(best, time.process_time() - t)
        results[per_pair] = s
        how = "diagonal blocks in strips (per_pair)" if per_pair else "one call per block"
        print(f"{how}: {best:.3f} s CPU = {1e6 * best / pairs:.3f} us per pair needed")
    same = np.array_equal(results[False].impostor, results[True].impostor)
    print(f"scores identical: {same}")


def realign(args: argparse.Namespace) -> None:
    """Print, per block size, how often the re-alignment recovers the true order and the score change."""
    from facepriv.embeddings import load_embeddings
    from facepriv.protections.base import CosineComparator
    from facepriv.protections.pe_miu import PEMIU, PEMIUComparator, realignment_rate

    rng = np.random.default_rng(0)
    es = load_embeddings(args.embeddings) if args.embeddings else None
    if es is None:
        x = rng.normal(size=(2 * args.n, args.dim))
        ident = np.arange(2 * args.n).astype(str)
    else:
        idx = rng.choice(len(es), size=min(2 * args.n, len(es)), replace=False)
        x, ident = es.embeddings[idx].astype(np.float64), es.identity[idx]
    h = len(x) // 2
    a, b = x[:h], x[h:]
    imp = ident[:h, None] != ident[None, h:]
    cos = CosineComparator().pairwise(a, b)
    print(f"# {len(a)} x {len(b)} templates, D={x.shape[1]}; per-dimension |mean| {np.abs(x.mean(0)).mean():.3f}, "
          f"std {x.std(0).mean():.3f}; impostor mean cosine {cos[imp].mean():.3f}")
    k = x.shape[1] // 2
    while k >= 4 and x.shape[1] % k == 0:
        s = PEMIUComparator(k).pairwise(PEMIU(k, seed=1).transform(a), PEMIU(k, seed=2).transform(b))
        rate = realignment_rate(a, b, k)
        print(f"block {k:3d} (B={x.shape[1] // k:3d}): true order recovered for {100 * rate:5.1f}% of pairs; "
              f"mean |PE-MIU score - cosine| {np.abs(s - cos).mean():.4f}; impostor mean {s[imp].mean():.3f}")
        k //= 2


if __name__ == "__main__":
    main()
