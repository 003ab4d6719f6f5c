"""LFW metadata: the ``pairs.txt`` verification protocol and the ``male_names``/``female_names`` lists.

``pairs.txt`` (Huang et al. 2007, "View 2"): a header ``FOLDS N`` (or just ``N`` for a single
set, as in ``pairsDevTrain.txt``), then per fold N genuine lines ``Name i j`` and N impostor lines
``Name1 i Name2 j``. Image files follow LFW's convention ``Name/Name_0001.jpg``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from facepriv.datasets.base import Dataset
from facepriv.datasets.folder import Sample, folder_labels
from facepriv.errors import InputFileError, ParameterError
from facepriv.registry import register


@dataclass(frozen=True)
class LfwPair:
    """One verification pair of the LFW protocol.

    Attributes
    ----------
    fold : int
        0-based fold number.
    path1, path2 : str
        Image paths relative to the LFW root (``Name/Name_0001.jpg``).
    genuine : bool
        True for a same-person pair.
    """

    fold: int
    path1: str
    path2: str
    genuine: bool


def lfw_image_path(name: str, number: int) -> str:
    """LFW's relative image path of picture ``number`` of ``name``: ``Name/Name_0001.jpg``."""
    return f"{name}/{name}_{number:04d}.jpg"


def lfw_identity(file_name: str) -> str:
    """The person of an LFW image file name (``Name_0001.jpg`` or ``Name/Name_0001.jpg``) -> ``Name``."""
    stem = Path(file_name).name.rsplit(".", 1)[0]
    name, _, num = stem.rpartition("_")
    return name if name and num.isdigit() else stem


def _read_lines(p: Path) -> list[str]:
    if not p.is_file():
        raise InputFileError(p, "no such file")
    try:
        return p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputFileError(p, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def _number(p: Path, lineno: int, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise InputFileError(p, f"line {lineno}: {text!r} is not an image number") from None
    if n < 1:
        raise InputFileError(p, f"line {lineno}: image number {n} must be >= 1")
    return n


def read_lfw_pairs(path: str | os.PathLike[str]) -> list[LfwPair]:
    """Read an LFW ``pairs.txt`` into pairs with fold numbers.

    Raises
    ------
    InputFileError
        Missing file, bad header, malformed line (line number given), or a fold that does not
        hold N genuine then N impostor pairs.
    """
    p = Path(path)
    lines = _read_lines(p)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputFileError(p, "empty file; expected a header 'FOLDS N' and the pairs")
    head = lines[0].split()
    try:
        nums = [int(x) for x in head]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2) or min(nums) < 1:
        raise InputFileError(p, f"line 1: header {lines[0]!r} must be 'FOLDS N' (e.g. '10 300') or 'N'")
    folds, n = (1, nums[0]) if len(nums) == 1 else (nums[0], nums[1])
    body = lines[1:]
    if len(body) != folds * 2 * n:
        raise InputFileError(
            p, f"header says {folds} fold(s) x ({n} genuine + {n} impostor) = {folds * 2 * n} pairs, file has {len(body)} lines"
        )
    pairs: list[LfwPair] = []
    for k, line in enumerate(body):
        lineno = k + 2
        fold, pos = divmod(k, 2 * n)
        want_genuine = pos < n
        f = line.split()
        if len(f) == 3 and want_genuine:
            pairs.append(LfwPair(fold, lfw_image_path(f[0], _number(p, lineno, f[1])),
                                 lfw_image_path(f[0], _number(p, lineno, f[2])), True))
        elif len(f) == 4 and not want_genuine:
            pairs.append(LfwPair(fold, lfw_image_path(f[0], _number(p, lineno, f[1])),
                                 lfw_image_path(f[2], _number(p, lineno, f[3])), False))
        else:
            kind = "genuine 'Name i j'" if want_genuine else "impostor 'Name1 i Name2 j'"
            raise InputFileError(p, f"line {lineno}: {line.strip()!r} is not a {kind} pair (fold {fold + 1})")
    return pairs


@dataclass(frozen=True)
class LfwGender:
    """Gender labels from LFW's ``male_names.txt`` / ``female_names.txt``.

    Attributes
    ----------
    by_image : dict of str -> str
        Image file name (``Name_0001.jpg``) -> ``"male"``/``"female"``; ``""`` for the few
        images listed in both files.
    by_identity : dict of str -> str
        Person -> majority gender of their images (``""`` on a tie).
    conflicts : list of str
        Image file names listed in both files.
    """

    by_image: dict[str, str]
    by_identity: dict[str, str]
    conflicts: list[str]

    def gender_of(self, rel_path: str) -> str:
        """Gender of an image path (``Name/Name_0001.jpg``): its own label, else its person's, else ``""``."""
        name = Path(rel_path).name
        if name in self.by_image and self.by_image[name]:
            return self.by_image[name]
        return self.by_identity.get(lfw_identity(name), "")


def read_lfw_gender(male_names: str | os.PathLike[str], female_names: str | os.PathLike[str]) -> LfwGender:
    """Read LFW's gender lists (one image file name per line).

    Raises
    ------
    InputFileError
        Missing or empty file, or a line that is not an image file name.
    """
    by_image: dict[str, str] = {}
    conflicts: list[str] = []
    for path, label in ((male_names, "male"), (female_names, "female")):
        p = Path(path)
        lines = _read_lines(p)
        count = 0
        for lineno, line in enumerate(lines, start=1):
            name = line.strip()
            if not name:
                continue
            if len(name.split()) != 1 or "." not in name:
                raise InputFileError(p, f"line {lineno}: {name!r} is not an image file name like Name_0001.jpg")
            name = Path(name).name
            count += 1
            if name in by_image and by_image[name] not in (label, ""):
                conflicts.append(name)
                by_image[name] = ""
            elif name not in by_image:
                by_image[name] = label
        if count == 0:
            raise InputFileError(p, "no image names in the file")
    votes: dict[str, Counter[str]] = {}
    for name, g in by_image.items():
        if g:
            votes.setdefault(lfw_identity(name), Counter())[g] += 1
    by_identity: dict[str, str] = {}
    for ident, c in votes.items():
        top = c.most_common()
        by_identity[ident] = "" if len(top) > 1 and top[0][1] == top[1][1] else top[0][0]
    return LfwGender(by_image, by_identity, sorted(conflicts))


@register("dataset", "lfw")
class LfwDataset(Dataset):
    """LFW-layout images (``Name/Name_0001.jpg``) with the pairs protocol and gender lists.

    Parameters
    ----------
    root : str
        Folder of the LFW images (one folder per person).
    pairs : str, optional
        ``pairs.txt`` of the verification protocol.
    male_names, female_names : str, optional
        LFW gender lists; both or neither.
    """

    summary = "LFW layout: folder per person, pairs.txt protocol, male/female name lists"

    def __init__(self, root: str, pairs: str | None = None, male_names: str | None = None,
                 female_names: str | None = None) -> None:
        self.root = root
        self.pairs = pairs
        self.male_names = male_names
        self.female_names = female_names

    def validate_params(self) -> None:
        if not Path(self.root).is_dir():
            raise ParameterError(f"dataset 'lfw': root {self.root!r} is not a folder")
        if (self.male_names is None) != (self.female_names is None):
            raise ParameterError("dataset 'lfw': give both male_names and female_names, or neither")

    def samples(self) -> list[Sample]:
        """Every image under ``root`` as (path, person, gender from the lists or "")."""
        self.validate_params()
        lab = folder_labels(self.root)
        gender = (read_lfw_gender(self.male_names, self.female_names)
                  if self.male_names is not None and self.female_names is not None else None)
        return [Sample(im, ident, gender.gender_of(im) if gender else "")
                for im, ident in zip(lab.images, lab.identity, strict=True)]

    def pair_list(self) -> list[LfwPair]:
        """The protocol's pairs (needs ``pairs``)."""
        if self.pairs is None:
            raise ParameterError("dataset 'lfw': no pairs file given")
        return read_lfw_pairs(self.pairs)
