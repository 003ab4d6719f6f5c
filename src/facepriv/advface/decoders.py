"""Reconstruction networks from client feature maps to face images (the paper's appendix).

* ``TransRec``: the exact mirror of the client part E, layer by layer: every convolution and
  pooling E runs (recorded in execution order) becomes a transposed convolution back to the
  shape it came from.
* ``ResRec``: a ResNet-style decoder (residual blocks and 2x up-sampling stages).
* ``URec``: a U-Net-style decoder (an encoder-decoder with skip connections on the feature map,
  then up-sampling stages).

All map (N, C, h, w) features to (N, 3, S, S) images in [0, 1] (sigmoid); ``S`` is the output
size (64 for CPU-sized runs). BN layers let AdvFace use the incoming batch's statistics.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from facepriv.advface.params import ARCHITECTURES
from facepriv.errors import ParameterError

__all__ = ["ARCHITECTURES", "ResRec", "TransRec", "URec", "build_decoder", "record_layers"]


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def _n_upsamplings(h: int, out_size: int) -> int:
    return max(0, math.ceil(math.log2(out_size / h))) if out_size > h else 0


class _Head(nn.Module):
    """Final 3x3 conv to RGB, resize to the exact output size, sigmoid."""

    def __init__(self, cin: int, out_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 3, 3, 1, 1)
        self.out_size = out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.shape[-1] != self.out_size or x.shape[-2] != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class ResRec(nn.Module):
    """ResNet-style decoder: stem, residual blocks, then [2x up, conv, residual block] stages."""

    def __init__(self, feature_shape: tuple[int, int, int], out_size: int = 64, width: int = 32) -> None:
        super().__init__()
        c, h, _ = feature_shape
        layers: list[nn.Module] = [_conv_bn_relu(c, width), _ResBlock(width), _ResBlock(width)]
        ch = width
        for _ in range(_n_upsamplings(h, out_size)):
            nxt = max(16, ch // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_bn_relu(ch, nxt), _ResBlock(nxt)]
            ch = nxt
        self.body = nn.Sequential(*layers)
        self.head = _Head(ch, out_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


class URec(nn.Module):
    """U-Net-style decoder: two down levels with skips on the feature map, then up-sampling stages."""

    def __init__(self, feature_shape: tuple[int, int, int], out_size: int = 64, width: int = 24) -> None:
        super().__init__()
        c, h, _ = feature_shape
        w1, w2, w3 = width, width * 2, width * 4
        self.enc1 = nn.Sequential(_conv_bn_relu(c, w1), _conv_bn_relu(w1, w1))
        self.enc2 = nn.Sequential(_conv_bn_relu(w1, w2, stride=2), _conv_bn_relu(w2, w2))
        self.bott = nn.Sequential(_conv_bn_relu(w2, w3, stride=2), _conv_bn_relu(w3, w3))
        self.up2 = _conv_bn_relu(w3 + w2, w2)
        self.up1 = _conv_bn_relu(w2 + w1, w1)
        tail: list[nn.Module] = []
        ch = w1
        for _ in range(_n_upsamplings(h, out_size)):
            nxt = max(16, ch // 2)
            tail += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_bn_relu(ch, nxt)]
            ch = nxt
        self.tail = nn.Sequential(*tail)
        self.head = _Head(ch, out_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(z)
        e2 = self.enc2(e1)
        b = self.bott(e2)
        u2 = F.interpolate(b, size=e2.shape[-2:], mode="nearest")
        u2 = self.up2(torch.cat([u2, e2], dim=1))
        u1 = F.interpolate(u2, size=e1.shape[-2:], mode="nearest")
        u1 = self.up1(torch.cat([u1, e1], dim=1))
        return self.head(self.tail(u1))


def record_layers(client: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple[nn.Module, tuple, tuple]]:
    """Convolutions and poolings the client runs, in execution order, with in/out shapes."""
    rec: list[tuple[nn.Module, tuple, tuple]] = []
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: rec.append((mod, tuple(inp[0].shape[1:]), tuple(out.shape[1:]))))
        for m in client.modules() if isinstance(m, kinds)
    ]
    try:
        with torch.no_grad():
            client(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return rec


class TransRec(nn.Module):
    """Mirror of the client E: each recorded conv/pool reversed by a transposed convolution.

    Residual additions are not mirrored (layer-by-layer reversal, as the paper describes).
    """

    def __init__(self, client: nn.Module, input_shape: tuple[int, int, int], out_size: int = 64) -> None:
        super().__init__()
        rec = record_layers(client, input_shape)
        if not any(isinstance(m, nn.Conv2d) for m, _, _ in rec):
            raise ParameterError("TransRec needs a client part built from nn.Conv2d layers; none were recorded")
        layers: list[nn.Module] = []
        prev_in: tuple | None = None
        for i, (mod, shp_in, shp_out) in enumerate(reversed(rec)):
            if prev_in is not None and prev_in != shp_out:
                # a functional down-sampling E ran between two recorded layers (e.g. dlib's max
                # pool): mirror it by resizing back to the shape it received
                layers.append(nn.Upsample(size=shp_out[1:], mode="nearest"))
            prev_in = shp_in
            cin, cout = shp_out[0], shp_in[0]
            if isinstance(mod, nn.Conv2d):
                k, s, p = mod.kernel_size, mod.stride, mod.padding
            else:  # pooling: undo the down-sampling with a learned transposed conv
                k = s = (mod.stride, mod.stride) if isinstance(mod.stride, int) else mod.stride
                p = (0, 0)
            assert isinstance(p, tuple)
            # output_padding makes the transposed conv land exactly on the recorded input size
            op = []
            for dim in (0, 1):
                base = (shp_out[1 + dim] - 1) * s[dim] - 2 * p[dim] + k[dim]
                op.append(min(max(0, shp_in[1 + dim] - base), s[dim] - 1))
            last = i == len(rec) - 1
            # the mirror of E's first layer returns to the 3 image channels directly
            layers.append(nn.ConvTranspose2d(cin, cout, k, s, p, output_padding=tuple(op), bias=last))
            if not last:
                layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.out_size = out_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.body(z)
        if x.shape[-1] != self.out_size or x.shape[-2] != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


def build_decoder(
    arch: str, feature_shape: tuple[int, int, int], out_size: int = 64,
    client: nn.Module | None = None, input_shape: tuple[int, int, int] | None = None,
) -> nn.Module:
    """Create a reconstruction network by architecture name (``transrec`` needs the client E)."""
    if arch == "resrec":
        return ResRec(feature_shape, out_size)
    if arch == "urec":
        return URec(feature_shape, out_size)
    if arch == "transrec":
        if client is None or input_shape is None:
            raise ParameterError("transrec mirrors the client part: pass client and input_shape")
        return TransRec(client, input_shape, out_size)
    raise ParameterError(f"arch: unknown reconstruction architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}",
                         param="arch")
