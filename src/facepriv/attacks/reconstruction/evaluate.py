"""Evaluation of a trained reconstruction decoder on held-out identities (WIFS 2023 protocol).

* **RSR** (reversibility success rate) at FMR 0.1%, 1%, 10%: share of test images whose
  reconstruction, re-embedded by the recognition model, scores at or above the verification
  threshold at that FMR against the embedding of the original image. Thresholds come from the
  unprotected all-pairs impostor scores of the same model on the evaluation data
  (:func:`facepriv.metrics.verification.threshold_at_fmr`; a score is accepted when >= threshold).
* **SRRA** (success rate of replay attacks): the reconstruction of image i presented as a probe
  against the enrolled template of *another* image of the same identity, same thresholds.
* **Transfer**: RSR measured by a second recognition model. Reconstructions and original crops are
  both resized (bilinear) to that model's input size; nothing is re-aligned, so the second model
  sees dlib-chip framing instead of its own alignment (this lowers its scores somewhat for both).
* **Image quality**: SSIM, PSNR, MSE between reconstruction and the original crop resized to the
  decoder's output size.
* **Gender** from reconstructions: see :mod:`facepriv.attacks.reconstruction.gender`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facepriv.attacks.reconstruction.attack import FMRS
from facepriv.attacks.reconstruction.data import PairedData, resize_crops
from facepriv.attacks.reconstruction.losses import resize_to
from facepriv.attacks.reconstruction.trainer import reconstruct, to_tensor
from facepriv.errors import ParameterError
from facepriv.metrics.image_quality import mse_images, psnr_images, ssim_images
from facepriv.metrics.stats import wilson_interval
from facepriv.progress import progress

log = logging.getLogger(__name__)


def fmr_key(fmr: float) -> str:
    """JSON key of an FMR: ``0.001`` -> ``"0.001"``."""
    return f"{fmr:g}"


@torch.no_grad()
def embed_images(module: torch.nn.Module, images: np.ndarray, input_size: tuple[int, int], batch_size: int = 64,
                 device: str = "cpu") -> np.ndarray:
    """Embed uint8 images of any square size: bilinear resize to ``input_size`` (as in training), then ``module``.

    ``device`` runs the resize and the network there (a copy of ``module``, see
    :func:`facepriv.device.module_on`); on the CPU nothing changes.
    """
    from facepriv.device import module_on, to_device

    module = module_on(module, device)
    out = []
    for i in progress(range(0, len(images), batch_size), desc="re-embed", unit="batch"):
        x = resize_to(to_device(to_tensor(images[i : i + batch_size]), device), tuple(input_size))
        out.append(module(x).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def cosine_paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    from facepriv.protections.base import CosineComparator

    return CosineComparator().paired(a, b)


def thresholds_at_fmrs(embeddings: np.ndarray, identity: np.ndarray, fmrs: tuple[float, ...] = FMRS) -> dict[str, float]:
    """Cosine thresholds at the given FMRs from all-pairs impostor scores of unprotected templates."""
    from facepriv.metrics.verification import scores_all_pairs, threshold_at_fmr
    from facepriv.protections.base import CosineComparator

    scores = scores_all_pairs((embeddings, identity), CosineComparator())
    if scores.impostor.size == 0:
        raise ParameterError("thresholds need impostor pairs: the evaluation data has a single identity")
    return {fmr_key(f): threshold_at_fmr(scores.impostor, f) for f in fmrs}


@dataclass(frozen=True)
class RateWithCI:
    """A success rate with its 95% Wilson interval."""

    rate: float
    low: float
    high: float
    n: int


def success_rates(scores: np.ndarray, thresholds: dict[str, float]) -> dict[str, RateWithCI]:
    """Share of ``scores`` >= each threshold, with Wilson intervals."""
    scores = np.asarray(scores, dtype=np.float64)
    out = {}
    for key, thr in thresholds.items():
        k, n = int((scores >= thr).sum()), int(scores.size)
        lo, hi = wilson_interval(k, n)
        out[key] = RateWithCI(k / n if n else float("nan"), lo, hi, n)
    return out


def enrolment_partner(identity: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each row, the index of another row of the same identity (seeded), -1 if none."""
    identity = np.asarray(identity).astype(str)
    rng = np.random.default_rng(seed)
    partner = np.full(len(identity), -1, dtype=np.int64)
    for ident in np.unique(identity):
        rows = np.flatnonzero(identity == ident)
        if len(rows) < 2:
            continue
        # a random derangement-like pairing: shift a shuffled list by one
        perm = rng.permutation(rows)
        partner[perm] = np.roll(perm, -1)
    return partner


def _rates_dict(rates: dict[str, RateWithCI]) -> tuple[dict[str, float], dict[str, list[float]]]:
    return {k: v.rate for k, v in rates.items()}, {k: [v.low, v.high] for k, v in rates.items()}


def evaluate_reconstructions(
    data: PairedData,
    inputs: np.ndarray,
    decoder: torch.nn.Module,
    model,
    transfer_models: tuple[str, ...] = (),
    gender: bool = True,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """All metrics of the reconstruction attack on one test set.

    Parameters
    ----------
    data : PairedData
        Test rows: unprotected embeddings (the originals) and their aligned crops.
    inputs : ndarray (N, D)
        What the decoder receives: ``data.es.embeddings`` or their protected version.
    decoder : nn.Module
    model : RecognitionModel
        The model that made the embeddings (re-embeds reconstructions).
    transfer_models : tuple of str
        Other registered models for the transfer RSR.
    gender : bool
        Compute the gender metrics (needs a ``gender`` column).
    seed : int
        Seeds the enrolment pairing and the CV folds.
    device : str
        Resolved torch device of the decoding and re-embedding (the metrics are computed on the
        CPU from the uint8 reconstructions).

    Returns
    -------
    (summary dict, reconstructions uint8 (N, s, s, 3), per-image scores vs the original (N,))
    """
    es = data.es
    if len(inputs) != len(es):
        raise ParameterError(f"inputs has {len(inputs)} rows, the test data {len(es)}")
    recon = reconstruct(decoder, inputs, device=device)
    size = recon.shape[1]
    originals = resize_crops(data.crops, size)
    module = model.torch_module()
    recon_emb = embed_images(module, recon, model.card.input_size, device=device)
    thr = thresholds_at_fmrs(es.embeddings, es.identity)
    scores = cosine_paired(recon_emb, es.embeddings)
    rsr, rsr_ci = _rates_dict(success_rates(scores, thr))

    partner = enrolment_partner(es.identity, seed)
    has = partner >= 0
    srra_scores = cosine_paired(recon_emb[has], es.embeddings[partner[has]])
    srra, srra_ci = _rates_dict(success_rates(srra_scores, thr))
    genuine_ref, _ = _rates_dict(success_rates(cosine_paired(es.embeddings[has], es.embeddings[partner[has]]), thr))

    summary: dict[str, Any] = {
        "n_test_images": len(es),
        "n_test_identities": len(np.unique(es.identity)),
        "model": model.name,
        "decoder_size": size,
        "thresholds": thr,
        "rsr": rsr,
        "rsr_ci95": rsr_ci,
        "mean_score_reconstruction_vs_original": float(scores.mean()),
        "srra": srra,
        "srra_ci95": srra_ci,
        "srra_n_probes": int(has.sum()),
        "genuine_acceptance_reference": genuine_ref,
        "ssim": float(ssim_images(originals, recon)),
        "psnr": float(psnr_images(originals, recon)),
        "mse": float(mse_images(originals, recon)),
    }
    transfer = {}
    for name in transfer_models:
        from facepriv.models.zoo import get_model

        other = get_model(name)
        om = other.torch_module()
        o_orig = embed_images(om, data.crops, other.card.input_size, device=device)
        o_rec = embed_images(om, recon, other.card.input_size, device=device)
        o_thr = thresholds_at_fmrs(o_orig, es.identity)
        o_rsr, o_ci = _rates_dict(success_rates(cosine_paired(o_rec, o_orig), o_thr))
        transfer[name] = {"thresholds": o_thr, "rsr": o_rsr, "rsr_ci95": o_ci, "note": "both images resized to the model input, not re-aligned"}
    summary["transfer"] = transfer
    if gender:
        from facepriv.attacks.reconstruction.gender import gender_metrics

        summary["gender_accuracy"] = gender_metrics(es, recon, recon_emb, originals, inputs, seed)
    return summary, recon, scores
