"""``facepriv advface``: bad input ends in exit 2 and one ``facepriv ...: error:`` line naming the flag,
with no traceback and nothing written (issue 14 items 7-9), on real feature maps and decoder runs."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from facepriv.cli.main import main

ERROR_LINE = re.compile(r"^facepriv(?: [\w-]+)*: error: ")


@pytest.fixture(scope="module")
def assets(celeba_dir, tmp_path_factory) -> Path:
    """16 real photos of 8 people, their feature maps and 1-epoch shadow / attacker decoder runs."""
    root = tmp_path_factory.mktemp("advface-cli")
    with open(celeba_dir / "labels.csv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])
    by: dict[str, list[str]] = {}
    for r in rows:
        by.setdefault(r["identity"], []).append(r["image"])
    people = [i for i in sorted(by) if len(by[i]) >= 4][:8]
    data = root / "data"
    with_ids = [(im, i) for i in people for im in by[i][:2]]
    for im, _ in with_ids:
        (data / im).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(celeba_dir / im, data / im)
    with open(data / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "identity"), *with_ids])
    f_npz = str(root / "F.npz")
    assert main(["-q", "advface", "extract", "--images", str(data), "--labels", str(data / "labels.csv"), "--out", f_npz]) == 0
    for role, name in (("shadow", "S"), ("attacker", "A")):
        assert main(["-q", "advface", "train", "--features", f_npz, "--images", str(data), "--role", role, "--epochs", "1",
                     "--size", "16", "--batch-size", "4", "--out", str(root / name)]) == 0
    return root


@pytest.fixture
def case(assets, tmp_path, monkeypatch) -> Path:
    work = tmp_path / "w"
    shutil.copytree(assets, work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("FACEPRIV_NO_PROGRESS", "1")
    return work


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = Path(d, f)
            out[str(p.relative_to(root))] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        out[str(Path(d).relative_to(root)) + "/"] = ()
    return out


def _refused(argv: list[str], mention: str, root: Path, capsys) -> str:
    before = _snapshot(root)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing a flag
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert code == 2, err
    assert lines and ERROR_LINE.match(lines[-1]) and sum(bool(ERROR_LINE.match(ln)) for ln in lines) == 1, err
    assert re.search(mention, lines[-1]), lines[-1]
    assert _snapshot(root) == before, "files were written, changed or removed"
    return lines[-1]


TRAIN = "advface train --features F.npz --images data --role shadow --epochs 1 --out o/run"
EVAL = "advface eval --features F.npz --images data --shadow resrec=S --attacker resrec=A --out o/eval"
PROTECT = "advface protect --features F.npz --method random_noise --out o/P.npz"
ROWS = [
    (TRAIN, ["--size", "0"], r"--size"), (TRAIN, ["--size", "-64"], r"--size"),
    (TRAIN, ["--batch-size", "0"], r"--batch-size"), (TRAIN, ["--lr", "-1"], r"--lr"), (TRAIN, ["--lr", "nan"], r"--lr"),
    (TRAIN.replace(" --epochs 1", ""), ["--epochs", "0"], r"--epochs"), (TRAIN, ["--max-images", "-3"], r"--max-images"),
    (TRAIN, ["--threads", "0"], r"--threads"), (TRAIN, ["--threads", "-1"], r"--threads"),
    (TRAIN, ["--seed", "-1"], r"--seed"), (TRAIN, ["--split-seed", "-13579246"], r"--split-seed"),
    (TRAIN, ["--arch", "vgg"], r"--arch"),
    (EVAL, ["--max-eval", "-4"], r"--max-eval"), (EVAL, ["--max-eval", "0"], r"--max-eval"),
    (EVAL, ["--offline-epochs", "-1"], r"--offline-epochs"), (EVAL, ["--sweep", ","], r"--sweep"),
    (EVAL, ["--sweep", "0.1,-0.2"], r"--sweep"), (EVAL, ["--sweep", "x"], r"--sweep"), (EVAL, ["--seed", "-1"], r"--seed"),
    (EVAL, ["--eps", "-0.2"], r"--eps"), (EVAL, ["--steps", "0"], r"--steps"), (EVAL, ["--parts", "bogus"], r"--parts"),
    (EVAL, ["--main-arch", "vgg"], r"--main-arch"),
    (PROTECT, ["--seed", "-1"], r"--seed"), (PROTECT, ["--eps", "-0.2"], r"--eps"), (PROTECT, ["--alpha", "0"], r"--alpha"),
    (PROTECT.replace("random_noise", "laplace_dp"), ["--alpha", "0.1"], r"--alpha"),
    (PROTECT.replace("random_noise", "advface"), [], r"--shadow"),
]


@pytest.mark.parametrize("base, extra, mention", ROWS, ids=[f"{b.split()[1]}{' '.join(e)}" for b, e, _ in ROWS])
def test_bad_flag_is_refused_before_any_work(base, extra, mention, case, capsys):
    _refused([*base.split(), *extra], mention, case, capsys)


def test_outputs_that_exist_or_equal_an_input_are_refused(case, capsys):
    (case / "notes.txt").write_text("the user's file")
    _refused(TRAIN.replace("o/run", "notes.txt").split(), r"notes\.txt", case, capsys)
    _refused(EVAL.replace("o/eval", "notes.txt").split(), r"notes\.txt", case, capsys)
    # a folder holding someone else's files is not a decoder run: refused without --overwrite
    (case / "mine").mkdir()
    (case / "mine" / "report.md").write_text("keep me")
    _refused(TRAIN.replace("o/run", "mine").split(), r"mine: already exists", case, capsys)
    # a finished run is neither retrained nor resumed without being asked
    _refused(TRAIN.replace("o/run", "S").split(), r"S: already exists", case, capsys)
    # protect: the output is the input file; refused even with --overwrite (it would destroy the input)
    _refused(PROTECT.replace("o/P.npz", "F.npz").split() + ["--overwrite"], r"--out.*F\.npz", case, capsys)
    _refused(PROTECT.replace("o/P.npz", "./data/../F.npz").split() + ["--overwrite"], r"--out", case, capsys)
    # an evaluation folder holding any of eval's outputs is not overwritten
    (case / "ev").mkdir()
    (case / "ev" / "reconstructions.png").write_bytes(b"\x89PNG user figure")
    _refused(EVAL.replace("o/eval", "ev").split(), r"reconstructions\.png: already exists", case, capsys)


def test_yaml_advface_eps_negative_is_refused_before_any_work(case, capsys):
    cfg = case / "cfg.yaml"
    cfg.write_text(
        "name: bad\nseed: 0\n"
        f"dataset: {{name: folder, params: {{root: {case / 'data'}, labels: {case / 'data' / 'labels.csv'}}}}}\n"
        "models: [dlib_resnet]\nprotections: [unprotected]\n"
        "attacks: [{name: advface_table1, params: {eps: -0.2, epochs: 1}}]\nmetrics: [eer]\n")
    line = _refused(["run", str(cfg), "--out", str(case / "o" / "run")], r"cfg\.yaml.*\beps\b", case, capsys)
    assert "--eps" not in line  # a YAML user reads the entry, not a flag
