"""Shared fixtures: real data from ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEPRIV_SHARED_DATA", REPO.parent / "shared" / "data"))


def _data_dir(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"real test data {p} is absent (expected ../shared/data/{name} beside the repo)")
    return p


@pytest.fixture(scope="session")
def celeba_dir() -> Path:
    """../shared/data/celeba-crops: 5,121 CelebA photos of 250 identities, labels.csv."""
    return _data_dir("celeba-crops")


@pytest.fixture(scope="session")
def facescrub_dir() -> Path:
    """../shared/data/facescrub6: 868 face crops of 6 celebrities, labels.csv."""
    return _data_dir("facescrub6")


@pytest.fixture(scope="session")
def lfw_meta_dir() -> Path:
    """../shared/data/lfw-meta: LFW pairs.txt and gender lists."""
    return _data_dir("lfw-meta")


def celeba_rows(celeba_dir: Path, n_ids: int = 8, per_id: int = 5, balance_gender: bool = True,
                min_photos: int | None = None) -> list[tuple[str, str, str]]:
    """(image, identity, gender) of ``per_id`` photos of ``n_ids`` gender-labelled CelebA people.

    Sorted, so every machine picks the same photos. ``balance_gender``: half female, half male;
    otherwise the first ``n_ids`` identities with enough photos (``min_photos``, default ``per_id``).
    """
    with open(celeba_dir / "labels.csv", newline="") as f:
        rows = sorted((r["image"], r["identity"], r["gender"]) for r in csv.DictReader(f) if r["gender"])
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r[1], []).append(r)
    full = [i for i in sorted(by_id) if len(by_id[i]) >= (min_photos or per_id)]
    if balance_gender:
        ids = [i for g in ("female", "male") for i in [i for i in full if by_id[i][0][2] == g][: n_ids // 2]]
    else:
        ids = full[:n_ids]
    return [r for i in ids for r in by_id[i][:per_id]]


def dlib_templates(celeba_dir: Path, rows: list[tuple[str, str, str]]) -> dict:
    """dlib templates of ``rows`` (photos without a detected face dropped).

    Returns ``{"es": EmbeddingSet, "model": the dlib model, "root": celeba_dir, "crops": aligned chips}``.
    """
    from facepriv.embeddings import EmbeddingSet
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import align_images

    model = get_model("dlib_resnet")
    ac = align_images(celeba_dir, [r[0] for r in rows], model.card.alignment)
    keep = set(ac.ids)
    rows = [r for r in rows if r[0] in keep]
    es = EmbeddingSet(model.embed(ac.crops), np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                      {"gender": np.array([r[2] for r in rows])}, "dlib_resnet", None)
    return {"es": es, "model": model, "root": celeba_dir, "crops": ac.crops}


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Tests run two at a time on two cores: one torch thread each avoids oversubscription."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield
