"""The one identity-disjoint splitter: every photo of a person lands in the same group.

Used by the experiment runner (attacker / victim), the attribute attacks (attacker / target), the
reconstruction attack (test / train) and AdvFace (shadow / attacker / evaluation). One seeded
procedure so that a split is reproducible from ``(identities, fractions, seed, strata)`` alone:

1. identities are grouped by stratum (e.g. their gender; one stratum when none is given), each
   stratum's identities sorted;
2. per stratum, in sorted stratum order, one ``numpy.random.default_rng(seed)`` stream permutes
   them; the first ``round(f_0 * n)`` go to group 0, the next ``round(f_1 * n)`` to group 1, ...,
   the rest to the last group; when a stratum has at least as many identities as there are groups,
   every group gets at least one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facepriv.errors import ParameterError


def identity_groups(
    identity: np.ndarray,
    fractions: Sequence[float],
    seed: int,
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """Group index (0 .. len(fractions)-1) of every row, identity-disjoint and seeded.

    Parameters
    ----------
    identity : array of str (N,)
        Identity label per row.
    fractions : sequence of float
        Share of identities of each group (the last group takes what is left); each in (0, 1).
    seed : int
        Seeds the permutation.
    strata : array of str (N,), optional
        A label per row (e.g. gender); each identity takes the first non-empty label among its
        rows ("" when none) and groups are drawn per stratum, so every group keeps the strata's
        proportions.

    Returns
    -------
    ndarray of int (N,)
    """
    fr = [float(f) for f in fractions]
    if len(fr) < 2 or any(not 0.0 < f < 1.0 for f in fr) or sum(fr) > 1.0 + 1e-9:
        raise ParameterError(f"split fractions must be at least two numbers in (0, 1) summing to at most 1, got {fr}")
    identity = np.asarray(identity).astype(str)
    ids = np.unique(identity)
    by_stratum: dict[str, list[str]] = {}
    if strata is None:
        by_stratum[""] = ids.tolist()
    else:
        strata = np.asarray(strata).astype(str)
        for i in ids:
            vals = strata[identity == i]
            vals = vals[vals != ""]
            by_stratum.setdefault(str(vals[0]) if vals.size else "", []).append(str(i))
    rng = np.random.default_rng(seed)
    group_of: dict[str, int] = {}
    n_groups = len(fr)
    for s in sorted(by_stratum):
        members = sorted(by_stratum[s])
        n = len(members)
        order = [members[j] for j in rng.permutation(n)]
        start = 0
        for g in range(n_groups - 1):
            k = int(round(fr[g] * n))
            if n >= n_groups:  # every group keeps at least one identity of this stratum
                k = min(max(k, 1), n - start - (n_groups - 1 - g))
            k = max(0, min(k, n - start))
            for ident in order[start : start + k]:
                group_of[ident] = g
            start += k
        for ident in order[start:]:
            group_of[ident] = n_groups - 1
    return np.array([group_of[i] for i in identity], dtype=np.int64)


def split_two(
    identity: np.ndarray, fraction: float, seed: int, strata: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (first, second) of a two-way identity-disjoint split; ``fraction`` goes first.

    Raises
    ------
    ParameterError
        Fewer than two identities, or one side would be empty.
    """
    n_ids = np.unique(np.asarray(identity).astype(str)).size
    if n_ids < 2:
        raise ParameterError(f"an identity-disjoint split needs at least 2 identities, got {n_ids}")
    g = identity_groups(identity, (fraction, 1.0 - fraction), seed, strata)
    first, second = np.flatnonzero(g == 0), np.flatnonzero(g == 1)
    if first.size == 0 or second.size == 0:
        raise ParameterError(f"cannot split {n_ids} identities into two non-empty identity-disjoint parts")
    return first, second
