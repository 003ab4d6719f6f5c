"""Score-only attack: the oracle interface, the ridge estimate, the registered ``score_only`` attack."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import celeba_rows, dlib_templates

from facepriv import testing
from facepriv.attacks.base import AttackData
from facepriv.attacks.score_only.estimate import RidgeMap, ScoreOnlyAttacker, unit_rows
from facepriv.attacks.score_only.oracle import ScoreOracle, ScoringSystem
from facepriv.errors import ParameterError
from facepriv.protections.base import CosineComparator
from facepriv.registry import create
from facepriv.splits import split_two

N_IDS, PER_ID = 40, 5


# ----------------------------------------------------------------------------------- maths (synthetic)
def test_ridge_map_recovers_directions_from_cosine_scores():
    """Cosine scores against >= D queries determine a template's direction: the map learns it."""
    rng = np.random.default_rng(0)
    d, q = 16, 24
    queries = unit_rows(rng.normal(size=(q, d)))
    own, victims = unit_rows(rng.normal(size=(400, d))), unit_rows(rng.normal(size=(50, d)))
    system = ScoringSystem(CosineComparator(), queries)
    est = ScoreOnlyAttacker(own, alpha=1e-6).estimate(system.enrol(own), system.enrol(victims), [q])[q]
    assert np.einsum("ij,ij->i", est, victims).min() > 0.999
    # with too few queries the direction is under-determined: the same map is clearly worse
    few = ScoreOnlyAttacker(own, alpha=1e-6).estimate(system.enrol(own), system.enrol(victims), [4])[4]
    assert np.einsum("ij,ij->i", few, victims).mean() < 0.9


def test_ridge_map_rejects_unpaired_data():
    with pytest.raises(ParameterError, match="paired rows"):
        RidgeMap().fit(np.zeros((3, 2)), np.zeros((4, 5)))


def test_oracle_counts_queries_and_refuses_bad_indices():
    system = ScoringSystem(CosineComparator(), np.eye(3))
    (o,) = system.enrol(np.array([[1.0, 2.0, 2.0]]))
    assert o.score(1) == pytest.approx(2 / 3)
    np.testing.assert_allclose(o.scores([0, 2]), [1 / 3, 2 / 3])
    assert o.queries == 3
    for bad in ([3], [-1], [0.5]):
        with pytest.raises(ParameterError, match="query indices"):
            o.scores(bad)
    assert o.queries == 3  # a refused query is not counted


def test_mean_template_baseline_uses_no_query():
    rng = np.random.default_rng(1)
    own = rng.normal(size=(30, 8))
    system = ScoringSystem(CosineComparator(), unit_rows(rng.normal(size=(5, 8))))
    vic = system.enrol(unit_rows(rng.normal(size=(4, 8))))
    est = ScoreOnlyAttacker(own).estimate(system.enrol(own), vic, [0])[0]
    np.testing.assert_allclose(est, np.repeat(unit_rows(unit_rows(own).mean(0, keepdims=True)), 4, axis=0))
    assert [o.queries for o in vic] == [0, 0, 0, 0]


# ----------------------------------------------------------------------------------- real faces
@pytest.fixture(scope="module")
def real(celeba_dir):
    """dlib templates of 200 real CelebA photos (40 people), split into attacker / victim halves."""
    es = dlib_templates(celeba_dir, celeba_rows(celeba_dir, N_IDS, PER_ID, balance_gender=False))["es"]
    att, vic = split_two(es.identity, 0.5, seed=3, strata=es.gender)
    return es, att, vic


PROTECTIONS = (("unprotected", {}), ("pe_miu", {"block_size": 16, "seed": 98765}))


@pytest.mark.parametrize("pname,pparams", PROTECTIONS)
def test_score_only_keeps_the_attack_contract(real, pname, pparams):
    es, att, vic = real
    data = AttackData(clean=es, attacker=att, victim=vic, protection=create("protection", pname, pparams), seed=5)
    out = testing.check_attack(create("attack", "score_only", {"queries": [4, 16, 48]}), data)
    assert 0.0 <= out.headline["value"] <= 1.0
    rows = out.tables["score-only SAR vs queries"]["rows"]
    assert [r[0] for r in rows] == [0, 4, 16, 48]
    assert out.curves["sar_vs_queries"]["x"] == [4, 16, 48]


def test_scores_tell_more_than_the_mean_template(real):
    """On real faces, 48 scores lift the estimate well above the no-query baseline (unprotected)."""
    es, att, vic = real
    data = AttackData(clean=es, attacker=att, victim=vic, protection=create("protection", "unprotected"), seed=5)
    out = create("attack", "score_only", {"queries": [48]}).run(data)
    rows = out.tables["score-only SAR vs queries"]["rows"]
    assert rows[1][1] > rows[0][1] + 0.01  # mean score of the estimate vs the stored template
    assert out.metrics["sar_q48_fmr0.01"] > out.metrics["sar_q0_fmr0.01"]


def test_attacker_receives_oracles_and_nothing_of_the_victims(real, monkeypatch):
    """The attacker's code path gets only ScoreOracle objects and its own embeddings: no victim template
    (clean or protected) is reachable from its arguments, not even through an oracle's closure."""
    es, att, vic = real
    prot = create("protection", "pe_miu", {"block_size": 16, "seed": 98765})
    seen: dict = {}
    real_estimate = ScoreOnlyAttacker.estimate

    def spy(self, own, victims, counts):
        seen.update(self=self, own=list(own), victims=list(victims), counts=list(counts))
        return real_estimate(self, own, victims, counts)

    monkeypatch.setattr(ScoreOnlyAttacker, "estimate", spy)
    data = AttackData(clean=es, attacker=att, victim=vic, protection=prot, seed=5)
    create("attack", "score_only", {"queries": [8, 32]}).run(data)
    assert all(type(o) is ScoreOracle for o in seen["own"] + seen["victims"])
    assert all(o.queries == 32 for o in seen["victims"])
    assert set(vars(seen["self"])) == {"own_embeddings", "alpha"}
    # the attacker's own embeddings are templates of the attacker's photos only
    own_emb = seen["self"].own_embeddings
    att_set = {tuple(r) for r in es.embeddings[att]}
    assert all(tuple(r) in att_set for r in own_emb)
    # no array reachable from an oracle has the width of a template
    for o in seen["own"] + seen["victims"]:
        cells = [c.cell_contents for c in (o._read.__closure__ or ())]
        arrays = [c for c in cells if isinstance(c, np.ndarray)]
        assert arrays and all(a.ndim == 1 and a.shape[0] == o.n_available for a in arrays)
        assert not any(isinstance(c, np.ndarray) and c.ndim == 2 for c in cells)


@pytest.mark.parametrize("params,param", [
    ({"queries": []}, "queries"), ({"queries": [0, 4]}, "queries"), ({"queries": "8"}, "queries"),
    ({"alpha": 0}, "alpha"), ({"alpha": float("nan")}, "alpha"), ({"max_train": 1}, "max_train"),
    ({"max_victims": 0}, "max_victims"), ({"headline_fmr": 0.5}, "headline_fmr"), ({"seed": -1}, "seed"),
])
def test_bad_parameters_name_the_parameter(params, param):
    with pytest.raises(ParameterError) as exc:
        create("attack", "score_only", params).validate_params()
    assert exc.value.param == param


def test_too_few_attacker_photos_for_the_queries(real):
    es, att, vic = real
    data = AttackData(clean=es, attacker=att, victim=vic, protection=create("protection", "unprotected"), seed=5)
    with pytest.raises(ParameterError, match="too few") as exc:
        create("attack", "score_only", {"queries": [len(att)]}).run(data)
    assert exc.value.param == "queries"


# ----------------------------------------------------------------------------------- score files + CLI
def _write_scores(path: Path, names: list[str], queries: list[str], scores: np.ndarray, drop: int = -1) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["template", "query", "score"])
        for i, t in enumerate(names):
            for j, q in enumerate(queries):
                if (i, j) != (drop, 0):
                    w.writerow([t, q, f"{scores[i, j]:.6f}"])
    return path


@pytest.fixture
def score_files(real, tmp_path):
    """Score files as a real system would give them: cosine of the attacker's 48 query photos with the
    stored templates of its other photos (own) and of the victims, plus its own embeddings file."""
    from facepriv.embeddings import save_embeddings

    es, att, vic = real
    q, own = att[:48], att[48:]
    names = [f"q{i}" for i in range(len(q))]
    cos = CosineComparator()
    own_names = es.ids[own].tolist()
    files = {
        "own_scores": _write_scores(tmp_path / "own.csv", own_names, names, cos.pairwise(es.embeddings[own], es.embeddings[q])),
        "victim_scores": _write_scores(tmp_path / "vic.csv", es.ids[vic].tolist(), names,
                                       cos.pairwise(es.embeddings[vic], es.embeddings[q])),
        "own": save_embeddings(es.subset(own), tmp_path / "own.npz"),
    }
    return files, es.embeddings[vic], es.embeddings[own]


def _argv(files: dict, out: Path, *extra: str) -> list[str]:
    return ["score-attack", "--own-scores", str(files["own_scores"]), "--own", str(files["own"]),
            "--victim-scores", str(files["victim_scores"]), "--out", str(out), *extra]


def test_cli_estimates_victims_from_score_files(score_files, tmp_path):
    from facepriv.cli.main import main
    from facepriv.embeddings import load_embeddings

    files, victims, own = score_files
    assert main(_argv(files, tmp_path / "est.npz")) == 0
    est = load_embeddings(tmp_path / "est.npz")
    assert est.embeddings.shape == victims.shape
    got = np.einsum("ij,ij->i", unit_rows(est.embeddings), unit_rows(victims))
    mean_face = unit_rows(unit_rows(own).mean(0, keepdims=True))[0]
    baseline = unit_rows(victims) @ mean_face
    assert got.mean() > baseline.mean() + 0.01  # the scores say more than the attacker's mean face
    assert main(_argv(files, tmp_path / "est.npz")) == 2  # no overwrite without --overwrite
    assert main(_argv(files, tmp_path / "est.npz", "--overwrite", "--queries", "8")) == 0


@pytest.mark.parametrize("case", ["victim_missing_probe", "own_missing_probe", "unknown_query", "nan", "header",
                                  "own_embeddings_lack", "alpha", "queries", "out_is_input"])
def test_cli_bad_input_one_line_exit_2_nothing_written(score_files, tmp_path, capsys, case):
    from facepriv.cli.main import main

    files, _, _ = score_files
    files = dict(files)
    out, extra = tmp_path / "est.npz", []
    text = {"own_scores": files["own_scores"].read_text(), "victim_scores": files["victim_scores"].read_text()}
    if case in ("victim_missing_probe", "own_missing_probe"):
        key = "victim_scores" if case.startswith("victim") else "own_scores"
        lines = text[key].splitlines()
        files[key] = tmp_path / "bad.csv"
        files[key].write_text("\n".join(lines[:5] + lines[6:]) + "\n")
        mention = r"bad\.csv: template .* no score for 1 of the 48 queries \(missing probes"
    elif case == "unknown_query":
        files["victim_scores"] = tmp_path / "bad.csv"
        files["victim_scores"].write_text(text["victim_scores"] + "someone,q999,0.5\n")
        mention = r"bad\.csv: .*q999.*not among"
    elif case == "nan":
        files["own_scores"] = tmp_path / "bad.csv"
        files["own_scores"].write_text(text["own_scores"].replace(",", ",nan#", 1).replace("nan#", "", 1) + "x,q0,nan\n")
        mention = r"bad\.csv: line \d+"
    elif case == "header":
        files["own_scores"] = tmp_path / "bad.csv"
        files["own_scores"].write_text("a,b,c\n1,2,3\n")
        mention = r"bad\.csv: not a score file"
    elif case == "own_embeddings_lack":
        files["own_scores"] = tmp_path / "bad.csv"
        files["own_scores"].write_text(text["own_scores"].replace("\n", "\nstranger,q0,0.1\n", 1))
        mention = r"bad\.csv|own\.npz"
    elif case == "alpha":
        extra, mention = ["--alpha", "-1"], r"--alpha"
    elif case == "queries":
        extra, mention = ["--queries", "49"], r"--queries"
    else:
        out, mention = files["own"], r"--out .*own\.npz is the input"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(_argv(files, out, *extra)) == 2
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("facepriv: error: ")
    import re

    assert re.search(mention, lines[0]), lines[0]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == before
