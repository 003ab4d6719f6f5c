"""Run folders of the reconstruction decoder: configuration, state files, what may be started or resumed.

A run folder holds ``config.json`` (the resolved :class:`TrainConfig`; never a protection secret),
``split.json`` (training / test identities), ``checkpoint.pt`` (decoder, optimizer, scheduler,
torch random state, epoch, history; written atomically after every epoch), ``decoder.pt``
(decoder weights only), ``history.json`` (loss terms per epoch), ``samples/epoch_NNN.png`` and
``.facepriv.lock`` (held while a training writes to the folder).

:func:`run_state` tells a new folder (absent, empty, or holding only leftovers of a killed run such
as ``.checkpoint.pt.*.tmp*`` files), a started run (valid ``config.json`` but no checkpoint: killed
before its first epoch ended, so nothing is lost by starting it afresh) and a run with a checkpoint
(resumable). Any other non-empty folder is refused: nothing in it is ever touched.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facepriv.attacks.reconstruction.attack import ReconstructionAttack, check_train_params
from facepriv.errors import FacePrivError, InputFileError, OutputExistsError, ParameterError
from facepriv.fileio import LOCK_FILE

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "decoder.pt"
CONFIG = "config.json"
HISTORY = "history.json"
SPLIT = "split.json"
SAMPLES = "samples"
LOCK = LOCK_FILE
#: files a training run writes (``--overwrite`` and a fresh start remove exactly these)
OWN_FILES = (CHECKPOINT, WEIGHTS, CONFIG, HISTORY, SPLIT)
#: config fields that must agree when a run is resumed
RESUME_KEYS = ("size", "embedding_dim", "batch_size", "lr", "step_size", "gamma", "w_ssim", "w_id", "seed", "test_fraction",
               "model", "protection")
#: of those, the keys known before the data are read (checked before any work)
SETTINGS_KEYS = RESUME_KEYS[:10]

_D = ReconstructionAttack.param_defaults()


@dataclass
class TrainConfig:
    """Everything that defines a decoder training run (all public; written to ``config.json``).

    The defaults of the attack parameters are those of
    :class:`~facepriv.attacks.reconstruction.attack.ReconstructionAttack` (one source); paper
    values (WIFS 2023): 112 px, 100 epochs, 10 % test identities, Adam 1e-3, StepLR(10, 0.5),
    batch 32, loss weights 0.1 (SSIM) and 0.005 (ID).
    """

    size: int = _D["size"]
    embedding_dim: int = 128
    epochs: int = _D["epochs"]
    batch_size: int = _D["batch_size"]
    lr: float = _D["lr"]
    step_size: int = _D["step_size"]
    gamma: float = _D["gamma"]
    w_ssim: float = _D["w_ssim"]
    w_id: float = _D["w_id"]
    seed: int = _D["seed"]
    test_fraction: float = _D["test_fraction"]
    model: str = "dlib_resnet"
    protection: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ParameterError (``param`` = the attack parameter) for impossible values."""
        check_train_params(size=self.size, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           step_size=self.step_size, gamma=self.gamma, w_ssim=self.w_ssim, w_id=self.w_id,
                           test_fraction=self.test_fraction, seed=self.seed)
        if isinstance(self.embedding_dim, bool) or not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
            raise ParameterError(f"embedding_dim: must be a positive integer, got {self.embedding_dim!r}")

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
    import torch

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
    """Read ``config.json`` of a run folder (clear errors naming the folder or the file)."""
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise InputFileError(run, "is a file, not a run folder of 'facepriv reconstruct train'")
    p = run / CONFIG
    if not p.is_file():
        raise InputFileError(p, "no config.json: is this a 'facepriv reconstruct train' run folder?")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(d, dict):
            raise TypeError(f"holds a {type(d).__name__}, not an object")
        cfg = TrainConfig.from_dict(d)
        cfg.validate()
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, FacePrivError) as exc:
        raise InputFileError(p, f"not a valid run config ({' '.join(str(exc).split())[:200]})") from None
    return cfg


def leftovers(run: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.checkpoint.pt.*.tmp.pt`` ...) in ``run``."""
    out: list[Path] = []
    for folder, names in ((run, OWN_FILES), (run / SAMPLES, None)):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            n = p.name
            if not (n.startswith(".") and ".tmp" in n and p.is_file()):
                continue
            if names is None or any(n.startswith(f".{own}.") for own in names):
                out.append(p)
    return sorted(out)


def run_state(run: str | os.PathLike[str]) -> str:
    """``"new"``, ``"started"`` (config, no checkpoint) or ``"checkpoint"``; see the module docstring.

    Raises
    ------
    InputFileError
        ``run`` is a file, a non-empty folder that is not a run folder, or a run folder whose
        ``config.json`` is damaged.
    """
    run = Path(run)
    if not run.exists():
        return "new"
    if not run.is_dir():
        raise InputFileError(run, "exists and is not a folder; the run folder must be a (new) folder")
    junk = {p.name for p in leftovers(run)} | {LOCK}
    entries = [p for p in run.iterdir() if p.name not in junk]
    if not entries:
        return "new"
    if not (run / CONFIG).exists():
        raise InputFileError(run, "is not empty and holds no reconstruction run (no config.json); choose a new or "
                                  "empty folder (nothing was changed)")
    load_config(run)
    return "checkpoint" if (run / CHECKPOINT).is_file() else "started"


def check_run_folder(run: str | os.PathLike[str], resume: bool, overwrite: bool) -> str:
    """What training into ``run`` will do: ``"fresh"`` or ``"resume"``; raise when it must not start.

    A run with a checkpoint needs ``resume`` (continue) or ``overwrite`` (start afresh); a run
    killed before its first checkpoint restarts without either; ``resume`` on a folder without a
    run is an error (nothing to resume).
    """
    state = run_state(run)
    if state == "new" and resume:
        raise InputFileError(Path(run) / CHECKPOINT, "nothing to resume: the folder holds no run")
    if state == "checkpoint" and not (resume or overwrite):
        raise OutputExistsError(Path(run) / CHECKPOINT)
    return "resume" if state == "checkpoint" and resume else "fresh"


def check_resume_config(run: str | os.PathLike[str], cfg: TrainConfig, keys: tuple[str, ...] = RESUME_KEYS) -> None:
    """Raise ParameterError when ``cfg`` differs from the run's config in one of ``keys``."""
    old = load_config(run)
    diff = [k for k in keys if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise ParameterError(
            f"{run}: cannot resume, the run was made with different {', '.join(diff)} "
            f"({', '.join(f'{k}={getattr(old, k)!r}' for k in diff)})"
        )


def clear_run(run: Path) -> None:
    """Remove the files a training run writes (never anything else in the folder)."""
    for name in OWN_FILES:
        (run / name).unlink(missing_ok=True)
    for p in leftovers(run):
        p.unlink(missing_ok=True)
    samples = run / SAMPLES
    if samples.is_dir():
        for p in samples.glob("epoch_*.png"):
            p.unlink()
        if not any(samples.iterdir()):
            samples.rmdir()
