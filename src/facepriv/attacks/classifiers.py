"""Attribute classifiers as baseline attacks on (protected) templates.

Baselines of Osorio-Roig et al. (TBIOM 2022): kNN (k = 3) and SVMs (C = 100; polynomial, RBF,
sigmoid kernels), plus logistic regression, all on standardised templates (scikit-learn). Trained
on the attacker's labelled templates (protected like the target's, or not), tested on the target's;
or K-fold cross-validation over both sets pooled, with folds grouped by identity so that no person
is in a training and a test fold at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome
from facepriv.attacks.sets import labelled
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.metrics.stats import accuracy_entry, chance_level
from facepriv.registry import register

log = logging.getLogger(__name__)

CLASSIFIERS = ("knn", "svm_poly", "svm_rbf", "svm_sigmoid", "logreg")


def make_classifier(name: str, seed: int = 0):
    """A scikit-learn pipeline (standardisation + model) for one baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "knn":
        model = KNeighborsClassifier(n_neighbors=3)
    elif name.startswith("svm_") and name in CLASSIFIERS:
        model = SVC(C=100.0, kernel=name[4:], random_state=seed)
    elif name == "logreg":
        model = LogisticRegression(max_iter=5000, random_state=seed)
    else:
        raise ParameterError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)} or all")
    return make_pipeline(StandardScaler(), model)


@dataclass
class ClassifierResult:
    """Predictions of each classifier on the probes (or out-of-fold predictions in CV mode)."""

    probe_ids: np.ndarray
    true: np.ndarray
    predictions: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One entry per classifier with accuracy, balanced accuracy and a 95 % Wilson interval."""
        return [{"classifier": name, **accuracy_entry(self.true, pred)} for name, pred in self.predictions.items()]

    def best(self) -> dict:
        """The classifier with the highest accuracy on these probes."""
        return max(self.rows(), key=lambda r: r["accuracy"])

    def chance(self) -> float:
        """Majority-class share of the probes."""
        return chance_level(self.true)

    def to_dict(self) -> dict:
        """Headline numbers of the best classifier."""
        b = self.best()
        return {
            "n": b["n_probes"],
            "correct": b["correct"],
            "accuracy": b["accuracy"],
            "balanced_accuracy": b["balanced_accuracy"],
            "chance": self.chance(),
        }


@register("attack", "classifier")
class ClassifierAttack(Attack):
    """Attribute classifiers trained on the attacker's templates.

    Parameters
    ----------
    attribute : str
        Attribute column to infer.
    classifier : str
        One of ``knn``, ``svm_poly``, ``svm_rbf``, ``svm_sigmoid``, ``logreg``, or ``all``.
    cv : int
        0: train on the attacker's set, test on the target's. K >= 2: K-fold cross-validation
        over both sets pooled (identity-grouped, stratified folds).
    seed : int
        Seed of the fold assignment and of the models that draw.
    """

    summary = "Attribute classifiers (kNN k=3, SVM C=100 poly/rbf/sigmoid, logistic regression) on templates."
    reference = "Baselines of Osorio-Roig et al., IEEE TBIOM 2022"

    def __init__(self, attribute: str = "gender", classifier: str = "all", cv: int = 0, seed: int = 0) -> None:
        self.attribute = attribute
        self.classifier = classifier
        self.cv = cv
        self.seed = seed

    def validate_params(self) -> None:
        if self.classifier != "all" and self.classifier not in CLASSIFIERS:
            raise ParameterError(f"classifier: unknown classifier {self.classifier!r}; choose from {', '.join(CLASSIFIERS)} or all",
                                 param="classifier")
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, np.integer)) or self.cv < 0 or self.cv == 1:
            raise ParameterError(f"classifier: cv must be 0 (no cross-validation) or >= 2 folds, got {self.cv!r}", param="cv")

    def names(self) -> list[str]:
        """The classifiers this attack runs."""
        return list(CLASSIFIERS) if self.classifier == "all" else [self.classifier]

    def run(self, data: AttackData) -> AttackOutcome:
        """Attack a cell: the attacker rows are the labelled database, the victim rows the probes."""
        from facepriv.attacks.attribute_cells import classifier_outcome

        return classifier_outcome(self, data)

    def fit(self, gallery: EmbeddingSet) -> ClassifierAttack:
        """Train every classifier on the attacker's labelled templates."""
        self.validate_params()
        g = labelled(gallery, self.attribute, "attacker database")
        y = g.attribute(self.attribute)
        if np.unique(y).size < 2:
            raise ParameterError(f"the attacker database has a single {self.attribute} value; need two or more")
        self.gallery_ = g
        self.models_ = {}
        if not self.cv:
            for name in self.names():
                self.models_[name] = make_classifier(name, self.seed).fit(g.embeddings, y)
        return self

    def evaluate(self, probes: EmbeddingSet) -> ClassifierResult:
        """Predict the probes' attribute (or run K-fold CV over attacker + probes when ``cv``)."""
        if not hasattr(self, "gallery_"):
            raise ParameterError("classifier: call fit(attacker database) before evaluate")
        p = labelled(probes, self.attribute, "target probes")
        if p.dim != self.gallery_.dim:
            raise ParameterError(f"dimension mismatch: probes D={p.dim}, attacker database D={self.gallery_.dim}")
        if self.cv:
            return self._cross_validate(p)
        preds = {name: m.predict(p.embeddings) for name, m in self.models_.items()}
        meta = {"attack": "classifier", "mode": "attacker->target", "train_size": len(self.gallery_)}
        return ClassifierResult(p.ids, p.attribute(self.attribute), preds, meta)

    def _cross_validate(self, probes: EmbeddingSet) -> ClassifierResult:
        from sklearn.model_selection import StratifiedGroupKFold

        g = self.gallery_
        x = np.vstack([g.embeddings, probes.embeddings])
        y = np.concatenate([g.attribute(self.attribute), probes.attribute(self.attribute)])
        groups = np.concatenate([np.char.add("a:", g.identity.astype(str)), np.char.add("t:", probes.identity.astype(str))])
        ids = np.concatenate([g.ids, probes.ids])
        n_groups = np.unique(groups).size
        if n_groups < self.cv:
            raise ParameterError(f"classifier: cv {self.cv} (folds) needs at least {self.cv} identities, got {n_groups}",
                                 param="cv")
        folds = StratifiedGroupKFold(n_splits=int(self.cv), shuffle=True, random_state=self.seed)
        preds = {name: np.empty(len(y), dtype=y.dtype) for name in self.names()}
        for train, test in folds.split(x, y, groups):
            for name in self.names():
                preds[name][test] = make_classifier(name, self.seed).fit(x[train], y[train]).predict(x[test])
        meta = {"attack": "classifier", "mode": f"{self.cv}-fold CV (identity-grouped), attacker+target pooled"}
        return ClassifierResult(ids, y, preds, meta)
