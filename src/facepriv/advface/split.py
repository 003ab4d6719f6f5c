"""A recognition system split into a client part E (pixels -> feature maps) and a server part Psi.

The server stores E's feature maps; verification runs Psi on them and compares descriptors with
cosine similarity. Any registered model with ``split(cut)`` works (``dlib_resnet`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from facepriv.errors import ParameterError
from facepriv.models.zoo import get_model

#: AdvFace's default cut for dlib_resnet: the first stage, an early feature map (32 x 35 x 35)
#: like the paper's "first three convolutional layers" of FaceNet.
DEFAULT_CUTS = {
    "dlib_resnet": "stage1",
    # ONNX ports: node outputs after their first three convolutions (early, high-resolution maps)
    "mobilefacenet": "347",
    "sface": "conv_3_relu",
    "edgeface": "/model/stages/stages.0/blocks/blocks.2/Add_output_0",
}


@dataclass
class SplitSystem:
    """Client/server split of a differentiable recognition model.

    Attributes
    ----------
    model_name, cut : str
    client, server : nn.Module
        Frozen E and Psi; ``server(client(x))`` equals the full model on [0, 1] RGB input.
    input_shape : (3, H, W)
    feature_shape : (C, h, w)
    alignment : str
        Alignment recipe of the model's card (how the photos are cropped before E).
    device : str
        Resolved torch device where E and Psi run (copies of ``client`` / ``server``, see
        :attr:`client_on` and :attr:`server_on`; ``client`` and ``server`` stay on the CPU).
        Arrays in, arrays out: the CPU path is unchanged.
    """

    model_name: str
    cut: str
    client: nn.Module
    server: nn.Module
    input_shape: tuple[int, int, int]
    feature_shape: tuple[int, int, int]
    alignment: str = ""
    batch_size: int = 64
    device: str = "cpu"

    @classmethod
    def create(cls, model_name: str = "dlib_resnet", cut: str | None = None, device: str = "cpu") -> SplitSystem:
        """Split a registered model at ``cut`` (default per model); clear error if it cannot be split.

        ``device`` (resolved, see :func:`facepriv.device.resolve_device`) is where E and Psi run.
        """
        model = get_model(model_name)
        if not hasattr(model, "split"):
            raise ParameterError(f"model {model_name!r} cannot be split into client and server parts")
        cut = cut or DEFAULT_CUTS.get(model_name) or model.cut_points()[0]
        if cut not in model.cut_points():
            raise ParameterError(f"model {model_name!r} has no cut point {cut!r}; allowed: {', '.join(model.cut_points())}",
                                 param="cut")
        client, server = model.split(cut)
        h, w = model.card.input_size
        with torch.no_grad():
            fshape = tuple(client(torch.zeros(1, 3, h, w)).shape[1:])
        return cls(model_name, cut, client, server, (3, h, w), fshape, model.card.alignment,  # type: ignore[arg-type]
                   device=device)

    @property
    def client_on(self) -> nn.Module:
        """E on :attr:`device` (``client`` itself on the CPU)."""
        from facepriv.device import module_on

        return module_on(self.client, self.device)

    @property
    def server_on(self) -> nn.Module:
        """Psi on :attr:`device` (``server`` itself on the CPU)."""
        from facepriv.device import module_on

        return module_on(self.server, self.device)

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """Resize [0, 1] images to the model's input size inside the graph."""
        size = self.input_shape[1:]
        if tuple(images.shape[-2:]) != tuple(size):
            images = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return images

    def _batched(self, fn, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            if self.device == "cpu":
                return torch.cat([fn(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]).numpy()
            return torch.cat([fn(x[i : i + self.batch_size].to(self.device)).cpu()
                              for i in range(0, len(x), self.batch_size)]).numpy()

    def extract(self, images: torch.Tensor) -> np.ndarray:
        """Client side: [0, 1] images (N, 3, H, W) -> feature maps (N, C, h, w)."""
        client = self.client_on
        return self._batched(lambda b: client(self.to_input(b)), images)

    def describe(self, features: np.ndarray) -> np.ndarray:
        """Server side: feature maps -> descriptors (N, D)."""
        return self._batched(self.server_on, torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))

    def embed_images(self, images: torch.Tensor) -> np.ndarray:
        """The full system on [0, 1] images of any size (resized to the input size)."""
        client, server = self.client_on, self.server_on
        return self._batched(lambda b: server(client(self.to_input(b))), images)
