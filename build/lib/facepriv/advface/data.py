"""Data for AdvFace experiments: aligned crops, client features and identity-disjoint roles.

Identities are split (seeded) into three disjoint groups: ``shadow`` (public data the server trains
its shadow model on), ``attacker`` (public data the attacker trains reconstruction networks on) and
``eval`` (the enrolled users whose stored features are protected and attacked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from facepriv.advface.features import FeatureSet
from facepriv.advface.split import SplitSystem
from facepriv.errors import InputFileError, ParameterError

ROLES = ("shadow", "attacker", "eval")


def identity_roles(identity: np.ndarray, seed: int = 0, fractions: tuple[float, float, float] = (0.3, 0.3, 0.4)) -> np.ndarray:
    """Assign each sample the role of its identity; identities are split disjointly (seeded)."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ParameterError(f"role fractions must be three positive numbers summing to 1, got {fractions}")
    ids = np.unique(identity)
    if len(ids) < 3:
        raise ParameterError(f"need at least 3 identities for disjoint shadow/attacker/eval groups, got {len(ids)}")
    perm = np.random.default_rng(seed).permutation(ids)
    n1 = max(1, round(fractions[0] * len(ids)))
    n2 = max(1, round(fractions[1] * len(ids)))
    role_of = {i: ROLES[0] for i in perm[:n1]} | {i: ROLES[1] for i in perm[n1 : n1 + n2]} | {i: ROLES[2] for i in perm[n1 + n2 :]}
    return np.array([role_of[i] for i in identity])


@dataclass(frozen=True)
class AlignedFaces:
    """Aligned crops with ids and identities, in the order of a feature file."""

    crops: np.ndarray
    ids: np.ndarray
    identity: np.ndarray

    def tensor(self) -> torch.Tensor:
        """Float (N, 3, H, W) in [0, 1]."""
        return torch.from_numpy(self.crops).permute(0, 3, 1, 2).float().div_(255.0)


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
    ids = np.array(ac.ids)
    return AlignedFaces(ac.crops, ids, np.array([ident[i] for i in ac.ids]))


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
