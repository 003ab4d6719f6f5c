"""GPU smoke check: the same work on CUDA and on the CPU, compared, on real face crops.

Three checks, each printed as a table row (device, throughput, the comparison, PASS/FAIL):

1. **embedding** of N real CelebA photos (dlib chip 150x150, ``dlib_resnet``): templates on CUDA vs
   CPU; max |difference| and the smallest per-template cosine, which must be >= ``--cos-tol``
   (default 0.9999).
2. **decoder training**: a few optimisation steps of the reconstruction decoder (MSE + SSIM + ID
   loss through ``dlib_resnet``) on CUDA with mixed precision (as ``facepriv reconstruct train``
   does there): images/s, every loss finite.
3. **BIM cloak**: one batch of photos cloaked with BIM on CUDA vs CPU: cloaks/s, the perturbation
   within eps on both, and the identity outcome (protected = the true identity is not top-1 of
   the source head, judged on the CPU for both) agreeing on at least ``--psr-agree`` of the
   photos (default 0.75; float differences flip sign steps, so cloaks are not bit-equal).

Without CUDA it says so, runs the CPU half (the same rows with CPU numbers only, plus a
determinism check: the CPU embedding run twice is bit-identical) and exits 0. A failed check exits
1. Run it with ``benchmarks/gpu_smoke.sh`` (same arguments).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CROPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-crops"


def pick_rows(root: Path, n: int) -> list[tuple[str, str]]:
    """``n`` (image, identity) rows: 4 photos each of the first identities (sorted, reproducible)."""
    with open(root / "labels.csv", newline="") as f:
        rows = sorted((r["image"], r["identity"]) for r in csv.DictReader(f))
    by_id: dict[str, list[str]] = {}
    for im, ident in rows:
        by_id.setdefault(ident, []).append(im)
    out: list[tuple[str, str]] = []
    for ident in sorted(by_id):
        if len(by_id[ident]) >= 4:
            out += [(im, ident) for im in by_id[ident][:4]]
        if len(out) >= n:
            break
    return out[:n]


def timed(fn, device: str, repeat: int = 1):
    """(result of the last call, seconds per call) with CUDA synchronised around the timing."""
    from facepriv.device import synchronize

    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    synchronize(device)
    return out, (time.perf_counter() - t0) / repeat


def check_embedding(model, crops: np.ndarray, device: str | None, cos_tol: float) -> list[dict]:
    """Rows of the embedding check (CPU; CUDA vs CPU when ``device``)."""
    from facepriv.models.base import embed_on

    cpu, s_cpu = timed(lambda: embed_on(model, crops, "cpu"), "cpu")
    again = embed_on(model, crops, "cpu")
    rows = [{"check": "embedding", "device": "cpu", "rate": f"{len(crops) / s_cpu:.1f} img/s",
             "compare": "CPU run twice: bit-identical" if np.array_equal(cpu, again) else "CPU run twice differs",
             "ok": bool(np.array_equal(cpu, again))}]
    if device is None:
        return rows
    embed_on(model, crops[:8], device)  # warm-up: copy of the network, cuDNN autotune
    gpu, s_gpu = timed(lambda: embed_on(model, crops, device), device, repeat=3)
    a = cpu / np.linalg.norm(cpu, axis=1, keepdims=True)
    b = gpu / np.linalg.norm(gpu, axis=1, keepdims=True)
    cos = float((a * b).sum(1).min())
    diff = float(np.abs(cpu - gpu).max())
    rows.append({"check": "embedding", "device": device, "rate": f"{len(crops) / s_gpu:.1f} img/s",
                 "compare": f"max|diff| {diff:.2e}, min cosine {cos:.6f} (need >= {cos_tol})", "ok": cos >= cos_tol})
    return rows


def check_training(model, emb: np.ndarray, crops: np.ndarray, device: str, steps: int, size: int, batch: int) -> dict:
    """One row: ``steps`` decoder steps on ``device`` (AMP on CUDA), images/s and finite losses."""
    from facepriv.attacks.reconstruction.data import resize_crops
    from facepriv.attacks.reconstruction.trainer import TrainConfig, train_decoder
    from facepriv.device import resolve_amp

    batch = min(batch, len(emb))
    per_epoch = len(emb) // batch  # full batches (a last one of fewer than 2 is dropped)
    cfg = TrainConfig(size=size, embedding_dim=emb.shape[1], epochs=-(-steps // per_epoch), batch_size=batch, seed=0,
                      model=model.name)
    targets = resize_crops(crops, size)

    def run(k: int):
        return train_decoder(emb, targets, cfg, None, model.torch_module(), tuple(model.card.input_size),
                             max_steps=k, device=device)

    if device != "cpu":
        run(1)  # warm-up: network copy, cuDNN autotune
    res, s = timed(lambda: run(steps), device)
    done = steps * batch  # images through the decoder (the targets' ID embeddings are in the time too)
    losses = [h["loss"] for h in res.history]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    amp = resolve_amp(device)
    return {"check": "decoder training", "device": device + (" (amp)" if amp else ""),
            "rate": f"{done / s:.1f} img/s", "compare": f"{steps} step(s), loss {losses[-1]:.4f}" if losses else "no step",
            "ok": finite}


def cloak(source_cpu, photos: np.ndarray, labels: np.ndarray, eps: float, device: str):
    """Cloak ``photos`` (their own aligned crops: identity matrices) with BIM on ``device``."""
    from facepriv.attacks.deid.cloak import cloak_photos
    from facepriv.device import module_on
    from facepriv.protections.image import SourcePipeline

    src = source_cpu if device == "cpu" else SourcePipeline(
        net=module_on(source_cpu.net, device), head=module_on(source_cpu.head, device), crop_hw=source_cpu.crop_hw,
        templates=source_cpu.templates, name=source_cpu.name, classes=source_cpu.classes, device=device)
    mats = np.repeat(np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), len(photos), axis=0)
    return cloak_photos(photos, mats, labels, source=src, method="bim", eps=eps), mats


def protected(source_cpu, photos: np.ndarray, mats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per photo: the true identity is not top-1 of the source head (judged on the CPU)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(photos)).permute(0, 3, 1, 2).float()
        logits = source_cpu.photo_model(mats, photos.shape[1:3])(x).numpy()
    return logits.argmax(1) != labels


def check_cloak(model, emb: np.ndarray, identity: np.ndarray, crops: np.ndarray, device: str | None, eps: float,
                n: int, agree_tol: float) -> list[dict]:
    """Rows of the BIM cloak check (CPU; CUDA vs CPU when ``device``)."""
    from facepriv.attacks.deid.heads import train_head
    from facepriv.protections.image import SourcePipeline

    head, info = train_head(emb, identity, model=model.name, seed=0)
    cls = {c: i for i, c in enumerate(info.classes)}
    labels = np.array([cls[i] for i in identity[:n]])
    photos = crops[:n]
    source = SourcePipeline(net=model.torch_module(), head=head, crop_hw=tuple(model.card.input_size),
                            templates=np.zeros((len(cls), emb.shape[1]), np.float32), name=model.name,
                            classes=list(info.classes))
    (c_cpu, mats), s_cpu = timed(lambda: cloak(source, photos, labels, eps, "cpu"), "cpu")
    d_cpu = int(np.abs(c_cpu.photos.astype(int) - photos.astype(int)).max())
    p_cpu = protected(source, c_cpu.photos, mats, labels)
    rows = [{"check": "BIM cloak", "device": "cpu", "rate": f"{n / s_cpu:.2f} cloaks/s",
             "compare": f"max|delta| {d_cpu} <= eps {eps:g}; PSR@1 {100 * p_cpu.mean():.0f}%",
             "ok": d_cpu <= eps}]
    if device is None:
        return rows
    cloak(source, photos[:2], labels[:2], eps, device)  # warm-up
    (c_gpu, _), s_gpu = timed(lambda: cloak(source, photos, labels, eps, device), device)
    d_gpu = int(np.abs(c_gpu.photos.astype(int) - photos.astype(int)).max())
    p_gpu = protected(source, c_gpu.photos, mats, labels)
    agree = float((p_cpu == p_gpu).mean())
    rows.append({"check": "BIM cloak", "device": device, "rate": f"{n / s_gpu:.2f} cloaks/s",
                 "compare": f"max|delta| {d_gpu} <= eps {eps:g}; PSR@1 {100 * p_gpu.mean():.0f}% "
                            f"(CPU {100 * p_cpu.mean():.0f}%), outcome agreement {agree:.2f} (need >= {agree_tol})",
                 "ok": d_gpu <= eps and agree >= agree_tol})
    return rows


def print_table(rows: list[dict]) -> None:
    """Markdown table of the rows."""
    print("| check | device | throughput | comparison | result |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['device']} | {r['rate']} | {r['compare']} | {'PASS' if r['ok'] else 'FAIL'} |")


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 0 when every check passes (or no CUDA: CPU half only), 1 otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("crops", nargs="?", type=Path, default=DEFAULT_CROPS,
                    help="folder of face photos with labels.csv (default ../shared/data/celeba-crops)")
    ap.add_argument("--n", type=int, default=64, help="photos to embed (default 64)")
    ap.add_argument("--steps", type=int, default=5, help="decoder training steps (default 5)")
    ap.add_argument("--size", type=int, default=112, help="decoder output size (default 112)")
    ap.add_argument("--batch", type=int, default=16, help="decoder batch size (default 16)")
    ap.add_argument("--cloaks", type=int, default=8, help="photos in the cloak batch (default 8)")
    ap.add_argument("--eps", type=float, default=4.0, help="BIM budget in pixels (default 4)")
    ap.add_argument("--device", default="cuda", help="the CUDA device to compare (default cuda)")
    ap.add_argument("--cos-tol", type=float, default=0.9999, help="min cosine CUDA vs CPU template (default 0.9999)")
    ap.add_argument("--psr-agree", type=float, default=0.75, help="min cloak outcome agreement (default 0.75)")
    ap.add_argument("--cpu-only", action="store_true", help="run the CPU half even when CUDA is present")
    args = ap.parse_args(argv)

    import torch

    from facepriv.device import resolve_device
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    device = None
    if args.cpu_only:
        print("gpu_smoke: --cpu-only: running the CPU half only")
    elif not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device on this machine (torch sees none): running the CPU half only")
    else:
        device = resolve_device(args.device)
        print(f"gpu_smoke: {device} = {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    if not (args.crops / "labels.csv").is_file():
        print(f"gpu_smoke: {args.crops}: no labels.csv (give a folder of photos with image,identity rows)", file=sys.stderr)
        return 2
    model = get_model("dlib_resnet")
    rows_in = pick_rows(args.crops, args.n)
    ac = align_images(args.crops, [im for im, _ in rows_in], model.card.alignment)
    ident_of = dict(rows_in)
    crops, identity = ac.crops, np.array([ident_of[i] for i in ac.ids])
    print(f"gpu_smoke: {len(crops)} aligned crops of {len(set(identity))} people from {args.crops}")
    rows = check_embedding(model, crops, device, args.cos_tol)
    emb = model.embed(crops)
    steps = args.steps if device is not None else min(args.steps, 2)
    rows.append(check_training(model, emb, crops, "cpu", steps, args.size, args.batch))
    if device is not None:
        rows.append(check_training(model, emb, crops, device, args.steps, args.size, args.batch))
    rows += check_cloak(model, emb, identity, crops, device, args.eps, min(args.cloaks, len(crops)), args.psr_agree)
    print_table(rows)
    failed = [r for r in rows if not r["ok"]]
    if failed:
        print(f"gpu_smoke: FAILED: {', '.join(r['check'] + ' on ' + r['device'] for r in failed)}")
        return 1
    print("gpu_smoke: all checks passed" + ("" if device else " (CPU half only: no GPU was compared)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
