"""The adaptive attacker against feature protections: it knows the method and trains on protected features.

The non-adaptive attacker of Table 1 trains its reconstruction network R on clean client
features of its own photos, and is then handed the server's protected features. An adaptive
attacker knows which protection the server uses (AdvFace, random noise, Laplace DP) and its public
parameters (eps, alpha, steps, bound), but not the server's secrets: not the server's shadow
decoder, not its noise seeds. It makes protected features of its own photos with its own copy of
the method -- for AdvFace, with its own decoder R standing in for the server's shadow -- and
fine-tunes R on (protected feature, photo) pairs, so R learns to read protected features. Both
attackers are then evaluated on the same server-protected features of the evaluation photos.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from facepriv.advface.evaluate import EvalContext
from facepriv.advface.protect import AdvFace, LaplaceDP, RandomNoise
from facepriv.advface.split import SplitSystem
from facepriv.advface.train import images_to_tensor
from facepriv.progress import progress

log = logging.getLogger(__name__)

METHODS = ("advface", "random", "dp")
#: offset between the server's noise seed and the attacker's own (the attacker does not know the server's)
ATTACKER_SEED_OFFSET = 7919


def attacker_copy(method: str, eps: float, decoder: nn.Module, system: SplitSystem, alpha: float, steps: int,
                  bound: str, seed: int):
    """The attacker's own instance of ``method``: its decoder as AdvFace's shadow, its own noise seed."""
    own_seed = (seed + ATTACKER_SEED_OFFSET) % 2**32
    if method == "advface":
        return AdvFace(eps=eps, alpha=alpha, steps=steps, bound=bound, seed=own_seed).use_shadow(decoder, system)
    if method == "random":
        return RandomNoise(eps=eps, alpha=alpha, steps=steps, bound=bound, seed=own_seed)
    if method == "dp":
        return LaplaceDP(eps=eps, budget=1.0, seed=own_seed)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def finetune_decoder(decoder: nn.Module, features: np.ndarray, crops: np.ndarray, size: int, epochs: int, lr: float,
                     batch_size: int, seed: int, device: str = "cpu", amp: bool | None = None) -> nn.Module:
    """A copy of ``decoder`` fine-tuned with the L1 loss on (features, crops); seeded batch order.

    The original decoder is left untouched (the non-adaptive attacker keeps it). ``device`` runs
    the fine-tuning there, with mixed precision on CUDA unless ``amp`` is False (see
    :func:`facepriv.device.resolve_amp`); the copy is returned on the CPU.
    """
    from facepriv.device import autocast, grad_scaler, resolve_amp

    use_amp = resolve_amp(device, amp)
    dec = copy.deepcopy(decoder)
    for p in dec.parameters():
        p.requires_grad_(True)
    z = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    x = images_to_tensor(crops, size)
    if device != "cpu":
        dec, z, x = dec.to(device), z.to(device), x.to(device)
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    scaler = grad_scaler(device, use_amp)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            dec.train()
            order = rng.permutation(len(z))
            for i in range(0, len(order), batch_size):
                idx = torch.from_numpy(order[i : i + batch_size])
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                if device == "cpu":
                    loss = (dec(z[idx]) - x[idx]).abs().mean()
                else:
                    idx = idx.to(device)
                    with autocast(device, use_amp):
                        out = dec(z[idx])
                    loss = (out.float() - x[idx]).abs().mean()
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
    return dec.eval() if device == "cpu" else dec.to("cpu").eval()


def adaptive_rows(
    ctx: EvalContext,
    protected: Callable[[str, float], np.ndarray],
    decoder: nn.Module,
    own_features: np.ndarray,
    own_crops: np.ndarray,
    *,
    methods: Sequence[str],
    eps_values: Sequence[float],
    alpha: float,
    steps: int,
    bound: str,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    arch: str,
) -> list[dict]:
    """Non-adaptive vs adaptive attacker per (method, eps) on the server's protected eval features.

    Returns rows ``{method, eps, n, ssim, psnr, mse, srra, adaptive_ssim, adaptive_psnr,
    adaptive_mse, adaptive_srra, accuracy}`` (accuracy is the server's, the same for both).
    """
    decoder.eval()
    size = int(ctx.attack(decoder, own_features[:1]).shape[-1])
    rows = []
    for method in progress(methods, desc="adaptive attacker (methods)"):
        for e in eps_values:
            own = attacker_copy(method, float(e), decoder, ctx.system, alpha, steps, bound, seed).transform(own_features)
            adapted = finetune_decoder(decoder, own, own_crops, size, epochs, lr, batch_size, seed,
                                       device=ctx.system.device)
            z = protected(method, float(e))
            base, _ = ctx.evaluate(method, e, arch, decoder, z)
            adap, _ = ctx.evaluate(method, e, f"{arch} (adaptive)", adapted, z)
            rows.append({"method": method, "eps": float(e), "n": base.n, "ssim": base.ssim, "psnr": base.psnr,
                         "mse": base.mse, "srra": base.srra, "adaptive_ssim": adap.ssim, "adaptive_psnr": adap.psnr,
                         "adaptive_mse": adap.mse, "adaptive_srra": adap.srra, "accuracy": base.accuracy})
            log.info("%s eps %.2f: SRRA %.3f -> adaptive %.3f, SSIM %.3f -> %.3f", method, e, base.srra, adap.srra,
                     base.ssim, adap.ssim)
    return rows
