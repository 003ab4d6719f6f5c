"""Multi-term reconstruction loss (Shahreza et al., ICIP 2022; WIFS 2023).

``loss = MSE(gen, real) + w_ssim * (1 - SSIM(gen, real)) / 2 + w_id * MSE(f(gen), f(real))``

with ``f`` the frozen, differentiable face recognition network. Generated images are resized to
the network's input size inside the graph (bilinear ``interpolate``) so the identity term's
gradient reaches the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facepriv.metrics.image_quality import ssim

W_SSIM = 0.1
W_ID = 0.005


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to ``size`` (no-op when already there); differentiable."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class LossTerms:
    """The total loss (a graph tensor) and its terms as floats, for logging."""

    total: torch.Tensor
    mse: float
    ssim: float
    id: float


class ReconstructionLoss(nn.Module):
    """MSE + w_ssim * (1 - SSIM) / 2 + w_id * ID loss through a frozen recognition network.

    Parameters
    ----------
    recognition : nn.Module or None
        Frozen network, [0, 1] RGB (N, 3, H, W) at ``input_size`` -> (N, D). None (or
        ``w_id == 0``) drops the identity term.
    input_size : (int, int)
        The network's input size (h, w).
    w_ssim, w_id : float
        Term weights (paper: 0.1 and 0.005).
    """

    def __init__(
        self,
        recognition: nn.Module | None,
        input_size: tuple[int, int] = (150, 150),
        w_ssim: float = W_SSIM,
        w_id: float = W_ID,
    ) -> None:
        super().__init__()
        self.recognition = recognition
        if recognition is not None:
            recognition.eval()
            for p in recognition.parameters():
                p.requires_grad_(False)
        self.input_size = tuple(input_size)
        self.w_ssim = float(w_ssim)
        self.w_id = float(w_id)

    @property
    def uses_id(self) -> bool:
        """Whether the identity term is computed."""
        return self.recognition is not None and self.w_id != 0.0

    @torch.no_grad()
    def target_embeddings(self, real: torch.Tensor) -> torch.Tensor:
        """Embeddings of real images through the same resize + network path as generated ones."""
        if self.recognition is None:
            raise ValueError("no recognition network configured")
        return self.recognition(resize_to(real, self.input_size))

    def forward(self, gen: torch.Tensor, real: torch.Tensor, real_emb: torch.Tensor | None = None) -> LossTerms:
        """Loss of generated images ``gen`` against ``real`` (both (N, 3, H, W) in [0, 1]).

        ``real_emb`` (N, D) may be passed precomputed (see :meth:`target_embeddings`).
        """
        l_mse = F.mse_loss(gen, real)
        s = ssim(gen, real)
        l_ssim = (1.0 - s) / 2.0
        total = l_mse + self.w_ssim * l_ssim
        l_id = torch.zeros((), dtype=gen.dtype)
        if self.uses_id:
            if real_emb is None:
                real_emb = self.target_embeddings(real)
            gen_emb = self.recognition(resize_to(gen, self.input_size))
            l_id = F.mse_loss(gen_emb, real_emb)
            total = total + self.w_id * l_id
        return LossTerms(total, float(l_mse.detach()), float(s.detach()), float(l_id.detach()))
