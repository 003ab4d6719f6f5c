"""Reports: Markdown + self-contained HTML, and the HTML rendered by headless Chromium (screenshot)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from facepriv.errors import InputFileError
from facepriv.experiments.report import write_report
from facepriv.experiments.runner import run_experiment

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(celeba_dir, tmp_path_factory):
    from test_experiments_run import small_config

    out = tmp_path_factory.mktemp("rep") / "run"
    return run_experiment(small_config(celeba_dir, seed=1), out, report=True)


def test_report_files(run_dir):
    md = (run_dir / "report.md").read_text()
    assert "## Privacy-utility matrix — dlib_resnet" in md
    assert re.search(r"\| pe_miu\(block_size=16\) \| \d+\.\d% \[\d+\.\d, \d+\.\d\] \|", md), md
    assert "EER [interval]" in md and "FNMR@FMR1%" in md and "k-fold accuracy" in md
    assert "report_files/dlib_resnet-det.png" in md
    assert "accuracy_vs_n" in md or "accuracy vs. number of fused scores" in md
    assert "```yaml" in md
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # DET + accuracy-vs-n, embedded
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    for png in (run_dir / "report_files").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rewrite_is_stable(run_dir):
    before = (run_dir / "report.md").read_text()
    write_report(run_dir)
    assert (run_dir / "report.md").read_text() == before


def test_report_needs_a_finished_run(tmp_path):
    with pytest.raises(InputFileError, match="no metrics.json"):
        write_report(tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium')")
def test_html_renders_in_headless_chromium(run_dir, tmp_path):
    from PIL import Image

    shot = tmp_path / "out.png"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2000",
               (run_dir / "report.html").resolve().as_uri()]
        subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (2000, 1280)
    non_white = (img.min(axis=2) < 240).mean()
    assert non_white > 0.03, f"screenshot is nearly blank ({100 * non_white:.2f}% non-white pixels)"
    # the plots are there: a good share of coloured (non-grey) pixels from the embedded PNGs
    colour = (img.max(axis=2) - img.min(axis=2) > 60).mean()
    assert colour > 0.001, f"no coloured plot pixels in the screenshot ({100 * colour:.3f}%)"
