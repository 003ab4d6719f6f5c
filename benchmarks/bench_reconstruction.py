"""Benchmark: decoder training throughput (images/s) at 64 and 112 px on this CPU.

One optimisation step = decoder forward, multi-term loss (MSE + SSIM + ID loss through the frozen
dlib ResNet at 150x150), backward, Adam step; batch 32 as in the paper. Real aligned CelebA crops
and their dlib embeddings are used. Reports wall-clock and process CPU time per image, and the
CPU budget of the paper's schedule and of our CPU-sized run.

    .venv/bin/python benchmarks/bench_reconstruction.py --threads 2 --steps 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEPRIV_SHARED_DATA", REPO.parent / "shared" / "data")) / "celeba-crops"


def real_batch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` aligned crops (150x150) of CelebA and their dlib embeddings."""
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    rows = list(csv.DictReader(open(DATA / "labels.csv", encoding="utf-8")))[: n + 8]
    ac = align_images(DATA, [r["image"] for r in rows], "dlib_chip150")
    crops = ac.crops[:n]
    return get_model("dlib_resnet").embed(crops), crops


def bench(size: int, z: np.ndarray, crops: np.ndarray, steps: int, w_id: float) -> dict[str, float]:
    """Time ``steps`` training steps (after one warm-up step) at output ``size``."""
    from facepriv.attacks.reconstruction.data import resize_crops
    from facepriv.attacks.reconstruction.decoder import FaceDecoder
    from facepriv.attacks.reconstruction.losses import ReconstructionLoss
    from facepriv.attacks.reconstruction.trainer import to_tensor
    from facepriv.models.zoo import get_model

    torch.manual_seed(0)
    model = get_model("dlib_resnet")
    dec = FaceDecoder(z.shape[1], size)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
    loss = ReconstructionLoss(model.torch_module() if w_id else None, model.card.input_size, 0.1, w_id)
    x = to_tensor(resize_crops(crops, size))
    zt = torch.from_numpy(z)
    emb = loss.target_embeddings(x) if loss.uses_id else None
    for i in range(steps + 1):
        if i == 1:
            t0, c0 = time.perf_counter(), time.process_time()
        t = loss(dec(zt), x, emb)
        opt.zero_grad()
        t.total.backward()
        opt.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = steps * len(z)
    return {"size": size, "w_id": w_id, "images": n, "wall_s": wall, "cpu_s": cpu, "images_per_s": n / wall, "cpu_ms_per_image": 1000 * cpu / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("FACEPRIV_NO_PROGRESS", "1")
    z, crops = real_batch(args.batch)
    res = [bench(s, z, crops, args.steps, w) for s in (64, 112) for w in (0.0, 1.8)]
    load = os.getloadavg()[0]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, load avg {load:.1f}")
    print("| size | ID loss | images/s (wall) | CPU ms / image | 100 epochs x 63k FFHQ images (CPU h) | 4,000 images x 1 epoch (CPU min) |")
    print("|---|---|---|---|---|---|")
    for r in res:
        per = r["cpu_ms_per_image"] / 1000
        print(f"| {r['size']} | {'yes' if r['w_id'] else 'no'} | {r['images_per_s']:.1f} | {1000 * per:.0f} | "
              f"{per * 63_000 * 100 / 3600:.0f} | {per * 4000 / 60:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_avg": load, "threads": args.threads, "results": res}, indent=2))


if __name__ == "__main__":
    main()
