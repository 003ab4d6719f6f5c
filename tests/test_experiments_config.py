"""Experiment configs: validation errors name the entry and the allowed values; registry round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facepriv.errors import FacePrivError, ParameterError
from facepriv.experiments.config import ConfigError, load_config, parse_config, resolve
from facepriv.experiments.demo import DEMO_CONFIG
from facepriv.registry import KINDS, available, create

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **over) -> Path:
    data = {
        "name": "t",
        "dataset": {"name": "folder", "params": {"root": str(tmp_path)}},
        "models": ["dlib_resnet"],
        "protections": ["unprotected", {"name": "pe_miu", "params": {"block_size": 16}}],
        "attacks": ["similarity"],
    }
    data.update(over)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_valid_config_resolves_defaults(tmp_path):
    cfg = load_config(_cfg(tmp_path))
    pe = cfg.protections[1]
    assert pe.params["block_size"] == 16 and "moved_blocks" in pe.params
    # a key (pe_miu's seed) is never derived from the public master seed: the runner draws it
    assert "seed" not in pe.params
    assert cfg.protections[0].params["seed"] == 1000 and cfg.attacks[0].params["seed"] == 2000  # public seeds
    assert cfg.attacks[0].params["attribute"] == "gender"
    assert cfg.metrics == ("eer", "fnmr_at_fmr1", "kfold_accuracy")


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"protections": ["unprotected", "pe_mu"]}, "protections[1]: unknown protection 'pe_mu'; available:"),
        ({"protections": [{"name": "pe_miu", "params": {"blocksize": 16}}]},
         "protections[0]: protection 'pe_miu': unknown parameter(s) blocksize; allowed: block_size, moved_blocks, seed"),
        ({"protections": [{"name": "pe_miu", "params": {"block_size": -3}}]}, "block_size must be a positive integer"),
        ({"attacks": ["simlarity"]}, "attacks[0]: unknown attack 'simlarity'; available:"),
        ({"attacks": [{"name": "similarity", "params": {"fusion": "max"}}]}, "unknown parameter(s) fusion; allowed: attribute"),
        ({"attacks": [{"name": "similarity", "params": {"rules": ["median"]}}]}, "unknown fusion rule(s)"),
        ({"models": ["resnet50"]}, "models[0]: unknown model 'resnet50'; available:"),
        ({"metrics": ["eer", "accuracy"]}, "unknown metric(s) accuracy; allowed: eer, fnmr_at_fmr1, kfold_accuracy"),
        ({"seed": -1}, "seed: must be an integer from 0 to"),
        ({"subset": {"max_ids": 3}}, "subset: unknown key(s) max_ids"),
        ({"subset": {"require_gender": "yes"}}, "subset.require_gender: must be true or false"),
        ({"split": {"attacker_fraction": 1.5}}, "split.attacker_fraction: must be a number in [0.1, 0.9]"),
        ({"protections": ["unprotected", "unprotected"]}, "duplicate entries unprotected; give them distinct 'label's"),
        ({"protections": [{"name": "pe_miu", "param": {}}]}, "unknown key(s) param; allowed: name, params, label"),
        ({"protections": []}, "protections: must not be empty"),
        ({"colour": "red"}, "top level: unknown key(s) colour"),
    ],
)
def test_config_errors_name_entry_and_choices(tmp_path, over, needle):
    with pytest.raises(ConfigError) as ei:
        load_config(_cfg(tmp_path, **over))
    msg = str(ei.value)
    assert needle in msg, msg
    assert str(tmp_path / "c.yaml") in msg


def test_missing_dataset_folder_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset: dataset 'folder': root .* is not a folder"):
        load_config(_cfg(tmp_path, dataset={"name": "folder", "params": {"root": str(tmp_path / "nope")}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(FacePrivError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(FacePrivError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_demo_yaml_matches_builtin_demo():
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    assert raw == DEMO_CONFIG


#: shipped configs that need an artifact the user makes first (named in the config's comments)
NEEDS_ARTIFACT = {"score_only_decoded.yaml": ("runs/recon/unprot64", "runs/recon/unprot64_e21")}


def test_every_shipped_config_validates(celeba_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # paper configs name ../shared/data relative to the repository root
    for p in sorted((REPO / "configs").glob("*.yaml")):
        missing = [n for n in NEEDS_ARTIFACT.get(p.name, ()) if not (REPO / n).exists()]
        if missing:  # refused with a line naming the (first) missing run folder
            with pytest.raises(FacePrivError, match=f"decoder: {missing[0]} is not a run folder"):
                load_config(p)
            continue
        cfg = load_config(p)
        assert cfg.protections and cfg.dataset.name


# Parameters for components whose constructor has required arguments.
def _required_params(kind: str, name: str, tmp_path: Path) -> dict:
    from facepriv.embeddings import EmbeddingSet, save_embeddings

    if kind == "dataset" and name in ("folder", "lfw"):
        return {"root": str(tmp_path)}
    if kind == "dataset" and name == "embeddings":
        import numpy as np

        p = tmp_path / "e.npz"
        if not p.exists():
            save_embeddings(EmbeddingSet(np.eye(2, dtype=np.float32), np.array(["a", "b"]), np.array(["x", "y"])), p)
        return {"path": str(p)}
    if kind == "protection" and name == "advface":
        return {"shadow": str(tmp_path)}
    if kind == "model" and name == "onnx_file":
        return None  # needs a real ONNX file; covered by the models tests
    return {}


def test_registry_round_trip_every_component(tmp_path):
    """{name, params} -> component -> get_params() -> component -> same params, for every kind."""
    checked = 0
    for kind in KINDS:
        for name, cls in available(kind).items():
            params = _required_params(kind, name, tmp_path)
            if params is None:
                continue
            comp = create(kind, name, params)
            got = comp.get_params()
            assert set(got) == set(cls.param_names())
            again = create(kind, name, got)
            assert again.get_params() == got, (kind, name)
            assert type(comp.clone()) is cls
            checked += 1
    assert checked >= 8


def test_every_attack_resolves_and_describes():
    from facepriv.registry import describe

    for name, cls in available("attack").items():
        d = describe("attack", name)
        assert d["name"] == name and set(d["params"]) == set(cls.param_names())
        assert all(p["meaning"] for p in d["params"].values()), (name, d["params"])  # every parameter documented
        params = create("attack", name, {}).get_params()
        assert create("attack", name, params).get_params() == params
    with pytest.raises(ParameterError, match="allowed: attribute"):
        create("attack", "similarity", {"fusion": "max"})


def test_parse_config_rejects_non_mapping():
    with pytest.raises(ConfigError, match="a config must be a YAML mapping"):
        parse_config(["a"], "x.yaml")
    cfg = resolve(parse_config(DEMO_CONFIG, "demo"))
    assert [p.label for p in cfg.protections] == ["unprotected", "pe_miu(block_size=16)", "pe_miu(block_size=32)"]
