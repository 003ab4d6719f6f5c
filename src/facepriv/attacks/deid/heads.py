"""Closed-set identification heads: the classifier ``C(x)`` of Ghafourian et al. for every backbone.

The paper's networks are classifiers over the identities of the protected gallery. Our backbones
are open-set embedders, so each gets a softmax (linear) head trained on the gallery identities'
L2-normalised embeddings. ``C(x) = head(normalise(backbone(x)))`` is differentiable end to end,
which is what BIM/ILLC need on the source model, and gives the top-k ranking the PSR@k metric
needs on every target model. Heads are saved as a torch state dict (``.pt``, loaded with
``weights_only=True``) plus JSON metadata (classes, model, seed, training accuracy, key).

A saved head is reused only when its **key** matches: a hash of everything the head depends on
(the gallery embeddings and identities, the model, the seed and the training settings), which is
also part of its file name. A head trained on another dataset, split, seed or model is never
reused, and a new head never overwrites another one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from facepriv.errors import InputFileError, ParameterError
from facepriv.fileio import atomic_path, write_json_atomic


class IdentityHead(torch.nn.Module):
    """Linear softmax classifier on L2-normalised embeddings (cosine logits times a learned scale)."""

    def __init__(self, embedding_dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(embedding_dim, n_classes)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) of embeddings (N, D)."""
        return self.linear(torch.nn.functional.normalize(emb, dim=1))


@dataclass(frozen=True)
class HeadInfo:
    """Metadata saved beside a head's weights."""

    model: str
    classes: list[str]
    embedding_dim: int
    seed: int
    n_train: int
    train_accuracy: float
    epochs: int
    lr: float
    weight_decay: float
    key: str = ""


#: training settings of every head (full-batch Adam)
HEAD_EPOCHS, HEAD_LR, HEAD_WEIGHT_DECAY = 300, 0.05, 1e-4


def head_key(embeddings: np.ndarray, identity: np.ndarray, *, model: str, seed: int, epochs: int = HEAD_EPOCHS,
             lr: float = HEAD_LR, weight_decay: float = HEAD_WEIGHT_DECAY) -> str:
    """sha256 (hex) of everything a head depends on: embeddings, identities, model, seed, training."""
    h = hashlib.sha256()
    meta = {"model": model, "seed": int(seed), "epochs": int(epochs), "lr": float(lr), "weight_decay": float(weight_decay),
            "shape": list(np.shape(embeddings))}
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    h.update("\n".join(np.asarray(identity).astype(str).tolist()).encode("utf-8"))
    return h.hexdigest()


def train_head(
    embeddings: np.ndarray,
    identity: np.ndarray,
    *,
    model: str,
    seed: int = 0,
    epochs: int = HEAD_EPOCHS,
    lr: float = HEAD_LR,
    weight_decay: float = HEAD_WEIGHT_DECAY,
    device: str = "cpu",
) -> tuple[IdentityHead, HeadInfo]:
    """Fit a head on gallery embeddings (full-batch Adam, seeded; deterministic on CPU).

    Parameters
    ----------
    embeddings : ndarray (N, D)
    identity : ndarray of str (N,)
    model : str
        Backbone name (recorded).
    seed : int
        Seeds the weight initialisation.
    device : str
        Resolved torch device of the training; the initial weights are drawn on the CPU and the
        head is returned on the CPU whatever the device.

    Returns
    -------
    (IdentityHead in eval mode with frozen parameters, HeadInfo)
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    ident = np.asarray(identity).astype(str)
    if emb.ndim != 2 or len(emb) != len(ident) or len(emb) == 0:
        raise ParameterError(f"train_head: need (N, D) embeddings and N labels, got {emb.shape} and {ident.shape}")
    classes = sorted(set(ident.tolist()))
    if len(classes) < 2:
        raise ParameterError("train_head: the gallery needs at least 2 identities")
    y = torch.as_tensor(np.searchsorted(np.array(classes), ident), dtype=torch.long)
    x = torch.from_numpy(emb)
    gen = torch.Generator().manual_seed(int(seed))
    head = IdentityHead(emb.shape[1], len(classes))
    with torch.no_grad():
        head.linear.weight.copy_(torch.randn(head.linear.weight.shape, generator=gen) * 0.01)
        head.linear.bias.zero_()
    if device != "cpu":
        head, x, y = head.to(device), x.to(device), y.to(device)
    # unconstrained weights on unit-norm inputs: the logit scale is learnt, so softmax can become confident
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    xs = torch.nn.functional.normalize(x, dim=1)
    for _ in range(int(epochs)):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head.linear(xs), y)
        loss.backward()
        opt.step()
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acc = float((head(x).argmax(1) == y).float().mean())
    if device != "cpu":
        head = head.to("cpu")
    key = head_key(emb, ident, model=model, seed=seed, epochs=epochs, lr=lr, weight_decay=weight_decay)
    info = HeadInfo(model, classes, int(emb.shape[1]), int(seed), int(len(emb)), acc, int(epochs), float(lr),
                    float(weight_decay), key)
    return head, info


def head_files(stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``<stem>.pt`` and ``<stem>.json`` (appended: a stem may contain dots)."""
    stem = Path(stem)
    return stem.parent / f"{stem.name}.pt", stem.parent / f"{stem.name}.json"


def save_head(head: IdentityHead, info: HeadInfo, stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<stem>.pt`` (state dict) and ``<stem>.json`` (metadata) atomically."""
    stem = Path(stem)
    pt, js = head_files(stem)
    with atomic_path(pt) as tmp:
        torch.save({k: v.detach().clone() for k, v in head.state_dict().items()}, tmp)
    write_json_atomic(js, asdict(info))
    return pt, js


def load_head(stem: str | os.PathLike[str]) -> tuple[IdentityHead, HeadInfo]:
    """Read a head written by :func:`save_head` (``weights_only=True``; clear errors)."""
    stem = Path(stem)
    pt, js = head_files(stem)
    for p in (pt, js):
        if not p.is_file():
            raise InputFileError(p, "missing identification-head file")
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
        info = HeadInfo(**meta)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputFileError(js, f"not valid head metadata ({exc})") from None
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise InputFileError(pt, f"not a readable torch state dict ({type(exc).__name__})") from None
    head = IdentityHead(info.embedding_dim, len(info.classes))
    try:
        head.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise InputFileError(pt, f"weights do not match the metadata in {js.name} ({exc})") from None
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head, info
