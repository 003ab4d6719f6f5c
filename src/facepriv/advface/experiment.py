"""The AdvFace experiment: Table 1, the eps sweep (Fig. 4), the shadow x attacker transfer matrix
(Table 4) and reconstruction grids (Fig. 5), from one feature file and trained decoder runs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from facepriv.advface.data import AlignedFaces, faces_for, identity_roles
from facepriv.advface.evaluate import EvalContext, MethodResult, finetune_server
from facepriv.advface.features import FeatureSet
from facepriv.advface.plots import plot_reconstruction_grid, plot_tradeoff
from facepriv.advface.protect import AdvFace, LaplaceDP, RandomNoise
from facepriv.advface.report import summary_markdown
from facepriv.advface.split import SplitSystem
from facepriv.advface.train import load_config, load_decoder
from facepriv.errors import ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic
from facepriv.progress import progress

log = logging.getLogger(__name__)

SWEEP = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
PARTS = ("table", "sweep", "transfer")


def _eval_subset(features: FeatureSet, split_seed: int, max_eval: int | None, seed: int,
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
        ev = ev.subset(np.sort(np.array(keep)))
    return ev


def run_experiment(
    features: FeatureSet,
    images_root: str | Path,
    shadows: dict[str, str],
    attackers: dict[str, str],
    out_dir: str | Path,
    main_arch: str = "resrec",
    eps: float = 0.2,
    alpha: float = 0.2,
    steps: int = 40,
    bound: str = "ball",
    sweep: tuple[float, ...] = SWEEP,
    max_eval: int | None = 300,
    offline_epochs: int = 0,
    seed: int = 0,
    parts: tuple[str, ...] = PARTS,
) -> dict:
    """Run every evaluation and write ``summary.json`` plus plots into ``out_dir``.

    ``shadows``/``attackers`` map an architecture name to a trained run folder; ``main_arch``
    must be in both (the paper uses ResRec for both in Table 1 and Fig. 4).
    """
    out = Path(out_dir)
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise ParameterError(f"parts must be a non-empty subset of {', '.join(PARTS)}, got {', '.join(parts)}")
    out.mkdir(parents=True, exist_ok=True)
    if main_arch not in shadows or main_arch not in attackers:
        raise ParameterError(f"main architecture {main_arch!r} needs both a shadow and an attacker run")
    cfgs = {f"shadow:{a}": load_config(r) for a, r in shadows.items()} | {f"attacker:{a}": load_config(r) for a, r in attackers.items()}
    for name, cfg in cfgs.items():
        features.check_compatible(cfg.model, cfg.cut, where=f"{name} run")
    split_seed = cfgs[f"shadow:{main_arch}"].split_seed
    if any(c.split_seed != split_seed for c in cfgs.values()):
        raise ParameterError("all decoder runs must use the same identity split (split_seed)")
    system = SplitSystem.create(features.model, features.cut)
    ev = _eval_subset(features, split_seed, max_eval, seed)
    faces: AlignedFaces = faces_for(ev, images_root, "dlib_chip150")
    ctx = EvalContext.build(system, faces, ev, seed)
    att = {a: load_decoder(r, system.client)[0] for a, r in attackers.items()}
    log.info("eval set: %d images of %d identities; SRRA threshold %.4f", len(ev), len(np.unique(ev.identity)), ctx.srra_threshold)

    cache: dict[tuple[str, float], np.ndarray] = {}

    def advface(arch: str, e: float) -> np.ndarray:
        # each (shadow, eps) is protected once and shared by the table, sweep and transfer parts
        if (arch, e) not in cache:
            prot = AdvFace(shadow=shadows[arch], eps=e, alpha=alpha, steps=steps, bound=bound, seed=seed).fit()
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
    for name, make in progress(methods.items() if "table" in parts else (), desc="Table 1 methods"):
        z = make()
        protected_main[name] = z
        res, recon = ctx.evaluate(name, eps if name != "unprotected" else 0.0, main_arch, att[main_arch], z)
        table.append(res.to_dict())
        recon_by_method[name] = recon[:8]
    if offline_epochs > 0 and "table" in parts:
        table.append(_offline_row(system, features, shadows[main_arch], split_seed, ctx, att[main_arch],
                                  protected_main["advface"], eps, alpha, steps, bound, offline_epochs, seed, main_arch))

    sweep_rows: list[dict] = []
    for e in progress(sweep if "sweep" in parts else (), desc="eps sweep"):
        z = advface(main_arch, e)
        res, _ = ctx.evaluate("advface", e, main_arch, att[main_arch], z)
        sweep_rows.append(res.to_dict())

    transfer: dict[str, dict[str, dict[str, float]]] = {}
    for s_arch in progress(shadows if "transfer" in parts else {}, desc="transfer (shadow)"):
        z = advface(s_arch, eps)
        transfer[s_arch] = {}
        for a_arch, net in att.items():
            res: MethodResult
            res, _ = ctx.evaluate("advface", eps, a_arch, net, z)
            transfer[s_arch][a_arch] = {"ssim": res.ssim, "psnr": res.psnr, "mse": res.mse, "srra": res.srra}

    originals = torch.from_numpy(faces.crops[:8]).permute(0, 3, 1, 2).float() / 255.0
    if recon_by_method:
        plot_reconstruction_grid(originals, recon_by_method, out / "reconstructions.png")
    if sweep_rows:
        plot_tradeoff(sweep_rows, out / "tradeoff_psnr_accuracy.png",
                      next((r for r in table if r["method"] == "unprotected"), None))
    summary = {
        "model": features.model, "cut": features.cut, "feature_shape": list(features.features.shape[1:]),
        "eval_images": len(ev), "eval_identities": int(len(np.unique(ev.identity))),
        "srra_fmr": 0.001, "srra_threshold": ctx.srra_threshold,
        "accuracy_protocol": {**ctx.protocol.counts(), "rule": "enrolled=Psi(stored feature), probe=Psi(E(image)); "
                              f"{ctx.protocol.counts()['folds']}-fold, threshold on the other folds"},
        "settings": {"eps": eps, "alpha": alpha, "steps": steps, "bound": bound, "main_arch": main_arch,
                     "shadows": shadows, "attackers": attackers, "split_seed": split_seed, "parts": list(parts)},
        "table": table, "sweep": sweep_rows, "transfer": transfer,
    }
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", summary_markdown(summary))
    return summary


def _offline_row(system: SplitSystem, features: FeatureSet, shadow_run: str, split_seed: int, ctx: EvalContext,
                 attacker, protected_eval: np.ndarray, eps: float, alpha: float, steps: int, bound: str,
                 epochs: int, seed: int, arch: str) -> dict:
    """AdvFace offline mode: Psi fine-tuned on adversarial features of the server's shadow data."""
    roles = identity_roles(features.identity, split_seed)
    own = features.subset(roles == "shadow")
    # every photo of the server's own identities, capped for the CPU (PGD costs ~0.15 s per feature)
    own = own.subset(np.sort(np.random.default_rng(seed).permutation(len(own))[: min(len(own), 2000)]))
    adv_own = AdvFace(shadow=shadow_run, eps=eps, alpha=alpha, steps=steps, bound=bound, seed=seed).fit().transform(own.features)
    server = finetune_server(system, adv_own, own.features, epochs=epochs, seed=seed)
    res, _ = ctx.evaluate("advface_offline", eps, arch, attacker, protected_eval, server=server)
    return res.to_dict()
