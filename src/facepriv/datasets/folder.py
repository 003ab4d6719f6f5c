"""Image folders as datasets: folder per identity (LFW layout) or any folder plus a labels CSV."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from facepriv.datasets.base import Dataset
from facepriv.datasets.labels import Labels, read_labels_csv
from facepriv.errors import InputFileError, ParameterError
from facepriv.images import IMAGE_EXTENSIONS, list_images
from facepriv.registry import register

log = logging.getLogger(__name__)


class Sample(NamedTuple):
    """One image of a dataset: path relative to the root, identity, gender (``""`` if unknown)."""

    image: str
    identity: str
    gender: str


def folder_identity(rel_path: str) -> str:
    """Identity of an image in a folder-per-identity layout: its first folder (``""`` at the top level)."""
    parts = rel_path.split("/")
    return parts[0] if len(parts) > 1 else ""


def folder_labels(root: str | Path) -> Labels:
    """Labels of every image under ``root``, identity = first folder (LFW layout), no gender.

    Raises
    ------
    InputFileError
        ``root`` is not a folder or holds no image files.
    """
    images = list_images(root)
    if not images:
        raise InputFileError(root, f"no image files found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    ident = [folder_identity(im) for im in images]
    flat = sum(1 for i in ident if not i)
    if flat:
        log.warning(
            "%d image(s) sit directly in %s, not in an identity folder: their identity is unknown (''); "
            "use a labels CSV to name it", flat, root,
        )
    return Labels(images, ident, {}, str(root))


def dataset_labels(root: str | Path, labels: str | Path | None = None) -> Labels:
    """The labels of a dataset: from the labels CSV when given (files checked), else from the folders."""
    if labels is not None:
        return read_labels_csv(labels, root=root)
    return folder_labels(root)


@register("dataset", "folder")
class FolderDataset(Dataset):
    """Images under ``root``; identity from ``labels`` (CSV ``image,identity,gender``) or the first folder.

    Parameters
    ----------
    root : str
        Dataset root folder.
    labels : str, optional
        Labels CSV with image paths relative to ``root``; without it every image file under
        ``root`` is used and identity is its first folder (LFW layout), gender unknown.
    """

    summary = "image folder: identity per first folder (LFW layout) or from a labels CSV"

    def __init__(self, root: str, labels: str | None = None) -> None:
        self.root = root
        self.labels = labels

    def validate_params(self) -> None:
        if not isinstance(self.root, (str, Path)) or not Path(self.root).is_dir():
            raise ParameterError(f"dataset 'folder': root {self.root!r} is not a folder")
        if self.labels is not None and not Path(self.labels).is_file():
            raise ParameterError(f"dataset 'folder': labels file {self.labels!r} does not exist")

    def load_labels(self) -> Labels:
        """The dataset's :class:`Labels` (checked: every listed image exists)."""
        self.validate_params()
        return dataset_labels(self.root, self.labels)

    def samples(self) -> list[Sample]:
        """Every sample as (image path relative to root, identity, gender)."""
        lab = self.load_labels()
        gender = lab.gender or [""] * len(lab)
        return [Sample(im, ident, g) for im, ident, g in zip(lab.images, lab.identity, gender, strict=True)]

    def path(self, sample: Sample | str) -> Path:
        """Absolute path of a sample's image."""
        rel = sample.image if isinstance(sample, Sample) else sample
        return Path(self.root).resolve() / rel
