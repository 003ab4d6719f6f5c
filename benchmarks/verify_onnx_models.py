"""Accuracy checks behind docs/models.md: ONNX ports vs onnxruntime, verification, gender classifier.

Usage::

    nice -n 10 .venv/bin/python benchmarks/verify_onnx_models.py [--data ../shared/data] [--out result.json]

1. all FaceScrub crops aligned with ``arcface112``; each port's embeddings vs onnxruntime (batch 1)
   on the same normalisation done in numpy: max / mean abs diff, min cosine; all-pairs EER and AUC;
2. GenderClassifier (detect on/off) on all FaceScrub crops and on 600 random labelled CelebA photos.
Takes ~15 minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

PRE = {
    "sface": ("sface", lambda x: x),
    "mobilefacenet": ("mobilefacenet_w600k", lambda x: (x - 127.5) / 127.5),
    "edgeface": ("edgeface_s", lambda x: (x / 255 - 0.5) / 0.5),
}


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def ports(data: Path, out: dict) -> None:
    import onnxruntime as ort

    from facepriv.artifacts import fetch
    from facepriv.metrics.verification import scores_all_pairs, verification_report
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    root = data / "facescrub6"
    rows = _rows(root)
    ident_of = {r["image"]: r["identity"] for r in rows}
    ac = align_images(root, [r["image"] for r in rows], "arcface112")
    ident = np.array([ident_of[i] for i in ac.ids])
    out["faces"] = {"aligned": len(ac.ids), "failed": len(ac.failures)}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    for name, (key, pre) in PRE.items():
        t = time.time()
        e = get_model(name).embed(ac.crops)
        t_port = time.time() - t
        sess = ort.InferenceSession(str(fetch(key)), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0].name
        x = pre(ac.crops.astype(np.float32).transpose(0, 3, 1, 2))
        t = time.time()
        ref = np.concatenate([sess.run(None, {inp: np.ascontiguousarray(x[i : i + 1])})[0] for i in range(len(x))])
        t_ort = time.time() - t
        d = np.abs(e - ref)
        cos = (e * ref).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(ref, axis=1)
        rep = verification_report(*scores_all_pairs((e, ident)))
        out[name] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                     "max_abs_value": float(np.abs(ref).max()), "min_cos_port_vs_ort": float(cos.min()),
                     "port_s": t_port, "ort_batch1_s": t_ort, "eer": rep.eer, "auc": rep.auc}
        print(name, out[name], flush=True)


def gender(data: Path, out: dict) -> None:
    from facepriv.images import load_rgb
    from facepriv.metrics.stats import wilson_interval
    from facepriv.models.gender_classifier import GenderClassifier

    for tag, sub, n in (("facescrub", "facescrub6", None), ("celeba", "celeba-crops", 600)):
        root = data / sub
        rows = [r for r in _rows(root) if r["gender"]]
        if n:
            pick = np.random.default_rng(0).choice(len(rows), n, replace=False)
            rows = [rows[i] for i in sorted(pick)]
        faces = [load_rgb(root / r["image"]) for r in rows]
        y = np.array([r["gender"] for r in rows])
        for det in (True, False):
            labels, _ = GenderClassifier(detect=det).predict(faces)
            k = int((labels == y).sum())
            out[f"gender_{tag}_detect_{det}"] = {
                "acc": k / len(y), "n": len(y), "ci95": wilson_interval(k, len(y)),
                "male_recall": float(np.mean(labels[y == "male"] == "male")),
                "female_recall": float(np.mean(labels[y == "female"] == "female")),
            }
            print(tag, det, out[f"gender_{tag}_detect_{det}"], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    ports(args.data, out)
    gender(args.data, out)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
