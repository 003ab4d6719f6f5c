"""The face reconstruction decoder of Shahreza et al. (ICIP 2022) as used by Osorio-Roig et al. (WIFS 2023).

An embedding of dimension D is reshaped to (D, 1, 1) and up-sampled by six stages. Each stage is a
transposed convolution (kernel 4, no bias) -> BatchNorm -> ReLU followed by a residual block of
three 3x3 conv-BN-ReLU layers whose output is added to the stage input. A final 3x3 convolution
maps to 3 channels and a sigmoid gives RGB in [0, 1].

Two output sizes:

* ``112`` (the paper): channels 512/256/128/64/32/16, strides 1/2/2/2/2/2, paddings 0/1/1/2/2/3,
  spatial sizes 4, 8, 16, 30, 58, 112.
* ``64`` (our CPU-sized variant): the same six stages and channels, but the first transposed
  convolution uses padding 1 (1x1 -> 2x2) and every later stage doubles cleanly with stride 2,
  padding 1: spatial sizes 2, 4, 8, 16, 32, 64. Same depth and kernel sizes, about 3.5x fewer
  multiply-adds than the 112 variant.
"""

from __future__ import annotations

import torch
from torch import nn

#: (out_channels, stride, padding) of the six transposed convolutions, per output size
STAGES: dict[int, tuple[tuple[int, int, int], ...]] = {
    112: ((512, 1, 0), (256, 2, 1), (128, 2, 1), (64, 2, 2), (32, 2, 2), (16, 2, 3)),
    64: ((512, 1, 1), (256, 2, 1), (128, 2, 1), (64, 2, 1), (32, 2, 1), (16, 2, 1)),
}
KERNEL = 4


def stage_sizes(size: int) -> list[int]:
    """Spatial size after each stage for output ``size`` (checks the table is consistent)."""
    if size not in STAGES:
        raise ValueError(f"decoder output size must be one of {sorted(STAGES)}, got {size}")
    s, out = 1, []
    for _, stride, pad in STAGES[size]:
        s = (s - 1) * stride - 2 * pad + KERNEL
        out.append(s)
    return out


def _conv_bn_relu(ch: int) -> list[nn.Module]:
    return [nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]


class UpStage(nn.Module):
    """ConvTranspose(k=4, no bias) -> BN -> ReLU, then x + [conv3x3-BN-ReLU] x 3."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, padding: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(in_ch, out_ch, KERNEL, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )
        self.res = nn.Sequential(*_conv_bn_relu(out_ch), *_conv_bn_relu(out_ch), *_conv_bn_relu(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return x + self.res(x)


class FaceDecoder(nn.Module):
    """Embedding (N, D) -> RGB face image (N, 3, size, size) in [0, 1].

    Parameters
    ----------
    embedding_dim : int
        D, taken from the embeddings (128 for ``dlib_resnet``, 512 for ArcFace-style models).
    size : {64, 112}
        Output side in pixels.
    """

    def __init__(self, embedding_dim: int, size: int = 112) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        sizes = stage_sizes(size)
        if sizes[-1] != size:  # pragma: no cover - guards edits of STAGES
            raise ValueError(f"stage table for {size} ends at {sizes[-1]}")
        self.embedding_dim = int(embedding_dim)
        self.size = int(size)
        stages, in_ch = [], self.embedding_dim
        for out_ch, stride, pad in STAGES[size]:
            stages.append(UpStage(in_ch, out_ch, stride, pad))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(in_ch, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.embedding_dim:
            raise ValueError(f"decoder expects embeddings (N, {self.embedding_dim}), got {tuple(z.shape)}")
        x = z.view(z.shape[0], self.embedding_dim, 1, 1)
        return torch.sigmoid(self.head(self.stages(x)))
