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
    InputFileError
        If the path is a folder (a file cannot replace it), or its parent is a file.
    """
    p = Path(path)
    if p.is_dir():
        raise InputFileError(p, "is a folder; the output is a file: give a file path")
    if p.exists() and not overwrite:
        raise OutputExistsError(p)
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputFileError(parent, "is a file, so it cannot hold the output " + p.name)
    return p


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two paths name one file: equal after resolving links, or the same inode (hard link)."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def check_not_input(out: str | os.PathLike[str], inputs: list[str | os.PathLike[str]], flag: str = "--out") -> None:
    """Refuse an output path that is one of the inputs (also through a link): writing it would destroy the input.

    Raises
    ------
    ParameterError
        Even when overwriting was requested.
    """
    from facepriv.errors import ParameterError

    for inp in inputs:
        if same_file(out, inp):
            raise ParameterError(f"{flag} {out} is the input file {inp}; writing it would destroy the input, "
                                 "so it is refused even with --overwrite: choose another output path")


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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's message as one short line, for error messages that must stay on one line.

    Library messages of YAML, torch or zip errors span several lines (torch's even advises
    ``weights_only=False``, which would run code from the file); this keeps the first line that
    says what is wrong, drops such advice, and collapses whitespace.
    """
    text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if "weights_only" not in ln and "pickle.load" not in ln] or lines[:1]
    out = " ".join(" ".join(lines[:2]).split())
    return out if len(out) <= limit else out[: limit - 3] + "..."


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
        Missing or unreadable file, a file that is not an npz archive (a single ``.npy`` array
        or a text file renamed ``.npz`` says so), damaged members, or arrays that would need
        pickle (object arrays).
    """
    p = Path(path)
    kind = f"{what} .npz" if what else ".npz"
    if not p.is_file():
        raise InputFileError(p, "no such file" if not p.exists() else "not a file")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise InputFileError(p, f"cannot read ({exc.strerror or exc})") from None
    if head.startswith(_NPY_MAGIC):
        raise InputFileError(p, f"is a single .npy array, not an npz archive; a {kind} file holds named arrays (np.savez)")
    if not head.startswith(_ZIP_MAGIC):
        what_it_is = "an empty file" if not head else "not a zip archive"
        raise InputFileError(p, f"not an npz archive ({what_it_is}); expected a {kind} file written by np.savez")
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as npz:
            for k in npz.files:
                arr = npz[k]
                if not isinstance(arr, np.ndarray):
                    raise InputFileError(p, f"member {k!r} is not a .npy array; not a readable {kind} file")
                out[k] = arr
    except InputFileError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays need pickle, which we refuse
            raise InputFileError(p, f"not a readable {kind} file: loading it would need pickle, which is refused") from None
        raise InputFileError(p, f"damaged {kind} file ({one_line(exc)})") from None
    except (zipfile.BadZipFile, OSError, EOFError, TypeError, KeyError, RuntimeError, MemoryError) as exc:
        raise InputFileError(p, f"not a readable {kind} file ({one_line(exc)})") from None
    return out


#: name of the lock file a writer holds in its output folder
LOCK_FILE = ".facepriv.lock"


class FolderLock:
    """An exclusive, non-blocking lock on an output folder, held while one process writes to it.

    A second writer (another ``facepriv run`` on the same ``--out``, a second training into the
    same run folder) is refused with one line naming the folder and the holder's pid. The lock
    is released by the kernel when the holder dies, so a killed run never blocks its resume.

    Parameters
    ----------
    folder : path
        The output folder (created if missing).
    what : str
        What holds the lock, for the message ("facepriv run", "training").
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "facepriv run") -> None:
        self.path = Path(folder) / LOCK_FILE
        self.what = what
        self._fh: Any = None

    def __enter__(self) -> FolderLock:
        import fcntl

        from facepriv.errors import FacePrivError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            fh.close()
            raise FacePrivError(f"{self.path.parent}: another {self.what} ({who}) is writing to this folder; "
                                "wait for it to finish or choose another output folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
