"""Pictures of the reconstruction attack: (original | reconstruction) grids and RSR heat-maps."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from facepriv.fileio import atomic_path


def pair_grid(originals: np.ndarray, reconstructions: np.ndarray, per_row: int = 4, gap: int = 2) -> np.ndarray:
    """Tile (original | reconstruction) pairs, ``per_row`` pairs per row, white gaps.

    Reconstructions are resized to the originals' size when they differ.
    """
    n = min(len(originals), len(reconstructions))
    if n == 0:
        raise ValueError("nothing to draw: no images")
    h, w = originals.shape[1:3]
    rows = (n + per_row - 1) // per_row
    cols = min(n, per_row)
    pair_w = 2 * w + gap
    out = np.full((rows * (h + gap) + gap, cols * (pair_w + 2 * gap) + gap, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, per_row)
        rec = reconstructions[k]
        if rec.shape[:2] != (h, w):
            rec = np.asarray(Image.fromarray(rec).resize((w, h), Image.BILINEAR))
        y = gap + r * (h + gap)
        x = gap + c * (pair_w + 2 * gap)
        out[y : y + h, x : x + w] = originals[k]
        out[y : y + h, x + w + gap : x + 2 * w + gap] = rec
    return out


def tile(images: np.ndarray, per_row: int = 8, gap: int = 2) -> np.ndarray:
    """Images of one size side by side, ``per_row`` per row, white gaps."""
    n = len(images)
    if n == 0:
        raise ValueError("nothing to draw: no images")
    h, w = images.shape[1:3]
    rows, cols = (n + per_row - 1) // per_row, min(n, per_row)
    out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, per_row)
        out[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w] = images[k]
    return out


def column_grid(columns: Sequence[np.ndarray], gap: int = 2, titles: Sequence[str] | None = None,
                cell: int | None = None) -> np.ndarray:
    """Samples as rows, one column per source (e.g. original, unprotected, PE-MIU 32, ...).

    ``titles`` (one per column) are written in a header band; ``cell`` resizes every image to
    ``cell`` x ``cell`` pixels (default: the first column's size), so short titles fit.
    """
    from PIL import ImageDraw, ImageFont

    n = min(len(c) for c in columns)
    h, w = (cell, cell) if cell else columns[0].shape[1:3]
    head = 18 if titles else 0
    out = np.full((head + n * (h + gap) + gap, len(columns) * (w + gap) + gap, 3), 255, np.uint8)
    for j, col in enumerate(columns):
        for i in range(n):
            img = col[i]
            if img.shape[:2] != (h, w):
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
            y, x = head + gap + i * (h + gap), gap + j * (w + gap)
            out[y : y + h, x : x + w] = img
    if not titles:
        return out
    if len(titles) != len(columns):
        raise ValueError(f"{len(titles)} titles for {len(columns)} columns")
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    try:  # Pillow >= 10.1 ships a scalable default font
        font = ImageFont.load_default(size=12)
    except TypeError:
        font = ImageFont.load_default()
    for j, t in enumerate(titles):
        x0 = gap + j * (w + gap)
        tw = draw.textlength(t, font=font)
        draw.text((x0 + max(0.0, (w - tw) / 2), 2), t, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a uint8 RGB image as PNG atomically (folders created)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, np.uint8), "RGB").save(tmp, format="PNG", optimize=True)


def rsr_heatmap(
    table: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
    row_name: str = "K (block size)",
    col_name: str = "P (moved blocks)",
) -> None:
    """Heat-map of RSR values in % (NaN cells = combination not run), like WIFS 2023 Fig. 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(col_labels), 1.0 + 0.7 * len(row_labels)), dpi=110)
    masked = np.ma.masked_invalid(table)
    im = ax.imshow(masked, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            if np.isfinite(table[i, j]):
                ax.text(j, i, f"{table[i, j]:.1f}", ha="center", va="center", color="white" if table[i, j] < 60 else "black", fontsize=9)
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels))
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="RSR (%)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
