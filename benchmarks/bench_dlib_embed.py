"""Benchmark: dlib_resnet (PyTorch port) vs dlib-bin's own descriptor on the same real 150x150 chips.

Run from the repository root::

    .venv/bin/python benchmarks/bench_dlib_embed.py [--chips 256] [--dlib-chips 96] [--rounds 3]
        [--out benchmarks/RESULTS_dlib_resnet.md] [--overwrite]

Chips are cut by dlib itself (HOG detector, 5-point landmarks, ``get_face_chip(size=150,
padding=0.25)``) from ../shared/data/celeba-crops; cutting is not timed. Timed: uint8 chips ->
128-d descriptors. dlib-bin is timed one chip at a time and with its batch API on the first
``--dlib-chips`` chips; the faster is the reference (dlib-bin runs on one thread). The port runs in batches of 32, at
1 torch thread and at ``--threads`` (default: torch's default). Every timing
is the best of ``--rounds`` interleaved rounds (the best round is the least disturbed by other
processes on a shared machine). Also reported: the network's FLOPs, the port's achieved GFLOP/s
and this CPU's float32 matmul peak measured with torch at the same thread counts.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facepriv import artifacts
from facepriv.errors import FacePrivError
from facepriv.fileio import check_writable, write_text_atomic
from facepriv.images import load_rgb
from facepriv.models.dlib_resnet import DlibResNet

log = logging.getLogger("bench_dlib_embed")
REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "celeba-crops"


def cut_chips(dlib, n: int) -> np.ndarray:
    """Up to ``n`` dlib chips from CelebA photos, in labels.csv order (photos without a face are skipped)."""
    detector = dlib.get_frontal_face_detector()
    shaper = dlib.shape_predictor(str(artifacts.fetch("dlib_landmarks5")))
    chips = []
    with open(DATA / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            img = load_rgb(DATA / row["image"])
            dets = detector(img, 1)
            if dets:
                chips.append(np.asarray(dlib.get_face_chip(img, shaper(img, dets[0]), size=150, padding=0.25)))
            if len(chips) == n:
                break
    return np.stack(chips)


def count_flops(net: torch.nn.Module) -> int:
    """Multiply-add FLOPs (2 per MAC) of convs and linear layers for one 150x150 image."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += 2 * out[0].numel() * k
        else:
            total += 2 * mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.inference_mode():
        net(torch.rand(1, 3, 150, 150))
    for h in hooks:
        h.remove()
    return total


def matmul_peak(threads: int, n: int = 2048, reps: int = 7) -> tuple[float, float]:
    """Best float32 GFLOP/s of an n x n torch matmul at ``threads`` threads: (per wall second, per CPU second)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = [_timed(lambda: a @ b) for _ in range(reps)]
    return 2 * n**3 / min(t[0] for t in times) / 1e9, 2 * n**3 / min(t[1] for t in times) / 1e9


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    c, t = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=256, help="real chips for the port (default 256)")
    ap.add_argument("--dlib-chips", type=int, default=96, help="chips timed with dlib-bin (default 96)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; best is kept")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS_dlib_resnet.md")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_writable(args.out, args.overwrite)
    except FacePrivError as exc:
        ap.error(str(exc))
    import dlib

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chips = cut_chips(dlib, args.chips)
    sub = chips[: args.dlib_chips]
    ref_model = dlib.face_recognition_model_v1(str(artifacts.fetch("dlib_resnet_v1")))
    model = DlibResNet(batch_size=32)
    net = model.torch_module()
    thread_counts = sorted({1, args.threads})

    def port(threads: int):
        def run():
            torch.set_num_threads(threads)
            model.embed(chips)
        return run

    cases = {
        "dlib-bin `compute_face_descriptor(chip)` one at a time": (
            lambda: [ref_model.compute_face_descriptor(c) for c in sub], len(sub)),
        "dlib-bin `compute_face_descriptor([chips])` batch API": (
            lambda: ref_model.compute_face_descriptor(list(sub)), len(sub)),
    }
    for t in thread_counts:
        cases[f"**dlib_resnet port**, {t} torch thread{'s' if t > 1 else ''}, batch 32"] = (port(t), len(chips))
        port(t)()  # warm-up: oneDNN primitive creation for this thread count
    best: dict[str, tuple[float, float]] = {k: (float("inf"), float("inf")) for k in cases}
    for r in range(args.rounds):
        log.info("timing round %d/%d", r + 1, args.rounds)
        for name, (fn, n) in cases.items():
            wall, cpu = _timed(fn)
            best[name] = (min(best[name][0], wall / n), min(best[name][1], cpu / n))

    torch.set_num_threads(args.threads)
    ours = model.embed(sub)
    ref = np.array([np.asarray(v) for v in ref_model.compute_face_descriptor(list(sub))], dtype=np.float32)
    max_diff = float(np.abs(ours - ref).max())
    flops = count_flops(net)
    peaks = {t: matmul_peak(t) for t in thread_counts}
    torch.set_num_threads(args.threads)
    names = list(cases)
    dlib_wall = min(best[names[0]][0], best[names[1]][0])
    dlib_cpu = min(best[names[0]][1], best[names[1]][1])
    env = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
    nice = f"nice -n {os.nice(0)} " if os.nice(0) else ""  # the command as it was run
    cmd = f"{env}{nice}.venv/bin/python benchmarks/bench_dlib_embed.py " + " ".join(argv or sys.argv[1:])
    lines = [
        "# dlib_resnet embedding benchmark",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"dlib {dlib.__version__} (dlib-bin wheel, BLAS={'yes' if getattr(dlib, 'DLIB_USE_BLAS', False) else 'no'}, "
        f"single-threaded), load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(the machine may be shared), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
        f"- command: `{cmd.strip()}`",
        f"- data: {len(chips)} real 150x150 chips cut by dlib from CelebA (celeba-crops); dlib-bin timed on "
        f"the first {len(sub)}; best of {args.rounds} interleaved rounds; CPU = process CPU time",
        "",
        "| what | wall ms / image | images / s | CPU ms / image | speed-up (wall) | speed-up (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        wall, cpu = best[name]
        lines.append(f"| {name} | {1e3 * wall:.2f} | {1 / wall:.1f} | {1e3 * cpu:.2f} | "
                     f"{dlib_wall / wall:.1f}x | {dlib_cpu / cpu:.1f}x |")
    lines += [
        "",
        "Speed-ups are relative to the faster dlib-bin mode. Target: >= 10x.",
        "",
        f"- max |port - dlib| over the {len(sub)} descriptors: {max_diff:.2e}",
        f"- network cost: {flops / 1e9:.3f} GFLOP per image (2 x multiply-adds of the 29 convs + fc)",
    ]
    for t in thread_counts:
        wall, cpu = best[names[2 + thread_counts.index(t)]]
        pw, pc = peaks[t]
        lines.append(
            f"- {t} thread{'s' if t > 1 else ''}: port {flops / wall / 1e9:.1f} GFLOP/s wall-clock, "
            f"{flops / cpu / 1e9:.1f} per CPU-second; torch float32 matmul (2048^2) {pw:.1f} GFLOP/s wall-clock, "
            f"{pc:.1f} per CPU-second -> port at {100 * flops / wall / 1e9 / pw:.0f}% (wall) / "
            f"{100 * flops / cpu / 1e9 / pc:.0f}% (CPU) of the matmul peak"
        )
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
