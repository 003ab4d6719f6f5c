"""AdvFace and the feature-noise baselines: feature protections of client feature maps (kind "feature").

* ``advface``: x~ = S(z), z~ = E(x~), then PGD from z~ ascending ||S(z_t) - x~||_1 with sign
  steps ``alpha`` for ``steps`` iterations; the shadow model S uses the incoming batch's BN
  statistics (paper section 4.2). The stored feature is the adversarial one.
* ``random_noise``: the same number of sign steps in random directions (paper 5.1.3).
* ``laplace_dp``: the Laplace mechanism, scale = bound / privacy budget (paper 5.1.3).

``bound`` chooses how ``eps`` limits the noise: ``"ball"`` (default) projects onto the L-inf ball
of radius eps around the starting feature after every step (PGD of Madry et al., the paper's
reference [21]); ``"step"`` reads Eq. (6) literally, ||z_{t+1} - z_t||_inf <= eps per step, so
the total drift can reach ``steps * min(alpha, eps)``. Both are exact (see tests).

The paper's values (:data:`facepriv.advface.params.EPS`, ``ALPHA``, ``STEPS``) are the defaults of these
protections and of the ``advface_table1`` attack alike.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from facepriv.adversarial.core import sign_gradient_attack
from facepriv.advface.params import (
    ALPHA,
    EPS,
    STEPS,
    check_int,
    check_noise_params,
    check_number,
    check_seed,
)
from facepriv.advface.split import SplitSystem
from facepriv.device import module_on
from facepriv.errors import ParameterError
from facepriv.protections.base import FeatureProtection
from facepriv.registry import register


def _attack_budget(eps: float, alpha: float, steps: int, bound: str) -> tuple[float, float]:
    """(total L-inf radius, step size) for the shared sign-gradient core."""
    if bound == "ball":
        return float(eps), float(alpha)
    step = min(float(alpha), float(eps))
    return steps * step, step  # the per-step bound alone; the ball never binds


def _feature_maps(x: Any, name: str) -> np.ndarray:
    x0 = np.asarray(x, dtype=np.float32)
    if x0.ndim != 4:
        raise ParameterError(f"{name}: feature maps must be 4-d (N, C, H, W), got shape {x0.shape}")
    return x0


def batch_stat_bn(decoder: nn.Module) -> nn.Module:
    """A copy of ``decoder`` whose BN layers normalise with the current batch's statistics.

    Running statistics are left untouched (momentum 0), weights are frozen.
    """
    d = copy.deepcopy(decoder).eval()
    for m in d.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.momentum = 0.0
    for p in d.parameters():
        p.requires_grad_(False)
    return d


@register("protection", "advface")
class AdvFace(FeatureProtection):
    """Adversarial features against reconstruction (Wang et al., CVPR 2023), on client feature maps.

    The shadow decoder comes from a run folder (``shadow``) or, in memory, from
    :meth:`use_shadow`; :meth:`fit` loads it.

    Parameters
    ----------
    shadow : str
        Run folder of the server's shadow reconstruction network (``facepriv advface train
        --role shadow``); it also names the model and cut the features come from. Empty when the
        shadow decoder is given in memory with ``use_shadow``.
    eps : float
        Noise bound (>= 0; the paper: 0.2); 0 stores E(S(z)) without adversarial steps.
    alpha : float
        Size of each sign step (> 0; the paper: 0.2).
    steps : int
        Number of PGD iterations (>= 1; the paper: 40).
    bound : {"ball", "step"}
        How eps limits the noise: "ball" = |z_T - z~| <= eps after every step (PGD); "step" =
        each step within eps (the paper's Eq. 6 read literally).
    batch_size : int
        Features protected together (>= 2; the shadow decoder's BN statistics come from this batch).
    seed : int
        Unused (the PGD starts from E(S(z)); nothing is random); kept so every protection takes
        a seed.
    """

    summary = "AdvFace: PGD on stored feature maps against a shadow reconstruction network"
    reference = "Wang et al., Privacy-preserving adversarial facial features, CVPR 2023"

    def __init__(self, shadow: str = "", eps: float = EPS, alpha: float = ALPHA, steps: int = STEPS,
                 bound: str = "ball", batch_size: int = 64, seed: int = 0) -> None:
        self.shadow = shadow
        self.eps = eps
        self.alpha = alpha
        self.steps = steps
        self.bound = bound
        self.batch_size = batch_size
        self.seed = seed

    def validate_params(self) -> None:
        check_noise_params(self.eps, self.alpha, self.steps, self.bound, self.seed)
        check_int("batch_size", self.batch_size, 2)
        if not isinstance(self.shadow, str):
            raise ParameterError(f"shadow: must be a run folder path, got {self.shadow!r}", param="shadow")

    def use_shadow(self, decoder: nn.Module, system: SplitSystem) -> AdvFace:
        """Use a shadow decoder held in memory (trained on ``system``'s client features)."""
        self.validate_params()
        self.system_ = system
        self.shadow_ = batch_stat_bn(decoder)
        self.feature_shape_ = tuple(system.feature_shape)
        return self

    def fit(self, es: Any = None) -> AdvFace:
        """Load the shadow decoder from ``shadow`` (nothing to do after :meth:`use_shadow`)."""
        from facepriv.advface.train import load_config, load_decoder

        self.validate_params()
        if hasattr(self, "shadow_"):
            return self
        if not self.shadow:
            raise ParameterError("shadow: advface needs a trained shadow decoder (a run folder of "
                                 "`facepriv advface train --role shadow`)", param="shadow")
        cfg = load_config(self.shadow)
        self.system_ = SplitSystem.create(cfg.model, cfg.cut, device=getattr(self, "device_", "cpu"))
        dec, _ = load_decoder(self.shadow, self.system_.client)
        self.shadow_ = batch_stat_bn(dec)
        self.feature_shape_ = tuple(cfg.feature_shape)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x0 = _feature_maps(x, "advface")
        if not hasattr(self, "shadow_"):
            self.fit()
        if tuple(x0.shape[1:]) != self.feature_shape_:
            raise ParameterError(
                f"advface: features of shape {tuple(x0.shape[1:])} do not fit the shadow decoder "
                f"({self.system_.model_name} cut at {self.system_.cut}: {self.feature_shape_})"
            )
        z = torch.from_numpy(np.ascontiguousarray(x0))
        dev = getattr(self.system_, "device", "cpu")
        if dev == "cpu":
            out = [self.protect_batch(z[i : i + self.batch_size])[1] for i in range(0, len(z), self.batch_size)]
        else:  # the system's device: the shadow decoder and E run there, the features come back
            out = [self.protect_batch(z[i : i + self.batch_size].to(dev))[1].cpu() for i in range(0, len(z), self.batch_size)]
        return torch.cat(out).numpy() if out else x0.copy()

    def on_device(self, device: str) -> AdvFace:
        """Run the protection on ``device`` (resolved): the system loaded by :meth:`fit` is put there."""
        self.device_ = device
        if hasattr(self, "system_") and self.system_.device != device:
            from dataclasses import replace

            self.system_ = replace(self.system_, device=device)
        return self

    def protect_batch(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shadow feature z~ = E(S(z)), adversarial feature) for one batch of feature maps.

        ``z`` is on the system's device (the shadow decoder and E run there).
        """
        dev = getattr(self.system_, "device", "cpu")
        S = self.shadow_ if dev == "cpu" else module_on(self.shadow_, dev)
        E = self.system_.client if dev == "cpu" else self.system_.client_on
        with torch.no_grad():
            x_shadow = S(z)  # x~ = S(z)
            z_shadow = E(self.system_.to_input(x_shadow))  # z~ = E(x~)
        if self.eps == 0:
            return z_shadow, z_shadow

        def loss(zt: torch.Tensor) -> torch.Tensor:
            return (S(zt) - x_shadow).abs().flatten(1).sum(1)

        radius, step = _attack_budget(self.eps, self.alpha, self.steps, self.bound)
        res = sign_gradient_attack(z_shadow, loss, eps=radius, alpha=step, iterations=self.steps,
                                   maximize=True, lower=-math.inf, upper=math.inf)
        return z_shadow, res.x_adv


@register("protection", "random_noise")
class RandomNoise(FeatureProtection):
    """Random perturbation baseline: ``steps`` sign steps of size alpha in random directions.

    Parameters
    ----------
    eps : float
        Noise bound (>= 0; the paper: 0.2), applied as AdvFace applies it.
    alpha : float
        Size of each random sign step (> 0; the paper: 0.2).
    steps : int
        Number of random sign steps (>= 1; the paper: 40).
    bound : {"ball", "step"}
        "ball" = the total noise stays within eps (clipped after every step); "step" = each
        step within eps.
    seed : int
        Seeds the noise. Secret: it regenerates the noise, so it would undo the protection; it
        is never written to outputs.
    """

    summary = "Random perturbation of feature maps (AdvFace baseline: 40 iterations, bound 0.2 each)"
    reference = "Wang et al., CVPR 2023, section 5.1.3"
    secret_params = ("seed",)  # the seed regenerates the noise, so it would undo the protection

    def __init__(self, eps: float = EPS, alpha: float = ALPHA, steps: int = STEPS, bound: str = "ball",
                 seed: int = 0) -> None:
        self.eps = eps
        self.alpha = alpha
        self.steps = steps
        self.bound = bound
        self.seed = seed

    def validate_params(self) -> None:
        check_noise_params(self.eps, self.alpha, self.steps, self.bound, self.seed)

    def transform(self, x: np.ndarray) -> np.ndarray:
        self.validate_params()
        x0 = _feature_maps(x, "random_noise")
        rng = np.random.default_rng(self.seed)
        if self.eps == 0:
            return x0.copy()
        radius, step = _attack_budget(self.eps, self.alpha, self.steps, self.bound)
        z = x0.copy()
        for _ in range(self.steps):
            z += step * rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=z.shape)
            np.clip(z, x0 - radius, x0 + radius, out=z)
        return z


@register("protection", "laplace_dp")
class LaplaceDP(FeatureProtection):
    """Laplace mechanism on feature maps: noise scale = bound eps (sensitivity) / privacy budget.

    Parameters
    ----------
    eps : float
        Noise bound taken as the sensitivity (>= 0; the paper: 0.2); the noise is not clipped.
    budget : float
        Privacy budget (> 0; the paper: 1.0); the Laplace scale is eps / budget.
    seed : int
        Seeds the noise. Secret: it regenerates the noise, so it would undo the protection; it
        is never written to outputs.
    """

    summary = "Laplace-mechanism noise on feature maps (AdvFace baseline: privacy budget 1.0, bound 0.2)"
    reference = "Wang et al., CVPR 2023, section 5.1.3; Dwork et al. 2006 (Laplace mechanism)"
    secret_params = ("seed",)

    def __init__(self, eps: float = EPS, budget: float = 1.0, seed: int = 0) -> None:
        self.eps = eps
        self.budget = budget
        self.seed = seed

    def validate_params(self) -> None:
        check_number("eps", self.eps, 0.0, strict=False)
        check_number("budget", self.budget, 0.0, strict=True)
        check_seed("seed", self.seed)

    def transform(self, x: np.ndarray) -> np.ndarray:
        self.validate_params()
        x0 = _feature_maps(x, "laplace_dp")
        if self.eps == 0:
            return x0.copy()
        rng = np.random.default_rng(self.seed)
        return (x0 + rng.laplace(0.0, self.eps / self.budget, size=x0.shape)).astype(np.float32)
