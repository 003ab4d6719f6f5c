"""Where torch work runs: one ``device`` option (``auto``, ``cpu``, ``cuda``, ``cuda:N``) for every command.

``auto`` picks the first CUDA device when torch sees one, else the CPU. Asking for CUDA on a
machine without it is a user error naming the option, never a silent fall-back: a number
measured on the CPU must not be reported as a GPU run (or the other way round).
"""

from __future__ import annotations

import re
import weakref

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


def is_cuda(device: str | None) -> bool:
    """Whether a resolved device string names a CUDA device."""
    return str(device or "cpu").startswith("cuda")


def resolve_amp(device: str | None, amp: bool | None = None) -> bool:
    """Whether mixed precision is used for training on ``device``.

    ``None`` (the default) means on for CUDA, off on the CPU; ``True`` on the CPU is ignored (CPU
    training is always full float32, so CPU numbers never change).
    """
    return is_cuda(device) and amp is not False


def amp_dtype(device: str | None):
    """The autocast dtype on ``device``: bfloat16 where the GPU supports it, else float16."""
    import torch

    if is_cuda(device) and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: str | None, enabled: bool):
    """An autocast context for ``device`` when ``enabled`` and CUDA, else a no-op context.

    With ``enabled=False`` (always on the CPU) nothing changes: the context does nothing.
    """
    import contextlib

    if not (enabled and is_cuda(device)):
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda", dtype=amp_dtype(device))


def grad_scaler(device: str | None, enabled: bool):
    """A ``torch.amp.GradScaler`` when float16 autocast is used on CUDA, else None (bf16 needs none)."""
    if not (enabled and is_cuda(device)):
        return None
    import torch

    if amp_dtype(device) == torch.bfloat16:
        return None
    return torch.amp.GradScaler("cuda")


def to_device(x, device: str | None):
    """``x`` (a tensor) on ``device``; the tensor itself when it is already there (no copy on the CPU)."""
    if device is None or str(x.device) == str(device) or (str(device) == "cpu" and x.device.type == "cpu"):
        return x
    return x.to(device, non_blocking=True)


_MODULE_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {device: copy}


def module_on(module, device: str | None):
    """``module`` on ``device`` without moving the caller's object.

    On the CPU (and for a module already on ``device``) the module itself is returned, so CPU work
    is exactly what it was. For CUDA a copy is made once per (module, device) and kept while the
    module lives: cached networks (a model's ``torch_module()``) stay on the CPU for every other
    user. Meant for networks that are not trained any more (recognition networks, heads, trained
    decoders): a copy does not follow later changes of the module's weights.
    """
    if module is None or device is None or str(device) == "cpu":
        return module
    try:
        current = next(iter(module.parameters())).device
    except StopIteration:
        current = None
    if current is not None and str(current) == str(device):
        return module
    import copy

    copies = _MODULE_COPIES.setdefault(module, {})
    if device not in copies:
        copies[device] = copy.deepcopy(module).to(device)
    return copies[device]


def cpu_state(obj):
    """A state dict (nested dicts / lists / tuples of tensors) with every tensor copied to the CPU.

    Checkpoints are written with it, so a run trained on a GPU loads anywhere.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_state(v) for v in obj)
    return obj


def synchronize(device: str | None) -> None:
    """Wait for queued CUDA work on ``device`` (for timings); a no-op on the CPU."""
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(device)
