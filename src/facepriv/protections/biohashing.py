"""BioHashing (Teoh, Ngo, Goh 2004): keyed random orthonormal projection, then binarisation.

The key (``seed``) draws a D x L Gaussian matrix whose columns are orthonormalised (QR); a
template x is centred (x - c), projected onto the L columns and each value binarised at 0.
Comparison is the normalised Hamming similarity 1 - hamming / L.

**Bits are stored as float32 +1 / -1** (bit 1 -> +1, bit 0 -> -1): embeddings files hold float
templates and refuse all-zero rows, which a 0/1 code of all zeros would be. The comparator reads
a bit as ``template > 0``, so 0/1 codes from other tools compare the same way.

**Centre.** Binarising at 0 assumes centred features; face embeddings are not (the mean dlib
template has ~90 % of a template's norm), so most bits would be the same for everybody.
``center="fit"`` subtracts the mean template of the data the protection is fitted on (rounded to
4 decimals and written to the record, so probes protected later with the recorded parameters
get the same codes); the centre is public (a population statistic, no key).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.base import Comparator
from facepriv.protections.keys import KeyedProtection, small_blas
from facepriv.registry import register

__all__ = ["BioHash", "HammingComparator", "biohash_matrix"]


def _bits(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ParameterError(f"{what} must be 2-d (N, L), got shape {x.shape}")
    return (x > 0).astype(np.float32)


class HammingComparator(Comparator):
    """Normalised Hamming similarity 1 - hamming(a, b) / L of binary codes (bit = value > 0).

    Vectorised: with 0/1 bit matrices A, B, hamming = |a| + |b| - 2 a.b, one matrix product
    (exact in float32 for codes shorter than 2**24 bits).
    """

    name = "hamming"
    #: tells :mod:`facepriv.search` that FAISS's binary index is exact for this comparator
    metric: ClassVar[str] = "hamming"

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """All-vs-all similarities, shape (len(a), len(b))."""
        ba, bb = _bits(a, "first codes"), _bits(b, "second codes")
        if ba.shape[1] != bb.shape[1]:
            raise ParameterError(f"code length mismatch: {ba.shape[1]} vs {bb.shape[1]} bits")
        if ba.shape[1] == 0:
            raise ParameterError("codes of length 0 cannot be compared")
        ham = ba.sum(1)[:, None] + bb.sum(1)[None, :] - 2.0 * (ba @ bb.T)
        return 1.0 - ham.astype(np.float64) / ba.shape[1]

    def paired(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise similarities of a[i] vs b[i], shape (N,)."""
        ba, bb = _bits(a, "first codes"), _bits(b, "second codes")
        if ba.shape != bb.shape:
            raise ParameterError(f"paired comparison needs equal shapes, got {ba.shape} and {bb.shape}")
        if ba.shape[1] == 0:
            raise ParameterError("codes of length 0 cannot be compared")
        return 1.0 - (ba != bb).mean(axis=1, dtype=np.float64)


def biohash_matrix(key_seed: int, dim: int, length: int) -> np.ndarray:
    """The D x L projection with orthonormal columns drawn from ``key_seed``.

    QR of a Gaussian matrix, columns sign-fixed by R's diagonal (so the result is a uniformly
    random orthonormal frame and does not depend on the LAPACK sign convention).
    """
    g = np.random.default_rng(key_seed).standard_normal((dim, length))
    q, r = np.linalg.qr(g)
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


@register("protection", "biohash")
class BioHash(KeyedProtection):
    """BioHashing: keyed orthonormal random projection to ``length`` values, binarised at 0.

    Parameters
    ----------
    length : int
        Code length L in bits (number of projections), 1 <= L <= the template dimension D.
    key_scope : str
        ``"system"``: the seed is the one key of every template; ``"user"``: each subject's key is
        derived from the seed and its label (keyed BLAKE2b), the tokenised BioHashing of the paper.
        Per-user keys need the labels: ``protect`` takes them from the set, ``transform`` and
        ``invert`` from their ``identity`` argument.
    center : str or list of float or None
        Subtracted before projecting so that 0 is a sensible threshold: ``"fit"`` = mean template
        of the data passed to ``fit`` (recorded, rounded to 4 decimals); a list of D numbers = that
        centre; None = no centring (threshold 0 on raw templates).
    seed : int
        The secret key (non-negative integer): draws the projection matrix, or every user's key
        with ``key_scope="user"``. Never written to outputs.
    """

    summary = "BioHashing: keyed random orthonormal projection + binarisation; normalised Hamming comparator."
    reference = ("Teoh, Ngo, Goh, BioHashing: two factor authentication featuring fingerprint data and tokenised "
                 "random number, Pattern Recognition 37(11), 2004")

    def __init__(self, length: int = 128, key_scope: str = "system", center: str | list[float] | None = "fit",
                 seed: int = 0) -> None:
        self.length = length
        self.key_scope = key_scope
        self.center = center
        self.seed = seed

    def validate_params(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, (int, np.integer)) or self.length < 1:
            raise ParameterError(f"biohash: length must be a positive integer, got {self.length!r}", param="length")
        c = self.center
        if not (c is None or _is_fit(c) or (isinstance(c, (list, tuple)) and len(c) > 0 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in c))):
            raise ParameterError(f"biohash: center must be 'fit', null or a list of numbers, got {_short(c)}",
                                 param="center")
        self._validate_key()

    def check_input_dim(self, dim: int) -> None:
        """L must not exceed D; an explicit centre must have D values."""
        self.validate_params()
        if self.length > dim:
            raise ParameterError(f"biohash: length {self.length} exceeds the template dimension {dim}; "
                                 f"choose length <= {dim}", param="length")
        if isinstance(self.center, (list, tuple)) and len(self.center) != dim:
            raise ParameterError(f"biohash: center has {len(self.center)} values but the templates have "
                                 f"dimension {dim}", param="center")

    def fit(self, es: EmbeddingSet | None = None) -> BioHash:
        self.validate_params()
        if es is not None:
            self.check_input_dim(es.dim)
        if _is_fit(self.center):
            if es is None:
                raise ParameterError("biohash: center='fit' needs templates to fit on (fit(es)); or give the "
                                     "centre as a list", param="center")
            self.center_ = np.round(np.asarray(es.embeddings, dtype=np.float64).mean(axis=0), 4)
        return self

    def centre(self, dim: int) -> np.ndarray:
        """The centre subtracted before projecting (zeros without centring)."""
        if self.center is None:
            return np.zeros(dim)
        if _is_fit(self.center):
            c = getattr(self, "center_", None)
            if c is None:
                raise ParameterError("biohash: not fitted (center='fit' learns the centre in fit(es))")
            return c
        return np.asarray(self.center, dtype=np.float64)

    def _prepare(self, x: Any) -> np.ndarray:
        x = self._matrix(x)
        self.check_input_dim(x.shape[1])
        c = self.centre(x.shape[1])
        if c.shape != (x.shape[1],):
            raise ParameterError(f"biohash: fitted on {c.size}-d templates, got {x.shape[1]}-d ones")
        return x - c

    def transform(self, x: np.ndarray, identity: np.ndarray | None = None) -> np.ndarray:  # type: ignore[override]
        """Codes (N, L) as float32 +1/-1 bits; ``identity`` (N,) needed when ``key_scope='user'``."""
        z = self._prepare(x)
        out = np.empty((len(z), int(self.length)), dtype=np.float32)
        with small_blas():
            for key, rows in self._groups(len(z), identity):
                w = biohash_matrix(key, z.shape[1], int(self.length))
                out[rows] = np.where(z[rows] @ w > 0, 1.0, -1.0)
        return out

    def comparator(self) -> HammingComparator:
        return HammingComparator()

    def record(self) -> dict[str, Any]:
        """Name and public parameters; a fitted centre is written out so probes get the same codes."""
        rec = super().record()
        if _is_fit(self.center) and getattr(self, "center_", None) is not None:
            rec["params"]["center"] = [float(v) for v in self.center_]
        return rec

    def invert(self, protected: np.ndarray, attacker_templates: np.ndarray,
               identity: np.ndarray | None = None) -> np.ndarray:
        """Estimate unprotected templates (N, D) from codes with the key disclosed.

        With the key the projection W (D x L, orthonormal columns) is known and only the
        magnitudes of y = W^T (x - c) are lost. Each y_j is estimated by its mean given its sign
        under a Gaussian prior fitted to the attacker's own templates (mean m_j, sd s_j of w_j^T
        (x - c)): m_j + s_j phi(a)/(1 - Phi(a)) for bit 1, m_j - s_j phi(a)/Phi(a) for bit 0, with
        a = -m_j / s_j. This is the sign vector scaled to the size the projections have: for
        centred isotropic templates it is sqrt(2/pi) s b. The least-squares inverse of the
        projection, W (y - m), gives the part of x - c in W's span; the prior mean fills the rest:
        x = c + mu + W (y - m). For L = D it is exactly c + W y.
        """
        from scipy.stats import norm

        codes = _bits(protected, "protected templates")
        if codes.shape[1] != int(self.length):
            raise ParameterError(f"biohash: protected templates have {codes.shape[1]} bits, this instance "
                                 f"makes {self.length}")
        att = self._prepare(attacker_templates)  # centred attacker templates
        if len(att) < 2:
            raise ParameterError("biohash: invert needs at least 2 attacker templates (the prior)")
        dim = att.shape[1]
        mu = att.mean(axis=0)
        cov = np.cov(att, rowvar=False)
        sign = np.where(codes > 0, 1.0, -1.0)
        out = np.empty((len(codes), dim))
        with small_blas():
            for key, rows in self._groups(len(codes), identity):
                w = biohash_matrix(key, dim, int(self.length))
                m = w.T @ mu
                s = np.sqrt(np.maximum(np.einsum("dl,de,el->l", w, cov, w), 1e-12))
                a = -m / s
                up = m + s * np.exp(norm.logpdf(a) - norm.logsf(a))
                down = m - s * np.exp(norm.logpdf(a) - norm.logcdf(a))
                y = np.where(sign[rows] > 0, up, down)
                out[rows] = mu + (y - m) @ w.T
        return (out + self.centre(dim)).astype(np.float32)


def _is_fit(v: Any) -> bool:
    return isinstance(v, str) and v == "fit"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
