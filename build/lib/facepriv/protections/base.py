"""Template protections and their comparators.

A template protection is a component with ``fit(es)`` / ``transform(X)`` and a ``comparator()``
that scores protected templates against each other. Protected embeddings files record
``{"name", "params"}`` (public parameters only, never a secret) so later commands recover the
comparator with :func:`comparator_for`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.base import Component
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.registry import create, register


class Comparator:
    """Similarity of templates; higher means more likely the same person."""

    name = "cosine"

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """All-vs-all scores, shape (len(a), len(b))."""
        return _normalise(a) @ _normalise(b).T

    def paired(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise scores of a[i] vs b[i], shape (N,)."""
        if a.shape != b.shape:
            raise ValueError(f"paired comparison needs equal shapes, got {a.shape} and {b.shape}")
        return np.einsum("ij,ij->i", _normalise(a), _normalise(b))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


class CosineComparator(Comparator):
    """Cosine similarity (the comparator of unprotected templates)."""


class TemplateProtection(Component):
    """Base class: ``fit`` (optional state), ``transform`` (protect templates), ``comparator``.

    Parameters common to all: ``seed`` drives every random choice, so the same seed gives the
    same protected templates. Where the seed acts as a key, list it in ``secret_params``.
    """

    def fit(self, es: EmbeddingSet | None = None) -> TemplateProtection:
        """Learn or draw state that depends on the data dimension (default: nothing)."""
        self.validate_params()
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Protect templates (N, D) -> (N, D')."""
        raise NotImplementedError

    def comparator(self) -> Comparator:
        """How protected templates are compared."""
        return CosineComparator()

    def record(self) -> dict[str, Any]:
        """What a protected file records: name and public parameters."""
        return {"name": self.name, "params": self.public_params()}

    def protect(self, es: EmbeddingSet) -> EmbeddingSet:
        """Protect an embeddings set, recording the protection in it."""
        if es.protection is not None:
            raise ParameterError(
                f"these embeddings are already protected with {es.protection.get('name')!r}; protect unprotected templates"
            )
        self.fit(es)
        out = self.transform(es.embeddings)
        return es.with_embeddings(out, None if self.name == "unprotected" else self.record())


@register("protection", "unprotected")
class Unprotected(TemplateProtection):
    """Identity protection: templates are stored as they are (the baseline)."""

    summary = "No protection: templates stored as they are; cosine comparator."

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)


def protection_from_record(record: dict[str, Any] | None) -> TemplateProtection:
    """Re-create the protection a file records (secrets, if any, are not recovered)."""
    if record is None:
        return Unprotected()
    params = {k: v for k, v in dict(record.get("params", {})).items() if v != "<secret>"}
    return create("protection", str(record["name"]), params)  # type: ignore[return-value]


def comparator_for(es: EmbeddingSet) -> Comparator:
    """The comparator matching the protection recorded in an embeddings set."""
    return protection_from_record(es.protection).comparator()
