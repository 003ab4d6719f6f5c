"""Photo cloaks: BIM / ILLC / embedding push computed on the full photo through the alignment warp.

Where the perturbation lives: on the **full photo**, optimised through the differentiable path
``photo (0..255) -> fixed affine alignment warp (bilinear, as the recipe) -> model input -> head``.
The alignment matrix comes from the source recipe's detector on the clean photo
(:meth:`facepriv.models.alignment.Aligner.crop_matrix`); only the warp is differentiated, not the
detector. This is the realistic choice: what a user publishes, and what any invader's own
detector/aligner/resizer later sees, is the photo, so the eps budget is enforced exactly on the
photo's pixels, and the attack already accounts for the source pipeline's own resampling. The
alternative (perturb the aligned crop, paste it back through the inverse warp) bounds and
optimises a tensor nobody ever publishes and adds an un-modelled second resampling.

Large photos are first brought to a working resolution (``max_side``, INTER_AREA), the size at
which the cloaked photo is published; the clean reference for quality metrics and the eps-0
baseline is that same resized photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from facepriv.adversarial.core import sign_gradient_attack
from facepriv.errors import ParameterError
from facepriv.protections.image import Cloaked, SourcePipeline

METHODS = ("bim", "illc", "push")


def working_resolution(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (INTER_AREA) so the longer side is at most ``max_side``; smaller photos unchanged."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    f = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def affine_grid_from_matrix(matrices: torch.Tensor, photo_hw: tuple[int, int], crop_hw: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` grid (N, h, w, 2) for photo->crop affine matrices (N, 2, 3) in pixel units.

    Pixel centres sit at integer coordinates (OpenCV ``warpAffine`` convention), which matches
    ``align_corners=True``.
    """
    n = matrices.shape[0]
    H, W = photo_hw
    h, w = crop_hw
    full = torch.zeros(n, 3, 3, dtype=torch.float64)
    full[:, :2] = matrices.to(torch.float64)
    full[:, 2, 2] = 1.0
    inv = torch.linalg.inv(full)[:, :2]  # crop -> photo
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)  # (h*w, 3)
    xy = torch.einsum("nij,pj->npi", inv, pts)  # (n, h*w, 2)
    gx = 2.0 * xy[..., 0] / max(W - 1, 1) - 1.0
    gy = 2.0 * xy[..., 1] / max(H - 1, 1) - 1.0
    return torch.stack([gx, gy], dim=-1).reshape(n, h, w, 2).to(torch.float32)


class PhotoClassifier(torch.nn.Module):
    """``C(photo)``: warp 0..255 photos to the model's crops, embed, and optionally classify.

    Parameters
    ----------
    net : torch.nn.Module
        Frozen recognition module ([0, 1] RGB crops -> embeddings).
    grid : torch.Tensor
        Sampling grid from :func:`affine_grid_from_matrix` for this batch of photos.
    head : torch.nn.Module or None
        Identification head (embeddings -> logits); None returns embeddings.
    crop_transform : callable, optional
        Applied to the aligned crops before the network (e.g. the DI transform).
    """

    def __init__(self, net: torch.nn.Module, grid: torch.Tensor, head: torch.nn.Module | None,
                 crop_transform: Any = None) -> None:
        super().__init__()
        self.net, self.grid, self.head, self.crop_transform = net, grid, head, crop_transform

    def crops(self, photos: torch.Tensor) -> torch.Tensor:
        """Aligned crops in [0, 1] (N, 3, h, w) of 0..255 photos (N, 3, H, W)."""
        return torch.nn.functional.grid_sample(
            photos / 255.0, self.grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )

    def forward(self, photos: torch.Tensor) -> torch.Tensor:
        crops = self.crops(photos)
        emb = self.net(crops if self.crop_transform is None else self.crop_transform(crops))
        return emb if self.head is None else self.head(emb)


def cloak_photos(
    photos: np.ndarray,
    matrices: np.ndarray,
    labels: np.ndarray,
    *,
    source: SourcePipeline,
    method: str,
    eps: float,
    alpha: float = 1.0,
    iterations: int | None = None,
    seeds: Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    transfer: Any = None,
) -> Cloaked:
    """Cloak a batch of same-size photos with BIM, ILLC or the embedding push.

    Parameters
    ----------
    photos : uint8 (N, H, W, 3)
    matrices : (N, 2, 3) photo->crop affine matrices of the source recipe.
    labels : int (N,)
        True class index of each photo in ``source.head`` (and row of ``source.templates``).
    source : SourcePipeline
        Source recognition module, its identification head, crop size and enrolled templates
        (and the further models of an ensemble in ``source.members``).
    method : "bim" | "illc" | "push"
    eps, alpha, iterations
        Budget and step in 0..255 pixel units; iterations default min(eps+4, 1.25 eps).
    seeds : sequence of int (N,), optional
        Per-photo seeds of the random choices (push's random start, DI, VMI); default the index.
    ids : sequence of str, optional
        Image ids (find an ensemble member's alignment matrix); needed with ``source.members``.
    transfer : SignGradientCloak, optional
        The cloak whose transfer options (momentum, diversity_prob, resize_rate, ti_kernel,
        vmi_samples, eot) apply; None = the paper's plain method.

    Returns
    -------
    Cloaked
        uint8 photos with ``|cloak - photo| <= floor(eps)``, the loss on the clean photo and after
        the last step, and the ILLC target per photo.
    """
    from facepriv.attacks.deid.transfer_cloak import cloak_loss, core_options

    if method not in METHODS:
        raise ParameterError(f"method: unknown cloak method {method!r}; choose from {', '.join(METHODS)}", param="method")
    x = torch.from_numpy(np.ascontiguousarray(photos)).permute(0, 3, 1, 2).float()
    device = getattr(source, "device", "cpu")
    if device != "cpu":  # the source's networks are there (SourcePipeline.device)
        x = x.to(device)
    seeds = list(range(len(x))) if seeds is None else [int(s) for s in seeds]
    ids = [str(i) for i in range(len(x))] if ids is None else list(ids)
    loss, maximize, targets = cloak_loss(source, matrices, tuple(photos.shape[1:3]), labels, ids, method, seeds,
                                         transfer, x)
    opts = core_options(transfer)
    res = sign_gradient_attack(x, loss, eps=eps, alpha=alpha, iterations=iterations, maximize=maximize,
                               random_start=method == "push", seed=seeds if method == "push" or opts.get("vmi_samples")
                               else None, **opts)
    # alpha-steps from integer pixels with an integer eps stay integral; round for other choices
    # (rounding may not leave the budget: clip to the integers inside the eps-ball)
    e = float(np.floor(eps))
    adv = torch.clamp(torch.minimum(torch.maximum(torch.round(res.x_adv), x - e), x + e), 0, 255)
    return Cloaked(
        photos=adv.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8),
        loss_before=res.loss_clean.cpu().numpy(),
        loss_after=res.loss_history[-1].cpu().numpy(),
        targets=targets,
    )
