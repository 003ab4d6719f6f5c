"""Template protections and their comparators.

A template protection is a component with ``fit(es)`` / ``transform(X)`` and a ``comparator()``
that scores protected templates against each other. Protected embeddings files record
``{"name", "params"}`` (public parameters only, never a secret) so later commands recover the
comparator with :func:`comparator_for`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from facepriv.base import Component
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.registry import create, register


class Comparator:
    """Similarity of templates; higher means more likely the same person."""

    name = "cosine"
    #: True when ``pairwise`` scores each pair on its own, at a cost per pair well above a dot
    #: product, so that a pair's score does not depend on what else is in the call (PE-MIU: bit for
    #: bit on its compiled and Numba paths). All-pairs scoring then skips most of the lower triangle
    #: (:func:`facepriv.metrics.scores.scores_all_pairs`).
    per_pair = False

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

    Attributes
    ----------
    kind : str
        ``"template"`` (protects stored embeddings) or ``"feature"`` (protects intermediate
        feature maps sent by a client, AdvFace-style); attacks declare which kinds they attack.
    threat_model : str
        ``"keyless"`` (nothing secret: the attacker knows everything) or ``"key_secret"`` (the
        parameters in ``secret_params`` are a key the attacker does not have).
    """

    kind: ClassVar[str] = "template"
    threat_model: ClassVar[str] = "keyless"

    def check_input_dim(self, dim: int) -> None:
        """Raise ParameterError if templates of dimension ``dim`` cannot be protected (default: any)."""

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
    """Identity protection: templates are stored as they are (the baseline).

    Parameters
    ----------
    seed : int
        Unused (nothing is random); kept so every protection row of a config takes a seed.
    """

    summary = "No protection: templates stored as they are; cosine comparator."

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ParameterError(f"templates must be 2-d (N, D), got shape {x.shape}")
        return x

    def invert(self, protected: np.ndarray, attacker_templates: np.ndarray,
               identity: np.ndarray | None = None) -> np.ndarray:
        """Key-disclosure inversion of the baseline: the stored templates are the templates."""
        return self.transform(protected).copy()


class FeatureProtection(TemplateProtection):
    """A protection of intermediate feature maps (N, C, H, W) sent from a client to a server.

    ``transform`` takes and returns arrays of the feature maps' shape; ``fit`` may load what the
    protection needs (e.g. AdvFace's shadow decoder). Evaluated by attacks that declare
    ``applies_to`` containing ``"feature"``.
    """

    kind: ClassVar[str] = "feature"


def build_protection(name: str | None, params: dict[str, Any] | None = None) -> TemplateProtection:
    """The one way to build a protection: a registered name or ``package.module:Class``.

    ``None``, ``""`` and ``"none"`` mean :class:`Unprotected`. Parameters are validated by the
    component (unknown names and bad values raise :class:`~facepriv.errors.ParameterError`).
    """
    if name in (None, "", "none"):
        name = "unprotected"
    return create("protection", str(name), dict(params or {}))  # type: ignore[return-value]


def protection_from_record(record: dict[str, Any] | None, secrets: dict[str, Any] | None = None,
                           require_key: bool = False) -> TemplateProtection:
    """Re-create the protection a file records; secrets (never recorded) come from ``secrets``.

    Without ``require_key`` a masked secret takes the component's default: right for an attacker
    who only needs the comparator, or who protects its own data with its own key.

    Raises
    ------
    ParameterError
        ``require_key`` and the record masks a secret of a keyed protection that ``secrets``
        does not supply (it would otherwise silently use a default key).
    """
    if record is None:
        return Unprotected()
    raw = dict(record.get("params", {}))
    params = {k: v for k, v in raw.items() if v != "<secret>"}
    masked = sorted(k for k, v in raw.items() if v == "<secret>")
    secrets = dict(secrets or {})
    missing = [k for k in masked if k not in secrets]
    prot = build_protection(str(record["name"]), {**params, **{k: secrets[k] for k in masked if k in secrets}})
    if require_key and missing and getattr(prot, "threat_model", "keyless") == "key_secret":
        raise ParameterError(
            f"protection {record['name']!r} is keyed and its key ({', '.join(missing)}) is not stored with the "
            "templates; supply it (e.g. --protection-seed)",
            param=missing[0],
        )
    return prot


def comparator_for(es: EmbeddingSet) -> Comparator:
    """The comparator matching the protection recorded in an embeddings set."""
    return protection_from_record(es.protection).comparator()
