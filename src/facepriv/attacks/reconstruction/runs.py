"""Train / evaluate the reconstruction decoder: in-memory entry points and their file-level readers.

In memory (what the registered attack, the K x P grid and the command line all call):

* :func:`train_decoder_on` -- templates + aligned crops (:class:`~.data.PairedData`) and a fitted
  protection: seeded identity-disjoint split (:func:`facepriv.splits.split_two`), the attacker's
  training templates protected as the system would protect them, decoder trained (checkpoints in
  a run folder, or nothing on disk);
* :func:`held_out` -- the rows of identities the decoder never saw;
* :func:`evaluate_decoder_on` -- RSR, SRRA, SSIM/PSNR/MSE and gender on those rows, optionally
  written to an output folder (``summary.json``, ``samples.png``, ``scores.csv``).

At the file edge, :mod:`.runs_files` (``train_run``, ``evaluate_run``) reads an embeddings file
and its image folder (and a run folder) and calls the functions above.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.reconstruction.data import PairedData, resize_crops
from facepriv.attacks.reconstruction.runfolder import (
    TrainConfig,
)
from facepriv.attacks.reconstruction.trainer import TrainResult, train_decoder
from facepriv.attacks.reconstruction.viz import pair_grid, save_png
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import InputFileError, ParameterError
from facepriv.fileio import check_writable, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

N_PREVIEW = 8
#: files ``evaluate_decoder_on`` writes into its output folder (none is replaced without overwrite)
EVAL_OUTPUTS = ("summary.json", "samples.png", "scores.csv")
#: seed of the per-template PE-MIU permutations of the test templates when none is given
EVAL_PROTECTION_SEED = 1_000_003


# ------------------------------------------------------------------------------------ in memory
@dataclass
class Trained:
    """A trained (or resumed) decoder with its configuration and split."""

    result: TrainResult
    cfg: TrainConfig
    train_identities: frozenset[str]
    test_identities: frozenset[str]

    @property
    def decoder(self):
        """The decoder (eval mode)."""
        return self.result.decoder

    def public_config(self) -> dict[str, Any]:
        """The training configuration as written to summaries (no paths, no secrets)."""
        return {k: v for k, v in self.cfg.to_dict().items() if k != "extra"}


def is_unprotected(protection: Any) -> bool:
    """True for None and the ``unprotected`` protection (templates are used as they are)."""
    return protection is None or getattr(protection, "name", "") == "unprotected"


def protect_templates(protection: Any, es: EmbeddingSet) -> np.ndarray:
    """The templates the attacker holds: ``es`` protected by a fitted protection (or as they are)."""
    from facepriv.attacks.base import protect_rows

    if is_unprotected(protection):
        return es.embeddings
    return protect_rows(protection, es.embeddings, es.identity)


def preview_rows(identity: np.ndarray, n: int = N_PREVIEW) -> np.ndarray:
    """First row of each of the first ``n`` identities (one face per person)."""
    _, first = np.unique(identity, return_index=True)
    return np.sort(first)[:n]


def split_paired(data: PairedData, test_fraction: float, seed: int, max_train: int | None = None
                 ) -> tuple[PairedData, PairedData]:
    """(train, test): seeded identity-disjoint split, training side capped at ``max_train`` images."""
    from facepriv.splits import split_two

    test_rows, train_rows = split_two(data.es.identity, test_fraction, seed)
    train, test = data.subset(train_rows), data.subset(test_rows)
    if max_train is not None and max_train < len(train):
        rng = np.random.default_rng(seed)
        train = train.subset(np.sort(rng.choice(len(train), size=max_train, replace=False)))
    return train, test


def train_decoder_on(
    data: PairedData,
    protection: Any,
    cfg: TrainConfig,
    run_dir: str | os.PathLike[str] | None,
    model: Any,
    *,
    max_train: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    extra: dict[str, Any] | None = None,
    loss_model: Any = None,
    device: str = "cpu",
    amp: bool | None = None,
) -> Trained:
    """Split ``data``, protect the training templates, train a decoder.

    Parameters
    ----------
    data : PairedData
        Unprotected templates of every sample with its aligned crop.
    protection : TemplateProtection or None
        Fitted protection of the system (None or ``unprotected``: templates as they are); it may
        hold a secret key, which is never written (``config.json`` records public parameters).
    cfg : TrainConfig
        Training settings; ``embedding_dim``, ``model``, ``protection`` and ``extra`` are filled in
        here (on a copy).
    run_dir : path or None
        Run folder (checkpoints, resume); None trains in memory and writes nothing.
    model : RecognitionModel
        The system's model (its differentiable network gives the ID loss).
    max_train : int, optional
        Cap on the training images (seeded subset).
    resume, overwrite, max_steps
        See :func:`~facepriv.attacks.reconstruction.trainer.train_decoder`.
    extra : dict, optional
        More public facts recorded in ``config.json`` (e.g. the input file names).
    loss_model : RecognitionModel, optional
        A proxy whose network gives the ID loss instead of the system's model (black-box
        attacker); recorded in ``config.json`` as ``extra.loss_model``.
    device, amp
        Where the training runs and whether mixed precision is used on CUDA (see
        :func:`~facepriv.attacks.reconstruction.trainer.train_decoder`); recorded in ``config.json``.
    """
    train, test = split_paired(data, cfg.test_fraction, cfg.seed, max_train)
    if loss_model is not None and loss_model.name != model.name:
        extra = {**(extra or {}), "loss_model": loss_model.name}
    else:
        loss_model = model
    inputs = protect_templates(protection, train.es)
    pv_rows = preview_rows(test.es.identity)
    pv_inputs = protect_templates(protection, test.es.subset(pv_rows))
    train_ids, test_ids = sorted(set(train.es.identity.tolist())), sorted(set(test.es.identity.tolist()))
    cfg = dataclasses.replace(
        cfg, embedding_dim=int(inputs.shape[1]), model=model.name,
        protection=None if is_unprotected(protection) else protection.record(),
        extra={**(extra or {}), "n_train_images": len(train), "n_train_identities": len(train_ids),
               "n_test_identities": len(test_ids), "max_train": max_train},
    )
    targets = resize_crops(train.crops, cfg.size)
    preview = (pv_inputs, resize_crops(test.crops[pv_rows], cfg.size))
    split = {"seed": cfg.seed, "train_identities": train_ids, "test_identities": test_ids}
    res = train_decoder(inputs, targets, cfg, run_dir, loss_model.torch_module(), tuple(loss_model.card.input_size),
                        preview, resume, overwrite, max_steps, split=split, device=device, amp=amp)
    return Trained(res, cfg, frozenset(train_ids), frozenset(test_ids))


def held_out(data: PairedData, train_identities: set[str] | frozenset[str], where: Any = "embeddings") -> PairedData:
    """Rows of ``data`` whose identity the decoder was not trained on.

    Raises
    ------
    InputFileError
        Every identity of ``data`` was used for training (named by ``where``).
    """
    keep = np.array([i not in train_identities for i in data.es.identity.tolist()], dtype=bool)
    if not keep.any():
        raise InputFileError(where, "every identity in these embeddings was used to train the decoder; nothing held out to evaluate")
    if (~keep).any():
        log.info("left out %d images of %d identities the decoder was trained on", int((~keep).sum()),
                 len(set(data.es.identity[~keep].tolist())))
    return data.subset(keep)


def check_eval_outputs(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an output folder that is a file, or that holds any file the evaluation writes."""
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise InputFileError(outp, "exists and is not a folder; the output must be a folder")
    for name in EVAL_OUTPUTS:
        check_writable(outp / name, overwrite)
    return outp


def evaluate_decoder_on(
    decoder: Any,
    test: PairedData,
    protection: Any,
    model: Any,
    *,
    transfer: tuple[str, ...] = (),
    gender: bool = True,
    seed: int = 0,
    max_test: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    head: dict[str, Any] | None = None,
    judges: tuple[str, ...] = (),
    originals_for: Any = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Reconstruct the faces of ``test`` from their (protected) templates and measure the attack.

    Parameters
    ----------
    decoder : FaceDecoder
    test : PairedData
        Held-out rows: unprotected templates (the originals) and their aligned crops.
    protection : TemplateProtection or None
        Fitted protection applied to the test templates before decoding (None: as they are).
    model : RecognitionModel
        The system's model (re-embeds the reconstructions).
    transfer : tuple of str
        Further models for the transfer RSR.
    gender : bool
        Compute the gender metrics.
    seed : int
        Seeds the ``max_test`` subset, the enrolment pairing and the CV folds.
    max_test : int, optional
        Evaluate a seeded subset of this many images (thresholds from that subset too).
    out_dir : path, optional
        Folder for ``summary.json``, ``samples.png`` (16 people, original | reconstruction) and
        ``scores.csv``; None writes nothing.
    overwrite : bool
        Replace those files when they exist.
    head : dict, optional
        Entries put first in the summary (e.g. the run folder and training configuration).
    judges : tuple of str
        Models that judge the reconstructions after re-detection and re-alignment
        (:mod:`~facepriv.attacks.reconstruction.judges`); the caller checks they are independent.
    originals_for : callable(recipe) -> AlignedCrops
        Aligned crops of the original photos for a recipe (needed with ``judges``).
    device : str
        Resolved torch device of the decoding and re-embedding (the decoder is not moved).

    Returns
    -------
    dict
        The summary (see :func:`~facepriv.attacks.reconstruction.evaluate.evaluate_reconstructions`).
    """
    from facepriv.attacks.reconstruction.evaluate import evaluate_reconstructions

    if out_dir is not None:
        check_eval_outputs(out_dir, overwrite)
    if max_test is not None and max_test < len(test):
        if max_test < 2:
            raise ParameterError(f"max_test: must be at least 2, got {max_test}", param="max_test")
        rng = np.random.default_rng(seed)
        test = test.subset(np.sort(rng.choice(len(test), size=max_test, replace=False)))
    inputs = protect_templates(protection, test.es)
    applied = None if is_unprotected(protection) else protection.record()
    if inputs.shape[1] != decoder.embedding_dim:
        raise ParameterError(f"protected templates have dimension {inputs.shape[1]}, the decoder expects {decoder.embedding_dim}")
    summary, recon, scores = evaluate_reconstructions(test, inputs, decoder, model, tuple(transfer), gender, seed,
                                                     device=device)
    if judges:
        from facepriv.attacks.reconstruction.attack import FMRS
        from facepriv.attacks.reconstruction.judges import judge

        if originals_for is None:
            raise ParameterError("judges need the original photos", param="judges")
        ids = test.es.ids.tolist()
        summary["judges"] = {name: judge(name, recon, ids, test.es.identity, originals_for, FMRS) for name in judges}
    h = dict(head or {})
    summary = {"run": h.pop("run", None), "protection": applied, **h, **summary}
    if out_dir is not None:
        outp = Path(out_dir)
        outp.mkdir(parents=True, exist_ok=True)
        rows = preview_rows(test.es.identity, 16)
        save_png(pair_grid(resize_crops(test.crops[rows], decoder.size), recon[rows]), outp / "samples.png")
        lines = ["image,identity,score"] + [f"{i},{d},{s:.6f}" for i, d, s in zip(test.es.ids, test.es.identity, scores, strict=True)]
        write_text_atomic(outp / "scores.csv", "\n".join(lines) + "\n")
        write_json_atomic(outp / "summary.json", summary)
    return summary


# ------------------------------------------------------------------------------- file edge
