"""The registered ``score_only`` attack: template estimation from comparison scores alone.

This module imports nothing heavy; the attacker's maths is in :mod:`.estimate`, the system side in
:mod:`.oracle`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline
from facepriv.errors import ParameterError
from facepriv.registry import register

FMRS = (0.001, 0.01, 0.1)
QUERIES = (8, 16, 32, 64, 128, 256)
SEED_MAX = 2**32 - 1


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, numbers.Integral)


def _cap(name: str, v: Any, low: int) -> None:
    if v is not None and (not _is_int(v) or v < low):
        raise ParameterError(f"{name}: must be an integer >= {low} or null, got {v!r}", param=name)


@register("attack", "score_only")
class ScoreOnlyAttack(Attack):
    """Score-only inversion: estimate a victim's template from the scores of the attacker's own photos.

    The attacker owns the photos of the cell's attacker side. It keeps a fixed, seeded query set
    of them and enrols the rest as its own accounts. The system protects every presented query and
    every enrolment with the cell's protection and answers only comparison scores (its
    protection's comparator), through one counting oracle per stored template. From the score
    vectors of its own enrolments and their embeddings (the recognition model, a public network,
    acts as the attacker's proxy), the attacker learns a ridge regression score vector ->
    embedding and applies it to each victim's score vector. Success attack rate (SAR): share of
    victims whose estimated template, presented to the system as a probe (protected like any
    probe), is accepted against the victim's stored template at the system's threshold for FMR
    0.1 / 1 / 10 % (all-pairs impostor scores of the stored victim templates), per number of
    queries; also against another stored photo of the victim. Headline: SAR at the largest query
    count and ``headline_fmr``.

    Parameters
    ----------
    queries : sequence of int
        Numbers of queries (scores read per victim) at which the attack is measured, each >= 1;
        the query set has max(queries) photos.
    alpha : float
        Ridge penalty of the score-to-embedding regression (> 0).
    max_train : int or None
        Enrol at most this many of the attacker's own photos (besides the queries) to learn the
        regression (>= 2); None = every remaining attacker photo.
    max_victims : int or None
        Attack at most this many victim photos (a seeded subset, >= 2); None = every victim.
    headline_fmr : float
        FMR of the headline SAR: 0.001, 0.01 or 0.1.
    seed : int
        Seeds the query set, the training subset and the victim subset (0 .. 2**32 - 1).
    decoder : str or None
        Run folder of ``facepriv reconstruct train`` (a decoder trained on unprotected templates of
        the system's model, on the attacker's own photos). Given, the attack also decodes every
        estimate into a face (Kim et al.'s second stage), victims are limited to people the decoder
        never saw (its ``split.json``), and the decoded faces are presented to the system (embedded,
        protected as probes) at every query count. None = stop at the template.
    judges : sequence of str
        Recognition models that judge the decoded faces at the largest query count and at 0
        queries (the decoded mean template, their baseline) after re-detection and
        re-alignment (models the system or the decoder used are refused); needs ``decoder`` and
        the photos.
    """

    summary = ("Score-only attacker: estimates victims' templates from the comparison scores of its own "
               "query photos (ridge regression); success rate vs number of queries")
    reference = "Razzhigaev et al. 2020; Kim et al., Scores Tell Everything about Bob, IEEE S&P 2024"
    needs_images = False
    applies_to = ("template",)

    def __init__(self, queries: Sequence[int] = QUERIES, alpha: float = 1.0, max_train: int | None = None,
                 max_victims: int | None = 300, headline_fmr: float = 0.001, seed: int = 0,
                 decoder: str | None = None, judges: Sequence[str] = ()) -> None:
        self.queries = queries
        self.alpha = alpha
        self.max_train = max_train
        self.max_victims = max_victims
        self.headline_fmr = headline_fmr
        self.seed = seed
        self.decoder = decoder
        self.judges = judges

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault."""
        q = self.queries
        if isinstance(q, (str, bytes)) or not isinstance(q, Sequence) or not q or not all(_is_int(k) and k >= 1 for k in q):
            raise ParameterError(f"queries: give a list of query counts, each an integer >= 1, got {q!r}", param="queries")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a) or a <= 0:
            raise ParameterError(f"alpha: must be a finite number > 0, got {a!r}", param="alpha")
        _cap("max_train", self.max_train, 2)
        _cap("max_victims", self.max_victims, 2)
        if isinstance(self.headline_fmr, bool) or self.headline_fmr not in FMRS:
            raise ParameterError(f"headline_fmr: must be one of {', '.join(f'{f:g}' for f in FMRS)}, "
                                 f"got {self.headline_fmr!r}", param="headline_fmr")
        if not _is_int(self.seed) or not 0 <= self.seed <= SEED_MAX:
            raise ParameterError(f"seed: must be an integer from 0 to {SEED_MAX}, got {self.seed!r}", param="seed")
        if self.decoder is not None and (not isinstance(self.decoder, str) or not self.decoder):
            raise ParameterError(f"decoder: give the path of a reconstruction run folder or null, got {self.decoder!r}",
                                 param="decoder")
        if self.decoder is not None and not (Path(self.decoder) / "config.json").is_file():
            raise ParameterError(f"decoder: {self.decoder} is not a run folder of 'facepriv reconstruct train' "
                                 "(no config.json)", param="decoder")
        from facepriv.attacks.reconstruction.attack import check_model_names

        check_model_names("judges", self.judges)
        if self.judges and self.decoder is None:
            raise ParameterError("judges: judges look at decoded faces; set decoder as well", param="judges")

    def run(self, data: AttackData) -> AttackOutcome:
        """Build the system and its oracles, run the attacker on oracles alone, score its estimates."""
        self.validate_params()
        counts = sorted({int(k) for k in self.queries})
        rng = np.random.default_rng(self.seed)
        own = rng.permutation(np.asarray(data.attacker))
        if len(own) < counts[-1] + 2:
            raise ParameterError(f"queries: the attacker has {len(own)} photos, too few for {counts[-1]} queries "
                                 "and two enrolments of its own", param="queries")
        query_rows, train_rows = own[: counts[-1]], own[counts[-1]:]
        if self.max_train is not None:
            train_rows = train_rows[: self.max_train]
        pool = np.asarray(data.victim)
        run = self._decoder_run(data)
        if run is not None:
            from facepriv.attacks.score_only.decode import unseen_victims

            pool = unseen_victims(pool, data.clean.identity, run.train_identities)
        victims = np.sort(rng.permutation(pool)[: self.max_victims or len(pool)])
        if len(np.unique(data.clean.identity[victims])) < 2:
            raise ParameterError("the victim side needs at least two identities (impostor scores)")
        sys_, stored = _system(data, query_rows, victims)
        estimates = _attack(data, sys_, train_rows, stored, [0, *counts], float(self.alpha))
        out = _evaluate(data, victims, stored, estimates, counts, float(self.headline_fmr), self.seed)
        if run is not None:
            from facepriv.attacks.score_only.decoded_outcome import add_decoded

            add_decoded(out, data, run, victims, stored, estimates, counts, list(self.judges))
        return out

    def _decoder_run(self, data: AttackData):
        """The checked decoder run (None without ``decoder``); judges checked against what it touched."""
        if self.decoder is None:
            return None
        from facepriv.attacks.reconstruction.judges import check_judges
        from facepriv.attacks.score_only.decode import load_decoder_run

        if data.model is None:
            raise ParameterError("decoder: decoding needs the system's recognition model; the data are an "
                                 "embeddings file", param="decoder")
        if self.judges and data.image_root is None and data.aligned is None:
            raise ParameterError("judges: judging decoded faces needs the photos; the data are an embeddings file",
                                 param="judges")
        run = load_decoder_run(self.decoder, data.model.name, data.clean.dim)
        check_judges(list(self.judges), sorted({*run.touched, data.model.name}), False)
        return run


def _system(data: AttackData, query_rows: np.ndarray, victims: np.ndarray):
    """The system: protected query probes, and the victims' stored templates (system side only)."""
    from facepriv.attacks.score_only.oracle import ScoringSystem

    prot = data.fitted_protection()
    system = ScoringSystem(prot.comparator(), prot.transform(data.clean.embeddings[query_rows]))
    return system, prot.transform(data.clean.embeddings[victims])


def _attack(data: AttackData, system, train_rows: np.ndarray, stored: np.ndarray, counts: list[int],
            alpha: float) -> dict[int, np.ndarray]:
    """The attacker's part: its own enrolments and embeddings, the victims' oracles, nothing else."""
    from facepriv.attacks.score_only.estimate import ScoreOnlyAttacker

    prot = data.fitted_protection()
    own_oracles = system.enrol(prot.transform(data.clean.embeddings[train_rows]))
    victim_oracles = system.enrol(stored)
    attacker = ScoreOnlyAttacker(data.clean.embeddings[train_rows], alpha)
    out = attacker.estimate(own_oracles, victim_oracles, counts)
    asked = {o.queries for o in victim_oracles}
    if asked != {max(counts)}:  # the attack must ask each victim exactly the queries it reports
        raise RuntimeError(f"score_only: victims were asked {sorted(asked)} queries, expected {max(counts)}")
    return out


def _evaluate(data: AttackData, victims: np.ndarray, stored: np.ndarray, estimates: dict[int, np.ndarray],
              counts: list[int], headline_fmr: float, seed: int) -> AttackOutcome:
    """SAR per query count and FMR against the stored template and another stored photo of the victim.

    Row 0 of the table is the baseline without queries (the attacker's mean template); the curve
    starts at the first query count.
    """
    from facepriv.attacks.reconstruction.evaluate import enrolment_partner, fmr_key
    from facepriv.metrics.scores import scores_all_pairs
    from facepriv.metrics.stats import wilson_interval
    from facepriv.metrics.verification import threshold_at_fmr

    prot = data.fitted_protection()
    comp = prot.comparator()
    ident = data.clean.identity[victims]
    imp = scores_all_pairs((stored, ident), comp).impostor
    thr = {fmr_key(f): threshold_at_fmr(imp, f) for f in FMRS}
    partner = enrolment_partner(ident, seed)
    has = partner >= 0
    rows, series = [], {}
    metrics: dict[str, Any] = {"n_victims": int(len(victims)), "n_victim_identities": int(len(np.unique(ident)))}
    metrics |= {f"threshold_fmr{k}": v for k, v in thr.items()}
    for k in [0, *counts]:
        probe = prot.transform(estimates[k])  # the system protects the presented estimate like any probe
        s_same = np.asarray(comp.paired(probe, stored), dtype=np.float64)
        s_other = np.asarray(comp.paired(probe[has], stored[partner[has]]), dtype=np.float64)
        row: list[Any] = [k, round(float(np.mean(s_same)), 4)]
        for f in FMRS:
            key = fmr_key(f)
            rate = float(np.mean(s_same >= thr[key]))
            other = float(np.mean(s_other >= thr[key])) if has.any() else None
            metrics[f"sar_q{k}_fmr{key}"] = rate
            metrics[f"sar_other_photo_q{k}_fmr{key}"] = other
            if k:
                series.setdefault(f"SAR @ FMR {100 * f:g} %", []).append(100 * rate)
            row += [round(100 * rate, 1), None if other is None else round(100 * other, 1)]
        rows.append(row)
    key = fmr_key(headline_fmr)
    n = len(victims)
    hits = int(round(metrics[f"sar_q{counts[-1]}_fmr{key}"] * n))
    header = ["queries", "mean score"]
    for f in FMRS:
        header += [f"SAR @ FMR {100 * f:g} % (%)", f"vs other photo @ {100 * f:g} % (%)"]
    curves = {"sar_vs_queries": {"x": counts, "xlabel": "queries per victim", "ylabel": "SAR (%)", "log_x": True,
                                 "series": series}}
    return AttackOutcome(headline=headline(f"sar@fmr{key} ({counts[-1]} queries)", hits / n, wilson_interval(hits, n),
                                           "fraction"),
                         metrics=metrics, curves=curves, tables={"score-only SAR vs queries": {"header": header,
                                                                                             "rows": rows}})
