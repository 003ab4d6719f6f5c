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

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.reconstruction.evaluate import FMRS, fmr_key
from facepriv.attacks.reconstruction.runs import evaluate_run, train_run
from facepriv.attacks.reconstruction.trainer import CHECKPOINT, TrainConfig, load_state
from facepriv.attacks.reconstruction.viz import rsr_heatmap
from facepriv.errors import ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def _cell_done(run: Path, epochs: int) -> bool:
    if not (run / CHECKPOINT).is_file():
        return False
    return int(load_state(run / CHECKPOINT).get("epoch", 0)) >= epochs


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

    Parameters
    ----------
    cfg : TrainConfig
        Training settings shared by all cells (size, epochs, seed, ...).
    block_sizes, moved_blocks : list of int
        K and P values; cells with P > D/K (more moved blocks than exist) are skipped.
    protection_seed : int
        Seed of the fixed permutation (a secret of the protected system: kept out of outputs).
    include_unprotected : bool
        Also train the unprotected baseline (row ``unprotected`` of the table).
    """
    if not block_sizes or not moved_blocks:
        raise ParameterError("the grid needs at least one block size K and one moved-blocks value P")
    outp = Path(out)
    cells: list[tuple[str, dict[str, Any] | None]] = []
    if include_unprotected:
        cells.append(("unprotected", None))
    for k in block_sizes:
        for p in moved_blocks:
            cells.append((f"K{k}_P{p}", {"block_size": int(k), "moved_blocks": int(p), "seed": int(protection_seed)}))
    results: dict[str, Any] = {}
    for name, params in cells:
        run = outp / "cells" / name
        ev = run / "eval"
        if params is not None:
            from facepriv.embeddings import load_embeddings

            dim = load_embeddings(embeddings).dim
            if dim % params["block_size"] or params["moved_blocks"] > dim // params["block_size"]:
                log.info("skipping %s: %d-d embeddings have %s blocks", name, dim, dim / params["block_size"])
                continue
        if (ev / "summary.json").is_file():
            results[name] = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
            continue
        c = copy.deepcopy(cfg)
        if not _cell_done(run, c.epochs):
            log.info("grid cell %s: training", name)
            train_run(
                embeddings, images, run, c, None if params is None else "pe_miu", params,
                resume=(run / CHECKPOINT).is_file(), max_train=max_train,
            )
        log.info("grid cell %s: evaluating", name)
        results[name] = evaluate_run(run, embeddings, images, ev, (), params, overwrite=True, gender=True)
    if "unprotected" in results:
        # the same unprotected decoder against each cell's templates: evaluation only, cheap
        base = outp / "cells" / "unprotected"
        for name, params in cells:
            if params is None or name not in results:
                continue
            ev = base / f"naive_{name}"
            if (ev / "summary.json").is_file():
                results[f"naive_{name}"] = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
                continue
            log.info("grid cell naive_%s: unprotected decoder on %s templates", name, name)
            results[f"naive_{name}"] = evaluate_run(base, embeddings, images, ev, (), params, overwrite=True,
                                                    gender=True, protection="pe_miu")
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
