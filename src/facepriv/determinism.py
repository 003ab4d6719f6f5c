"""Process state a unit of work must not inherit: global random generators and torch's thread count.

A matrix cell (or any attack run) has to give the same numbers whether it runs first in a fresh
process or after other cells: :func:`reseed_globals` resets the global generators third-party
code may draw from, and :func:`torch_threads` pins the CPU thread count (the float summation
order of a convolution depends on it) to :func:`machine_threads`, a fixed number per machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def machine_threads() -> int:
    """The torch CPU thread count to work with: ``OMP_NUM_THREADS`` when set, else the CPUs usable."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reseed_globals(seed: int) -> None:
    """Reset the global ``random``, NumPy and torch generators to ``seed``.

    facepriv's own attacks use explicit generators; this covers third-party code and plugins
    that draw from the global ones, so a cell never sees what earlier cells drew.
    """
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - resetting the legacy global state on purpose
    torch.manual_seed(seed)
