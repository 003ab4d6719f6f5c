"""``facepriv embed`` and the embedding pipeline end to end on real CelebA photos, plus bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facepriv.pipeline as pipeline
from facepriv.cli.main import main
from facepriv.embeddings import load_embeddings
from facepriv.models.zoo import model_names


def _need(model: str) -> None:
    if model not in model_names():
        pytest.skip(f"model {model!r} is not registered in this build")


@pytest.fixture(autouse=True)
def _private_crops_cache(tmp_path, monkeypatch):
    """Each test gets its own crops cache (the user's cache stays untouched)."""
    monkeypatch.setattr(pipeline, "_cache_file", lambda key: tmp_path / "crops-cache" / f"{key}.npz")
    monkeypatch.setenv("FACEPRIV_NO_PROGRESS", "1")


def _celeba_subset(celeba_dir: Path, dest: Path, n_ids: int = 4, per_id: int = 5) -> list[dict[str, str]]:
    """Copy ``per_id`` photos of the first ``n_ids`` gender-labelled identities; write labels.csv."""
    rows = sorted(csv.DictReader(open(celeba_dir / "labels.csv", encoding="utf-8")), key=lambda r: r["image"])
    chosen: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["gender"] and len(chosen.get(r["identity"], [])) < per_id:
            if r["identity"] in chosen or len(chosen) < n_ids:
                chosen.setdefault(r["identity"], []).append(r)
    out = [r for rs in chosen.values() for r in rs]
    for r in out:
        (dest / r["identity"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(celeba_dir / r["image"], dest / r["image"])
    _write_labels(dest / "labels.csv", out)
    return out


def _png_claiming_size(im: Image.Image, path: Path, width: int, height: int) -> None:
    """A real PNG whose header claims ``width`` x ``height`` (a decompression-bomb stand-in)."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def _write_labels(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "identity", "gender"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("image", "identity", "gender")} for r in rows)


@pytest.mark.slow
def test_embed_real_subset_with_bad_files(celeba_dir, tmp_path, capsys):
    _need("dlib_resnet")
    data = tmp_path / "data"
    rows = _celeba_subset(celeba_dir, data)
    src = data / rows[0]["image"]
    ident, gender = rows[0]["identity"], rows[0]["gender"]
    bad = {
        f"{ident}/corrupt.jpg": lambda p: p.write_bytes(src.read_bytes()[:300]),
        f"{ident}/text.jpg": lambda p: p.write_text("not an image"),
        f"{ident}/tiny.png": lambda p: Image.open(src).resize((10, 10)).save(p),
        f"{ident}/noface.jpg": lambda p: Image.open(src).crop((0, 200, 250, 250)).resize((250, 250)).save(p),
        f"{ident}/bomb.png": lambda p: _png_claiming_size(Image.open(src), p, 9000, 9400),
    }
    good_extra = {
        f"{ident}/gray.png": lambda p: Image.open(src).convert("L").save(p),
        f"{ident}/rgba.png": lambda p: Image.open(src).convert("RGBA").save(p),
        f"{ident}/huge.jpg": lambda p: Image.open(src).resize((2400, 2400), Image.BICUBIC).save(p, quality=90),
    }
    for rel, make in {**bad, **good_extra}.items():
        make(data / rel)
        rows.append({"image": rel, "identity": ident, "gender": gender})
    _write_labels(data / "labels.csv", rows)
    out = tmp_path / "out" / "E.npz"
    argv = ["embed", str(data), "--labels", str(data / "labels.csv"), "--out", str(out), "--batch-size", "8"]
    assert main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    n = len(rows)
    es = load_embeddings(out)
    fails = list(csv.DictReader(open(tmp_path / "out" / "E.failures.csv", encoding="utf-8")))
    failed = {f["image"]: f["reason"] for f in fails}
    assert set(bad) <= set(failed)
    assert "corrupt or truncated" in failed[f"{ident}/corrupt.jpg"]
    assert "not a readable image" in failed[f"{ident}/text.jpg"]
    assert "too small" in failed[f"{ident}/tiny.png"]
    assert failed[f"{ident}/noface.jpg"] == "no face detected"
    assert "image too large (9000x9400" in failed[f"{ident}/bomb.png"]
    assert len(failed) <= len(bad) + 2  # HOG may miss a hard real photo or two, not more
    assert len(es) + len(failed) == n
    assert f"{n} images found, {len(es)} embedded, {len(failed)} failed" in summary and "images/s" in summary
    assert set(good_extra) <= set(es.ids.tolist())  # gray, RGBA and 2400 px photos embed
    assert es.model == "dlib_resnet" and es.dim == 128 and es.embeddings.dtype == np.float32
    lab = {r["image"]: r for r in rows}
    assert all(lab[i]["identity"] == p and lab[i]["gender"] == g
               for i, p, g in zip(es.ids, es.identity, es.gender, strict=True))
    # real model, real faces: same-person distances are smaller than different-person ones
    d = np.linalg.norm(es.embeddings[:, None] - es.embeddings[None], axis=2)
    same = es.identity[:, None] == es.identity[None]
    off = ~np.eye(len(es), dtype=bool)
    assert d[same & off].mean() < 0.5 < d[~same].mean()
    # a gray copy embeds like its colour original
    i0, ig = es.ids.tolist().index(rows[0]["image"]), es.ids.tolist().index(f"{ident}/gray.png")
    assert d[i0, ig] < 0.35

    # refuses to overwrite; --overwrite re-uses the cached crops and gives the same embeddings
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert "(crops from cache)" in capsys.readouterr().out
    np.testing.assert_allclose(load_embeddings(out).embeddings, es.embeddings, atol=1e-6)


@pytest.mark.slow
def test_embed_folder_layout_and_arcface_model(celeba_dir, tmp_path, capsys):
    """Without labels identity is the first folder; an arcface112 model runs through YuNet crops."""
    model = "sface" if "sface" in model_names() else "dlib_resnet"
    _need(model)
    data = tmp_path / "data"
    _celeba_subset(celeba_dir, data, n_ids=2, per_id=3)
    (data / "labels.csv").unlink()
    out = tmp_path / "E.npz"
    assert main(["embed", str(data), "--model", model, "--out", str(out), "--no-cache"]) == 0
    es = load_embeddings(out)
    assert es.model == model and len(es) >= 5
    assert es.gender is None
    assert all(i.split("/")[0] == p for i, p in zip(es.ids, es.identity, strict=True))
    e = es.embeddings / np.linalg.norm(es.embeddings, axis=1, keepdims=True)
    cos = e @ e.T
    same = es.identity[:, None] == es.identity[None]
    off = ~np.eye(len(es), dtype=bool)
    assert cos[same & off].mean() > cos[~same].mean() + 0.2
    assert not list((tmp_path / "crops-cache").glob("*.npz"))  # --no-cache writes nothing


@pytest.mark.parametrize(
    "case", ["empty", "missing_files", "unknown_model", "no_folder", "bad_batch", "not_npz", "model_param"]
)
def test_embed_clear_errors_and_no_output(case, celeba_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "E.npz"
    argv = ["embed", str(data), "--out", str(out)]
    if case == "empty":
        (data / "notes.txt").write_text("no images here")
        expect = "no image files found"
    elif case == "missing_files":
        shutil.copy(sorted((celeba_dir / "07201").iterdir())[0], data / "a.jpg")
        _write_labels(data / "l.csv", [{"image": "a.jpg", "identity": "x", "gender": ""},
                                       {"image": "x/gone.jpg", "identity": "x", "gender": ""}])
        argv += ["--labels", str(data / "l.csv")]
        expect = r"l.csv: 1 of 2 listed image\(s\) do not exist .*x/gone.jpg"
    elif case == "unknown_model":
        argv += ["--model", "no_such_model"]
        expect = "unknown model 'no_such_model'"
    elif case == "no_folder":
        argv[1] = str(tmp_path / "absent")
        expect = "absent: no such folder"
    elif case == "bad_batch":
        argv += ["--batch-size", "0"]
        expect = "argument --batch-size: expected an integer >= 1"
    elif case == "not_npz":
        argv[-1] = str(tmp_path / "E.csv")
        expect = "must end in .npz"
    else:
        argv += ["--model-param", "depth=3"]
        expect = "unknown parameter.*depth"
    try:
        code = main(argv)
    except SystemExit as exc:  # refused while parsing the arguments
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    import re

    assert re.match(r"facepriv( embed)?: error: ", err.strip().splitlines()[-1]), err

    assert re.search(expect, err), err
    assert not out.exists() and not (tmp_path / "E.failures.csv").exists()
    assert not list(tmp_path.glob(".E.npz*"))  # no temporary file left behind


def test_embed_no_face_anywhere_writes_nothing_and_the_rerun_works(celeba_dir, tmp_path, capsys):
    _need("dlib_resnet")
    data = tmp_path / "data" / "p"
    data.mkdir(parents=True)
    src = sorted((celeba_dir / "07201").iterdir())[0]
    Image.open(src).crop((0, 200, 250, 250)).resize((250, 250)).save(data / "a.jpg")
    (data / "b.jpg").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "E.npz"
    assert main(["embed", str(tmp_path / "data"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no face found in any of the 2 image(s)" in err and "reasons: " in err and "nothing written" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "crops-cache") == ["data"]  # no output, no failures
    # an orphaned failures file of an older failed run does not block the rerun (issue 14, item 10)
    (tmp_path / "E.failures.csv").write_text("image,reason\np/a.jpg,no face detected\n")
    shutil.copy(sorted((celeba_dir / "07201").iterdir())[0], data / "c.jpg")
    assert main(["-q", "embed", str(tmp_path / "data"), "--out", str(out)]) == 0, capsys.readouterr().err
    fails = list(csv.DictReader(open(tmp_path / "E.failures.csv", encoding="utf-8")))
    assert {f["image"] for f in fails} == {"p/a.jpg", "p/b.jpg"} and len(load_embeddings(out)) == 1
    # a failures file beside an existing output is not orphaned: --overwrite is needed
    assert main(["-q", "embed", str(tmp_path / "data"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_align_images_cache_key_tracks_files(celeba_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    rows = _celeba_subset(celeba_dir, data, n_ids=1, per_id=2)
    rel = [r["image"] for r in rows] + ["missing.jpg"]
    a = pipeline.align_images(data, rel, "arcface112")
    assert a.crops.shape == (2, 112, 112, 3) and a.ids == rel[:2]
    assert a.failures == [("missing.jpg", "no such image file")]
    key = pipeline.crops_cache_key(data, rel, "arcface112")
    assert pipeline._cache_file(key).is_file()
    b = pipeline.align_images(data, rel, "arcface112")
    np.testing.assert_array_equal(a.crops, b.crops)
    assert b.failures == a.failures
    # same images in another order: same cache entry, returned in the order asked for
    c = pipeline.align_images(data, rel[::-1], "arcface112")
    assert pipeline.crops_cache_key(data, rel[::-1], "arcface112") == key
    assert c.ids == rel[1::-1]
    np.testing.assert_array_equal(c.crops, a.crops[::-1])
    # a subset is served from the earlier run's cache file without detecting anything
    from facepriv.models.alignment import ArcFaceAligner

    calls = []
    orig = ArcFaceAligner.align
    monkeypatch.setattr(ArcFaceAligner, "align", lambda self, im: calls.append(1) or orig(self, im))
    d = pipeline.align_images(data, [rel[1], "missing.jpg"], "arcface112")
    assert calls == [] and d.ids == [rel[1]] and d.failures == [("missing.jpg", "no such image file")]
    np.testing.assert_array_equal(d.crops[0], a.crops[1])
    # the key changes with the recipe and with a file's content/mtime; a touched file is re-detected
    assert pipeline.crops_cache_key(data, rel, "dlib_chip150") != key
    import os

    st = (data / rel[0]).stat()
    os.utime(data / rel[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert pipeline.crops_cache_key(data, rel, "arcface112") != key
    e = pipeline.align_images(data, rel[:2], "arcface112")
    assert len(calls) == 1 and e.ids == rel[:2]
    np.testing.assert_array_equal(e.crops, a.crops)
    # a damaged cache file is ignored and recomputed, not trusted
    pipeline._cache_file(key).write_bytes(b"junk")
    assert pipeline._load_cache(pipeline._cache_file(key), rel, "arcface112") is None


@pytest.mark.slow
def test_embed_user_onnx_file_model(celeba_dir, tmp_path, capsys):
    """--model onnx_file with --model-param: the real MobileFaceNet ONNX through YuNet crops."""
    _need("onnx_file")
    from facepriv.artifacts import fetch

    data = tmp_path / "data"
    _celeba_subset(celeba_dir, data, n_ids=2, per_id=3)
    out = tmp_path / "E.npz"
    argv = ["embed", str(data), "--labels", str(data / "labels.csv"), "--model", "onnx_file",
            "--model-param", f"path={fetch('mobilefacenet_w600k')}", "--model-param", "input_size=[112,112]",
            "--out", str(out)]
    assert main(argv) == 0
    es = load_embeddings(out)
    assert es.dim == 512 and len(es) >= 5
    e = es.embeddings / np.linalg.norm(es.embeddings, axis=1, keepdims=True)
    same = es.identity[:, None] == es.identity[None]
    off = ~np.eye(len(es), dtype=bool)
    assert (e @ e.T)[same & off].mean() > (e @ e.T)[~same].mean() + 0.2
