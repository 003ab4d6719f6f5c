"""The loss of a photo cloak: one source model or an ensemble, with DI and EOT, for the one core.

:func:`cloak_loss` builds the per-photo loss that
:func:`facepriv.adversarial.core.sign_gradient_attack` optimises for BIM / ILLC / push:

* each source model (the run's source and the ``ensemble`` members) sees the photo through its
  **own** alignment warp (its own detector's matrix on the clean photo) and its own head;
* with ``diversity_prob`` > 0 each model's aligned crop goes through the DI transform (seeded
  per photo and model);
* the ensemble loss is the mean over the models that found the face in the photo;
* with ``eot`` the whole loss is averaged over differentiable transforms of the photo.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from facepriv.adversarial.transfer import (
    DiverseInput,
    check_diversity,
    ensemble_loss,
    eot_loss,
    gaussian_kernel,
)
from facepriv.errors import ParameterError


def check_model_names(param: str, names: Any) -> None:
    """Each name a registered, differentiable recognition model (checked on the class: nothing loads)."""
    from facepriv.registry import get_class

    if names is None:
        return
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ParameterError(f"{param}: give a list of one or more model names (or None), got {names!r}", param=param)
    for n in names:
        if not isinstance(n, str) or not n:
            raise ParameterError(f"{param}: name a recognition model, got {n!r}", param=param)
        try:
            cls = get_class("model", n)
        except ParameterError as exc:
            raise ParameterError(f"{param}: {exc}", param=param) from None
        if not getattr(cls.card, "differentiable", False):
            raise ParameterError(f"{param}: model {n!r} is not differentiable: it cannot be a cloak source", param=param)
    if len(set(names)) != len(names):
        raise ParameterError(f"{param}: models repeat ({', '.join(names)})", param=param)


def check_transfer_params(p: Any) -> None:
    """Validate the transfer options of a sign-gradient cloak (ParameterError naming the parameter)."""
    from facepriv.attacks.deid.postprocess import parse_list

    m = p.momentum
    if isinstance(m, bool) or not isinstance(m, numbers.Real) or not math.isfinite(m) or m < 0:
        raise ParameterError(f"momentum: must be a number >= 0, got {m!r}", param="momentum")
    check_diversity(p.diversity_prob, p.resize_rate)
    k = p.ti_kernel
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0 or (k and (k < 3 or k % 2 == 0)):
        raise ParameterError(f"ti_kernel: must be 0 (off) or an odd kernel size >= 3, got {k!r}", param="ti_kernel")
    v = p.vmi_samples
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ParameterError(f"vmi_samples: must be an integer >= 0, got {v!r}", param="vmi_samples")
    check_model_names("ensemble", p.ensemble)
    parse_list(p.eot, "eot")


def core_options(transfer: Any) -> dict[str, Any]:
    """Keyword arguments of the core's update rule (momentum, TI kernel, VMI) for a cloak."""
    if transfer is None:
        return {}
    k = int(transfer.ti_kernel)
    return {"momentum": float(transfer.momentum), "ti_kernel": gaussian_kernel(k, 3.0) if k else None,
            "vmi_samples": int(transfer.vmi_samples)}


def _member_seeds(seeds: Sequence[int], j: int) -> list[int]:
    return [int(np.random.SeedSequence([int(s), 7, j]).generate_state(1)[0]) for s in seeds]


def cloak_loss(source: Any, matrices: np.ndarray, photo_hw: tuple[int, int], labels: np.ndarray, ids: Sequence[str],
               method: str, seeds: Sequence[int], transfer: Any = None, x: torch.Tensor | None = None):
    """The per-photo loss of ``method`` (bim / illc / push) over the source and its ensemble members.

    Returns
    -------
    loss_fn, maximize, targets
        ``targets``: the run source's ILLC target per photo (None for bim / push).
    """
    from facepriv.adversarial.core import cosine_similarity_loss, cross_entropy_loss, least_likely_labels

    prob = float(getattr(transfer, "diversity_prob", 0.0) or 0.0)
    rate = float(getattr(transfer, "resize_rate", 0.9) or 0.9)
    pipes = [(source, np.asarray(matrices), np.asarray(labels), np.ones(len(labels), bool))]
    for m in getattr(source, "members", []) or []:
        cls = {c: i for i, c in enumerate(m.classes)}
        names = [source.classes[int(y)] for y in labels]
        has = np.array([i in m.matrices and n in cls for i, n in zip(ids, names, strict=True)])
        mats = np.stack([m.matrices[i] if h else np.asarray(matrices)[0] for i, h in zip(ids, has, strict=True)])
        ys = np.array([cls[n] if h else 0 for n, h in zip(names, has, strict=True)])
        pipes.append((m, mats, ys, has))
    fns, targets = [], None
    dev = "cpu" if x is None else x.device
    for j, (pipe, mats, ys, _) in enumerate(pipes):
        di = DiverseInput(_member_seeds(seeds, j), prob, rate) if prob > 0 else None
        y = torch.as_tensor(ys, dtype=torch.long, device=dev)
        if method == "push":
            emb = pipe.photo_model(mats, photo_hw, logits=False, crop_transform=di)
            tpl = torch.as_tensor(np.asarray(pipe.templates)[ys], dtype=torch.float32, device=dev)
            fns.append(cosine_similarity_loss(emb, tpl))
            continue
        clf = pipe.photo_model(mats, photo_hw, crop_transform=di)
        if method == "illc":
            plain = pipe.photo_model(mats, photo_hw)
            y = least_likely_labels(plain, x)
            if j == 0:
                targets = y.cpu().numpy().astype(np.int64)
        fns.append(cross_entropy_loss(clf, y))
    weights = torch.as_tensor(np.stack([h for *_, h in pipes]).astype(np.float32), device=dev) if len(pipes) > 1 else None
    loss = fns[0] if len(fns) == 1 else ensemble_loss(fns, weights)
    if transfer is not None and transfer.eot:
        from facepriv.attacks.deid.postprocess import differentiable, parse_list

        loss = eot_loss(loss, [differentiable(pp) for pp in parse_list(transfer.eot, "eot")])
    return loss, method == "bim", targets
