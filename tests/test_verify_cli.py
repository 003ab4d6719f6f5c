"""``facepriv verify`` end to end on a small real embeddings file made at test time with dlib."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from facepriv.cli.main import main
from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings

REPORT_KEYS = {
    "eer", "eer_low", "eer_high", "eer_threshold", "auc", "genuine_mean", "impostor_mean",
    "n_genuine", "n_impostor", "fnmr_at_fmr", "threshold_at_fmr",
}


def _dlib_embed(root: Path, rows: list[dict[str, str]]) -> EmbeddingSet:
    """Real dlib ResNet descriptors (HOG detector, 5 landmarks, 150x150 chip) of the listed images."""
    dlib = pytest.importorskip("dlib")
    from facepriv import artifacts
    from facepriv.images import load_rgb

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(artifacts.fetch("dlib_landmarks5")))
    rec = dlib.face_recognition_model_v1(str(artifacts.fetch("dlib_resnet_v1")))
    emb, ids, ident, gender = [], [], [], []
    for r in rows:
        img = load_rgb(root / r["image"])
        boxes = det(img, 0) or det(img, 1)  # faces are ~110 px wide: upsample only if needed
        if not boxes:
            continue
        box = max(boxes, key=lambda b: b.width() * b.height())
        chip = dlib.get_face_chip(img, sp(img, box), size=150, padding=0.25)
        emb.append(np.array(rec.compute_face_descriptor(chip), dtype=np.float32))
        ids.append(r["image"])
        ident.append(r["identity"])
        gender.append(r["gender"])
    return EmbeddingSet(np.stack(emb), np.array(ids), np.array(ident), {"gender": np.array(gender)}, "dlib_resnet")


@pytest.fixture(scope="module")
def real_npz(celeba_dir, tmp_path_factory) -> Path:
    """40 real CelebA photos of 8 identities (5 each), embedded with dlib-bin."""
    with open(celeba_dir / "labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])
    by_id: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(r)
    chosen = [r for ident in sorted(by_id)[:8] for r in by_id[ident][:5]]
    es = _dlib_embed(celeba_dir, chosen)
    assert len(es) >= 35 and len(set(es.identity.tolist())) == 8
    return save_embeddings(es, tmp_path_factory.mktemp("verify") / "celeba40_dlib.npz")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["-q", "verify", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_verify_real_all_pairs(real_npz, tmp_path, capsys):
    out, det, proto = tmp_path / "v.json", tmp_path / "det.png", tmp_path / "proto.csv"
    code, stdout, _ = _run([real_npz, "--out", out, "--det", det, "--folds", "4", "--pairs-per-fold", "20",
                            "--save-protocol", proto], capsys)
    assert code == 0
    assert "EER" in stdout and "4-fold accuracy" in stdout and "0.1%" in stdout
    v = json.loads(out.read_text())
    assert REPORT_KEYS | {"kfold_accuracy_mean", "kfold_accuracy_std"} <= set(v)
    assert v["protocol"] == "all-pairs" and v["comparator"] == "cosine" and v["model"] == "dlib_resnet"
    es = load_embeddings(real_npz)
    counts = np.unique(es.identity, return_counts=True)[1]
    n_gen = int((counts * (counts - 1) // 2).sum())
    assert v["n_genuine"] == n_gen and v["n_impostor"] == len(es) * (len(es) - 1) // 2 - n_gen
    # dlib on real faces: well separated, but not perfectly
    assert v["auc"] > 0.9 and v["eer"] < 0.2 and v["genuine_mean"] > v["impostor_mean"]
    assert v["eer_low"] <= v["eer"] <= v["eer_high"]
    assert v["kfold_accuracy_mean"] > 0.75 and len(v["kfold"]["kfold_accuracies"]) == 4
    assert det.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved protocol reproduces the k-fold accuracy exactly, and scores EER on its own pairs
    out2 = tmp_path / "v2.json"
    code, _, _ = _run([real_npz, "--pairs", proto, "--out", out2], capsys)
    v2 = json.loads(out2.read_text())
    assert code == 0 and v2["protocol"] == "pairs-csv"
    assert v2["kfold_accuracy_mean"] == v["kfold_accuracy_mean"]
    assert v2["n_genuine"] + v2["n_impostor"] == v["kfold_protocol_counts"]["pairs"]
    # outputs are never silently replaced
    before = out.read_text()
    code, _, err = _run([real_npz, "--out", out], capsys)
    assert code == 2 and "already exists" in err and out.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.png", "proto.csv", "v.json", "v2.json"]


@pytest.mark.slow
def test_verify_overlay_two_files(real_npz, tmp_path, capsys):
    es = load_embeddings(real_npz)
    rng = np.random.default_rng(0)
    noisy = es.with_embeddings(es.embeddings + rng.normal(0, 0.05, es.embeddings.shape), None)
    noisy_path = save_embeddings(noisy, tmp_path / "noisy.npz")
    out, det = tmp_path / "cmp.json", tmp_path / "cmp.png"
    code, stdout, err = _run([real_npz, noisy_path, "--out", out, "--det", det, "--label", "clean",
                              "--label", "noisy"], capsys)
    assert code == 0, err
    v = json.loads(out.read_text())
    assert [s["file"] for s in v["systems"]] == [str(real_npz), str(noisy_path)]
    # 8 identities cannot make 10 identity-disjoint folds: k-fold is skipped and says why
    assert "kfold_skipped" in v["systems"][0] and "kfold_accuracy_mean" not in v["systems"][0]
    assert v["systems"][1]["eer"] >= v["systems"][0]["eer"]  # noise does not help
    assert det.stat().st_size > 10_000
    code, _, err = _run([real_npz, noisy_path, "--out", tmp_path / "x.json", "--label", "one"], capsys)
    assert code == 2 and "--label" in err


@pytest.mark.slow
def test_verify_protected_file_uses_its_comparator(real_npz, tmp_path, capsys):
    pytest.importorskip("facepriv.protections.pe_miu", reason="PE-MIU protection not in this build yet")
    from facepriv.registry import create

    es = load_embeddings(real_npz)
    prot = create("protection", "pe_miu", {"block_size": 16}).protect(es)
    path = save_embeddings(prot, tmp_path / "pemiu.npz")
    out = tmp_path / "p.json"
    code, _, err = _run([path, "--out", out], capsys)
    assert code == 0, err
    v = json.loads(out.read_text())
    assert v["protection"]["name"] == "pe_miu" and v["comparator"] != "cosine"
    assert v["auc"] > 0.8


def test_verify_lfw_pairs(lfw_meta_dir, tmp_path, capsys):
    # synthetic templates (one centre per LFW person + noise) under the real LFW pairs.txt ids
    from facepriv.datasets.lfw import lfw_identity, read_lfw_pairs

    pairs = read_lfw_pairs(lfw_meta_dir / "pairs.txt")
    paths = sorted({x for pr in pairs for x in (pr.path1, pr.path2)})
    ident = np.array([lfw_identity(p) for p in paths])
    names, codes = np.unique(ident, return_inverse=True)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(names.size, 16))[codes] + 0.5 * rng.normal(size=(len(paths), 16))
    full = EmbeddingSet(emb.astype(np.float32), np.array(paths), ident, {}, "synthetic")
    npz = save_embeddings(full, tmp_path / "lfw_synth.npz")
    out = tmp_path / "lfw.json"
    code, stdout, err = _run([npz, "--pairs", lfw_meta_dir / "pairs.txt", "--out", out], capsys)
    assert code == 0, err
    v = json.loads(out.read_text())
    assert v["protocol"] == "lfw-pairs" and v["n_genuine"] == 3000 and v["n_impostor"] == 3000
    assert v["protocol_counts"]["folds"] == 10 and len(v["kfold"]["kfold_accuracies"]) == 10
    assert v["kfold_accuracy_mean"] > 0.9 and "10-fold accuracy" in stdout
    # a file lacking some images: clear error, or --drop-missing
    part = save_embeddings(full.subset(np.arange(5, len(paths))), tmp_path / "part.npz")
    code, _, err = _run([part, "--pairs", lfw_meta_dir / "pairs.txt", "--out", tmp_path / "p.json"], capsys)
    assert code == 2 and "pairs" in err and "not in the embeddings file" in err and "--drop-missing" in err
    code, _, err = _run([part, "--pairs", lfw_meta_dir / "pairs.txt", "--out", tmp_path / "p.json",
                         "--drop-missing"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["n_genuine"] < 3000


def test_verify_bad_inputs(tmp_path, capsys):
    code, _, err = _run([tmp_path / "missing.npz", "--out", tmp_path / "v.json"], capsys)
    assert code == 2 and "missing.npz" in err and "no such file" in err
    one = EmbeddingSet(np.eye(3, dtype=np.float32), np.array(["a", "b", "c"]), np.array(["x", "x", "x"]))
    npz = save_embeddings(one, tmp_path / "one.npz")
    code, _, err = _run([npz, "--out", tmp_path / "v.json"], capsys)
    assert code == 2 and "impostor" in err and "only one identity" in err
    assert not (tmp_path / "v.json").exists()
    code, _, err = _run([npz, "--out", npz], capsys)
    assert code == 2 and "different paths" in err
    two = EmbeddingSet(np.eye(4, dtype=np.float32), np.array(list("abcd")), np.array(list("xxyy")),
                       protection={"name": "no_such_protection", "params": {}})
    bogus = save_embeddings(two, tmp_path / "bogus.npz")
    code, _, err = _run([bogus, "--out", tmp_path / "v.json"], capsys)
    assert code == 2 and "bogus.npz" in err and "no_such_protection" in err


def test_verify_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--pairs" in text and "--det" in text and "FVC2000" in text


@pytest.mark.slow
def test_privacy_rates_on_real_templates(real_npz):
    """Success rates and PSR/top-k on real dlib templates agree with the verification report."""
    from facepriv.metrics.privacy import psr_at_k, rank_of_true_identity, success_rate, topk_accuracy
    from facepriv.metrics.verification import scores_all_pairs, verification_report

    es = load_embeddings(real_npz)
    gen, imp = scores_all_pairs(es)
    rep = verification_report(gen, imp)
    # a "replay" of genuine comparisons succeeds exactly as often as the system accepts them
    for fmr, rate in success_rate(gen, rep.threshold_at_fmr).items():
        assert float(rate) == pytest.approx(1 - rep.fnmr_at_fmr[fmr])
        assert rate.ci_low <= float(rate) <= rate.ci_high
    # identification against leave-one-out identity centroids: dlib finds most people at rank 0
    names, codes = np.unique(es.identity, return_inverse=True)
    e = es.embeddings / np.linalg.norm(es.embeddings, axis=1, keepdims=True)
    sums = np.stack([e[codes == c].sum(0) for c in range(names.size)])
    counts = np.bincount(codes).astype(float)
    scores = np.empty((len(e), names.size))
    for i in range(len(e)):
        cent = sums.copy()
        cent[codes[i]] -= e[i]
        cent /= np.maximum(counts - (np.arange(names.size) == codes[i]), 1)[:, None]
        scores[i] = cent @ e[i] / np.linalg.norm(cent, axis=1)
    ranks = rank_of_true_identity(scores, codes)
    top = topk_accuracy(ranks, ks=(1, 3, 8))
    psr = psr_at_k(ranks, ks=(1, 3, 8))
    assert float(top[1]) > 0.8 and float(top[8]) == 1.0
    assert all(float(psr[k]) == pytest.approx(100 * (1 - float(top[k]))) for k in top)


# ------------------------------------------------------------ bad embeddings files (issue 14, items 8 and 10)
def _bad_file(tmp_path: Path, kind: str) -> tuple[Path, str]:
    good = {"embeddings": np.eye(4, dtype=np.float32) + 0.1, "ids": np.array(list("abcd")),
            "identity": np.array(list("xxyy")), "gender": np.array(["male", "male", "female", "female"])}
    p = tmp_path / f"{kind}.npz"
    if kind == "npy":
        np.save(tmp_path / "x.npy", good["embeddings"])
        (tmp_path / "x.npy").rename(p)
        return p, "is a single .npy array, not an npz archive"
    if kind == "text":
        p.write_text("embeddings,ids\n1,2\n")
        return p, r"not an npz archive \(not a zip archive\)"
    if kind == "empty":
        p.write_bytes(b"")
        return p, r"not an npz archive \(an empty file\)"
    if kind == "pickle":
        np.savez(p, **{**good, "ids": np.array(["a", 1, None, "d"], dtype=object)})
        return p, "would need pickle"
    arrays = dict(good)
    if kind == "zero":
        arrays["embeddings"][2] = 0
        msg = "1 all-zero template"
    elif kind == "nan":
        arrays["embeddings"][1, 0] = np.inf
        msg = "NaN or inf in 1 row"
    elif kind == "gender_length":
        arrays["gender"] = np.array(["male", "female"])
        msg = r"'gender' has shape \(2,\), expected \(4,\)"
    elif kind == "duplicate_ids":
        arrays["ids"] = np.array(list("abca"))
        msg = "must be unique"
    else:
        raise AssertionError(kind)
    np.savez(p, **arrays)
    return p, msg


@pytest.mark.parametrize("kind", ["npy", "text", "empty", "pickle", "zero", "nan", "gender_length", "duplicate_ids"])
def test_verify_refuses_bad_embeddings_naming_the_file(tmp_path, capsys, kind):
    from facepriv.errors import InputFileError

    path, msg = _bad_file(tmp_path, kind)
    with pytest.raises(InputFileError, match=msg):
        load_embeddings(path)
    code, _, err = _run([path, "--out", tmp_path / "v.json"], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"facepriv: error: {path}: "), err
    assert not (tmp_path / "v.json").exists()


def test_verify_negative_seed_is_refused_while_parsing(tmp_path, capsys):
    path, _ = _bad_file(tmp_path, "zero")
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(path), "--protocol-seed", "-5", "--out", str(tmp_path / "v.json")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("facepriv verify: error: argument --protocol-seed")


@pytest.mark.slow
def test_protected_utility_is_what_verify_and_the_runner_compute(real_npz):
    """One function computes verification utility: same numbers as the pieces it is made of."""
    from facepriv.metrics.kfold import kfold_accuracy
    from facepriv.metrics.protocol import make_pairs
    from facepriv.metrics.utility import protected_utility
    from facepriv.metrics.verification import scores_all_pairs, scores_for_pairs, verification_report
    from facepriv.registry import create

    es = create("protection", "pe_miu", {"block_size": 16, "seed": 4}).protect(load_embeddings(real_npz))
    res = protected_utility(es, seed=3)
    comp = create("protection", "pe_miu", {"block_size": 16}).comparator()
    gen, imp = scores_all_pairs(es, comp)
    proto = make_pairs(es.ids, es.identity, 4, (300, 300), 3)  # 8 identities: min(10, 8 // 2) folds
    kf = kfold_accuracy(scores_for_pairs(es, proto.id1, proto.id2, comp), proto.genuine, proto.fold)
    assert res.report == verification_report(gen, imp, kfold=kf)
    m = res.metrics()
    assert m["kfold_folds"] == 4 and m["kfold_pairs"] == len(proto) and m["n_identities"] == 8
    assert m["fnmr_at_fmr_0.01"] == res.report.fnmr_at_fmr[0.01]
    skipped = protected_utility(es, seed=3, metrics=("eer",))
    assert skipped.kfold is None and skipped.report.kfold_accuracy_mean is None
