"""Embeddings .npz format: round trip, other tools' files, and every malformed-file error."""

from __future__ import annotations

import numpy as np
import pytest

from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings
from facepriv.errors import InputFileError, OutputExistsError


def _es(n: int = 6, d: int = 4) -> EmbeddingSet:
    rng = np.random.default_rng(0)
    return EmbeddingSet(
        rng.normal(size=(n, d)).astype(np.float32),
        np.array([f"p{i}/{i}.jpg" for i in range(n)]),
        np.array([f"p{i % 3}" for i in range(n)]),
        {"gender": np.array(["male", "female", ""] * (n // 3))},
        model="dlib_resnet",
    )


def test_round_trip(tmp_path):
    es = _es()
    p = save_embeddings(es, tmp_path / "e.npz")
    back = load_embeddings(p)
    np.testing.assert_array_equal(back.embeddings, es.embeddings)
    assert list(back.ids) == list(es.ids)
    assert list(back.gender) == list(es.gender)
    assert back.model == "dlib_resnet" and back.protection is None


def test_refuses_overwrite_and_leaves_no_temp(tmp_path):
    p = save_embeddings(_es(), tmp_path / "e.npz")
    with pytest.raises(OutputExistsError):
        save_embeddings(_es(), p)
    save_embeddings(_es(), p, overwrite=True)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["e.npz"]


def test_other_tools_file_with_numeric_labels(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, embeddings=np.ones((3, 2), np.float64), ids=np.array(["a", "b", "c"]), identity=np.array([1, 2, 2]),
             age=np.array([30.0, np.nan, 41.0]))
    es = load_embeddings(p)
    assert es.embeddings.dtype == np.float32
    assert list(es.identity) == ["1", "2", "2"]
    assert list(es.attribute("age")) == ["30", "", "41"]
    with pytest.raises(KeyError, match="gender"):
        es.attribute("gender")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"embeddings": np.ones((2, 3))}, "missing key"),
        ({"embeddings": np.ones(3), "ids": np.array(["a"]), "identity": np.array(["a"])}, "2-d"),
        ({"embeddings": np.array([[1.0, np.nan]]), "ids": np.array(["a"]), "identity": np.array(["a"])}, "NaN"),
        ({"embeddings": np.ones((2, 2)), "ids": np.array(["a"]), "identity": np.array(["a", "b"])}, "'ids' has shape"),
        ({"embeddings": np.ones((2, 2)), "ids": np.array(["a", "b"], dtype=object), "identity": np.array(["a", "b"])}, "needs pickle|would need pickle"),
    ],
)
def test_malformed_files(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(InputFileError, match=message) as info:
        load_embeddings(p)
    assert str(p) in str(info.value)


def test_not_an_npz(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"hello")
    with pytest.raises(InputFileError, match="not an npz archive"):
        load_embeddings(p)
    with pytest.raises(InputFileError, match="no such file"):
        load_embeddings(tmp_path / "missing.npz")
