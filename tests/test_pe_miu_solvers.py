"""PE-MIU assignment solvers and compiled kernels: equal to SciPy's assignment and to the per-pair
reference scores, certificates that hold only when SciPy agrees, float-level near ties, huge
values, every kernel this CPU runs (and real faces), the Numba solvers."""

from __future__ import annotations

import numpy as np
import pytest
from pemiu_helpers import FLOAT_KERNELS, KERNELS, need_kernel, reference_matrix, templates
from scipy.optimize import linear_sum_assignment

from facepriv.protections import pe_native, pe_numba
from facepriv.protections.lsa_batch import batched_lsa
from facepriv.protections.pe_miu import PEMIU


@pytest.mark.parametrize("integer", [False, True])
def test_batched_solver_equals_scipy_assignment(integer):
    rng = np.random.default_rng(4)
    c = rng.integers(0, 4, size=(400, 9, 9)).astype(float) if integer else rng.normal(size=(400, 9, 9))
    ref = np.stack([linear_sum_assignment(m)[1] for m in c])
    np.testing.assert_array_equal(batched_lsa(c), ref)
    native = pe_native.lsa_batch(c)
    if native is not None:
        np.testing.assert_array_equal(native, ref)
        np.testing.assert_array_equal(pe_native.lsa_batch(c, solver="scipy"), ref)


def _cost_problems(kind: str, count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random assignment problems, some with ties (equal-cost optima)."""
    if kind == "normal":
        return rng.normal(size=(count, n, n))
    if kind == "distances":  # PE-MIU-like: Euclidean distances between random blocks
        a, b = rng.normal(size=(2, count, n, 8))
        return np.sqrt(((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1))
    if kind == "integer":  # many tied optima
        return rng.integers(0, 3, size=(count, n, n)).astype(float)
    if kind == "duplicate":  # two equal rows and two equal columns: always tied
        c = rng.uniform(size=(count, n, n))
        c[:, -1] = c[:, 0]
        c[:, :, -1] = c[:, :, 1 % n]
        return c
    if kind == "constant":
        return np.full((count, n, n), 2.5)
    raise ValueError(kind)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 12, 16, 17, 32])
@pytest.mark.parametrize("kind", ["normal", "distances", "integer", "duplicate", "constant"])
def test_fast_solver_is_optimal_and_certified_only_when_scipy_agrees(n, kind):
    if pe_native.load() is None:
        pytest.skip("no C compiler: the compiled PE-MIU path is unavailable here")
    rng = np.random.default_rng(n * 31 + len(kind))
    count = 300 if n <= 16 else 60
    c = _cost_problems(kind, count, n, rng)
    ref = np.stack([linear_sum_assignment(m)[1] for m in c])
    ref_cost = np.take_along_axis(c, ref[:, :, None], axis=2).sum((1, 2))
    fast = pe_native.fast_lsa_batch(c)
    assert fast is not None
    col, certified = fast
    assert all(sorted(r) == list(range(n)) for r in col.tolist())  # permutations
    fast_cost = np.take_along_axis(c, col[:, :, None], axis=2).sum((1, 2))
    np.testing.assert_allclose(fast_cost, ref_cost, rtol=0, atol=1e-9 * max(1.0, np.abs(c).max()) * n)
    # certified -> SciPy returns the same assignment; the combined solver always does
    np.testing.assert_array_equal(col[certified], ref[certified])
    np.testing.assert_array_equal(pe_native.lsa_batch(c), ref)
    if kind in ("normal", "distances") and n > 1:
        assert certified.all()  # continuous random costs: no ties
    if kind in ("duplicate", "constant") and n > 1:
        assert not certified.any()  # an equal-cost alternative always exists


def _float_level_near_ties(count: int, n: int, rng: np.random.Generator, gap: float) -> np.ndarray:
    """Problems with a unique optimum whose runner-up (rows 0 and 1 swapped) costs ``gap`` more:
    far above the double certificate's margin, below the float check's."""
    c = rng.uniform(1, 2, size=(count, n, n))
    perm = np.stack([rng.permutation(n) for _ in range(count)])
    np.put_along_axis(c, perm[:, :, None], 0.5, axis=2)
    rows = np.arange(count)
    c[rows, 0, perm[:, 1]] = 0.5 + gap * rng.uniform(0.2, 0.8, size=count)
    c[rows, 1, perm[:, 0]] = 0.5 + gap - (c[rows, 0, perm[:, 1]] - 0.5)
    return c


# the float solver's widest problem: 32 columns in four ymm registers (AVX2), 16 in one zmm (AVX-512)
FLOAT_MAX_B = {"avx2": 32, "avx512": 16}


@pytest.mark.parametrize("kernel", FLOAT_KERNELS)
@pytest.mark.parametrize("n", [2, 5, 8, 12, 16, 17, 23, 32])
@pytest.mark.parametrize("kind", ["normal", "distances", "integer", "duplicate", "constant", "near_ties"])
def test_float_solver_certified_only_when_scipy_agrees(n, kind, kernel):
    """Float kernels (AVX2: B <= 32, AVX-512: B <= 16): the float solver and its float check alone."""
    need_kernel(kernel)
    if n > FLOAT_MAX_B[kernel]:
        pytest.skip(f"the {kernel} float solver covers B <= {FLOAT_MAX_B[kernel]}")
    rng = np.random.default_rng(n * 7 + len(kind))
    c = _float_level_near_ties(300, n, rng, 1e-6) if kind == "near_ties" else _cost_problems(kind, 300, n, rng)
    ref = np.stack([linear_sum_assignment(m)[1] for m in c])
    res = pe_native.fast_lsa_batch(c, solver="float", kernel=kernel)
    assert res is not None
    col, certified = res
    assert all(sorted(r) == list(range(n)) for r in col.tolist())
    np.testing.assert_array_equal(col[certified], ref[certified])
    np.testing.assert_array_equal(pe_native.lsa_batch(c), ref)
    if kind in ("normal", "distances"):
        assert certified.mean() > 0.95  # rare near ties at the float level go to the double path
    if kind in ("duplicate", "constant", "near_ties"):
        assert not certified.any()
    if kind == "near_ties":  # settled in double, without the SciPy-order solver
        fast_col, fast_ok = pe_native.fast_lsa_batch(c)
        assert fast_ok.all()
        np.testing.assert_array_equal(fast_col, ref)
    if n == FLOAT_MAX_B[kernel] and kind == "normal":
        with pytest.raises(ValueError):  # beyond the float solver's width
            pe_native.fast_lsa_batch(np.ones((1, n + 1, n + 1)), solver="float", kernel=kernel)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("nblk", "k"), [(16, 8), (32, 4)])
def test_native_scores_with_float_level_near_ties(dtype, kernel, nblk, k):
    """Blocks that differ by ~1e-6: the float check cannot settle those pairs, the double path
    does; float64 templates (not float32-exact) bring in the error bound's input rounding."""
    need_kernel(kernel)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(12, nblk, k))
    x[:, 1] = x[:, 0] + 1e-6 * rng.normal(size=(12, k))  # two nearly equal blocks per template
    x = x.astype(dtype).astype(np.float64)
    y = rng.permuted(x, axis=1) + 1e-3 * rng.normal(size=x.shape)
    counts: dict[str, int] = {}
    res = pe_native.pemiu_pairwise(x, y, counts=counts, kernel=kernel)
    assert res is not None
    ref = reference_matrix(x.reshape(12, -1), y.reshape(12, -1), k)
    np.testing.assert_allclose(res[0], ref, atol=1e-6, rtol=0)
    if kernel in FLOAT_KERNELS:
        assert counts["float_unsettled"] > 0


@pytest.mark.parametrize("kernel", FLOAT_KERNELS)
def test_float_solutions_the_float_check_leaves_are_checked_in_double(kernel):
    """Random 512-d templates, block 32: the pairs the float check leaves (near ties at float
    precision, ~2 %) mostly keep their float solution, certified against the double costs; the
    double solver runs only for the rest. Scores equal the reference either way."""
    need_kernel(kernel)
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(60, 16, 32)), rng.normal(size=(60, 16, 32))
    counts: dict[str, int] = {}
    res = pe_native.pemiu_pairwise(x, y, counts=counts, kernel=kernel)
    assert res is not None
    assert counts["float_unsettled"] > 0
    assert counts["double_unsettled"] < counts["float_unsettled"]
    ref = reference_matrix(x.reshape(60, -1)[:8], y.reshape(60, -1), 32)
    np.testing.assert_allclose(res[0][:8], ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("nblk", [8, 32])
def test_native_scores_of_huge_templates(kernel, nblk):
    """Squared norms beyond float range: the double path alone (both widths of the AVX2 kernel)."""
    need_kernel(kernel)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(6, nblk, 4)) * 1e20
    x[0, 0, 0] = 1e39  # beyond float range
    counts: dict[str, int] = {}
    res = pe_native.pemiu_pairwise(x, x[::-1], counts=counts, kernel=kernel)
    assert res is not None
    ref = reference_matrix(x.reshape(6, -1), x[::-1].reshape(6, -1), 4)
    np.testing.assert_allclose(res[0], ref, atol=1e-6, rtol=0)
    if kernel in FLOAT_KERNELS:
        assert counts["float_unsettled"] == 36


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("d", "k"), [(512, 32), (128, 8), (128, 16), (60, 5), (132, 2), (256, 8)])
def test_each_kernel_matches_reference(kernel, d, k):
    """Every kernel this CPU runs (B = 16, 16, 8, 12, 66, 32: float kernels for B <= 32 with AVX2,
    B <= 16 with AVX-512, the portable kernel beyond), on continuous, tied (integer) and
    near-duplicate templates."""
    need_kernel(kernel)
    # integer templates: exact ties, resolved on the kernel's Gram-form double costs; with tiny
    # blocks those can round differently from cdist's (known, documented limitation; see
    # RESULTS_pe_miu.md, block size 1 has its own exact path), so ties only for k >= 5 here
    for seed, integer in ((d + k, False), (d * k, True))[: 2 if k >= 5 else 1]:
        x = templates(30, d, seed=seed, integer=integer)
        x[7] = x[3] + 1e-7  # near-duplicate templates: near ties in every block pair
        p = PEMIU(block_size=k, seed=3).transform(x)
        blocks = p.reshape(len(p), d // k, k).astype(np.float64)
        counts: dict[str, int] = {}
        res = pe_native.pemiu_pairwise(blocks[:12], blocks[12:], counts=counts, kernel=kernel)
        assert res is not None
        np.testing.assert_allclose(res[0], reference_matrix(p[:12], p[12:], k), atol=1e-6, rtol=0)
        if integer and d // k <= 16:
            assert res[1] > 0  # ties reached the SciPy-order solver


def test_kernel_choice_is_validated_and_logged(monkeypatch, caplog):
    if pe_native.load() is None:
        pytest.skip("no C compiler: the compiled PE-MIU path is unavailable here")
    avail = pe_native.kernels()
    assert "portable" in avail
    assert pe_native.kernel_name() == avail[-1]  # the fastest available: avx512 > avx2 > portable
    x = np.ones((2, 4, 4))
    with pytest.raises(ValueError, match="unknown kernel"):
        pe_native.pemiu_pairwise(x, x, kernel="sse9")
    for name in ("avx2", "avx512"):
        if name not in avail:
            with pytest.raises(ValueError, match="not available"):
                pe_native.pemiu_pairwise(x, x, kernel=name)
    monkeypatch.delenv("FACEPRIV_NO_NATIVE", raising=False)
    monkeypatch.setattr(pe_native, "_announced", "")
    with caplog.at_level("INFO", logger="facepriv.protections.pe_native"):
        assert pe_native.active_path() == "compiled C"
    assert pe_native.KERNEL_INFO[pe_native.kernel_name()] in caplog.text


def test_native_kernel_leaves_the_callers_thread_count_alone():
    # The OpenMP runtime can be shared with torch: a PE-MIU cell must not change the thread
    # count (and so the float summation order) of a later torch cell in the same process.
    torch = pytest.importorskip("torch")
    if pe_native.load() is None:
        pytest.skip("no C compiler: the compiled PE-MIU path is unavailable here")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = templates(6, 64, seed=1).reshape(6, 8, 8).astype(np.float64)
        assert pe_native.pemiu_pairwise(x, x, threads=1) is not None
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_native_scores_count_tied_pairs():
    if pe_native.load() is None:
        pytest.skip("no C compiler: the compiled PE-MIU path is unavailable here")
    x = templates(20, 64, seed=3)
    res = pe_native.pemiu_pairwise(x.reshape(20, 8, 8).astype(np.float64), x.reshape(20, 8, 8).astype(np.float64))
    assert res is not None
    assert res[1] == 0  # continuous templates: every optimum certified unique
    ties = templates(10, 64, seed=5, integer=True).reshape(10, 8, 8).astype(np.float64)
    scores, nfb = pe_native.pemiu_pairwise(ties, ties)
    assert nfb > 0  # integer blocks: ties, solved in SciPy's order
    ref = reference_matrix(ties.reshape(10, 64), ties.reshape(10, 64), 8)
    np.testing.assert_allclose(scores, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 32])
@pytest.mark.parametrize("kind", ["normal", "distances", "integer", "duplicate", "constant"])
def test_numba_solver_equals_scipy_assignment(n, kind):
    if pe_numba.load() is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(n * 13 + len(kind))
    c = _cost_problems(kind, 200, n, rng)
    ref = np.stack([linear_sum_assignment(m)[1] for m in c])
    np.testing.assert_array_equal(pe_numba.lsa_batch(c), ref)


@pytest.mark.parametrize("kind", ["normal", "distances", "duplicate", "constant"])
def test_numba_certified_solver(kind):
    """The Numba path's fast solver alone: on continuous costs it certifies nearly every optimum
    (then equal to SciPy's); on tied costs (duplicate rows, constants) it certifies none, so the
    SciPy-order solver decides."""
    kern = pe_numba.load()
    if kern is None:
        pytest.skip("numba is not installed")
    jv_unique = kern[4]
    n = 16
    rng = np.random.default_rng(17 + len(kind))
    c = _cost_problems(kind, 200, n, rng)
    certified = []
    for m in c:
        col, row4col = np.empty(n, np.int64), np.empty(n, np.int64)
        v, key, dsc = np.empty(n), np.empty(n), np.empty(n)
        pred, scan = np.empty(n, np.int64), np.empty(n, np.int64)
        r = jv_unique(m, col, row4col, v, key, dsc, pred, scan)
        assert r in (0, 1)
        assert sorted(col.tolist()) == list(range(n))
        if r == 1:
            np.testing.assert_array_equal(col, linear_sum_assignment(m)[1])
        certified.append(r == 1)
    if kind in ("normal", "distances"):
        assert np.mean(certified) > 0.95
    else:
        assert not any(certified)


@pytest.fixture(scope="module")
def real_dlib(celeba_dir):
    """dlib templates (128-d) of 24 real CelebA photos: 6 people, 4 photos each."""
    from conftest import celeba_rows, dlib_templates

    return dlib_templates(celeba_dir, celeba_rows(celeba_dir, 6, 4))["es"].embeddings


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("block_size", [4, 8])
def test_kernels_on_real_faces(real_dlib, kernel, block_size):
    """Real dlib templates, PE-MIU protected: block 4 (32 blocks: the AVX2 kernel's four-register
    rows) and 8 (16 blocks). Genuine and impostor pairs both; scores equal the per-pair reference."""
    need_kernel(kernel)
    p = PEMIU(block_size=block_size, seed=5).transform(real_dlib)
    blocks = p.reshape(len(p), -1, block_size).astype(np.float64)
    counts: dict[str, int] = {}
    res = pe_native.pemiu_pairwise(blocks, blocks, counts=counts, kernel=kernel)
    assert res is not None
    np.testing.assert_allclose(res[0], reference_matrix(p, p, block_size), atol=1e-9, rtol=0)
