"""Benchmark: exact 1:N search, FAISS flat indexes vs. the numpy path of :mod:`facepriv.search`.

Gallery of ``--gallery`` synthetic unit-norm templates (default 100,000 x 512-d), ``--probes``
probes (default 1,000) that are noisy copies of gallery templates (so top-1 is known and scores do
not tie); top-``k`` per probe. Cosine: FAISS ``IndexFlatIP`` vs. ``CosineComparator.pairwise`` over
gallery chunks with a running ``argpartition`` top-k (``top_k_numpy``). Hamming (``--bits`` > 0):
FAISS ``IndexBinaryFlat`` vs. a numpy Hamming comparator (matrix products of the 0/1 codes).
Results are checked equal (indices, and scores within 1e-5 for float32 FAISS cosine).

    OPENBLAS_NUM_THREADS=2 .venv/bin/python benchmarks/bench_identification.py
    .venv/bin/python benchmarks/bench_identification.py --gallery 20000 --probes 200 --bits 256

Wall-clock and process CPU time are reported (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from facepriv.protections.base import Comparator, CosineComparator
from facepriv.search import top_k, top_k_numpy


class NumpyHamming(Comparator):
    """1 - Hamming distance / L of {0, 1} codes by two matrix products (the numpy path)."""

    metric = "hamming"

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = (np.asarray(a) > 0).astype(np.float32)
        b = (np.asarray(b) > 0).astype(np.float32)
        agree = a @ b.T + (1 - a) @ (1 - b).T
        return agree.astype(np.float64) / a.shape[1]


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--bits", type=int, default=0, help="also benchmark Hamming search on codes of this length")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    g = rng.normal(size=(args.gallery, args.dim)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    src = rng.choice(args.gallery, size=args.probes, replace=False)
    p = g[src] + 0.05 * rng.normal(size=(args.probes, args.dim)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {np.__version__}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"gallery {args.gallery} x {args.dim}, probes {args.probes}, k {args.k}")
    comp = CosineComparator()
    (fs, fi), fw, fc = _timed(lambda: top_k(comp, p, g, args.k))
    (ns, ni), nw, nc = _timed(lambda: top_k_numpy(comp, p, g, args.k))
    same = np.array_equal(fi, ni)
    diff = float(np.abs(fs - ns).max())
    top1 = float((fi[:, 0] == src).mean())
    print(f"cosine  FAISS IndexFlatIP : {fw:8.2f} s wall {fc:8.2f} s CPU")
    print(f"cosine  numpy top_k_numpy : {nw:8.2f} s wall {nc:8.2f} s CPU")
    print(f"cosine  speed-up (wall)   : {nw / fw:8.1f}x; indices equal: {same}; max |score diff| {diff:.2e}; "
          f"top-1 = source {top1:.3f}")
    if not same or diff > 1e-5:
        raise SystemExit("FAISS and numpy results differ")
    if args.bits:
        proj = rng.normal(size=(args.dim, args.bits)).astype(np.float32)
        gb, pb = (g @ proj > 0).astype(np.uint8), (p @ proj > 0).astype(np.uint8)
        hc = NumpyHamming()
        (hs, hi), hw, hcpu = _timed(lambda: top_k(hc, pb, gb, args.k))
        (ms, mi), mw, mcpu = _timed(lambda: top_k_numpy(hc, pb, gb, args.k))
        # integer distances tie often: the score lists must be identical, the top-1 index where it is unique
        ties = ms[:, 0] == ms[:, 1]
        print(f"hamming FAISS IndexBinaryFlat ({args.bits} bits): {hw:8.2f} s wall {hcpu:8.2f} s CPU")
        print(f"hamming numpy top_k_numpy            : {mw:8.2f} s wall {mcpu:8.2f} s CPU")
        print(f"hamming speed-up (wall) {mw / hw:.1f}x; scores equal: {np.array_equal(hs, ms)}; "
              f"top-1 equal on the {int((~ties).sum())} probes with a unique top-1: "
              f"{np.array_equal(hi[~ties, 0], mi[~ties, 0])}")
        if not np.array_equal(hs, ms) or not np.array_equal(hi[~ties, 0], mi[~ties, 0]):
            raise SystemExit("FAISS and numpy Hamming results differ")


if __name__ == "__main__":
    main()
