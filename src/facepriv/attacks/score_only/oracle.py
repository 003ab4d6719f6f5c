"""The system side of a score-only attack: stored templates answer score queries, and only scores.

The attacker owns a fixed set of query photos. It presents query ``i`` to the system and reads the
comparison score between the system's (protected) template of that photo and one stored template.
:class:`ScoringSystem` is the system: it protects the query photos' templates as any probe, and
:meth:`ScoringSystem.enrol` turns stored templates into :class:`ScoreOracle` objects. An oracle
holds the scores of its one stored template against the query set, never the template itself,
and counts every score it gives out: an attack written against this interface cannot touch a
template, and the number of queries it needed is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facepriv.errors import ParameterError


class ScoreOracle:
    """Comparison scores of one stored template against the attacker's query photos.

    Parameters
    ----------
    read : callable(ndarray of int) -> ndarray of float
        The system's answer for a set of query indices (the oracle keeps no template).
    n_available : int
        Size of the attacker's query set.
    """

    __slots__ = ("_count", "_read", "n_available")

    def __init__(self, read: Callable[[np.ndarray], np.ndarray], n_available: int) -> None:
        self._read = read
        self._count = 0
        self.n_available = int(n_available)

    @property
    def queries(self) -> int:
        """How many scores this oracle has given out so far."""
        return self._count

    def score(self, query_index: int) -> float:
        """Score of query photo ``query_index`` against the stored template (one query)."""
        return float(self.scores([query_index])[0])

    def scores(self, query_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores of several query photos (each counts as one query)."""
        idx = np.asarray(query_indices).ravel()
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= self.n_available):
            raise ParameterError(f"query indices must be integers in 0 .. {self.n_available - 1}")
        self._count += int(idx.size)
        return np.array(self._read(idx.astype(np.int64)), dtype=np.float64)

    def __repr__(self) -> str:
        return f"ScoreOracle(queries={self._count}, n_available={self.n_available})"


class ScoringSystem:
    """A biometric system that compares presented query photos with stored templates.

    Parameters
    ----------
    comparator : Comparator
        The system's comparator (its protection's: cosine, PE-MIU block matching, ...).
    probes : ndarray (Q, D')
        The system's templates of the attacker's Q query photos, protected as the system protects
        any probe.
    """

    def __init__(self, comparator: Any, probes: np.ndarray) -> None:
        self._comparator = comparator
        self._probes = np.asarray(probes)

    @property
    def n_queries(self) -> int:
        """Size of the query set."""
        return len(self._probes)

    def enrol(self, stored: np.ndarray) -> list[ScoreOracle]:
        """One oracle per stored (protected) template.

        The system scores every query against every stored template once (a block of
        ``comparator.pairwise``, far faster than one call per query); each oracle keeps its own
        column of scores in a closure and hands entries out only when asked, counting them.
        """
        scores = np.asarray(self._comparator.pairwise(self._probes, np.asarray(stored)), dtype=np.float64)
        return [ScoreOracle(_column_reader(scores[:, j].copy()), self.n_queries) for j in range(scores.shape[1])]


def _column_reader(column: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def read(idx: np.ndarray) -> np.ndarray:
        return column[idx]

    return read
