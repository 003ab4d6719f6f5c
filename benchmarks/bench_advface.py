"""Benchmark: AdvFace-protected features per second on this CPU (40 PGD steps, batch 64).

Usage::

    .venv/bin/python benchmarks/bench_advface.py --features F.npz --shadow resrec=RUN [--shadow urec=RUN ...]

Measures, in the same run, the cost of one plain forward pass of the client+server system on the
same features (the baseline a deployment pays anyway) so the ratio is robust to machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from facepriv.advface.features import load_features
from facepriv.advface.protect import AdvFace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True)
    ap.add_argument("--shadow", action="append", required=True, help="ARCH=RUN (repeatable)")
    ap.add_argument("--n", type=int, default=128, help="features to protect per measurement")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    fs = load_features(args.features)
    z = fs.features[: args.n]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, features {tuple(z.shape)}")
    for spec in args.shadow:
        arch, run = spec.split("=", 1)
        prot = AdvFace(shadow=run, steps=args.steps).fit()
        t0 = time.perf_counter()
        prot.system_.describe(z)  # baseline: what the server computes for these features anyway
        base = time.perf_counter() - t0
        t0 = time.perf_counter()
        prot.transform(z)
        dt = time.perf_counter() - t0
        print(f"{arch:>9}: {len(z) / dt:7.1f} protected features/s ({args.steps} PGD steps); "
              f"server forward {len(z) / base:8.1f} features/s; cost ratio {dt / base:6.1f}x")


if __name__ == "__main__":
    main()
