"""The labels CSV (``image,identity,gender`` + any extra columns): reading, checking, writing.

Image paths are relative to the dataset root, POSIX style. ``gender`` values are normalised to
``"male"``, ``"female"`` or ``""`` (unknown). Extra columns are kept as string attributes (the
attribute attacks can use them).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from facepriv.errors import InputFileError
from facepriv.fileio import check_writable, write_text_atomic

REQUIRED_COLUMNS = ("image", "identity")
_GENDER = {
    "male": "male", "m": "male", "man": "male", "1": "male",
    "female": "female", "f": "female", "woman": "female", "-1": "female", "0": "female",
    "": "", "unknown": "", "na": "", "n/a": "", "?": "",
}
_SHOW = 10  # how many offending items an error message lists


@dataclass(frozen=True)
class Labels:
    """Rows of a labels CSV, column by column.

    Attributes
    ----------
    images : list of str
        Image paths relative to the dataset root (POSIX, unique).
    identity : list of str
    attributes : dict of str -> list of str
        ``gender`` (normalised) when the file has it, plus every extra column.
    source : str
        Where the labels came from (file path), for messages.
    """

    images: list[str]
    identity: list[str]
    attributes: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def gender(self) -> list[str] | None:
        """The normalised gender column, or None if absent."""
        return self.attributes.get("gender")

    def index(self) -> dict[str, int]:
        """Row number of each image path."""
        return {im: i for i, im in enumerate(self.images)}

    def row(self, i: int) -> dict[str, str]:
        """Row ``i`` as a dict (image, identity and attributes)."""
        return {"image": self.images[i], "identity": self.identity[i], **{k: v[i] for k, v in self.attributes.items()}}


def normalise_gender(value: str) -> str | None:
    """``"male"``, ``"female"``, ``""`` (unknown), or None when the value is not understood."""
    return _GENDER.get(value.strip().lower())


def clean_rel_path(value: str) -> str | None:
    """A POSIX relative path without ``./``, or None if it is empty, absolute or escapes with ``..``."""
    v = value.strip().replace("\\", "/")
    if not v:
        return None
    p = PurePosixPath(v)
    if p.is_absolute() or ".." in p.parts or (len(v) > 1 and v[1] == ":"):
        return None
    return p.as_posix()


def read_labels_csv(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Labels:
    """Read and check a labels CSV ``image,identity[,gender][,extra...]``.

    Parameters
    ----------
    path : path-like
        The CSV (UTF-8, a BOM is accepted; header row required).
    root : path-like, optional
        Dataset root; when given, every listed image must exist under it.

    Raises
    ------
    InputFileError
        Missing/empty file, missing header columns, bad rows (line numbers given), duplicate
        images, unknown gender values, or (with ``root``) images that do not exist (listed).
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such labels file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(p, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputFileError(p, f"cannot read ({exc.strerror})") from None
    if not text.strip():
        raise InputFileError(p, "empty file; expected a header line 'image,identity,gender' and one row per image")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InputFileError(p, f"not a valid CSV file ({exc})") from None
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputFileError(
            p, f"header {','.join(header)!r} lacks column(s) {', '.join(missing)}; expected 'image,identity,gender'"
        )
    dup_cols = sorted({h for h in header if header.count(h) > 1})
    if dup_cols or "" in header:
        raise InputFileError(p, f"header has duplicate or empty column names: {dup_cols or ['(empty)']}")
    col = {h: i for i, h in enumerate(header)}
    extra = [h for h in header if h not in REQUIRED_COLUMNS]
    images: list[str] = []
    identity: list[str] = []
    attrs: dict[str, list[str]] = {h: [] for h in extra}
    seen: dict[str, int] = {}
    dups: list[str] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        if len(row) != len(header):
            raise InputFileError(p, f"line {lineno}: {len(row)} field(s), the header has {len(header)}")
        img = clean_rel_path(row[col["image"]])
        if img is None:
            raise InputFileError(
                p, f"line {lineno}: image path {row[col['image']]!r} must be a non-empty path relative to the dataset root"
            )
        ident = row[col["identity"]].strip()
        if not ident:
            raise InputFileError(p, f"line {lineno}: empty identity for image {img}")
        if img in seen:
            dups.append(f"{img} (lines {seen[img]} and {lineno})")
            continue
        seen[img] = lineno
        images.append(img)
        identity.append(ident)
        for h in extra:
            v = row[col[h]].strip()
            if h == "gender":
                g = normalise_gender(v)
                if g is None:
                    raise InputFileError(p, f"line {lineno}: gender {v!r} not understood; use male, female or empty")
                v = g
            attrs[h].append(v)
    if dups:
        more = f" and {len(dups) - _SHOW} more" if len(dups) > _SHOW else ""
        raise InputFileError(p, f"{len(dups)} duplicate image(s): {'; '.join(dups[:_SHOW])}{more}")
    if not images:
        raise InputFileError(p, "has a header but no rows")
    if root is not None:
        check_images_exist(images, root, p)
    return Labels(images, identity, attrs, str(p))


def check_images_exist(images: list[str], root: str | os.PathLike[str], source: object) -> None:
    """Raise InputFileError listing the images that do not exist under ``root``.

    A listed image that is a symbolic link leading outside ``root`` is refused (the error names
    the link), never opened.
    """
    from facepriv.images import path_under

    r = Path(root)
    if not r.is_dir():
        raise InputFileError(r, "dataset root is not a folder")
    for im in images:
        path_under(r, im)
    absent = [im for im in images if not (r / im).is_file()]
    if absent:
        more = f" and {len(absent) - _SHOW} more" if len(absent) > _SHOW else ""
        raise InputFileError(
            source, f"{len(absent)} of {len(images)} listed image(s) do not exist under {r}: {', '.join(absent[:_SHOW])}{more}"
        )


def write_labels_csv(labels: Labels, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``labels`` as a CSV atomically (``image,identity`` then the attribute columns)."""
    p = check_writable(path, overwrite)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = list(labels.attributes)
    w.writerow(["image", "identity", *cols])
    for i in range(len(labels)):
        w.writerow([labels.images[i], labels.identity[i], *(labels.attributes[c][i] for c in cols)])
    write_text_atomic(p, buf.getvalue())
    return p
