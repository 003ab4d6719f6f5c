"""The ``--device`` and ``--amp/--no-amp`` flags shared by the commands that do torch work.

``--device`` is resolved by :func:`facepriv.device.resolve_device` at the very start of a
handler, before any file is read or written: a malformed value or CUDA asked for on a machine
without it ends with one line naming ``--device`` (exit 2).
"""

from __future__ import annotations

import argparse

DEVICE_HELP = ("where the torch work runs: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N "
               "(default auto); CUDA asked for but absent is an error, never a silent fall-back")


def add_device_flag(p: argparse.ArgumentParser, what: str = "") -> None:
    """Add ``--device DEVICE`` (default ``auto``) to a command's parser."""
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help=DEVICE_HELP if not what else f"{DEVICE_HELP}; {what}")


def add_amp_flag(p: argparse.ArgumentParser) -> None:
    """Add ``--amp/--no-amp``: mixed precision of decoder training on CUDA (default on there; always off on the CPU)."""
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (bfloat16 autocast, or float16 with a gradient scaler) for decoder training "
                        "on CUDA; default on for CUDA, always off on the CPU; recorded in the run's config.json")


def resolve_cli_device(spec: str | None) -> str:
    """``--device`` resolved (:func:`facepriv.device.resolve_device`); the error line starts with ``--device:``.

    Raises
    ------
    ParameterError
        Malformed, or CUDA asked for but absent: ``--device: ...`` (one line, exit 2 in ``main``).
    """
    from facepriv.device import resolve_device
    from facepriv.errors import ParameterError

    try:
        return resolve_device(spec)
    except ParameterError as exc:
        msg = str(exc)
        msg = msg[len("device: "):] if msg.startswith("device: ") else msg
        raise ParameterError(f"--device: {msg}") from None
