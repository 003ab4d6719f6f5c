"""Plots of the AdvFace experiment: PSNR-vs-accuracy trade-off (Fig. 4) and reconstruction grids (Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facepriv.fileio import atomic_path


def plot_tradeoff(rows: list[dict], path: Path, unprotected: dict | None = None) -> None:
    """Paper Fig. 4: attacker PSNR and SRRA (left) and verification accuracy (right) against eps.

    ``unprotected`` (a Table 1 row), when given, is drawn as dashed reference lines, so the cost
    in accuracy and the gain in privacy read against the unprotected system.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [r["eps"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(eps, [r["psnr"] for r in rows], "o-", color="tab:blue", label="attacker PSNR (dB)")
    ax.set_xlabel("AdvFace noise bound eps")
    ax.set_ylabel("attacker PSNR (dB)  (lower = more private)", color="tab:blue")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    acc = np.array([100 * r["accuracy"] for r in rows])
    std = np.array([100 * r.get("accuracy_std", 0.0) for r in rows])
    right.plot(eps, acc, "s-", color="tab:green", label="verification accuracy (%)")
    right.fill_between(eps, acc - std, acc + std, color="tab:green", alpha=0.15)
    right.plot(eps, [100 * r["srra"] for r in rows], "^-", color="tab:red", label="SRRA (%)")
    right.set_ylabel("accuracy / SRRA (%)")
    right.set_ylim(0, 101)
    if unprotected is not None:
        ax.axhline(unprotected["psnr"], color="tab:blue", ls="--", lw=1)
        right.axhline(100 * unprotected["accuracy"], color="tab:green", ls="--", lw=1,
                      label="unprotected (dashed)")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower left")
    ax.set_title("AdvFace privacy-utility trade-off")
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
