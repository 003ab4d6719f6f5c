"""Benchmark: photo decoding, detection + alignment per recipe, and the whole embed pipeline.

Run from the repository root::

    nice -n 10 .venv/bin/python benchmarks/bench_embedding.py [--images 200] [--rounds 3]
        [--models dlib_resnet sface] [--out benchmarks/RESULTS_embedding.md]

Photos: the first ``--images`` of ../shared/data/celeba-crops/labels.csv (250x250 JPEG). Timed
per image: ``load_rgb`` (decode), ``Aligner.align`` for each recipe (detection, landmarks, warp).
Each figure is the best of ``--rounds`` rounds (the least disturbed on a shared machine). Then
``embed_folder`` end to end (no crops cache) for each model, one run, images/s wall clock.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

from facepriv.fileio import write_text_atomic
from facepriv.images import load_rgb
from facepriv.models.alignment import RECIPES, get_aligner

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "celeba-crops"


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=["dlib_resnet", "sface"])
    ap.add_argument("--out", default=None, help="write a Markdown table here (default: print only)")
    args = ap.parse_args()
    os.environ.setdefault("FACEPRIV_NO_PROGRESS", "1")
    rows = list(csv.DictReader(open(DATA / "labels.csv", encoding="utf-8")))[: args.images]
    paths = [DATA / r["image"] for r in rows]
    imgs = [load_rgb(p) for p in paths]
    n = len(imgs)
    lines = ["| step | ms per image | images/s | faces found |", "|---|---:|---:|---:|"]
    t = _best(lambda: [load_rgb(p) for p in paths], args.rounds)
    lines.append(f"| decode JPEG (load_rgb) | {1000 * t / n:.1f} | {n / t:.0f} | |")
    for recipe in RECIPES:
        al = get_aligner(recipe)
        found = sum(al.align(im).ok for im in imgs)
        t = _best(lambda al=al: [al.align(im) for im in imgs], args.rounds)
        lines.append(f"| align {recipe} | {1000 * t / n:.1f} | {n / t:.0f} | {found}/{n} |")
    from facepriv.models.zoo import get_model, model_names
    from facepriv.pipeline import embed_folder

    with tempfile.TemporaryDirectory() as tmp:
        lab = Path(tmp) / "labels.csv"
        with open(lab, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        for name in args.models:
            if name not in model_names():
                continue
            model = get_model(name)
            model.embed(get_aligner(model.card.alignment).align(imgs[0]).crop[None])  # warm-up
            _, _, st = embed_folder(DATA, model, lab, cache=False)
            lines.append(f"| embed_folder {name} (decode+align+embed) | {1000 * st.seconds / n:.1f} | "
                         f"{st.images_per_s:.1f} | {st.embedded}/{n} |")
    load = os.getloadavg()
    head = (f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.1f} during the run, {n} celeba-crops photos, "
            f"best of {args.rounds} rounds (alignment), one run (embed_folder)\n\n"
            f"Command: `{f'nice -n {os.nice(0)} ' if os.nice(0) else ''}.venv/bin/python benchmarks/bench_embedding.py --images {args.images} "
            f"--rounds {args.rounds} --models {' '.join(args.models)}`\n\n")
    text = head + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text_atomic(args.out, "# Embedding pipeline benchmark\n\n" + text)


if __name__ == "__main__":
    main()
