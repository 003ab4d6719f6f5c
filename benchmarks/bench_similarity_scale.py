"""Benchmark: the similarity attack against attacker databases of 10^4 .. 10^6 templates.

Synthetic gender-labelled unit-norm templates (default 512-d; a weak gender direction added to
Gaussian noise, half of each gender) form the attacker's database; ``--probes`` (default 1,000)
templates of the same distribution are the intercepted probes. The attack
(:class:`~facepriv.attacks.soft_biometric.SimilarityAttack`, cosine comparator, default top-n
1..600, ``decision="both"``) runs two ways, each in its own subprocess so that peak memory is
that process's alone (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts FAISS's C++
allocations too, unlike ``tracemalloc``):

* ``search``: ``attack.evaluate(probes)`` — per-class top-n by exact FAISS search
  (``facepriv.search.top_k(..., rescore=True)``), probes in chunks;
* ``dense``: the previous path — the full (P, G) float64 score matrix from
  ``comparator.pairwise``, then ``attack.evaluate(probes, scores=...)``. Skipped above
  ``--dense-max`` (default 10^5: at 10^6 the matrix alone is 8 GB).

``--pemiu N`` adds the PE-MIU comparator (block 32, B = 16) on an N-template database: the
generic path (gallery in chunks, running top-n merge) vs. the dense pairwise matrix.

The parent checks that both paths give the same predictions (all rules, n, decisions) and the
same fused scores, and prints one table row per run. Run with ``nice``; wall times depend on the
load of the (shared) machine, which is printed::

    nice -n 10 .venv/bin/python benchmarks/bench_similarity_scale.py
    nice -n 10 .venv/bin/python benchmarks/bench_similarity_scale.py --sizes 10000 --probes 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

GEN_CHUNK = 65536


def synthetic(n: int, dim: int, seed: int, signal: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit-norm float32 templates and their gender (half each), generated chunk by chunk."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(12345).normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, GEN_CHUNK):
        z = rng.standard_normal(size=(min(GEN_CHUNK, n - s), dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        z += signal * y[s : s + GEN_CHUNK, None] * direction
        x[s : s + GEN_CHUNK] = z / np.linalg.norm(z, axis=1, keepdims=True)
    return x, np.where(y > 0, "female", "male")


def _embedding_set(x: np.ndarray, gender: np.ndarray, prefix: str, protection: dict | None):
    from facepriv.embeddings import EmbeddingSet

    ids = np.char.add(prefix, np.arange(len(x)).astype(str))
    return EmbeddingSet(x, ids, ids, {"gender": gender}, "synthetic", protection)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def child(args: argparse.Namespace) -> None:
    """One run (size, path) in this process; prints a JSON line and saves the predictions."""
    from facepriv.attacks.soft_biometric import SimilarityAttack

    prot = {"name": "pe_miu", "params": {"block_size": 32, "moved_blocks": None}} if args.comparator == "pe_miu" else None
    gx, gy = synthetic(args.size, args.dim, args.seed)
    px, py = synthetic(args.probes, args.dim, args.seed + 1)
    gallery = _embedding_set(gx, gy, "g", prot)
    probes = _embedding_set(px, py, "p", prot)
    del gx, px
    data_rss = _rss_mb()
    w0, c0 = time.perf_counter(), time.process_time()
    attack = SimilarityAttack(decision="both").fit(gallery)
    if args.path == "dense":
        res = attack.evaluate(probes, scores=attack.scores(probes))
    else:
        res = attack.evaluate(probes)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(args.save, **{f"pred|{k[0]}|{k[1]}|{k[2]}": v for k, v in res.predictions.items()},
             **{f"fused|{k[0]}|{k[1]}": v for k, v in res.fused.items()})
    b = res.best()
    print(json.dumps({"size": args.size, "path": args.path, "comparator": args.comparator, "wall_s": wall,
                      "cpu_s": cpu, "peak_rss_mb": peak, "data_rss_mb": data_rss, "best": f"{b['rule']}, n={b['n']}",
                      "accuracy": b["accuracy"]}))


def _compare(a: str, b: str) -> tuple[int, float]:
    """Differing predictions and max |fused difference| between two saved runs."""
    with np.load(a) as x, np.load(b) as y:
        if sorted(x.files) != sorted(y.files):
            raise SystemExit("the two paths produced different result keys")
        npred = sum(int((x[k] != y[k]).sum()) for k in x.files if k.startswith("pred|"))
        dfused = max(float(np.abs(x[k] - y[k]).max()) for k in x.files if k.startswith("fused|"))
    return npred, dfused


def _run(args: argparse.Namespace, size: int, path: str, comparator: str, save: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--size", str(size), "--path", path, "--comparator", comparator,
           "--probes", str(args.probes), "--dim", str(args.dim), "--seed", str(args.seed), "--save", save]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "FACEPRIV_NO_PROGRESS": "1"})
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="attacker database sizes, comma-separated")
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dense-max", type=int, default=100_000, help="skip the dense path above this size")
    ap.add_argument("--pemiu", type=int, default=0, help="also run the PE-MIU comparator on a database of this size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--path", choices=("search", "dense"), help=argparse.SUPPRESS)
    ap.add_argument("--comparator", default="cosine", choices=("cosine", "pe_miu"), help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import faiss

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; python "
          f"{platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}; nice {os.nice(0)}")
    print("| comparator | database | path | wall s | CPU s | peak RSS MB | data RSS MB | best (rule, n) | accuracy | "
          "same as dense |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = [(int(s), "cosine") for s in args.sizes.split(",") if s] + ([(args.pemiu, "pe_miu")] if args.pemiu else [])
    with tempfile.TemporaryDirectory() as tmp:
        for size, comparator in runs:
            saves = {p: os.path.join(tmp, f"{comparator}{size}{p}.npz") for p in ("search", "dense")}
            paths = ("search", "dense") if size <= args.dense_max else ("search",)
            rows = {p: _run(args, size, p, comparator, saves[p]) for p in paths}
            same = f"dense skipped (P x G float64 = {8 * size * args.probes / 1e9:.0f} GB)"
            if "dense" in rows:
                npred, dfused = _compare(saves["search"], saves["dense"])
                same = f"{npred} predictions differ; max fused diff {dfused:.1e}"
            for p, r in rows.items():
                print(f"| {comparator} | {size:,} | {p} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                      f"{r['data_rss_mb']:.0f} | {r['best']} | {100 * r['accuracy']:.1f} | {same if p == 'search' else ''} |",
                      flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
