"""ISO/IEC 30136 criteria as matrix columns: unlinkability, renewability, irreversibility.

Each is a registered attack on template protections, run in memory on a cell's
:class:`~facepriv.attacks.base.AttackData`; docs/iso30136.md gives the protocols.

* The **victims' templates** (``data.victim`` rows) are the enrolled database.
* A **second key** is a copy of the cell's protection whose every ``secret_params`` value is
  drawn afresh from a generator seeded with the cell's seed (:func:`rekeyed`); it lives in
  memory only and is never written. A protection without secret parameters (``unprotected``) has
  no second key: its "second key" is the same transform, which is what makes its templates
  linkable and not renewable.
* Thresholds come from impostor scores (:func:`facepriv.metrics.verification.threshold_at_fmr`).

Identification (ISO/IEC 19795-1), the fourth column, is :mod:`facepriv.attacks.identification`.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline, protect_rows
from facepriv.errors import ParameterError
from facepriv.metrics.irreversibility import fmr_grid, inversion_success
from facepriv.metrics.renewability import RENEWABILITY_FMRS, renewability_failure
from facepriv.metrics.unlinkability import MAX_PAIRS, OMEGA, linkability, score_pairs
from facepriv.metrics.verification import FMR_TARGETS, scores_all_pairs
from facepriv.protections.base import CosineComparator
from facepriv.registry import register

__all__ = ["Irreversibility", "Renewability", "Unlinkability", "no_inversion", "rekeyed"]

_KEY_STREAM = 30136  # separates the second-key draws from any other use of the cell seed
#: second keys (key pairs) drawn by the unlinkability and renewability attacks by default
KEY_PAIRS = 5


def rekeyed(protection: Any, seed: int, pair: int = 0) -> Any:
    """A fresh copy of ``protection`` with every secret parameter drawn anew (integers).

    Parameters
    ----------
    protection : TemplateProtection
        The cell's protection (its parameters are read, never changed).
    seed : int
        The cell's seed; the new values come from ``SeedSequence([seed, 30136, h])`` with ``h``
        a hash of the current secret values, so they cannot be derived from public seeds alone.
    pair : int
        Index of the key pair (0, 1, ...): pair 0 is the historical single second key, pair j > 0
        adds ``j`` to the seed sequence, so every pair gets its own second key.

    Raises
    ------
    ParameterError
        A secret parameter is not an integer (no generic way to draw a new value).
    """
    params = protection.get_params()
    names = tuple(getattr(protection, "secret_params", ()))
    # the first key's value enters the draw too: the second key is not derivable from public seeds
    digest = hashlib.sha256(repr([params.get(n) for n in names]).encode()).digest()
    entropy = [int(seed), _KEY_STREAM, int.from_bytes(digest[:8], "little")] + ([int(pair)] if pair else [])
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    new: dict[str, Any] = {}
    for name in names:
        old = params.get(name)
        if not (old is None or (isinstance(old, (int, np.integer)) and not isinstance(old, bool))):
            raise ParameterError(f"{protection.name}: secret parameter {name!r} is not an integer; "
                                 "cannot draw a second key for it", param=name)
        value = old
        while value == old:
            value = int(rng.integers(0, 2**31 - 1))
        new[name] = value
    return type(protection)(**{**params, **new})


def _check_max_pairs(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 100:
        raise ParameterError(f"max_pairs must be an integer >= 100, got {v!r}", param="max_pairs")


def _check_key_pairs(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 100:
        raise ParameterError(f"key_pairs must be an integer in [1, 100], got {v!r}", param="key_pairs")


def _two_keys(data: AttackData, key_pairs: int = 1) -> tuple[Any, Any, list[Any]]:
    """(victims' EmbeddingSet, protection under the cell's key, protections under second keys).

    One second key per key pair (:func:`rekeyed` with ``pair`` = 0 .. key_pairs - 1), in memory
    only; a protection without secret parameters has a single "second key" (itself).
    """
    vic = data.clean.subset(data.victim)
    if np.unique(vic.identity).size < 2:
        raise ParameterError("the victims hold fewer than 2 subjects; these metrics need at least 2")
    key1 = data.fitted_protection()
    n = int(key_pairs) if data.protection.secret_params else 1
    return vic, key1, [rekeyed(data.protection, data.seed, j).fit(data.clean) for j in range(n)]


def _spread(values: list[float], name: str) -> dict[str, Any]:
    """Mean, min, max and standard deviation of a per-key-pair measure (JSON-ready)."""
    a = np.asarray(values, dtype=np.float64)
    return {f"{name}_per_pair": [float(v) for v in a], f"{name}_mean": float(a.mean()),
            f"{name}_min": float(a.min()), f"{name}_max": float(a.max()), f"{name}_std": float(a.std())}


def _rate_entry(r: Any) -> dict[str, Any]:
    return r.to_dict()


@register("attack", "unlinkability")
class Unlinkability(Attack):
    """Unlinkability (Gomez-Barrero et al. 2018): can templates under two keys be linked?

    Mated scores compare a victim's sample under the cell's key with another sample of the same
    victim under a second key; non-mated scores compare different victims, also across the two
    keys. Headline: global linkability Dsys (0 = unlinkable, 1 = fully linkable).

    Parameters
    ----------
    omega : float
        Prior ratio P(mated) / P(non-mated) of the local measure D<->(s) (1 = equal priors).
    bins : int or None
        Histogram bins over the joint score range; None = min(n_mated // 10, 100).
    max_pairs : int
        At most this many mated and this many non-mated pairs (drawn with the cell's seed).
    key_pairs : int
        Second keys drawn (one key pair each: the cell's key and a fresh one); Dsys is computed per
        pair and the headline is their mean (min / max / std reported). A single pair is
        all-or-nothing for PolyProtect on some models (docs/iso30136.md). A protection without
        secret parameters has one pair.
    """

    summary = "ISO/IEC 30136 unlinkability: mated/non-mated scores across two keys, local D<->(s), global Dsys."
    reference = ("Gomez-Barrero, Galbally, Rathgeb, Busch, General framework to evaluate unlinkability in "
                 "biometric template protection systems, IEEE TIFS 2018")
    applies_to: ClassVar[tuple[str, ...] | None] = ("template",)

    def __init__(self, omega: float = OMEGA, bins: int | None = None, max_pairs: int = MAX_PAIRS,
                 key_pairs: int = KEY_PAIRS) -> None:
        self.omega = omega
        self.bins = bins
        self.max_pairs = max_pairs
        self.key_pairs = key_pairs

    def validate_params(self) -> None:
        if isinstance(self.omega, bool) or not isinstance(self.omega, (int, float)) or not (np.isfinite(self.omega) and self.omega > 0):
            raise ParameterError(f"omega must be a positive number, got {self.omega!r}", param="omega")
        if self.bins is not None and (isinstance(self.bins, bool) or not isinstance(self.bins, (int, np.integer)) or self.bins < 1):
            raise ParameterError(f"bins must be a positive integer or null, got {self.bins!r}", param="bins")
        _check_max_pairs(self.max_pairs)
        _check_key_pairs(self.key_pairs)

    def run(self, data: AttackData) -> AttackOutcome:
        self.validate_params()
        vic, key1, keys2 = _two_keys(data, int(self.key_pairs))
        p1 = protect_rows(key1, vic.embeddings, vic.identity)
        comp = key1.comparator()
        rng = np.random.default_rng(np.random.SeedSequence([int(data.seed), _KEY_STREAM, 1]))
        mi, mj = score_pairs(vic.identity, True, int(self.max_pairs), rng)
        if mi.size == 0:
            raise ParameterError("no victim has 2 samples: no mated pairs for unlinkability")
        ni, nj = score_pairs(vic.identity, False, int(self.max_pairs), rng)
        per_pair = []
        for key2 in keys2:  # the same score pairs for every key pair; the figure shows pair 0
            p2 = protect_rows(key2, vic.embeddings, vic.identity)
            m_j = np.asarray(comp.paired(p1[mi], p2[mj]), dtype=np.float64)
            n_j = np.asarray(comp.paired(p1[ni], p2[nj]), dtype=np.float64)
            per_pair.append((linkability(m_j, n_j, float(self.omega), self.bins), m_j, n_j))
        link, mated, nonmated = per_pair[0]
        dsys = _spread([lk.dsys for lk, _, _ in per_pair], "dsys")
        x = [float(v) for v in link.centres]
        images: list[str] = []
        if data.work_dir is not None:
            from facepriv.metrics.iso_plots import plot_unlinkability

            data.work_dir.mkdir(parents=True, exist_ok=True)
            public = {k: v for k, v in data.protection.public_params().items()
                      if k not in data.protection.secret_params and v is not None and k != "seed"}
            title = f"{data.protection_name}({', '.join(f'{k}={v}' for k, v in public.items())})"
            plot_unlinkability(link, data.work_dir / "unlinkability.png", title=title, overwrite=True)
            images.append("unlinkability.png")
        metrics = {**link.summary(), "dsys": dsys["dsys_mean"], "dsys_first_pair": link.dsys, **dsys,
                   "key_pairs": len(keys2),
                   "mated_mean": float(mated.mean()), "nonmated_mean": float(nonmated.mean()),
                   "mated_mean_per_pair": [float(m.mean()) for _, m, _ in per_pair],
                   "second_key": (f"{len(keys2)} drawn" if data.protection.secret_params
                                  else "none (no secret parameters)")}
        return AttackOutcome(
            headline=headline("dsys", dsys["dsys_mean"], None, ""),
            metrics=metrics,
            curves={
                "unlinkability_densities": {"x": x, "xlabel": "score across two keys", "ylabel": "density",
                                            "series": {"mated": [float(v) for v in link.mated_density],
                                                       "non-mated": [float(v) for v in link.nonmated_density]}},
                "local_linkability": {"x": x, "xlabel": "score across two keys", "ylabel": "D<->(s)",
                                      "series": {"D<->(s)": [float(v) for v in link.local]}},
            },
            images=images,
        )


@register("attack", "renewability")
class Renewability(Attack):
    """Renewability: does a template re-issued under a new key still match the old one?

    For every victim photo, its template under the cell's key is compared with its template under
    a second key. Headline: share of these pairs accepted at the protected system's own FMR 1 %
    threshold (1 = the new key changes nothing). Also reported at FMR 0.1 % and at the unprotected
    system's thresholds.

    Parameters
    ----------
    max_pairs : int
        Impostor pairs (under one key) sampled to set the protected system's thresholds.
    key_pairs : int
        Second keys drawn; the failure rates pool every photo under every key pair, i.e. they are
        the mean over the pairs (headline), with the per-pair rates and their min / max reported.
    """

    summary = "ISO/IEC 30136 renewability: same photo under two keys, accepted at FMR 0.1 % / 1 % thresholds?"
    reference = "ISO/IEC 30136:2018 (performance testing of biometric template protection schemes)"

    def __init__(self, max_pairs: int = MAX_PAIRS, key_pairs: int = KEY_PAIRS) -> None:
        self.max_pairs = max_pairs
        self.key_pairs = key_pairs

    def validate_params(self) -> None:
        _check_max_pairs(self.max_pairs)
        _check_key_pairs(self.key_pairs)

    def run(self, data: AttackData) -> AttackOutcome:
        self.validate_params()
        vic, key1, keys2 = _two_keys(data, int(self.key_pairs))
        p1 = protect_rows(key1, vic.embeddings, vic.identity)
        comp = key1.comparator()
        crosses = [np.asarray(comp.paired(p1, protect_rows(k2, vic.embeddings, vic.identity)), dtype=np.float64)
                   for k2 in keys2]
        cross = np.concatenate(crosses)  # pooled: the rates are the mean over the key pairs
        rng = np.random.default_rng(np.random.SeedSequence([int(data.seed), _KEY_STREAM, 2]))
        ni, nj = score_pairs(vic.identity, False, int(self.max_pairs), rng)
        own_imp = np.asarray(comp.paired(p1[ni], p1[nj]), dtype=np.float64)
        clean_imp = scores_all_pairs((vic.embeddings, vic.identity), CosineComparator()).impostor
        own = renewability_failure(cross, own_imp, RENEWABILITY_FMRS)
        ref = renewability_failure(cross, clean_imp, RENEWABILITY_FMRS)
        h = own[0.01]
        per_pair = {repr(f): _spread([float(renewability_failure(cr, own_imp, (f,))[f]) for cr in crosses], "failure")
                    for f in RENEWABILITY_FMRS}
        fmr_labels = [f"{100 * f:g} %" for f in RENEWABILITY_FMRS]
        return AttackOutcome(
            headline=headline("renewability_failure_at_fmr1", float(h), (h.ci_low, h.ci_high), "fraction"),
            metrics={
                "failure_own_threshold": {repr(f): _rate_entry(r) for f, r in own.items()},
                "failure_unprotected_threshold": {repr(f): _rate_entry(r) for f, r in ref.items()},
                "failure_own_threshold_per_key_pair": per_pair,
                "cross_key_score_mean": float(cross.mean()),
                "cross_key_score_mean_per_pair": [float(cr.mean()) for cr in crosses],
                "n_photos": int(crosses[0].size), "key_pairs": len(keys2),
                "n_impostor_pairs": int(own_imp.size),
                "second_key": (f"{len(keys2)} drawn" if data.protection.secret_params
                               else "none (no secret parameters)"),
            },
            tables={"renewability_failure": {
                "header": ["FMR", "own threshold", "unprotected threshold"],
                "rows": [[lab, float(own[f]), float(ref[f])] for lab, f in zip(fmr_labels, RENEWABILITY_FMRS)]}},
        )


def no_inversion(protection: Any) -> str | None:
    """Why ``protection`` cannot be attacked with its key disclosed (it has no ``invert``), or None."""
    if not callable(getattr(protection, "invert", None)):
        return f"{getattr(protection, 'name', 'this protection')} has no key-disclosure inversion (invert)"
    return None


@register("attack", "irreversibility")
class Irreversibility(Attack):
    """Irreversibility under key disclosure: invert protected templates with the key, then match.

    The attacker knows the cell's key and has its own unprotected templates (``data.attacker``
    rows); ``protection.invert`` estimates each victim's unprotected template, which the
    unprotected system (cosine) compares with the original. Headline: inversion success rate at
    the unprotected system's FMR 1 % threshold; curve over FMR.

    Parameters
    ----------
    points_per_decade : int
        Points of the success-vs-FMR curve per decade of FMR.
    max_templates : int or None
        Invert at most this many victim templates (drawn with the cell's seed; numerical inversions
        such as PolyProtect's cost ~0.1-1 s each); None = every victim. Thresholds always use all.
    """

    summary = "ISO/IEC 30136 irreversibility with the key disclosed: inversion success rate vs. FMR."
    reference = "ISO/IEC 30136:2018; Hahn & Marcel, IEEE TBIOM 2022 (inversion success rate vs. FMR)"

    def __init__(self, points_per_decade: int = 4, max_templates: int | None = None) -> None:
        self.points_per_decade = points_per_decade
        self.max_templates = max_templates

    def validate_params(self) -> None:
        v = self.points_per_decade
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 50:
            raise ParameterError(f"points_per_decade must be an integer in [1, 50], got {v!r}", param="points_per_decade")
        m = self.max_templates
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
            raise ParameterError(f"max_templates must be a positive integer or null, got {m!r}", param="max_templates")

    @classmethod
    def not_applicable(cls, protection: Any, has_images: bool) -> str | None:
        return super().not_applicable(protection, has_images) or no_inversion(protection)

    def run(self, data: AttackData) -> AttackOutcome:
        self.validate_params()
        why = self.not_applicable(data.protection, data.has_images)
        if why:
            return AttackOutcome(status="not_applicable", message=why)
        prot = data.fitted_protection()
        vic = data.clean.subset(data.victim)
        att = data.clean.subset(data.attacker)
        cos = CosineComparator()
        imp = scores_all_pairs((vic.embeddings, vic.identity), cos).impostor  # thresholds: every victim
        if self.max_templates is not None and len(vic) > self.max_templates:
            rng = np.random.default_rng(np.random.SeedSequence([int(data.seed), _KEY_STREAM, 3]))
            vic = vic.subset(np.sort(rng.choice(len(vic), size=int(self.max_templates), replace=False)))
        est = np.asarray(prot.invert(protect_rows(prot, vic.embeddings, vic.identity), att.embeddings, identity=vic.identity))
        if est.shape != vic.embeddings.shape or not np.isfinite(est).all():
            raise ParameterError(f"{data.protection_name}.invert returned shape {est.shape} (want "
                                 f"{vic.embeddings.shape}, finite)")
        scores = cos.paired(est, vic.embeddings)
        grid = fmr_grid(imp.size, int(self.points_per_decade))
        curve = inversion_success(scores, imp, tuple(grid))
        at = inversion_success(scores, imp, FMR_TARGETS)
        h = at[0.01]
        return AttackOutcome(
            headline=headline("inversion_success_at_fmr1", float(h), (h.ci_low, h.ci_high), "fraction"),
            metrics={"inversion_success": {repr(f): _rate_entry(r) for f, r in at.items()},
                     "inverted_vs_original_mean": float(scores.mean()), "n_victims": int(scores.size),
                     "n_impostor_scores": int(imp.size)},
            curves={"inversion_success_vs_fmr": {
                "x": grid, "xlabel": "FMR of the unprotected system", "ylabel": "inversion success rate",
                "series": {"inversion": [float(curve[f]) for f in grid]}, "log_x": True}},
        )
