"""How the attribute attacks (similarity, classifiers) run on a cell of the matrix.

Both take the cell's attacker rows as the labelled, protected database and its victim rows as
the intercepted protected probes, restricted to samples whose attribute is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.attacks.base import AttackData, AttackOutcome, headline
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError


def attack_sets(data: AttackData, attribute: str = "gender") -> tuple[EmbeddingSet, EmbeddingSet]:
    """Protected attacker database and victim probes, restricted to samples with a known attribute."""
    col = data.clean.attributes.get(attribute)
    if col is None:
        raise ParameterError(f"the dataset has no {attribute!r} labels; the attribute attacks need them", param="attribute")
    known = col != ""
    att = data.attacker[known[data.attacker]]
    vic = data.victim[known[data.victim]]
    for name, idx in (("attacker", att), ("victim", vic)):
        if idx.size == 0:
            raise ParameterError(f"the {name} set has no samples with a known {attribute}")
    vals = np.unique(col[att])
    if vals.size < 2:
        raise ParameterError(f"the attacker set has {attribute} value(s) {list(vals)} only; need both classes")
    return data.protect(data.clean.subset(att)), data.protect(data.clean.subset(vic))


def similarity_outcome(attack: Any, data: AttackData) -> AttackOutcome:
    """Run a :class:`~facepriv.attacks.soft_biometric.SimilarityAttack` on a cell."""
    gallery, probes = attack_sets(data, attack.attribute)
    res = attack.fit(gallery).evaluate(probes)
    rows = res.rows()
    best = res.best()
    m: dict = {"chance": res.chance(), "n_probes": best["n_probes"], "gallery_size": len(gallery),
               "best_rule": best["rule"], "best_n": best["n"], "best_decision": best["decision"],
               "balanced_accuracy": best["balanced_accuracy"]}
    series: dict[str, list] = {}
    ns = sorted({r["n"] for r in rows})
    for r in rows:
        m[f"accuracy_{r['rule']}_n{r['n']}_{r['decision']}"] = r["accuracy"]
        series.setdefault(f"{r['rule']} ({r['decision']})", [None] * len(ns))[ns.index(r["n"])] = 100 * r["accuracy"]
    curves = {"accuracy_vs_n": {"x": ns, "xlabel": "n (best scores fused)", "ylabel": "attack accuracy (%)",
                                "log_x": True, "series": series}}
    h = headline("accuracy (best rule, n)", best["accuracy"], (best["ci_low"], best["ci_high"]), "fraction")
    return AttackOutcome(headline=h, metrics=m, curves=curves)


def classifier_outcome(attack: Any, data: AttackData) -> AttackOutcome:
    """Run a :class:`~facepriv.attacks.classifiers.ClassifierAttack` on a cell."""
    gallery, probes = attack_sets(data, attack.attribute)
    res = attack.fit(gallery).evaluate(probes)
    best = res.best()
    m: dict = {"chance": res.chance(), "n_probes": best["n_probes"], "best_classifier": best["classifier"],
               "balanced_accuracy": best["balanced_accuracy"]}
    for r in res.rows():
        m[f"accuracy_{r['classifier']}"] = r["accuracy"]
    name = "accuracy" if len(res.rows()) == 1 else "accuracy (best classifier)"
    return AttackOutcome(headline=headline(name, best["accuracy"], (best["ci_low"], best["ci_high"]), "fraction"), metrics=m)
