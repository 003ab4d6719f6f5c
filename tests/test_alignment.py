"""Detection + alignment recipes on real faces (celeba-crops, facescrub6) and bad images."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from PIL import Image

from facepriv.errors import ParameterError
from facepriv.images import load_rgb
from facepriv.models.alignment import (
    ARCFACE_TEMPLATE,
    AlignResult,
    apply_affine,
    get_aligner,
    umeyama_similarity,
)

RECIPES = ("dlib_chip150", "arcface112")
# Where dlib's 150x150 chip (padding 0.25) puts its 5 landmarks (outer/inner right eye, outer/inner
# left eye, nose base), measured as the median over real CelebA photos; a per-photo deviation of a
# few pixels is normal.
DLIB_CHIP_REFERENCE = np.array([[110.8, 45.2], [89.0, 47.1], [37.0, 46.3], [58.2, 47.6], [72.1, 87.8]])


def _first_images(root, n_ids: int, per_id: int) -> list[str]:
    rows = list(csv.DictReader(open(root / "labels.csv", encoding="utf-8")))
    out: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: r["image"]):
        lst = out.setdefault(r["identity"], [])
        if len(lst) < per_id:
            lst.append(r["image"])
    return [im for ident in sorted(out)[:n_ids] for im in out[ident]]


@pytest.fixture(scope="module")
def real_photos(celeba_dir, facescrub_dir) -> list[np.ndarray]:
    paths = [celeba_dir / p for p in _first_images(celeba_dir, 3, 2)]
    paths += [facescrub_dir / p for p in _first_images(facescrub_dir, 4, 1)]
    return [load_rgb(p) for p in paths]


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    a, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    m_true = np.array([[s * np.cos(a), -s * np.sin(a), t[0]], [s * np.sin(a), s * np.cos(a), t[1]]])
    dst = apply_affine(m_true, src)
    np.testing.assert_allclose(umeyama_similarity(src, dst), m_true, atol=1e-9)
    # a mirrored target is fitted by a rotation, never a reflection
    m = umeyama_similarity(src, dst * np.array([-1.0, 1.0]))
    assert np.linalg.det(m[:, :2]) > 0


def test_get_aligner_caches_and_rejects_unknown():
    assert get_aligner("arcface112") is get_aligner("arcface112")
    with pytest.raises(ParameterError, match="unknown alignment recipe 'mtcnn'"):
        get_aligner("mtcnn")


@pytest.mark.parametrize("recipe", RECIPES)
def test_real_faces_align_onto_the_template(recipe, real_photos):
    al = get_aligner(recipe)
    h, w = al.output_size
    assert (h, w) == ((150, 150) if recipe == "dlib_chip150" else (112, 112))
    mapped = []
    for img in real_photos:
        res = al.align(img)
        assert res.ok, res.reason
        assert res.reason == "ok"
        assert res.crop.shape == (h, w, 3) and res.crop.dtype == np.uint8
        x0, y0, x1, y1 = res.box
        assert x0 < x1 and y0 < y1 and x1 - x0 > 0.2 * img.shape[1]  # may reach past the border
        assert 0 <= (x0 + x1) / 2 < img.shape[1] and 0 <= (y0 + y1) / 2 < img.shape[0]
        assert res.landmarks.shape == (5, 2)
        m = al.crop_matrix(res.landmarks)
        # crop_matrix is the transform the crop was made with (dlib low-pass filters big
        # reductions, warpAffine does not: a few grey levels apart; a wrong matrix gives 30+)
        redo = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR)
        assert np.abs(redo.astype(float) - res.crop).mean() < 8.0
        mapped.append(apply_affine(m, res.landmarks))
    ref = DLIB_CHIP_REFERENCE if recipe == "dlib_chip150" else ARCFACE_TEMPLATE
    err = np.linalg.norm(np.array(mapped) - ref, axis=2)  # (images, 5) pixel distances
    assert np.median(err) < 4.0, err
    assert err.max() < 15.0, err


@pytest.mark.parametrize("recipe", RECIPES)
def test_non_faces_give_a_reason(recipe, celeba_dir):
    img = load_rgb(celeba_dir / _first_images(celeba_dir, 1, 1)[0])
    al = get_aligner(recipe)
    # the strip below the chin (neck, clothes, background) enlarged to a full photo: no face
    below_chin = cv2.resize(np.ascontiguousarray(img[200:]), (250, 250), interpolation=cv2.INTER_CUBIC)
    res = al.align(below_chin)
    assert res == AlignResult(None, "no face detected", None, None)
    flat = np.full((200, 300, 3), 128, np.uint8)
    assert al.align(flat).reason == "no face detected"
    tiny = np.ascontiguousarray(img[100:120, 100:120])
    res = al.align(tiny)
    assert res.crop is None and res.reason.startswith("image too small")
    with pytest.raises(ValueError, match="uint8 RGB"):
        al.align(img.astype(np.float32))


@pytest.mark.parametrize("recipe", RECIPES)
def test_huge_gray_and_rgba_photos(recipe, celeba_dir, tmp_path):
    """A 2000 px upscale is detected on a reduced copy, with box/landmarks in full-size pixels."""
    src = celeba_dir / _first_images(celeba_dir, 1, 1)[0]
    img = load_rgb(src)
    al = get_aligner(recipe)
    ref = al.align(img)
    big = cv2.resize(img, (2000, 2000), interpolation=cv2.INTER_CUBIC)
    res = al.align(big)
    assert res.ok
    f = 2000 / img.shape[0]
    assert np.abs(res.landmarks / f - ref.landmarks).max() < 4.0
    assert np.abs(res.crop.astype(float) - ref.crop).mean() < 20.0
    gray_p, rgba_p = tmp_path / "gray.png", tmp_path / "rgba.png"
    Image.open(src).convert("L").save(gray_p)
    Image.open(src).convert("RGBA").save(rgba_p)
    for p in (gray_p, rgba_p):
        res = al.align(load_rgb(p))
        assert res.ok and res.crop.shape[2] == 3
