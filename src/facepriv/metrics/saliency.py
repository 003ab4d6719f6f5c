"""Integrated gradients (Sundararajan, Taly, Yan, ICML 2017) and comparisons of saliency maps.

For a differentiable score f, an input x and a baseline x', the attribution of pixel i is
(x_i - x'_i) * integral over a in [0, 1] of df/dx_i at x' + a (x - x'). Completeness: the
attributions sum to f(x) - f(x'). The integral is approximated by the trapezoid rule on ``steps``
equal intervals; its error falls as 1/steps^2 for a smooth f, so the completeness gap
(:attr:`IGResult.gap`) tells whether enough steps were taken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class IGResult:
    """Attributions of one input, with the two ends of the path."""

    attributions: np.ndarray  # same shape as the input
    f_input: float
    f_baseline: float

    @property
    def gap(self) -> float:
        """sum(attributions) - (f(x) - f(baseline)): 0 up to the quadrature error."""
        return float(self.attributions.sum(dtype=np.float64) - (self.f_input - self.f_baseline))


def integrated_gradients(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: torch.Tensor,
                         steps: int = 32, batch: int = 16) -> IGResult:
    """Integrated gradients of the scalar-per-row function ``f`` at one input ``x`` (C, H, W).

    Parameters
    ----------
    f : callable
        Maps a batch (B, C, H, W) to B scores; differentiable in its input.
    x, baseline : Tensor (C, H, W)
        The input and the reference input (same shape).
    steps : int
        Intervals of the trapezoid rule along the straight path (>= 1); steps + 1 gradients.
    batch : int
        Path points evaluated per forward / backward pass.
    """
    if x.shape != baseline.shape:
        raise ValueError(f"input {tuple(x.shape)} and baseline {tuple(baseline.shape)} differ in shape")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x64, b64 = x.detach().double(), baseline.detach().double()
    alphas = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    weights = torch.full((steps + 1,), 1.0 / steps, dtype=torch.float64)
    weights[0] = weights[-1] = 0.5 / steps
    total = torch.zeros_like(x64)
    ends: dict[int, float] = {}
    for i in range(0, steps + 1, batch):
        a = alphas[i : i + batch]
        pts = (b64 + a.view(-1, 1, 1, 1) * (x64 - b64)).to(x.dtype).requires_grad_(True)
        out = f(pts)
        (grad,) = torch.autograd.grad(out.sum(), pts)
        total += (grad.double() * weights[i : i + batch].view(-1, 1, 1, 1)).sum(0)
        for j, k in enumerate(range(i, i + len(a))):
            if k in (0, steps):
                ends[k] = float(out[j].detach())
    return IGResult(((x64 - b64) * total).numpy(), ends[steps], ends[0])


def pixel_map(attributions: np.ndarray) -> np.ndarray:
    """Per-pixel saliency (H, W): absolute attributions summed over the channels."""
    return np.abs(np.asarray(attributions, dtype=np.float64)).sum(0)


def map_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two non-negative saliency maps of equal shape (1 = same pixels matter)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float("nan")


def resize_map(m: np.ndarray, side: int) -> np.ndarray:
    """A saliency map resized to side x side (area-preserving bilinear resampling)."""
    t = torch.from_numpy(np.asarray(m, np.float64))[None, None]
    return torch.nn.functional.interpolate(t, size=(side, side), mode="bilinear", align_corners=False,
                                           antialias=True)[0, 0].numpy()
