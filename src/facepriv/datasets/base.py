"""The dataset protocol: a component that lists its photos (or holds precomputed templates).

A photo dataset has a ``root`` folder and :meth:`Dataset.samples`, one ``(image, identity,
gender)`` row per photo with the image path relative to ``root`` ("" for an unknown gender). An
embeddings dataset instead returns an :class:`~facepriv.embeddings.EmbeddingSet` from
:meth:`Dataset.embedding_set` and has no photos, so attacks on images do not apply to it.
"""

from __future__ import annotations

from pathlib import Path

from facepriv.base import Component
from facepriv.embeddings import EmbeddingSet


class Dataset(Component):
    """Base of every registered dataset (built in or a plugin)."""

    def samples(self) -> list[tuple[str, str, str]]:
        """``(image relative to root, identity, gender)`` of every photo."""
        raise NotImplementedError(f"dataset {self.name!r} has no photos")

    #: folder the image paths are relative to (None for an embeddings dataset); a subclass sets
    #: it in ``__init__`` or overrides it with a property
    root: str | Path | None = None

    def embedding_set(self) -> EmbeddingSet | None:
        """Precomputed templates (None for a photo dataset)."""
        return None
