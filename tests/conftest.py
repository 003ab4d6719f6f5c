"""Shared fixtures: real data from ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Tests run two at a time on two cores: one torch thread each avoids oversubscription."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield
