"""CelebA metadata: ``identity_CelebA.txt`` and ``list_attr_celeba.txt`` -> labels rows.

``identity_CelebA.txt``: one ``000001.jpg 2880`` line per image (file name, identity number).
``list_attr_celeba.txt``: first line the image count, second line the 40 attribute names, then
``000001.jpg -1 1 ...`` (values -1/1). The Kaggle CSV variant (``image_id,5_o_Clock_Shadow,...``)
is accepted too. Gender is the ``Male`` attribute: 1 -> ``"male"``, -1 -> ``"female"``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from facepriv.datasets.labels import Labels
from facepriv.errors import InputFileError, ParameterError


def _lines(p: Path) -> list[str]:
    if not p.is_file():
        raise InputFileError(p, "no such file")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputFileError(p, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    if not any(s.strip() for s in lines):
        raise InputFileError(p, "empty file")
    return lines


def read_celeba_identities(path: str | os.PathLike[str]) -> dict[str, str]:
    """Image file name -> identity number (as str) from ``identity_CelebA.txt``.

    Raises
    ------
    InputFileError
        Malformed line (line number given) or an image listed twice.
    """
    p = Path(path)
    out: dict[str, str] = {}
    for lineno, line in enumerate(_lines(p), start=1):
        f = line.split()
        if not f:
            continue
        if len(f) != 2 or not f[1].isdigit():
            raise InputFileError(p, f"line {lineno}: {line.strip()!r} is not 'IMAGE IDENTITY' (e.g. '000001.jpg 2880')")
        if f[0] in out:
            raise InputFileError(p, f"line {lineno}: image {f[0]} is listed twice")
        out[f[0]] = f[1]
    return out


def read_celeba_attributes(path: str | os.PathLike[str]) -> tuple[list[str], dict[str, list[int]]]:
    """Attribute names and image file name -> values (-1/1) from ``list_attr_celeba.txt``.

    Raises
    ------
    InputFileError
        Missing header, a row with the wrong number of values, or a value other than -1/1 (0 is
        read as -1, as in some re-exports).
    """
    p = Path(path)
    lines = [s for s in _lines(p)]
    csv_style = "," in lines[0]
    if csv_style:
        names = [h.strip() for h in lines[0].split(",")][1:]
        start = 1
    else:
        first = lines[0].split()
        if len(first) == 1 and first[0].isdigit():
            if len(lines) < 2:
                raise InputFileError(p, "line 2: missing the attribute names line")
            names, start = lines[1].split(), 2
        else:
            names, start = first, 1
    if not names or any(n.lstrip("-").isdigit() for n in names):
        raise InputFileError(p, f"line {start}: expected attribute names (e.g. '5_o_Clock_Shadow ... Young')")
    rows: dict[str, list[int]] = {}
    for lineno, line in enumerate(lines[start:], start=start + 1):
        f = [x.strip() for x in line.split(",")] if csv_style else line.split()
        if not f or not f[0]:
            continue
        if len(f) != len(names) + 1:
            raise InputFileError(p, f"line {lineno}: {len(f) - 1} value(s), expected {len(names)} attributes")
        try:
            vals = [int(v) for v in f[1:]]
        except ValueError:
            raise InputFileError(p, f"line {lineno}: attribute values must be -1 or 1") from None
        if any(v not in (-1, 0, 1) for v in vals):
            raise InputFileError(p, f"line {lineno}: attribute values must be -1 or 1")
        rows[f[0]] = [1 if v == 1 else -1 for v in vals]
    if not rows:
        raise InputFileError(p, "no attribute rows")
    return names, rows


def celeba_labels(
    identity_file: str | os.PathLike[str],
    attr_file: str | os.PathLike[str] | None = None,
    images: list[str] | None = None,
    path_format: str = "{image}",
    gender_by: str = "image",
) -> Labels:
    """Labels rows (image, identity, gender) for CelebA images.

    Parameters
    ----------
    identity_file : path-like
        ``identity_CelebA.txt``.
    attr_file : path-like, optional
        ``list_attr_celeba.txt``; gives the ``gender`` column (``""`` for images it lacks).
    images : list of str, optional
        CelebA file names to keep (default: all in ``identity_file``, in its order).
    path_format : str
        How an image's path under the dataset root is formed from ``image`` (file name) and
        ``identity``; e.g. ``"{identity:0>5}/{image}"`` for identity folders as in celeba-crops.
    gender_by : {"image", "identity"}
        Each image's own ``Male`` value, or the majority over the identity's labelled images
        (``""`` on a tie).

    Raises
    ------
    InputFileError, ParameterError
    """
    if gender_by not in ("image", "identity"):
        raise ParameterError(f"gender_by must be 'image' or 'identity', got {gender_by!r}")
    ids = read_celeba_identities(identity_file)
    names = list(ids) if images is None else list(images)
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise InputFileError(identity_file, f"{len(unknown)} image(s) not listed: {', '.join(unknown[:10])}")
    try:
        paths = [path_format.format(image=n, identity=ids[n]) for n in names]
    except (KeyError, IndexError, ValueError) as exc:
        raise ParameterError(f"path_format {path_format!r} is invalid ({exc}); fields are image and identity") from None
    attrs: dict[str, list[str]] = {}
    if attr_file is not None:
        attr_names, rows = read_celeba_attributes(attr_file)
        if "Male" not in attr_names:
            raise InputFileError(attr_file, "has no 'Male' attribute column")
        k = attr_names.index("Male")
        per_image = {n: ("male" if rows[n][k] == 1 else "female") if n in rows else "" for n in names}
        if gender_by == "identity":
            # majority over every labelled image of the identity, not only the selected ones
            votes: dict[str, Counter[str]] = {}
            for n, ident in ids.items():
                if n in rows:
                    votes.setdefault(ident, Counter())["male" if rows[n][k] == 1 else "female"] += 1
            major = {}
            for ident, c in votes.items():
                top = c.most_common()
                major[ident] = "" if len(top) > 1 and top[0][1] == top[1][1] else top[0][0]
            attrs["gender"] = [major.get(ids[n], "") for n in names]
        else:
            attrs["gender"] = [per_image[n] for n in names]
    return Labels(paths, [ids[n] for n in names], attrs, str(identity_file))
