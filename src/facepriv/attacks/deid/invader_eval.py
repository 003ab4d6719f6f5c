"""The fixed and adaptive invaders' identification of cloaked (or clean) photos: one function.

:func:`invade` cloaks the victims' photos (:func:`~facepriv.attacks.deid.run.run_cloaks`), and
for the adaptive invader also its own people's photos, then per target model:

* ``probe`` setting: the head is trained on the victims' clean gallery, the stored cloaked
  probes are identified (as ``deid``);
* ``training`` setting: the head is trained on the victims' stored cloaked photos (one head per
  budget; eps 0 = the same photos stored clean), the clean remaining photos are identified.

The adaptive invader passes every embedding through an :func:`fit_adapter` adapter first.
A test photo whose face the target's detector does not find counts as protected (rank inf).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from facepriv.attacks.deid.gallery import align_files
from facepriv.attacks.deid.heads import train_head
from facepriv.attacks.deid.protocol import PAPER_KS
from facepriv.metrics.privacy import psr_at_k, rank_of_true_identity
from facepriv.protections.image import stored_name


class Adapter(torch.nn.Module):
    """Residual linear map on unit embeddings: ``a(e) = n(e) + W n(e) + b`` (W, b start at 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        u = torch.nn.functional.normalize(e, dim=1)
        return u + self.linear(u)


def fit_adapter(clean: np.ndarray, cloaked: np.ndarray, epochs: int = 300, lr: float = 1e-2,
                weight_decay: float = 1e-3) -> Adapter:
    """Train an :class:`Adapter` mapping cloaked embeddings onto their clean originals.

    Loss: mean(1 - cos(a(cloaked), clean)) + mean(1 - cos(a(clean), clean)) (the second term
    keeps clean photos where they were), full-batch Adam. Deterministic (zero start, no sampling).
    """
    c = torch.nn.functional.normalize(torch.as_tensor(clean, dtype=torch.float32), dim=1)
    z = torch.as_tensor(cloaked, dtype=torch.float32)
    a = Adapter(c.shape[1])
    opt = torch.optim.Adam(a.parameters(), lr=lr, weight_decay=weight_decay)
    cos = torch.nn.functional.cosine_similarity
    for _ in range(int(epochs)):
        opt.zero_grad()
        loss = (1 - cos(a(z), c)).mean() + (1 - cos(a(c), c)).mean()
        loss.backward()
        opt.step()
    a.eval()
    for p in a.parameters():
        p.requires_grad_(False)
    return a


def _stored(run, key: str) -> list[Path]:
    jq = run.record["config"]["jpeg_quality"]
    return [run.dir / "cloaks" / f"eps{key}" / stored_name(im, jq) for im, _, role in run.rows if role == "probe"]


def _embed(model, paths: list[Path], cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of the detected photos and a mask of which were detected."""
    crops, ok, _ = align_files(paths, model.card.alignment, desc=f"{model.name}", cache=cache)
    mask = np.zeros(len(paths), bool)
    mask[ok] = True
    return (model.embed(crops) if len(ok) else np.zeros((0, 1), np.float32)), mask


def _apply(adapter: Adapter | None, emb: np.ndarray) -> np.ndarray:
    if adapter is None or len(emb) == 0:
        return emb
    with torch.no_grad():
        return adapter(torch.as_tensor(emb, dtype=torch.float32)).numpy()


def _psr(train_emb, train_ident, test_emb, test_mask, test_ident, model_name: str, seed: int) -> dict:
    head, info = train_head(train_emb, train_ident, model=model_name, seed=seed)
    cls = {c: i for i, c in enumerate(info.classes)}
    ranks = np.full(len(test_mask), np.inf)
    idx = np.flatnonzero(test_mask)
    known = np.array([test_ident[i] in cls for i in idx], bool)
    if known.any():
        with torch.no_grad():
            logits = head(torch.as_tensor(test_emb[known], dtype=torch.float32)).numpy()
        ranks[idx[known]] = rank_of_true_identity(logits, np.array([cls[test_ident[i]] for i in idx[known]]))
    return {int(k): float(v) for k, v in psr_at_k(ranks, PAPER_KS).items()}


def invade(cfg, *, root: Path, victims: tuple[list[str], list[str]], invaders: tuple[list[str], list[str]] | None,
           targets: list[str], setting: str, invader_photos: int, adapter_epochs: int, work: Path, seed: int) -> dict:
    """Cloak, (adaptive: fit adapters on the invader's own cloaks,) identify; PSR per target/invader/eps."""
    from facepriv.attacks.deid.run import run_cloaks
    from facepriv.images import path_under
    from facepriv.models.zoo import get_model

    vrun = run_cloaks(cfg, victims[0], victims[1], root, Path(work) / "victims", overwrite=True)
    keys = ["0"] + [f"{float(e):g}" for e in cfg.eps]
    irun = None
    if invaders is not None:
        # the invader's own people: those with too few photos are simply left out (its data, its choice)
        icfg = dataclasses.replace(cfg, probes_per_identity=invader_photos, max_images=None, max_identities=None,
                                   min_images=invader_photos + cfg.min_gallery)
        irun = run_cloaks(icfg, invaders[0], invaders[1], root, Path(work) / "invader", overwrite=True)
    probe_ident = np.array([i for _, i, role in vrun.rows if role == "probe"])
    gallery = [(im, i) for im, i, role in vrun.rows if role == "gallery"]
    gal_ident = np.array([i for _, i in gallery])
    cache: dict = {}
    psr: dict = {}
    n_test = 0
    for t in targets:
        model = get_model(t)
        adapter = None
        if irun is not None:
            clean, mc = _embed(model, _stored(irun, "0"), cache)
            pc, pz = [], []
            for key in keys[1:]:
                z, mz = _embed(model, _stored(irun, key), cache)
                both = mc & mz
                pc.append(clean[both[mc]])
                pz.append(z[both[mz]])
            adapter = fit_adapter(np.concatenate(pc), np.concatenate(pz), epochs=adapter_epochs)
        gal_emb, gal_mask = _embed(model, [path_under(root, im) for im, _ in gallery], cache)
        per_key = {key: _embed(model, _stored(vrun, key), cache) for key in keys}
        kinds = {"fixed": None} | ({"adaptive": adapter} if adapter is not None else {})
        psr[t] = {}
        for kind, a in kinds.items():
            psr[t][kind] = {}
            for key in keys:
                emb, mask = per_key[key]
                if setting == "probe":
                    psr[t][kind][key] = _psr(_apply(a, gal_emb), gal_ident[gal_mask], _apply(a, emb), mask,
                                             probe_ident, t, seed)
                    n_test = len(probe_ident)
                else:
                    psr[t][kind][key] = _psr(_apply(a, emb), probe_ident[mask], _apply(a, gal_emb), gal_mask,
                                             gal_ident, t, seed)
                    n_test = len(gal_ident)
    return {"eps_keys": keys, "psr": psr, "setting": setting, "probes": int(vrun.record["counts"]["probes"]),
            "identities": int(vrun.record["counts"]["identities"]), "n_test": n_test,
            "quality": vrun.record["quality"],
            "invader_pairs": None if irun is None else int(irun.record["counts"]["probes"])}
