"""Image loading with clear per-file errors: uint8 RGB at the boundary."""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath

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


def path_under(root: str | os.PathLike[str], rel: str) -> Path:
    """``root / rel``, refusing a path that could make facepriv open something other than a photo.

    A dataset's image paths come from listings, labels CSVs and embeddings files. A path written
    as absolute or with ``..`` is refused. A symbolic link (the file or a folder on its way) that
    leads outside ``root`` is followed only to a regular file with an image extension: folders
    of links into a shared photo store work, while a link to ``/etc/passwd``, a device or a FIFO
    placed in a dataset folder is refused without being opened.

    Raises
    ------
    InputFileError
        Naming the offending path (the link itself for a symlink).
    """
    r = Path(root)
    pure = PurePosixPath(str(rel).replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (len(str(rel)) > 1 and str(rel)[1] == ":"):
        raise InputFileError(r / str(rel), f"this path leads outside the dataset root {r}; refused")
    p = r / pure
    real_root = os.path.realpath(r)
    real = os.path.realpath(p)
    if os.path.commonpath([real_root, real]) == real_root:
        return p
    if os.path.isfile(real) and real.lower().endswith(IMAGE_EXTENSIONS):
        return p  # a link into a photo store elsewhere
    what = "a folder" if os.path.isdir(real) else ("no image file" if os.path.exists(real) else "nothing")
    raise InputFileError(p, f"this symbolic link leads outside the dataset root {r} to {real}, which is {what}; refused")


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """Image files under ``root`` as sorted POSIX paths relative to it (hidden files skipped).

    Raises
    ------
    InputFileError
        ``root`` is not a folder, or an image file is a symbolic link leading outside it.
    """
    r = Path(root)
    if not r.is_dir():
        raise InputFileError(r, "not a folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(r):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                rel = Path(dirpath, f).relative_to(r).as_posix()
                if Path(dirpath, f).is_symlink():
                    path_under(r, rel)
                out.append(rel)
    return sorted(out)
