"""Transfer-enhancing pieces for the sign-gradient core: kernels, input diversity, EOT, ensembles.

The core (:func:`facepriv.adversarial.core.sign_gradient_attack`) owns the update rule (momentum,
TI smoothing, VMI variance tuning are its parameters). What changes the *loss* lives here as
small functions that wrap a per-sample loss or a model:

* :func:`gaussian_kernel` / :func:`smooth_gradient` -- the TI-FGSM kernel (Dong et al. 2019);
* :func:`input_diversity` / :class:`DiverseInput` -- DI-FGSM (Xie et al. 2019): with probability
  ``p`` the input is shrunk by a random factor in ``[resize_rate, 1)`` and zero-padded back to
  its size at a random offset; seeded per sample, never the global random state;
* :func:`ensemble_loss` -- the mean of several models' per-sample losses (each model with its own
  preprocessing, e.g. its own alignment warp);
* :func:`eot_loss` -- expectation over a finite list of (differentiable) transformations: the
  mean loss over the list, computed exactly at every step (deterministic).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch

from facepriv.errors import ParameterError

LossFn = Callable[[torch.Tensor], torch.Tensor]


def gaussian_kernel(size: int = 15, nsig: float = 3.0) -> torch.Tensor:
    """(size, size) Gaussian kernel sampled on ``linspace(-nsig, nsig, size)``, summing to 1."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1 or size % 2 == 0:
        raise ParameterError(f"ti_kernel: the kernel size must be an odd integer >= 1, got {size!r}", param="ti_kernel")
    if not (isinstance(nsig, numbers.Real) and math.isfinite(nsig) and nsig > 0):
        raise ParameterError(f"ti_kernel: nsig must be > 0, got {nsig!r}", param="ti_kernel")
    t = np.linspace(-float(nsig), float(nsig), int(size))
    k1 = np.exp(-0.5 * t * t)
    k = np.outer(k1, k1)
    return torch.from_numpy((k / k.sum()).astype(np.float32))


def smooth_gradient(grad: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depth-wise 2-D convolution of a (N, C, H, W) gradient with ``kernel`` ('same' size, zero padding)."""
    c = grad.shape[1]
    w = kernel.to(device=grad.device, dtype=grad.dtype).expand(c, 1, *kernel.shape)
    return torch.nn.functional.conv2d(grad, w, padding="same", groups=c)


def input_diversity(x: torch.Tensor, generators: Sequence[torch.Generator], prob: float,
                    resize_rate: float = 0.9) -> torch.Tensor:
    """DI transform of a (N, C, H, W) batch, each sample with its own generator.

    With probability ``prob`` a sample is resized (bilinear) to ``floor(s H) x floor(s W)``,
    ``s`` uniform in ``[resize_rate, 1)``, and zero-padded back to H x W at a random offset;
    otherwise it is returned unchanged. Differentiable in ``x``.
    """
    h, w = x.shape[-2:]
    out = []
    for i, g in enumerate(generators):
        xi = x[i : i + 1]
        r = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        if r[0] >= prob:
            out.append(xi)
            continue
        s = resize_rate + (1.0 - resize_rate) * r[1]
        nh, nw = max(1, int(h * s)), max(1, int(w * s))
        small = torch.nn.functional.interpolate(xi, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = int(r[2] * (h - nh + 1)), int(r[3] * (w - nw + 1))
        out.append(torch.nn.functional.pad(small, (left, w - nw - left, top, h - nh - top)))
    return torch.cat(out)


class DiverseInput:
    """Callable DI transform with per-sample generators seeded once (see :func:`input_diversity`).

    Parameters
    ----------
    seeds : sequence of int
        One seed per sample of the batch it will be applied to.
    prob : float
        Probability of transforming a sample at each call (0..1).
    resize_rate : float
        Smallest resize factor (0 < rate < 1).
    """

    def __init__(self, seeds: Sequence[int], prob: float, resize_rate: float = 0.9) -> None:
        check_diversity(prob, resize_rate)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.prob, self.resize_rate = float(prob), float(resize_rate)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return input_diversity(x, self.generators, self.prob, self.resize_rate)


def check_diversity(prob: float, resize_rate: float) -> None:
    """ParameterError naming ``diversity_prob`` / ``resize_rate`` for values outside their ranges."""
    if isinstance(prob, bool) or not isinstance(prob, numbers.Real) or not 0 <= prob <= 1:
        raise ParameterError(f"diversity_prob: must be in [0, 1], got {prob!r}", param="diversity_prob")
    if isinstance(resize_rate, bool) or not isinstance(resize_rate, numbers.Real) or not 0 < resize_rate < 1:
        raise ParameterError(f"resize_rate: must be in (0, 1), got {resize_rate!r}", param="resize_rate")


def ensemble_loss(loss_fns: Sequence[LossFn], weights: torch.Tensor | None = None) -> LossFn:
    """Mean of several per-sample losses; ``weights`` (M, N) 0/1 leaves a model out for a sample.

    A sample's loss is the mean over the models whose weight is 1 (e.g. those whose detector
    found the face); every sample needs at least one.
    """
    if not loss_fns:
        raise ParameterError("sources: an ensemble needs at least one model", param="sources")
    if weights is not None and bool((weights.sum(0) <= 0).any()):
        raise ParameterError("sources: every sample needs at least one model of the ensemble", param="sources")

    def loss(x: torch.Tensor) -> torch.Tensor:
        parts = torch.stack([f(x) for f in loss_fns])  # (M, N)
        if weights is None:
            return parts.mean(0)
        wt = weights.to(device=parts.device, dtype=parts.dtype)  # the CPU tensor itself on the CPU
        return (parts * wt).sum(0) / wt.sum(0)

    return loss


def eot_loss(loss_fn: LossFn, transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> LossFn:
    """Expectation over transformation: the mean of ``loss_fn(t(x))`` over ``transforms``."""
    if not transforms:
        return loss_fn

    def loss(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss_fn(t(x)) for t in transforms]).mean(0)

    return loss


__all__ = ["DiverseInput", "check_diversity", "ensemble_loss", "eot_loss", "gaussian_kernel", "input_diversity",
           "smooth_gradient"]
