"""Second stage of the score-only attack: decode the estimated templates into faces.

Kim et al. ("Scores Tell Everything about Bob", IEEE S&P 2024) turn the template estimated from
scores into a face image with a decoder trained on the attacker's own photos. Here the decoder is
a run folder of ``facepriv reconstruct train`` trained on *unprotected* templates of the system's
model (the estimates live in that space). Victims are limited to people the decoder never saw
(its ``split.json``), and a decoded face counts as a success when

* the system accepts it: the face is embedded by the system's model, protected like any probe and
  compared with the victim's stored template at the system's threshold; and, separately,
* a judge accepts it: a recognition model neither the system nor the decoder used re-detects and
  re-aligns the face and compares it with its own template of the victim's original photo
  (:func:`facepriv.attacks.reconstruction.judges.judge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.errors import ParameterError


@dataclass
class DecoderRun:
    """A trained reconstruction decoder and what it was trained on."""

    decoder: Any
    model: str
    touched: list[str]
    train_identities: frozenset[str]
    size: int
    path: Path


def load_decoder_run(path: str | Path, model_name: str | None, dim: int) -> DecoderRun:
    """Load a decoder run folder for the score-only attack and check that it fits the cell.

    Raises
    ------
    ParameterError
        ``param="decoder"``: the folder is not a finished run, was trained on protected templates,
        on another model's templates or for another template size.
    """
    from facepriv.attacks.reconstruction.runfolder import load_config
    from facepriv.attacks.reconstruction.runs_files import read_split
    from facepriv.attacks.reconstruction.trainer import load_decoder
    from facepriv.errors import InputFileError

    run = Path(path)
    if not run.is_dir():
        raise ParameterError(f"decoder: {run} is not a folder (give a run folder of 'facepriv reconstruct train')",
                             param="decoder")
    try:
        cfg = load_config(run)
    except InputFileError as exc:
        raise ParameterError(f"decoder: {exc}", param="decoder") from None
    if cfg.protection is not None and cfg.protection.get("name") not in (None, "unprotected"):
        raise ParameterError(f"decoder: {run} was trained on {cfg.protection.get('name')} templates; the score-only "
                             "estimates are unprotected templates, so the decoder must be trained on unprotected ones",
                             param="decoder")
    if model_name is not None and cfg.model != model_name:
        raise ParameterError(f"decoder: {run} decodes {cfg.model} templates, the system's model is {model_name}",
                             param="decoder")
    if cfg.embedding_dim != dim:
        raise ParameterError(f"decoder: {run} expects {cfg.embedding_dim}-d templates, the system makes {dim}-d ones",
                             param="decoder")
    try:  # weights and split only once the configuration fits
        decoder, cfg = load_decoder(run)
        trained_on = read_split(run)
    except InputFileError as exc:
        raise ParameterError(f"decoder: {exc}", param="decoder") from None
    touched = sorted({cfg.model, str(cfg.extra.get("loss_model") or cfg.model)})
    return DecoderRun(decoder, cfg.model, touched, frozenset(trained_on), cfg.size, run)


def unseen_victims(victims: np.ndarray, identity: np.ndarray, seen: frozenset[str]) -> np.ndarray:
    """The victim rows whose person the decoder never saw (at least two people, else an error)."""
    keep = victims[~np.isin(identity[victims].astype(str), list(seen))]
    if len(np.unique(identity[keep])) < 2:
        raise ParameterError(f"decoder: only {len(np.unique(identity[keep]))} victim identities are unknown to the "
                             "decoder (its split.json); decode needs victims of at least two people it never saw",
                             param="decoder")
    return keep


def decoded_faces(run: DecoderRun, estimates: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Faces (uint8, N x s x s x 3) decoded from estimated templates."""
    from facepriv.attacks.reconstruction.trainer import reconstruct

    return reconstruct(run.decoder, np.asarray(estimates, dtype=np.float32), device=device)


def system_scores(faces: np.ndarray, model: Any, protection: Any, stored: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Scores of decoded faces presented to the system: embedded, protected as probes, compared."""
    from facepriv.attacks.reconstruction.evaluate import embed_images

    emb = embed_images(model.torch_module(), faces, model.card.input_size, device=device)
    return np.asarray(protection.comparator().paired(protection.transform(emb), stored), dtype=np.float64)


def samples_figure(run: DecoderRun, originals: np.ndarray, faces: np.ndarray, identity: np.ndarray,
                   path: Path) -> Path:
    """Original | decoded face for up to 16 victims (one photo per person first), as a PNG."""
    from facepriv.attacks.reconstruction.data import resize_crops
    from facepriv.attacks.reconstruction.runs import preview_rows
    from facepriv.attacks.reconstruction.viz import pair_grid, save_png

    rows = preview_rows(identity, 16)
    save_png(pair_grid(resize_crops(originals[rows], run.size), faces[rows]), path)
    return path
