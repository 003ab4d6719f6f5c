"""Results of the score-only attack's decoding stage, added to the attack's outcome.

Kept apart from :mod:`.attack` (the template stage) so that the attack without a decoder imports
no torch code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepriv.attacks.base import AttackData, AttackOutcome
from facepriv.attacks.score_only.attack import FMRS
from facepriv.attacks.score_only.decode import DecoderRun, decoded_faces, samples_figure, system_scores

TABLE = "score-only decoded faces"


def add_decoded(out: AttackOutcome, data: AttackData, run: DecoderRun, victims: np.ndarray, stored: np.ndarray,
                estimates: dict[int, np.ndarray], counts: list[int], judges: list[str]) -> None:
    """Decode the estimates at every query count, present the faces to the system, let judges look.

    Adds ``decoded_sar_q{k}_fmr{f}`` (the system accepts the decoded face against the victim's
    stored template, at the thresholds of the template stage), ``decoded_judge_{name}_fmr{f}`` and
    ``decoded_judge_{name}_detected`` at the largest query count, and the same with ``_q0_`` for the
    decoded mean template (the judges' baseline: a face the scores told nothing about), a table, a
    curve, and with a work folder the figure ``score_only/decoded.png`` (original | decoded face at
    the largest count).
    """
    from facepriv.attacks.reconstruction.evaluate import fmr_key

    prot = data.fitted_protection()
    device = getattr(data, "device", "cpu")
    m = out.metrics
    ident = data.clean.identity[victims]
    thr = {fmr_key(f): m[f"threshold_fmr{fmr_key(f)}"] for f in FMRS}
    m["decoder"] = {"run": str(run.path), "template_model": run.model, "models_touched": run.touched,
                    "size": run.size, "victims_unseen_by_decoder": True}
    header = ["queries", "mean score (decoded face)"] + [f"system SAR @ FMR {100 * f:g} % (%)" for f in FMRS]
    rows: list[list[Any]] = []
    faces_at: dict[int, np.ndarray] = {}
    for k in [0, *counts]:
        faces = decoded_faces(run, estimates[k], device)
        s = system_scores(faces, data.model, prot, stored, device)
        row: list[Any] = [k, round(float(s.mean()), 4)]
        for f in FMRS:
            key = fmr_key(f)
            m[f"decoded_sar_q{k}_fmr{key}"] = float(np.mean(s >= thr[key]))
            row.append(round(100 * m[f"decoded_sar_q{k}_fmr{key}"], 1))
            if k:
                out.curves["sar_vs_queries"]["series"].setdefault(f"decoded face, SAR @ FMR {100 * f:g} %",
                                                                   []).append(100 * m[f"decoded_sar_q{k}_fmr{key}"])
        rows.append(row)
        if k in (0, counts[-1]):
            faces_at[k] = faces
    out.tables[TABLE] = {"header": header, "rows": rows}
    if judges:
        _judge(out, data, victims, ident, faces_at, judges)
    work = data.work("score_only")
    if work is not None:
        originals = data.aligned_faces(data.model.card.alignment)
        where = {i: n for n, i in enumerate(originals.ids)}
        keep = np.array([n for n, i in enumerate(data.clean.ids[victims]) if i in where], dtype=np.int64)
        if len(keep):
            crops = originals.crops[[where[i] for i in data.clean.ids[victims][keep]]]
            samples_figure(run, crops, faces_at[counts[-1]][keep], ident[keep], work / "decoded.png")
            out.images.append("score_only/decoded.png")


def _judge(out: AttackOutcome, data: AttackData, victims: np.ndarray, ident: np.ndarray,
           faces_at: dict[int, np.ndarray], judges: list[str]) -> None:
    """Judges' verdicts on the decoded faces at the largest query count and on the no-query baseline."""
    from facepriv.attacks.reconstruction.evaluate import fmr_key
    from facepriv.attacks.reconstruction.judges import judge_sets

    m = out.metrics
    ids = data.clean.ids[victims].tolist()
    top = max(faces_at)
    # each judge embeds the victims' originals once for both query counts
    by_judge = {name: judge_sets(name, faces_at, ids, ident, data.aligned_faces, FMRS) for name in judges}
    jrows = []
    for k in sorted(faces_at, reverse=True):
        tag = "" if k == top else f"q{k}_"
        for name in judges:
            v = by_judge[name][k]
            for key, rate in v["sar"].items():
                m[f"decoded_judge_{name}_{tag}fmr{key}"] = rate
            m[f"decoded_judge_{name}_{tag}detected"] = v["detected"]
            jrows.append([name, k, round(100 * v["detected"], 1)] + [round(100 * v["sar"][fmr_key(f)], 1) for f in FMRS])
        if k == top:  # one protocol line (the same at every query count)
            m["decoded_judge_protocol"] = by_judge[judges[0]][k]["protocol"]
    out.tables["score-only decoded faces, judges"] = {
        "header": ["judge", "queries", "detected (%)"] + [f"SAR @ FMR {100 * f:g} % (%)" for f in FMRS],
        "rows": jrows}
