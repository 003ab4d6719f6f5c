"""What AdvFace costs, as a function of the data the server's shadow decoder was trained on.

AdvFace stores E(S(z)) moved by PGD, where S is the server's shadow decoder. Even at eps 0 the
stored feature is the features of S's reconstruction, so the utility cost (verification accuracy
lost) depends on how well S reconstructs, i.e. on S's training data. This study trains shadow
decoders on growing subsets of the server's own photos and measures, for each, verification
accuracy (and its cost against unprotected features) and the attacker's SRRA, with 95 % Wilson
intervals, at eps 0 and at the chosen eps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from facepriv.advface.data import cap_rows
from facepriv.advface.evaluate import EvalContext
from facepriv.advface.protect import AdvFace
from facepriv.advface.train import DecoderConfig, train_decoder
from facepriv.metrics.stats import wilson_interval
from facepriv.progress import progress


def wilson(rate: float, n: int) -> list[float]:
    """95 % Wilson interval of a rate measured on ``n`` trials."""
    return list(wilson_interval(int(round(rate * n)), n)) if n else [float("nan"), float("nan")]


def shadow_size_rows(
    ctx: EvalContext,
    features: np.ndarray,
    crops: np.ndarray,
    identity: np.ndarray,
    cfg: DecoderConfig,
    attacker,
    *,
    sizes: Sequence[int],
    eps_values: Sequence[float],
    alpha: float,
    steps: int,
    bound: str,
    seed: int,
) -> list[dict]:
    """Accuracy, utility cost and SRRA per (shadow training-set size, eps).

    Parameters
    ----------
    ctx : EvalContext
        The evaluation photos, threshold and pairs protocol (shared with Table 1).
    features, crops, identity
        The server's own (shadow-role) photos: client features, aligned crops, identities.
    cfg : DecoderConfig
        Shadow training settings; ``n_train`` is set per size.
    attacker : nn.Module
        The (non-adaptive) attacker's decoder.
    sizes : sequence of int
        Shadow training-set sizes (seeded subsets; a size above the photos available uses them all).
    """
    clean_acc, _ = ctx.accuracy(None, ctx.clean.features)
    n_pairs = len(ctx.protocol.genuine)
    rows = []
    for size in progress(sorted(set(int(s) for s in sizes)), desc="shadow training-set sizes"):
        idx = cap_rows(len(features), size, seed)
        c = dataclasses.replace(cfg, n_train=len(idx))
        shadow = train_decoder(features[idx], crops[idx], c, None, client=ctx.system.client, device=ctx.system.device)
        for e in eps_values:
            z = AdvFace(eps=float(e), alpha=alpha, steps=steps, bound=bound, seed=seed).use_shadow(
                shadow, ctx.system).transform(ctx.clean.features)
            res, _ = ctx.evaluate("advface", e, cfg.arch, attacker, z)
            rows.append({"shadow_images": int(len(idx)), "shadow_identities": int(len(np.unique(identity[idx]))),
                         "eps": float(e), "accuracy": res.accuracy, "accuracy_ci95": wilson(res.accuracy, n_pairs),
                         "accuracy_std": res.accuracy_std, "clean_accuracy": clean_acc,
                         "cost_points": 100.0 * (clean_acc - res.accuracy), "srra": res.srra,
                         "srra_ci95": wilson(res.srra, res.n), "ssim": res.ssim, "psnr": res.psnr, "pairs": n_pairs})
    return rows
