"""Shared by the PE-MIU test modules: random templates, the per-pair reference, kernel skips."""

from __future__ import annotations

import numpy as np
import pytest

from facepriv.protections import pe_native
from facepriv.protections.pe_miu import reference_score


def templates(n: int, d: int, seed: int = 0, integer: bool = False) -> np.ndarray:
    """n random templates of d dims (float32-exact); ``integer``: small integers, i.e. ties."""
    rng = np.random.default_rng(seed)
    if integer:  # small integers: many equal block distances, i.e. tied assignments
        return rng.integers(0, 3, size=(n, d)).astype(np.float32)
    return (rng.normal(size=(n, d)) + 0.2).astype(np.float32)


def reference_matrix(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Scores of every pair by the per-pair reference (cdist + SciPy assignment + cosine)."""
    return np.array([[reference_score(x, y, k) for y in b] for x in a])


KERNELS = ["portable", "avx2", "avx512"]
FLOAT_KERNELS = ["avx2", "avx512"]


def need_kernel(kernel: str) -> None:
    """Skip unless the compiled library runs ``kernel`` on this CPU."""
    if pe_native.load() is None:
        pytest.skip("no C compiler: the compiled PE-MIU path is unavailable here")
    if kernel not in pe_native.kernels():
        pytest.skip(f"the {kernel} kernel does not run on this CPU / build (available: {pe_native.kernels()})")
