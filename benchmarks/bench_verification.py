"""Benchmark: all-pairs scoring, DET/EER/AUC report, protocol generation and 10-fold accuracy.

Run from the repository root::

    nice -n 10 .venv/bin/python benchmarks/bench_verification.py [--embeddings E.npz]
        [--n 5121 --dim 128 --identities 250] [--rounds 3] [--out benchmarks/RESULTS_verification.md]

With ``--embeddings`` the templates of that file are used (e.g. the CelebA dlib embeddings);
otherwise random templates with ``--identities`` clusters (timing does not depend on the values).
Each figure is the best of ``--rounds`` rounds (the least disturbed on a shared machine) and the
peak resident memory of the process is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from facepriv.embeddings import EmbeddingSet, load_embeddings
from facepriv.fileio import write_text_atomic
from facepriv.metrics.kfold import kfold_accuracy
from facepriv.metrics.protocol import make_pairs
from facepriv.metrics.verification import scores_all_pairs, scores_for_pairs, verification_report


def _best(fn, rounds: int):
    best, out = float("inf"), None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _synthetic(n: int, dim: int, n_ids: int) -> EmbeddingSet:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, n_ids, n)
    emb = rng.normal(size=(n_ids, dim))[codes] + rng.normal(size=(n, dim))
    ident = np.array([f"id{c}" for c in codes])
    return EmbeddingSet(emb.astype(np.float32), np.array([f"{i}.jpg" for i in range(n)]), ident)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", help="real embeddings .npz (default: synthetic)")
    ap.add_argument("--n", type=int, default=5121)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--identities", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="append a Markdown table to this file")
    a = ap.parse_args()
    os.environ.setdefault("FACEPRIV_NO_PROGRESS", "1")
    es = load_embeddings(a.embeddings) if a.embeddings else _synthetic(a.n, a.dim, a.identities)
    src = a.embeddings or f"synthetic {a.n}x{a.dim}, {a.identities} identities"

    t_scores, sc = _best(lambda: scores_all_pairs(es), a.rounds)
    t_report, rep = _best(lambda: verification_report(sc.genuine, sc.impostor), a.rounds)
    t_proto, proto = _best(lambda: make_pairs(es.ids, es.identity, 10, (300, 300), 0), a.rounds)
    t_kfold, kf = _best(
        lambda: kfold_accuracy(scores_for_pairs(es, proto.id1, proto.id2), proto.genuine, proto.fold), a.rounds
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_cmp = sc.genuine.size + sc.impostor.size
    rows = [
        ("scores_all_pairs (cosine)", t_scores, f"{n_cmp:,} comparisons, {n_cmp / t_scores / 1e6:.1f} M/s"),
        ("verification_report (DET, EER, AUC, FNMR@FMR)", t_report, f"EER {100 * rep.eer:.2f}%, AUC {rep.auc:.4f}"),
        ("make_pairs (10 folds x 300+300)", t_proto, f"{len(proto)} pairs"),
        ("10-fold accuracy (score pairs + CV)", t_kfold, f"{100 * kf.mean:.2f}% +- {100 * kf.std:.2f}%"),
    ]
    lines = [
        f"### verification metrics, {dt.date.today().isoformat()}, {platform.machine()} "
        f"({os.cpu_count()} cores), python {platform.python_version()}",
        "",
        f"Data: {src}: {len(es)} templates, dim {es.dim}. Best of {a.rounds} rounds; peak RSS {peak_mb:.0f} MB.",
        "",
        "| step | seconds | result |",
        "|---|---:|---|",
        *[f"| {name} | {t:.3f} | {res} |" for name, t, res in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        p = Path(a.out)
        old = p.read_text() if p.exists() else "# Verification metrics benchmarks\n\n"
        write_text_atomic(p, old + "\n" + text)


if __name__ == "__main__":
    main()
