"""Run an experiment: every protection x every applicable attack, resumable, atomic, deterministic.

Layout of a run folder::

    config.resolved.yaml   the validated config with every default filled in (secrets masked)
    env.json               package versions, git commit, seeds, sha256 of model files and listing
    metrics.json           all numbers (no timings: same config + seed => identical file)
    timings.json           seconds per cell (kept apart from metrics.json)
    cells/<model>/<protection>/<cell>.json (+ files)   one finished cell each
    cache/                 embeddings per (listing, model, alignment), shared state of attacks
    report.md, report.html

A cell's JSON is written atomically when the cell finishes, and a run skips every cell whose JSON
exists, so a killed run loses at most the cell in flight. A folder holding a finished run
(``metrics.json``) or a different experiment is never touched without ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.errors import FacePrivError, OutputExistsError
from facepriv.experiments import cells
from facepriv.experiments.config import ComponentSpec, ExperimentConfig, dump_yaml, slug
from facepriv.fileio import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

RUN_FILES = ("config.resolved.yaml", "env.json", "metrics.json", "timings.json", "report.md", "report.html")
RUN_DIRS = ("cells", "cache", "report_files")


def cell_seed(master: int, *parts: str) -> int:
    """A stable per-cell seed derived from the master seed and the cell's labels."""
    h = hashlib.sha256(("\x1f".join([str(master), *parts])).encode()).digest()
    return int.from_bytes(h[:4], "little")


def public_params(spec: ComponentSpec) -> dict[str, Any]:
    """Parameters safe to write (secret parameters masked)."""
    from facepriv.registry import available

    cls = available(spec.kind).get(spec.name) if spec.kind != "attack" or spec.name in available("attack") else None
    secrets = getattr(cls, "secret_params", ()) if cls is not None else ()
    return {k: ("<secret>" if k in secrets and v is not None else v) for k, v in spec.params.items()}


def resolved_yaml(cfg: ExperimentConfig) -> str:
    """Text of ``config.resolved.yaml``."""
    d = cfg.as_dict()
    for key, specs in (("models", cfg.models), ("protections", cfg.protections), ("attacks", cfg.attacks)):
        d[key] = [{**s.as_dict(), "params": public_params(s)} for s in specs]
    d["dataset"] = {**cfg.dataset.as_dict(), "params": public_params(cfg.dataset)}
    return "# written by facepriv run: the config as validated, every default filled in\n" + dump_yaml(d)


def prepare_folder(out: Path, cfg_text: str, overwrite: bool) -> None:
    """Refuse a finished or different run unless ``overwrite``; clear our files when overwriting."""
    resolved = out / "config.resolved.yaml"
    if out.exists() and overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    elif (out / "metrics.json").exists():
        raise OutputExistsError(out / "metrics.json")
    elif resolved.is_file() and resolved.read_text(encoding="utf-8") != cfg_text:
        raise FacePrivError(
            f"{out}: holds an unfinished run of a different config (config.resolved.yaml differs); "
            "pass --overwrite to replace it or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(resolved, cfg_text)


def split_identities(identity: np.ndarray, gender: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity-disjoint attacker / victim row indices, stratified by gender when known."""
    rng = np.random.default_rng(seed)
    ids = np.unique(identity)
    by_gender: dict[str, list[str]] = {}
    for i in ids:
        g = ""
        if gender is not None:
            vals = gender[identity == i]
            vals = vals[vals != ""]
            g = str(vals[0]) if vals.size else ""
        by_gender.setdefault(g, []).append(str(i))
    attacker: set[str] = set()
    for g in sorted(by_gender):
        group = sorted(by_gender[g])
        perm = rng.permutation(len(group))
        k = int(round(fraction * len(group)))
        if len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        attacker.update(group[j] for j in perm[:k])
    is_att = np.isin(identity, sorted(attacker))
    return np.flatnonzero(is_att), np.flatnonzero(~is_att)


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


class Runner:
    """Executes a resolved :class:`ExperimentConfig` into a run folder."""

    def __init__(self, cfg: ExperimentConfig, out: str | Path, overwrite: bool = False) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.overwrite = overwrite
        self.timings: dict[str, float] = {}
        self.ran: list[str] = []  # cells computed by this call (the others were resumed)

    # ------------------------------------------------------------------ helpers
    def _cell_path(self, model: str, prot: str, cell: str) -> Path:
        return self.out / "cells" / slug(model) / slug(prot) / f"{slug(cell)}.json"

    def _finish_cell(self, path: Path, result: dict[str, Any], seconds: float, key: str) -> None:
        write_json_atomic(path, result)
        self.timings[key] = round(seconds, 3)
        self.ran.append(key)

    # ------------------------------------------------------------------ main
    def run(self) -> dict[str, Any]:
        """Run every cell not yet finished and write ``metrics.json``; returns its content."""
        from facepriv.experiments.envinfo import collect
        from facepriv.experiments.sources import embed_listing, load_listing
        from facepriv.registry import create

        cfg = self.cfg
        prepare_folder(self.out, resolved_yaml(cfg), self.overwrite)
        tpath = self.out / "timings.json"
        self.timings = (_read_json(tpath) or {}) if tpath.is_file() else {}
        listing = load_listing(cfg.dataset.name, cfg.dataset.params, cfg.subset, cfg.seed)
        log.info("dataset: %d images of %d identities", len(listing), len(set(listing.identity)))
        has_images = listing.embeddings is None
        models: list[tuple[str, Any]] = []
        for m in cfg.models if has_images else ():
            models.append((m.label, create("model", m.name, m.params)))
        env = collect(cfg.seed, listing.sha256(), listing.counts(), models,
                      str(listing.root) if listing.root else cfg.dataset.params.get("path"))
        write_json_atomic(self.out / "env.json", env)
        cache = self.out / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        metrics: dict[str, Any] = {
            "experiment": cfg.name,
            "seed": cfg.seed,
            "dataset": {"name": cfg.dataset.name, "listing_sha256": listing.sha256(), **listing.counts()},
            "models": {},
        }
        model_items = models if has_images else [(listing.embeddings.model or "embeddings", None)]  # type: ignore[union-attr]
        for mlabel, model in model_items:
            if model is not None:
                clean, failures = embed_listing(listing, model, cache)
            else:
                clean, failures = listing.embeddings, []  # type: ignore[assignment]
            att, vic = split_identities(clean.identity, clean.gender, cfg.attacker_fraction, cell_seed(cfg.seed, "split"))
            mentry: dict[str, Any] = {
                "embedded": len(clean), "no_face": len(failures), "dim": clean.dim,
                "split": {"attacker_images": int(att.size), "victim_images": int(vic.size),
                          "attacker_identities": int(np.unique(clean.identity[att]).size),
                          "victim_identities": int(np.unique(clean.identity[vic]).size)},
                "protections": {},
            }
            for pspec in cfg.protections:
                mentry["protections"][pspec.label] = self._run_protection(
                    mlabel, model, clean, att, vic, pspec, listing.root, cache)
            metrics["models"][mlabel] = mentry
        write_json_atomic(tpath, self.timings)
        write_json_atomic(self.out / "metrics.json", metrics)
        return metrics

    def _run_protection(self, mlabel: str, model: Any, clean, att, vic, pspec: ComponentSpec,
                        image_root: Path | None, cache: Path) -> dict[str, Any]:
        cfg = self.cfg
        entry: dict[str, Any] = {"name": pspec.name, "params": public_params(pspec), "utility": None, "attacks": {}}
        why = cells.unavailable_reason("protection", pspec.name)
        if why:
            log.warning("%s", why)
            entry["utility"] = {"status": "unavailable", "message": why}
            for aspec in cfg.attacks:
                entry["attacks"][aspec.label] = {"status": "unavailable", "message": why}
            return entry

        def ctx_for(cell: str, attack_params: dict[str, Any]) -> cells.CellContext:
            d = self._cell_path(mlabel, pspec.label, cell)
            return cells.CellContext(
                seed=cell_seed(cfg.seed, mlabel, pspec.label, cell), model_name=mlabel, model=model, clean=clean,
                attacker=att, victim=vic, protection_name=pspec.name, protection_params=dict(pspec.params),
                attack_params=attack_params, out_dir=d.with_suffix(""), image_root=image_root, cache_dir=cache,
            )

        # utility (verification on protected templates)
        upath = self._cell_path(mlabel, pspec.label, "utility")
        done = _read_json(upath) if upath.is_file() else None
        if done is None:
            from facepriv.experiments.adapters import utility_cell

            t0 = time.perf_counter()
            ctx = ctx_for("utility", {})
            log.info("cell %s / %s / utility", mlabel, pspec.label)
            res, scores = utility_cell(ctx, cfg.metrics)
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(ctx.out_dir / "scores.npz", suffix=".npz") as tmp:
                np.savez(tmp, genuine=scores["genuine"], impostor=scores["impostor"])
            done = res.to_dict()
            self._finish_cell(upath, done, time.perf_counter() - t0, f"{mlabel}/{pspec.label}/utility")
        entry["utility"] = done

        adapters = cells.attacks()
        for aspec in cfg.attacks:
            key = f"{mlabel}/{pspec.label}/{aspec.label}"
            apath = self._cell_path(mlabel, pspec.label, aspec.label)
            prev = _read_json(apath) if apath.is_file() else None
            if prev is not None:
                entry["attacks"][aspec.label] = prev
                continue
            ad = adapters.get(aspec.name)
            if ad is None:
                entry["attacks"][aspec.label] = {"status": "unavailable",
                                                 "message": f"attack {aspec.name} has no experiment adapter in this build"}
                continue
            na = ad.applicable(pspec.name, image_root is not None)
            if na:
                entry["attacks"][aspec.label] = {"status": "not_applicable", "message": na}
                continue
            t0 = time.perf_counter()
            log.info("cell %s", key)
            ctx = ctx_for(aspec.label, dict(aspec.params))
            try:
                res = cells.run_cell(ad, ctx)
            except FacePrivError as exc:  # e.g. too few identities for this attack: record, go on
                log.warning("cell %s failed: %s", key, exc)
                entry["attacks"][aspec.label] = {"status": "failed", "message": str(exc)}
                continue
            if res.status == "unavailable":
                log.warning("%s", res.message)
                entry["attacks"][aspec.label] = res.to_dict()
                continue
            self._finish_cell(apath, res.to_dict(), time.perf_counter() - t0, key)
            entry["attacks"][aspec.label] = res.to_dict()
        write_json_atomic(self.out / "timings.json", self.timings)
        return entry


def run_experiment(cfg: ExperimentConfig, out: str | Path, overwrite: bool = False, report: bool = True) -> Path:
    """Run ``cfg`` into ``out`` (resuming unfinished runs), then write the report.

    Returns
    -------
    Path
        The run folder.
    """
    runner = Runner(cfg, out, overwrite)
    runner.run()
    if report:
        from facepriv.experiments.report import write_report

        write_report(runner.out)
    return runner.out
