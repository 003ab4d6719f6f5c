"""PolyProtect (Hahn & Marcel, IEEE TBIOM 2022): keyed multivariate polynomials over windows.

The key gives m coefficients C (distinct non-zero integers in [-50, 50]) and exponents E (a
permutation of 1..m). The embedding V is read in windows of m consecutive elements, consecutive
windows sharing ``overlap`` elements (step s = m - overlap); each window w gives one value
sum_i C_i * w_i ** E_i. When the windows do not tile D exactly, the last one is completed with
zeros, so every element enters at least one window. Output dimension:

    D' = ceil((D - m) / (m - overlap)) + 1        (D >= m)

e.g. D = 128, m = 5: overlap 0 -> 26, 1 -> 32, 2 -> 42, 3 -> 63, 4 -> 124. Comparison: cosine.
"""

from __future__ import annotations

import numpy as np

from facepriv.errors import ParameterError
from facepriv.protections.keys import KeyedProtection, small_blas
from facepriv.registry import register

__all__ = ["PolyProtect", "output_dim", "polyprotect_key"]

#: coefficients are drawn from the non-zero integers of [-COEF_MAX, COEF_MAX]
COEF_MAX = 50


def output_dim(dim: int, m: int, overlap: int) -> int:
    """Protected dimension D' for templates of dimension ``dim`` (needs dim >= m)."""
    step = m - overlap
    return -(-(dim - m) // step) + 1


def polyprotect_key(key_seed: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, E) drawn from ``key_seed``: m distinct non-zero integers in [-50, 50], a permutation of 1..m."""
    rng = np.random.default_rng(key_seed)
    pool = np.concatenate([np.arange(-COEF_MAX, 0), np.arange(1, COEF_MAX + 1)])
    c = rng.choice(pool, size=m, replace=False).astype(np.float64)
    e = rng.permutation(m) + 1
    return c, e


@register("protection", "polyprotect")
class PolyProtect(KeyedProtection):
    """PolyProtect: overlapping windows of m elements, each mapped by a keyed polynomial.

    Parameters
    ----------
    m : int
        Window length: number of embedding elements (and of coefficients/exponents) per
        polynomial, >= 2 (the paper uses 5).
    overlap : int
        Elements shared by consecutive windows, 0 .. m-1 (more overlap: longer protected
        templates, better accuracy, easier inversion).
    key_scope : str
        ``"system"``: the seed is the one key of every template; ``"user"``: each subject's C and E
        come from a key derived from the seed and its label (keyed BLAKE2b), as in the paper's
        user-specific parameters. Per-user keys need the labels: ``protect`` takes them from the
        set, ``transform`` and ``invert`` from their ``identity`` argument.
    seed : int
        The secret key (non-negative integer) drawing C and E (or every user's key). Never written
        to outputs.
    """

    summary = "PolyProtect: keyed polynomials over overlapping windows of m elements; cosine comparator."
    reference = ("Hahn & Marcel (V. Krivokuca Hahn, S. Marcel), Towards protecting face embeddings in mobile face "
                 "verification scenarios, IEEE TBIOM 4(1), 2022")

    def __init__(self, m: int = 5, overlap: int = 2, key_scope: str = "system", seed: int = 0) -> None:
        self.m = m
        self.overlap = overlap
        self.key_scope = key_scope
        self.seed = seed

    def validate_params(self) -> None:
        if isinstance(self.m, bool) or not isinstance(self.m, (int, np.integer)) or self.m < 2:
            raise ParameterError(f"polyprotect: m must be an integer >= 2, got {self.m!r}", param="m")
        if self.m > 2 * COEF_MAX:
            raise ParameterError(f"polyprotect: m must be <= {2 * COEF_MAX} (distinct non-zero coefficients "
                                 f"in [-{COEF_MAX}, {COEF_MAX}]), got {self.m}", param="m")
        ov = self.overlap
        if isinstance(ov, bool) or not isinstance(ov, (int, np.integer)) or not 0 <= ov < self.m:
            raise ParameterError(f"polyprotect: overlap must be an integer in 0..m-1 = 0..{self.m - 1}, got {ov!r}",
                                 param="overlap")
        self._validate_key()

    def check_input_dim(self, dim: int) -> None:
        """A template must hold at least one window (D >= m)."""
        self.validate_params()
        if dim < self.m:
            raise ParameterError(f"polyprotect: templates of dimension {dim} are shorter than one window "
                                 f"(m = {self.m}); choose m <= {dim}", param="m")

    def output_dim(self, dim: int) -> int:
        """D' of this instance for templates of dimension ``dim``."""
        self.check_input_dim(dim)
        return output_dim(dim, int(self.m), int(self.overlap))

    def windows(self, dim: int) -> np.ndarray:
        """Element index of each window position, shape (D', m); index ``dim`` = a zero pad."""
        n = self.output_dim(dim)
        step = int(self.m) - int(self.overlap)
        return np.arange(n)[:, None] * step + np.arange(int(self.m))[None, :]

    def _padded(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        pad = int(idx.max()) + 1 - x.shape[1]
        return np.pad(x, ((0, 0), (0, pad))) if pad > 0 else x

    def transform(self, x: np.ndarray, identity: np.ndarray | None = None) -> np.ndarray:  # type: ignore[override]
        """Protected templates (N, D'); ``identity`` (N,) needed when ``key_scope='user'``."""
        x = self._matrix(x)
        idx = self.windows(x.shape[1])
        xp = self._padded(x, idx)
        out = np.empty((len(x), len(idx)), dtype=np.float64)
        with small_blas():
            for key, rows in self._groups(len(x), identity):
                c, e = polyprotect_key(key, int(self.m))
                out[rows] = (c * xp[rows][:, idx] ** e).sum(axis=2)
        return out.astype(np.float32)

    def invert(self, protected: np.ndarray, attacker_templates: np.ndarray,
               identity: np.ndarray | None = None) -> np.ndarray:
        """Estimate unprotected templates (N, D) from protected ones with the key (C, E) disclosed.

        Per template, ``scipy.optimize.least_squares`` solves the D' window equations
        sum_i C_i v_i ** E_i = p_k for the D unknowns, started at the attacker's mean template mu,
        with a weak pull towards mu (weight 1e-3 of the equations) that picks, among the many
        exact solutions when D' < D, one near typical faces.
        """
        from scipy.optimize import least_squares

        att = self._matrix(attacker_templates, "attacker templates")
        dim = att.shape[1]
        idx = self.windows(dim)
        p = self._matrix(protected, "protected templates")
        if p.shape[1] != len(idx):
            raise ParameterError(f"polyprotect: protected templates have dimension {p.shape[1]}, this instance "
                                 f"makes {len(idx)} from {dim}-d templates")
        mu = att.mean(axis=0)
        out = np.empty((len(p), dim))
        with small_blas():
            for key, rows in self._groups(len(p), identity):
                c, e = polyprotect_key(key, int(self.m))
                system = _WindowSystem(idx, dim, c, e, mu)
                for r in rows:
                    res = least_squares(system.residual, mu, jac=system.jacobian, args=(p[r],), method="lm",
                                        xtol=1e-10, ftol=1e-10)
                    out[r] = res.x
        return out.astype(np.float32)

    def invert_residual(self, estimate: np.ndarray, protected: np.ndarray,
                        identity: np.ndarray | None = None) -> np.ndarray:
        """Root-mean-square window-equation residual of each estimate (0 = an exact preimage)."""
        again = self.transform(estimate, identity=identity).astype(np.float64)
        return np.sqrt(((again - np.asarray(protected, dtype=np.float64)) ** 2).mean(axis=1))


class _WindowSystem:
    """Residuals and Jacobian of the window equations of one key, plus the pull towards mu."""

    #: weight of the pull towards the attacker's mean, relative to the window equations
    REG = 1e-3

    def __init__(self, idx: np.ndarray, dim: int, c: np.ndarray, e: np.ndarray, mu: np.ndarray) -> None:
        self.idx, self.dim, self.c, self.e, self.mu = idx, dim, c, e, mu
        self.pad = np.zeros(int(idx.max()) + 1 - dim)
        self.rows_k, self.cols_i = np.nonzero(idx < dim)  # window positions holding unknowns
        self.elem = idx[self.rows_k, self.cols_i]
        self.reg_block = self.REG * np.eye(dim)

    def residual(self, v: np.ndarray, target: np.ndarray) -> np.ndarray:
        vp = np.concatenate([v, self.pad])
        return np.concatenate([(self.c * vp[self.idx] ** self.e).sum(axis=1) - target, self.REG * (v - self.mu)])

    def jacobian(self, v: np.ndarray, target: np.ndarray) -> np.ndarray:
        j = np.zeros((len(self.idx) + self.dim, self.dim))
        ci = self.cols_i
        np.add.at(j, (self.rows_k, self.elem), self.c[ci] * self.e[ci] * v[self.elem] ** (self.e[ci] - 1))
        j[len(self.idx):] = self.reg_block
        return j

