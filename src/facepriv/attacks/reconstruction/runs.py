"""Train / evaluate the reconstruction decoder: in-memory entry points and their file-level readers.

In memory (what the registered attack, the K x P grid and the command line all call):

* :func:`train_decoder_on` -- templates + aligned crops (:class:`~.data.PairedData`) and a fitted
  protection: seeded identity-disjoint split (:func:`facepriv.splits.split_two`), the attacker's
  training templates protected as the system would protect them, decoder trained (checkpoints in
  a run folder, or nothing on disk);
* :func:`held_out` -- the rows of identities the decoder never saw;
* :func:`evaluate_decoder_on` -- RSR, SRRA, SSIM/PSNR/MSE and gender on those rows, optionally
  written to an output folder (``summary.json``, ``samples.png``, ``scores.csv``).

At the file edge, :func:`train_run` and :func:`evaluate_run` read an embeddings file and its image
folder (and a run folder) and call the functions above.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.reconstruction.data import PairedData, check_embeddings, load_paired, resize_crops
from facepriv.attacks.reconstruction.runfolder import (
    SETTINGS_KEYS,
    SPLIT,
    TrainConfig,
    check_resume_config,
    check_run_folder,
    load_config,
)
from facepriv.attacks.reconstruction.trainer import TrainResult, load_decoder, train_decoder
from facepriv.attacks.reconstruction.viz import pair_grid, save_png
from facepriv.embeddings import EmbeddingSet, load_embeddings
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
    if is_unprotected(protection):
        return es.embeddings
    return protection.transform(es.embeddings)


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
    """
    train, test = split_paired(data, cfg.test_fraction, cfg.seed, max_train)
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
    res = train_decoder(inputs, targets, cfg, run_dir, model.torch_module(), tuple(model.card.input_size), preview,
                        resume, overwrite, max_steps, split=split)
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
    summary, recon, scores = evaluate_reconstructions(test, inputs, decoder, model, tuple(transfer), gender, seed)
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
def model_for(es: EmbeddingSet, path: str | os.PathLike[str], model_name: str | None):
    """The recognition model of an embeddings file (checked against its dimension)."""
    from facepriv.models.zoo import get_model

    name = model_name or es.model or "dlib_resnet"
    if model_name and es.model and es.model != model_name:
        raise InputFileError(path, f"embeddings were made by model {es.model!r}, not {model_name!r}")
    model = get_model(name)
    if model.card.embedding_dim != es.dim:
        raise InputFileError(path, f"embeddings have dimension {es.dim}, but model {name!r} makes {model.card.embedding_dim}-d embeddings")
    return model


def read_embeddings(path: str | os.PathLike[str]) -> EmbeddingSet:
    """An unprotected embeddings file, checked for the attack."""
    es = load_embeddings(path)
    check_embeddings(es, path)
    return es


def system_protection(name: str | None, params: dict[str, Any] | None, es: EmbeddingSet):
    """The protection of a training run, built, checked against ``es`` and fitted (None: unprotected)."""
    from facepriv.protections.base import build_protection

    if name in (None, "", "none", "unprotected"):
        return None
    prot = build_protection(name, params)
    prot.check_input_dim(es.dim)
    return prot.fit(es)


def train_run(
    embeddings: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    cfg: TrainConfig,
    protection: str | None = None,
    protection_params: dict[str, Any] | None = None,
    model_name: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    max_train: int | None = None,
) -> TrainResult:
    """Train a decoder from an embeddings file + image folder into run folder ``out``.

    Everything is checked before the photos are aligned: the run folder, the file, the
    protection (``protection_params`` may hold a secret such as a fixed permutation's seed; only
    public parameters are written).
    """
    cfg.validate()
    if check_run_folder(out, resume, overwrite) == "resume":
        check_resume_config(out, cfg, SETTINGS_KEYS)
    es = read_embeddings(embeddings)
    prot = system_protection(protection, protection_params, es)
    model = model_for(es, embeddings, model_name)
    data = load_paired(es, images, model.card.alignment, embeddings)
    return train_decoder_on(data, prot, cfg, out, model, max_train=max_train, resume=resume, overwrite=overwrite,
                            max_steps=max_steps, extra={"embeddings": str(embeddings), "images": str(images)}).result


def read_split(run: Path) -> set[str]:
    """Training identities of a run folder (``split.json``)."""
    split_file = run / SPLIT
    if not split_file.is_file():
        raise InputFileError(split_file, "missing: cannot tell which identities the decoder was trained on")
    try:
        return set(json.loads(split_file.read_text(encoding="utf-8"))["train_identities"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise InputFileError(split_file, f"not a valid split file ({exc})") from None


def evaluation_protection(trained: dict[str, Any] | None, name: str | None = None,
                          params: dict[str, Any] | None = None, seed: int = 0):
    """The protection of the victims' templates at evaluation (not fitted), or None.

    ``trained`` is the record of the run's protection; ``name`` replaces it (``"unprotected"`` for
    plain templates), ``params`` sets parameters, ``params["seed"]`` the key. PE-MIU with
    per-template permutations draws the victims' permutations from the stream
    ``EVAL_PROTECTION_SEED + seed`` when no seed is given; a keyed protection (e.g. PE-MIU's fixed
    permutation) needs its key.

    Raises
    ------
    ParameterError
        ``param="protection_seed"``: the key of a keyed protection is not given.
    """
    from facepriv.protections.base import protection_from_record
    from facepriv.registry import get_class

    params = dict(params or {})
    secrets = {"seed": params.pop("seed")} if "seed" in params else {}
    if name is not None:
        if name in ("unprotected", "none", ""):
            return None
        masked = {k: "<secret>" for k in getattr(get_class("protection", name), "secret_params", ())}
        record: dict[str, Any] | None = {"name": name, "params": masked}
    else:
        record = trained
    if record is None:
        return None
    rec = {"name": record["name"], "params": {**dict(record.get("params", {})), **params}}
    if rec["name"] == "pe_miu" and rec["params"].get("moved_blocks") is None and "seed" not in secrets:
        secrets["seed"] = EVAL_PROTECTION_SEED + seed  # fresh permutations, not the attacker's stream
    try:
        return protection_from_record(rec, secrets, require_key=True)
    except ParameterError as exc:
        if exc.param in ("seed", None) and "keyed" in str(exc):
            raise ParameterError(str(exc), param="protection_seed") from None
        raise


def evaluate_run(
    run: str | os.PathLike[str],
    embeddings: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    transfer_models: tuple[str, ...] = (),
    protection_params: dict[str, Any] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    gender: bool = True,
    max_test: int | None = None,
    protection: str | None = None,
) -> dict[str, Any]:
    """Evaluate the decoder of ``run`` on the held-out identities of ``embeddings``; write ``out``.

    The protection of the test templates is the run's (public parameters from its config) with
    ``protection_params`` applied, or ``protection`` (a name) instead: e.g. a decoder trained on
    unprotected templates attacking PE-MIU templates. See :func:`evaluation_protection` for keys.
    Writes ``summary.json``, ``samples.png`` and ``scores.csv`` (none replaced without ``overwrite``).
    """
    run = Path(run)
    check_eval_outputs(out, overwrite)
    cfg = load_config(run)
    prot = evaluation_protection(cfg.protection, protection, protection_params, seed)
    decoder, cfg = load_decoder(run)
    es = read_embeddings(embeddings)
    model = model_for(es, embeddings, cfg.model)
    if es.dim != cfg.embedding_dim and cfg.protection is None:
        raise InputFileError(embeddings, f"embeddings have dimension {es.dim}, the decoder expects {cfg.embedding_dim}")
    if prot is not None:
        prot.check_input_dim(es.dim)
        prot.fit(es)
    trained_on = read_split(run)
    test = held_out(load_paired(es, images, model.card.alignment, embeddings), trained_on, embeddings)
    head = {"run": str(run), "train_config": {k: v for k, v in cfg.to_dict().items() if k != "extra"}}
    return evaluate_decoder_on(decoder, test, prot, model, transfer=transfer_models, gender=gender, seed=seed,
                               max_test=max_test, out_dir=out, overwrite=overwrite, head=head)
