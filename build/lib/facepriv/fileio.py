"""Atomic writes and safe reads shared by every command.

Results are written to a temporary file in the target folder and renamed into place, so a crash
never leaves a partial file and readers never see one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.errors import InputFileError, OutputExistsError


def check_writable(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Return ``path`` as a Path, refusing an existing file unless ``overwrite``.

    Raises
    ------
    OutputExistsError
        If the path exists and ``overwrite`` is false.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(p)
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` keeps the extension for writers that append one (``np.savez`` adds ``.npz``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sfx = target.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{sfx}", dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; results should get the usual permissions (umask applies)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """Serialise ``obj`` (dataclasses already converted) with numpy scalars as plain numbers."""
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; numpy numbers become JSON numbers."""
    write_text_atomic(path, to_json(obj))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_npz(path: str | os.PathLike[str], what: str = "") -> dict[str, np.ndarray]:
    """All arrays of an untrusted ``.npz`` file, never unpickling anything.

    Parameters
    ----------
    path
        The file.
    what
        Kind of file for the error message (e.g. ``"feature"``).

    Raises
    ------
    InputFileError
        Missing file, not an npz, or arrays that would need pickle (object arrays).
    """
    p = Path(path)
    kind = f"{what} .npz" if what else ".npz"
    if not p.is_file():
        raise InputFileError(p, "no such file")
    try:
        with np.load(p, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputFileError(p, f"not a readable {kind} file ({exc})") from None
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise InputFileError(p, f"not a readable {kind} file: loading it would need pickle, which is refused ({exc})") from None
