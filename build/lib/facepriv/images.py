"""Image loading with clear per-file errors: uint8 RGB at the boundary."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facepriv.errors import InputFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 80_000_000  # refuse decompression bombs; ~9000 x 9000
MIN_SIDE = 16


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image file as uint8 RGB (H, W, 3).

    Grayscale, palette, RGBA and 16-bit files are converted. EXIF orientation is applied.

    Raises
    ------
    InputFileError
        Missing file, not an image, truncated data, or an image too large or too small.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise InputFileError(p, f"image too large ({w}x{h}, limit {MAX_PIXELS} pixels)")
                if min(w, h) < MIN_SIDE:
                    raise InputFileError(p, f"image too small ({w}x{h}, need at least {MIN_SIDE} px a side)")
                from PIL import ImageOps

                im = ImageOps.exif_transpose(im)
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, im.convert("RGBA"))
                if im.mode == "I;16" or im.mode == "I":
                    arr16 = np.asarray(im, dtype=np.float64)
                    scale = 65535.0 if arr16.max() > 255 else 255.0
                    im = Image.fromarray((arr16 / scale * 255).round().astype(np.uint8))
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except InputFileError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputFileError(p, f"not a readable image ({type(exc).__name__}: {exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(p, f"corrupt or truncated image ({exc})") from None
    return np.ascontiguousarray(arr)


def save_rgb(image: np.ndarray, path: str | os.PathLike[str], jpeg_quality: int = 95) -> None:
    """Write a uint8 RGB array atomically; format from the extension (JPEG quality configurable)."""
    from facepriv.fileio import atomic_path

    p = Path(path)
    im = Image.fromarray(np.asarray(image, dtype=np.uint8), "RGB")
    with atomic_path(p) as tmp:
        if p.suffix.lower() in (".jpg", ".jpeg"):
            im.save(tmp, format="JPEG", quality=int(jpeg_quality))
        else:
            im.save(tmp, format="PNG")


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """Image files under ``root`` as sorted POSIX paths relative to it (hidden files skipped)."""
    r = Path(root)
    if not r.is_dir():
        raise InputFileError(r, "not a folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(r):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(Path(dirpath, f).relative_to(r).as_posix())
    return sorted(out)
