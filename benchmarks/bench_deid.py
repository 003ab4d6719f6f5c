"""Benchmark: BIM cloaks per second per eps and source model on this CPU (real CelebA photos).

Usage::

    nice -n 5 .venv/bin/python benchmarks/bench_deid.py --models dlib_resnet,mobilefacenet,sface \
        --eps 4,8,16 --n 4 --threads 1

Each cloak is a full photo (250x250 CelebA crop) optimised through the source model's alignment
warp for min(eps+4, 1.25 eps) iterations, batch of ``--n`` photos; detection/alignment and JPEG
storage are excluded (timed separately as ``align_s``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from facepriv.adversarial.core import kurakin_iterations
from facepriv.attacks.deid.cloak import cloak_photos
from facepriv.attacks.deid.heads import train_head
from facepriv.datasets.labels import read_labels_csv
from facepriv.images import load_rgb
from facepriv.models.alignment import get_aligner
from facepriv.models.zoo import get_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-crops"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="dlib_resnet,mobilefacenet,sface")
    ap.add_argument("--eps", default="4,8,16")
    ap.add_argument("--n", type=int, default=4, help="photos per batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=str(DATA))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    labels = read_labels_csv(Path(a.data) / "labels.csv")
    photos = [load_rgb(Path(a.data) / im) for im in labels.images[: a.n]]
    print(f"# bench_deid: {a.n} CelebA photos 250x250, torch {torch.__version__}, {a.threads} thread(s), "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| source | eps | iterations | cloaks/s | s per cloak | ms per iteration-photo | align s/photo |")
    print("|---|---|---|---|---|---|---|")
    for name in a.models.split(","):
        model = get_model(name)
        net = model.torch_module()
        aligner = get_aligner(model.card.alignment)
        t = time.perf_counter()
        res = [aligner.align(p) for p in photos]
        align_s = (time.perf_counter() - t) / len(photos)
        keep = [i for i, r in enumerate(res) if r.ok]
        x = np.stack([photos[i] for i in keep])
        mats = np.stack([aligner.crop_matrix(res[i].landmarks) for i in keep])
        emb = model.embed(np.stack([res[i].crop for i in keep]))
        head, _ = train_head(np.concatenate([emb, emb]), np.array([f"c{i}" for i in range(len(keep))] * 2), model=name, epochs=50)
        y = np.arange(len(keep))
        cloak_photos(x[:1], mats[:1], y[:1], net=net, head=head, crop_hw=model.card.input_size, method="bim", eps=1, iterations=1)
        for eps in (float(e) for e in a.eps.split(",")):
            it = kurakin_iterations(eps)
            t = time.perf_counter()
            cloak_photos(x, mats, y, net=net, head=head, crop_hw=model.card.input_size, method="bim", eps=eps, iterations=it)
            dt = time.perf_counter() - t
            print(f"| {name} | {eps:g} | {it} | {len(keep) / dt:.3f} | {dt / len(keep):.2f} | "
                  f"{1000 * dt / len(keep) / it:.0f} | {align_s:.3f} |", flush=True)


if __name__ == "__main__":
    main()
