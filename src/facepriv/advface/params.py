"""Validation of AdvFace parameters, shared by the protections, the decoder training and the attack.

Every check raises :class:`~facepriv.errors.ParameterError` with ``param`` naming the component
parameter, so the command line names its flag and a YAML config its entry. No torch import here:
validating a config must stay cheap.
"""

from __future__ import annotations

import math
from typing import Any

from facepriv.errors import ParameterError

BOUNDS = ("ball", "step")
ARCHITECTURES = ("transrec", "resrec", "urec")
#: the paper's noise bound, sign-step size and number of PGD steps (section 5.1)
EPS, ALPHA, STEPS = 0.2, 0.2, 40
SEED_MAX = 2**32 - 1
#: decoder output sides the training accepts (pixels)
MIN_SIZE, MAX_SIZE = 8, 512


def _is_int(value: Any) -> bool:
    import numbers

    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def check_number(name: str, value: Any, low: float, strict: bool) -> None:
    """Raise unless ``value`` is a finite number > low (``strict``) or >= low."""
    import numbers

    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        raise ParameterError(f"{name}: must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}",
                             param=name)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Raise unless ``value`` is an integer in [low, high]."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ParameterError(f"{name}: must be an integer {span}, got {value!r}", param=name)


def check_optional_cap(name: str, value: Any, low: int) -> None:
    """None or 0 (no cap), else an integer >= ``low``."""
    if value is None or (_is_int(value) and value == 0):
        return
    check_int(name, value, low)


def check_seed(name: str, value: Any) -> None:
    """An integer from 0 to 2**32 - 1."""
    check_int(name, value, 0, SEED_MAX)


def check_noise_params(eps: Any, alpha: Any, steps: Any, bound: Any, seed: Any) -> None:
    """The noise parameters shared by AdvFace and the random-noise baseline."""
    check_number("eps", eps, 0.0, strict=False)
    check_number("alpha", alpha, 0.0, strict=True)
    check_int("steps", steps, 1)
    if bound not in BOUNDS:
        raise ParameterError(f"bound: must be one of {', '.join(BOUNDS)}, got {bound!r}", param="bound")
    check_seed("seed", seed)


def check_decoder_params(arch: Any, size: Any, epochs: Any, batch_size: Any, lr: Any, seed: Any) -> None:
    """The training parameters of a reconstruction network."""
    if arch not in ARCHITECTURES:
        raise ParameterError(f"arch: must be one of {', '.join(ARCHITECTURES)}, got {arch!r}", param="arch")
    check_int("size", size, MIN_SIZE, MAX_SIZE)
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 2)  # BatchNorm needs two samples per batch
    check_number("lr", lr, 0.0, strict=True)
    check_seed("seed", seed)
