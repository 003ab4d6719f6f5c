"""File-level train / evaluate of the reconstruction attack (what the CLI and the K x P grid call).

``train_run`` reads an embeddings file and its image root, splits identities (seeded, disjoint),
protects the attacker's training templates with the chosen protection exactly as the system would,
and trains a decoder into a run folder. ``evaluate_run`` loads that decoder and measures RSR,
SRRA, SSIM/PSNR/MSE and gender on identities the decoder never saw.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.reconstruction.data import (
    PairedData,
    check_embeddings,
    identity_split,
    load_paired,
    resize_crops,
)
from facepriv.attacks.reconstruction.trainer import (
    CHECKPOINT,
    CONFIG,
    TrainConfig,
    TrainResult,
    load_decoder,
    train_decoder,
)
from facepriv.attacks.reconstruction.viz import pair_grid, save_png
from facepriv.embeddings import EmbeddingSet, load_embeddings
from facepriv.errors import InputFileError, OutputExistsError, ParameterError
from facepriv.fileio import check_writable, write_json_atomic

log = logging.getLogger(__name__)

SPLIT = "split.json"
N_PREVIEW = 8
#: seed of the per-template PE-MIU permutations of the test templates when none is given
EVAL_PROTECTION_SEED = 1_000_003


def make_protection(name: str | None, params: dict[str, Any] | None):
    """A template protection from the registry, or None for unprotected."""
    if name in (None, "", "unprotected", "none"):
        return None
    from facepriv.registry import create

    return create("protection", str(name), dict(params or {}))


def _model_for(es: EmbeddingSet, path: str | os.PathLike[str], model_name: str | None):
    from facepriv.models.zoo import get_model

    name = model_name or es.model or "dlib_resnet"
    if model_name and es.model and es.model != model_name:
        raise InputFileError(path, f"embeddings were made by model {es.model!r}, not {model_name!r}")
    model = get_model(name)
    if model.card.embedding_dim != es.dim:
        raise InputFileError(path, f"embeddings have dimension {es.dim}, but model {name!r} makes {model.card.embedding_dim}-d embeddings")
    return model


def _load(path, root, model_name) -> tuple[PairedData, Any]:
    es = load_embeddings(path)
    check_embeddings(es, path)
    model = _model_for(es, path, model_name)
    return load_paired(es, root, model.card.alignment, path), model


def _preview_rows(identity: np.ndarray, n: int = N_PREVIEW) -> np.ndarray:
    """First row of each of the first ``n`` identities (one face per person)."""
    _, first = np.unique(identity, return_index=True)
    return np.sort(first)[:n]


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
    """Train a decoder from an embeddings file + image root into run folder ``out``.

    ``protection_params`` may hold a secret (e.g. a fixed permutation seed); only the protection's
    public parameters are written to ``config.json``. ``max_train`` caps the number of training
    images (seeded subset) for CPU-sized runs.
    """
    run = Path(out)
    if ((run / CHECKPOINT).exists() or (run / CONFIG).exists()) and not (resume or overwrite):
        raise OutputExistsError(run)
    data, model = _load(embeddings, images, model_name)
    train_mask, test_mask = identity_split(data.es.identity, cfg.test_fraction, cfg.seed)
    train, test = data.subset(train_mask), data.subset(test_mask)
    if max_train is not None and max_train < len(train):
        rng = np.random.default_rng(cfg.seed)
        train = train.subset(np.sort(rng.choice(len(train), size=max_train, replace=False)))
    prot = make_protection(protection, protection_params)
    inputs = train.es.embeddings
    pv_rows = _preview_rows(test.es.identity)
    pv_inputs = test.es.embeddings[pv_rows]
    if prot is not None:
        inputs = prot.protect(train.es).embeddings
        pv_inputs = prot.protect(test.es.subset(pv_rows)).embeddings
    cfg.embedding_dim = int(inputs.shape[1])
    cfg.model = model.name
    cfg.protection = prot.record() if prot is not None else None
    cfg.extra = {
        "embeddings": str(embeddings),
        "images": str(images),
        "n_train_images": len(train),
        "n_train_identities": int(len(np.unique(train.es.identity))),
        "n_test_identities": int(len(np.unique(test.es.identity))),
        "max_train": max_train,
    }
    targets = resize_crops(train.crops, cfg.size)
    preview = (pv_inputs, resize_crops(test.crops[pv_rows], cfg.size))
    # written before training, so an interrupted run can still be evaluated on unseen identities
    write_json_atomic(
        run / SPLIT,
        {"seed": cfg.seed, "train_identities": sorted(set(train.es.identity.tolist())), "test_identities": sorted(set(test.es.identity.tolist()))},
    )
    return train_decoder(
        inputs, targets, cfg, out, model.torch_module(), tuple(model.card.input_size), preview, resume, overwrite, max_steps
    )


def _held_out(data: PairedData, run: Path, path) -> PairedData:
    split_file = run / SPLIT
    if not split_file.is_file():
        raise InputFileError(split_file, "missing: cannot tell which identities the decoder was trained on")
    try:
        seen = set(json.loads(split_file.read_text(encoding="utf-8"))["train_identities"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputFileError(split_file, f"not a valid split file ({exc})") from None
    keep = np.array([i not in seen for i in data.es.identity.tolist()])
    if not keep.any():
        raise InputFileError(path, "every identity in these embeddings was used to train the decoder; nothing held out to evaluate")
    if (~keep).any():
        log.info("left out %d images of %d identities the decoder was trained on", int((~keep).sum()), len(set(data.es.identity[~keep].tolist())))
    return data.subset(keep)


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

    The protection the decoder was trained against is re-created from the run's config (public
    parameters) updated with ``protection_params`` (secrets such as a fixed-permutation seed are
    not stored, so pass them again). ``max_test`` evaluates a seeded subset of that many held-out
    images (thresholds then come from that subset too). Writes ``summary.json``, ``samples.png``
    and ``scores.csv``. ``protection`` (a registered name, with ``protection_params``) replaces
    the run's protection for the test templates: e.g. a decoder trained on unprotected templates
    attacking PE-MIU templates (``"unprotected"`` evaluates on plain templates).
    """
    from facepriv.attacks.reconstruction.evaluate import evaluate_reconstructions

    run = Path(run)
    outp = Path(out)
    check_writable(outp / "summary.json", overwrite)
    decoder, cfg = load_decoder(run)
    data, model = _load(embeddings, images, cfg.model)
    if data.es.dim != cfg.embedding_dim and cfg.protection is None:
        raise InputFileError(embeddings, f"embeddings have dimension {data.es.dim}, the decoder expects {cfg.embedding_dim}")
    test = _held_out(data, run, embeddings)
    if max_test is not None and max_test < len(test):
        if max_test < 2:
            raise ParameterError(f"max_test must be at least 2, got {max_test}")
        rng = np.random.default_rng(seed)
        test = test.subset(np.sort(rng.choice(len(test), size=max_test, replace=False)))
    inputs = test.es.embeddings
    record, applied = cfg.protection, None
    if protection is not None:
        record = None if protection in ("unprotected", "none", "") else {"name": protection, "params": {}}
    if record is not None:
        params = {k: v for k, v in dict(record.get("params", {})).items() if v != "<secret>"}
        params.update(protection_params or {})
        if params.get("moved_blocks") is None and "seed" not in (protection_params or {}):
            # fresh per-template permutations: draw the victims' ones from another stream than the
            # attacker's training templates (the fixed variant needs the system's seed instead)
            params["seed"] = EVAL_PROTECTION_SEED + seed
        prot = make_protection(record["name"], params)
        inputs = prot.protect(test.es).embeddings
        applied = prot.record()
    if inputs.shape[1] != cfg.embedding_dim:
        raise ParameterError(f"protected templates have dimension {inputs.shape[1]}, the decoder expects {cfg.embedding_dim}")
    summary, recon, scores = evaluate_reconstructions(test, inputs, decoder, model, transfer_models, gender, seed)
    summary = {"run": str(run), "protection": applied, "train_config": {k: v for k, v in cfg.to_dict().items() if k != "extra"}, **summary}
    outp.mkdir(parents=True, exist_ok=True)
    rows = _preview_rows(test.es.identity, 16)
    save_png(pair_grid(resize_crops(test.crops[rows], cfg.size), recon[rows]), outp / "samples.png")
    _write_scores(outp / "scores.csv", test, scores)
    write_json_atomic(outp / "summary.json", summary)
    return summary


def _write_scores(path: Path, test: PairedData, scores: np.ndarray) -> None:
    """Per-image cosine score of reconstruction vs original (for re-analysis)."""
    from facepriv.fileio import write_text_atomic

    lines = ["image,identity,score"] + [f"{i},{d},{s:.6f}" for i, d, s in zip(test.es.ids, test.es.identity, scores, strict=True)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def compare_figure(
    runs: list[str | os.PathLike[str]],
    embeddings: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    n: int = 6,
    protection_params: dict[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """One row per held-out person: original crop, then the reconstruction of each run.

    Every run must have been trained with the same split (same seed and test fraction), so the
    rows are identities none of the decoders saw. Protected runs decode the protected templates
    (per-template permutations drawn as in :func:`evaluate_run`).
    """
    from facepriv.attacks.reconstruction.trainer import reconstruct

    if not runs:
        raise ParameterError("give at least one run folder")
    outp = check_writable(out_png, overwrite)
    data, _ = _load(embeddings, images, load_decoder(runs[0])[1].model)
    test = _held_out(data, Path(runs[0]), embeddings)
    rows = _preview_rows(test.es.identity, n)
    sub = test.subset(rows)
    cols, titles = [], ["original"]
    for r in runs:
        dec, cfg = load_decoder(r)
        titles.append(protection_title(cfg.protection))
        test_r = _held_out(data, Path(r), embeddings)
        if set(test_r.es.ids.tolist()) != set(test.es.ids.tolist()):
            raise ParameterError(f"{r}: trained with another identity split than {runs[0]}; use the same --seed and --test-fraction")
        inputs = sub.es.embeddings
        if cfg.protection is not None:
            params = {k: v for k, v in dict(cfg.protection.get("params", {})).items() if v != "<secret>"}
            params.update(protection_params or {})
            if params.get("moved_blocks") is None and "seed" not in (protection_params or {}):
                params["seed"] = EVAL_PROTECTION_SEED + seed
            inputs = make_protection(cfg.protection["name"], params).protect(sub.es).embeddings
        cols.append(reconstruct(dec, inputs))
    size = max(c.shape[1] for c in cols)
    from facepriv.attacks.reconstruction.viz import column_grid

    save_png(column_grid([resize_crops(sub.crops, size), *cols], titles=titles, cell=max(size, 96)), outp)
    return outp


def protection_title(protection: dict[str, Any] | None) -> str:
    """Short column title of a run's protection: ``unprotected``, ``PE-MIU 32``, ``K16 P4``, else its name."""
    if protection is None or protection.get("name") == "unprotected":
        return "unprotected"
    params = dict(protection.get("params", {}))
    if protection.get("name") == "pe_miu":
        if params.get("moved_blocks") is not None:
            return f"K{params.get('block_size')} P{params['moved_blocks']}"
        return f"PE-MIU {params.get('block_size')}"
    return str(protection.get("name"))
