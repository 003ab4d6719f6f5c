"""Attacker and target sets for the attribute attacks: labels, identity-disjoint splits, balance.

* :func:`labelled` keeps rows with a non-empty label (and logs how many were dropped).
* :func:`split_identities` splits one file into identity-disjoint attacker/target parts,
  stratified by the attribute (seeded).
* :func:`balance` subsamples every class to the size of the smallest (seeded).
* :func:`prepare_sets` does all of it and applies the protection the way the system would.
"""

from __future__ import annotations

import logging

import numpy as np

from facepriv.attacks.base import protect_rows
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import TemplateProtection, protection_from_record

log = logging.getLogger(__name__)


def labelled(es: EmbeddingSet, attribute: str, what: str = "embeddings") -> EmbeddingSet:
    """Rows of ``es`` whose ``attribute`` is known; errors if the column is missing or all empty."""
    try:
        col = es.attribute(attribute)
    except KeyError as exc:
        raise ParameterError(f"{what}: {exc.args[0]}", param="attribute") from None
    known = col != ""
    dropped = int((~known).sum())
    if dropped:
        log.info("%s: %d of %d rows have no %s label and are excluded", what, dropped, len(es), attribute)
    if not known.any():
        raise ParameterError(f"{what}: no row has a {attribute} label; nothing to attack")
    # every row labelled: the set itself (no copy of a large attacker database)
    return es if not dropped else es.subset(np.flatnonzero(known))


def _identity_labels(es: EmbeddingSet, attribute: str) -> dict[str, str]:
    """Majority label of each identity (first in sorted order on ties)."""
    col = es.attribute(attribute)
    out = {}
    for ident in np.unique(es.identity):
        vals, counts = np.unique(col[es.identity == ident], return_counts=True)
        out[str(ident)] = str(vals[np.argmax(counts)])
    return out


def split_identities(
    es: EmbeddingSet, fraction: float, attribute: str = "gender", seed: int = 0
) -> tuple[EmbeddingSet, EmbeddingSet]:
    """Identity-disjoint (attacker, target) split; ``fraction`` of each class's identities to the attacker.

    Stratified by the identities' majority ``attribute`` label so both parts keep every class.
    """
    if not 0 < fraction < 1:
        raise ParameterError(f"split fraction must be between 0 and 1, got {fraction}", param="split_identities")
    id_lab = _identity_labels(es, attribute)
    rng = np.random.default_rng(seed)
    att_ids: set[str] = set()
    for lab in sorted(set(id_lab.values())):
        ids = np.array(sorted(i for i, v in id_lab.items() if v == lab))
        rng.shuffle(ids)
        k = int(round(fraction * len(ids)))
        if len(ids) >= 2:
            k = min(max(k, 1), len(ids) - 1)
        att_ids.update(ids[:k].tolist())
    mask = np.isin(es.identity, list(att_ids))
    if mask.all() or not mask.any():
        raise ParameterError(f"cannot split {len(id_lab)} identities into two non-empty identity-disjoint parts")
    return es.subset(np.flatnonzero(mask)), es.subset(np.flatnonzero(~mask))


def balance(es: EmbeddingSet, attribute: str = "gender", seed: int = 0) -> EmbeddingSet:
    """Subsample every ``attribute`` class to the size of the smallest (rows kept in file order)."""
    col = es.attribute(attribute)
    classes, counts = np.unique(col, return_counts=True)
    m = int(counts.min())
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(col == c), size=m, replace=False) for c in classes]))
    if len(keep) < len(es):
        log.info("balanced %s: %d rows per class (%d -> %d rows)", attribute, m, len(es), len(keep))
    return es.subset(keep)


def _protect_pair(
    prot: TemplateProtection, target: EmbeddingSet, attacker: EmbeddingSet
) -> tuple[EmbeddingSet, EmbeddingSet]:
    """Protect both sets in one call so per-template randomness never repeats between them."""
    prot.fit(target)
    both = protect_rows(prot, np.vstack([target.embeddings, attacker.embeddings]),
                        np.concatenate([target.identity, attacker.identity]))
    rec = None if prot.name == "unprotected" else prot.record()
    return target.with_embeddings(both[: len(target)], rec), attacker.with_embeddings(both[len(target) :], rec)


def prepare_sets(
    attacker: EmbeddingSet,
    target: EmbeddingSet,
    attribute: str,
    protection: TemplateProtection | None = None,
    seed: int = 0,
    split_fraction: float | None = None,
    balance_classes: bool = False,
) -> tuple[EmbeddingSet, EmbeddingSet]:
    """The attacker's (protected) labelled database and the (protected) labelled target probes.

    Parameters
    ----------
    attacker, target : EmbeddingSet
        Attacker's labelled database and the target templates (the same set for a
        same-database run with ``split_fraction``).
    protection : TemplateProtection or None
        How the system protects unprotected targets. A target that is already protected is
        attacked with the protection it records (its secret seed is unknown: the attacker uses
        ``seed``).
    split_fraction : float or None
        Same-database run: share of identities (per class) given to the attacker.
    balance_classes : bool
        Subsample each class of both sets to the smallest class (seeded).

    Returns
    -------
    (gallery, probes) : tuple of EmbeddingSet
    """
    if split_fraction is not None:
        base = labelled(attacker, attribute, "embeddings")
        attacker, target = split_identities(base, split_fraction, attribute, seed)
    else:
        attacker = labelled(attacker, attribute, "attacker database")
        target = labelled(target, attribute, "target")
        shared = np.intersect1d(attacker.identity, target.identity)
        if shared.size:
            log.warning("%d identities occur in both the attacker database and the target", shared.size)
    if attacker.dim != target.dim:
        raise ParameterError(f"dimension mismatch: attacker templates have D={attacker.dim}, target templates D={target.dim}")
    for what, es in (("attacker database", attacker), ("target", target)):
        vals = np.unique(es.attribute(attribute))
        if vals.size < 2:
            raise ParameterError(f"{what}: {attribute} has the single value {vals.tolist()}; need two or more classes")
    if balance_classes:
        attacker = balance(attacker, attribute, seed)
        target = balance(target, attribute, seed + 1)
    if target.protection is not None:
        rec = target.protection
        if protection is not None and protection.name not in ("unprotected", rec.get("name")):
            raise ParameterError(
                f"the target is already protected with {rec.get('name')!r}; --protection {protection.name} does not match"
            )
        prot = protection_from_record(rec)
        if "seed" in prot.param_names():
            prot.seed = seed  # the target's key is secret: the attacker uses its own
        if attacker.protection is None:
            prot.fit(attacker)
            attacker = attacker.with_embeddings(protect_rows(prot, attacker.embeddings, attacker.identity), prot.record())
        elif attacker.protection.get("name") != rec.get("name"):
            raise ParameterError(
                f"attacker database is protected with {attacker.protection.get('name')!r}, the target with {rec.get('name')!r}"
            )
        return attacker, target
    if attacker.protection is not None:
        raise ParameterError("the attacker database is protected but the target is not; give unprotected files and --protection")
    if protection is None or protection.name == "unprotected":
        return attacker, target
    target, attacker = _protect_pair(protection, target, attacker)
    return attacker, target
