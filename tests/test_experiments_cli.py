"""CLI: list, describe, run errors (exit 2, one line, no traceback), --help texts."""

from __future__ import annotations

import pytest

from facepriv.cli.main import main


def test_list_shows_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("protections:", "attacks:", "models:", "datasets:", "pe_miu", "similarity", "classifier",
                 "reconstruction", "deid", "dlib_resnet", "five_celebrities", "folder"):
        assert word in out, word


def test_list_one_kind(capsys):
    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("attacks:") and "models:" not in out


def test_describe_component(capsys):
    assert main(["describe", "pe_miu"]) == 0
    out = capsys.readouterr().out
    assert "protection pe_miu" in out and "block_size = 32" in out and "reference:" in out
    assert main(["describe", "reconstruction"]) == 0
    out = capsys.readouterr().out
    assert "attack reconstruction" in out and "epochs = 5" in out and "needs the photos" in out


def test_describe_unknown(capsys):
    assert main(["describe", "pe_mu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facepriv: error: no component named 'pe_mu'; known:") and "Traceback" not in err


def test_run_bad_config_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    root = str(tmp_path)
    cfg.write_text(f"dataset: {{name: folder, params: {{root: {root}}}}}\nprotections: [pe_miu]\nattacks: [similarty]\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "attacks[0]: unknown attack 'similarty'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_demo_labels_needs_data(tmp_path, capsys):
    assert main(["demo", "--labels", str(tmp_path / "l.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "--labels needs --data DIR" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["run", "report", "demo", "list", "describe"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as ei:
        main([cmd, "--help"])
    assert ei.value.code == 0
    assert len(capsys.readouterr().out) > 200
