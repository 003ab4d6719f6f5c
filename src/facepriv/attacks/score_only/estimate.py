"""The attacker side of a score-only attack: score vectors -> embeddings by ridge regression.

The attacker enrols its own photos in the system (it may: they are its own accounts), presents
its query photos against them and reads the scores; it knows the embeddings of its own photos
under a proxy model (here the recognition model itself, a public pretrained network). A ridge
regression learned on these pairs maps the score vector of an unknown stored template to an
estimate of that template's embedding (Kim et al., "Scores Tell Everything about Bob", IEEE S&P
2024, their first stage; Razzhigaev et al. 2020 estimate the embedding by queries as well). Only
:class:`~facepriv.attacks.score_only.oracle.ScoreOracle` objects and the attacker's own embeddings
reach this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facepriv.attacks.score_only.oracle import ScoreOracle
from facepriv.errors import ParameterError


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


@dataclass
class RidgeMap:
    """Ridge regression from score vectors (N, K) to unit embeddings (N, D), with intercepts.

    Closed form on centred data: W = (Xc' Xc + alpha I)^-1 Xc' Yc, solved for all D outputs at once.
    """

    alpha: float = 1.0

    def fit(self, scores: np.ndarray, targets: np.ndarray) -> RidgeMap:
        """Learn the map; ``targets`` are scaled to unit length first (only directions matter)."""
        x = np.asarray(scores, dtype=np.float64)
        y = unit_rows(targets)
        if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
            raise ParameterError(f"ridge map needs >= 2 paired rows, got scores {x.shape} and targets {y.shape}")
        self.x_mean_, self.y_mean_ = x.mean(0), y.mean(0)
        xc, yc = x - self.x_mean_, y - self.y_mean_
        gram = xc.T @ xc + self.alpha * np.eye(x.shape[1])
        self.coef_ = np.linalg.solve(gram, xc.T @ yc)
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Unit-length embedding estimates for score vectors (M, K)."""
        x = np.asarray(scores, dtype=np.float64)
        return unit_rows((x - self.x_mean_) @ self.coef_ + self.y_mean_)


def read_scores(oracles: Sequence[ScoreOracle], n_queries: int) -> np.ndarray:
    """Score vectors (len(oracles), n_queries): queries 0 .. n_queries-1 presented to each oracle."""
    idx = np.arange(n_queries)
    return np.stack([o.scores(idx) for o in oracles]) if oracles else np.zeros((0, n_queries))


class ScoreOnlyAttacker:
    """Estimates stored templates from their scores against a fixed query set.

    Parameters
    ----------
    own_embeddings : ndarray (N, D)
        Proxy embeddings of the attacker's own enrolled photos (the regression targets).
    alpha : float
        Ridge penalty.
    """

    def __init__(self, own_embeddings: np.ndarray, alpha: float = 1.0) -> None:
        self.own_embeddings = np.asarray(own_embeddings)
        self.alpha = float(alpha)

    def estimate(self, own: Sequence[ScoreOracle], victims: Sequence[ScoreOracle],
                 counts: Sequence[int]) -> dict[int, np.ndarray]:
        """Template estimates of the victims for each number of queries in ``counts``.

        ``own`` are the oracles of the attacker's own enrolments (row i of ``own_embeddings``),
        ``victims`` those of the victims. Every oracle is asked the first ``max(counts)`` queries
        once; the estimate for k queries uses the first k scores only; k = 0 gives every victim the
        attacker's mean template (the baseline that uses no score).
        """
        if len(own) != len(self.own_embeddings):
            raise ParameterError(f"{len(own)} own enrolments but {len(self.own_embeddings)} own embeddings")
        k_max = max(counts)
        x_own, x_vic = read_scores(own, k_max), read_scores(victims, k_max)
        out = {}
        for k in counts:
            if k == 0:  # no query: the best guess is the attacker's mean template
                mean = unit_rows(self.own_embeddings).mean(0, keepdims=True)
                out[0] = unit_rows(np.repeat(mean, len(victims), axis=0))
                continue
            reg = RidgeMap(self.alpha).fit(x_own[:, :k], self.own_embeddings)
            out[int(k)] = reg.predict(x_vic[:, :k])
        return out
