"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a PyTorch module.

The weights come from dlib's own ``.dat`` file (read by :mod:`facepriv.models.dlib_dat`, no dlib
needed) and the network reproduces dlib's ``anet_type`` operation by operation:

* input (``input_rgb_image_sized<150>``): ``(pixel_0_255 - mean_rgb) / 256`` per channel, with the
  means stored in the file (122.782, 117.001, 104.298);
* dlib's convolution padding convention: ``size // 2`` for stride 1, **0** for stride 2 (so the
  7x7/2 stem gives 72x72 and the 3x3/2 down-sampling convs give 17, 8, 3 and 1 pixels);
* affine layers (batch norm already folded by dlib) are folded into the preceding conv here;
* max pool 3x3/2 and avg pool 2x2/2 without padding;
* down-sampling residual blocks add the block output to the 2x2 average-pooled input; when the
  two differ in channels, rows or columns dlib zero-pads the smaller one (at the end of each
  axis) and the sum has the larger size: 3x3 + 4x4 -> 4x4 in stage 4, 1x1 + 2x2 -> 2x2 in stage 5;
* global average pool, fc 256 -> 128 without bias. The 128-d descriptor is not re-normalised
  (dlib compares descriptors by Euclidean distance, threshold 0.6).

Cut points for a client/server split (AdvFace): ``conv1`` (stem: conv 7x7/2 + relu + max pool),
``stage1`` .. ``stage5`` (the five residual levels; dlib's ``alevel4`` .. ``alevel0``). The
default ``stage3`` keeps the stem and the first three residual stages on the client.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facepriv import artifacts
from facepriv.errors import ParameterError
from facepriv.models.base import ModelCard, RecognitionModel
from facepriv.models.dlib_dat import STAGES, AffineWeights, ConvWeights, DlibNetWeights, load_cached
from facepriv.registry import register

#: where the network can be cut, in forward order, with the (C, H, W) feature shape after each
CUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "conv1": (32, 35, 35),
    "stage1": (32, 35, 35),
    "stage2": (64, 17, 17),
    "stage3": (128, 8, 8),
    "stage4": (256, 4, 4),
    "stage5": (256, 2, 2),
}
DEFAULT_CUT = "stage3"


def _folded_conv(c: ConvWeights, a: AffineWeights) -> nn.Conv2d:
    """A Conv2d computing ``affine(conv(x))``: dlib's per-channel scale/shift folded into the conv."""
    out_ch, in_ch, k, _ = c.weight.shape
    conv = nn.Conv2d(in_ch, out_ch, k, stride=c.stride, padding=c.padding, bias=True)
    g = a.gamma.astype(np.float64)
    w = (c.weight.astype(np.float64) * g[:, None, None, None]).astype(np.float32)
    b = (c.bias.astype(np.float64) * g + a.beta.astype(np.float64)).astype(np.float32)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
    return conv


def zero_pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev`` of tensors of different shapes: zero-pad the smaller at the end of C, H, W."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        dc, dh, dw = c - t.shape[1], h - t.shape[2], w - t.shape[3]
        return F.pad(t, (0, dw, 0, dh, 0, dc)) if (dc or dh or dw) else t

    return pad(a) + pad(b)


class InputNorm(nn.Module):
    """[0, 1] RGB -> dlib's input: ``(255 * x - mean_rgb) / 256``."""

    def __init__(self, mean_rgb: np.ndarray, channels_last: bool = True) -> None:
        super().__init__()
        # (255 x - m) / 256 == x * (255/256) - m/256 bit for bit: scaling by 2**-8 is exact.
        mean = torch.from_numpy(np.asarray(mean_rgb, np.float32)).view(1, 3, 1, 1) / 256.0
        self.register_buffer("mean_256", mean)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, 150, 150):
            raise ValueError(f"dlib_resnet expects RGB input of shape (N, 3, 150, 150), got {tuple(x.shape)}")
        y = x * (255.0 / 256.0) - self.mean_256
        # channels_last (NHWC) convs are ~1.2x faster than NCHW with oneDNN on this CPU (measured).
        return y.contiguous(memory_format=torch.channels_last) if self.channels_last else y


class Stem(nn.Module):
    """conv 7x7/2 (32 filters, no padding) + affine + relu + max pool 3x3/2: 150 -> 72 -> 35."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # relu and max pool commute exactly; pooling first makes the relu 4x cheaper.
        return F.relu(F.max_pool2d(self.conv(x), 3, 2), inplace=True)


class ResBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(block(x) + shortcut(x)), block = conv-affine-relu-conv-affine."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, down: bool) -> None:
        super().__init__()
        self.conv1, self.conv2, self.down = conv1, conv2, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in-place relus/adds only touch fresh conv outputs, so autograd stays valid
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        if self.down:
            return F.relu(zero_pad_add(F.avg_pool2d(x, 2, 2), y), inplace=True)
        return F.relu(y.add_(x), inplace=True)


class Head(nn.Module):
    """Global average pool + fc 256 -> 128 without bias."""

    def __init__(self, fc: np.ndarray) -> None:
        super().__init__()
        self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.T)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def build_module(net: DlibNetWeights, channels_last: bool = True) -> nn.Sequential:
    """The full network as ``Sequential(norm, conv1, stage1..stage5, head)``, frozen, in eval mode."""
    convs = [_folded_conv(c, a) for c, a in zip(net.convs, net.affines, strict=True)]
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        norm=InputNorm(net.input_mean, channels_last), conv1=Stem(convs[0])
    )
    i = 1
    for s, (_, nblocks, down) in enumerate(STAGES, start=1):
        blocks = []
        for b in range(nblocks):
            blocks.append(ResBlock(convs[i], convs[i + 1], down=down and b == 0))
            i += 2
        parts[f"stage{s}"] = nn.Sequential(*blocks)
    parts["head"] = Head(net.fc)
    return _freeze(nn.Sequential(parts))


def _freeze(m: nn.Module) -> nn.Module:
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


_CACHE: dict[str, nn.Sequential] = {}
_LOCK = threading.Lock()


def _full_module() -> nn.Sequential:
    """The process-wide frozen module (the .dat file is read once)."""
    path = str(artifacts.fetch("dlib_resnet_v1"))
    with _LOCK:
        if path not in _CACHE:
            _CACHE[path] = build_module(load_cached(path))
        return _CACHE[path]


@register("model", "dlib_resnet")
class DlibResNet(RecognitionModel):
    """dlib's ResNet face descriptor (150x150 dlib chip -> 128-d), re-implemented in PyTorch.

    Parameters
    ----------
    batch_size : int
        Crops per forward pass in :meth:`embed`.
    """

    summary = "dlib face recognition ResNet v1 (29 conv, 128-d, LFW 99.38%), PyTorch port of dlib's weights"
    reference = "D. E. King, dlib dnn_face_recognition_ex.cpp / dlib_face_recognition_resnet_model_v1 (2017)"
    card = ModelCard(
        input_size=(150, 150),
        embedding_dim=128,
        normalisation="x*255 - mean RGB (122.782, 117.001, 104.298), then / 256 (dlib input_rgb_image_sized)",
        alignment="dlib_chip150",
        licence="CC0-1.0",
        source=artifacts.ARTIFACTS["dlib_resnet_v1"].source,
        artifact="dlib_resnet_v1",
        differentiable=True,
    )

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size

    def validate_params(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ParameterError(f"dlib_resnet: batch_size must be a positive integer, got {self.batch_size!r}")

    def torch_module(self) -> nn.Module:
        """Frozen module: float RGB [0, 1] (N, 3, 150, 150) -> (N, 128) dlib descriptors (shared, cached)."""
        return _full_module()

    @staticmethod
    def cut_points() -> list[str]:
        """Names of the places the network can be cut, in forward order."""
        return list(CUT_SHAPES)

    @staticmethod
    def feature_shape(cut: str = DEFAULT_CUT) -> tuple[int, int, int]:
        """(C, H, W) of the features at ``cut`` for a 150x150 input."""
        _check_cut(cut)
        return CUT_SHAPES[cut]

    def split(self, cut: str = DEFAULT_CUT) -> tuple[nn.Module, nn.Module]:
        """Split into a client part E (pixels -> features) and a server part Psi (features -> descriptor).

        Both share the weights of :meth:`torch_module` and are frozen; ``Psi(E(x))`` equals the full
        network's output exactly (the same operations run in the same order).
        """
        _check_cut(cut)
        full = _full_module()
        names = list(full._modules)
        k = names.index(cut) + 1
        client = nn.Sequential(OrderedDict((n, full._modules[n]) for n in names[:k]))
        server = nn.Sequential(OrderedDict((n, full._modules[n]) for n in names[k:]))
        return _freeze(client), _freeze(server)


def _check_cut(cut: str) -> None:
    if cut not in CUT_SHAPES:
        raise ParameterError(f"dlib_resnet: unknown cut point {cut!r}; allowed: {', '.join(CUT_SHAPES)}")
