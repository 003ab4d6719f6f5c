"""Judges of reconstructions: recognition systems that decide whether a reconstruction passes.

A decoder trained with an identity loss can learn to produce images that *its own loss model*
accepts without looking like the person, so a success rate judged by that model over-states
reversibility. A **judge** is a recognition model the decoder never saw (neither as the model that
made the templates nor as the identity-loss model) and it is given a fair chance: each
reconstruction is treated like any photo — placed on a canvas with a margin, re-detected and
re-aligned with the judge's own alignment recipe — and compared with the judge's template of the
original photo (aligned with the same recipe). A reconstruction in which the judge's detector
finds no face counts as a failed attack (it would not pass a real system either).

Scenarios of attacker knowledge (Shahreza & Marcel, IJCB 2023 / TIFS 2024):

* white box: the identity loss uses the system's model (``loss_model`` unset);
* black box with a proxy: the identity loss uses another model (``loss_model``), the templates
  come from the system;
* transfer: the reconstruction is judged by systems other than the template and loss models
  (``judges``). A judge among the models the decoder touched is refused unless the white-box
  judgement is asked for explicitly (``white_box_judges``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from facepriv.errors import ParameterError

#: margin added on every side of a reconstruction before detection, as a share of its side
CANVAS_MARGIN = 0.5
#: side of the canvas the judge's detector sees (reconstructions are 64 or 112 px chips)
CANVAS_SIDE = 400


def check_judges(judges: Sequence[str], touched: Sequence[str], white_box: bool) -> None:
    """Refuse a judge the decoder saw (template or loss model) unless ``white_box`` is asked for.

    Raises
    ------
    ParameterError
        ``param="judges"``, naming the judge and why it is not independent.
    """
    seen = [j for j in judges if j in set(touched)]
    if seen and not white_box:
        raise ParameterError(
            f"judges: {', '.join(seen)} contributed to the decoder (models touched: {', '.join(touched)}); a "
            "judge must be a model the decoder never saw (set white_box_judges to judge with it anyway)",
            param="judges")


def on_canvas(image: np.ndarray, side: int = CANVAS_SIDE, margin: float = CANVAS_MARGIN) -> np.ndarray:
    """A face chip placed on a larger photo-like canvas (edge-replicated margin, then resized)."""
    import cv2

    h, w = image.shape[:2]
    m = int(round(margin * max(h, w)))
    padded = cv2.copyMakeBorder(image, m, m, m, m, cv2.BORDER_REPLICATE)
    return cv2.resize(padded, (side, side), interpolation=cv2.INTER_CUBIC)


def realign(images: np.ndarray, recipe: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-detect and re-align each image with ``recipe``: (crops of the detected ones, detected mask)."""
    from facepriv.models.alignment import get_aligner

    aligner = get_aligner(recipe)
    crops, ok = [], np.zeros(len(images), dtype=bool)
    for i, img in enumerate(images):
        r = aligner.align(on_canvas(np.ascontiguousarray(img)))
        if r.ok:
            crops.append(r.crop)
            ok[i] = True
    return (np.stack(crops) if crops else np.zeros((0, 1, 1, 3), np.uint8)), ok


def judge(
    name: str,
    recon: np.ndarray,
    ids: Sequence[str],
    identity: np.ndarray,
    originals_for: Callable[[str], Any],
    fmrs: Sequence[float],
) -> dict[str, Any]:
    """Success attack rate of reconstructions under judge ``name``.

    Parameters
    ----------
    name : str
        Registered recognition model acting as the judge.
    recon : ndarray of uint8 (N, s, s, 3)
        Reconstructions, row i of the photo ``ids[i]``.
    ids, identity
        Sample ids and identities of the rows.
    originals_for : callable(recipe) -> AlignedCrops
        Aligned crops of the original photos (of at least ``ids``) for an alignment recipe.
    fmrs : sequence of float
        Operating points; thresholds from the judge's all-pairs impostor scores of the originals.

    Returns
    -------
    dict
        ``sar`` / ``sar_ci95`` per FMR over every row whose original the judge can align (a
        reconstruction it cannot detect counts as a failure), ``thresholds``, ``n``, ``detected``
        (share of reconstructions the judge detects), ``protocol``.
    """
    return judge_sets(name, {None: recon}, ids, identity, originals_for, fmrs)[None]


def judge_sets(
    name: str,
    recons: Mapping[Hashable, np.ndarray],
    ids: Sequence[str],
    identity: np.ndarray,
    originals_for: Callable[[str], Any],
    fmrs: Sequence[float],
) -> dict[Hashable, dict[str, Any]]:
    """:func:`judge` for several sets of reconstructions of the same photos (e.g. one per query
    budget): the judge embeds the originals and sets its thresholds once. Returns the verdict of
    each set under its key."""
    from facepriv.attacks.reconstruction.evaluate import cosine_paired, success_rates, thresholds_at_fmrs
    from facepriv.models.zoo import get_model

    model = get_model(name)
    recipe = model.card.alignment
    aligned = originals_for(recipe)
    where = {i: k for k, i in enumerate(aligned.ids)}
    rows = np.array([k for k, i in enumerate(ids) if i in where], dtype=np.int64)
    if len(np.unique(np.asarray(identity)[rows])) < 2:
        raise ParameterError(f"judges: the {name} detector aligns originals of fewer than 2 identities; it cannot judge")
    orig_emb = model.embed(aligned.crops[[where[ids[k]] for k in rows]])
    thr = thresholds_at_fmrs(orig_emb, np.asarray(identity)[rows], tuple(fmrs))
    verdicts = {}
    for key, recon in recons.items():
        crops, ok = realign(recon[rows], recipe)
        scores = np.full(len(rows), -np.inf)
        if ok.any():
            scores[ok] = cosine_paired(model.embed(crops), orig_emb[ok])
        rates = success_rates(scores, thr)
        verdicts[key] = {
            "thresholds": thr,
            "sar": {k: v.rate for k, v in rates.items()},
            "sar_ci95": {k: [v.low, v.high] for k, v in rates.items()},
            "n": int(len(rows)),
            "detected": float(ok.mean()) if len(ok) else 0.0,
            "protocol": f"reconstruction on a {CANVAS_SIDE}px canvas, re-detected and re-aligned ({recipe}); "
                        "undetected = rejected; originals aligned with the same recipe",
        }
    return verdicts
