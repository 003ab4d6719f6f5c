"""Gaussian-random-projection Index-of-Max (IoM) hashing, a cancelable template protection.

Jin, Hwang, Lai, Kim, Teoh: "Ranking-based locality sensitive hashing-enabled cancelable
biometrics: Index-of-Max hashing", IEEE Transactions on Information Forensics and Security 13(2),
2018. For each of ``m`` hash functions the key draws ``q`` Gaussian random projection vectors;
a template x is hashed to the index of the largest of its ``q`` projections. The protected
template is the ``m`` indices; two templates are compared by the share of equal indices. A new
key gives unlinkable templates (renewability); the indices keep no magnitudes, so the template
cannot simply be projected back.
"""

from __future__ import annotations

import numpy as np

from facepriv.errors import ParameterError
from facepriv.protections.base import Comparator, TemplateProtection


class IoMComparator(Comparator):
    """Share of hash functions whose indices agree (1 = identical codes)."""

    name = "iom_collision"

    def __init__(self, q: int) -> None:
        self.q = q

    def _onehot(self, codes: np.ndarray) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 2:
            raise ParameterError(f"IoM codes must be 2-d (N, m), got shape {c.shape}")
        idx = c.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.q or not np.array_equal(idx, c)):
            raise ParameterError(f"IoM codes must be integers in 0..{self.q - 1}")
        n, m = idx.shape
        out = np.zeros((n, m * self.q), dtype=np.float32)
        out[np.repeat(np.arange(n), m), (np.arange(m) * self.q)[None, :].repeat(n, 0).ravel() + idx.ravel()] = 1.0
        return out

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """All-vs-all collision rates: one-hot codes, so a matrix product counts equal indices."""
        oa, ob = self._onehot(a), self._onehot(b)
        m = np.asarray(a).shape[1]
        return (oa @ ob.T).astype(np.float64) / m

    def paired(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise ParameterError(f"paired comparison needs equal shapes, got {a.shape} and {b.shape}")
        return (a == b).mean(axis=1).astype(np.float64)


class IoMHashing(TemplateProtection):
    """Gaussian-random-projection Index-of-Max hashing (cancelable; the key is secret).

    Parameters
    ----------
    m : int
        Number of hash functions = length of the protected template.
    q : int
        Random projections per hash function; each protected entry is an index in 0..q-1.
    key : int
        Seeds the random projections: the system's (or user's) secret token. A new key issues
        a new, unlinkable template from the same face.
    """

    summary = "Index-of-Max hashing (Gaussian random projections, argmax indices; collision-rate comparator)"
    reference = ("Jin, Hwang, Lai, Kim, Teoh: Ranking-based locality sensitive hashing-enabled cancelable "
                 "biometrics: Index-of-Max hashing, IEEE TIFS 13(2), 2018")
    secret_params = ("key",)
    threat_model = "key_secret"

    def __init__(self, m: int = 256, q: int = 16, key: int = 0) -> None:
        self.m = m
        self.q = q
        self.key = key

    def validate_params(self) -> None:
        for name, lo in (("m", 1), ("q", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ParameterError(f"iom_hashing: {name} must be an integer >= {lo}, got {v!r}", param=name)
        if isinstance(self.key, bool) or not isinstance(self.key, (int, np.integer)) or self.key < 0:
            raise ParameterError("iom_hashing: key must be a non-negative integer", param="key")

    def projections(self, dim: int) -> np.ndarray:
        """The key's projection tensor, shape (m, q, dim)."""
        self.validate_params()
        return np.random.default_rng(self.key).standard_normal((self.m, self.q, dim)).astype(np.float32)

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ParameterError(f"iom_hashing: templates must be 2-d (N, D), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ParameterError("iom_hashing: templates hold NaN or infinite values")
        w = self.projections(x.shape[1]).reshape(self.m * self.q, x.shape[1])
        proj = (x @ w.T).reshape(len(x), self.m, self.q)
        return proj.argmax(axis=2).astype(np.float32)

    def comparator(self) -> IoMComparator:
        return IoMComparator(int(self.q))
