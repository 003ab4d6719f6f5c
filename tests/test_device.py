"""The ``device`` option of ``facepriv run``: resolved before any work, carried into every cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facepriv.cli.main import main
from facepriv.experiments.config import ConfigError, load_config
from facepriv.experiments.runner import Runner

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _no_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


def test_run_device_cuda_without_cuda_is_one_line_error(tmp_path, capsys):
    _no_cuda()
    out = tmp_path / "run"
    rc = main(["run", str(DEMO), "--out", str(out), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("facepriv: error: --device: cuda asked for")
    assert not out.exists()  # nothing written


def test_run_device_malformed_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", str(DEMO), "--out", str(out), "--device", "gpu0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--device" in err and "gpu0" in err
    assert not out.exists()


def test_yaml_device_key(tmp_path):
    _no_cuda()
    text = DEMO.read_text(encoding="utf-8")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(text + "\ndevice: cuda:1\n", encoding="utf-8")
    cfg = load_config(cfg_path)
    assert cfg.device == "cuda:1"
    assert "device" not in cfg.as_dict()  # a run-time choice: resumable on another device
    with pytest.raises(Exception, match="device") as info:
        Runner(cfg, tmp_path / "run")
    assert getattr(info.value, "param", None) == "device"
    assert not (tmp_path / "run").exists()
    assert Runner(cfg, tmp_path / "run", device="cpu").device == "cpu"  # --device wins over the YAML
    cfg_path.write_text(text + "\ndevice: tpu\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="device"):
        load_config(cfg_path)


def test_device_reaches_every_cell(tmp_path):
    cfg = load_config(DEMO)
    runner = Runner(cfg, tmp_path / "run", device="cpu")
    pspec = cfg.protections[0]
    idx = np.arange(2)
    data = runner._data("m", None, None, idx, idx, pspec, "similarity", None)
    assert data.device == "cpu"
    assert Runner(cfg, tmp_path / "run", device="auto").device in ("cpu", "cuda:0")
