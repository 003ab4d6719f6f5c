"""``facepriv deid run``: split, train the source head, cloak the probes at every eps, store them.

Output folder::

    run.json                   parameters, protocol, counts, quality per eps, in-memory source PSR
    split.csv                  image,identity,role (gallery / probe / no_face)
    heads/<source>.pt|.json    the source model's identification head
    cloaks/eps0/<image>        the clean probe (working resolution) stored like the cloaks
    cloaks/eps<E>/<image>      cloaked probes (.jpg at --jpeg-quality, or .png)
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from facepriv.adversarial.core import kurakin_iterations
from facepriv.attacks.deid.cloak import METHODS, cloak_photos, working_resolution
from facepriv.attacks.deid.gallery import gallery_head
from facepriv.attacks.deid.heads import rank_of_true
from facepriv.attacks.deid.protocol import PAPER_KS, psr_at_k, split_gallery_probes
from facepriv.errors import OutputExistsError, ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic
from facepriv.images import load_rgb, save_rgb
from facepriv.progress import progress

log = logging.getLogger(__name__)

PROTOCOL = (
    "closed-set identification: per identity a seeded random split of its images into probes "
    "(cloaked) and a gallery (trains one softmax head per recognition model on L2-normalised "
    "embeddings); PSR@k = 100 - 100/N * #(true identity within the head's top-k), N = all probes "
    "of the run (a probe whose face is not re-detected counts as protected)"
)


@dataclass(frozen=True)
class RunConfig:
    """Parameters of a cloaking run (all recorded in run.json)."""

    images: str
    labels: str
    method: str = "bim"
    source: str = "dlib_resnet"
    eps: tuple[float, ...] = (4, 8, 16, 32)
    alpha: float = 1.0
    jpeg_quality: int | None = 95  # None: PNG
    max_images: int | None = None
    probes_per_identity: int = 2
    min_gallery: int = 3
    min_images: int | None = None
    max_identities: int | None = None
    max_gallery: int | None = None
    seed: int = 0
    max_side: int = 400
    batch_size: int = 8

    def validate(self) -> None:
        """Raise ParameterError for invalid values."""
        if self.method not in METHODS:
            raise ParameterError(f"--method {self.method!r}: choose from {', '.join(METHODS)}")
        if not self.eps:
            raise ParameterError("--eps: give at least one budget")
        for e in self.eps:
            if not (np.isfinite(e) and e > 0):
                raise ParameterError(f"--eps: every budget must be > 0 (pixel units on 0..255), got {e:g}")
            if e > 255:
                raise ParameterError(f"--eps: {e:g} exceeds the pixel range 0..255")
        if not (np.isfinite(self.alpha) and self.alpha > 0):
            raise ParameterError(f"--alpha must be > 0, got {self.alpha:g}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ParameterError(f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}")
        if self.max_side < 64:
            raise ParameterError(f"--max-side must be >= 64, got {self.max_side}")
        if self.batch_size < 1:
            raise ParameterError(f"--batch-size must be >= 1, got {self.batch_size}")


def stored_name(image: str, cfg: RunConfig) -> str:
    """Relative path of a stored probe (original path with .jpg or .png)."""
    return PurePosixPath(image).with_suffix(".png" if cfg.jpeg_quality is None else ".jpg").as_posix()


def _check_model(name: str) -> None:
    from facepriv.models.zoo import get_model

    model = get_model(name)  # ParameterError for unknown names
    if not model.card.differentiable:
        raise ParameterError(f"model {name!r} is not differentiable: it cannot be a cloak source")


def run_cloaks(cfg: RunConfig, out: Path, overwrite: bool = False) -> dict:
    """Cloak the probes of a labelled photo set with one source model; returns run.json's content."""
    import torch

    from facepriv.datasets.labels import read_labels_csv
    from facepriv.metrics.image_quality import psnr_images, ssim_images
    from facepriv.models.alignment import get_aligner
    from facepriv.models.zoo import get_model

    cfg.validate()
    _check_model(cfg.source)
    if (out / "run.json").exists() and not overwrite:
        raise OutputExistsError(out / "run.json")
    root = Path(cfg.images)
    labels = read_labels_csv(cfg.labels, root=root)
    split = split_gallery_probes(
        labels.images, labels.identity, probes_per_identity=cfg.probes_per_identity, min_gallery=cfg.min_gallery,
        seed=cfg.seed, min_images=cfg.min_images, max_identities=cfg.max_identities, max_probes=cfg.max_images,
        max_gallery=cfg.max_gallery,
    )
    t0 = time.perf_counter()
    head, info, means, gal_fail = gallery_head(root, split.gallery, cfg.source, cfg.seed, out / "heads" / cfg.source)
    cls = {c: i for i, c in enumerate(info.classes)}
    model = get_model(cfg.source)
    net = model.torch_module()
    aligner = get_aligner(model.card.alignment)

    # probes: working resolution, source detection + alignment matrix (no face -> listed, skipped)
    probes, photos, mats, no_face = [], [], [], []
    for im, ident in progress(split.probes, desc="probes", unit="img"):
        if ident not in cls:
            no_face.append((im, f"identity {ident} has no detected gallery face"))
            continue
        photo = working_resolution(load_rgb(root / im), cfg.max_side)
        res = aligner.align(photo)
        if res.crop is None:
            no_face.append((im, res.reason))
            continue
        probes.append((im, ident))
        photos.append(photo)
        mats.append(aligner.crop_matrix(res.landmarks))
    if no_face:
        log.warning("%d probe(s) without a detectable face skipped: %s", len(no_face), ", ".join(p for p, _ in no_face[:10]))
    if not probes:
        raise ParameterError("no probe image has a detectable face for the source model; nothing to cloak")
    for i, (im, _) in enumerate(probes):
        save_rgb(photos[i], out / "cloaks" / "eps0" / stored_name(im, cfg), jpeg_quality=cfg.jpeg_quality or 95)
    quality = {"0": _quality(out, "eps0", probes, photos, cfg, ssim_images, psnr_images)}

    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, p in enumerate(photos):
        groups[p.shape].append(i)
    batches = [idx[j : j + cfg.batch_size] for idx in groups.values() for j in range(0, len(idx), cfg.batch_size)]
    y_all = np.array([cls[ident] for _, ident in probes])
    inmem: dict[str, dict] = {}
    timing: dict[str, float] = {}
    n_threads = torch.get_num_threads()
    for eps in cfg.eps:
        key = f"{eps:g}"
        iters = kurakin_iterations(eps, cfg.alpha)
        clean_logits = np.zeros((len(probes), len(cls)))
        adv_logits = np.zeros_like(clean_logits)
        targets = np.full(len(probes), -1)
        loss0, loss1 = np.zeros(len(probes)), np.zeros(len(probes))
        t_eps = time.perf_counter()
        for b in progress(batches, desc=f"{cfg.method} eps {key} ({iters} it)", unit="batch"):
            cb = cloak_photos(
                np.stack([photos[i] for i in b]), np.stack([mats[i] for i in b]), y_all[b], net=net, head=head,
                crop_hw=model.card.input_size, method=cfg.method, eps=eps, alpha=cfg.alpha, iterations=iters,
                templates=means[y_all[b]],
            )
            clean_logits[b], adv_logits[b], targets[b] = cb.clean_logits, cb.adv_logits, cb.targets
            loss0[b], loss1[b] = cb.loss_first, cb.loss_last
            for j, i in enumerate(b):
                save_rgb(cb.photos[j], out / "cloaks" / f"eps{key}" / stored_name(probes[i][0], cfg), jpeg_quality=cfg.jpeg_quality or 95)
        timing[key] = time.perf_counter() - t_eps
        quality[key] = _quality(out, f"eps{key}", probes, photos, cfg, ssim_images, psnr_images)
        inmem[key] = {
            "iterations": iters,
            "psr_source_in_memory": psr_at_k(rank_of_true(adv_logits, y_all), PAPER_KS),
            "loss_before_mean": float(loss0.mean()),
            "loss_after_mean": float(loss1.mean()),
            "illc_target_hit_rate": float((adv_logits.argmax(1) == targets).mean()) if cfg.method == "illc" else None,
            "seconds": timing[key],
            "cloaks_per_second": len(probes) / timing[key],
        }
        log.info("eps %s: %d cloaks in %.1fs; in-memory source PSR@1 %.1f", key, len(probes), timing[key],
                 inmem[key]["psr_source_in_memory"][1])
    clean_psr = psr_at_k(rank_of_true(clean_logits, y_all), PAPER_KS)

    roles = {im: "gallery" for im, _ in split.gallery}
    roles.update({im: "probe" for im, _ in probes})
    roles.update({im: "no_face" for im, _ in no_face})
    ident_of = dict(split.gallery + split.probes)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "identity", "role"])
    for im in sorted(roles):
        w.writerow([im, ident_of[im], roles[im]])
    write_text_atomic(out / "split.csv", buf.getvalue())
    record = {
        "kind": "facepriv.deid.run",
        "config": {**asdict(cfg), "eps": [float(e) for e in cfg.eps], "images": str(root.resolve()),
                   "labels": str(Path(cfg.labels).resolve())},
        "storage": "png" if cfg.jpeg_quality is None else f"jpeg q{cfg.jpeg_quality}",
        "protocol": PROTOCOL,
        "where": "perturbation on the full photo (working resolution), optimised through the source "
                 "recipe's alignment warp (bilinear grid_sample of the detector's affine matrix)",
        "counts": {"identities": len(cls), "gallery_images": len(split.gallery), "gallery_without_face": len(gal_fail),
                   "probes": len(probes), "probes_without_face": len(no_face), "dropped_identities": len(split.dropped)},
        "no_face": [{"image": p, "reason": r} for p, r in no_face],
        "dropped_identities": split.dropped,
        "source_head": asdict(info) | {"classes": len(info.classes)},
        "source_clean_psr_in_memory": clean_psr,
        "per_eps": inmem,
        "quality": quality,
        "torch_threads": n_threads,
        "seconds_total": time.perf_counter() - t0,
    }
    write_json_atomic(out / "run.json", record)
    return record


def _quality(out, folder, probes, photos, cfg, ssim_images, psnr_images) -> dict:
    """Mean SSIM / PSNR of stored (read back) photos against the clean working-resolution photos."""
    ss, ps = [], []
    for (im, _), ref in zip(probes, photos, strict=True):
        back = np.array(load_rgb(out / "cloaks" / folder / stored_name(im, cfg)))
        ref = np.array(ref)  # writable copies for torch.from_numpy
        ss.append(float(ssim_images(ref, back)))
        ps.append(float(psnr_images(ref, back)))
    ps_arr = np.array(ps)
    return {"ssim": float(np.mean(ss)), "psnr": float(np.mean(ps_arr[np.isfinite(ps_arr)])) if np.isfinite(ps_arr).any() else float("inf"),
            "n": len(ss)}
