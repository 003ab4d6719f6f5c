"""The utility cell: verification on the protected templates with the protection's comparator.

EER with its FVC2000 interval, FNMR at FMR 1 %, and 10-fold accuracy on an identity-disjoint
generated pairs protocol (fewer folds when the set has < 20 identities). The numbers come from
:func:`facepriv.metrics.utility.protected_utility`, the function ``facepriv verify`` calls too.
"""

from __future__ import annotations

import numpy as np

from facepriv.attacks.base import AttackData, AttackOutcome, headline


def utility_cell(data: AttackData, metrics: tuple[str, ...]) -> tuple[AttackOutcome, dict[str, np.ndarray]]:
    """Verification metrics of the protected templates of every sample.

    Returns
    -------
    (AttackOutcome, scores)
        ``scores`` holds the ``genuine`` and ``impostor`` arrays (saved for the DET plot).
    """
    from facepriv.metrics.utility import protected_utility

    prot = data.protect(data.clean)
    comp = data.fitted_protection().comparator()
    res = protected_utility(prot, comp, seed=data.seed, metrics=metrics)
    rep = res.report
    scores = {"genuine": res.scores.genuine, "impostor": res.scores.impostor}
    out = AttackOutcome(headline=headline("eer", rep.eer, (rep.eer_low, rep.eer_high), "fraction"), metrics=res.metrics())
    return out, scores
