"""Training loop of the reconstruction decoder: checkpoints every epoch, resumable to the bit.

The run folder and its files are described in :mod:`facepriv.attacks.reconstruction.runfolder`.
Every random draw of a training comes from the configuration: the decoder's initial weights from
the torch generator seeded with ``cfg.seed`` (drawn inside :func:`torch.random.fork_rng`, so the
global random state is neither read nor changed), the batch order of epoch ``e`` from a generator
seeded with ``(cfg.seed, e)``; the checkpoint after every epoch holds the decoder, optimizer and
scheduler states and the torch random state, so training N epochs in one go and training k
epochs, being killed, and resuming to N give bit-identical decoders. Everything is loaded with
``torch.load(..., weights_only=True)``; a damaged file gives a clear error naming it.

``device`` (a resolved torch device, default ``"cpu"``) says where the decoder and the identity
network run; random draws (initial weights, batch orders) stay on the CPU generators, so a run
starts from the same weights on any device, and checkpoints are always written with CPU tensors
(a run trained on a GPU resumes or evaluates anywhere). ``amp`` turns on mixed precision on CUDA
only (:func:`facepriv.device.resolve_amp`): the decoder and the identity network run under
autocast (bfloat16, or float16 with a gradient scaler), the MSE and SSIM terms in float32. The
device and the AMP setting are recorded in ``config.json`` (``extra.device``, ``extra.amp``); on
the CPU nothing about the computation changes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facepriv.attacks.reconstruction.decoder import FaceDecoder
from facepriv.attacks.reconstruction.losses import ReconstructionLoss
from facepriv.attacks.reconstruction.runfolder import (  # noqa: F401 - re-exported for callers
    CHECKPOINT,
    CONFIG,
    HISTORY,
    RESUME_KEYS,
    SAMPLES,
    SPLIT,
    WEIGHTS,
    TrainConfig,
    check_resume_config,
    check_run_folder,
    clear_run,
    leftovers,
    load_config,
    load_state,
)
from facepriv.attacks.reconstruction.viz import pair_grid, save_png
from facepriv.device import autocast, cpu_state, grad_scaler, module_on, resolve_amp, to_device
from facepriv.errors import InputFileError, ParameterError
from facepriv.fileio import FolderLock, atomic_path, write_json_atomic
from facepriv.progress import progress

log = logging.getLogger(__name__)


def load_decoder(run_dir: str | os.PathLike[str]) -> tuple[FaceDecoder, TrainConfig]:
    """The trained decoder (eval mode) and config of a run folder."""
    cfg = load_config(run_dir)
    path = Path(run_dir) / WEIGHTS
    state = load_state(path)
    dec = FaceDecoder(cfg.embedding_dim, cfg.size)
    try:
        dec.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]  # torch's message spans lines; the error is one line
        raise InputFileError(path, f"weights do not fit a {cfg.embedding_dim}-d, {cfg.size}px decoder ({detail})") from None
    return dec.eval(), cfg


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3)."""
    return (images.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()).copy()


def module_device(module: nn.Module) -> str:
    """Device of a module's first parameter (``"cpu"`` for a module without parameters)."""
    for p in module.parameters():
        return str(p.device)
    return "cpu"


@torch.no_grad()
def reconstruct(decoder: nn.Module, embeddings: np.ndarray, batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """Decode embeddings (N, D) to uint8 images (N, s, s, 3) in eval mode.

    ``device`` (default: where the decoder is) runs the decoding there; the caller's decoder is
    not moved (a copy is, see :func:`facepriv.device.module_on`).
    """
    decoder.eval()
    if device is not None:
        decoder = module_on(decoder, device)
    dev = module_device(decoder)
    outs = []
    for i in range(0, len(embeddings), batch_size):
        z = torch.from_numpy(np.ascontiguousarray(embeddings[i : i + batch_size], dtype=np.float32))
        outs.append(to_uint8(decoder(to_device(z, dev))))
    return np.concatenate(outs) if outs else np.zeros((0, 0, 0, 3), np.uint8)


@dataclass
class TrainResult:
    """Outcome of :func:`train_decoder`."""

    decoder: FaceDecoder
    history: list[dict[str, float]]
    epochs_run: int
    seconds: float


def _save_checkpoint(run: Path, decoder, opt, sched, epoch: int, history: list[dict[str, float]]) -> None:
    on_cpu = module_device(decoder) == "cpu"
    weights = decoder.state_dict() if on_cpu else cpu_state(decoder.state_dict())
    with atomic_path(run / WEIGHTS) as tmp:
        torch.save(weights, tmp)
    state = {
        "epoch": epoch,
        "decoder": weights,
        "optimizer": opt.state_dict() if on_cpu else cpu_state(opt.state_dict()),
        "scheduler": sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
    }
    with atomic_path(run / CHECKPOINT) as tmp:  # last: a checkpoint always has matching weights beside it
        torch.save(state, tmp)
    write_json_atomic(run / HISTORY, history)


def _check_resume(run: Path, cfg: TrainConfig, split: dict[str, Any] | None) -> None:
    check_resume_config(run, cfg)
    if split is not None and (run / SPLIT).is_file():
        import json

        try:
            before = json.loads((run / SPLIT).read_text(encoding="utf-8"))["train_identities"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFileError(run / SPLIT, f"not a valid split file ({exc})") from None
        if sorted(before) != sorted(split["train_identities"]):
            raise ParameterError(f"{run}: cannot resume, the run was trained on other identities "
                                 "(other embeddings, test fraction or max_train)")


def _resume_state(run: Path, decoder, opt, sched) -> tuple[int, list[dict[str, float]]]:
    """Load ``checkpoint.pt`` into the decoder, optimizer, scheduler and the torch random state."""
    state = load_state(run / CHECKPOINT)
    try:
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"]), list(state.get("history", []))
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InputFileError(run / CHECKPOINT, f"checkpoint does not match this decoder ({str(exc)[:200]})") from None


def train_decoder(
    inputs: np.ndarray,
    targets: np.ndarray,
    cfg: TrainConfig,
    run_dir: str | os.PathLike[str] | None,
    recognition: nn.Module | None,
    input_size: tuple[int, int] = (150, 150),
    preview: tuple[np.ndarray, np.ndarray] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    split: dict[str, Any] | None = None,
    device: str = "cpu",
    amp: bool | None = None,
) -> TrainResult:
    """Train a :class:`FaceDecoder` from ``inputs`` (embeddings, protected or not) to ``targets``.

    Parameters
    ----------
    inputs : ndarray, shape (N, D)
        What the attacker feeds the decoder (protected templates when attacking a protection).
    targets : ndarray of uint8, shape (N, size, size, 3)
        The aligned crops the templates came from, at the decoder's output size.
    cfg : TrainConfig
    run_dir : path or None
        Run folder (created; see :mod:`~facepriv.attacks.reconstruction.runfolder`); None trains
        in memory and writes nothing.
    recognition : nn.Module or None
        Frozen differentiable recognition network for the ID loss (None: no ID term).
    input_size : (int, int)
        That network's input size.
    preview : (embeddings, crops), optional
        Samples decoded into ``samples/epoch_NNN.png`` after every epoch.
    resume : bool
        Continue from ``checkpoint.pt`` in ``run_dir`` (a run without a checkpoint starts afresh).
    overwrite : bool
        Start afresh even if ``run_dir`` holds a run with a checkpoint.
    max_steps : int, optional
        Stop after this many optimisation steps in total (for tests and benchmarks).
    split : dict, optional
        Written to ``split.json`` (train / test identities); on resume it must name the same
        training identities as the run's.
    device : str
        Resolved torch device of the training (:func:`facepriv.device.resolve_device`); the
        returned decoder is on the CPU whatever the device.
    amp : bool, optional
        Mixed precision on CUDA (None: on for CUDA); always off on the CPU. Recorded in
        ``config.json`` as ``extra.amp`` with ``extra.device``.
    """
    cfg.validate()
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim != 2 or inputs.shape[1] != cfg.embedding_dim:
        raise ParameterError(f"inputs must be (N, {cfg.embedding_dim}), got {inputs.shape}")
    if targets.shape != (len(inputs), cfg.size, cfg.size, 3) or targets.dtype != np.uint8:
        raise ParameterError(f"targets must be uint8 ({len(inputs)}, {cfg.size}, {cfg.size}, 3), got {targets.dtype} {targets.shape}")
    if len(inputs) < 2:
        raise ParameterError(f"need at least 2 training samples, got {len(inputs)}")
    use_amp = resolve_amp(device, amp)
    cfg = dataclasses.replace(cfg, extra={**cfg.extra, "device": device, "amp": use_amp})
    if run_dir is None:
        return _train(inputs, targets, cfg, None, recognition, input_size, preview, False, max_steps, device, use_amp)
    run = Path(run_dir)
    check_run_folder(run, resume, overwrite)  # before the lock creates the folder
    with FolderLock(run, "training"):
        mode = check_run_folder(run, resume, overwrite)
        if mode == "resume":
            _check_resume(run, cfg, split)
            for p in leftovers(run):  # temporary files of a write the last run was killed in
                log.info("removing %s (left by an interrupted write)", p)
                p.unlink(missing_ok=True)
        else:
            clear_run(run)
        write_json_atomic(run / CONFIG, cfg.to_dict())
        if split is not None:
            write_json_atomic(run / SPLIT, split)
        return _train(inputs, targets, cfg, run, recognition, input_size, preview, mode == "resume", max_steps,
                      device, use_amp)


def _train(inputs, targets, cfg: TrainConfig, run: Path | None, recognition, input_size, preview, resume: bool,
           max_steps: int | None, device: str = "cpu", amp: bool = False) -> TrainResult:
    with torch.random.fork_rng(devices=[]):  # draws from cfg.seed, leaves the global state alone
        torch.manual_seed(cfg.seed)
        decoder = FaceDecoder(cfg.embedding_dim, cfg.size)  # initial weights drawn on the CPU: equal on any device
        if device != "cpu":
            decoder = decoder.to(device)
        opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
        history: list[dict[str, float]] = []
        start = 0
        if resume and run is not None:
            start, history = _resume_state(run, decoder, opt, sched)
            log.info("resuming %s after epoch %d", run, start)
        res = _epochs(inputs, targets, cfg, run, recognition, input_size, preview, max_steps,
                      decoder, opt, sched, start, history, device, amp)
    if device != "cpu":
        res.decoder.to("cpu")  # callers get a CPU decoder whatever the device
    return res


class _Autocast(nn.Module):
    """A frozen network run under autocast on CUDA, its output back in float32."""

    def __init__(self, net: nn.Module, device: str) -> None:
        super().__init__()
        self.net = net
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, True):
            return self.net(x).float()


def _epochs(inputs, targets, cfg: TrainConfig, run: Path | None, recognition, input_size, preview, max_steps,
            decoder, opt, sched, start: int, history: list[dict[str, float]], device: str = "cpu",
            amp: bool = False) -> TrainResult:
    if recognition is not None and device != "cpu":
        recognition = module_on(recognition, device)
        if amp:
            recognition = _Autocast(recognition, device)
    scaler = grad_scaler(device, amp)
    loss_fn = ReconstructionLoss(recognition, input_size, cfg.w_ssim, cfg.w_id)
    x_all = to_tensor(targets)
    z_all = torch.from_numpy(inputs)
    emb_all = None
    if loss_fn.uses_id and start < cfg.epochs:
        # embeddings of the real targets are fixed: compute them once (same resize path as gen)
        emb_all = torch.cat(
            [loss_fn.target_embeddings(to_device(x_all[i : i + 64], device))
             for i in progress(range(0, len(x_all), 64), desc="target embeddings")]
        )
    t0, steps = time.time(), 0
    n, bs = len(inputs), cfg.batch_size
    for epoch in range(start, cfg.epochs):
        decoder.train()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # per-epoch order: no state to save
        order = torch.randperm(n, generator=g)
        batches = [order[i : i + bs] for i in range(0, n, bs)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm needs 2+ samples
            batches = batches[:-1]
        sums = {"loss": 0.0, "mse": 0.0, "ssim": 0.0, "id": 0.0}
        bar = progress(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        done = 0
        for idx in bar:
            if device == "cpu":
                gen = decoder(z_all[idx])
                terms = loss_fn(gen, x_all[idx], None if emb_all is None else emb_all[idx])
            else:
                with autocast(device, amp):
                    gen = decoder(to_device(z_all[idx], device))
                terms = loss_fn(gen.float(), to_device(x_all[idx], device),
                                None if emb_all is None else emb_all[to_device(idx, device)])
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                terms.total.backward()
                opt.step()
            else:  # float16 autocast: scale the loss so small gradients survive
                scaler.scale(terms.total).backward()
                scaler.step(opt)
                scaler.update()
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
        if run is not None:
            _save_checkpoint(run, decoder, opt, sched, epoch + 1, history)
            if preview is not None:
                recon = reconstruct(decoder, preview[0])
                save_png(pair_grid(preview[1], recon), run / SAMPLES / f"epoch_{epoch + 1:03d}.png")
        log.info("epoch %d/%d: loss %.4f mse %.4f ssim %.3f id %.4f", epoch + 1, cfg.epochs, rec["loss"], rec["mse"], rec["ssim"], rec["id"])
        if max_steps is not None and steps >= max_steps:
            break
    decoder.eval()
    return TrainResult(decoder, history, len(history), time.time() - t0)
