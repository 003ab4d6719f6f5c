"""The similarity attack on soft-biometric privacy (Osorio-Roig et al., IEEE TBIOM 2022).

Black box: the attacker protects its own labelled database with the same protection, compares
every intercepted protected probe with it (with the protection's own comparator, or plain cosine),
sorts the scores and infers the attribute from the best ones:

* ``galleries``: the top-n scores against each single-class gallery are fused (max, mean,
  log-weighted, linear; :mod:`facepriv.attacks.fusion`); the class with the higher fused score wins.
* ``vote``: majority label among the n best matches of the whole database (ties: the class of the
  best-ranked match among the tied classes).

Only each probe's best matches per class are needed, so they are searched exactly and memory
bounded (:func:`facepriv.search.top_k`: FAISS for cosine/Hamming comparators, database chunks
for PE-MIU), never as a probes x database matrix; equal scores rank by the lower database row.

Usage::

    attack = SimilarityAttack(attribute="gender").fit(protected_attacker_db)
    result = attack.evaluate(protected_probes)

Helpers :func:`labelled`, :func:`split_identities`, :func:`balance` and :func:`prepare_sets` build
the attacker/target sets (label filtering, identity-disjoint split, class balancing, protection).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome
from facepriv.attacks.fusion import DEFAULT_TOP_N, RULES, cap_top_n, fuse
from facepriv.attacks.sets import labelled
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.metrics.stats import accuracy_entry, chance_level
from facepriv.protections.base import Comparator, CosineComparator, comparator_for
from facepriv.registry import register
from facepriv.search import rank_order, top_k, top_k_scores

log = logging.getLogger(__name__)

DECISIONS = ("galleries", "vote")


@dataclass
class AttackResult:
    """Predictions of an attribute attack on a set of probes.

    Attributes
    ----------
    probe_ids, true : ndarray of str, shape (P,)
    classes : list of str
        Attribute values known to the attacker (sorted).
    predictions : dict
        ``(rule, n, decision) -> ndarray (P,)`` of predicted labels.
    fused : dict
        ``(rule, n) -> ndarray (P, len(classes))`` fused score per class gallery.
    meta : dict
        What was run (attack, comparator, sizes), for the report.
    """

    probe_ids: np.ndarray
    true: np.ndarray
    classes: list[str]
    predictions: dict[tuple[str, int, str], np.ndarray]
    fused: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One summary entry per (rule, n, decision) with accuracy and its 95 % Wilson interval."""
        return [
            {"rule": rule, "n": int(n), "decision": decision, **accuracy_entry(self.true, pred)}
            for (rule, n, decision), pred in self.predictions.items()
        ]

    def best(self) -> dict:
        """The entry with the highest accuracy (chosen on these probes: an optimistic pick)."""
        return max(self.rows(), key=lambda r: (r["accuracy"], -r["n"]))

    def chance(self) -> float:
        """Majority-class share of the probes (accuracy of always guessing the commonest class)."""
        return chance_level(self.true)

    def to_dict(self) -> dict:
        """Headline numbers (best entry): ``n`` probes, ``correct``, accuracy, chance level."""
        b = self.best()
        return {
            "n": b["n_probes"],
            "correct": b["correct"],
            "accuracy": b["accuracy"],
            "balanced_accuracy": b["balanced_accuracy"],
            "best_top_n": b["n"],
            "chance": self.chance(),
        }


@register("attack", "similarity")
class SimilarityAttack(Attack):
    """Similarity-based soft-biometric attack.

    Parameters
    ----------
    attribute : str
        Attribute column to infer (``gender`` or any other label column).
    top_n : sequence of int
        Numbers of best scores fused (capped at the gallery size with a warning).
    rules : sequence of str
        Fusion rules among ``max``, ``mean``, ``log``, ``linear``.
    comparator : {"protection", "cosine"}
        The protection's own comparator (recorded in the gallery file) or plain cosine.
    decision : {"galleries", "vote", "both"}
        Per-class galleries with fused scores, majority vote of the top-n, or both.
    seed : int
        Seed of the helpers that draw (splits, balancing); the attack itself is deterministic.
    """

    summary = "Similarity attack: fused top-n scores against the attacker's labelled protected database."
    reference = "Osorio-Roig et al., An attack on facial soft-biometric privacy enhancement, IEEE TBIOM 4(2), 2022"

    def __init__(
        self,
        attribute: str = "gender",
        top_n: Sequence[int] = DEFAULT_TOP_N,
        rules: Sequence[str] = RULES,
        comparator: str = "protection",
        decision: str = "galleries",
        seed: int = 0,
    ) -> None:
        self.attribute = attribute
        self.top_n = top_n
        self.rules = rules
        self.comparator = comparator
        self.decision = decision
        self.seed = seed

    def validate_params(self) -> None:
        if not isinstance(self.attribute, str) or not self.attribute:
            raise ParameterError("similarity: attribute must be a column name", param="attribute")
        rules = [self.rules] if isinstance(self.rules, str) else list(self.rules)
        bad = [r for r in rules if r not in RULES]
        if bad or not rules:
            raise ParameterError(f"similarity: unknown fusion rule(s) {bad}; rules are {', '.join(RULES)}", param="rules")
        if self.comparator not in ("protection", "cosine"):
            raise ParameterError(f"similarity: comparator must be 'protection' or 'cosine', got {self.comparator!r}",
                                 param="comparator")
        if self.decision not in (*DECISIONS, "both"):
            raise ParameterError(f"similarity: decision must be galleries, vote or both, got {self.decision!r}",
                                 param="decision")
        cap_top_n(list(self.top_n) if not isinstance(self.top_n, int) else [self.top_n], 10**9)

    def _comparator(self, es: EmbeddingSet) -> Comparator:
        return comparator_for(es) if self.comparator == "protection" else CosineComparator()

    def run(self, data: AttackData) -> AttackOutcome:
        """Attack a cell: the attacker rows are the labelled database, the victim rows the probes."""
        from facepriv.attacks.attribute_cells import similarity_outcome

        return similarity_outcome(self, data)

    def fit(self, gallery: EmbeddingSet) -> SimilarityAttack:
        """Keep the attacker's labelled (protected) database; rows without a label are dropped."""
        self.validate_params()
        g = labelled(gallery, self.attribute, "attacker database")
        classes = np.unique(g.attribute(self.attribute))
        if classes.size < 2:
            raise ParameterError(
                f"the attacker database has only {self.attribute} = {classes.tolist()}; the attack needs two or more classes"
            )
        self.gallery_ = g
        self.classes_ = [str(c) for c in classes]
        return self

    def _check_probes(self, probes: EmbeddingSet) -> None:
        g = self.gallery_
        if probes.dim != g.dim:
            raise ParameterError(f"dimension mismatch: probes have D={probes.dim}, the attacker database D={g.dim}")
        if (probes.protection or {}).get("name") != (g.protection or {}).get("name"):
            log.warning(
                "probes are protected with %s but the attacker database with %s",
                (probes.protection or {}).get("name", "nothing"),
                (g.protection or {}).get("name", "nothing"),
            )

    def scores(self, probes: EmbeddingSet) -> np.ndarray:
        """Comparison scores of every probe with every gallery template, (P, G) (dense: small galleries only)."""
        self._check_probes(probes)
        return self._comparator(self.gallery_).pairwise(probes.embeddings, self.gallery_.embeddings)

    def top_matches(
        self,
        probes: EmbeddingSet,
        comparator: Comparator | None = None,
        chunk: int = 1024,
        gallery_chunk: int = 16384,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Best matches of every probe in each class gallery, memory bounded (:func:`facepriv.search.top_k`).

        Parameters
        ----------
        probes : EmbeddingSet
            Protected probes (any labels).
        comparator : Comparator, optional
            Overrides the attack's comparator (e.g. one with more threads).
        chunk, gallery_chunk : int
            Probes searched at once; gallery rows scored at once on the generic (PE-MIU) path.

        Returns
        -------
        dict
            ``class -> (scores (P, k), rows (P, k))``: scores in decreasing order (ties: lower
            attacker-database row first) and their attacker-database rows; k = the largest top-n
            this attack needs from that class.
        """
        return self._search(probes, self._top_ns(), comparator, chunk, gallery_chunk)

    def _search(self, probes: EmbeddingSet, ns: dict[str, list[int]], comparator: Comparator | None, chunk: int,
                gallery_chunk: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        self._check_probes(probes)
        comp = comparator or self._comparator(self.gallery_)
        ks = _class_k(ns, self._class_sizes())
        glab = self.gallery_.attribute(self.attribute)
        return {c: top_k(comp, probes.embeddings, self.gallery_.embeddings, k, chunk, gallery_chunk,
                         rows=np.flatnonzero(glab == c), rescore=True) for c, k in ks.items()}

    def evaluate(
        self,
        probes: EmbeddingSet,
        scores: np.ndarray | None = None,
        comparator: Comparator | None = None,
        chunk: int = 1024,
        gallery_chunk: int = 16384,
    ) -> AttackResult:
        """Infer the attribute of each labelled probe and score the guesses.

        ``scores``: a precomputed dense (P, G) score matrix of the labelled probes (small
        galleries); otherwise the top matches are searched chunk by chunk (:meth:`top_matches`).
        """
        if not hasattr(self, "gallery_"):
            raise ParameterError("similarity: call fit(attacker database) before evaluate")
        p = labelled(probes, self.attribute, "target probes")
        if scores is not None:
            return self.decide(scores, p.attribute(self.attribute), p.ids)
        ns = self._top_ns()
        tops = self._search(p, ns, comparator, chunk, gallery_chunk)
        return self._decide(tops, ns, p.attribute(self.attribute), p.ids)

    def _class_sizes(self) -> dict[str, int]:
        glab = self.gallery_.attribute(self.attribute)
        return {c: int(np.sum(glab == c)) for c in self.classes_}

    def _top_ns(self) -> dict[str, list[int]]:
        """Capped top-n values per decision (``galleries``: smallest class; ``vote``: whole database)."""
        top = [self.top_n] if isinstance(self.top_n, int) else list(self.top_n)
        decisions = DECISIONS if self.decision == "both" else (self.decision,)
        sizes = self._class_sizes()
        out = {}
        if "galleries" in decisions:
            out["galleries"] = cap_top_n(top, min(sizes.values()), f"smallest class gallery ({min(sizes, key=sizes.get)})")
        if "vote" in decisions:
            out["vote"] = cap_top_n(top, sum(sizes.values()), "attacker database")
        return out

    def decide(self, scores: np.ndarray, true: np.ndarray, probe_ids: np.ndarray) -> AttackResult:
        """Fuse and decide from a precomputed dense (P, G) score matrix against the fitted gallery."""
        ns = self._top_ns()
        glab = self.gallery_.attribute(self.attribute)
        ks = _class_k(ns, self._class_sizes())
        tops = {c: top_k_scores(scores, k, np.flatnonzero(glab == c)) for c, k in ks.items()}
        return self._decide(tops, ns, true, probe_ids)

    def _decide(self, tops: dict[str, tuple[np.ndarray, np.ndarray]], ns: dict[str, list[int]], true: np.ndarray,
                probe_ids: np.ndarray) -> AttackResult:
        """Fused scores and predictions from each class's ranked best matches (``top_matches``)."""
        rules = [self.rules] if isinstance(self.rules, str) else list(self.rules)
        classes = self.classes_
        preds: dict[tuple[str, int, str], np.ndarray] = {}
        fused: dict[tuple[str, int], np.ndarray] = {}
        if "galleries" in ns:
            for rule in rules:
                for n in ns["galleries"]:
                    f = np.stack([fuse(tops[c][0], rule, n) for c in classes], axis=1)
                    fused[(rule, n)] = f
                    # ties between classes go to the first class in sorted order (argmax)
                    preds[(rule, n, "galleries")] = np.asarray(classes)[np.argmax(f, axis=1)]
        if "vote" in ns:
            preds.update(_vote(tops, classes, ns["vote"]))
        sizes = self._class_sizes()
        meta = {
            "attack": "similarity",
            "attribute": self.attribute,
            "comparator": self.comparator,
            "gallery_protection": self.gallery_.protection,
            "gallery_size": len(self.gallery_),
            "gallery_class_sizes": sizes,
        }
        return AttackResult(np.asarray(probe_ids), np.asarray(true), classes, preds, fused, meta)


def _class_k(ns: dict[str, list[int]], sizes: dict[str, int]) -> dict[str, int]:
    """Matches needed from each class gallery: the largest top-n of any decision, capped at its size."""
    need = max(max(v) for v in ns.values())
    return {c: min(need, s) for c, s in sizes.items()}


def _vote(tops: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str], ns: list[int]) -> dict:
    """Majority vote of the n best matches of the whole database (the class lists merged by rank).

    The merged ranking is that of a stable sort of each probe's full score row: decreasing
    score, ties by the lower attacker-database row. Each class list holds that class's share of
    the overall top n (it is ranked the same way), so merging them loses nothing.
    """
    s = np.concatenate([tops[c][0] for c in classes], axis=1)
    rows = np.concatenate([tops[c][1] for c in classes], axis=1)
    lab = np.concatenate([np.full(tops[c][0].shape[1], k) for k, c in enumerate(classes)])
    order = rank_order(s, rows)[:, : max(ns)]
    lab_idx = lab[order]  # (P, n_max) class index per rank
    preds = {}
    for n in ns:
        counts = np.stack([(lab_idx[:, :n] == k).sum(1) for k in range(len(classes))], axis=1)
        best = counts.max(axis=1, keepdims=True)
        tied = counts == best
        # among tied classes: the one whose best-ranked match comes first
        first_rank = np.stack(
            [np.where((lab_idx[:, :n] == k).any(1), np.argmax(lab_idx[:, :n] == k, axis=1), n) for k in range(len(classes))],
            axis=1,
        )
        first_rank = np.where(tied, first_rank, n + 1)
        preds[("vote", n, "vote")] = np.asarray(classes)[np.argmin(first_rank, axis=1)]
    return preds
