"""Training/evaluation data of the reconstruction attack: embeddings paired with aligned crops.

The decoder's targets are the aligned face crops the embeddings were computed from: for every
embedding id (a path relative to the image root) the crop is re-made with the model's alignment
recipe (:func:`facepriv.pipeline.align_images`, which caches crops on disk) and resized to the
decoder's output size. :func:`pair_crops` pairs templates with crops already in memory (what the
registered attack gets from the runner); :func:`load_paired` does the same from an image folder
(the command line). Identity-disjoint splits come from :mod:`facepriv.splits`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import InputFileError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairedData:
    """Embedding rows with their aligned crops (same order).

    Attributes
    ----------
    es : EmbeddingSet
        The (unprotected) embeddings of the rows that have a crop.
    crops : ndarray of uint8, shape (N, H, W, 3)
        Aligned crops at the recognition model's input size.
    """

    es: EmbeddingSet
    crops: np.ndarray

    def __len__(self) -> int:
        return len(self.es)

    def subset(self, index: np.ndarray) -> PairedData:
        """Rows selected by a mask or index array."""
        return PairedData(self.es.subset(index), self.crops[index])


def check_embeddings(es: EmbeddingSet, path: str | os.PathLike[str], expect_dim: int | None = None) -> None:
    """Validate an embeddings set for the reconstruction attack (clear errors naming ``path``).

    Raises
    ------
    InputFileError
        Duplicate ids, fewer than 2 identities, a protected file where templates must be
        unprotected, or a dimension that differs from ``expect_dim``.
    """
    uniq, counts = np.unique(es.ids, return_counts=True)
    if (counts > 1).any():
        raise InputFileError(path, f"{int((counts > 1).sum())} duplicate sample id(s), e.g. {uniq[counts > 1][0]!r}")
    if es.protection is not None:
        raise InputFileError(
            path,
            f"holds templates protected with {es.protection.get('name')!r}; the reconstruction attack needs the "
            "unprotected embeddings (it applies the protection itself, and scores against the originals)",
        )
    if expect_dim is not None and es.dim != expect_dim:
        raise InputFileError(path, f"embeddings have dimension {es.dim}, but the decoder was trained on {expect_dim}-d embeddings")
    if len(np.unique(es.identity)) < 2:
        raise InputFileError(path, "needs at least 2 identities (the split and the RSR thresholds are by identity)")


def load_paired(
    es: EmbeddingSet,
    root: str | os.PathLike[str],
    recipe: str,
    embeddings_path: str | os.PathLike[str] = "embeddings",
) -> PairedData:
    """Pair every embedding with its aligned crop from ``root``.

    Raises
    ------
    InputFileError
        When ids do not name images under ``root`` (a mismatch between the embeddings file and the
        image folder), or when no crop at all could be made.
    """
    from facepriv.pipeline import align_images

    r = Path(root)
    if not r.is_dir():
        raise InputFileError(r, "image root is not a folder")
    missing = [i for i in es.ids if not (r / i).is_file()]
    if missing:
        raise InputFileError(
            embeddings_path,
            f"{len(missing)} of {len(es)} sample ids do not name an image under {r} (e.g. {missing[0]!r}); "
            "are the embeddings from this image folder?",
        )
    return pair_crops(es, align_images(r, _alignment_list(r, es.ids), recipe), r)


def pair_crops(es: EmbeddingSet, aligned, where: str | os.PathLike[str] = "images") -> PairedData:
    """Pair every template of ``es`` with its crop in ``aligned`` (rows without a crop are left out).

    Parameters
    ----------
    es : EmbeddingSet
        Templates whose ids name the aligned images.
    aligned : AlignedCrops
        Crops with their ids (:class:`facepriv.pipeline.AlignedCrops`), any order, any superset.
    where : path-like
        Named in the error when no template has a crop.

    Raises
    ------
    InputFileError
        No template has a crop.
    """
    pos = {str(i): k for k, i in enumerate(aligned.ids)}
    keep = np.array([str(i) in pos for i in es.ids], dtype=bool)
    if not keep.any():
        raise InputFileError(where, f"no face could be aligned with recipe {aligned.recipe!r} for any of the {len(es)} ids")
    if not keep.all():
        log.warning("%d of %d images could not be aligned and are left out", int((~keep).sum()), len(es))
    sub = es.subset(keep)
    crops = np.stack([aligned.crops[pos[str(i)]] for i in sub.ids])
    return PairedData(sub, crops)


def _alignment_list(root: Path, ids: np.ndarray, slack: float = 1.25) -> list[str]:
    """The image list to align: the dataset's own list when ``ids`` is most of it, else ``ids``.

    ``facepriv embed`` aligns every image of the labels CSV (or folder) and caches the crops under
    a key of that exact list; embeddings files only hold the images that gave a face. Aligning
    the dataset's list (at most ``slack`` times more images) reuses that cache instead of
    detecting every face again.
    """
    wanted = [str(i) for i in ids]
    need = set(wanted)
    candidates = []
    if (root / "labels.csv").is_file():
        try:
            from facepriv.datasets.folder import dataset_labels

            candidates.append(list(dataset_labels(root, root / "labels.csv").images))
        except (ImportError, InputFileError, ValueError) as exc:
            log.debug("labels.csv not usable for the crops cache (%s)", exc)
    for cand in candidates:
        if len(cand) <= slack * len(wanted) and need.issubset(cand):
            return cand
    return wanted


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 crops (N, H, W, 3) to (N, size, size, 3) with area-averaging (Pillow BOX)."""
    crops = np.asarray(crops)
    if crops.shape[1:3] == (size, size):
        return crops
    out = np.empty((len(crops), size, size, 3), dtype=np.uint8)
    for k, c in enumerate(crops):
        out[k] = np.asarray(Image.fromarray(c).resize((size, size), Image.BOX))
    return out
