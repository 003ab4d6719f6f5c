"""Benchmark: cloaks per second of BIM vs MI / DI / TI / VMI and an ensemble of 3 source models (CPU).

Usage::

    nice -n 5 .venv/bin/python benchmarks/bench_cloaks.py --n 4 --eps 8 --threads 1

Each cloak is a full CelebA photo (<= 250 px) optimised through the source model's alignment warp
for min(eps+4, 1.25 eps) iterations, ``--n`` photos in one batch, source ``dlib_resnet`` (the
ensemble adds ``sface`` and ``mobilefacenet``, each with its own warp and head). Detection,
alignment and head training are excluded. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from facepriv.attacks.deid.cloak import cloak_photos
from facepriv.attacks.deid.heads import train_head
from facepriv.datasets.labels import read_labels_csv
from facepriv.images import load_rgb
from facepriv.models.alignment import get_aligner
from facepriv.models.zoo import get_model
from facepriv.protections.image import SourcePipeline
from facepriv.registry import create

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-crops"

VARIANTS = {
    "BIM": {},
    "MI": {"momentum": 1.0},
    "MI-DI (p 0.5)": {"momentum": 1.0, "diversity_prob": 0.5},
    "MI-TI (kernel 7)": {"momentum": 1.0, "ti_kernel": 7},
    "VMI (5 neighbours)": {"momentum": 1.0, "vmi_samples": 5},
    "BIM ensemble x3": {"ensemble": ["sface", "mobilefacenet"]},
    "BIM + EOT (jpeg:75)": {"eot": ["jpeg:75"]},
}


def _pipeline(name: str, photos: list[np.ndarray], ids: list[str]) -> SourcePipeline:
    """A source pipeline with a head over the photos themselves (one class per photo)."""
    model = get_model(name)
    aligner = get_aligner(model.card.alignment)
    res = [aligner.align(p) for p in photos]
    if not all(r.ok for r in res):
        raise SystemExit(f"{name}: a benchmark photo has no detectable face; choose other photos")
    emb = model.embed(np.stack([r.crop for r in res]))
    classes = [f"c{i}" for i in range(len(photos))]
    head, info = train_head(np.concatenate([emb, emb]), np.array(classes * 2), model=name, epochs=50)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return SourcePipeline(net=model.torch_module(), head=head, crop_hw=tuple(model.card.input_size), templates=unit,
                          name=name, classes=list(info.classes),
                          matrices={i: aligner.crop_matrix(r.landmarks) for i, r in zip(ids, res, strict=True)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="photos per batch")
    ap.add_argument("--eps", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=str(DATA))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    labels = read_labels_csv(Path(a.data) / "labels.csv")
    ids = list(labels.images[: a.n])
    photos = [np.asarray(load_rgb(Path(a.data) / im)) for im in ids]
    if len({p.shape for p in photos}) != 1:
        raise SystemExit("the benchmark photos must share one size")
    src = _pipeline("dlib_resnet", photos, ids)
    members = [_pipeline(m, photos, ids) for m in ("sface", "mobilefacenet")]
    x = np.stack(photos)
    mats = np.stack([src.matrices[i] for i in ids])
    y = np.array([src.classes.index(f"c{i}") for i in range(len(ids))])
    print(f"# bench_cloaks: {a.n} CelebA photos {photos[0].shape[1]}x{photos[0].shape[0]}, eps {a.eps:g}, "
          f"torch {torch.__version__}, {a.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| variant | iterations | cloaks/s | s per cloak | relative to BIM |")
    print("|---|---|---|---|---|")
    base = None
    for label, params in VARIANTS.items():
        prot = create("protection", "bim_cloak", {"eps": [a.eps], **params})
        src.members = members if params.get("ensemble") else []
        it = prot.iterations(a.eps)
        seeds = prot.photo_seeds(ids, a.eps)
        cloak_photos(x[:1], mats[:1], y[:1], source=src, method="bim", eps=1, iterations=1, ids=ids[:1],
                     seeds=seeds[:1], transfer=prot)  # warm-up
        t = time.perf_counter()
        cloak_photos(x, mats, y, source=src, method="bim", eps=a.eps, iterations=it, ids=ids, seeds=seeds,
                     transfer=prot)
        dt = time.perf_counter() - t
        base = base or dt
        print(f"| {label} | {it} | {len(ids) / dt:.3f} | {dt / len(ids):.2f} | {dt / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
