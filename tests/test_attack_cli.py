"""End to end on real faces: `facepriv protect`, `verify` on protected files, `attack similarity|classifier`.

The fixture embeds ~60 real CelebA photos of 12 identities (6 female, 6 male) with dlib-bin (HOG
detector, 5 landmarks, dlib ResNet), the reference implementation of the ``dlib_resnet`` model.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from facepriv.cli.main import main
from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings

pytestmark = pytest.mark.slow


def _pick(celeba_dir: Path, per_gender: int = 6, per_id: int = 6) -> list[dict]:
    with open(celeba_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        if r["gender"]:
            by_id.setdefault(r["identity"], []).append(r)
    chosen = []
    for g in ("female", "male"):
        ids = sorted(i for i, rs in by_id.items() if rs[0]["gender"] == g and len(rs) >= per_id + 2)[:per_gender]
        for i in ids:
            chosen += sorted(by_id[i], key=lambda r: r["image"])[: per_id + 2]
    return chosen


@pytest.fixture(scope="module")
def real_emb(celeba_dir, tmp_path_factory) -> Path:
    dlib = pytest.importorskip("dlib")
    from facepriv.artifacts import fetch
    from facepriv.images import load_rgb

    rec = dlib.face_recognition_model_v1(str(fetch("dlib_resnet_v1")))
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(fetch("dlib_landmarks5")))
    emb, ids, ident, gender, count = [], [], [], [], {}
    for r in _pick(celeba_dir):
        if count.get(r["identity"], 0) >= 5:
            continue
        img = load_rgb(celeba_dir / r["image"])
        boxes = det(img, 0)  # faces are ~45% of these 250 px crops: no upsampling needed
        if not boxes:
            continue
        box = max(boxes, key=lambda b: b.width() * b.height())
        emb.append(np.array(rec.compute_face_descriptor(img, sp(img, box)), dtype=np.float32))
        ids.append(r["image"])
        ident.append(r["identity"])
        gender.append(r["gender"])
        count[r["identity"]] = count.get(r["identity"], 0) + 1
    gender[0] = ""  # one unlabelled row: must be excluded, not crash
    es = EmbeddingSet(np.stack(emb), np.array(ids), np.array(ident), {"gender": np.array(gender)}, "dlib_resnet")
    path = tmp_path_factory.mktemp("real") / "celeba_dlib_small.npz"
    save_embeddings(es, path)
    return path


def _split_files(src: Path, tmp: Path) -> tuple[Path, Path]:
    """Two files of disjoint identities (3 female + 3 male each): a cross-database setting."""
    es = load_embeddings(src)
    idents = sorted(set(es.identity))
    g_of = {i: es.gender[es.identity == i][-1] for i in idents}
    first = {i for g in ("female", "male") for i in sorted(x for x in idents if g_of[x] == g)[:3]}
    mask = np.isin(es.identity, list(first))
    a, t = tmp / "a.npz", tmp / "t.npz"
    save_embeddings(es.subset(np.flatnonzero(mask)), a)
    save_embeddings(es.subset(np.flatnonzero(~mask)), t)
    return a, t


def test_real_embeddings_fixture(real_emb):
    es = load_embeddings(real_emb)
    assert len(es) >= 50 and es.dim == 128
    assert len(set(es.identity)) == 12


def test_protect_verify_and_similarity_same_database(real_emb, tmp_path, capsys):
    prot = tmp_path / "p32.npz"
    assert main(["-q", "protect", "pe_miu", str(real_emb), "--block-size", "32", "--seed", "3", "--out", str(prot)]) == 0
    es = load_embeddings(prot)
    assert es.protection == {"name": "pe_miu", "params": {"block_size": 32, "moved_blocks": None, "seed": "<secret>"}}
    # refuses to overwrite
    assert main(["-q", "protect", "pe_miu", str(real_emb), "--block-size", "32", "--out", str(prot)]) == 2
    assert "already exists" in capsys.readouterr().err
    v = tmp_path / "v.json"
    assert main(["-q", "verify", str(prot), "--out", str(v), "--folds", "2", "--pairs-per-fold", "20"]) == 0
    assert "pe_miu" in v.read_text()
    out = tmp_path / "sim"
    argv = ["-q", "attack", "similarity", "--attacker", str(real_emb), "--target", str(real_emb),
            "--split-identities", "0.5", "--protection", "pe_miu", "--block-size", "32",
            "--top-n", "1,5,10,50", "--seed", "0", "--out", str(out)]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["protection"]["name"] == "pe_miu" and "seed" not in json.dumps(s["protection"]).replace('"seed": "<secret>"', "")
    assert {"rule", "n", "decision", "accuracy", "balanced_accuracy", "ci_low", "ci_high", "n_probes"} <= set(s["results"][0])
    assert "Wilson" in s["confidence_interval"]
    assert 0 < s["chance"] < 1 and s["best"]["accuracy"] >= 0.6  # dlib templates carry gender
    assert max(r["n"] for r in s["results"]) < 50  # capped at the class gallery size
    with open(out / "probes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == s["n_probes"] and "pred_max_n1" in rows[0]
    assert (out / "accuracy_vs_n.png").stat().st_size > 1000
    assert main(argv) == 2  # existing summary, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_cross_database_already_protected_target_and_classifiers(real_emb, tmp_path):
    a, t = _split_files(real_emb, tmp_path)
    tp = tmp_path / "t16.npz"
    assert main(["-q", "protect", "pe_miu", str(t), "--block-size", "16", "--moved-blocks", "4", "--seed", "9",
                 "--out", str(tp)]) == 0
    out = tmp_path / "sim"
    assert main(["-q", "attack", "similarity", "--attacker", str(a), "--target", str(tp), "--top-n", "1,5",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["protection"]["params"]["moved_blocks"] == 4 and s["same_database"] is False
    assert s["attacker_identities"] == 6 and s["target_identities"] == 6
    cos = tmp_path / "cos"
    assert main(["-q", "attack", "similarity", "--attacker", str(a), "--target", str(tp), "--top-n", "1",
                 "--comparator", "cosine", "--out", str(cos)]) == 0
    assert json.loads((cos / "summary.json").read_text())["comparator"] == "cosine"
    clf = tmp_path / "clf"
    assert main(["-q", "attack", "classifier", "--attacker", str(a), "--target", str(t), "--protection", "pe_miu",
                 "--block-size", "32", "--out", str(clf)]) == 0
    c = json.loads((clf / "summary.json").read_text())
    assert {r["classifier"] for r in c["results"]} == {"knn", "svm_poly", "svm_rbf", "svm_sigmoid", "logreg"}
    cv = tmp_path / "cv"
    assert main(["-q", "attack", "classifier", "--attacker", str(a), "--target", str(t), "--classifier", "knn",
                 "--cv", "4", "--out", str(cv)]) == 0
    assert json.loads((cv / "summary.json").read_text())["n_probes"] == len(load_embeddings(real_emb)) - 1


def test_bad_inputs_exit_code_2(real_emb, tmp_path, capsys):
    base = ["-q", "attack", "similarity", "--attacker", str(real_emb), "--target", str(real_emb)]
    split = ["--split-identities", "0.5"]
    cases = [
        ([*base, *split, "--attribute", "age", "--out", str(tmp_path / "1")], "age"),
        ([*base, *split, "--protection", "pe_miu", "--block-size", "48", "--out", str(tmp_path / "2")], "does not divide"),
        ([*base, *split, "--top-n", "500,1000", "--out", str(tmp_path / "3")], "exceeds"),
        ([*base, "--out", str(tmp_path / "4")], "--split-identities"),
        ([*base, *split, "--block-size", "16", "--out", str(tmp_path / "5")], "need --protection"),
        (["-q", "protect", "pe_miu", str(real_emb), "--block-size", "48", "--out", str(tmp_path / "p.npz")], "does not divide"),
    ]
    es = load_embeddings(real_emb)
    other = tmp_path / "d64.npz"
    save_embeddings(EmbeddingSet(es.embeddings[:, :64].copy(), es.ids, es.identity, es.attributes), other)
    cases.append(((["-q", "attack", "classifier", "--attacker", str(real_emb), "--target", str(other),
                    "--out", str(tmp_path / "6")]), "dimension mismatch"))
    single = tmp_path / "single.npz"
    save_embeddings(es.subset(np.flatnonzero(es.gender == "female")), single)
    cases.append(((["-q", "attack", "similarity", "--attacker", str(single), "--target", str(real_emb),
                    "--out", str(tmp_path / "7")]), "single value"))
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "facepriv: error:" in err and msg in err, (argv, err)
        assert "Traceback" not in err


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_seed_keying_a_protection_is_written_nowhere(real_emb, tmp_path, capsys, caplog):
    """Issue 14 item 5: `--seed` also keys the fixed permutation; no output may hold it."""
    key = "13579246"
    out = tmp_path / "sim"
    argv = ["attack", "similarity", "--attacker", str(real_emb), "--target", str(real_emb), "--split-identities", "0.5",
            "--protection", "pe_miu", "--moved-blocks", "4", "--seed", key, "--top-n", "1,5", "--out", str(out)]
    with caplog.at_level("DEBUG"):
        assert main(["-v", *argv]) == 0
    std = capsys.readouterr()
    files = _tree(out)
    assert set(files) == {"probes.csv", "accuracy_vs_n.png", "summary.json"}
    for name, data in files.items():
        assert key.encode() not in data, name
    assert key not in std.out + std.err + caplog.text
    s = json.loads(files["summary.json"])
    assert s["seed"] == "<secret>" and s["protection"]["params"] == {"block_size": 32, "moved_blocks": 4, "seed": "<secret>"}
    # the split seed of an unprotected run is no key: it is recorded
    out2 = tmp_path / "plain"
    assert main(["-q", "attack", "classifier", "--attacker", str(real_emb), "--target", str(real_emb),
                 "--split-identities", "0.5", "--classifier", "knn", "--seed", key, "--out", str(out2)]) == 0
    assert json.loads((out2 / "summary.json").read_text())["seed"] == int(key)


@pytest.mark.parametrize("existing", ["probes.csv", "accuracy_vs_n.png", "summary.json"])
def test_attack_checks_every_output_before_writing(real_emb, tmp_path, capsys, existing):
    """Issue 14 item 7: an existing probes.csv or plot is not replaced without --overwrite either."""
    out = tmp_path / "sim"
    out.mkdir()
    (out / existing).write_bytes(b"the user's file")
    argv = ["-q", "attack", "similarity", "--attacker", str(real_emb), "--target", str(real_emb),
            "--split-identities", "0.5", "--top-n", "1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{existing}: already exists" in err and len(err.strip().splitlines()) == 1
    assert _tree(out) == {existing: b"the user's file"}
    assert main([*argv, "--overwrite"]) == 0
    assert set(_tree(out)) == {"probes.csv", "accuracy_vs_n.png", "summary.json"}


@pytest.mark.parametrize("how", ["same_path", "other_spelling", "symlink", "hardlink"])
def test_protect_refuses_to_write_over_its_input(real_emb, tmp_path, capsys, how):
    """Issue 14 item 7: `protect ... --out IN --overwrite` would replace the unprotected templates."""
    import os
    import shutil

    src = tmp_path / "base.npz"
    shutil.copy(real_emb, src)
    before = src.read_bytes()
    out = {"same_path": src, "other_spelling": tmp_path / "." / ".." / tmp_path.name / "base.npz",
           "symlink": tmp_path / "link.npz", "hardlink": tmp_path / "hard.npz"}[how]
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hardlink":
        os.link(src, out)
    assert main(["protect", "pe_miu", str(src), "--block-size", "16", "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and "--out" in err and "Traceback" not in err
    assert src.read_bytes() == before and load_embeddings(src).protection is None


def test_protect_takes_its_defaults_from_the_component(real_emb, tmp_path, capsys):
    from facepriv.protections.pe_miu import PEMIU

    out = tmp_path / "p.npz"
    assert main(["-q", "protect", "pe_miu", str(real_emb), "--out", str(out)]) == 0
    rec = load_embeddings(out).protection
    assert rec["params"]["block_size"] == PEMIU.param_defaults()["block_size"]
    bad = tmp_path / "d100.npz"
    es = load_embeddings(real_emb)
    save_embeddings(EmbeddingSet(es.embeddings[:, :100].copy(), es.ids, es.identity, es.attributes), bad)
    assert main(["protect", "pe_miu", str(bad), "--block-size", "16", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    # the data error names the file and the flag
    assert "d100.npz" in err and "--block-size" in err and "does not divide the dimension 100" in err
    assert not (tmp_path / "x.npz").exists()
    for argv, flag in ((["--seed", "-1"], "--seed"), (["--seed", str(2**40)], "--seed"), (["--param", "seed=3"], "--seed")):
        try:
            code = main(["protect", "pe_miu", str(real_emb), *argv, "--out", str(tmp_path / "y.npz")])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and flag in err and err.startswith("facepriv"), err
