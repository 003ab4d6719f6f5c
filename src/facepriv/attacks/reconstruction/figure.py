"""Side-by-side picture: held-out faces and their reconstructions by several decoders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facepriv.attacks.reconstruction.data import load_paired, resize_crops
from facepriv.attacks.reconstruction.runfolder import load_config
from facepriv.attacks.reconstruction.runs import held_out, preview_rows, protect_templates
from facepriv.attacks.reconstruction.runs_files import (
    evaluation_protection,
    model_for,
    read_embeddings,
    read_split,
)
from facepriv.attacks.reconstruction.viz import column_grid, save_png
from facepriv.errors import ParameterError
from facepriv.fileio import check_writable


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
    (per-template permutations drawn as in
    :func:`~facepriv.attacks.reconstruction.runs_files.evaluation_protection`; a keyed protection
    needs its key in ``protection_params["seed"]``).
    """
    from facepriv.attacks.reconstruction.trainer import load_decoder, reconstruct

    if not runs:
        raise ParameterError("give at least one run folder")
    if n < 1:
        raise ParameterError(f"n: the figure needs at least one row, got {n}", param="rows")
    outp = check_writable(out_png, overwrite)
    cfgs = [load_config(r) for r in runs]  # every run folder checked before any work
    prots = [evaluation_protection(c.protection, None, protection_params, seed) for c in cfgs]
    splits = [read_split(Path(r)) for r in runs]
    for r, s in zip(runs[1:], splits[1:], strict=True):
        if s != splits[0]:
            raise ParameterError(f"{r}: trained with another identity split than {runs[0]}; use the same seed and test fraction")
    es = read_embeddings(embeddings)
    model = model_for(es, embeddings, cfgs[0].model)
    test = held_out(load_paired(es, images, model.card.alignment, embeddings), splits[0], embeddings)
    sub = test.subset(preview_rows(test.es.identity, n))
    cols, titles = [], ["original"]
    for r, cfg, prot in zip(runs, cfgs, prots, strict=True):
        dec, _ = load_decoder(r)
        titles.append(protection_title(cfg.protection))
        if prot is not None:
            prot.check_input_dim(es.dim)
            prot.fit(es)
        cols.append(reconstruct(dec, protect_templates(prot, sub.es)))
    size = max(c.shape[1] for c in cols)
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
