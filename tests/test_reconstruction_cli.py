"""``facepriv reconstruct`` on real faces: keys, outputs never replaced, bad input refused before any work."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import numpy as np
import pytest

from facepriv.cli.main import main
from facepriv.embeddings import EmbeddingSet, save_embeddings

N_IDS, PER_ID = 8, 4
FAST = ["--size", "64", "--epochs", "1", "--batch-size", "8", "--test-fraction", "0.25", "--threads", "1"]
KEY = "24681357"


@pytest.fixture(scope="module")
def files(celeba_dir, tmp_path_factory):
    """An embeddings file of 32 real photos (8 people) and a fixed-permutation PE-MIU run trained on it."""
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    with open(celeba_dir / "labels.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["gender"]]
    by: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["image"]):
        by.setdefault(r["identity"], []).append(r)
    picked = [r for i in [i for i in sorted(by) if len(by[i]) >= PER_ID + 2][:N_IDS] for r in by[i][:PER_ID]]
    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [r["image"] for r in picked], model.card.alignment)
    lab = {r["image"]: r for r in picked}
    es = EmbeddingSet(model.embed(ac.crops), np.array(ac.ids), np.array([lab[i]["identity"] for i in ac.ids]),
                      {"gender": np.array([lab[i]["gender"] for i in ac.ids])}, "dlib_resnet")
    root = tmp_path_factory.mktemp("recon-cli")
    save_embeddings(es, root / "E.npz")
    run = root / "keyed"
    assert main(["-q", "reconstruct", "train", "--embeddings", str(root / "E.npz"), "--images", str(celeba_dir),
                 "--out", str(run), *FAST, "--protection", "pe_miu", "--block-size", "16", "--moved-blocks", "4",
                 "--protection-seed", KEY]) == 0
    return {"E": root / "E.npz", "run": run, "images": celeba_dir}


def _snapshot(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _refused(argv: list[str], capsys, watch, mention: str) -> str:
    before = _snapshot(watch)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines and "error:" in lines[-1] and mention in lines[-1], err
    assert sum("error:" in ln for ln in lines) == 1, err
    assert _snapshot(watch) == before, "files were written or changed"
    return lines[-1]


def _eval(files, out, *extra) -> list[str]:
    return ["-q", "reconstruct", "eval", str(files["run"]), "--embeddings", str(files["E"]), "--images",
            str(files["images"]), "--out", str(out), "--threads", "1", "--no-gender", *extra]


def test_keyed_run_needs_its_key_at_evaluation(files, tmp_path, capsys):
    line = _refused(_eval(files, tmp_path / "ev"), capsys, tmp_path, "--protection-seed")
    assert "keyed" in line and "seed" in line
    _refused(["-q", "reconstruct", "figure", str(files["run"]), "--embeddings", str(files["E"]), "--images",
              str(files["images"]), "--out", str(tmp_path / "f.png")], capsys, tmp_path, "--protection-seed")
    # a decoder trained on unprotected templates attacking keyed templates needs the key too
    _refused(_eval(files, tmp_path / "ev", "--protection", "pe_miu", "--moved-blocks", "2"), capsys, tmp_path,
             "--protection-seed")
    assert main(_eval(files, tmp_path / "ev", "--protection-seed", KEY)) == 0
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert s["protection"]["params"] == {"block_size": 16, "moved_blocks": 4, "seed": "<secret>"}
    for p in [*(tmp_path / "ev").iterdir(), *files["run"].rglob("*")]:
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p


@pytest.mark.parametrize("existing", ["summary.json", "samples.png", "scores.csv"])
def test_existing_evaluation_files_are_never_replaced(files, tmp_path, capsys, existing):
    out = tmp_path / "ev"
    out.mkdir()
    (out / existing).write_text("the user's own file")
    _refused(_eval(files, out, "--protection-seed", KEY), capsys, tmp_path, f"{existing}: already exists")


def test_train_refuses_a_finished_run_and_resumes_it(files, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    argv = ["-q", "reconstruct", "train", "--embeddings", str(files["E"]), "--images", str(files["images"]),
            "--out", str(run), *FAST, "--protection", "pe_miu", "--block-size", "16", "--moved-blocks", "4",
            "--protection-seed", KEY]
    _refused(argv, capsys, tmp_path, "checkpoint.pt: already exists")
    before = _snapshot(run)
    assert main([*argv, "--resume"]) == 0  # already at its last epoch: nothing to train, nothing changed
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k != "config.json"} == {k: v for k, v in before.items() if k != "config.json"}
    assert json.loads((run / "config.json").read_text()) == json.loads((files["run"] / "config.json").read_text())
    # resumed with another identity split: refused
    _refused([*argv, "--resume", "--test-fraction", "0.5"], capsys, tmp_path, "test_fraction")


def _npy_named_npz(tmp_path, files):
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.save(f, np.zeros((4, 128), np.float32))
    return bad


CASES = [
    ("seed=-1", ["--seed", "-1"], "--seed"),
    ("protection-seed=-1", ["--protection", "pe_miu", "--protection-seed", "-1"], "--protection-seed"),
    ("size=32", ["--size", "32"], "--size"),
    ("epochs=0", ["--epochs", "0"], "--epochs"),
    ("batch-size=1", ["--batch-size", "1"], "--batch-size"),
    ("test-fraction=1", ["--test-fraction", "1"], "--test-fraction"),
    ("id-weight=-1", ["--id-weight", "-1"], "--id-weight"),
    ("ssim-weight=nan", ["--ssim-weight", "nan"], "--ssim-weight"),
    ("lr=inf", ["--lr", "inf"], "--lr"),
    ("max-train=1", ["--max-train", "1"], "--max-train"),
    ("block-size=48", ["--protection", "pe_miu", "--block-size", "48"], "block_size 48"),
]


@pytest.mark.parametrize("flags,mention", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_train_refuses_bad_values_before_any_work(files, tmp_path, capsys, flags, mention):
    argv = ["-q", "reconstruct", "train", "--embeddings", str(files["E"]), "--images", str(files["images"]),
            "--out", str(tmp_path / "run"), "--epochs", "1", *flags]
    _refused(argv, capsys, tmp_path, mention)


def test_train_refuses_bad_files_and_folders(files, tmp_path, capsys):
    base = ["-q", "reconstruct", "train", "--images", str(files["images"]), "--epochs", "1"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    _refused([*base, "--embeddings", str(files["E"]), "--out", str(a_file)], capsys, tmp_path, "notes.txt")
    _refused([*base, "--embeddings", str(files["E"]), "--out", str(a_file), "--overwrite"], capsys, tmp_path, "notes.txt")
    bad = _npy_named_npz(tmp_path, files)
    _refused([*base, "--embeddings", str(bad), "--out", str(tmp_path / "run")], capsys, tmp_path, "bad.npz")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "report.md").write_text("someone's work")
    for extra in ([], ["--overwrite"], ["--resume"]):
        _refused([*base, "--embeddings", str(files["E"]), "--out", str(theirs), *extra], capsys, tmp_path, "theirs")


def test_eval_refuses_bad_values_before_any_work(files, tmp_path, capsys):
    _refused(_eval(files, tmp_path / "ev", "--seed", "-3"), capsys, tmp_path, "--seed")
    _refused(_eval(files, tmp_path / "ev", "--max-test", "-4"), capsys, tmp_path, "--max-test")
    _refused(_eval(files, tmp_path / "ev", "--transfer", "no_such_model"), capsys, tmp_path, "no_such_model")
    (tmp_path / "a.png").write_bytes(b"png")
    _refused(_eval(files, tmp_path / "a.png", "--protection-seed", KEY), capsys, tmp_path, "a.png")
    bad = _npy_named_npz(tmp_path, files)
    _refused(["-q", "reconstruct", "eval", str(files["run"]), "--embeddings", str(bad), "--images",
              str(files["images"]), "--out", str(tmp_path / "ev"), "--protection-seed", KEY], capsys, tmp_path, "bad.npz")


def test_judges_from_the_command_line(files, tmp_path, capsys):
    """A proxy-loss run records its loss model; a judge it touched is refused, a foreign one judges."""
    run = tmp_path / "proxy"
    assert main(["-q", "reconstruct", "train", "--embeddings", str(files["E"]), "--images", str(files["images"]),
                 "--out", str(run), *FAST, "--loss-model", "mobilefacenet", "--max-train", "12"]) == 0
    assert json.loads((run / "config.json").read_text())["extra"]["loss_model"] == "mobilefacenet"
    base = ["-q", "reconstruct", "eval", str(run), "--embeddings", str(files["E"]), "--images", str(files["images"]),
            "--no-gender", "--threads", "1"]
    _refused([*base, "--out", str(tmp_path / "e1"), "--judges", "mobilefacenet"], capsys, tmp_path, "--judges")
    assert main([*base, "--out", str(tmp_path / "e2"), "--judges", "sface"]) == 0
    s = json.loads((tmp_path / "e2" / "summary.json").read_text())
    assert s["scenario"]["loss_model"] == "mobilefacenet" and s["scenario"]["models_touched"] == ["dlib_resnet", "mobilefacenet"]
    assert set(s["judges"]["sface"]["sar"]) == {"0.001", "0.01", "0.1"}
    assert "judge sface" in capsys.readouterr().out


def test_decode_writes_faces_of_templates_made_elsewhere(files, tmp_path, capsys):
    """`reconstruct decode`: one face per template, an index and a sheet; never replaced silently; a file of
    another template size is refused naming the file."""
    from PIL import Image

    from facepriv.embeddings import load_embeddings

    es = load_embeddings(files["E"])
    argv = ["-q", "reconstruct", "decode", str(files["run"]), "--embeddings", str(files["E"]), "--out",
            str(tmp_path / "faces")]
    assert main(argv) == 0
    with open(tmp_path / "faces" / "index.csv", newline="", encoding="utf-8") as f:
        index = list(csv.DictReader(f))
    assert [r["id"] for r in index] == es.ids.tolist()
    assert [r["identity"] for r in index] == es.identity.tolist()
    face = np.asarray(Image.open(tmp_path / "faces" / index[-1]["file"]))
    assert face.shape == (64, 64, 3) and face.std() > 0
    assert (tmp_path / "faces" / "faces.png").stat().st_size > 0
    _refused(argv, capsys, tmp_path, "already exists")
    assert main([*argv, "--overwrite"]) == 0
    wide = EmbeddingSet(np.ones((3, 512), np.float32), np.array(["a", "b", "c"]), np.array(["x", "x", "y"]))
    save_embeddings(wide, tmp_path / "wide.npz")
    line = _refused(["-q", "reconstruct", "decode", str(files["run"]), "--embeddings", str(tmp_path / "wide.npz"),
                     "--out", str(tmp_path / "w")], capsys, tmp_path, "wide.npz")
    assert "dimension 512" in line and "expects 128" in line
    (tmp_path / "f.txt").write_text("x")
    _refused(["-q", "reconstruct", "decode", str(files["run"]), "--embeddings", str(files["E"]), "--out",
              str(tmp_path / "f.txt")], capsys, tmp_path, "f.txt")


def test_a_checkpoint_for_another_template_size_is_one_line(files, tmp_path, capsys):
    """config.json says 512-d, decoder.pt holds a 128-d decoder: one line naming decoder.pt, exit 2."""
    run = tmp_path / "wrong"
    shutil.copytree(files["run"], run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "embedding_dim": 512}))
    wide = EmbeddingSet(np.ones((3, 512), np.float32), np.array(["a", "b", "c"]), np.array(["x", "x", "y"]))
    save_embeddings(wide, tmp_path / "wide.npz")
    line = _refused(["-q", "reconstruct", "decode", str(run), "--embeddings", str(tmp_path / "wide.npz"), "--out",
                     str(tmp_path / "faces")], capsys, tmp_path, "decoder.pt")
    assert "do not fit a 512-d" in line
