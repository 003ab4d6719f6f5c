"""Compiled path of the PE-MIU comparator: ``pemiu_native/pemiu.c``, built with the system C compiler.

The all-vs-all PE-MIU score matrix needs one small assignment problem per pair. Pure numpy (see
:mod:`facepriv.protections.lsa_batch`) is exact but slow, so at first use this module has
:mod:`facepriv.protections.pe_native_build` compile ``pemiu_native/pemiu.c`` into the cache
folder (or reuse the build there), loads it with ctypes and checks it on problems with known
answers. The kernel computes the block distances itself and solves each assignment with a fast
solver whose optimum is certified unique (with AVX2 and B <= 32, or AVX-512 and B <= 16, first in
float32, certified with rigorous error bounds), falling back to a port of SciPy's own algorithm
(same tie-breaking as ``scipy.optimize.linear_sum_assignment``) when it is not; see the comment at
the top of ``pemiu.c``. Kernels (see :func:`kernels`), chosen at run time: the portable double
kernel; an AVX2+FMA float32 kernel for B <= 32 (compiled into every x86-64 build with a target
pragma, used when cpuid reports AVX2 and FMA; the same certified float solver and double
fallbacks as the AVX-512 one); the AVX-512 float32 kernel (B <= 16, builds with AVX-512 enabled,
i.e. ``-march=native`` on such a CPU; it hands 16 < B <= 32 to the AVX2 kernel). The kernel that
runs is logged at INFO (:func:`active_path`). No compiler, a failed build or
``FACEPRIV_NO_NATIVE=1`` -> :func:`load` returns None and callers use the Numba or numpy path.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import NamedTuple

import numpy as np

from facepriv.protections import pe_native_build

log = logging.getLogger(__name__)

_lib: ctypes.CDLL | None = None
_tried = False
_built_with = ""


def _self_test(lib: ctypes.CDLL) -> bool:
    """Solve a few small problems with known answers (guards against a miscompiled library)."""
    rng = np.random.default_rng(0)
    for n in (3, 8, 16, 20):
        perm = rng.permutation(n)
        cost = rng.uniform(1.0, 2.0, size=(1, n, n))
        cost[0, np.arange(n), perm] = 0.5  # unique optimum: the permutation
        out = np.empty((1, n), dtype=np.int64)
        flags = np.zeros(1, dtype=np.int64)
        if lib.lsa_batch(cost, 1, n, out, 0, flags, 0) < 0 or not np.array_equal(out[0], perm):
            return False
    # every kernel this CPU runs gives the portable kernel's scores on small all-pairs problems, at
    # both widths of the AVX2 kernel (16 and 32 blocks)
    for nblk, k in ((16, 8), (32, 4)):
        x = prepare(rng.normal(size=(5, nblk, k)))
        y = prepare(rng.normal(size=(7, nblk, k)))
        scores = []
        for code in _KERNELS.values():
            if code and lib.kernel_available(code):
                out2 = np.empty((5, 7))
                stats = np.zeros(3, dtype=np.int64)
                if lib.pemiu_pairwise(x.x, y.xt, x.sq, y.sq, x.norm, y.norm, x.x32, y.xt32, y.x, x.sq32, y.sq32,
                                      5, 7, nblk, k, out2, stats, code) != 0:
                    return False
                scores.append(out2)
        if not all(np.allclose(sc, scores[0], rtol=0, atol=1e-12) for sc in scores):
            return False
    return True


def load() -> ctypes.CDLL | None:
    """The compiled library, building it on first use; None when unavailable."""
    global _lib, _tried, _built_with
    if os.environ.get("FACEPRIV_NO_NATIVE", "") not in ("", "0"):
        return None
    if _tried:
        return _lib
    _tried = True
    built = pe_native_build.build_or_reuse()
    if built is None:
        return None
    path, built_with = built
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        log.warning("loading the PE-MIU native comparator failed (%s); using the numpy path", exc)
        return None
    dp = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
    fp = np.ctypeslib.ndpointer(dtype=np.float32, flags="C_CONTIGUOUS")
    ip = np.ctypeslib.ndpointer(dtype=np.int64, flags="C_CONTIGUOUS")
    i64 = ctypes.c_int64
    lib.pemiu_pairwise.argtypes = [dp, dp, dp, dp, dp, dp, fp, fp, dp, dp, dp, i64, i64, i64, i64, dp, ip, i64]
    lib.pemiu_pairwise.restype = ctypes.c_int
    lib.lsa_batch.argtypes = [dp, i64, i64, ip, i64, ip, i64]
    lib.lsa_batch.restype = ctypes.c_int
    lib.kernel_available.argtypes = [i64]
    lib.kernel_available.restype = ctypes.c_int
    lib.pick_kernel.argtypes = [i64]
    lib.pick_kernel.restype = ctypes.c_int
    lib.set_threads.argtypes = [ctypes.c_int]
    lib.set_threads.restype = ctypes.c_int
    lib.has_openmp.restype = ctypes.c_int
    lib.has_avx512.restype = ctypes.c_int
    _built_with = built_with
    if not _self_test(lib):
        log.warning("the PE-MIU native comparator failed its self-test; using the numpy path")
        return None
    _lib = lib
    return lib


_announced = ""


def active_path() -> str:
    """Which PE-MIU path runs here: ``"compiled C"``, ``"numba"`` or ``"numpy"``; logged at INFO once.

    The compiled library first, else the Numba JIT (no compiler needed), else numpy (exact, ~20x
    slower); ``FACEPRIV_NO_NATIVE=1`` / ``FACEPRIV_NO_NUMBA=1`` skip a path.
    """
    global _announced
    name = "compiled C"
    if load() is None:
        from facepriv.protections import pe_numba  # lazy: importing numba costs ~0.5 s

        name = "numba" if pe_numba.load() is not None else "numpy"
    if name != _announced:
        _announced = name
        why = {"compiled C": f"built with {_built_with}; {KERNEL_INFO.get(kernel_name(), '?')}",
               "numba": "no usable C compiler or FACEPRIV_NO_NATIVE set",
               "numpy": "no C compiler and no numba: about 20x slower"}[name]
        log.info("PE-MIU comparator: %s path (%s)", name, why)
    return name


def build_info() -> str:
    """How the loaded library was built (for benchmarks and logs)."""
    lib = load()
    if lib is None:
        return "not available"
    return (f"{_built_with}; kernel: {KERNEL_INFO[kernel_name()]} (available here: {', '.join(kernels())}); "
            f"OpenMP {'yes' if lib.has_openmp() else 'no'}")


_MODES = {"auto": 0, "scipy": 1, "fast": 2, "float": 3}
_KERNELS = {"auto": 0, "portable": 1, "avx2": 2, "avx512": 3}
KERNEL_INFO = {
    "portable": "portable double kernel",
    "avx2": "AVX2+FMA float32 kernel for B <= 32 (certified, double fallback)",
    "avx512": "AVX-512 float32 kernel for B <= 16, AVX2 for B <= 32 (certified, double fallback)",
}


def _kernel_code(kernel: str) -> int:
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(_KERNELS)}")
    return _KERNELS[kernel]


def kernels() -> list[str]:
    """Kernels the compiled library can run on this CPU (``"portable"``, ``"avx2"``, ``"avx512"``).

    ``"avx2"`` is compiled into every x86-64 build and chosen at run time when cpuid reports AVX2
    and FMA; ``"avx512"`` exists only in builds made with ``-march=native`` on an AVX-512 CPU.
    Empty when the library is unavailable.
    """
    lib = load()
    if lib is None:
        return []
    return [name for name, code in _KERNELS.items() if code and lib.kernel_available(code)]


def kernel_name(kernel: str = "auto") -> str:
    """The kernel that ``kernel`` resolves to here (``"auto"``: the fastest available), or ``""``."""
    lib = load()
    if lib is None:
        return ""
    code = lib.pick_kernel(_kernel_code(kernel))
    return next((name for name, c in _KERNELS.items() if c == code and name != "auto"), "")


def _checked_costs(cost: np.ndarray) -> np.ndarray:
    c = np.ascontiguousarray(cost, dtype=np.float64)
    if c.ndim != 3 or c.shape[1] != c.shape[2]:
        raise ValueError(f"cost must have shape (N, B, B), got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("assignment failed: cost matrices must be finite")
    return c


def lsa_batch(cost: np.ndarray, solver: str = "auto", kernel: str = "auto") -> np.ndarray | None:
    """Assignments of a batch (N, B, B) with the compiled solvers; None when unavailable.

    Parameters
    ----------
    cost : ndarray, shape (N, B, B)
        Finite cost matrices.
    solver : {"auto", "scipy"}
        ``"auto"``: the comparator's solver (certified fast solver, SciPy-order fallback), equal to
        ``scipy.optimize.linear_sum_assignment``; ``"scipy"``: the SciPy-order solver only.
    kernel : {"auto", "portable", "avx2", "avx512"}
        Which kernel's solvers (see :func:`kernels`); ``"avx2"`` solves cost matrices with the
        portable double solvers (its float solver is reached with :func:`fast_lsa_batch`).

    Returns
    -------
    ndarray of int64, shape (N, B), or None
        Column of each row.
    """
    lib = load()
    if lib is None:
        return None
    return _solve(lib, cost, solver, "finite", kernel)[0]


def fast_lsa_batch(
    cost: np.ndarray, solver: str = "fast", kernel: str = "auto"
) -> tuple[np.ndarray, np.ndarray] | None:
    """The fast solvers without the SciPy-order fallback, for tests: assignments and certificates.

    Parameters
    ----------
    cost : ndarray, shape (N, B, B)
        Finite cost matrices, B <= 64.
    solver : {"fast", "float"}
        ``"fast"``: everything but the SciPy-order solver (with AVX-512 and B <= 16: the float
        solver, its checks, the double fast solver); ``"float"``: the float solver and its float
        check only (AVX2 kernel: B <= 32; AVX-512 kernel: B <= 16; costs rounded to float32).
    kernel : {"auto", "portable", "avx2", "avx512"}
        Which kernel (see :func:`kernels`).

    Returns
    -------
    (ndarray of int64, shape (N, B), ndarray of bool, shape (N,)) or None
        An assignment per problem (optimal for ``"fast"``) and whether it was certified the unique
        optimum (then SciPy returns the same one). None when the library, the kernel or, for
        ``"float"``, a float kernel (AVX2 or AVX-512) is unavailable.
    """
    lib = load()
    if lib is None or lib.pick_kernel(_kernel_code(kernel)) < 0:
        return None
    if solver == "float" and kernel_name(kernel) not in ("avx2", "avx512"):
        return None
    out, flags = _solve(lib, cost, solver, "finite and B <= 64 (float: B <= 32 with AVX2, B <= 16 with AVX-512)", kernel)
    return out, flags.astype(bool)


def _solve(
    lib: ctypes.CDLL, cost: np.ndarray, solver: str, need: str, kernel: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Run the library's batch solver in ``solver`` mode: (columns (N, B), per-problem flags (N,))."""
    c = _checked_costs(cost)
    out = np.empty(c.shape[:2], dtype=np.int64)
    flags = np.zeros(len(c), dtype=np.int64)
    code = _kernel_code(kernel)
    if lib.pick_kernel(code) < 0:
        raise ValueError(f"kernel {kernel!r} is not available here (available: {kernels()})")
    if lib.lsa_batch(c, c.shape[0], c.shape[1], out, _MODES[solver], flags, code) < 0:
        raise ValueError(f"assignment failed: cost matrices must be {need}")
    return out, flags


class Blocks(NamedTuple):
    """Templates cut into blocks, with what the kernel needs of them (see :func:`prepare`)."""

    x: np.ndarray  # (N, B, K) float64
    xt: np.ndarray  # (N, K, B) float64, the blocks side by side
    sq: np.ndarray  # (N, B) squared block norms
    norm: np.ndarray  # (N,) template norms
    x32: np.ndarray  # (N, B, K) float32 copy
    xt32: np.ndarray  # (N, K, B) float32 copy
    sq32: np.ndarray  # (N, B) squared block norms of the float copy (in double)


def prepare(x: np.ndarray) -> Blocks:
    """Block-shaped templates (N, B, K) in the layouts of the kernel; reusable across calls.

    Raises ValueError for non-finite values (the kernel clamps, it does not check).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"templates must have shape (N, B, K), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("PE-MIU comparison failed: templates must be finite")
    xt = np.ascontiguousarray(x.transpose(0, 2, 1))
    sq = np.einsum("pik,pik->pi", x, x)
    with np.errstate(over="ignore"):  # beyond float range: inf, and the kernel uses double only
        x32, xt32 = x.astype(np.float32), xt.astype(np.float32)
    x32d = x32.astype(np.float64)  # the float kernel's error bounds use the float copy's norms
    sq32 = np.einsum("pik,pik->pi", x32d, x32d)
    return Blocks(x, xt, sq, np.sqrt(sq.sum(1)), x32, xt32, sq32)


def pemiu_pairwise(
    a: np.ndarray | Blocks,
    b: np.ndarray | Blocks,
    threads: int = 1,
    counts: dict[str, int] | None = None,
    kernel: str = "auto",
) -> tuple[np.ndarray, int] | None:
    """All-pairs PE-MIU scores of block-shaped templates; None when the library is unavailable.

    Parameters
    ----------
    a, b : ndarray, shapes (Na, B, K) and (Nb, B, K), or :class:`Blocks`
        Templates cut into B blocks of size K (float64), or the output of :func:`prepare` (saves
        the conversions when one side takes part in several calls).
    threads : int
        OpenMP threads.
    counts : dict, optional
        Incremented in place: ``"scipy_order"`` (pairs solved by the SciPy-order fallback),
        ``"float_unsettled"`` (float kernels: pairs whose float solution the float check did not
        settle, so double costs were computed) and ``"double_unsettled"`` (of those, pairs
        whose float solution the double check did not settle either, so the double fast solver
        ran).
    kernel : {"auto", "portable", "avx2", "avx512"}
        Kernel (see :func:`kernels`); ``"auto"``: the fastest this CPU runs. The float kernels
        cover B <= 32 (AVX2) and B <= 16 (AVX-512, which hands 16 < B <= 32 to the AVX2 kernel);
        larger B runs the portable kernel. ValueError when unavailable here.

    Returns
    -------
    (ndarray, shape (Na, Nb), int) or None
        Scores and the number of pairs that needed the SciPy-order fallback (ties).
    """
    lib = load()
    if lib is None:
        return None
    pa = a if isinstance(a, Blocks) else prepare(a)
    pb = b if isinstance(b, Blocks) else prepare(b)
    if pa.x.shape[1:] != pb.x.shape[1:]:
        raise ValueError(f"block shapes differ: {pa.x.shape[1:]} vs {pb.x.shape[1:]}")
    na_, nblk, k = pa.x.shape
    nb_ = len(pb.x)
    out = np.empty((na_, nb_), dtype=np.float64)
    stats = np.zeros(3, dtype=np.int64)
    code = _kernel_code(kernel)
    if lib.pick_kernel(code) < 0:
        raise ValueError(f"kernel {kernel!r} is not available here (available: {kernels()})")
    before = lib.set_threads(int(threads))
    try:
        rc = lib.pemiu_pairwise(
            pa.x, pb.xt, pa.sq, pb.sq, pa.norm, pb.norm, pa.x32, pb.xt32, pb.x, pa.sq32, pb.sq32,
            na_, nb_, nblk, k, out, stats, code,
        )
    finally:
        lib.set_threads(before)
    if rc != 0:
        raise ValueError("PE-MIU assignment failed: templates must be finite")
    if counts is not None:
        for key, val in zip(("scipy_order", "float_unsettled", "double_unsettled"), stats.tolist(), strict=True):
            counts[key] = counts.get(key, 0) + int(val)
    return out, int(stats[0])
