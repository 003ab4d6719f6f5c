"""The AdvFace experiment: Table 1, the eps sweep (Fig. 4), the shadow x attacker transfer matrix
(Table 4) and reconstruction grids (Fig. 5).

:func:`run_experiment` works in memory: client features, a function giving the aligned crops of
any subset of them, and trained shadow / attacker decoders. The ``advface_table1`` attack calls it
on a cell's data; ``facepriv advface eval`` calls :func:`evaluate_runs`, which loads a feature file
and decoder run folders and then calls the same function. The photos are aligned with the
recognition model's own recipe (its card's ``alignment``), so any splittable model works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facepriv.advface.data import AlignedFaces, faces_for, identity_roles
from facepriv.advface.evaluate import SRRA_FMR, EvalContext, MethodResult, finetune_server
from facepriv.advface.features import FeatureSet
from facepriv.advface.plots import plot_reconstruction_grid, plot_tradeoff
from facepriv.advface.protect import AdvFace, LaplaceDP, RandomNoise
from facepriv.advface.report import summary_markdown
from facepriv.advface.split import SplitSystem
from facepriv.errors import ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic
from facepriv.progress import progress

log = logging.getLogger(__name__)

PARTS = ("table", "sweep", "transfer")
#: files an evaluation writes into its output folder
OUTPUT_FILES = ("summary.json", "summary.md", "reconstructions.png", "tradeoff_psnr_accuracy.png")
#: server photos AdvFace protects for the offline fine-tuning (PGD costs ~0.15 s per feature on a CPU)
OFFLINE_MAX_IMAGES = 2000


def eval_subset(features: FeatureSet, split_seed: int, max_eval: int | None, seed: int,
                per_identity: int = 4) -> FeatureSet:
    """Evaluation images: at most ``per_identity`` random images of as many eval identities as fit.

    Spreading ``max_eval`` over many people (rather than taking whole identities of ~20 CelebA
    photos) gives the 10-fold verification protocol enough identities per fold.
    """
    roles = identity_roles(features.identity, split_seed)
    ev = features.subset(roles == "eval")
    if max_eval and len(ev) > max_eval:
        rng = np.random.default_rng(seed)
        keep: list[int] = []
        for ident in rng.permutation(np.unique(ev.identity)):
            idx = np.flatnonzero(ev.identity == ident)
            idx = rng.permutation(idx)[:per_identity]
            if len(idx) < 2 or len(keep) + len(idx) > max_eval:
                continue  # genuine pairs need two images of a person
            keep.extend(idx.tolist())
        ev = ev.subset(np.sort(np.array(keep, dtype=np.int64)))
    n_ids = len(np.unique(ev.identity))
    if n_ids < 2:
        raise ParameterError(f"max_eval: the evaluation set holds {len(ev)} image(s) of {n_ids} identity; the "
                             "verification protocol needs at least 2 identities with 2 images each", param="max_eval")
    return ev


def run_experiment(
    features: FeatureSet,
    faces_of: Callable[[FeatureSet], AlignedFaces],
    system: SplitSystem,
    shadows: dict[str, nn.Module],
    attackers: dict[str, nn.Module],
    *,
    split_seed: int,
    main_arch: str,
    eps: float,
    alpha: float,
    steps: int,
    bound: str,
    sweep: Sequence[float],
    max_eval: int | None,
    offline_epochs: int,
    seed: int,
    parts: Sequence[str] = PARTS,
    out_dir: str | Path | None = None,
    runs: dict[str, dict[str, str]] | None = None,
    extras: Callable[[EvalContext, Callable[[str, float], np.ndarray]], dict] | None = None,
) -> dict:
    """Run every evaluation in memory; returns the summary (also written into ``out_dir`` with plots).

    Parameters
    ----------
    features : FeatureSet
        Clean client features of every sample (all roles); the eval identities are taken from it.
    faces_of : callable
        Aligned crops of a subset of ``features`` (same order).
    system : SplitSystem
    shadows, attackers : dict of architecture -> decoder
        Trained shadow (server) and attacker decoders; ``main_arch`` must be in both.
    split_seed : int
        Seed of the identity roles the decoders were trained with.
    main_arch, eps, alpha, steps, bound, sweep, max_eval, offline_epochs, seed
        As the ``advface_table1`` attack's parameters of those names (``main_arch`` = its ``arch``).
    parts : sequence of str
        Subset of ``table``, ``sweep``, ``transfer``.
    out_dir : path, optional
        Where ``summary.json``, ``summary.md`` and the plots go; None writes nothing.
    runs : dict, optional
        ``{"shadows": {arch: folder}, "attackers": {...}}`` recorded in the summary's settings.
    extras : callable(ctx, protected) -> dict, optional
        Further studies on the same evaluation set (the ``advface_adaptive`` attack's): called with
        the evaluation context and ``protected(method, eps)``, the server's stored features of the
        eval photos for a method (``unprotected``, ``random``, ``dp``, ``advface`` with the main
        shadow; computed once and shared with the other parts); its dict is merged into the summary.
    """
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise ParameterError(f"parts: must be a non-empty subset of {', '.join(PARTS)}, got {', '.join(parts) or 'none'}",
                             param="parts")
    if main_arch not in shadows or main_arch not in attackers:
        raise ParameterError(f"main architecture {main_arch!r} needs both a shadow and an attacker decoder", param="main_arch")
    ev = eval_subset(features, split_seed, max_eval, seed)
    faces = faces_of(ev)
    ctx = EvalContext.build(system, faces, ev, seed)
    log.info("eval set: %d images of %d identities; SRRA threshold %.4f", len(ev), len(np.unique(ev.identity)), ctx.srra_threshold)

    cache: dict[tuple[str, float], np.ndarray] = {}

    def advface(arch: str, e: float) -> np.ndarray:
        # each (shadow, eps) is protected once and shared by the table, sweep and transfer parts
        if (arch, e) not in cache:
            prot = AdvFace(eps=e, alpha=alpha, steps=steps, bound=bound, seed=seed).use_shadow(shadows[arch], system)
            cache[(arch, e)] = prot.transform(ev.features)
        return cache[(arch, e)]

    table: list[dict] = []
    recon_by_method: dict[str, torch.Tensor] = {}
    methods = {
        "unprotected": lambda: ev.features,
        "random": lambda: RandomNoise(eps=eps, alpha=alpha, steps=steps, bound=bound, seed=seed).transform(ev.features),
        "dp": lambda: LaplaceDP(eps=eps, budget=1.0, seed=seed).transform(ev.features),
        "advface": lambda: advface(main_arch, eps),
    }
    protected_main: dict[str, np.ndarray] = {}
    att = attackers[main_arch]
    for name, make in progress(methods.items() if "table" in parts else (), desc="Table 1 methods"):
        z = make()
        protected_main[name] = z
        res, recon = ctx.evaluate(name, eps if name != "unprotected" else 0.0, main_arch, att, z)
        table.append(res.to_dict())
        recon_by_method[name] = recon[:8]
    if offline_epochs > 0 and "table" in parts:
        table.append(_offline_row(system, features, shadows[main_arch], split_seed, ctx, att, protected_main["advface"],
                                  eps, alpha, steps, bound, offline_epochs, seed, main_arch))

    sweep_rows: list[dict] = []
    for e in progress(sweep if "sweep" in parts else (), desc="eps sweep"):
        res, _ = ctx.evaluate("advface", e, main_arch, att, advface(main_arch, e))
        sweep_rows.append(res.to_dict())

    transfer: dict[str, dict[str, dict[str, float]]] = {}
    for s_arch in progress(shadows if "transfer" in parts else {}, desc="transfer (shadow)"):
        z = advface(s_arch, eps)
        transfer[s_arch] = {}
        for a_arch, net in attackers.items():
            r: MethodResult
            r, _ = ctx.evaluate("advface", eps, a_arch, net, z)
            transfer[s_arch][a_arch] = {"ssim": r.ssim, "psnr": r.psnr, "mse": r.mse, "srra": r.srra}

    def protected(method: str, e: float) -> np.ndarray:
        return _server_protected(method, e, ev.features, lambda x: advface(main_arch, x), alpha, steps, bound, seed)

    more = extras(ctx, protected) if extras else {}

    in_memory = {a: "(in memory)" for a in shadows}
    runs = runs or {}
    summary = {
        "model": features.model, "cut": features.cut, "feature_shape": list(features.features.shape[1:]),
        "eval_images": len(ev), "eval_identities": int(len(np.unique(ev.identity))),
        "srra_fmr": SRRA_FMR, "srra_threshold": ctx.srra_threshold,
        "accuracy_protocol": {**ctx.protocol.counts(), "rule": "enrolled=Psi(stored feature), probe=Psi(E(image)); "
                              f"{ctx.protocol.counts()['folds']}-fold, threshold on the other folds"},
        "settings": {"eps": eps, "alpha": alpha, "steps": steps, "bound": bound, "main_arch": main_arch,
                     "shadows": runs.get("shadows", in_memory),
                     "attackers": runs.get("attackers", {a: "(in memory)" for a in attackers}),
                     "split_seed": split_seed, "parts": list(parts)},
        "table": table, "sweep": sweep_rows, "transfer": transfer, **more,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        originals = torch.from_numpy(faces.crops[:8]).permute(0, 3, 1, 2).float() / 255.0
        if recon_by_method:
            plot_reconstruction_grid(originals, recon_by_method, out / "reconstructions.png")
        if sweep_rows:
            plot_tradeoff(sweep_rows, out / "tradeoff_psnr_accuracy.png",
                          next((r for r in table if r["method"] == "unprotected"), None))
        write_json_atomic(out / "summary.json", summary)
        write_text_atomic(out / "summary.md", summary_markdown(summary))
    return summary


def _server_protected(method: str, e: float, clean: np.ndarray, advface: Callable[[str, float], np.ndarray] | None,
                      alpha: float, steps: int, bound: str, seed: int) -> np.ndarray:
    """The server's stored features of the eval photos under ``method`` at bound ``e`` (its own seeds)."""
    if method == "unprotected":
        return clean
    if method == "random":
        return RandomNoise(eps=e, alpha=alpha, steps=steps, bound=bound, seed=seed).transform(clean)
    if method == "dp":
        return LaplaceDP(eps=e, budget=1.0, seed=seed).transform(clean)
    if method == "advface" and advface is not None:
        return advface(e)
    raise ParameterError(f"unknown feature protection method {method!r}")


def _offline_row(system: SplitSystem, features: FeatureSet, shadow: nn.Module, split_seed: int, ctx: EvalContext,
                 attacker: nn.Module, protected_eval: np.ndarray, eps: float, alpha: float, steps: int, bound: str,
                 epochs: int, seed: int, arch: str) -> dict:
    """AdvFace offline mode: Psi fine-tuned on adversarial features of the server's shadow data."""
    roles = identity_roles(features.identity, split_seed)
    own = features.subset(roles == "shadow")
    # every photo of the server's own identities, capped for the CPU
    own = own.subset(np.sort(np.random.default_rng(seed).permutation(len(own))[: min(len(own), OFFLINE_MAX_IMAGES)]))
    prot = AdvFace(eps=eps, alpha=alpha, steps=steps, bound=bound, seed=seed).use_shadow(shadow, system)
    server = finetune_server(system, prot.transform(own.features), own.features, epochs=epochs, seed=seed)
    res, _ = ctx.evaluate("advface_offline", eps, arch, attacker, protected_eval, server=server)
    return res.to_dict()


def load_runs(features: FeatureSet, shadows: dict[str, str], attackers: dict[str, str]) -> int:
    """Check the decoder run folders against the features; returns their common ``split_seed``.

    Raises
    ------
    InputFileError
        A run folder without a valid config, or made from another model or cut.
    ParameterError
        The runs used different identity splits.
    """
    from facepriv.advface.train import load_config

    cfgs = {f"shadow {a} ({r})": load_config(r) for a, r in shadows.items()}
    cfgs |= {f"attacker {a} ({r})": load_config(r) for a, r in attackers.items()}
    for name, cfg in cfgs.items():
        features.check_compatible(cfg.model, cfg.cut, where=f"{name} run")
    seeds = {c.split_seed for c in cfgs.values()}
    if len(seeds) != 1:
        raise ParameterError(f"all decoder runs must use the same identity split, got split seeds {sorted(seeds)}")
    return seeds.pop()


def evaluate_runs(features: FeatureSet, images_root: str | Path, shadows: dict[str, str], attackers: dict[str, str],
                  out_dir: str | Path, device: str = "cpu", **params) -> dict:
    """:func:`run_experiment` on a feature file's features and trained decoder run folders.

    ``params`` are :func:`run_experiment`'s keyword parameters except ``split_seed`` (read from
    the runs). The crops of the evaluation photos are aligned from ``images_root`` with the
    model's alignment recipe. ``device`` (resolved) is where the system, the decoders and the
    attacks run.
    """
    from facepriv.advface.train import load_decoder

    split_seed = load_runs(features, shadows, attackers)
    system = SplitSystem.create(features.model, features.cut, device=device)
    sh = {a: load_decoder(r, system.client)[0] for a, r in shadows.items()}
    at = {a: load_decoder(r, system.client)[0] for a, r in attackers.items()}
    return run_experiment(features, lambda ev: faces_for(ev, images_root, system.alignment), system, sh, at,
                          split_seed=split_seed, out_dir=out_dir,
                          runs={"shadows": dict(shadows), "attackers": dict(attackers)}, **params)
