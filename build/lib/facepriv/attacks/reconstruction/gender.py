"""Gender inferred from reconstructed faces (WIFS 2023 section on soft-biometric privacy).

(a) Re-embed the reconstructions and classify gender with kNN (k=3) and an SVM (RBF, C=100), both
after standardisation, by 10-fold cross-validation. Folds are identity-disjoint
(``StratifiedGroupKFold``), so a classifier never sees another photo of a test person; the same is
reported for the original embeddings and for the templates the attacker held (protected or not)
as references.
(b) The CC0 gender classifier (``facepriv.models.gender_classifier``) applied to the
reconstructed images, with its accuracy on the original crops as reference.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from facepriv.embeddings import EmbeddingSet

log = logging.getLogger(__name__)

GENDERS = ("female", "male")
MIN_SAMPLES = 20


def cv_accuracy(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int = 0, folds: int = 10) -> dict[str, float]:
    """Identity-disjoint k-fold accuracy of kNN (k=3) and SVM (RBF, C=100) on standardised features."""
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    n_groups = len(np.unique(groups))
    k = int(min(folds, n_groups))
    if k < 2:
        return {"knn": float("nan"), "svm": float("nan")}
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = {}
    for name, clf in (
        ("knn", make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=3))),
        ("svm", make_pipeline(StandardScaler(), SVC(C=100.0, kernel="rbf", gamma="scale"))),
    ):
        acc = cross_val_score(clf, features, labels, groups=groups, cv=cv, scoring="accuracy")
        out[name] = float(np.mean(acc))
    return out


def classifier_accuracy(images: np.ndarray, labels: np.ndarray) -> float | None:
    """Accuracy of the CC0 gender classifier on uint8 RGB faces (None when it is not installed)."""
    try:
        from facepriv.models.gender_classifier import GenderClassifier
    except ModuleNotFoundError as exc:
        log.warning("gender classifier unavailable (%s); skipping the image-based gender metric", exc)
        return None
    pred, _ = GenderClassifier().predict(images)
    return float(np.mean(np.asarray(pred).astype(str) == labels))


def gender_metrics(
    es: EmbeddingSet,
    recon: np.ndarray,
    recon_emb: np.ndarray,
    originals: np.ndarray,
    inputs: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """Gender accuracies from reconstructions plus references (see module docstring).

    Returns a dict with ``knn``/``svm`` (re-embedded reconstructions), ``classifier`` (CC0
    classifier on reconstructions), ``reference_*`` counterparts, ``n`` and ``majority`` (the
    accuracy of always answering the majority class).
    """
    g = es.gender
    if g is None:
        return {"note": "no gender column in the embeddings file"}
    mask = np.isin(g, GENDERS)
    labels = g[mask]
    if mask.sum() < MIN_SAMPLES or len(np.unique(labels)) < 2:
        return {"note": f"too few gender-labelled test images ({int(mask.sum())}) or a single gender"}
    groups = es.identity[mask]
    out: dict[str, Any] = {"n": int(mask.sum()), "n_identities": int(len(np.unique(groups)))}
    out["majority"] = float(max(np.mean(labels == c) for c in GENDERS))
    rec = cv_accuracy(recon_emb[mask], labels, groups, seed)
    out["knn"], out["svm"] = rec["knn"], rec["svm"]
    ref = cv_accuracy(es.embeddings[mask], labels, groups, seed)
    out["reference_knn_original"], out["reference_svm_original"] = ref["knn"], ref["svm"]
    if not np.array_equal(inputs, es.embeddings):
        tpl = cv_accuracy(np.asarray(inputs)[mask], labels, groups, seed)
        out["reference_knn_templates"], out["reference_svm_templates"] = tpl["knn"], tpl["svm"]
    out["classifier"] = classifier_accuracy(recon[mask], labels)
    out["reference_classifier_original"] = classifier_accuracy(originals[mask], labels)
    return out
