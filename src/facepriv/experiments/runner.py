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
exists, so a killed run loses at most the cell in flight. The cells themselves are computed by
:func:`run_cell` from a :class:`CellTask`, in this process (serial, the default) or on Dask
workers (``scheduler``, :mod:`facepriv.experiments.dask_runner`); either way this process alone
writes the run folder's files. A folder holding a finished run
(``metrics.json``) or a different experiment is never touched without ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.base import AttackData
from facepriv.errors import FacePrivError, OutputExistsError
from facepriv.experiments.cells import CellOutcome, CellTask, Sealed, SerialCells
from facepriv.experiments.config import ComponentSpec, ExperimentConfig, dump_yaml, slug
from facepriv.fileio import LOCK_FILE, FolderLock, atomic_path, write_json_atomic, write_text_atomic
from facepriv.splits import identity_groups

log = logging.getLogger(__name__)

RUN_FILES = ("config.resolved.yaml", "env.json", "metrics.json", "timings.json", "report.md", "report.html")
RUN_DIRS = ("cells", "cache", "report_files", "private")
LOCK = LOCK_FILE


def cell_seed(master: int, *parts: str) -> int:
    """A stable per-cell seed derived from the master seed and the cell's labels."""
    h = hashlib.sha256(("\x1f".join([str(master), *parts])).encode()).digest()
    return int.from_bytes(h[:4], "little")


def public_params(spec: ComponentSpec) -> dict[str, Any]:
    """Parameters safe to write (secret parameters masked)."""
    from facepriv.registry import get_class

    secrets = getattr(get_class(spec.kind, spec.name), "secret_params", ())
    return {k: ("<secret>" if k in secrets and v is not None else v) for k, v in spec.params.items()}


def resolved_yaml(cfg: ExperimentConfig) -> str:
    """Text of ``config.resolved.yaml``."""
    d = cfg.as_dict()
    for key, specs in (("models", cfg.models), ("protections", cfg.protections), ("attacks", cfg.attacks)):
        d[key] = [{**s.as_dict(), "params": public_params(s)} for s in specs]
    d["dataset"] = {**cfg.dataset.as_dict(), "params": public_params(cfg.dataset)}
    return "# written by facepriv run: the config as validated, every default filled in\n" + dump_yaml(d)


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder that is not a facepriv run."""
    if out.exists() and not out.is_dir():
        raise FacePrivError(f"{out}: exists and is not a folder; --out must name a run folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.resolved.yaml").is_file() \
            and not (out / LOCK).exists():
        raise FacePrivError(
            f"{out}: is not empty and holds no facepriv run (no config.resolved.yaml); "
            "choose a new or empty folder (nothing was changed)"
        )


def prepare_folder(out: Path, cfg_text: str, overwrite: bool) -> None:
    """Refuse a finished or different run unless ``overwrite``; clear our files when overwriting.

    Only a facepriv run folder is ever cleared (see :func:`check_out_folder`), and only the
    files and folders a run writes.
    """
    check_out_folder(out)
    resolved = out / "config.resolved.yaml"
    if resolved.is_file() and overwrite:
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
    g = identity_groups(identity, (fraction, 1.0 - fraction), seed, strata=gender)
    return np.flatnonzero(g == 0), np.flatnonzero(g == 1)


def _pe_miu_comparator_info() -> dict[str, str]:
    """Which PE-MIU comparator path this process runs (scores are the same on every path; the speed
    is not): ``compiled C`` with its build and kernel, ``numba`` or ``numpy``. On a Dask cluster the
    workers pick their own path (the same on this machine's ``local:N`` workers)."""
    from facepriv.protections import pe_native

    path = pe_native.active_path()
    return {"path": path, "build": pe_native.build_info() if path == "compiled C" else ""}


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


class Runner:
    """Executes a resolved :class:`ExperimentConfig` into a run folder.

    ``scheduler`` (None, ``local:N``, ``tcp://HOST:PORT``; default: the config's) says where the
    cells run; the driver (this object) embeds, holds the folder lock and writes every file.
    """

    def __init__(self, cfg: ExperimentConfig, out: str | Path, overwrite: bool = False,
                 device: str | None = None, scheduler: str | None = None) -> None:
        from facepriv.device import resolve_device
        from facepriv.experiments.scheduler import check_scheduler_spec

        self.cfg = cfg
        self.scheduler = check_scheduler_spec(scheduler if scheduler is not None else cfg.scheduler)
        self.out = Path(out)
        self.overwrite = overwrite
        # resolved before any work: CUDA asked for but absent is an error before anything is written
        self.device = resolve_device(device if device is not None else cfg.device)
        self.timings: dict[str, float] = {}
        self.ran: list[str] = []  # cells computed by this call (the others were resumed)
        self.failed: list[str] = []  # cells that ended with an error (recorded, not raised)
        self.keys: dict[str, dict[str, Any]] = {}
        self._cells: Any = None  # SerialCells or DaskCells while run() runs

    # ------------------------------------------------------------------ helpers
    def _cell_path(self, model: str, prot: str, cell: str) -> Path:
        return self.out / "cells" / slug(model) / slug(prot) / f"{slug(cell)}.json"

    def _finish_cell(self, path: Path, result: dict[str, Any], seconds: float, key: str) -> None:
        write_json_atomic(path, result)
        self.timings[key] = round(seconds, 3)
        self.ran.append(key)

    def record(self, task: CellTask, outcome: CellOutcome, sink: dict[str, Any], slot: str,
               cell_path: Path) -> None:
        """Write a finished cell (driver only): its scores, then its JSON, which marks it done."""
        if outcome.failed is not None:
            log.warning("cell %s failed: %s", task.key, outcome.failed)
            self.failed.append(f"{task.key}: {outcome.failed}")
            sink[slot] = {"status": "failed", "message": outcome.failed}
            return
        assert outcome.result is not None
        if outcome.scores is not None:
            task.work_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(task.work_dir / "scores.npz", suffix=".npz") as tmp:
                np.savez(tmp, genuine=outcome.scores["genuine"], impostor=outcome.scores["impostor"])
        self._finish_cell(cell_path, outcome.result, outcome.seconds, task.key)
        sink[slot] = outcome.result

    def _executor(self) -> Any:
        """Where the cells run: this process, or a Dask cluster (dask imported only then)."""
        if self.scheduler is None:
            return SerialCells()
        from facepriv.experiments.dask_runner import DaskCells

        return DaskCells(self.scheduler)

    def _protection(self, pspec: ComponentSpec):
        """A fresh protection of this row, with its key (from the config or the key store)."""
        from facepriv.registry import create

        return create("protection", pspec.name, {**pspec.params, **self.keys.get(pspec.label, {})})

    def _check_compatible(self, dims: list[tuple[str, int]]) -> None:
        """Every protection accepts every model's template dimension (checked before any work)."""
        from facepriv.experiments.config import _err

        for i, pspec in enumerate(self.cfg.protections):
            prot = self._protection(pspec)
            for mlabel, dim in dims:
                try:
                    prot.check_input_dim(dim)
                except FacePrivError as exc:
                    raise _err(self.cfg.source, f"protections[{i}] ({pspec.label})",
                               f"{exc} (templates of {mlabel} have {dim} dimensions)") from None

    # ------------------------------------------------------------------ main
    def run(self) -> dict[str, Any]:
        """Run every cell not yet finished and write ``metrics.json``; returns its content."""
        from facepriv.experiments.sources import load_listing
        from facepriv.registry import create

        cfg = self.cfg
        check_out_folder(self.out)
        # connected first, before the lock and before anything is written: a scheduler that does
        # not answer ends the run at once, with nothing in --out
        self._cells = self._executor()
        try:
            listing = load_listing(cfg.dataset.name, cfg.dataset.params, cfg.subset, cfg.seed)
            log.info("dataset: %d images of %d identities", len(listing), len(set(listing.identity)))
            has_images = listing.embeddings is None
            models: list[tuple[str, Any]] = []
            for m in cfg.models if has_images else ():
                models.append((m.label, create("model", m.name, m.params)))
            dims = ([(label, int(mod.card.embedding_dim)) for label, mod in models] if has_images
                    else [(listing.embeddings.model or "embeddings", listing.embeddings.dim)])  # type: ignore[union-attr]
            self._check_compatible(dims)
            return self._run_locked(listing, models, dims, has_images)
        finally:
            self._cells.close()

    def _run_locked(self, listing, models: list[tuple[str, Any]], dims: list[tuple[str, int]],
                    has_images: bool) -> dict[str, Any]:
        from facepriv.experiments.envinfo import collect
        from facepriv.experiments.keys import run_keys
        from facepriv.experiments.sources import embed_listing

        cfg = self.cfg
        with FolderLock(self.out, "facepriv run"):
            prepare_folder(self.out, resolved_yaml(cfg), self.overwrite)
            self.keys = run_keys(self.out, cfg)
            tpath = self.out / "timings.json"
            self.timings = (_read_json(tpath) or {}) if tpath.is_file() else {}
            env = collect(cfg.seed, listing.sha256(), listing.counts(), models,
                          str(listing.root) if listing.root else cfg.dataset.params.get("path"))
            env["device"] = self.device  # where this call's torch work ran (a resumed run may differ)
            if any(p.name == "pe_miu" for p in cfg.protections):
                env["pe_miu_comparator"] = _pe_miu_comparator_info()
            write_json_atomic(self.out / "env.json", env)
            cache = self.out / "cache"
            cache.mkdir(parents=True, exist_ok=True)
            metrics: dict[str, Any] = {
                "experiment": cfg.name,
                "seed": cfg.seed,
                "dataset": {"name": cfg.dataset.name, "listing_sha256": listing.sha256(), **listing.counts()},
                "models": {},
            }
            model_items = models if has_images else [(dims[0][0], None)]
            specs = {m.label: m for m in cfg.models}
            for mlabel, model in model_items:
                if model is not None:
                    clean, failures = embed_listing(listing, model, cache, self.device)
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
                log.info("model %s: %d templates (%d photos without a face); cells follow", mlabel, len(clean),
                         len(failures))
                shared = self._cells.share(clean, att, vic, model)
                for pspec in cfg.protections:
                    mentry["protections"][pspec.label] = self._run_protection(
                        mlabel, model, clean, att, vic, pspec, listing.root, shared,
                        specs.get(mlabel) if model is not None else None)
                metrics["models"][mlabel] = mentry
            try:
                self._cells.drain(self)  # Dask: waits for the cells in flight (written as they finish)
            finally:
                write_json_atomic(tpath, self.timings)
            write_json_atomic(self.out / "metrics.json", metrics)
        return metrics

    def _data(self, mlabel: str, model: Any, clean, att, vic, pspec: ComponentSpec, cell: str,
              image_root: Path | None) -> AttackData:
        return AttackData(
            clean=clean, attacker=att, victim=vic, protection=self._protection(pspec), model=model,
            image_root=image_root, seed=cell_seed(self.cfg.seed, mlabel, pspec.label, cell),
            work_dir=self._cell_path(mlabel, pspec.label, cell).with_suffix(""), device=self.device,
        )

    def _task(self, mlabel: str, pspec: ComponentSpec, cell: str, aspec: ComponentSpec | None,
              image_root: Path | None, mspec: ComponentSpec | None) -> CellTask:
        return CellTask(
            key=f"{mlabel}/{pspec.label}/{cell}", protection=pspec.name,
            params=Sealed({**pspec.params, **self.keys.get(pspec.label, {})}), attack=aspec,
            metrics=tuple(self.cfg.metrics), seed=cell_seed(self.cfg.seed, mlabel, pspec.label, cell),
            work_dir=self._cell_path(mlabel, pspec.label, cell).with_suffix(""), image_root=image_root,
            device=self.device, model=mspec,
        )

    def _run_protection(self, mlabel: str, model: Any, clean, att, vic, pspec: ComponentSpec,
                        image_root: Path | None, shared: Any = None,
                        mspec: ComponentSpec | None = None) -> dict[str, Any]:
        """The protection's row: finished cells read back, the others submitted to the executor.

        The row's dicts are filled in config order; a cell still running on a cluster holds a
        placeholder until :meth:`SerialCells.drain` / ``DaskCells.drain`` records it.
        """
        from facepriv.registry import get_class

        cfg = self.cfg
        cells = self._cells or SerialCells()
        if shared is None:
            shared = cells.share(clean, att, vic, model)
        entry: dict[str, Any] = {"name": pspec.name, "params": public_params(pspec), "utility": None, "attacks": {}}
        protection_kind = getattr(get_class("protection", pspec.name), "kind", "template")

        # utility (verification on protected templates); an image protection has no templates
        upath = self._cell_path(mlabel, pspec.label, "utility")
        done = _read_json(upath) if upath.is_file() else None
        if done is None and protection_kind == "image":
            done = {"status": "not_applicable", "message": "an image protection leaves the templates as they are"}
        elif done is None and protection_kind == "feature":
            done = {"status": "not_applicable",
                    "message": "a feature protection acts on feature maps, not templates (see attack advface_table1)"}
        entry["utility"] = done
        if done is None:
            cells.submit(self, self._task(mlabel, pspec, "utility", None, image_root, mspec), shared,
                         entry, "utility", upath)

        for aspec in cfg.attacks:
            apath = self._cell_path(mlabel, pspec.label, aspec.label)
            prev = _read_json(apath) if apath.is_file() else None
            if prev is not None:
                entry["attacks"][aspec.label] = prev
                continue
            na = get_class("attack", aspec.name).not_applicable(self._protection(pspec), image_root is not None)
            if na:
                entry["attacks"][aspec.label] = {"status": "not_applicable", "message": na}
                continue
            entry["attacks"][aspec.label] = None  # placeholder: keeps the config's order
            cells.submit(self, self._task(mlabel, pspec, aspec.label, aspec, image_root, mspec), shared,
                         entry["attacks"], aspec.label, apath)
        write_json_atomic(self.out / "timings.json", self.timings)
        return entry


def run_experiment(cfg: ExperimentConfig, out: str | Path, overwrite: bool = False, report: bool = True,
                   device: str | None = None, scheduler: str | None = None) -> Path:
    """Run ``cfg`` into ``out`` (resuming unfinished runs), then write the report.

    ``device`` (``auto``/``cpu``/``cuda``/``cuda:N``) overrides the config's ``device``;
    ``scheduler`` (``serial``, ``local:N``, ``tcp://HOST:PORT``) its ``scheduler``.

    Returns
    -------
    Path
        The run folder.
    """
    return execute(cfg, out, overwrite, report, device=device, scheduler=scheduler).out


def execute(cfg: ExperimentConfig, out: str | Path, overwrite: bool = False, report: bool = True,
            device: str | None = None, scheduler: str | None = None) -> Runner:
    """:func:`run_experiment`, returning the :class:`Runner` (``runner.failed`` lists failed cells)."""
    runner = Runner(cfg, out, overwrite, device=device, scheduler=scheduler)
    log.info("device: %s", runner.device)
    runner.run()
    if report:
        from facepriv.experiments.report import write_report

        with FolderLock(runner.out, "facepriv run"):
            write_report(runner.out)
    return runner
