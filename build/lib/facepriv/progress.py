"""Progress bars on stderr (tqdm), silenced by ``--quiet`` or ``FACEPRIV_NO_PROGRESS=1``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, **kwargs: Any):
    """A tqdm progress bar on stderr, disabled when progress output is off."""
    from tqdm.auto import tqdm

    disable = os.environ.get("FACEPRIV_NO_PROGRESS", "") not in ("", "0")
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=disable, **kwargs)
