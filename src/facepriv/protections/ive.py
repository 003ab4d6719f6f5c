"""IVE, incremental variable elimination (Terhoerst et al., ICB 2019): soft-biometric privacy.

Fitted on labelled templates: an ensemble of decision trees (scikit-learn random forest) learns
to predict the attribute (gender) from the template; the ``n_remove`` dimensions with the highest
impurity importance are eliminated; the forest is retrained on the remaining dimensions; for
``steps`` steps. Every template then keeps the same remaining dimensions (D - steps * n_remove).

Nothing is secret (threat model "keyless"): the eliminated dimensions are written to the record
(``removed``, in elimination order), so a probe file protected later with the recorded parameters
gets the same mask and an attacker knows exactly what was removed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import TemplateProtection
from facepriv.registry import register

__all__ = ["IVE"]


def _pos_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ParameterError(f"ive: {name} must be a positive integer, got {v!r}", param=name)
    return int(v)


@register("protection", "ive")
class IVE(TemplateProtection):
    """Incremental variable elimination: drop the template dimensions that predict an attribute.

    Parameters
    ----------
    attribute : str
        Label column the eliminated dimensions predict (``gender`` in the paper); ``fit`` needs it.
    n_remove : int
        Dimensions eliminated per step (the most important ones of that step's forest).
    steps : int
        Elimination steps; steps * n_remove dimensions are removed in all (must stay below D).
    n_estimators : int
        Trees of each step's random forest.
    removed : list of int or None
        Dimensions to eliminate, as recorded by a fitted IVE (None: learn them in ``fit``); given,
        ``fit`` learns nothing and ``n_remove``/``steps`` are not used.
    seed : int
        Seed of the forests (not a secret).
    """

    summary = "IVE: remove the template dimensions a tree ensemble finds most predictive of gender; cosine comparator."
    reference = ("Terhoerst, Damer, Kirchbuchner, Kuijper, Suppressing gender and age in face templates using "
                 "incremental variable elimination, ICB 2019")

    def __init__(self, attribute: str = "gender", n_remove: int = 4, steps: int = 16, n_estimators: int = 100,
                 removed: list[int] | None = None, seed: int = 0) -> None:
        self.attribute = attribute
        self.n_remove = n_remove
        self.steps = steps
        self.n_estimators = n_estimators
        self.removed = removed
        self.seed = seed

    def validate_params(self) -> None:
        if not isinstance(self.attribute, str) or not self.attribute:
            raise ParameterError(f"ive: attribute must be a column name, got {self.attribute!r}", param="attribute")
        _pos_int(self.n_remove, "n_remove")
        _pos_int(self.steps, "steps")
        _pos_int(self.n_estimators, "n_estimators")
        r = self.removed
        if r is not None and (not isinstance(r, (list, tuple)) or not r or len(set(r)) != len(r) or any(
                isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in r)):
            raise ParameterError("ive: removed must be null or a non-empty list of distinct non-negative "
                                 "dimension indices", param="removed")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ParameterError(f"ive: seed must be a non-negative integer, got {self.seed!r}", param="seed")

    def n_eliminated(self) -> int:
        """How many dimensions are removed."""
        return len(self.removed) if self.removed is not None else int(self.n_remove) * int(self.steps)

    def check_input_dim(self, dim: int) -> None:
        """At least one dimension must remain; recorded indices must exist."""
        self.validate_params()
        if self.removed is not None and max(self.removed) >= dim:
            raise ParameterError(f"ive: removed holds dimension {max(self.removed)}, templates have only {dim}",
                                 param="removed")
        if self.n_eliminated() >= dim:
            raise ParameterError(f"ive: steps * n_remove = {self.n_eliminated()} dimensions would be removed of "
                                 f"{dim}; at least one must remain", param="steps")

    def fit(self, es: EmbeddingSet | None = None) -> IVE:
        """Learn the eliminated dimensions from ``es`` and its attribute labels (unless ``removed`` is given)."""
        self.validate_params()
        if self.removed is not None:
            if es is not None:
                self.check_input_dim(es.dim)
            self.removed_ = [int(v) for v in self.removed]
            return self
        if es is None:
            raise ParameterError(f"ive: fit needs templates labelled with {self.attribute!r} "
                                 "(an EmbeddingSet with that column)", param="attribute")
        labels = es.attributes.get(self.attribute)
        if labels is None:
            have = ", ".join(sorted(es.attributes)) or "none"
            raise ParameterError(f"ive: the templates have no {self.attribute!r} labels (columns: {have}); "
                                 f"IVE learns which dimensions predict {self.attribute}", param="attribute")
        self.check_input_dim(es.dim)
        y = np.asarray(labels).astype(str)
        keep = y != ""
        classes, counts = np.unique(y[keep], return_counts=True)
        if classes.size < 2 or counts.min() < 2:
            raise ParameterError(f"ive: {self.attribute!r} needs at least 2 classes with 2 labelled templates "
                                 f"each, got {dict(zip(classes.tolist(), counts.tolist()))}", param="attribute")
        self.removed_ = self._eliminate(np.asarray(es.embeddings, dtype=np.float64)[keep], y[keep])
        return self

    def _eliminate(self, x: np.ndarray, y: np.ndarray) -> list[int]:
        from sklearn.ensemble import RandomForestClassifier

        remaining = list(range(x.shape[1]))
        removed: list[int] = []
        for step in range(int(self.steps)):
            forest = RandomForestClassifier(n_estimators=int(self.n_estimators), random_state=int(self.seed) + step,
                                            n_jobs=1)
            forest.fit(x[:, remaining], y)
            # most important first; equal importances by the lower dimension (deterministic)
            order = np.argsort(-forest.feature_importances_, kind="stable")[: int(self.n_remove)]
            drop = [remaining[i] for i in order]
            removed += drop
            remaining = [d for d in remaining if d not in set(drop)]
        return removed

    def kept(self, dim: int) -> np.ndarray:
        """Indices of the dimensions every protected template keeps (increasing)."""
        removed = getattr(self, "removed_", None)
        if removed is None:
            raise ParameterError("ive: not fitted (fit(es) on labelled templates, or give removed=[...])")
        self.check_input_dim(dim)
        if max(removed) >= dim:
            raise ParameterError(f"ive: fitted on templates with dimension > {max(removed)}, got {dim}-d ones")
        return np.setdiff1d(np.arange(dim), np.asarray(removed))

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ParameterError(f"ive: templates must be 2-d (N, D), got shape {x.shape}")
        return np.ascontiguousarray(x[:, self.kept(x.shape[1])])

    def record(self) -> dict[str, Any]:
        """Name and parameters, with the fitted eliminated dimensions as ``removed`` (public)."""
        rec = super().record()
        if getattr(self, "removed_", None) is not None:
            rec["params"]["removed"] = [int(v) for v in self.removed_]
        return rec

    def invert(self, protected: np.ndarray, attacker_templates: np.ndarray,
               identity: np.ndarray | None = None) -> np.ndarray:
        """Unprotected estimates (N, D): kept dimensions as they are, eliminated ones from the attacker's mean."""
        att = np.asarray(attacker_templates, dtype=np.float64)
        if att.ndim != 2 or len(att) == 0:
            raise ParameterError(f"ive: attacker templates must be a non-empty 2-d array, got shape {att.shape}")
        kept = self.kept(att.shape[1])
        p = np.asarray(protected, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != kept.size:
            raise ParameterError(f"ive: protected templates must have {kept.size} dimensions, got shape {p.shape}")
        out = np.tile(att.mean(axis=0), (len(p), 1))
        out[:, kept] = p
        return out.astype(np.float32)
