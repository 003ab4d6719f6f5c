"""Score-only attack, second stage: estimated templates decoded into faces and judged (real CelebA faces)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import celeba_rows, dlib_templates

from facepriv.attacks.base import AttackData
from facepriv.attacks.reconstruction.data import PairedData
from facepriv.attacks.reconstruction.runfolder import TrainConfig
from facepriv.attacks.reconstruction.runs import train_decoder_on
from facepriv.errors import ParameterError
from facepriv.registry import create
from facepriv.splits import split_two

pytestmark = pytest.mark.slow

N_IDS, PER_ID = 24, 5


@pytest.fixture(scope="module")
def setting(celeba_dir, tmp_path_factory):
    """dlib templates of 120 CelebA photos (24 people), attacker / victim halves, and a decoder run folder
    trained (two steps: the plumbing is under test, not the decoder) on the attacker's photos only."""
    d = dlib_templates(celeba_dir, celeba_rows(celeba_dir, N_IDS, PER_ID, balance_gender=False))
    es = d["es"]
    att, vic = split_two(es.identity, 0.5, seed=3, strata=es.gender)
    run = tmp_path_factory.mktemp("score_decode") / "decoder"
    cfg = TrainConfig(size=64, epochs=1, batch_size=16, seed=0, test_fraction=0.25)
    train_decoder_on(PairedData(es.subset(att), d["crops"][att]), None, cfg, run, d["model"], max_steps=2)
    return es, att, vic, d["model"], celeba_dir, run


def _data(setting, tmp_path, protection=("unprotected", {})):
    es, att, vic, model, root, _ = setting
    return AttackData(clean=es, attacker=att, victim=vic, protection=create("protection", *protection), model=model,
                      image_root=root, seed=5, work_dir=tmp_path)


def _copy_run(run, tmp_path, **config_changes):
    dst = tmp_path / "run_copy"
    shutil.copytree(run, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(config_changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("protection", [("unprotected", {}), ("pe_miu", {"block_size": 16, "seed": 4242})])
def test_estimates_are_decoded_presented_and_judged(setting, tmp_path, protection):
    es, att, vic, _, _, run = setting
    attack = create("attack", "score_only", {"queries": [4, 16], "decoder": str(run), "judges": ["sface"]})
    out = attack.run(_data(setting, tmp_path, protection))
    m = out.metrics
    rows = out.tables["score-only decoded faces"]["rows"]
    assert [r[0] for r in rows] == [0, 4, 16]
    for k in (0, 4, 16):
        for f in ("0.001", "0.01", "0.1"):
            assert 0.0 <= m[f"decoded_sar_q{k}_fmr{f}"] <= 1.0
            assert m[f"decoded_sar_q{k}_fmr{f}"] <= m[f"decoded_sar_q{k}_fmr0.1"]
    assert 0.0 <= m["decoded_judge_sface_detected"] <= 1.0
    assert m["decoded_judge_sface_fmr0.1"] <= m["decoded_judge_sface_detected"]  # undetected = rejected
    assert m["decoded_judge_sface_q0_fmr0.1"] <= m["decoded_judge_sface_q0_detected"]  # the judges' baseline
    assert [r[:2] for r in out.tables["score-only decoded faces, judges"]["rows"]] == [["sface", 16], ["sface", 0]]
    assert m["decoder"]["models_touched"] == ["dlib_resnet"]
    assert (tmp_path / "score_only" / "decoded.png").stat().st_size > 0
    assert "score_only/decoded.png" in out.images
    # the decoder was trained on attacker photos only: every victim is unseen, none dropped
    assert m["n_victims"] == len(vic)


def test_victims_the_decoder_saw_are_left_out(setting, tmp_path):
    es, att, vic, _, _, run = setting
    victim_people = sorted(set(es.identity[vic].tolist()))
    copy = tmp_path / "seen"
    shutil.copytree(run, copy)
    split = json.loads((copy / "split.json").read_text())
    split["train_identities"] += victim_people[:4]  # the decoder "saw" four victims
    (copy / "split.json").write_text(json.dumps(split))
    out = create("attack", "score_only", {"queries": [4], "decoder": str(copy)}).run(_data(setting, tmp_path))
    assert out.metrics["n_victim_identities"] == len(victim_people) - 4
    assert out.metrics["n_victims"] == int(np.isin(es.identity[vic], victim_people[4:]).sum())
    split["train_identities"] += victim_people[4:-1]  # one unseen person is too few for impostor scores
    (copy / "split.json").write_text(json.dumps(split))
    with pytest.raises(ParameterError, match="at least two people") as exc:
        create("attack", "score_only", {"queries": [4], "decoder": str(copy)}).run(_data(setting, tmp_path))
    assert exc.value.param == "decoder"


@pytest.mark.parametrize("change,message", [
    ({"protection": {"name": "pe_miu", "params": {"block_size": 16}}}, "trained on pe_miu templates"),
    ({"model": "mobilefacenet"}, "decodes mobilefacenet templates"),
    ({"embedding_dim": 512}, "expects 512-d templates"),
])
def test_a_decoder_that_does_not_fit_is_refused(setting, tmp_path, change, message):
    run = _copy_run(setting[5], tmp_path, **change)
    with pytest.raises(ParameterError, match=message) as exc:
        create("attack", "score_only", {"queries": [4], "decoder": str(run)}).run(_data(setting, tmp_path))
    assert exc.value.param == "decoder"


def test_a_judge_the_system_or_decoder_used_is_refused(setting, tmp_path):
    attack = create("attack", "score_only", {"queries": [4], "decoder": str(setting[5]), "judges": ["dlib_resnet"]})
    with pytest.raises(ParameterError, match="never saw") as exc:
        attack.run(_data(setting, tmp_path))
    assert exc.value.param == "judges"


@pytest.mark.parametrize("params,param,message", [
    ({"judges": ["sface"]}, "judges", "set decoder"),
    ({"decoder": "no/such/run"}, "decoder", "not a run folder"),
    ({"decoder": "RUN", "judges": "sface"}, "judges", "list of recognition models"),
    ({"decoder": 3}, "decoder", "path of a reconstruction run folder"),
])
def test_bad_decode_parameters_name_the_parameter(params, param, message, setting):
    params = {k: str(setting[5]) if v == "RUN" else v for k, v in params.items()}
    with pytest.raises(ParameterError, match=message) as exc:
        create("attack", "score_only", params).validate_params()
    assert exc.value.param == param


def test_unknown_judge_is_named(setting):
    with pytest.raises(ParameterError, match="no_such_model") as exc:
        create("attack", "score_only", {"decoder": str(setting[5]), "judges": ["no_such_model"]}).validate_params()
    assert exc.value.param == "judges"
