"""Image quality metrics: SSIM, PSNR and MSE.

The torch functions take float tensors in [0, 1] of shape (N, 3, H, W) (any channel count works)
and are differentiable, so SSIM can be used inside a training loss. SSIM follows Wang et al. (2004):
an 11x11 Gaussian window with sigma 1.5, constants C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with data
range L = 1, computed per channel over the "valid" region (no padding, like ``pytorch_msssim`` and
scikit-image's cropped mean) and averaged over channels and positions per image.

The numpy wrappers (``*_images``) take uint8 RGB images (H, W, 3) or (N, H, W, 3).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Reduction = Literal["mean", "none"]

WINDOW_SIZE = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = SIGMA, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1-d normalised Gaussian of ``size`` taps (the SSIM window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def _check_pair(a: torch.Tensor, b: torch.Tensor, min_side: int = 1) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim != 4:
        raise ValueError(f"images must be 4-d (N, C, H, W), got shape {tuple(a.shape)}")
    if min(a.shape[-2:]) < min_side:
        raise ValueError(f"images must be at least {min_side}x{min_side} pixels, got {tuple(a.shape[-2:])}")


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def ssim(a: torch.Tensor, b: torch.Tensor, reduction: Reduction = "mean", data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity of two image batches (differentiable).

    Parameters
    ----------
    a, b : Tensor, shape (N, C, H, W)
        Images with values in [0, ``data_range``]; H and W at least 11.
    reduction : {"mean", "none"}
        ``"none"`` returns one value per image, shape (N,).
    data_range : float
        Dynamic range L of the pixel values.

    Returns
    -------
    Tensor
        Mean SSIM (scalar) or per-image SSIM (N,); 1 for identical images.
    """
    _check_pair(a, b, WINDOW_SIZE)
    c = a.shape[1]
    dtype = a.dtype if a.is_floating_point() else torch.float32
    a = a.to(dtype)
    b = b.to(dtype)
    g = gaussian_window(dtype=dtype).to(a.device)
    # separable Gaussian: filter rows then columns, per channel (groups=c)
    wx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, wx, groups=c), wy, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = blur(a * a) - mu_aa
    var_b = blur(b * b) - mu_bb
    cov = blur(a * b) - mu_ab
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    smap = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))
    return _reduce(smap.flatten(1).mean(dim=1), reduction)


def mse(a: torch.Tensor, b: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean squared error per image (N,) or its mean; images (N, C, H, W)."""
    _check_pair(a, b)
    return _reduce(((a.float() - b.float()) ** 2).flatten(1).mean(dim=1), reduction)


def psnr(a: torch.Tensor, b: torch.Tensor, reduction: Reduction = "mean", data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(L^2 / MSE), per image (N,) or its mean.

    Identical images give ``inf``; the mean is then ``inf`` too (report it as such).
    """
    per = mse(a, b, reduction="none")
    values = 10.0 * torch.log10(data_range**2 / per)
    return _reduce(values, reduction)


def _to_tensor(images: np.ndarray, name: str) -> torch.Tensor:
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 images, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected (H, W, 3) or (N, H, W, 3) images, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).double().div_(255.0)


def _np_metric(fn, a: np.ndarray, b: np.ndarray, per_image: bool) -> np.ndarray | float:
    ta, tb = _to_tensor(a, "a"), _to_tensor(b, "b")
    with torch.no_grad():
        values = fn(ta, tb, reduction="none").numpy().astype(np.float64)
    return values if per_image else float(values.mean())


def ssim_images(a: np.ndarray, b: np.ndarray, per_image: bool = False) -> np.ndarray | float:
    """SSIM of uint8 RGB images (H, W, 3) or (N, H, W, 3): mean (float) or per image (N,)."""
    return _np_metric(ssim, a, b, per_image)


def psnr_images(a: np.ndarray, b: np.ndarray, per_image: bool = False) -> np.ndarray | float:
    """PSNR (dB) of uint8 RGB images on the [0, 1] scale: mean (float) or per image (N,)."""
    return _np_metric(psnr, a, b, per_image)


def mse_images(a: np.ndarray, b: np.ndarray, per_image: bool = False) -> np.ndarray | float:
    """MSE of uint8 RGB images on the [0, 1] scale: mean (float) or per image (N,)."""
    return _np_metric(mse, a, b, per_image)
