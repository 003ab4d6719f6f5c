"""Plots of the AdvFace experiment: PSNR-vs-accuracy trade-off (Fig. 4) and reconstruction grids (Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facepriv.fileio import atomic_path


def plot_tradeoff(rows: list[dict], path: Path) -> None:
    """Accuracy (x) against attacker PSNR (y) for each eps of the sweep, points labelled by eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    acc = [100 * r["accuracy"] for r in rows]
    psnr = [r["psnr"] for r in rows]
    ax.plot(acc, psnr, "o-", color="tab:blue")
    for r, x, y in zip(rows, acc, psnr):
        ax.annotate(f"eps={r['eps']:.2f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("verification accuracy (%)")
    ax.set_ylabel("attacker PSNR (dB)  (lower = more private)")
    ax.set_title("AdvFace privacy-utility trade-off")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def plot_reconstruction_grid(originals: torch.Tensor, recons: dict[str, torch.Tensor], path: Path) -> None:
    """Rows = samples; columns = original then the attacker's reconstruction per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    cols = ["original", *recons]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.4 * len(cols), 1.4 * n), squeeze=False)
    for r in range(n):
        for c, name in enumerate(cols):
            img = originals[r] if name == "original" else recons[name][r]
            axes[r][c].imshow(np.clip(img.permute(1, 2, 0).numpy(), 0, 1))
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(name, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
