"""Data for AdvFace experiments: aligned crops, client features and identity-disjoint roles.

Identities are split (seeded, by :func:`facepriv.splits.identity_groups` with fractions 0.3 / 0.3
/ 0.4) into three disjoint groups: ``shadow`` (public data the server trains its shadow model on),
``attacker`` (public data the attacker trains reconstruction networks on) and ``eval`` (the
enrolled users whose stored features are protected and attacked).

Everything here works in memory; :func:`load_faces` and :func:`faces_for` are the file edges
(an image folder and a labels CSV) used by the command line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facepriv.advface.features import FeatureSet
from facepriv.advface.split import SplitSystem
from facepriv.errors import InputFileError, ParameterError
from facepriv.splits import identity_groups

ROLES = ("shadow", "attacker", "eval")
#: share of the identities in each role (shadow, attacker, eval)
ROLE_FRACTIONS = (0.3, 0.3, 0.4)


def identity_roles(identity: np.ndarray, seed: int) -> np.ndarray:
    """The role (``shadow`` / ``attacker`` / ``eval``) of each sample's identity, disjoint and seeded.

    Raises
    ------
    ParameterError
        Fewer than 3 identities.
    """
    n = np.unique(np.asarray(identity).astype(str)).size
    if n < 3:
        raise ParameterError(f"need at least 3 identities for disjoint shadow/attacker/eval groups, got {n}")
    return np.asarray(ROLES)[identity_groups(identity, ROLE_FRACTIONS, seed)]


@dataclass(frozen=True)
class AlignedFaces:
    """Aligned crops with ids and identities, in the order of a feature set."""

    crops: np.ndarray
    ids: np.ndarray
    identity: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def tensor(self) -> torch.Tensor:
        """Float (N, 3, H, W) in [0, 1]."""
        return torch.from_numpy(self.crops).permute(0, 3, 1, 2).float().div_(255.0)

    def subset(self, index: np.ndarray) -> AlignedFaces:
        """Rows selected by a boolean mask or an integer index."""
        return AlignedFaces(self.crops[index], self.ids[index], self.identity[index])

    def select(self, ids: Sequence[str]) -> AlignedFaces:
        """The crops of exactly ``ids``, in that order (every id must be here)."""
        pos = {s: i for i, s in enumerate(self.ids.tolist())}
        missing = [s for s in ids if s not in pos]
        if missing:
            raise ParameterError(f"{len(missing)} sample(s) have no aligned crop (e.g. {missing[0]})")
        return self.subset(np.array([pos[s] for s in ids], dtype=np.int64))


def faces_from_crops(crops, identity_of: dict[str, str]) -> AlignedFaces:
    """:class:`AlignedFaces` of aligned crops (:class:`facepriv.pipeline.AlignedCrops`) with identities."""
    if len(crops) == 0:
        raise ParameterError("no face could be aligned in any image")
    ids = np.array(crops.ids)
    return AlignedFaces(crops.crops, ids, np.array([identity_of[i] for i in crops.ids]))


def load_faces(root: str | os.PathLike[str], labels_csv: str | None, recipe: str) -> AlignedFaces:
    """Align every labelled image (cached); identities from the labels CSV or the folder names."""
    from facepriv.datasets.labels import read_labels_csv
    from facepriv.images import list_images
    from facepriv.pipeline import align_images

    if labels_csv:
        labels = read_labels_csv(labels_csv, root=root)
        paths = list(labels.images)
        ident = dict(zip(labels.images, labels.identity))
    else:
        paths = list_images(root)
        ident = {p: p.split("/")[0] for p in paths}
    if not paths:
        raise InputFileError(root, "no images found")
    ac = align_images(root, paths, recipe)
    if len(ac) == 0:
        raise InputFileError(root, "no face could be aligned in any image")
    return faces_from_crops(ac, ident)


def faces_for(features: FeatureSet, root: str | os.PathLike[str], recipe: str) -> AlignedFaces:
    """The aligned crops of exactly the samples of a feature file, in its order."""
    from facepriv.pipeline import align_images

    ac = align_images(root, list(features.ids), recipe)
    if ac.failures:
        bad = ", ".join(p for p, _ in ac.failures[:3])
        raise InputFileError(root, f"{len(ac.failures)} image(s) named in the feature file cannot be aligned here (e.g. {bad}); "
                                   "are the ids relative to this image folder?")
    return AlignedFaces(ac.crops, features.ids, features.identity)


def extract_features(faces: AlignedFaces, system: SplitSystem) -> FeatureSet:
    """Client features of aligned faces."""
    return FeatureSet(system.extract(faces.tensor()), faces.ids, faces.identity, system.model_name, system.cut)


def cap_rows(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of at most ``max_rows`` of ``n`` rows (None or 0 = all)."""
    if max_rows and n > max_rows:
        return np.sort(np.random.default_rng(seed).permutation(n)[:max_rows])
    return np.arange(n)
