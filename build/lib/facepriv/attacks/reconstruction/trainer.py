"""Training loop of the reconstruction decoder: checkpoints every epoch, resumable.

A run folder holds ``config.json`` (the resolved configuration; never a protection secret),
``checkpoint.pt`` (decoder + optimizer + scheduler state dicts and the epoch, written atomically
after every epoch), ``decoder.pt`` (decoder weights only), ``history.json`` (loss terms per
epoch) and ``samples/epoch_NNN.png`` (original | reconstruction pairs). Everything is loaded with
``torch.load(..., weights_only=True)``; a damaged file gives a clear error naming it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facepriv.attacks.reconstruction.decoder import STAGES, FaceDecoder
from facepriv.attacks.reconstruction.losses import ReconstructionLoss
from facepriv.attacks.reconstruction.viz import pair_grid, save_png
from facepriv.errors import InputFileError, OutputExistsError, ParameterError
from facepriv.fileio import atomic_path, write_json_atomic
from facepriv.progress import progress

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "decoder.pt"
CONFIG = "config.json"
HISTORY = "history.json"
#: config fields that must agree when a run is resumed
RESUME_KEYS = ("size", "embedding_dim", "batch_size", "lr", "step_size", "gamma", "w_ssim", "w_id", "seed", "model", "protection")


@dataclass
class TrainConfig:
    """Everything that defines a decoder training run (all public; written to ``config.json``).

    Paper values (WIFS 2023): Adam lr 1e-3, StepLR(10, 0.5), batch 32, 100 epochs, loss weights
    0.1 (SSIM) and 0.005 (ID), 112x112 output.
    """

    size: int = 64
    embedding_dim: int = 128
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    step_size: int = 10
    gamma: float = 0.5
    w_ssim: float = 0.1
    w_id: float = 0.005
    seed: int = 0
    test_fraction: float = 0.1
    model: str = "dlib_resnet"
    protection: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ParameterError for impossible values."""
        if self.size not in STAGES:
            raise ParameterError(f"--size must be one of {sorted(STAGES)}, got {self.size}")
        for name in ("epochs", "batch_size", "step_size", "embedding_dim"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ParameterError(f"learning rate must be positive, got {self.lr}")
        if self.w_ssim < 0 or self.w_id < 0:
            raise ParameterError("loss weights must be non-negative")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring unknown keys (forward compatibility)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a clear error for missing or damaged files."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such checkpoint file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputFileError(p, f"corrupt or not a facepriv checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict):
        raise InputFileError(p, f"not a facepriv checkpoint (holds {type(state).__name__}, expected a dict)")
    return state


def load_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """Read ``config.json`` of a run folder."""
    p = Path(run_dir) / CONFIG
    if not p.is_file():
        raise InputFileError(p, "no config.json: is this a 'facepriv reconstruct train' run folder?")
    try:
        return TrainConfig.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputFileError(p, f"not a valid run config ({exc})") from None


def load_decoder(run_dir: str | os.PathLike[str]) -> tuple[FaceDecoder, TrainConfig]:
    """The trained decoder (eval mode) and config of a run folder."""
    cfg = load_config(run_dir)
    path = Path(run_dir) / WEIGHTS
    state = load_state(path)
    dec = FaceDecoder(cfg.embedding_dim, cfg.size)
    try:
        dec.load_state_dict(state)
    except RuntimeError as exc:
        raise InputFileError(path, f"weights do not fit a {cfg.embedding_dim}-d, {cfg.size}px decoder ({str(exc)[:200]})") from None
    return dec.eval(), cfg


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3)."""
    return (images.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()).copy()


@torch.no_grad()
def reconstruct(decoder: nn.Module, embeddings: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Decode embeddings (N, D) to uint8 images (N, s, s, 3) in eval mode."""
    decoder.eval()
    outs = []
    for i in range(0, len(embeddings), batch_size):
        z = torch.from_numpy(np.ascontiguousarray(embeddings[i : i + batch_size], dtype=np.float32))
        outs.append(to_uint8(decoder(z)))
    return np.concatenate(outs) if outs else np.zeros((0, 0, 0, 3), np.uint8)


@dataclass
class TrainResult:
    """Outcome of :func:`train_decoder`."""

    decoder: FaceDecoder
    history: list[dict[str, float]]
    epochs_run: int
    seconds: float


def _save_checkpoint(run: Path, decoder, opt, sched, epoch: int, history: list[dict[str, float]]) -> None:
    with atomic_path(run / WEIGHTS) as tmp:
        torch.save(decoder.state_dict(), tmp)
    state = {
        "epoch": epoch,
        "decoder": decoder.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "history": history,
    }
    with atomic_path(run / CHECKPOINT) as tmp:  # last: a checkpoint always has matching weights beside it
        torch.save(state, tmp)
    write_json_atomic(run / HISTORY, history)


def _check_resume(run: Path, cfg: TrainConfig) -> None:
    old = load_config(run)
    diff = [k for k in RESUME_KEYS if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise ParameterError(
            f"{run}: cannot resume, the run was made with different {', '.join(diff)} "
            f"({', '.join(f'{k}={getattr(old, k)!r}' for k in diff)})"
        )


def train_decoder(
    inputs: np.ndarray,
    targets: np.ndarray,
    cfg: TrainConfig,
    run_dir: str | os.PathLike[str],
    recognition: nn.Module | None,
    input_size: tuple[int, int] = (150, 150),
    preview: tuple[np.ndarray, np.ndarray] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
) -> TrainResult:
    """Train a :class:`FaceDecoder` from ``inputs`` (embeddings, protected or not) to ``targets``.

    Parameters
    ----------
    inputs : ndarray, shape (N, D)
        What the attacker feeds the decoder (protected templates when attacking a protection).
    targets : ndarray of uint8, shape (N, size, size, 3)
        The aligned crops the templates came from, at the decoder's output size.
    cfg : TrainConfig
    run_dir : path
        Run folder (created); see the module docstring for its content.
    recognition : nn.Module or None
        Frozen differentiable recognition network for the ID loss (None: no ID term).
    input_size : (int, int)
        That network's input size.
    preview : (embeddings, crops), optional
        Samples decoded into ``samples/epoch_NNN.png`` after every epoch.
    resume : bool
        Continue from ``checkpoint.pt`` in ``run_dir``.
    overwrite : bool
        Start afresh even if ``run_dir`` already holds a run.
    max_steps : int, optional
        Stop after this many optimisation steps in total (for tests and benchmarks).
    """
    cfg.validate()
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim != 2 or inputs.shape[1] != cfg.embedding_dim:
        raise ParameterError(f"inputs must be (N, {cfg.embedding_dim}), got {inputs.shape}")
    if targets.shape != (len(inputs), cfg.size, cfg.size, 3) or targets.dtype != np.uint8:
        raise ParameterError(f"targets must be uint8 ({len(inputs)}, {cfg.size}, {cfg.size}, 3), got {targets.dtype} {targets.shape}")
    if len(inputs) < 2:
        raise ParameterError(f"need at least 2 training samples, got {len(inputs)}")
    run = Path(run_dir)
    has_run = (run / CHECKPOINT).exists() or (run / CONFIG).exists()
    if has_run and not (resume or overwrite):
        raise OutputExistsError(run)
    if resume and not (run / CHECKPOINT).exists():
        raise InputFileError(run / CHECKPOINT, "nothing to resume: no checkpoint in the run folder")
    torch.manual_seed(cfg.seed)
    decoder = FaceDecoder(cfg.embedding_dim, cfg.size)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    history: list[dict[str, float]] = []
    start = 0
    if resume:
        _check_resume(run, cfg)
        state = load_state(run / CHECKPOINT)
        try:
            decoder.load_state_dict(state["decoder"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = int(state["epoch"])
            history = list(state.get("history", []))
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise InputFileError(run / CHECKPOINT, f"checkpoint does not match this decoder ({str(exc)[:200]})") from None
        log.info("resuming %s after epoch %d", run, start)
    else:
        run.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run / CONFIG, cfg.to_dict())

    loss_fn = ReconstructionLoss(recognition, input_size, cfg.w_ssim, cfg.w_id)
    x_all = to_tensor(targets)
    z_all = torch.from_numpy(inputs)
    emb_all = None
    if loss_fn.uses_id and start < cfg.epochs:
        # embeddings of the real targets are fixed: compute them once (same resize path as gen)
        emb_all = torch.cat(
            [loss_fn.target_embeddings(x_all[i : i + 64]) for i in progress(range(0, len(x_all), 64), desc="target embeddings")]
        )
    t0, steps = time.time(), 0
    n, bs = len(inputs), cfg.batch_size
    for epoch in range(start, cfg.epochs):
        decoder.train()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # per-epoch order survives resume
        order = torch.randperm(n, generator=g)
        batches = [order[i : i + bs] for i in range(0, n, bs)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm needs 2+ samples
            batches = batches[:-1]
        sums = {"loss": 0.0, "mse": 0.0, "ssim": 0.0, "id": 0.0}
        bar = progress(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        done = 0
        for idx in bar:
            gen = decoder(z_all[idx])
            terms = loss_fn(gen, x_all[idx], None if emb_all is None else emb_all[idx])
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            opt.step()
            k = len(idx)
            sums["loss"] += float(terms.total.detach()) * k
            sums["mse"] += terms.mse * k
            sums["ssim"] += terms.ssim * k
            sums["id"] += terms.id * k
            done += k
            steps += 1
            bar.set_postfix(loss=f"{sums['loss'] / done:.4f}", ssim=f"{sums['ssim'] / done:.3f}")
            if max_steps is not None and steps >= max_steps:
                break
        sched.step()
        rec = {k: v / max(done, 1) for k, v in sums.items()}
        rec.update(epoch=epoch + 1, lr=float(opt.param_groups[0]["lr"]), seconds=time.time() - t0)
        history.append(rec)
        _save_checkpoint(run, decoder, opt, sched, epoch + 1, history)
        if preview is not None:
            recon = reconstruct(decoder, preview[0])
            save_png(pair_grid(preview[1], recon), run / "samples" / f"epoch_{epoch + 1:03d}.png")
        log.info("epoch %d/%d: loss %.4f mse %.4f ssim %.3f id %.4f", epoch + 1, cfg.epochs, rec["loss"], rec["mse"], rec["ssim"], rec["id"])
        if max_steps is not None and steps >= max_steps:
            break
    decoder.eval()
    return TrainResult(decoder, history, len(history), time.time() - t0)
