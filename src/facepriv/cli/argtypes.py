"""argparse types shared by the commands: a bad number is refused while parsing, in one line.

``type=seed`` turns ``--seed -1`` into ``facepriv CMD: error: argument --seed: ...`` (exit 2)
instead of a numpy traceback deep inside the work. The bounds are the ones every consumer
accepts: numpy generators take any integer >= 0, scikit-learn's ``random_state`` needs < 2**32.
"""

from __future__ import annotations

import argparse
import math

SEED_MAX = 2**32 - 1


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer value: {text!r}") from None


def seed(text: str) -> int:
    """A seed: an integer from 0 to 2**32 - 1."""
    v = _int(text)
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{v} is not a valid seed: expected an integer from 0 to {SEED_MAX}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not (math.isfinite(v) and 0 < v < 1):
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text}")
    return v
