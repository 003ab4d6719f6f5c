"""The embeddings ``.npz`` file: the boundary between running a system and evaluating it.

Format: ``embeddings`` float32 (N, D); ``ids`` str (N,) sample id (relative
image path); ``identity`` str (N,); optional ``gender`` str (N,) in {"male", "female", ""};
``model`` str. Any other 1-d array of length N is kept as an extra attribute column (usable by the
attribute attacks). ``protection`` (a JSON string ``{"name", "params"}``) records which template
protection made the file; it never holds a secret. Files from other tools in this format are
accepted: ``gender``/``model``/``protection`` are optional and numeric labels are converted to str.
A template that is all zeros or holds NaN/inf is refused (no comparator can score it), and so is a
``gender`` column whose length differs from the number of templates.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.errors import InputFileError
from facepriv.fileio import atomic_path, check_writable, read_npz

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("embeddings", "ids", "identity")
#: columns that must have one value per template when present (never silently dropped)
_ROW_KEYS = (*REQUIRED_KEYS[1:], "gender")
_META_KEYS = ("model", "protection")


@dataclass(frozen=True)
class EmbeddingSet:
    """Templates with their sample ids, identities and attribute columns.

    Attributes
    ----------
    embeddings : ndarray of float32, shape (N, D)
    ids : ndarray of str, shape (N,)
        Sample ids, usually image paths relative to the dataset root.
    identity : ndarray of str, shape (N,)
    attributes : dict of str -> ndarray of str, shape (N,)
        Soft-biometric and other label columns (``gender`` among them when known).
    model : str
        Name of the recognition model that produced the embeddings ("" if unknown).
    protection : dict or None
        ``{"name": ..., "params": {...}}`` of the template protection applied, None if unprotected.
    """

    embeddings: np.ndarray
    ids: np.ndarray
    identity: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    model: str = ""
    protection: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.embeddings)
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-d (N, D), got shape {self.embeddings.shape}")
        for name, col in [("ids", self.ids), ("identity", self.identity), *self.attributes.items()]:
            if col.shape != (n,):
                raise ValueError(f"column {name!r} has shape {col.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.embeddings.shape[1])

    @property
    def gender(self) -> np.ndarray | None:
        """The ``gender`` column, or None when absent."""
        return self.attributes.get("gender")

    def attribute(self, name: str) -> np.ndarray:
        """Return attribute column ``name`` (``identity`` included) or raise a clear error."""
        if name == "identity":
            return self.identity
        if name not in self.attributes:
            have = ", ".join(sorted(self.attributes)) or "none"
            raise KeyError(f"attribute {name!r} is not in this embeddings file (attributes: {have})")
        return self.attributes[name]

    def subset(self, index: np.ndarray) -> EmbeddingSet:
        """Rows selected by a boolean mask or an integer index array."""
        return replace(
            self,
            embeddings=self.embeddings[index],
            ids=self.ids[index],
            identity=self.identity[index],
            attributes={k: v[index] for k, v in self.attributes.items()},
        )

    def with_embeddings(self, embeddings: np.ndarray, protection: dict[str, Any] | None) -> EmbeddingSet:
        """Same rows and labels, new templates (e.g. protected ones)."""
        return replace(self, embeddings=np.ascontiguousarray(embeddings, dtype=np.float32), protection=protection)


def _as_str_array(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in "US":
        return arr.astype(str)
    if arr.dtype.kind in "iub":
        return arr.astype(str)
    if arr.dtype.kind == "f":
        return np.array([("" if np.isnan(x) else (str(int(x)) if float(x).is_integer() else str(x))) for x in arr])
    raise ValueError(f"dtype {arr.dtype} cannot be read as labels")


def load_embeddings(path: str | os.PathLike[str]) -> EmbeddingSet:
    """Read and validate an embeddings ``.npz`` (ours or another tool's, same format).

    Raises
    ------
    InputFileError
        Missing file, not an npz, missing keys, wrong shapes, non-finite values, object arrays.
    """
    p = Path(path)
    data = read_npz(p)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise InputFileError(p, f"missing key(s) {', '.join(missing)}; an embeddings file needs {', '.join(REQUIRED_KEYS)}")
    emb = data["embeddings"]
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise InputFileError(p, f"'embeddings' must be a non-empty 2-d array (N, D), got shape {emb.shape}")
    if emb.dtype.kind not in "fiu":
        raise InputFileError(p, f"'embeddings' must be numeric, got dtype {emb.dtype}")
    emb = emb.astype(np.float32, copy=False)
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputFileError(p, f"'embeddings' holds NaN or inf in {int(bad.sum())} row(s), first at row {int(np.argmax(bad))}")
    zero = ~(emb != 0).any(axis=1)
    if zero.any():
        raise InputFileError(
            p, f"'embeddings' holds {int(zero.sum())} all-zero template(s), first at row {int(np.argmax(zero))}; "
            "a zero template has no direction and cannot be compared"
        )
    n = emb.shape[0]
    cols: dict[str, np.ndarray] = {}
    for key, arr in data.items():
        if key in ("embeddings", *_META_KEYS):
            continue
        if arr.ndim == 1 and arr.shape[0] == n:
            try:
                cols[key] = _as_str_array(arr)
            except ValueError as exc:
                raise InputFileError(p, f"column {key!r}: {exc}") from None
        elif key in _ROW_KEYS:
            raise InputFileError(p, f"{key!r} has shape {arr.shape}, expected ({n},) to match 'embeddings'")
        else:
            log.warning("%s: array %r of shape %s is not a column of %d rows; ignored", p, key, arr.shape, n)
    model = str(data["model"]) if "model" in data else ""
    protection = None
    if "protection" in data:
        try:
            protection = json.loads(str(data["protection"]))
        except json.JSONDecodeError:
            raise InputFileError(p, "'protection' is not valid JSON") from None
        if not isinstance(protection, dict) or not isinstance(protection.get("name"), str):
            raise InputFileError(p, "'protection' must be a JSON object with a 'name'")
        if not isinstance(protection.get("params", {}), dict):
            raise InputFileError(p, "'protection' params must be a JSON object")
        if protection.get("name") == "unprotected":
            protection = None
    ids = cols.pop("ids")
    identity = cols.pop("identity")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise InputFileError(p, f"'ids' must be unique sample ids; {dup.size} id(s) occur more than once, e.g. {dup[:3].tolist()}")
    return EmbeddingSet(np.ascontiguousarray(emb), ids, identity, cols, model, protection)


def save_embeddings(es: EmbeddingSet, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``es`` atomically to ``path`` (refuses to overwrite unless asked)."""
    p = check_writable(path, overwrite)
    arrays: dict[str, np.ndarray] = {
        "embeddings": np.ascontiguousarray(es.embeddings, dtype=np.float32),
        "ids": es.ids.astype(str),
        "identity": es.identity.astype(str),
        "model": np.array(es.model),
    }
    for k, v in es.attributes.items():
        arrays[k] = v.astype(str)
    if es.protection is not None:
        arrays["protection"] = np.array(json.dumps(es.protection, sort_keys=True))
    with atomic_path(p, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return p
