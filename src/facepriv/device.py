"""Where torch work runs: one ``device`` option (``auto``, ``cpu``, ``cuda``, ``cuda:N``) for every command.

``auto`` picks the first CUDA device when torch sees one, else the CPU. Asking for CUDA on a
machine without it is a user error naming the option, never a silent fall-back: a number
measured on the CPU must not be reported as a GPU run (or the other way round).
"""

from __future__ import annotations

import re

from facepriv.errors import ParameterError

#: what a user may write
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(spec: str | None) -> str:
    """The spec normalised (``None`` -> ``"auto"``); ParameterError(param="device") if malformed."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if not _SPEC.match(text):
        raise ParameterError(f"device: expected {DEVICE_CHOICES}, got {spec!r}", param="device")
    return text


def resolve_device(spec: str | None = "auto") -> str:
    """The torch device string to use for ``spec`` (``"cpu"`` or ``"cuda:N"``).

    Raises
    ------
    ParameterError
        ``spec`` is malformed, or names CUDA (or a CUDA index) this machine does not have.
    """
    text = check_device_spec(spec)
    if text == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if text == "auto":
        return "cuda:0" if available else "cpu"
    if not available:
        raise ParameterError(f"device: {text} asked for, but torch sees no CUDA device on this machine "
                             "(use --device cpu or auto)", param="device")
    index = int(text.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ParameterError(f"device: {text} asked for, but this machine has {count} CUDA device(s)", param="device")
    return f"cuda:{index}"
