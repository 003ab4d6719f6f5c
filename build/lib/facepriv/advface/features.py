"""Feature-map files of a split recognition system (the server's stored features).

``.npz`` with ``features`` float32 (N, C, H, W), ``ids``, ``identity`` (str, N), ``model`` and
``cut`` (which client part made them) and optional ``protection`` (JSON ``{"name", "params"}``).
Commands check ``model``/``cut`` so features from a different cut or model are refused clearly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.errors import InputFileError
from facepriv.fileio import atomic_path, check_writable, read_npz


@dataclass(frozen=True)
class FeatureSet:
    """Client-side feature maps with their sample ids and identities."""

    features: np.ndarray
    ids: np.ndarray
    identity: np.ndarray
    model: str
    cut: str
    protection: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 4:
            raise ValueError(f"features must be 4-d (N, C, H, W), got shape {self.features.shape}")
        n = len(self.features)
        for name, col in (("ids", self.ids), ("identity", self.identity)):
            if col.shape != (n,):
                raise ValueError(f"{name} has shape {col.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index: np.ndarray) -> FeatureSet:
        """Rows selected by a boolean mask or an integer index."""
        return replace(self, features=self.features[index], ids=self.ids[index], identity=self.identity[index])

    def with_features(self, features: np.ndarray, protection: dict[str, Any] | None) -> FeatureSet:
        """Same rows, new (e.g. protected) feature maps."""
        return replace(self, features=np.ascontiguousarray(features, dtype=np.float32), protection=protection)

    def check_compatible(self, model: str, cut: str, where: str = "features") -> None:
        """Raise InputFileError if these features come from another model or cut."""
        if self.model != model or self.cut != cut:
            raise InputFileError(
                where,
                f"features were made by model {self.model!r} cut at {self.cut!r}, but this system is "
                f"{model!r} cut at {cut!r}; re-extract them with the same model and cut",
            )


def save_features(fs: FeatureSet, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write a feature file atomically (refuses to overwrite unless asked)."""
    p = check_writable(path, overwrite)
    arrays = {
        "features": np.ascontiguousarray(fs.features, dtype=np.float32),
        "ids": fs.ids.astype(str),
        "identity": fs.identity.astype(str),
        "model": np.array(fs.model),
        "cut": np.array(fs.cut),
    }
    if fs.protection is not None:
        arrays["protection"] = np.array(json.dumps(fs.protection, sort_keys=True))
    with atomic_path(p, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return p


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read and validate a feature file (no pickle)."""
    p = Path(path)
    data = read_npz(p, "feature")
    missing = [k for k in ("features", "ids", "identity", "model", "cut") if k not in data]
    if missing:
        raise InputFileError(p, f"missing key(s) {', '.join(missing)}; is this a feature file from `facepriv advface extract`?")
    feats = data["features"]
    if feats.ndim != 4 or feats.dtype.kind != "f":
        raise InputFileError(p, f"'features' must be a float (N, C, H, W) array, got {feats.dtype} {feats.shape}")
    if not np.isfinite(feats).all():
        raise InputFileError(p, "'features' holds NaN or inf")
    n = len(feats)
    for k in ("ids", "identity"):
        if data[k].shape != (n,):
            raise InputFileError(p, f"{k!r} has shape {data[k].shape}, expected ({n},)")
    protection = json.loads(str(data["protection"])) if "protection" in data else None
    return FeatureSet(
        feats.astype(np.float32, copy=False), data["ids"].astype(str), data["identity"].astype(str),
        str(data["model"]), str(data["cut"]), protection,
    )
