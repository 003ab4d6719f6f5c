"""Training reconstruction networks on (feature map, face crop) pairs with the L1 loss (Eq. 1/3).

One run folder holds ``config.json`` (architecture, feature shape, output size, model, cut, data
and training settings), ``decoder.pt`` (the latest checkpoint: weights, optimiser, epoch; written
atomically every epoch, loaded with ``weights_only=True``) and ``samples_epochNNN.png`` grids.
``resume=True`` continues from the last finished epoch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facepriv.advface.decoders import build_decoder
from facepriv.errors import InputFileError, OutputExistsError, ParameterError
from facepriv.fileio import atomic_path, write_json_atomic
from facepriv.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderConfig:
    """Everything needed to rebuild and retrain a reconstruction network."""

    arch: str
    feature_shape: tuple[int, int, int]
    out_size: int
    model: str
    cut: str
    input_shape: tuple[int, int, int]
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    role: str = "attacker"
    split_seed: int = 0
    n_train: int = 0


def images_to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [0, 1] (area resize)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = nn.functional.interpolate(t, size=(size, size), mode="area")
    return t


def load_config(run: str | Path) -> DecoderConfig:
    """Read a run's ``config.json`` with clear errors."""
    p = Path(run) / "config.json"
    if not p.is_file():
        raise InputFileError(p, "no decoder run here (config.json missing)")
    try:
        raw = json.loads(p.read_text())
        raw["feature_shape"] = tuple(raw["feature_shape"])
        raw["input_shape"] = tuple(raw["input_shape"])
        return DecoderConfig(**raw)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise InputFileError(p, f"not a valid decoder config ({exc})") from None


def load_decoder(run: str | Path, client: nn.Module | None = None) -> tuple[nn.Module, DecoderConfig]:
    """Rebuild a trained decoder from its run folder (eval mode)."""
    cfg = load_config(run)
    dec = build_decoder(cfg.arch, cfg.feature_shape, cfg.out_size, client, cfg.input_shape)
    ckpt = _load_checkpoint(Path(run) / "decoder.pt")
    try:
        dec.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise InputFileError(Path(run) / "decoder.pt", f"weights do not fit the {cfg.arch} architecture ({exc})") from None
    return dec.eval(), cfg


def _load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise InputFileError(path, "checkpoint missing")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt zip/pickle data
        raise InputFileError(path, f"corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from None
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


def train_decoder(
    features: np.ndarray,
    images: np.ndarray,
    cfg: DecoderConfig,
    out_dir: str | Path,
    client: nn.Module | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> nn.Module:
    """Train a reconstruction network with the L1 loss; checkpoint every epoch.

    Parameters
    ----------
    features : ndarray (N, C, h, w)
        Client feature maps (possibly protected).
    images : ndarray uint8 (N, H, W, 3)
        The aligned crops the features came from (targets, resized to ``cfg.out_size``).
    cfg : DecoderConfig
    out_dir : path
        Run folder.
    client : nn.Module, optional
        The client part E (needed by ``transrec``).
    resume, overwrite : bool
        Continue an existing run / replace it.
    """
    out = Path(out_dir)
    if len(features) != len(images):
        raise ParameterError(f"{len(features)} feature maps but {len(images)} images: they must correspond 1:1")
    if tuple(features.shape[1:]) != tuple(cfg.feature_shape):
        raise ParameterError(f"features have shape {features.shape[1:]}, the config expects {cfg.feature_shape}")
    ckpt_path = out / "decoder.pt"
    if ckpt_path.exists() and not (resume or overwrite):
        raise OutputExistsError(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    dec = build_decoder(cfg.arch, cfg.feature_shape, cfg.out_size, client, cfg.input_shape)
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr)
    start = 0
    if resume and ckpt_path.exists():
        if load_config(out) != cfg:
            raise ParameterError(f"{out}: --resume with different settings than the run was started with")
        ckpt = _load_checkpoint(ckpt_path)
        dec.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["epoch"])
        log.info("resuming %s from epoch %d", out, start)
    else:
        write_json_atomic(out / "config.json", asdict(cfg))
    z_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    x_all = images_to_tensor(images, cfg.out_size)
    rng = np.random.default_rng(cfg.seed)
    for _ in range(start):  # keep the shuffling sequence identical after a resume
        rng.permutation(len(z_all))
    for epoch in range(start, cfg.epochs):
        dec.train()
        order = rng.permutation(len(z_all))
        total, t0 = 0.0, time.perf_counter()
        bar = progress(range(0, len(order), cfg.batch_size), desc=f"{cfg.arch} epoch {epoch + 1}/{cfg.epochs}")
        for i in bar:
            idx = torch.from_numpy(order[i : i + cfg.batch_size])
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = (dec(z_all[idx]) - x_all[idx]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = float(loss.detach())
            total += lv * len(idx)
            bar.set_postfix(l1=f"{lv:.4f}")
        log.info("%s epoch %d: L1 %.4f (%.1f img/s)", cfg.arch, epoch + 1, total / len(order),
                 len(order) / (time.perf_counter() - t0))
        with atomic_path(ckpt_path) as tmp:
            torch.save({"state_dict": dec.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                        "train_l1": total / len(order)}, tmp)
        dec.eval()
        with torch.no_grad():
            save_grid(x_all[:8], dec(z_all[:8]), out / f"samples_epoch{epoch + 1:03d}.png")
    return dec.eval()
