"""Training reconstruction networks on (feature map, face crop) pairs with the L1 loss (Eq. 1/3).

:func:`train_decoder` works in memory (feature maps and crops in, the trained decoder out). With a
run folder it also keeps ``config.json`` (architecture, feature shape, output size, model, cut,
data and training settings), ``decoder.pt`` (the latest checkpoint: weights, optimiser, epoch and
the batch-order generator's state; written atomically every epoch, loaded with
``weights_only=True``) and ``samples_epochNNN.png`` grids. ``resume=True`` continues from the last
finished epoch and gives exactly the weights of an uninterrupted run: the initial weights come
from the run's seed only (a private torch generator state, the process's global one untouched)
and the batch order from a generator whose state is in the checkpoint.

``device`` trains on a resolved torch device (initial weights and batch orders are still drawn on
the CPU; checkpoints hold CPU tensors; the decoder is returned on the CPU). On CUDA, mixed
precision (bfloat16 autocast, or float16 with a gradient scaler) is on unless ``amp=False``; on
the CPU it is always off and nothing changes. The AMP setting used is recorded in ``config.json``
(``amp``); it is not a resume key (a run may be continued with another setting).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facepriv.advface.decoders import build_decoder
from facepriv.advface.params import check_decoder_params
from facepriv.device import autocast, cpu_state, grad_scaler, resolve_amp
from facepriv.errors import InputFileError, OutputExistsError, ParameterError
from facepriv.fileio import atomic_path, write_json_atomic
from facepriv.progress import progress

log = logging.getLogger(__name__)

CHECKPOINT = "decoder.pt"
CONFIG = "config.json"


@dataclass(frozen=True)
class DecoderConfig:
    """Everything needed to rebuild and retrain a reconstruction network (a run's ``config.json``).

    The values come from the ``advface_table1`` attack's parameters (or the flags of
    ``facepriv advface train``, whose defaults are that attack's); nothing has a default here.
    """

    arch: str
    feature_shape: tuple[int, int, int]
    out_size: int
    model: str
    cut: str
    input_shape: tuple[int, int, int]
    epochs: int
    batch_size: int
    lr: float
    seed: int
    role: str
    split_seed: int
    n_train: int
    amp: bool = False  # mixed precision used (CUDA only); recorded, not compared on resume

    def validate(self) -> None:
        """Raise ParameterError naming the parameter (``size`` for ``out_size``)."""
        check_decoder_params(self.arch, self.out_size, self.epochs, self.batch_size, self.lr, self.seed)

    def differences(self, other: DecoderConfig) -> list[str]:
        """``field: this != other`` for every field that differs (``amp`` is not compared)."""
        return [f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
                for f in fields(self) if f.name != "amp" and getattr(self, f.name) != getattr(other, f.name)]


def images_to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [0, 1] (area resize)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = nn.functional.interpolate(t, size=(size, size), mode="area")
    return t


def load_config(run: str | Path) -> DecoderConfig:
    """Read a run's ``config.json`` with clear errors."""
    p = Path(run) / CONFIG
    if not p.is_file():
        raise InputFileError(p, "no decoder run here (config.json missing)")
    try:
        raw = json.loads(p.read_text())
        raw["feature_shape"] = tuple(raw["feature_shape"])
        raw["input_shape"] = tuple(raw["input_shape"])
        return DecoderConfig(**raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as exc:
        raise InputFileError(p, f"not a valid decoder config ({exc})") from None


def _build(cfg: DecoderConfig, client: nn.Module | None) -> nn.Module:
    """The decoder with its initial weights drawn from ``cfg.seed`` alone (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_decoder(cfg.arch, cfg.feature_shape, cfg.out_size, client, cfg.input_shape)


def load_decoder(run: str | Path, client: nn.Module | None = None) -> tuple[nn.Module, DecoderConfig]:
    """Rebuild a trained decoder from its run folder (eval mode)."""
    cfg = load_config(run)
    dec = _build(cfg, client)
    ckpt = _load_checkpoint(Path(run) / CHECKPOINT)
    try:
        dec.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise InputFileError(Path(run) / CHECKPOINT, f"weights do not fit the {cfg.arch} architecture ({exc})") from None
    return dec.eval(), cfg


def _load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise InputFileError(path, "checkpoint missing")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt zip/pickle data
        raise InputFileError(path, f"corrupt or unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise InputFileError(path, "not a facepriv decoder checkpoint (keys state_dict/epoch missing)")
    return ckpt


def save_grid(originals: torch.Tensor, recons: torch.Tensor, path: Path, n: int = 8) -> None:
    """PNG grid: originals on the top row, reconstructions below."""
    from PIL import Image

    k = min(n, len(originals))
    top = torch.cat(list(originals[:k]), dim=2)
    bottom = torch.cat(list(recons[:k]), dim=2)
    grid = (torch.cat([top, bottom], dim=1).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _own_file(name: str) -> bool:
    return name in (CONFIG, CHECKPOINT) or name.startswith(("samples_epoch", f".{CHECKPOINT}.", f".{CONFIG}.", ".samples_epoch"))


def check_run_folder(out: str | Path, resume: bool, overwrite: bool) -> bool:
    """Whether training into ``out`` continues a checkpoint; refuses what it must not touch.

    A missing or empty folder, or one holding only the ``config.json`` of a run killed before
    its first checkpoint, starts afresh. A folder with a checkpoint needs ``resume`` (continue)
    or ``overwrite`` (start again); a folder holding other files needs ``overwrite``.

    Raises
    ------
    InputFileError
        ``out`` is a file.
    OutputExistsError
        A finished or foreign folder without ``resume`` / ``overwrite``.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputFileError(p, "is a file; a decoder run is a folder")
    if not p.is_dir():
        return False
    names = [q.name for q in p.iterdir()]
    if (p / CHECKPOINT).is_file():
        if resume and not overwrite:
            return True
        if overwrite:
            return False
        raise OutputExistsError(p)
    if not all(_own_file(n) for n in names) and not overwrite:
        raise OutputExistsError(p)
    return False


def can_resume(run: str | Path, cfg: DecoderConfig) -> bool:
    """Whether ``run`` holds a checkpoint of a run started with exactly ``cfg``."""
    if not (Path(run) / CHECKPOINT).is_file():
        return False
    try:
        return not load_config(run).differences(cfg)
    except InputFileError:
        return False


def train_decoder(
    features: np.ndarray,
    images: np.ndarray,
    cfg: DecoderConfig,
    out_dir: str | Path | None = None,
    client: nn.Module | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    amp: bool | None = None,
) -> nn.Module:
    """Train a reconstruction network with the L1 loss (in memory; checkpoints with a run folder).

    Parameters
    ----------
    features : ndarray (N, C, h, w)
        Client feature maps (possibly protected).
    images : ndarray uint8 (N, H, W, 3)
        The aligned crops the features came from (targets, resized to ``cfg.out_size``).
    cfg : DecoderConfig
    out_dir : path, optional
        Run folder (config, checkpoint every epoch, sample grids); None keeps nothing on disk.
    client : nn.Module, optional
        The client part E (needed by ``transrec``).
    resume, overwrite : bool
        Continue the run's checkpoint / start again in an existing run folder
        (:func:`check_run_folder`). Resuming needs the same config the run was started with.
    device : str
        Resolved torch device of the training (default the CPU).
    amp : bool, optional
        Mixed precision on CUDA (None: on for CUDA); always off on the CPU. The setting used is
        written to ``config.json`` as ``amp``.

    Returns
    -------
    nn.Module
        The trained decoder in eval mode, on the CPU.
    """
    cfg.validate()
    if len(features) != len(images):
        raise ParameterError(f"{len(features)} feature maps but {len(images)} images: they must correspond 1:1")
    if len(features) < 2:
        raise ParameterError(f"a decoder needs at least 2 training images, got {len(features)}")
    if tuple(features.shape[1:]) != tuple(cfg.feature_shape):
        raise ParameterError(f"features have shape {features.shape[1:]}, the config expects {cfg.feature_shape}")
    out = None if out_dir is None else Path(out_dir)
    cont = out is not None and check_run_folder(out, resume, overwrite)
    use_amp = resolve_amp(device, amp)
    if use_amp != cfg.amp:
        from dataclasses import replace

        cfg = replace(cfg, amp=use_amp)
    dec = _build(cfg, client)  # initial weights drawn on the CPU: the same on any device
    if device != "cpu":
        dec = dec.to(device)
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr)
    scaler = grad_scaler(device, use_amp)
    rng = np.random.default_rng(cfg.seed)
    start = 0
    if out is not None:
        for stale in out.glob(f".{CHECKPOINT}.*"):  # temporary file of a write killed half-way
            stale.unlink()
    if cont:
        assert out is not None
        diff = load_config(out).differences(cfg)
        if diff:
            raise ParameterError(f"{out}: cannot resume: the run was started with other settings ({'; '.join(diff)})")
        ckpt = _load_checkpoint(out / CHECKPOINT)
        try:
            dec.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputFileError(out / CHECKPOINT, f"does not fit this run ({type(exc).__name__})") from None
        start = int(ckpt["epoch"])
        if "rng_state" in ckpt:
            rng.bit_generator.state = json.loads(ckpt["rng_state"])
        else:  # a checkpoint of an older facepriv: replay the batch orders drawn so far
            for _ in range(start):
                rng.permutation(len(features))
        log.info("resuming %s from epoch %d", out, start)
    elif out is not None:
        write_json_atomic(out / CONFIG, asdict(cfg))
    z_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    x_all = images_to_tensor(images, cfg.out_size)
    if device != "cpu":
        z_all, x_all = z_all.to(device), x_all.to(device)
    for epoch in range(start, cfg.epochs):
        dec.train()
        order = rng.permutation(len(z_all))
        total, t0 = 0.0, time.perf_counter()
        bar = progress(range(0, len(order), cfg.batch_size), desc=f"{cfg.arch} epoch {epoch + 1}/{cfg.epochs}")
        for i in bar:
            idx = torch.from_numpy(order[i : i + cfg.batch_size])
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            if device == "cpu":
                loss = (dec(z_all[idx]) - x_all[idx]).abs().mean()
            else:
                idx = idx.to(device)
                with autocast(device, use_amp):
                    out_b = dec(z_all[idx])
                loss = (out_b.float() - x_all[idx]).abs().mean()
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:  # float16 autocast: scale the loss so small gradients survive
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            lv = float(loss.detach())
            total += lv * len(idx)
            bar.set_postfix(l1=f"{lv:.4f}")
        log.info("%s epoch %d: L1 %.4f (%.1f img/s)", cfg.arch, epoch + 1, total / len(order),
                 len(order) / (time.perf_counter() - t0))
        dec.eval()
        if out is not None:
            on_cpu = device == "cpu"
            with atomic_path(out / CHECKPOINT) as tmp:
                torch.save({"state_dict": dec.state_dict() if on_cpu else cpu_state(dec.state_dict()),
                            "optimizer": opt.state_dict() if on_cpu else cpu_state(opt.state_dict()), "epoch": epoch + 1,
                            "train_l1": total / len(order), "rng_state": json.dumps(rng.bit_generator.state)}, tmp)
            with torch.no_grad():
                save_grid(x_all[:8].cpu(), dec(z_all[:8]).float().cpu(), out / f"samples_epoch{epoch + 1:03d}.png")
    return dec.eval() if device == "cpu" else dec.to("cpu").eval()

