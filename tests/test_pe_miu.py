"""PE-MIU protection and comparator: exactness against the reference algorithm, seeds, variants."""

from __future__ import annotations

import numpy as np
import pytest
from pemiu_helpers import reference_matrix, templates
from scipy.optimize import linear_sum_assignment

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections import pe_native, pe_numba
from facepriv.protections.base import comparator_for, protection_from_record
from facepriv.protections.pe_miu import PEMIU, PEMIUComparator, reference_score
from facepriv.registry import create


@pytest.fixture(params=["native", "numba", "numpy"])
def path(request, monkeypatch):
    """Run a test on the compiled path (when a compiler exists), the Numba path and the numpy path."""
    if request.param in ("numba", "numpy"):
        monkeypatch.setenv("FACEPRIV_NO_NATIVE", "1")
    if request.param == "numpy":
        monkeypatch.setenv("FACEPRIV_NO_NUMBA", "1")
    if request.param == "numba" and pe_numba.load() is None:
        pytest.skip("numba is not installed")
    if request.param != "native":
        assert pe_native.active_path() == request.param  # the path under test is the one that runs
    elif pe_native.load() is None:
        pytest.skip("no C compiler: the compiled PE-MIU path is unavailable here")
    return request.param


@pytest.mark.parametrize(
    ("d", "k"),
    # B = 4, 16, 16, 1, 12, 5 (compiled: AVX-512 kernel where available), 32 (portable solver),
    # 66 (SciPy-order solver only)
    [(128, 32), (128, 8), (512, 32), (64, 64), (60, 5), (15, 3), (128, 4), (132, 2)],
)
def test_pairwise_matches_reference(path, d, k):
    x = templates(40, d, seed=d + k)
    p = PEMIU(block_size=k, seed=3).transform(x)
    got = PEMIUComparator(k).pairwise(p[:15], p[15:])
    ref = reference_matrix(p[:15], p[15:], k)
    assert got.shape == (15, 25)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_pairwise_matches_reference_with_ties(path):
    x = templates(30, 64, seed=5, integer=True)
    p = PEMIU(block_size=8, seed=1).transform(x)
    got = PEMIUComparator(8).pairwise(p, p)
    np.testing.assert_allclose(got, reference_matrix(p, p, 8), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-6)  # every template matches itself


def test_paired_matches_reference(path):
    x = templates(50, 128, seed=9)
    p = PEMIU(block_size=16, seed=2).transform(x)
    got = PEMIUComparator(16).paired(p[:25], p[25:])
    ref = np.array([reference_score(a, b, 16) for a, b in zip(p[:25], p[25:], strict=True)])
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_non_finite_templates_are_rejected(path):
    x = templates(6, 64)
    x[2, 5] = np.nan
    with pytest.raises(ValueError):
        PEMIUComparator(8).pairwise(x, x)


def test_protection_is_a_block_permutation_and_scores_equal_unprotected_for_genuine_match():
    x = templates(20, 128, seed=1)
    p = PEMIU(block_size=32).fit().transform(x)
    for a, b in zip(x, p, strict=True):
        blocks_a = sorted(map(tuple, a.reshape(4, 32)))
        blocks_b = sorted(map(tuple, b.reshape(4, 32)))
        assert blocks_a == blocks_b
    assert not np.array_equal(p, x)
    # the comparator undoes the permutation: PE-MIU(x_i, x_i permuted) = 1
    np.testing.assert_allclose(PEMIUComparator(32).paired(x, p), 1.0, atol=1e-6)


def test_seed_reproducible_and_changes_permutations():
    x = templates(30, 128)
    a = PEMIU(block_size=16, seed=7).transform(x)
    b = PEMIU(block_size=16, seed=7).transform(x)
    c = PEMIU(block_size=16, seed=8).transform(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    perms = PEMIU(block_size=16, seed=7).permutations(30, 128)
    assert len({tuple(r) for r in perms}) > 25  # a fresh permutation per template


def test_fixed_variant_moves_exactly_p_blocks_same_for_all():
    prot = PEMIU(block_size=16, moved_blocks=4, seed=11)
    perms = prot.permutations(10, 256)
    assert (perms == perms[0]).all()
    assert int(np.sum(perms[0] != np.arange(16))) == 4
    x = templates(10, 256)
    y = prot.transform(x)
    assert int(np.sum(np.any(y.reshape(10, 16, 16) != x.reshape(10, 16, 16), axis=2)[0])) == 4
    assert not np.array_equal(PEMIU(16, 4, seed=12).permutations(1, 256), perms[:1])
    np.testing.assert_array_equal(PEMIU(16, 0).transform(x), x)


@pytest.mark.parametrize(
    "params",
    [{"block_size": 0}, {"block_size": 16, "moved_blocks": 1}, {"block_size": 16, "moved_blocks": -2}, {"block_size": "a"},
     {"block_size": 16, "seed": -5}],
)
def test_bad_parameters(params):
    with pytest.raises(ParameterError):
        create("protection", "pe_miu", params)


def test_block_size_must_divide_dimension():
    x = templates(4, 128)
    with pytest.raises(ParameterError, match="does not divide"):
        PEMIU(block_size=48).transform(x)
    with pytest.raises(ParameterError, match="does not divide"):
        PEMIUComparator(48).pairwise(x, x)
    with pytest.raises(ParameterError, match="exceeds the number of blocks"):
        PEMIU(block_size=64, moved_blocks=4).transform(x)


def test_record_hides_seed_and_recreates_comparator():
    x = templates(12, 128)
    es = EmbeddingSet(x, np.array([f"i{i}" for i in range(12)]), np.array([str(i // 3) for i in range(12)]))
    prot = PEMIU(block_size=16, moved_blocks=4, seed=1234)
    out = prot.protect(es)
    assert out.protection == {"name": "pe_miu", "params": {"block_size": 16, "moved_blocks": 4, "seed": "<secret>"}}
    assert "1234" not in repr(prot) and "1234" not in str(out.protection)
    again = protection_from_record(out.protection)
    assert isinstance(again, PEMIU) and again.block_size == 16 and again.moved_blocks == 4
    comp = comparator_for(out)
    assert isinstance(comp, PEMIUComparator) and comp.block_size == 16
    with pytest.raises(ParameterError, match="already protected"):
        prot.protect(out)


def test_genuine_scores_beat_impostors_more_than_random_blocks():
    # impostor scores rise with smaller blocks (more freedom to re-align): the known PE-MIU effect
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 128)).astype(np.float32)
    means = []
    for k in (64, 16, 4):
        s = PEMIUComparator(k).pairwise(PEMIU(k, seed=1).transform(x), PEMIU(k, seed=2).transform(x))
        means.append(s[~np.eye(30, dtype=bool)].mean())
    assert means[0] < means[1] < means[2]


def test_row_minimum_shortcut_agrees_with_scipy(path):
    from facepriv.protections.pe_miu import assign

    rng = np.random.default_rng(6)
    n, b = 300, 8
    c = rng.uniform(1, 2, size=(n, b, b))
    perm = np.stack([rng.permutation(b) for _ in range(n)])
    np.put_along_axis(c, perm[:, :, None], 0.1, axis=2)  # easy: clear row minima in distinct columns
    c[::3, 0, :] = c[::3, 1, :]  # every third problem: two equal rows (a tie, shortcut must decline)
    ref = np.stack([linear_sum_assignment(m)[1] for m in c])
    np.testing.assert_array_equal(assign(c), ref)
    np.testing.assert_array_equal(assign(c, lockstep=True), ref)
    # and through the comparator on templates whose blocks have distinct means (dlib-like)
    x = templates(30, 64) * 0.1 + np.repeat(np.arange(8), 8)[None, :].astype(np.float32)
    p = PEMIU(block_size=8, seed=4).transform(x)
    np.testing.assert_allclose(PEMIUComparator(8).pairwise(p, p), reference_matrix(p, p, 8), atol=1e-6, rtol=0)


def test_realignment_rate_structured_vs_random():
    from facepriv.protections.pe_miu import realignment_rate

    rng = np.random.default_rng(0)
    structured = rng.normal(size=(12, 64)) * 0.05 + np.repeat(np.arange(8), 8)[None, :]  # distinct block means
    assert realignment_rate(structured[:6], structured[6:], 8) == 1.0
    noise = rng.normal(size=(12, 64))
    assert realignment_rate(noise[:6], noise[6:], 8) < 0.2


@pytest.mark.parametrize("integer", [False, True])
def test_block_size_one_matches_reference_despite_ties(path, integer):
    """Scalar blocks: 1-d assignments have many exactly tied optima; SciPy's pick must be reproduced."""
    x = templates(12, 128, seed=11, integer=integer)
    p = PEMIU(block_size=1, seed=2).transform(x)
    comp = PEMIUComparator(1)
    ref = reference_matrix(p, p, 1)
    np.testing.assert_allclose(comp.pairwise(p, p), ref, atol=1e-12, rtol=0)
    np.testing.assert_allclose(comp.paired(p, p[::-1]), np.diag(ref[:, ::-1]), atol=1e-12, rtol=0)


def test_comparator_threads_default_to_the_usable_cpus(monkeypatch, path):
    """threads=0 (the default) runs on the CPUs the process may use (OMP_NUM_THREADS caps it);
    the scores are the same with any thread count."""
    from facepriv.determinism import machine_threads

    assert PEMIUComparator(8).n_threads() == machine_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert PEMIUComparator(8).n_threads() == 1
    assert PEMIUComparator(8, threads=3).n_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    x = templates(24, 64, seed=5)
    one = PEMIUComparator(8, threads=1).pairwise(x[:10], x)
    np.testing.assert_array_equal(PEMIUComparator(8).pairwise(x[:10], x), one)
    np.testing.assert_array_equal(PEMIUComparator(8, threads=2).pairwise(x[:10], x), one)


def test_comparator_path_is_logged(monkeypatch, caplog):
    monkeypatch.setenv("FACEPRIV_NO_NATIVE", "1")
    monkeypatch.setattr(pe_native, "_announced", "")
    with caplog.at_level("INFO", logger="facepriv.protections.pe_native"):
        name = pe_native.active_path()
    assert name == ("numba" if pe_numba.load() is not None else "numpy")
    assert f"PE-MIU comparator: {name} path" in caplog.text


