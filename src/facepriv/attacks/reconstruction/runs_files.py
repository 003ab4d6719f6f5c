"""The reconstruction attack at the file edge: embeddings files, image folders and run folders.

:func:`train_run` and :func:`evaluate_run` (what ``facepriv reconstruct train|eval`` call) read
and check their inputs, then call the in-memory functions of :mod:`.runs`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from facepriv.attacks.reconstruction.data import check_embeddings, load_paired
from facepriv.attacks.reconstruction.runfolder import (
    SETTINGS_KEYS,
    SPLIT,
    TrainConfig,
    check_resume_config,
    check_run_folder,
    load_config,
)
from facepriv.attacks.reconstruction.runs import (
    EVAL_PROTECTION_SEED,
    check_eval_outputs,
    evaluate_decoder_on,
    held_out,
    train_decoder_on,
)
from facepriv.attacks.reconstruction.trainer import TrainResult, load_decoder
from facepriv.embeddings import EmbeddingSet, load_embeddings
from facepriv.errors import InputFileError, ParameterError


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
    loss_model: str | None = None,
    device: str = "cpu",
    amp: bool | None = None,
) -> TrainResult:
    """Train a decoder from an embeddings file + image folder into run folder ``out``.

    Everything is checked before the photos are aligned: the run folder, the file, the
    protection (``protection_params`` may hold a secret such as a fixed permutation's seed; only
    public parameters are written). ``device`` and ``amp`` (mixed precision, CUDA only) say how
    the decoder is trained; both are recorded in ``config.json``.
    """
    cfg.validate()
    if check_run_folder(out, resume, overwrite) == "resume":
        check_resume_config(out, cfg, SETTINGS_KEYS)
    es = read_embeddings(embeddings)
    prot = system_protection(protection, protection_params, es)
    model = model_for(es, embeddings, model_name)
    from facepriv.models.zoo import get_model

    proxy = None if loss_model in (None, model.name) else get_model(loss_model)
    data = load_paired(es, images, model.card.alignment, embeddings)
    return train_decoder_on(data, prot, cfg, out, model, max_train=max_train, resume=resume, overwrite=overwrite,
                            max_steps=max_steps, extra={"embeddings": str(embeddings), "images": str(images)},
                            loss_model=proxy, device=device, amp=amp).result


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
    judges: tuple[str, ...] = (),
    white_box_judges: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate the decoder of ``run`` on the held-out identities of ``embeddings``; write ``out``.

    The protection of the test templates is the run's (public parameters from its config) with
    ``protection_params`` applied, or ``protection`` (a name) instead: e.g. a decoder trained on
    unprotected templates attacking PE-MIU templates. See :func:`evaluation_protection` for keys.
    Writes ``summary.json``, ``samples.png`` and ``scores.csv`` (none replaced without ``overwrite``).
    ``judges`` judge the reconstructions after re-detection (see
    :mod:`~facepriv.attacks.reconstruction.judges`); one the run touched (its template or loss model)
    is refused unless ``white_box_judges``. ``device`` runs the decoding and re-embedding there.
    """
    from facepriv.attacks.reconstruction.judges import check_judges

    run = Path(run)
    check_eval_outputs(out, overwrite)
    cfg = load_config(run)
    touched = sorted({cfg.model, str(cfg.extra.get("loss_model") or cfg.model)})
    check_judges(list(judges), touched, white_box_judges)
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
    head = {"run": str(run), "train_config": {k: v for k, v in cfg.to_dict().items() if k != "extra"},
            "scenario": {"template_model": cfg.model, "loss_model": str(cfg.extra.get("loss_model") or cfg.model),
                         "models_touched": touched, "judges": list(judges)}}

    def originals_for(recipe: str):
        from facepriv.pipeline import align_images

        return align_images(images, test.es.ids.tolist(), recipe)

    return evaluate_decoder_on(decoder, test, prot, model, transfer=transfer_models, gender=gender, seed=seed,
                               max_test=max_test, out_dir=out, overwrite=overwrite, head=head,
                               judges=judges, originals_for=originals_for, device=device)


#: files ``facepriv reconstruct decode`` writes into its output folder
DECODE_OUTPUTS = ("faces.png", "index.csv")


def decode_run(run: str | os.PathLike[str], embeddings: str | os.PathLike[str], out: str | os.PathLike[str],
               overwrite: bool = False, device: str = "cpu") -> Path:
    """Decode every template of an embeddings file with the decoder of ``run``; write faces into ``out``.

    For templates that come from elsewhere, e.g. the estimates of ``facepriv score-attack``: writes
    ``out/NNNNN.png`` (one face per row, in file order), ``out/index.csv`` (``file,id,identity``)
    and ``out/faces.png`` (up to 64 faces tiled). The file must hold templates of the decoder's
    size (and model, when the file names one). Nothing is replaced without ``overwrite``.
    """
    from facepriv.attacks.reconstruction.trainer import reconstruct
    from facepriv.attacks.reconstruction.viz import save_png, tile
    from facepriv.fileio import check_writable, write_text_atomic

    cfg = load_config(run)
    es = load_embeddings(embeddings)
    if es.dim != cfg.embedding_dim:
        raise InputFileError(embeddings, f"templates have dimension {es.dim}, the decoder of {run} expects {cfg.embedding_dim}")
    if es.model and es.model != cfg.model:
        raise InputFileError(embeddings, f"templates were made by {es.model!r}, the decoder of {run} decodes {cfg.model!r} ones")
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise InputFileError(outp, "exists and is not a folder; the output must be a folder")
    names = [f"{i:05d}.png" for i in range(len(es))]
    for name in (*DECODE_OUTPUTS, *names):
        check_writable(outp / name, overwrite)
    decoder, _ = load_decoder(run)
    faces = reconstruct(decoder, es.embeddings, device=device)
    for name, face in zip(names, faces, strict=True):
        save_png(face, outp / name)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "id", "identity"])
    w.writerows(zip(names, es.ids.tolist(), es.identity.tolist(), strict=True))
    write_text_atomic(outp / "index.csv", buf.getvalue())
    save_png(tile(faces[:64]), outp / "faces.png")
    return outp

