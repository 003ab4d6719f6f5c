"""Verification performance of (protected) templates: the numbers ``facepriv verify`` and the runner report.

:func:`protected_utility` scores an embeddings set with its protection's comparator (every pair,
or a given pairs protocol), computes the :class:`~facepriv.metrics.verification.VerificationReport`
and the k-fold accuracy on a given or generated identity-disjoint protocol. ``facepriv verify``
and the experiment runner's utility cell both call it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facepriv.errors import ParameterError
from facepriv.metrics.scores import Scores, scores_all_pairs, scores_for_pairs
from facepriv.metrics.verification import VerificationReport, verification_report


@dataclass(frozen=True)
class ProtectedUtility:
    """Verification performance of (protected) templates: what ``facepriv verify`` and the runner report.

    Attributes
    ----------
    report : VerificationReport
    scores : Scores
        Genuine and impostor scores the report was computed from (all pairs, or the given pairs).
    kfold : KFoldResult or None
    protocol : PairsProtocol or None
        The pairs the k-fold accuracy used (given or generated).
    folds : int
        Folds asked of the generated protocol (0 when none was generated).
    kfold_skipped : str or None
        Why there is no k-fold accuracy, when there is none although it was asked for.
    n_templates, n_identities : int
    """

    report: VerificationReport
    scores: Scores
    kfold: Any = None
    protocol: Any = None
    folds: int = 0
    kfold_skipped: str | None = None
    n_templates: int = 0
    n_identities: int = 0

    def metrics(self) -> dict[str, Any]:
        """Flat JSON-ready numbers: ``eer``..., ``fnmr_at_fmr_0.01``, ``kfold_folds``, ``n_templates``."""
        m: dict[str, Any] = {}
        if self.kfold is not None:
            m["kfold_folds"] = self.folds or len(np.unique(self.protocol.fold))
            m["kfold_pairs"] = len(self.protocol)
        d = self.report.to_dict()
        m.update({k: v for k, v in d.items() if k not in ("fnmr_at_fmr", "threshold_at_fmr")})
        for key, v in d["fnmr_at_fmr"].items():
            m[f"fnmr_at_fmr_{key}"] = v
        for key, v in d["threshold_at_fmr"].items():
            m[f"threshold_at_fmr_{key}"] = v
        m["n_templates"] = self.n_templates
        m["n_identities"] = self.n_identities
        return m


def protected_utility(
    es: Any,
    comparator: Any = None,
    seed: int = 0,
    metrics: tuple[str, ...] | list[str] = ("eer", "fnmr_at_fmr1", "kfold_accuracy"),
    folds: int | None = None,
    pairs_per_fold: int = 300,
    pairs: Any = None,
    kfold_protocol: Any = None,
) -> ProtectedUtility:
    """Verification metrics of an embeddings set with its protection's comparator.

    Parameters
    ----------
    es : EmbeddingSet
        (Protected) templates.
    comparator : Comparator, optional
        Default: the comparator of the protection ``es`` records.
    seed : int
        Seed of the generated k-fold protocol.
    metrics : sequence of str
        ``kfold_accuracy`` among them asks for the k-fold accuracy.
    folds : int, optional
        Folds of the generated protocol; default ``min(10, identities // 2)``.
    pairs_per_fold : int
        Genuine and impostor pairs per generated fold (N of each).
    pairs : PairsProtocol, optional
        A given protocol (LFW View 2 style): the metrics are computed on its pairs and the k-fold
        accuracy on its folds. Without it every pair of templates is scored.
    kfold_protocol : PairsProtocol, optional
        A generated protocol to reuse for the k-fold accuracy (same rows as ``es``).

    Raises
    ------
    ParameterError
        ``pairs`` names sample ids that are not in ``es``, or bad ``folds``/``pairs_per_fold``.
    """
    from facepriv.metrics.kfold import kfold_accuracy
    from facepriv.metrics.protocol import make_pairs
    from facepriv.protections.base import comparator_for

    comp = comparator if comparator is not None else comparator_for(es)
    n_ids = len(np.unique(es.identity))
    want_kfold = "kfold_accuracy" in metrics
    kf, proto, nfolds, skipped = None, None, 0, None
    if pairs is not None:
        s = scores_for_pairs(es, pairs.id1, pairs.id2, comp)
        scores = Scores(s[pairs.genuine], s[~pairs.genuine])
        if want_kfold:
            kf, proto = kfold_accuracy(s, pairs.genuine, pairs.fold), pairs
    else:
        scores = scores_all_pairs(es, comp)
        if want_kfold:
            nfolds = min(10, n_ids // 2) if folds is None else int(folds)
            if folds is not None and (nfolds < 2 or pairs_per_fold < 1):
                raise ParameterError(f"folds must be >= 2 and pairs_per_fold >= 1, got {folds} and {pairs_per_fold}",
                                     param="folds" if nfolds < 2 else "pairs_per_fold")
            if nfolds < 2:
                skipped = f"{n_ids} identities are too few for a k-fold protocol (need 4 or more)"
            else:
                try:
                    proto = kfold_protocol or make_pairs(es.ids, es.identity, nfolds, (pairs_per_fold, pairs_per_fold), seed)
                except ParameterError as exc:
                    skipped = str(exc)
            if proto is not None:
                kf = kfold_accuracy(scores_for_pairs(es, proto.id1, proto.id2, comp), proto.genuine, proto.fold)
    report = verification_report(scores.genuine, scores.impostor, kfold=kf)
    return ProtectedUtility(report, scores, kf, proto, nfolds if kf is not None else 0, skipped, len(es), n_ids)
