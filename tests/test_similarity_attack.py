"""Similarity attack: fusion rules, decisions, sets (split, balance, protection), bad inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from facepriv.attacks.fusion import cap_top_n, fuse, rank_weights, top_scores
from facepriv.attacks.sets import balance, labelled, prepare_sets, split_identities
from facepriv.attacks.soft_biometric import SimilarityAttack
from facepriv.embeddings import EmbeddingSet
from facepriv.errors import ParameterError
from facepriv.protections.pe_miu import PEMIU


def _es(n_id=20, per=5, d=64, seed=0, signal=1.0, protection=None, prefix="p"):
    rng = np.random.default_rng(seed)
    ids = np.arange(n_id)
    sex = np.where(ids % 2 == 0, "female", "male")
    direction = rng.normal(size=d)
    centres = rng.normal(size=(n_id, d)) + signal * np.where(ids % 2 == 0, 1.0, -1.0)[:, None] * direction / 3
    x = centres[np.repeat(ids, per)] + 0.3 * rng.normal(size=(n_id * per, d))
    return EmbeddingSet(
        x.astype(np.float32),
        np.array([f"{prefix}{i}.jpg" for i in range(n_id * per)]),
        np.array([f"{prefix}{i}" for i in np.repeat(ids, per)]),
        {"gender": np.repeat(sex, per)},
        "synthetic",
        protection,
    )


def test_rank_weights_match_the_paper_formulas():
    np.testing.assert_allclose(rank_weights("log", 3), [np.log10(2), np.log10(1.5), np.log10(4 / 3)])
    np.testing.assert_allclose(rank_weights("linear", 3), [1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(rank_weights("mean", 4), [0.25] * 4)
    np.testing.assert_allclose(rank_weights("max", 3), [1, 0, 0])
    with pytest.raises(ParameterError):
        rank_weights("median", 3)


def test_fusion_on_hand_made_scores():
    s = top_scores(np.array([[0.1, 0.9, 0.5, 0.7]]), 3)
    np.testing.assert_allclose(s, [[0.9, 0.7, 0.5]])
    assert fuse(s, "max", 3)[0] == pytest.approx(0.9)
    assert fuse(s, "mean", 3)[0] == pytest.approx(0.7)
    assert fuse(s, "log", 2)[0] == pytest.approx(np.log10(2) * 0.9 + np.log10(1.5) * 0.7)
    assert fuse(s, "linear", 3)[0] == pytest.approx(0.9 / 2 + 0.7 / 3 + 0.5 / 4)
    with pytest.raises(ParameterError):
        fuse(s, "mean", 4)


def test_cap_top_n(caplog):
    with caplog.at_level(logging.WARNING):
        assert cap_top_n([1, 5, 50], 10) == [1, 5, 10]
    assert "capped" in caplog.text
    with pytest.raises(ParameterError, match="exceeds"):
        cap_top_n([50, 100], 10)
    with pytest.raises(ParameterError, match="empty"):
        cap_top_n([1], 0)
    with pytest.raises(ParameterError):
        cap_top_n([0], 5)


def test_decisions_on_hand_made_scores():
    lab = np.array(["f", "f", "f", "m", "m", "m"])
    gal = EmbeddingSet(np.zeros((6, 4), np.float32), np.array(list("abcdef")), np.array(list("abcdef")), {"g": lab})
    att = SimilarityAttack(attribute="g", top_n=(1, 3), decision="both").fit(gal)
    # probe 0: best single match male (0.9) but females better on average; probe 1: clearly female
    scores = np.array([[0.8, 0.8, 0.8, 0.9, 0.1, 0.1], [0.9, 0.2, 0.2, 0.3, 0.3, 0.3]])
    res = att.decide(scores, np.array(["f", "f"]), np.array(["p0", "p1"]))
    assert list(res.predictions[("max", 1, "galleries")]) == ["m", "f"]
    assert list(res.predictions[("mean", 3, "galleries")]) == ["f", "f"]
    assert list(res.predictions[("vote", 1, "vote")]) == ["m", "f"]
    assert list(res.predictions[("vote", 3, "vote")]) == ["f", "m"]  # probe 1: top-3 = f(0.9), m, m -> m
    np.testing.assert_allclose(res.fused[("linear", 3)][0], [0.8 * (1 / 2 + 1 / 3 + 1 / 4), 0.9 / 2 + 0.1 / 3 + 0.1 / 4])
    rows = {(r["rule"], r["n"], r["decision"]): r for r in res.rows()}
    assert rows[("mean", 3, "galleries")]["accuracy"] == 1.0
    assert rows[("max", 1, "galleries")]["accuracy"] == 0.5
    assert res.chance() == 1.0
    assert res.to_dict()["correct"] == 2


def test_attack_infers_gender_through_pe_miu_cross_database():
    attacker = _es(seed=1, prefix="a")
    target = _es(seed=2, prefix="t")
    # same feature space (gender direction): regenerate target with attacker's direction
    target = EmbeddingSet(
        _es(seed=1, prefix="t").embeddings + 0.05, target.ids, target.identity, target.attributes, "synthetic"
    )
    gal, probes = prepare_sets(attacker, target, "gender", PEMIU(block_size=16, seed=5), seed=0)
    assert gal.protection["name"] == "pe_miu" and probes.protection["name"] == "pe_miu"
    res = SimilarityAttack(top_n=(1, 5, 10), decision="both").fit(gal).evaluate(probes)
    assert res.best()["accuracy"] > 0.8
    # the cosine comparator on per-template permuted blocks is much weaker
    cos = SimilarityAttack(top_n=(1,), comparator="cosine").fit(gal).evaluate(probes)
    assert cos.best()["accuracy"] < res.best()["accuracy"]


def test_already_protected_target_uses_recorded_protection():
    clean = _es(seed=3)
    prot = PEMIU(block_size=16, seed=99).protect(clean)
    attacker = _es(seed=4, prefix="a")
    gal, probes = prepare_sets(attacker, prot, "gender", None, seed=0)
    assert gal.protection == prot.protection
    np.testing.assert_array_equal(probes.embeddings, prot.embeddings)
    with pytest.raises(ParameterError, match="does not match"):
        from facepriv.protections.base import Unprotected

        class Other(Unprotected):
            name = "other"

        prepare_sets(attacker, prot, "gender", Other(), seed=0)


def test_split_identities_disjoint_stratified_seeded():
    es = _es(n_id=30)
    a, t = split_identities(es, 0.5, "gender", seed=1)
    assert not set(a.identity) & set(t.identity)
    assert len(a) + len(t) == len(es)
    assert set(a.gender) == set(t.gender) == {"female", "male"}
    a2, _ = split_identities(es, 0.5, "gender", seed=1)
    a3, _ = split_identities(es, 0.5, "gender", seed=2)
    np.testing.assert_array_equal(a.ids, a2.ids)
    assert set(a.identity) != set(a3.identity)
    with pytest.raises(ParameterError):
        split_identities(es, 1.0)


def test_balance_and_labelled(caplog):
    es = _es(n_id=10)
    g = es.gender.copy()
    g[:12] = ""  # female rows without label
    es = EmbeddingSet(es.embeddings, es.ids, es.identity, {"gender": g})
    with caplog.at_level(logging.INFO):
        lab = labelled(es, "gender")
    assert "12 of 50 rows have no gender label" in caplog.text
    b = balance(lab, "gender", seed=0)
    _, counts = np.unique(b.gender, return_counts=True)
    assert counts.tolist() == [18, 18]  # 7 female and 5 male rows lost their label
    np.testing.assert_array_equal(balance(lab, "gender", seed=0).ids, b.ids)


def test_bad_inputs():
    es = _es()
    with pytest.raises(ParameterError, match="age"):
        prepare_sets(es, _es(seed=5), "age", None)
    single = es.subset(np.flatnonzero(es.gender == "female"))
    with pytest.raises(ParameterError, match="single value"):
        prepare_sets(single, _es(seed=5), "gender", None)
    with pytest.raises(ParameterError, match="two or more"):
        SimilarityAttack().fit(single)
    with pytest.raises(ParameterError, match="dimension mismatch"):
        prepare_sets(es, _es(d=32, seed=5), "gender", None)
    empty = EmbeddingSet(es.embeddings, es.ids, es.identity, {"gender": np.full(len(es), "")})
    with pytest.raises(ParameterError, match="no row"):
        prepare_sets(empty, es, "gender", None)
    with pytest.raises(ParameterError, match="exceeds"):
        SimilarityAttack(top_n=(1000,)).fit(es).evaluate(_es(seed=5))
    with pytest.raises(ParameterError, match="rule"):
        SimilarityAttack(rules=("median",)).fit(es)
    with pytest.raises(ParameterError, match="does not divide"):
        prepare_sets(es, _es(seed=5), "gender", PEMIU(block_size=48))
