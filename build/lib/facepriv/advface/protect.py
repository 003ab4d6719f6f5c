"""AdvFace and the feature-noise baselines as template protections on client feature maps.

* ``advface``: x~ = S(z), z~ = E(x~), then PGD from z~ ascending ||S(z_t) - x~||_1 with sign
  steps ``alpha`` for ``steps`` iterations; the shadow model S uses the incoming batch's BN
  statistics (paper section 4.2). The stored feature is the adversarial one.
* ``random_noise``: the same number of sign steps in random directions (paper 5.1.3).
* ``laplace_dp``: the Laplace mechanism, scale = bound / privacy budget (paper 5.1.3).

``bound`` chooses how ``eps`` limits the noise: ``"ball"`` (default) projects onto the L-inf ball
of radius eps around the starting feature after every step (PGD of Madry et al., the paper's
reference [21]); ``"step"`` reads Eq. (6) literally, ||z_{t+1} - z_t||_inf <= eps per step, so
the total drift can reach ``steps * min(alpha, eps)``. Both are exact (see tests).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from facepriv.adversarial.core import sign_gradient_attack
from facepriv.advface.split import SplitSystem
from facepriv.advface.train import load_config, load_decoder
from facepriv.errors import ParameterError
from facepriv.protections.base import TemplateProtection
from facepriv.registry import register

BOUNDS = ("ball", "step")


def _check_noise_params(name: str, eps: float, alpha: float, steps: int, bound: str) -> None:
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ParameterError(f"{name}: eps must be a number >= 0, got {eps!r}")
    if not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ParameterError(f"{name}: alpha must be > 0, got {alpha!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ParameterError(f"{name}: steps must be an integer >= 1, got {steps!r}")
    if bound not in BOUNDS:
        raise ParameterError(f"{name}: bound must be one of {', '.join(BOUNDS)}, got {bound!r}")


def _attack_budget(eps: float, alpha: float, steps: int, bound: str) -> tuple[float, float]:
    """(total L-inf radius, step size) for the shared sign-gradient core."""
    if bound == "ball":
        return float(eps), float(alpha)
    step = min(float(alpha), float(eps))
    return steps * step, step  # the per-step bound alone; the ball never binds


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
class AdvFace(TemplateProtection):
    """Adversarial features against reconstruction (Wang et al., CVPR 2023), on feature maps.

    Parameters
    ----------
    shadow : str
        Run folder of the server's shadow reconstruction network (``facepriv advface train``);
        it also names the model and cut the features come from.
    eps, alpha, steps : float, float, int
        Noise bound, sign-step size and PGD iterations (paper: 0.2, 0.2, 40).
    bound : {"ball", "step"}
        How eps limits the noise (module docstring).
    batch_size : int
        Features protected together (the BN statistics come from this batch).
    """

    summary = "AdvFace: PGD on stored feature maps against a shadow reconstruction network"
    reference = "Wang et al., Privacy-preserving adversarial facial features, CVPR 2023"

    def __init__(self, shadow: str = "", eps: float = 0.2, alpha: float = 0.2, steps: int = 40,
                 bound: str = "ball", batch_size: int = 64, seed: int = 0) -> None:
        self.shadow = shadow
        self.eps = eps
        self.alpha = alpha
        self.steps = steps
        self.bound = bound
        self.batch_size = batch_size
        self.seed = seed

    def validate_params(self) -> None:
        _check_noise_params("advface", self.eps, self.alpha, self.steps, self.bound)
        if not self.shadow:
            raise ParameterError("advface: shadow (a trained shadow decoder run folder) is required")

    def fit(self, es=None) -> AdvFace:
        self.validate_params()
        cfg = load_config(self.shadow)
        self.system_ = SplitSystem.create(cfg.model, cfg.cut)
        dec, _ = load_decoder(self.shadow, self.system_.client)
        self.shadow_ = batch_stat_bn(dec)
        self.config_ = cfg
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "shadow_"):
            self.fit()
        z = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if tuple(z.shape[1:]) != tuple(self.config_.feature_shape):
            raise ParameterError(
                f"advface: features of shape {tuple(z.shape[1:])} do not fit the shadow model "
                f"({self.config_.model} cut at {self.config_.cut}: {self.config_.feature_shape})"
            )
        out = []
        for i in range(0, len(z), self.batch_size):
            out.append(self.protect_batch(z[i : i + self.batch_size])[1])
        return torch.cat(out).numpy()

    def protect_batch(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shadow feature z~ = E(S(z)), adversarial feature) for one batch of feature maps."""
        S, E = self.shadow_, self.system_.client
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
class RandomNoise(TemplateProtection):
    """Random perturbation baseline: ``steps`` sign steps of size alpha in random directions."""

    summary = "Random perturbation of feature maps (AdvFace baseline: 40 iterations, bound 0.2 each)"
    reference = "Wang et al., CVPR 2023, section 5.1.3"
    secret_params = ("seed",)  # the seed regenerates the noise, so it would undo the protection

    def __init__(self, eps: float = 0.2, alpha: float = 0.2, steps: int = 40, bound: str = "ball", seed: int = 0) -> None:
        self.eps = eps
        self.alpha = alpha
        self.steps = steps
        self.bound = bound
        self.seed = seed

    def validate_params(self) -> None:
        _check_noise_params("random_noise", self.eps, self.alpha, self.steps, self.bound)

    def transform(self, x: np.ndarray) -> np.ndarray:
        self.validate_params()
        rng = np.random.default_rng(self.seed)
        x0 = np.asarray(x, dtype=np.float32)
        if self.eps == 0:
            return x0.copy()
        radius, step = _attack_budget(self.eps, self.alpha, self.steps, self.bound)
        z = x0.copy()
        for _ in range(self.steps):
            z += step * rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=z.shape)
            np.clip(z, x0 - radius, x0 + radius, out=z)
        return z


@register("protection", "laplace_dp")
class LaplaceDP(TemplateProtection):
    """Laplace mechanism on feature maps: noise scale = bound eps (sensitivity) / privacy budget."""

    summary = "Laplace-mechanism noise on feature maps (AdvFace baseline: privacy budget 1.0, bound 0.2)"
    reference = "Wang et al., CVPR 2023, section 5.1.3; Dwork et al. 2006 (Laplace mechanism)"
    secret_params = ("seed",)

    def __init__(self, eps: float = 0.2, budget: float = 1.0, seed: int = 0) -> None:
        self.eps = eps
        self.budget = budget
        self.seed = seed

    def validate_params(self) -> None:
        if not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise ParameterError(f"laplace_dp: eps must be >= 0, got {self.eps!r}")
        if not isinstance(self.budget, (int, float)) or not self.budget > 0:
            raise ParameterError(f"laplace_dp: budget must be > 0, got {self.budget!r}")

    def transform(self, x: np.ndarray) -> np.ndarray:
        self.validate_params()
        x0 = np.asarray(x, dtype=np.float32)
        if self.eps == 0:
            return x0.copy()
        rng = np.random.default_rng(self.seed)
        return (x0 + rng.laplace(0.0, self.eps / self.budget, size=x0.shape)).astype(np.float32)
