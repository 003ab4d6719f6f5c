"""K x P grid of the WIFS 2023 PE-MIU variant: one decoder per (block size K, moved blocks P).

For every cell a decoder is trained on the attacker's templates protected with PE-MIU(K, P) (an
attacker with black-box access to the protection, as in TBIOM 2022) and evaluated on held-out
identities. With the unprotected baseline, that decoder is also evaluated on every cell's protected
templates (rows ``naive_K*_P*``: an attacker who never saw the permutation). The RSR table (JSON,
CSV, Markdown) and heat-map PNGs per FMR (``rsr_heatmap_fmr*.png``, naive:
``rsr_heatmap_naive_fmr*.png``) are written to the output folder. Cells already evaluated
(``cells/K*_P*/eval/summary.json``) are reused, and unfinished trainings resume, so an interrupted
grid continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.reconstruction.evaluate import FMRS, fmr_key
from facepriv.attacks.reconstruction.runfolder import TrainConfig, run_state
from facepriv.attacks.reconstruction.runs import Trained, evaluate_decoder_on, held_out, train_decoder_on
from facepriv.attacks.reconstruction.runs_files import model_for, read_embeddings, system_protection
from facepriv.attacks.reconstruction.viz import rsr_heatmap
from facepriv.errors import InputFileError, ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def grid_cells(dim: int, block_sizes: list[int], moved_blocks: list[int], protection_seed: int,
               include_unprotected: bool) -> list[tuple[str, dict[str, Any] | None]]:
    """(name, PE-MIU parameters) of every cell; a K that does not divide ``dim`` is an error, P > D/K skipped."""
    from facepriv.protections.pe_miu import check_block_size

    if not block_sizes or not moved_blocks:
        raise ParameterError("the grid needs at least one block size K and one moved-blocks value P")
    for p in moved_blocks:
        if p < 2:
            raise ParameterError(f"moved_blocks: P must be at least 2 (one block cannot move alone), got {p}",
                                 param="moved_blocks")
    cells: list[tuple[str, dict[str, Any] | None]] = [("unprotected", None)] if include_unprotected else []
    for k in block_sizes:
        if k < 1:
            raise ParameterError(f"block_size: K must be a positive integer, got {k}", param="block_size")
        nblk = check_block_size(dim, k)
        for p in moved_blocks:
            if p > nblk:
                log.info("skipping K%d_P%d: %d-d templates have %d blocks of %d", k, p, dim, nblk, k)
                continue
            cells.append((f"K{k}_P{p}", {"block_size": int(k), "moved_blocks": int(p), "seed": int(protection_seed)}))
    return cells


def run_grid(
    embeddings: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    cfg: TrainConfig,
    block_sizes: list[int],
    moved_blocks: list[int],
    protection_seed: int = 0,
    max_train: int | None = None,
    include_unprotected: bool = True,
) -> dict[str, Any]:
    """Train + evaluate every (K, P) cell with P <= D/K; write the RSR table and heat-maps.

    The embeddings are read and the photos aligned once for every cell (in-memory entry points
    of :mod:`.runs`).

    Parameters
    ----------
    cfg : TrainConfig
        Training settings shared by all cells (size, epochs, seed, ...); the evaluation uses
        ``cfg.seed`` too.
    block_sizes, moved_blocks : list of int
        K and P values; every K must divide the template dimension; cells with P > D/K (more
        moved blocks than exist) are skipped.
    protection_seed : int
        Seed of the fixed permutation (a secret of the protected system: kept out of outputs).
    include_unprotected : bool
        Also train the unprotected baseline (row ``unprotected`` of the table).
    """
    from facepriv.attacks.reconstruction.data import load_paired

    cfg.validate()
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise InputFileError(outp, "exists and is not a folder; the grid's output must be a folder")
    es = read_embeddings(embeddings)
    cells = grid_cells(es.dim, block_sizes, moved_blocks, protection_seed, include_unprotected)
    for name, _ in cells:
        run_state(outp / "cells" / name)  # a damaged cell folder is reported before any work
    model = model_for(es, embeddings, None)
    data = load_paired(es, images, model.card.alignment, embeddings)
    prots = {name: system_protection(None if params is None else "pe_miu", params, es) for name, params in cells}
    decoders: dict[str, Trained] = {}

    def trained(name: str) -> Trained:
        if name not in decoders:
            run = outp / "cells" / name
            decoders[name] = train_decoder_on(data, prots[name], cfg, run, model, max_train=max_train,
                                              resume=run_state(run) == "checkpoint",
                                              extra={"embeddings": str(embeddings), "images": str(images)})
        return decoders[name]

    def evaluate(name: str, ev: Path, protection: Any) -> dict[str, Any]:
        t = trained(name)
        test = held_out(data, t.train_identities, embeddings)
        return evaluate_decoder_on(t.decoder, test, protection, model, gender=True, seed=cfg.seed, out_dir=ev,
                                   overwrite=True, head={"run": str(outp / "cells" / name), "train_config": t.public_config()})

    results: dict[str, Any] = {}
    for name, _ in cells:
        ev = outp / "cells" / name / "eval"
        if (ev / "summary.json").is_file():
            results[name] = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
            continue
        log.info("grid cell %s: training / evaluating", name)
        results[name] = evaluate(name, ev, prots[name])
    if "unprotected" in results:
        # the same unprotected decoder against each cell's templates: evaluation only, cheap
        base = outp / "cells" / "unprotected"
        for name, params in cells:
            if params is None:
                continue
            ev = base / f"naive_{name}"
            if (ev / "summary.json").is_file():
                results[f"naive_{name}"] = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
                continue
            log.info("grid cell naive_%s: unprotected decoder on %s templates", name, name)
            results[f"naive_{name}"] = evaluate("unprotected", ev, prots[name])
    return write_grid_report(outp, results, block_sizes, moved_blocks)


def write_grid_report(out: Path, results: dict[str, Any], block_sizes: list[int], moved_blocks: list[int]) -> dict[str, Any]:
    """RSR tables (JSON/CSV/Markdown) and one heat-map PNG per FMR from per-cell summaries."""
    table = {name: {"rsr": r["rsr"], "ssim": r["ssim"], "psnr": r["psnr"], "gender": r.get("gender_accuracy", {})} for name, r in results.items()}
    write_json_atomic(out / "grid.json", table)
    lines = ["cell,fmr,rsr,ssim,psnr"]
    md = ["| cell | RSR@0.1% | RSR@1% | RSR@10% | SSIM | PSNR (dB) | gender SVM | gender CC0 |", "|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        for f in FMRS:
            lines.append(f"{name},{f},{r['rsr'][fmr_key(f)]:.4f},{r['ssim']:.4f},{r['psnr']:.3f}")
        g = r["gender"]
        md.append(
            f"| {name} | " + " | ".join(f"{100 * r['rsr'][fmr_key(f)]:.1f}" for f in FMRS)
            + f" | {r['ssim']:.3f} | {r['psnr']:.2f} | {_fmt(g.get('svm'))} | {_fmt(g.get('classifier'))} |"
        )
    write_text_atomic(out / "rsr_table.csv", "\n".join(lines) + "\n")
    write_text_atomic(out / "rsr_table.md", "\n".join(md) + "\n")
    base = table.get("unprotected")
    for prefix, who in (("", "decoder trained on PE-MIU(K, P) templates"), ("naive_", "decoder trained on unprotected templates")):
        if not any(f"{prefix}K{k}_P{p}" in table for k in block_sizes for p in moved_blocks):
            continue
        for f in FMRS:
            grid = np.full((len(block_sizes), len(moved_blocks)), np.nan)
            for i, k in enumerate(block_sizes):
                for j, p in enumerate(moved_blocks):
                    cell = table.get(f"{prefix}K{k}_P{p}")
                    if cell is not None:
                        grid[i, j] = 100 * cell["rsr"][fmr_key(f)]
            title = f"RSR (%) at FMR {100 * f:g}%, {who}" + (f"\nunprotected {100 * base['rsr'][fmr_key(f)]:.1f}%" if base else "")
            rsr_heatmap(grid, [str(k) for k in block_sizes], [str(p) for p in moved_blocks],
                        out / f"rsr_heatmap_{prefix}fmr{f:g}.png", title)
    return table


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"
