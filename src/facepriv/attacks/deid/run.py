"""Cloak the probes of a labelled photo set with an image protection on one source model.

In memory: :func:`run_cloaks` takes the image ids and identities (no labels file); the CLI
(``facepriv deid run``) reads a labels CSV and calls it, and so does the ``deid`` attack with the
clean samples of a cell. Output folder (the cloaks are files on purpose: the evaluation reads the
*published* photos back, as an invader would)::

    run.json                        parameters, protocol, counts, quality per eps, in-memory source PSR
    split.csv                       image,identity,role (gallery / probe / no_face)
    heads/<source>.<key>.pt|.json   the source model's identification head (key: what it depends on)
    cloaks/eps0/<image>             the clean probe (working resolution) stored like the cloaks
    cloaks/eps<E>/<image>           cloaked probes (.jpg at jpeg_quality, or .png)
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.deid.gallery import gallery_head, save_gallery_head
from facepriv.attacks.deid.protocol import PAPER_KS, check_split_params, split_gallery_probes
from facepriv.errors import FacePrivError, OutputExistsError, ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic
from facepriv.images import load_rgb, path_under
from facepriv.metrics.privacy import psr_at_k, rank_of_true_identity
from facepriv.progress import progress
from facepriv.protections.cloaks import build_image_protection
from facepriv.protections.image import ImageProtection, SourcePipeline, stored_name

log = logging.getLogger(__name__)

PROTOCOL = (
    "closed-set identification: per identity a seeded random split of its images into probes "
    "(cloaked) and a gallery (trains one softmax head per recognition model on L2-normalised "
    "embeddings); PSR@k = 100 - 100/N * #(true identity within the head's top-k), N = all probes "
    "of the run (a probe whose face is not re-detected counts as protected)"
)

#: the deid parameters that configure the image protection (the rest configure the split)
CLOAK_PARAMS = ("eps", "alpha", "jpeg_quality", "max_side", "batch_size", "seed")


@dataclass(frozen=True)
class RunConfig:
    """Parameters of a cloaking run (all recorded in run.json); see :class:`~.attack.DeidAttack`.

    No defaults here: :meth:`facepriv.attacks.deid.attack.DeidAttack.run_config` builds it from
    the attack's parameters, the one place where they have defaults. ``images`` / ``labels``
    record where the photos came from (``labels`` is None for an in-memory run).
    """

    method: str
    source: str
    eps: tuple[float, ...]
    alpha: float
    jpeg_quality: int | None
    max_side: int
    batch_size: int
    probes_per_identity: int
    min_gallery: int
    min_images: int | None
    max_identities: int | None
    max_images: int | None
    max_gallery: int | None
    seed: int
    method_params: dict[str, Any] = field(default_factory=dict)
    images: str = ""
    labels: str | None = None

    def protection(self) -> ImageProtection:
        """The configured (validated) image protection of ``method``."""
        params = {k: getattr(self, k) for k in CLOAK_PARAMS}
        clash = sorted(set(self.method_params or {}) & set(params))
        if clash:
            raise ParameterError(f"method_params: {', '.join(clash)} must be given as deid parameter(s), not in "
                                 "method_params", param="method_params")
        return build_image_protection(self.method, {**params, **(self.method_params or {})})

    def validate(self) -> None:
        """Raise ParameterError (naming the parameter) for invalid values."""
        check_split_params(probes_per_identity=self.probes_per_identity, min_gallery=self.min_gallery,
                           min_images=self.min_images, max_identities=self.max_identities, max_images=self.max_images,
                           max_gallery=self.max_gallery, seed=self.seed)
        self.protection()
        check_source_model(self.source)


@dataclass
class CloakRun:
    """A cloaking run in memory: its folder, its ``run.json`` record and its split rows."""

    dir: Path
    record: dict[str, Any]
    rows: list[tuple[str, str, str]]  # (image, identity, role)


def check_source_model(name: str) -> None:
    """ParameterError(param="source") unless ``name`` is a differentiable recognition model."""
    from facepriv.models.zoo import get_model

    if not isinstance(name, str) or not name:
        raise ParameterError(f"source: name a differentiable recognition model, got {name!r}", param="source")
    try:
        model = get_model(name)
    except ParameterError as exc:
        raise ParameterError(f"source: {exc}", param="source") from None
    if not model.card.differentiable:
        raise ParameterError(f"source: model {name!r} is not differentiable: it cannot be a cloak source", param="source")


#: what a cloaking run writes into its folder (a run killed half-way leaves a subset)
RUN_ENTRIES = frozenset({"run.json", "split.csv", "heads", "cloaks"})


def check_outputs(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file or someone else's folder; an existing run needs ``overwrite``.

    Raises
    ------
    FacePrivError
        ``out`` is a file, or a non-empty folder holding anything a cloaking run does not write.
    OutputExistsError
        ``out`` holds a run (``run.json`` / ``split.csv``) and ``overwrite`` is False.
    """
    if out.exists() and not out.is_dir():
        raise FacePrivError(f"{out}: exists and is not a folder; --out must name a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES)
        if foreign:
            raise FacePrivError(f"{out}: is not empty and is not a cloaking run folder (it holds "
                                f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); "
                                "choose a new or empty folder (nothing was changed)")
    for name in ("run.json", "split.csv"):
        if (out / name).exists() and not overwrite:
            raise OutputExistsError(out / name)


def run_cloaks(cfg: RunConfig, images: Sequence[str], identity: Sequence[str], root: Path, out: Path,
               overwrite: bool = False, device: str = "cpu") -> CloakRun:
    """Cloak the probes of labelled photos (``images`` relative to ``root``) with one source model.

    ``device`` (a resolved torch device) runs the gallery embedding, the heads and the cloaks
    there; it is recorded in ``run.json``. Photos, detection and alignment stay on the CPU.
    """
    import torch

    from facepriv.device import module_on
    from facepriv.metrics.image_quality import psnr_images, ssim_images
    from facepriv.models.alignment import get_aligner
    from facepriv.models.zoo import get_model

    cfg.validate()
    prot = cfg.protection()
    check_outputs(out, overwrite)
    root = Path(root)
    split = split_gallery_probes(
        list(images), list(identity), probes_per_identity=cfg.probes_per_identity, min_gallery=cfg.min_gallery,
        seed=cfg.seed, min_images=cfg.min_images, max_identities=cfg.max_identities, max_probes=cfg.max_images,
        max_gallery=cfg.max_gallery,
    )
    t0 = time.perf_counter()
    head, info, means, gal_fail = gallery_head(root, split.gallery, cfg.source, cfg.seed, out / "heads", save=False,
                                                 device=device)
    cls = {c: i for i, c in enumerate(info.classes)}
    model = get_model(cfg.source)
    aligner = get_aligner(model.card.alignment)
    source = SourcePipeline(net=module_on(model.torch_module(), device), head=module_on(head, device),
                            crop_hw=tuple(model.card.input_size), templates=means, name=cfg.source,
                            classes=list(info.classes), device=device)

    # probes: working resolution, source detection + alignment matrix (no face -> listed, skipped)
    probes, photos, mats, no_face = [], [], [], []
    for im, ident in progress(split.probes, desc="probes", unit="img"):
        if ident not in cls:
            no_face.append((im, f"identity {ident} has no detected gallery face"))
            continue
        photo = prot.working_photo(load_rgb(path_under(root, im)))
        res = aligner.align(photo)
        if res.crop is None:
            no_face.append((im, res.reason))
            continue
        probes.append((im, ident))
        photos.append(photo)
        mats.append(aligner.crop_matrix(res.landmarks))
    members = list(getattr(prot, "ensemble", None) or [])
    if cfg.source in members:
        raise ParameterError(f"ensemble: {cfg.source} is the run's source model already; name the further models",
                             param="ensemble")
    source.members = [_member(root, split.gallery, m, cfg.seed, [p for p, _ in probes], photos, device) for m in members]
    if no_face:
        log.warning("%d probe(s) without a detectable face skipped: %s", len(no_face), ", ".join(p for p, _ in no_face[:10]))
    if not probes:
        no_gal = sum(r.startswith("identity ") for _, r in no_face)
        raise ParameterError(
            f"none of the {len(split.probes)} probe photos can be cloaked with source {cfg.source}: "
            f"{len(no_face) - no_gal} without a face its detector (recipe {model.card.alignment}) finds, "
            f"{no_gal} whose identity has no gallery face it detects", param="source")
    # nothing was written so far; from here on the folder is this run's
    if overwrite:  # the previous (or killed) run goes first: never a mix of two runs
        for name in ("run.json", "split.csv"):
            (out / name).unlink(missing_ok=True)
        for name in ("cloaks", "heads"):
            shutil.rmtree(out / name, ignore_errors=True)
    save_gallery_head(head, info, out / "heads")
    for i, (im, _) in enumerate(probes):
        prot.save(photos[i], out / "cloaks" / "eps0" / prot.stored_name(im))
    quality = {"0": _quality(out, "eps0", probes, photos, prot, ssim_images, psnr_images)}

    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, p in enumerate(photos):
        groups[p.shape].append(i)
    bs = int(cfg.batch_size)
    batches = [idx[j : j + bs] for idx in groups.values() for j in range(0, len(idx), bs)]
    y_all = np.array([cls[ident] for _, ident in probes])
    clean_logits = np.zeros((len(probes), len(cls)))
    with torch.no_grad():
        for b in batches:
            x = torch.from_numpy(np.stack([photos[i] for i in b])).permute(0, 3, 1, 2).float()
            x = x if device == "cpu" else x.to(device)
            clean_logits[b] = source.photo_model(np.stack([mats[i] for i in b]), photos[b[0]].shape[:2])(x).cpu().numpy()
    inmem: dict[str, dict] = {}
    for eps in prot.budgets():
        key = f"{eps:g}"
        iters = prot.iterations(eps)
        adv_logits = np.zeros_like(clean_logits)
        targets = np.full(len(probes), -1)
        loss0, loss1 = np.full(len(probes), np.nan), np.full(len(probes), np.nan)
        t_eps = time.perf_counter()
        for b in progress(batches, desc=f"{cfg.method} eps {key} ({iters} it)", unit="batch"):
            clean = np.stack([photos[i] for i in b])
            mb = np.stack([mats[i] for i in b])
            c = prot.cloak(clean, mb, y_all[b], [probes[i][0] for i in b], source, eps)
            _check_cloak(cfg.method, c.photos, clean, eps)
            with torch.no_grad():
                adv = torch.from_numpy(np.ascontiguousarray(c.photos)).permute(0, 3, 1, 2).float()
                adv = adv if device == "cpu" else adv.to(device)
                adv_logits[b] = source.photo_model(mb, clean.shape[1:3])(adv).cpu().numpy()
            if c.targets is not None:
                targets[b] = c.targets
            if c.loss_before is not None and c.loss_after is not None:
                loss0[b], loss1[b] = c.loss_before, c.loss_after
            for j, i in enumerate(b):
                prot.save(c.photos[j], out / "cloaks" / f"eps{key}" / prot.stored_name(probes[i][0]))
        seconds = time.perf_counter() - t_eps
        quality[key] = _quality(out, f"eps{key}", probes, photos, prot, ssim_images, psnr_images)
        inmem[key] = {
            "iterations": iters,
            "psr_source_in_memory": _floats(psr_at_k(rank_of_true_identity(adv_logits, y_all), PAPER_KS)),
            "loss_before_mean": None if np.isnan(loss0).any() else float(loss0.mean()),
            "loss_after_mean": None if np.isnan(loss1).any() else float(loss1.mean()),
            "illc_target_hit_rate": float((adv_logits.argmax(1) == targets).mean()) if (targets >= 0).all() else None,
            "seconds": seconds,
            "cloaks_per_second": len(probes) / seconds,
        }
        log.info("eps %s: %d cloaks in %.1fs; in-memory source PSR@1 %.1f", key, len(probes), seconds,
                 inmem[key]["psr_source_in_memory"][1])
    clean_psr = _floats(psr_at_k(rank_of_true_identity(clean_logits, y_all), PAPER_KS))

    roles = {im: "gallery" for im, _ in split.gallery}
    roles.update({im: "probe" for im, _ in probes})
    roles.update({im: "no_face" for im, _ in no_face})
    ident_of = dict(split.gallery + split.probes)
    rows = [(im, ident_of[im], roles[im]) for im in sorted(roles)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "identity", "role"])
    w.writerows(rows)
    write_text_atomic(out / "split.csv", buf.getvalue())
    record = {
        "kind": "facepriv.deid.run",
        "config": {**asdict(cfg), "eps": [float(e) for e in cfg.eps], "images": str(root.resolve()),
                   "labels": None if cfg.labels is None else str(Path(cfg.labels).resolve())},
        "protection": prot.record(),
        "storage": prot.storage,
        "protocol": PROTOCOL,
        "where": "perturbation on the full photo (working resolution), optimised through the source "
                 "recipe's alignment warp (bilinear grid_sample of the detector's affine matrix)",
        "counts": {"identities": len(cls), "gallery_images": len(split.gallery), "gallery_without_face": len(gal_fail),
                   "probes": len(probes), "probes_without_face": len(no_face), "dropped_identities": len(split.dropped)},
        "no_face": [{"image": p, "reason": r} for p, r in no_face],
        "no_face_reasons": dict(Counter(r for _, r in no_face)),
        "dropped_identities": split.dropped,
        "source_head": asdict(info) | {"classes": len(info.classes)},
        "source_clean_psr_in_memory": clean_psr,
        "per_eps": inmem,
        "quality": quality,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "seconds_total": time.perf_counter() - t0,
    }
    write_json_atomic(out / "run.json", record)
    return CloakRun(out, record, rows)


def _member(root: Path, gallery: list, name: str, seed: int, ids: list[str], photos: list,
            device: str = "cpu") -> SourcePipeline:
    """An ensemble member: its own gallery head and its own detector's matrix for each probe photo."""
    from facepriv.device import module_on
    from facepriv.models.alignment import get_aligner
    from facepriv.models.zoo import get_model

    head, info, means, _ = gallery_head(root, gallery, name, seed, None, save=False, device=device)
    model = get_model(name)
    aligner = get_aligner(model.card.alignment)
    mats = {}
    for im, photo in zip(ids, photos, strict=True):
        res = aligner.align(photo)
        if res.crop is not None:
            mats[im] = aligner.crop_matrix(res.landmarks)
    return SourcePipeline(net=module_on(model.torch_module(), device), head=module_on(head, device),
                          crop_hw=tuple(model.card.input_size), templates=means, name=name,
                          classes=list(info.classes), matrices=mats, device=device)


def _floats(rates: dict) -> dict[int, float]:
    return {k: float(v) for k, v in rates.items()}


def _check_cloak(method: str, cloaked: np.ndarray, clean: np.ndarray, eps: float) -> None:
    """The image-protection contract: same shape, uint8, no pixel changed by more than floor(eps)."""
    arr = np.asarray(cloaked)
    if arr.shape != clean.shape or arr.dtype != np.uint8:
        raise ParameterError(f"method: image protection {method!r} returned photos of shape {arr.shape} {arr.dtype}; "
                             f"expected {clean.shape} uint8", param="method")
    d = int(np.abs(arr.astype(np.int16) - clean.astype(np.int16)).max(initial=0))
    if d > np.floor(eps):
        raise ParameterError(f"method: image protection {method!r} changed a pixel by {d} at eps {eps:g} "
                             "(over the budget)", param="method")


def _quality(out, folder, probes, photos, prot, ssim_images, psnr_images) -> dict:
    """Mean SSIM / PSNR of stored (read back) photos against the clean working-resolution photos."""
    ss, ps = [], []
    for (im, _), ref in zip(probes, photos, strict=True):
        back = np.array(load_rgb(out / "cloaks" / folder / prot.stored_name(im)))
        ref = np.array(ref)  # writable copies for torch.from_numpy
        ss.append(float(ssim_images(ref, back)))
        ps.append(float(psnr_images(ref, back)))
    ps_arr = np.array(ps)
    return {"ssim": float(np.mean(ss)), "psnr": float(np.mean(ps_arr[np.isfinite(ps_arr)])) if np.isfinite(ps_arr).any() else float("inf"),
            "n": len(ss)}


def read_labels(labels: str | Path, root: str | Path) -> tuple[list[str], list[str]]:
    """Image ids and identities of a labels CSV (the CLI's input; files exist under ``root``)."""
    from facepriv.datasets.labels import read_labels_csv

    lab = read_labels_csv(labels, root=root)
    return list(lab.images), list(lab.identity)


__all__ = ["CLOAK_PARAMS", "PROTOCOL", "CloakRun", "RunConfig", "check_outputs", "check_source_model", "read_labels",
           "run_cloaks", "stored_name"]
