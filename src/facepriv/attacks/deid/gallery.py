"""Aligning labelled photos and training a backbone's identification head on the gallery."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from facepriv.attacks.deid.heads import (
    HeadInfo,
    IdentityHead,
    head_files,
    head_key,
    load_head,
    save_head,
    train_head,
)
from facepriv.errors import InputFileError, ParameterError
from facepriv.images import load_rgb
from facepriv.progress import progress

log = logging.getLogger(__name__)


def align_files(
    paths: list[Path], recipe: str, desc: str = "align", cache: dict | None = None
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Detect and align stored photo files with a recipe (``cache``: optional dict memoising results).

    A file without a detectable face is a failure (listed with the reason); a missing or unreadable
    file is an error: it was written by ``deid run``, so its loss means the run folder is broken
    (counting it as "not identified" would inflate PSR).

    Returns
    -------
    crops : uint8 (M, h, w, 3)
        Crops of the files that gave a face.
    ok : list of int
        Index into ``paths`` of each crop.
    failures : list of (path, reason)
        Files without a detectable face (or unreadable), with the reason.
    """
    from facepriv.models.alignment import get_aligner

    key = (recipe, tuple(str(p) for p in paths))
    if cache is not None and key in cache:
        return cache[key]
    aligner = get_aligner(recipe)
    h, w = aligner.output_size
    crops, ok, failures = [], [], []
    for i, p in enumerate(progress(paths, desc=f"{desc} ({recipe})", unit="img")):
        res = aligner.align(load_rgb(p))  # InputFileError (names the file) for a missing or corrupt file
        if res.crop is None:
            failures.append((str(p), res.reason))
            continue
        crops.append(res.crop)
        ok.append(i)
    arr = np.stack(crops) if crops else np.zeros((0, h, w, 3), np.uint8)
    if cache is not None:
        cache[key] = (arr, ok, failures)
    return arr, ok, failures


def head_stem(head_dir: Path, model_name: str, key: str) -> Path:
    """``<head_dir>/<model>.<first 16 hex digits of the key>`` (a module:Class name made file-safe)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    return Path(head_dir) / f"{safe}.{key[:16]}"


def save_gallery_head(head: IdentityHead, info: HeadInfo, head_dir: Path) -> Path:
    """Save a head under its keyed name in ``head_dir``; the same head already there is kept."""
    stem = head_stem(head_dir, info.model, info.key)
    if all(f.is_file() for f in head_files(stem)):
        try:
            if load_head(stem)[1].key == info.key:
                return stem
        except InputFileError:
            pass  # unreadable: replaced below
    save_head(head, info, stem)
    return stem


def gallery_head(
    root: Path,
    gallery: list[tuple[str, str]],
    model_name: str,
    seed: int,
    head_dir: Path | None = None,
    cache: dict | None = None,
    save: bool = True,
    device: str = "cpu",
) -> tuple[IdentityHead, HeadInfo, np.ndarray, list[tuple[str, str]]]:
    """Train the identification head of ``model_name`` on the gallery (or reload the same one).

    With ``head_dir`` the head is saved there as ``<model>.<key>.pt|.json`` (key: first 16 hex
    digits of :func:`~facepriv.attacks.deid.heads.head_key`) and reused only when a file with the
    same key exists, i.e. one trained on the same embeddings, identities, seed and settings.
    ``save=False`` reuses such a file but does not write one (see :func:`save_gallery_head`).
    ``device`` runs the gallery embedding and the head's training there (the head is returned on
    the CPU).

    Returns
    -------
    head, info, class_means
        ``class_means`` (C, D): normalised mean gallery embedding per class (enrolled templates).
    failures
        Gallery images without a detectable face (left out of training).
    """
    from facepriv.models.base import embed_on
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    model = get_model(model_name)
    rel = [im for im, _ in gallery]
    key = ("gallery", model.card.alignment, tuple(rel))
    if cache is not None and key in cache:
        ac = cache[key]
    else:  # on-disk crops cache: every run and eval on the same gallery aligns it once
        ac = align_images(root, rel, model.card.alignment)
        if cache is not None:
            cache[key] = ac
    crops, failures = ac.crops, list(ac.failures)
    pos = {im: i for i, im in enumerate(rel)}
    ok = [pos[im] for im in ac.ids]
    emb = embed_on(model, crops, device)
    ident = np.array([gallery[i][1] for i in ok])
    if len(emb) == 0:
        raise ParameterError(f"{model_name}: no gallery image has a face detectable by its detector "
                             f"(recipe {model.card.alignment}); cannot train its identification head")
    key = head_key(emb, ident, model=model_name, seed=seed)
    stem = None if head_dir is None else head_stem(head_dir, model_name, key)
    head = info = None
    if stem is not None and all(f.is_file() for f in head_files(stem)):
        head, info = load_head(stem)
        if info.key != key:  # a file of the same name from something else: never trust it
            head = info = None
    if head is None or info is None:
        head, info = train_head(emb, ident, model=model_name, seed=seed, device=device)
        if stem is not None and save:
            save_head(head, info, stem)
    missing = sorted({i for _, i in gallery} - set(info.classes))
    if missing:
        log.warning("no gallery face detected for identities %s: they cannot be identified by %s", missing, model_name)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    means = np.zeros((len(info.classes), emb.shape[1]), np.float32)
    for c, name in enumerate(info.classes):
        m = unit[ident == name].mean(0)
        means[c] = m / max(float(np.linalg.norm(m)), 1e-12)
    log.info("%s head: %d gallery faces, %d identities, train accuracy %.3f", model_name, len(emb), len(info.classes), info.train_accuracy)
    return head, info, means, failures
