"""SSIM / PSNR / MSE against a naive reference implementation and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facepriv.metrics.image_quality import mse, mse_images, psnr, psnr_images, ssim, ssim_images


def _naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window (float64, one channel (H, W), range 1).

    Gaussian 11x11, sigma 1.5; population (weighted) moments; mean over valid windows.
    """
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    h, wd = a.shape
    vals = []
    for i in range(h - 10):
        for j in range(wd - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * (pa - ma) ** 2).sum()
            vb = (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_naive_reference():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 20, 23))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    got = ssim(torch.from_numpy(a), torch.from_numpy(b), reduction="none").numpy()
    want = [np.mean([_naive_ssim(a[n, c], b[n, c]) for c in range(3)]) for n in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert 0.0 < got.min() < 0.95


def test_ssim_identity_and_symmetry():
    x = torch.rand(3, 3, 32, 32)
    y = torch.rand(3, 3, 32, 32)
    assert torch.allclose(ssim(x, x, reduction="none"), torch.ones(3), atol=1e-5)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-6)
    assert ssim(x, y) < 0.2  # independent noise images are dissimilar


def test_ssim_is_differentiable():
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    y = torch.rand(2, 3, 24, 24)
    (1 - ssim(x, y)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_psnr_mse_known_values():
    a = torch.zeros(1, 3, 16, 16)
    b = torch.full((1, 3, 16, 16), 0.1)
    assert mse(a, b).item() == pytest.approx(0.01)
    assert psnr(a, b).item() == pytest.approx(20.0)
    assert math.isinf(psnr(a, a).item())


def test_numpy_wrappers_uint8():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    b = a.copy()
    b[:, :8] = 0
    per = ssim_images(a, b, per_image=True)
    assert per.shape == (4,) and (per < 1).all()
    assert ssim_images(a[0], a[0]) == pytest.approx(1.0)
    assert mse_images(a, a) == 0.0
    want = ((a.astype(float) - b.astype(float)) / 255.0) ** 2
    assert mse_images(a, b) == pytest.approx(want.mean())
    assert psnr_images(a, b) == pytest.approx(np.mean(10 * np.log10(1 / want.reshape(4, -1).mean(1))))


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 17, 16))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        ssim_images(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="reduction"):
        mse(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), reduction="sum")
