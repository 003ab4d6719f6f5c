"""Verification metrics: DET rates, EER interval, operating points, AUC, k-fold accuracy, protocols."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import det_curve, roc_auc_score, roc_curve

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.metrics import protocol as protocol_mod
from facepriv.metrics.kfold import best_threshold, kfold_accuracy
from facepriv.metrics.protocol import (
    make_pairs,
    protocol_from_lfw_pairs,
    read_protocol_csv,
    write_protocol_csv,
)
from facepriv.metrics.verification import (
    det_rates,
    eer,
    eer_from_det,
    operating_point,
    roc_auc,
    scores_all_pairs,
    scores_for_pairs,
    threshold_at_fmr,
    verification_report,
)

REPORT_KEYS = {
    "eer", "eer_low", "eer_high", "eer_threshold", "auc", "genuine_mean", "impostor_mean",
    "n_genuine", "n_impostor", "fnmr_at_fmr", "threshold_at_fmr",
}


def _random_scores(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.normal(1.5, 1.0, 400)
    i = rng.normal(0.0, 1.0, 5000)
    if ties:  # coarse scores: many ties within and across the two sets
        g, i = np.round(g, 1), np.round(i, 1)
    return g, i


# ------------------------------------------------------------------------------ DET against sklearn
@pytest.mark.parametrize("ties", [False, True])
def test_det_rates_match_sklearn(ties):
    g, i = _random_scores(1, ties)
    y = np.r_[np.ones(g.size), np.zeros(i.size)]
    s = np.r_[g, i]
    det = det_rates(g, i)
    assert np.all(np.diff(det.thresholds) > 0)
    assert det.fmr[0] == 1.0 and det.fnmr[0] == 0.0 and det.fmr[-1] == 0.0 and det.fnmr[-1] == 1.0
    # roc_curve without dropping gives every distinct score as a threshold (plus +inf first)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    k = np.searchsorted(det.thresholds, thr[1:])
    np.testing.assert_array_equal(det.thresholds[k], thr[1:])
    np.testing.assert_allclose(det.fmr[k], fpr[1:], rtol=0, atol=1e-15)
    np.testing.assert_allclose(1 - det.fnmr[k], tpr[1:], rtol=0, atol=1e-12)
    assert len(det.thresholds) == len(thr)  # distinct scores + our "reject all" threshold
    fmr2, fnmr2, thr2 = det_curve(y, s)
    k2 = np.searchsorted(det.thresholds, thr2)
    np.testing.assert_allclose(det.fmr[k2], fmr2, atol=1e-15)
    np.testing.assert_allclose(det.fnmr[k2], fnmr2, atol=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(ties):
    g, i = _random_scores(2, ties)
    y = np.r_[np.ones(g.size), np.zeros(i.size)]
    assert roc_auc(g, i) == pytest.approx(roc_auc_score(y, np.r_[g, i]), abs=1e-12)


def test_auc_hand_made():
    # pairs (g, i): 0.5>0.1, 0.5=0.5 (half), 0.9>0.1, 0.9>0.5 -> 3.5 / 4
    assert roc_auc([0.5, 0.9], [0.1, 0.5]) == 0.875


# ------------------------------------------------------------------------------------------- EER
def test_eer_exact_crossing():
    # at t = 0.65: one impostor (0.65) accepted of 4, one genuine (0.6) rejected of 4
    det = det_rates([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.65])
    e = eer_from_det(det)
    assert (e.eer, e.low, e.high, e.threshold) == (0.25, 0.25, 0.25, 0.65)


def test_eer_interval_fvc2000():
    # thresholds .1 .2 .5 .6 .9: FMR 1 2/3 1/3 1/3 0, FNMR 0 0 0 1/2 1/2
    # t1 = 0.5 (FNMR 0 <= FMR 1/3, sum 1/3), t2 = 0.6 (sum 5/6): interval [0, 1/3] at 0.5
    det = det_rates([0.5, 0.9], [0.1, 0.2, 0.6])
    e = eer_from_det(det)
    assert e.low == 0.0 and e.high == pytest.approx(1 / 3) and e.threshold == 0.5
    assert e.eer == pytest.approx(1 / 6)
    # mirrored case: the t2 side is closer -> [FMR(t2), FNMR(t2)]
    e2 = eer_from_det(det_rates([0.1, 0.7, 0.8], [0.6, 0.9]))
    # thresholds .1 .6 .7 .8 .9: FMR 1 1 1/2 1/2 1/2 ... FNMR 0 1/3 1/3 2/3 1
    # t1 = .7 (FNMR 1/3 <= FMR 1/2, sum 5/6), t2 = .8 (FNMR 2/3 >= 1/2, sum 7/6) -> [1/3, 1/2] at .7
    assert (e2.low, e2.high, e2.threshold) == (pytest.approx(1 / 3), 0.5, 0.7)


def test_eer_separable_is_zero():
    e = eer_from_det(det_rates([0.8, 0.9], [0.1, 0.2]))
    assert e.eer == 0.0 and e.low == 0.0 and e.high == 0.0 and e.threshold == 0.8


def test_eer_interval_contains_crossing_on_random_scores():
    g, i = _random_scores(3, ties=False)
    det = det_rates(g, i)
    e = eer_from_det(det)
    assert e.low <= e.eer <= e.high and e.high - e.low < 0.01
    k = int(np.argmin(np.abs(det.fmr - det.fnmr)))
    assert e.low - 1e-9 <= (det.fmr[k] + det.fnmr[k]) / 2 <= e.high + 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_fast_eer_and_operating_points_match_exact_det(seed):
    rng = np.random.default_rng(seed)
    # few distinct values (heavy ties) for even seeds, continuous for odd ones
    g = rng.normal(1.0, 1.0, rng.integers(1, 60))
    i = rng.normal(0.0, 1.0, rng.integers(1, 600))
    if seed % 2 == 0:
        g, i = np.round(g, 0), np.round(i, 0)
    det = det_rates(g, i)
    assert eer(g, i) == eer_from_det(det)
    rep = verification_report(g, i, fmr_targets=(0.0, 0.001, 0.01, 0.1, 0.5, 1.0))
    for t in rep.fnmr_at_fmr:
        assert (rep.threshold_at_fmr[t], rep.fmr_at_fmr[t], rep.fnmr_at_fmr[t]) == operating_point(det, t)


def test_thinned_det_rates_are_exact_subset():
    g, i = _random_scores(6, ties=False)
    full = det_rates(g, i)
    thin = det_rates(g, i, max_impostor_points=100)
    assert thin.thresholds.size < 600
    k = np.searchsorted(full.thresholds, thin.thresholds)
    np.testing.assert_array_equal(full.thresholds[k], thin.thresholds)
    np.testing.assert_array_equal(full.fmr[k], thin.fmr)
    np.testing.assert_array_equal(full.fnmr[k], thin.fnmr)
    assert thin.fmr[-1] == 0 and thin.fnmr[0] == 0


# ------------------------------------------------------------------------------- operating points
def test_operating_point_rule_hand_made():
    imp = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    gen = np.array([0.9895, 0.995, 1.5])
    det = det_rates(gen, imp)
    thr, fmr, fnmr = operating_point(det, 0.01)
    # 10 false matches allowed: 0.990..0.999 accepted; lowest listed threshold above 0.989 is 0.9895
    assert (thr, fmr, fnmr) == (0.9895, 0.01, 0.0)
    assert threshold_at_fmr(imp, 0.01) == 0.99  # impostor scores alone: next impostor score
    thr, fmr, fnmr = operating_point(det, 0.001)  # 1 false match: threshold 0.999, 0.9895 and 0.995 rejected
    assert thr == 0.999 and fmr == 0.001 and fnmr == pytest.approx(2 / 3)
    thr, fmr, fnmr = operating_point(det, 0.0)
    assert thr == 1.5 and fmr == 0.0 and fnmr == pytest.approx(2 / 3)


def test_operating_point_matches_brute_force():
    g, i = _random_scores(4, ties=True)
    det = det_rates(g, i)
    for target in (0.001, 0.01, 0.1, 0.25):
        thr, fmr, fnmr = operating_point(det, target)
        ok = [t for t in det.thresholds if (i >= t).mean() <= target]
        assert thr == min(ok)
        assert fmr == (i >= thr).mean() and fnmr == (g < thr).mean()
        assert fmr <= target


def test_threshold_at_fmr_edges():
    assert threshold_at_fmr([0.1, 0.2], 1.0) == 0.1
    t = threshold_at_fmr([0.3, 0.3], 0.0)
    assert t > 0.3 and t == np.nextafter(0.3, 1)
    with pytest.raises(ParameterError):
        threshold_at_fmr([], 0.1)


# ---------------------------------------------------------------------------------------- report
def test_report_keys_and_values():
    g, i = _random_scores(5, ties=False)
    r = verification_report(g, i)
    d = r.to_dict()
    assert set(d) == REPORT_KEYS
    assert set(d["fnmr_at_fmr"]) == {"0.001", "0.01", "0.1"} == set(d["threshold_at_fmr"])
    assert d["n_genuine"] == 400 and d["n_impostor"] == 5000
    assert d["genuine_mean"] == pytest.approx(g.mean()) and d["impostor_mean"] == pytest.approx(i.mean())
    assert d["fnmr_at_fmr"]["0.001"] >= d["fnmr_at_fmr"]["0.01"] >= d["fnmr_at_fmr"]["0.1"]
    # normal(1.5) vs normal(0): EER near Phi(-0.75) = 0.227
    assert 0.19 < d["eer"] < 0.26


def test_report_with_kfold_keys():
    r = verification_report([0.8, 0.9], [0.1, 0.2], kfold=kfold_accuracy([0.8, 0.1, 0.9, 0.2], [1, 0, 1, 0], [0, 0, 1, 1]))
    assert set(r.to_dict()) == REPORT_KEYS | {"kfold_accuracy_mean", "kfold_accuracy_std"}


@pytest.mark.parametrize(
    "gen, imp, match",
    [([], [0.1], "no genuine"), ([0.5], [], "only one identity"), ([np.nan, 0.5], [0.1], "NaN"),
     ([0.5], [np.inf], "NaN or infinite")],
)
def test_bad_scores(gen, imp, match):
    with pytest.raises(ParameterError, match=match):
        verification_report(gen, imp)


# ------------------------------------------------------------------------------------------ scores
def _clustered(n_ids: int = 6, per_id: int = 5, d: int = 16, seed: int = 0) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, d))
    emb = np.repeat(centres, per_id, axis=0) + 0.3 * rng.normal(size=(n_ids * per_id, d))
    ident = np.repeat([f"p{k}" for k in range(n_ids)], per_id)
    ids = np.array([f"{p}/{j}.jpg" for j, p in enumerate(ident)])
    return EmbeddingSet(emb.astype(np.float32), ids, ident)


def test_scores_all_pairs_brute_force_and_blocks():
    es = _clustered()
    e = es.embeddings.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    gen, imp = [], []
    for a in range(len(es)):
        for b in range(a + 1, len(es)):
            (gen if es.identity[a] == es.identity[b] else imp).append(float(e[a] @ e[b]))
    for rows in (None, 1, 7, 1000):
        s = scores_all_pairs(es, block_rows=rows)
        np.testing.assert_allclose(s.genuine, gen, atol=1e-12)
        np.testing.assert_allclose(s.impostor, imp, atol=1e-12)
    g2, i2 = scores_all_pairs((es.embeddings, es.identity))
    assert g2.size == 6 * 10 and i2.size == 30 * 29 // 2 - 60


def test_scores_use_recorded_comparator(monkeypatch):
    class NegEuclid:
        name = "neg_euclid"

        def pairwise(self, a, b):
            return -np.linalg.norm(a[:, None, :].astype(float) - b[None, :, :], axis=2)

        def paired(self, a, b):
            return -np.linalg.norm(a.astype(float) - b, axis=1)

    import facepriv.protections.base as pbase

    monkeypatch.setattr(pbase, "comparator_for", lambda es: NegEuclid())
    es = _clustered()
    s = scores_all_pairs(es)
    e = es.embeddings.astype(float)
    assert s.genuine[0] == pytest.approx(-np.linalg.norm(e[0] - e[1]))
    p = scores_for_pairs(es, es.ids[[0, 2]], es.ids[[1, 29]])
    np.testing.assert_allclose(p, [-np.linalg.norm(e[0] - e[1]), -np.linalg.norm(e[2] - e[29])])


def test_single_identity_has_no_impostors():
    es = _clustered(n_ids=1)
    g, i = scores_all_pairs(es)
    assert i.size == 0
    with pytest.raises(ParameterError, match="only one identity"):
        verification_report(g, i)
    with pytest.raises(ParameterError, match="at least 2"):
        scores_all_pairs(es.subset(np.array([0])))


def test_scores_for_pairs_missing_id():
    with pytest.raises(ParameterError, match="1 sample id"):
        scores_for_pairs(_clustered(), np.array(["p0/0.jpg"]), np.array(["nope.jpg"]))


# ------------------------------------------------------------------------------------------ k-fold
def test_kfold_separable_is_one():
    rng = np.random.default_rng(0)
    s = np.r_[rng.uniform(0.6, 1, 200), rng.uniform(-1, 0.4, 200)]
    g = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    f = rng.integers(0, 10, 400)
    r = kfold_accuracy(s, g, f)
    assert r.mean == 1.0 and r.std == 0.0 and len(r.accuracies) == 10
    assert all(0.4 <= t <= 0.6 for t in r.thresholds)


def test_kfold_hand_made():
    # fold 0: gen .9 .8, imp .1 .85 ; fold 1: gen .7 .6, imp .2 .3
    s = [0.9, 0.8, 0.1, 0.85, 0.7, 0.6, 0.2, 0.3]
    g = [1, 1, 0, 0, 1, 1, 0, 0]
    f = [0, 0, 0, 0, 1, 1, 1, 1]
    r = kfold_accuracy(s, g, f)
    # fold 0 tested with the threshold learnt on fold 1: midway between 0.3 and 0.6 -> 0.45
    # fold 1 tested with fold 0's: lowest maximiser 0.8 (3 of 4 right), midway from 0.1 -> 0.45
    assert r.thresholds == (pytest.approx(0.45), pytest.approx(0.45))
    assert r.accuracies == (0.75, 1.0)
    assert r.mean == 0.875 and r.std == pytest.approx(0.125 * np.sqrt(2))
    assert r.stderr == pytest.approx(r.std / np.sqrt(2))


def test_best_threshold_edges():
    assert best_threshold(np.array([0.5, 0.6]), np.array([True, True])) == (-0.5, 1.0)
    assert best_threshold(np.array([0.5, 0.6]), np.array([False, False])) == (1.6, 1.0)


def test_kfold_bad_inputs():
    with pytest.raises(ParameterError, match="at least 2 folds"):
        kfold_accuracy([0.1, 0.2], [1, 0], [0, 0])
    with pytest.raises(ParameterError, match="equal length"):
        kfold_accuracy([0.1], [1, 0], [0, 1])
    with pytest.raises(ParameterError, match="NaN"):
        kfold_accuracy([np.nan, 0.2], [1, 0], [0, 1])


# ---------------------------------------------------------------------------------------- protocol
def _labelled(n_ids: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 25, n_ids)
    ident = np.repeat([f"id{k:03d}" for k in range(n_ids)], sizes)
    ids = np.array([f"{p}/{j:04d}.jpg" for j, p in enumerate(ident)])
    return ids, ident


def _check_protocol(p, ids, ident, n_folds):
    who = dict(zip(ids, ident))
    assert p.n_folds == n_folds
    fold_ids = [set() for _ in range(n_folds)]
    for f, a, b, g in zip(p.fold, p.id1, p.id2, p.genuine):
        assert a != b and (who[a] == who[b]) == bool(g)
        fold_ids[f].update((who[a], who[b]))
    for x in range(n_folds):  # identity-disjoint folds
        for y in range(x + 1, n_folds):
            assert not fold_ids[x] & fold_ids[y]
    keys = {(f, *sorted((a, b))) for f, a, b in zip(p.fold, p.id1, p.id2)}
    assert len(keys) == len(p)  # no repeated pair


def test_make_pairs_disjoint_seeded_counts():
    ids, ident = _labelled()
    p = make_pairs(ids, ident, n_folds=5, pairs_per_fold=(20, 30), seed=3)
    _check_protocol(p, ids, ident, 5)
    for f in range(5):
        assert (p.genuine[p.fold == f]).sum() == 20 and (~p.genuine[p.fold == f]).sum() == 30
    q = make_pairs(ids, ident, n_folds=5, pairs_per_fold=(20, 30), seed=3)
    assert all(np.array_equal(getattr(p, k), getattr(q, k)) for k in ("fold", "id1", "id2", "genuine"))
    r = make_pairs(ids, ident, n_folds=5, pairs_per_fold=(20, 30), seed=4)
    assert not np.array_equal(p.id1, r.id1)


def test_make_pairs_sampling_branch(monkeypatch):
    monkeypatch.setattr(protocol_mod, "_ENUMERATE_LIMIT", 10)
    ids, ident = _labelled(seed=1)
    p = make_pairs(ids, ident, n_folds=3, pairs_per_fold=(40, 40), seed=0)
    _check_protocol(p, ids, ident, 3)
    assert p.counts() == {"pairs": 240, "genuine_pairs": 120, "impostor_pairs": 120, "folds": 3}


def test_make_pairs_small_takes_all_and_warns(caplog):
    ident = np.array(["a", "a", "b", "c", "c", "d"])
    ids = np.array([f"{k}.jpg" for k in range(6)])
    with caplog.at_level(logging.WARNING):
        p = make_pairs(ids, ident, n_folds=2, pairs_per_fold=(5, 5), seed=0)
    assert "fewer possible pairs" in caplog.text
    _check_protocol(p, ids, ident, 2)
    assert p.counts() == {"pairs": 6, "genuine_pairs": 2, "impostor_pairs": 4, "folds": 2}


def test_make_pairs_errors():
    ids, ident = _labelled(n_ids=8)
    with pytest.raises(ParameterError, match="use fewer folds"):
        make_pairs(ids, ident, n_folds=10)
    with pytest.raises(ParameterError, match="unique"):
        make_pairs(np.array(["x", "x", "y", "z"]), np.array(["a", "a", "b", "b"]), n_folds=2)


def test_protocol_csv_round_trip(tmp_path):
    ids, ident = _labelled()
    p = make_pairs(ids, ident, n_folds=4, pairs_per_fold=(5, 5), seed=0)
    path = write_protocol_csv(p, tmp_path / "p.csv")
    q = read_protocol_csv(path)
    assert all(np.array_equal(getattr(p, k), getattr(q, k)) for k in ("fold", "id1", "id2", "genuine"))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="header"):
        read_protocol_csv(tmp_path / "bad.csv")


def test_lfw_pairs_to_ids(lfw_meta_dir):
    from facepriv.datasets.lfw import read_lfw_pairs

    pairs = read_lfw_pairs(lfw_meta_dir / "pairs.txt")
    paths = sorted({x for pr in pairs for x in (pr.path1, pr.path2)})
    p = protocol_from_lfw_pairs(pairs, np.array(paths))
    assert p.counts() == {"pairs": 6000, "genuine_pairs": 3000, "impostor_pairs": 3000, "folds": 10}
    # ids with a root prefix still match by file name
    p2 = protocol_from_lfw_pairs(pairs, np.array(["lfw/" + x for x in paths]))
    assert p2.id1[0] == "lfw/" + p.id1[0]
    # images missing from the file: a clear count, or dropped on request
    kept = np.array(paths[10:])
    n_bad = sum(1 for pr in pairs if pr.path1 in paths[:10] or pr.path2 in paths[:10])
    with pytest.raises(ParameterError, match=f"{n_bad} of 6000 pairs .* reference 10 image"):
        protocol_from_lfw_pairs(pairs, kept, source="pairs.txt")
    p3 = protocol_from_lfw_pairs(pairs, kept, drop_missing=True)
    assert len(p3) == 6000 - n_bad


# ------------------------------------------------------------------------------------------- plots
def test_plot_det_several_curves(tmp_path):
    from facepriv.errors import OutputExistsError
    from facepriv.metrics.plots import DetCurve, plot_det

    rng = np.random.default_rng(0)
    curves = [
        DetCurve("strong", rng.normal(3, 1, 2000), rng.normal(0, 1, 200_000)),  # thinned for plotting
        DetCurve("weak", rng.normal(1, 1, 300), rng.normal(0, 1, 3000)),
    ]
    out = plot_det(curves, tmp_path / "det.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(OutputExistsError):
        plot_det(curves, out)
    plot_det(curves[:1], out, overwrite=True)
    with pytest.raises(ParameterError):
        plot_det([], tmp_path / "x.png")
    with pytest.raises(ParameterError):
        plot_det(curves, tmp_path / "x.png", limits=(0.5, 0.1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.png"]


def test_all_pairs_of_a_per_pair_comparator_skip_the_lower_triangle():
    """PE-MIU (one assignment per pair): the diagonal blocks are compared in strips, so the pairs
    scored stay close to the n (n - 1) / 2 needed; the scores equal one full-matrix call bit for bit
    (each pair is solved on its own)."""
    from facepriv.metrics.scores import _STRIP_ROWS
    from facepriv.protections.pe_miu import PEMIUComparator

    class Counting(PEMIUComparator):
        scored = 0

        def pairwise(self, a, b):
            Counting.scored += len(a) * len(b)
            return super().pairwise(a, b)

    rng = np.random.default_rng(3)
    n = 300
    emb = rng.normal(size=(n, 64))
    ident = np.repeat(np.arange(n // 3), 3)
    full = PEMIUComparator(8).pairwise(emb, emb)
    upper = np.triu_indices(n, 1)
    same = ident[upper[0]] == ident[upper[1]]
    comp = Counting(8)
    for rows in (None, 100, 7):
        Counting.scored = 0
        s = scores_all_pairs((emb, ident), comp, block_rows=rows)
        np.testing.assert_array_equal(s.genuine, full[upper][same])
        np.testing.assert_array_equal(s.impostor, full[upper][~same])
        needed = n * (n - 1) // 2
        assert Counting.scored <= needed + n * _STRIP_ROWS  # at most a strip's triangle per row block
    Counting.scored = 0
    comp.per_pair = False  # one call per block: the whole lower-left of each diagonal block too
    scores_all_pairs((emb, ident), comp, block_rows=100)
    assert Counting.scored == 100 * 300 + 100 * 200 + 99 * 100
