"""Plugins from outside facepriv: the example package via its entry point, a module:Class reference,
broken plugins reported in one line without hiding the built-ins; real faces end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "facepriv-iom"


def _cli(args: list[str], pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath), "FACEPRIV_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "facepriv.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin installed (offline, no dependencies) into a temporary site folder."""
    site = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"pip could not install the example plugin: {r.stderr[-2000:]}")
    return site


def _matrix(celeba_dir: Path, protections: list) -> dict:
    return {
        "name": "plugin",
        "seed": 0,
        "dataset": {"name": "folder", "params": {"root": str(celeba_dir), "labels": str(celeba_dir / "labels.csv")}},
        "subset": {"max_identities": 8, "max_per_identity": 5, "require_gender": True, "balance_gender": True},
        "models": ["dlib_resnet"],
        "protections": protections,
        "attacks": [{"name": "similarity", "params": {"top_n": [1, 3, 5]}},
                    {"name": "classifier", "params": {"classifier": "knn"}}],
        "metrics": ["eer", "kfold_accuracy"],
    }


def _all_output_text(run: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in run.rglob("*")
                     if p.is_file() and "private" not in p.relative_to(run).parts)


def test_entry_point_plugin_lists_describes_and_runs_in_the_matrix(plugin_site, celeba_dir, tmp_path):
    r = _cli(["list", "protections"], [plugin_site], tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("iom_hashing"))
    assert "plugin facepriv_iom.protection:IoMHashing" in line
    assert "pe_miu" in r.stdout  # built-ins still there
    r = _cli(["describe", "iom_hashing"], [plugin_site], tmp_path)
    assert r.returncode == 0 and "key = 0  [secret" in r.stdout and "Number of hash functions" in r.stdout

    cfg = tmp_path / "m.yaml"
    cfg.write_text(yaml.safe_dump(_matrix(celeba_dir, ["unprotected", {"name": "iom_hashing", "label": "iom",
                                                                      "params": {"m": 128, "q": 8, "key": 7312094}}])))
    r = _cli(["-q", "run", str(cfg), "--out", str(tmp_path / "run")], [plugin_site], tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    iom = m["models"]["dlib_resnet"]["protections"]["iom"]
    assert iom["params"] == {"m": 128, "q": 8, "key": "<secret>"}
    assert iom["utility"]["status"] == "ok" and iom["utility"]["metrics"]["eer"] < 0.3  # IoM keeps identity
    for cell in iom["attacks"].values():
        assert cell["status"] == "ok" and 0.0 <= cell["headline"]["value"] <= 1.0
    assert "7312094" not in _all_output_text(tmp_path / "run")  # the key is never written


def test_module_reference_runs_without_installing(celeba_dir, tmp_path):
    """A protection in the user's own module, named package.module:Class in the YAML."""
    mod = tmp_path / "usercode"
    mod.mkdir()
    (mod / "my_protection.py").write_text(textwrap.dedent('''
        import numpy as np
        from facepriv.errors import ParameterError
        from facepriv.protections.base import TemplateProtection

        class SignedRandomProjection(TemplateProtection):
            """Keyed random projection to k dimensions (Johnson-Lindenstrauss), cosine comparator.

            Parameters
            ----------
            k : int
                Output dimension.
            key : int
                Seeds the projection matrix (secret).
            """

            summary = "keyed random projection"
            secret_params = ("key",)
            threat_model = "key_secret"

            def __init__(self, k: int = 64, key: int = 0):
                self.k = k
                self.key = key

            def transform(self, x):
                x = np.asarray(x, dtype=np.float32)
                if x.ndim != 2:
                    raise ParameterError("templates must be 2-d")
                w = np.random.default_rng(self.key).standard_normal((x.shape[1], self.k)).astype(np.float32)
                return x @ w
    '''))
    cfg = tmp_path / "m.yaml"
    cfg.write_text(yaml.safe_dump(_matrix(celeba_dir, [{"name": "my_protection:SignedRandomProjection", "label": "srp",
                                                        "params": {"k": 64}}])))
    r = _cli(["-q", "run", str(cfg), "--out", str(tmp_path / "run")], [mod], tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    srp = m["models"]["dlib_resnet"]["protections"]["srp"]
    assert srp["params"] == {"k": 64}  # the key was not given: drawn and kept private
    assert srp["utility"]["metrics"]["eer"] < 0.3
    assert all(c["status"] == "ok" for c in srp["attacks"].values())
    keys = json.loads((tmp_path / "run" / "private" / "keys.json").read_text())
    assert str(keys["srp"]["key"]) not in _all_output_text(tmp_path / "run")
    r = _cli(["describe", "my_protection:SignedRandomProjection"], [mod], tmp_path)
    assert r.returncode == 0 and "Seeds the projection matrix" in r.stdout


def _fake_dist(site: Path, name: str, entry: str) -> None:
    d = site / f"{name}-0.1.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (d / "entry_points.txt").write_text(f"[facepriv.protections]\n{entry}\n")


def test_broken_plugins_are_reported_in_one_line_and_hide_nothing(celeba_dir, tmp_path):
    site = tmp_path / "site"
    _fake_dist(site, "broken_import", "ghost = no_such_module_anywhere:Ghost")
    (site / "not_a_protection.py").write_text("class Thing:\n    pass\n")
    _fake_dist(site, "wrong_base", "thing = not_a_protection:Thing")
    _fake_dist(site, "name_thief", "pe_miu = not_a_protection:Thing")
    r = _cli(["list", "protections"], [site], tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [ln.strip() for ln in r.stdout.splitlines() if "warning:" in ln]
    assert len(warnings) == 3
    assert any("entry point ghost = no_such_module_anywhere:Ghost" in w and "import failed" in w for w in warnings)
    assert any("thing = not_a_protection:Thing" in w and "does not derive from" in w for w in warnings)
    assert any("pe_miu = not_a_protection:Thing" in w and "taken by" in w for w in warnings)
    assert "PE-MIU" in r.stdout and "unprotected" in r.stdout  # the built-ins are all there

    cfg = tmp_path / "m.yaml"
    cfg.write_text(yaml.safe_dump(_matrix(celeba_dir, ["ghost"])))
    r = _cli(["-q", "run", str(cfg), "--out", str(tmp_path / "run")], [site], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("facepriv: error:") and "protections[0]" in last and "no_such_module_anywhere" in last
    assert not (tmp_path / "run").exists()  # refused before any work
    r = _cli(["describe", "no_module_here:Nope"], [site], tmp_path)
    assert r.returncode == 2 and "no component named" in r.stderr
