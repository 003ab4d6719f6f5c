"""Score files of a score-only attacker: the comparison scores it read from a real system.

Format: CSV with the header ``template,query,score``, one row per (stored template, query photo)
comparison the attacker made; ``template`` names the stored template (an own enrolment or a
victim), ``query`` the attacker's query photo, ``score`` the system's comparison score. Every
template must have a score for every query of the attacker's query set (a score-only attack needs
the whole score vector); the query set and its order are those of the attacker's own score file.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facepriv.errors import InputFileError

HEADER = ("template", "query", "score")


def read_score_file(path: str | os.PathLike[str], queries: Sequence[str] | None = None
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """(templates, queries, scores (T, Q)) of a score file.

    Parameters
    ----------
    path : path
        The CSV file.
    queries : sequence of str, optional
        The attacker's query set (from its own score file): every template must have a score for
        each of them, and no other query may appear. None = the queries of this file, in the
        order of their first row.

    Raises
    ------
    InputFileError
        Naming the file: unreadable, wrong header, a bad or duplicated score, an unknown query,
        or a template with missing probes.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such file" if not p.exists() else "is not a file")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                raise InputFileError(p, f"not a score file: the header must be {','.join(HEADER)}, got {header!r}")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(p, f"not a readable CSV score file ({type(exc).__name__})") from None
    scores: dict[str, dict[str, float]] = {}
    order: list[str] = []
    for n, r in enumerate(rows, start=2):
        if len(r) != 3:
            raise InputFileError(p, f"line {n}: expected 3 fields (template,query,score), got {len(r)}")
        t, q, s = (x.strip() for x in r)
        try:
            v = float(s)
        except ValueError:
            raise InputFileError(p, f"line {n}: score {s!r} is not a number") from None
        if not math.isfinite(v) or not t or not q:
            raise InputFileError(p, f"line {n}: needs a template, a query and a finite score, got {r!r}")
        if q in scores.setdefault(t, {}):
            raise InputFileError(p, f"line {n}: a second score of template {t!r} with query {q!r}")
        scores[t][q] = v
        if queries is None and q not in order:
            order.append(q)
    if not scores:
        raise InputFileError(p, "holds no score")
    qs = list(queries) if queries is not None else order
    known = set(qs)
    for t, got in scores.items():
        extra = sorted(set(got) - known)
        if extra:
            raise InputFileError(p, f"template {t!r} was compared with query {extra[0]!r}, which is not among the "
                                    f"attacker's {len(qs)} queries")
        missing = [q for q in qs if q not in got]
        if missing:
            raise InputFileError(p, f"template {t!r} has no score for {len(missing)} of the {len(qs)} queries "
                                    f"(missing probes, e.g. {missing[0]!r})")
    templates = list(scores)
    return templates, qs, np.array([[scores[t][q] for q in qs] for t in templates], dtype=np.float64)
