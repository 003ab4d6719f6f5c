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

__all__ = ["PolyProtect", "output_dim", "polyprotect_key", "solve_windows"]

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

        For each template, the D' window equations sum_i C_i v_i ** E_i = p_k are solved for the
        D unknowns in the least-squares sense, started at the attacker's mean template mu, with a
        weak pull towards mu (weight 1e-3 of the equations) that picks, among the many exact
        solutions when D' < D, one near typical faces. All templates of one key are solved at once
        by a batched Levenberg-Marquardt iteration (:func:`solve_windows`): the normal matrix of
        the window equations is banded (bandwidth m - 1), so every step is one banded Cholesky
        solve over all templates.
        """
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
                out[rows] = solve_windows(idx, dim, c, e, mu, p[rows])
        return out.astype(np.float32)

    def invert_residual(self, estimate: np.ndarray, protected: np.ndarray,
                        identity: np.ndarray | None = None) -> np.ndarray:
        """Root-mean-square window-equation residual of each estimate (0 = an exact preimage)."""
        again = self.transform(estimate, identity=identity).astype(np.float64)
        return np.sqrt(((again - np.asarray(protected, dtype=np.float64)) ** 2).mean(axis=1))


#: weight of the pull towards the attacker's mean, relative to the window equations
REG = 1e-3


def solve_windows(idx: np.ndarray, dim: int, c: np.ndarray, e: np.ndarray, mu: np.ndarray,
                  targets: np.ndarray, max_iter: int = 500, tol: float = 1e-12) -> np.ndarray:
    """Batched Levenberg-Marquardt solve of the window equations of one key, every template at once.

    Minimises, for each row p of ``targets`` independently,
    ``0.5 * (||F(v) - p||^2 + REG^2 ||v - mu||^2)`` with ``F(v)_k = sum_i c_i v[idx[k, i]] ** e_i``
    (window positions with ``idx >= dim`` are zero pads). Gauss-Newton steps with isotropic
    damping ``(J^T J + REG^2 I + lam * mean(diag) I) dv = -grad``; ``lam`` per template, divided by 3
    after an accepted step and multiplied by 4 after a rejected one. Consecutive windows are
    contiguous, so ``J^T J`` has bandwidth m - 1 and the N systems are one block-diagonal banded
    system solved by :func:`scipy.linalg.solveh_banded` (O(N D m^2) per step). A template stops when
    an accepted step lowers its cost by at most ``tol`` (relative), or its step is below 1e-10
    (relative to ``||v||``), or after ``max_iter`` steps.

    Parameters
    ----------
    idx : ndarray (D', m)
        Element index of every window position (:meth:`PolyProtect.windows`).
    dim : int
        Template dimension D.
    c, e : ndarray (m,)
        Coefficients and exponents of the key.
    mu : ndarray (D,)
        Start and prior (the attacker's mean template).
    targets : ndarray (N, D')
        Protected templates.
    max_iter : int
        Most damped Gauss-Newton steps per template.
    tol : float
        Relative cost decrease under which a template is converged.

    Returns
    -------
    ndarray (N, D)
        The estimates.
    """
    from scipy import sparse
    from scipy.linalg import solveh_banded

    idx = np.asarray(idx)
    m = idx.shape[1]
    upper = m - 1
    valid = idx < dim
    pad = int(idx.max()) + 1 - dim
    ce, em1 = c * e, e - 1
    mu = np.asarray(mu, dtype=np.float64)

    def scatter(k: np.ndarray, cols: np.ndarray) -> sparse.csr_matrix:
        return sparse.csr_matrix((np.ones(k.size), (np.arange(k.size), cols)), shape=(k.size, dim))

    # the (window, position) terms of each band offset o: (k, i) and (k, i + o) both real unknowns,
    # summed into column idx[k, i + o] of the upper band row ``upper - o``
    bands = []
    for o in range(m):
        k, i = np.nonzero(valid[:, : m - o] & valid[:, o:])
        bands.append((k, i, o, scatter(k, idx[k, i + o])))
    kg, ig = np.nonzero(valid)
    grad_scatter = scatter(kg, idx[kg, ig])

    p_all = np.asarray(targets, dtype=np.float64)
    n_all = len(p_all)
    v = np.tile(mu, (n_all, 1))

    def evaluate(vv: np.ndarray, pp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vp = np.pad(vv, ((0, 0), (0, pad))) if pad > 0 else vv
        w = vp[:, idx]
        f = (c * w ** e).sum(axis=2) - pp
        return w, f, 0.5 * ((f ** 2).sum(axis=1) + REG ** 2 * ((vv - mu) ** 2).sum(axis=1))

    w, f, cost = evaluate(v, p_all)
    lam = np.ones(n_all)
    active = np.arange(n_all)
    for _ in range(int(max_iter)):
        if active.size == 0:
            break
        va, pa, wa, fa, ca, la = v[active], p_all[active], w[active], f[active], cost[active], lam[active]
        n = len(active)
        d = ce * wa ** em1 * valid  # dF_k / dv at each window position (N, D', m)
        grad = np.asarray((d[:, kg, ig] * fa[:, kg]) @ grad_scatter) + REG ** 2 * (va - mu)
        ab = np.zeros((m, n * dim))
        for k, i, o, s in bands:
            ab[upper - o] = np.asarray((d[:, k, i] * d[:, k, i + o]) @ s).ravel()
        diag = ab[upper].reshape(n, dim) + REG ** 2
        ab[upper] = (diag + la[:, None] * diag.mean(axis=1, keepdims=True)).ravel()
        step = solveh_banded(ab, -grad.ravel(), lower=False, check_finite=False).reshape(n, dim)
        wn, fn, cn = evaluate(va + step, pa)
        ok = cn < ca
        acc = active[ok]
        v[acc], w[acc], f[acc], cost[acc] = va[ok] + step[ok], wn[ok], fn[ok], cn[ok]
        lam[active] = np.where(ok, np.maximum(la / 3, 1e-12), la * 4)
        tiny = np.linalg.norm(step, axis=1) <= 1e-10 * (np.linalg.norm(va, axis=1) + 1e-10)
        done = (ok & (ca - cn <= tol * ca)) | tiny | (lam[active] > 1e12)
        active = active[~done]
    return v
