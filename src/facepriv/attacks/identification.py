"""ISO/IEC 19795-1 identification of the enrolled victims as a matrix column.

A registered attack on template protections, run in memory on a cell's
:class:`~facepriv.attacks.base.AttackData`: the victims' templates are enrolled and searched with
the protection's own comparator (:mod:`facepriv.metrics.identification`; exact search, FAISS where
the comparator allows it); docs/iso30136.md gives the protocol.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline, protect_rows
from facepriv.errors import ParameterError
from facepriv.metrics.identification import CHUNK, FPIRS, MAX_RANK, RANKS, enrolment_split, identify
from facepriv.registry import register

__all__ = ["Identification"]


def _int_list(v: Any, name: str, lo: int) -> list[int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or any(
            isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < lo for x in v):
        raise ParameterError(f"{name} must be a non-empty list of integers >= {lo}, got {v!r}", param=name)
    return [int(x) for x in v]


def _fraction_list(v: Any, name: str) -> list[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or any(
            isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1 for x in v):
        raise ParameterError(f"{name} must be a non-empty list of numbers in (0, 1), got {v!r}", param=name)
    return [float(x) for x in v]


@register("attack", "identification")
class Identification(Attack):
    """1:N identification (ISO/IEC 19795-1) on protected templates with the protection's comparator.

    Gallery: the first sample of each victim (one protected template per subject); mated probes:
    the victims' other samples; non-mated probes (open set): every sample of the attacker's
    subjects, who are never enrolled. Exact search (:mod:`facepriv.search`). Headline: closed-set
    rank-1 identification rate; also rank-k, the CMC and DIR at FPIR.

    Parameters
    ----------
    ranks : list of int
        k of the reported rank-k identification rates (1 = rank-1).
    max_rank : int
        Length of the CMC curve (capped at the gallery size).
    fpir : list of float
        FPIR targets of the open-set DIR (fractions, e.g. 0.01 for 1 %).
    chunk : int
        Probes searched at once (bounds memory).
    """

    summary = "ISO/IEC 19795-1 identification: rank-k, CMC and DIR at FPIR, exact search with the protection's comparator."
    reference = "ISO/IEC 19795-1:2021 (biometric performance testing: identification)"

    def __init__(self, ranks: list[int] | tuple[int, ...] = RANKS, max_rank: int = MAX_RANK,
                 fpir: list[float] | tuple[float, ...] = FPIRS, chunk: int = CHUNK) -> None:
        self.ranks = ranks
        self.max_rank = max_rank
        self.fpir = fpir
        self.chunk = chunk

    def validate_params(self) -> None:
        _int_list(self.ranks, "ranks", 1)
        _int_list(self.max_rank, "max_rank", 1)
        _fraction_list(self.fpir, "fpir")
        _int_list(self.chunk, "chunk", 1)

    def run(self, data: AttackData) -> AttackOutcome:
        self.validate_params()
        prot = data.fitted_protection()
        vic = data.clean.subset(data.victim)
        g, p = enrolment_split(vic.identity)
        pv = protect_rows(prot, vic.embeddings, vic.identity)
        att = data.clean.subset(data.attacker)
        nonmated = protect_rows(prot, att.embeddings, att.identity) if len(att) else None
        res = identify(prot.comparator(), pv[g], vic.identity[g], pv[p], vic.identity[p], nonmated,
                       ks=_int_list(self.ranks, "ranks", 1), max_rank=int(self.max_rank),
                       fpirs=_fraction_list(self.fpir, "fpir"), chunk=int(self.chunk))
        r1 = res.rank_k.get(1)
        if r1 is None:
            from facepriv.metrics.privacy import topk_accuracy

            r1 = topk_accuracy(res.ranks, (1,))[1]
        from facepriv.search import comparator_metric

        rows = [[f"rank-{k}", float(v)] for k, v in res.rank_k.items()]
        rows += [[f"DIR at FPIR {100 * f:g} %", float(d)] for f, (_, d) in res.dir.items()]
        return AttackOutcome(
            headline=headline("rank1_identification_rate", float(r1), (r1.ci_low, r1.ci_high), "fraction"),
            metrics={**res.to_dict(), "search": comparator_metric(prot.comparator())},
            curves={"cmc": {"x": list(range(1, len(res.cmc) + 1)), "xlabel": "rank", "ylabel": "identification rate",
                            "series": {"CMC": [float(v) for v in res.cmc]}}},
            tables={"identification": {"header": ["measure", "rate"], "rows": rows}},
        )
