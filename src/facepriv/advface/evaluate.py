"""AdvFace evaluation: attacker reconstructions, replay (SRRA) and verification accuracy.

For a protection method (unprotected, random noise, Laplace DP, AdvFace) applied to the eval
identities' stored features:

* the attacker's reconstruction network R maps the stored features to images; SSIM, PSNR and MSE
  compare them with the original aligned crops (at R's output size);
* SRRA: each reconstruction is replayed through the full system (resized to the model input,
  E then Psi) and compared with the user's enrolled template Psi(stored feature); success when the
  cosine score reaches the threshold at FMR 0.1% of the unprotected system on the eval data;
* accuracy: 10-fold verification accuracy on an identity-disjoint LFW-style pairs protocol of the
  eval data, enrolled side = Psi(stored, protected feature), probe side = Psi(E(fresh image)).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from facepriv.advface.data import AlignedFaces
from facepriv.advface.features import FeatureSet
from facepriv.advface.split import SplitSystem
from facepriv.advface.train import images_to_tensor
from facepriv.device import module_on
from facepriv.metrics import image_quality as iq
from facepriv.metrics.kfold import kfold_accuracy
from facepriv.metrics.protocol import PairsProtocol, make_pairs
from facepriv.metrics.verification import scores_all_pairs, threshold_at_fmr

log = logging.getLogger(__name__)

SRRA_FMR = 0.001


@dataclass(frozen=True)
class MethodResult:
    """Privacy and utility of one protection against one attacker network."""

    method: str
    eps: float
    attacker: str
    ssim: float
    psnr: float
    mse: float
    srra: float
    accuracy: float
    accuracy_std: float
    n: int

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class EvalContext:
    """What every method's evaluation shares: the system, eval faces, clean descriptors, protocol."""

    system: SplitSystem
    faces: AlignedFaces
    clean: FeatureSet
    clean_desc: np.ndarray
    srra_threshold: float
    protocol: PairsProtocol

    @classmethod
    def build(cls, system: SplitSystem, faces: AlignedFaces, clean: FeatureSet, seed: int = 0) -> EvalContext:
        """Clean descriptors, the FMR 0.1% threshold and a pairs protocol for the eval set."""
        desc = system.describe(clean.features)
        scores = scores_all_pairs((desc, clean.identity))
        thr = threshold_at_fmr(scores.impostor, SRRA_FMR)
        n_ids = len(np.unique(clean.identity))
        folds = min(10, max(2, n_ids // 2))
        proto = make_pairs(clean.ids, clean.identity, n_folds=folds, pairs_per_fold=(300, 300), seed=seed)
        return cls(system, faces, clean, desc, thr, proto)

    def accuracy(self, server: nn.Module | None, protected: np.ndarray) -> tuple[float, float]:
        """k-fold accuracy (10 folds when the eval set has >= 20 identities): enrolled = Psi(protected feature), probe = Psi(E(image)) (clean)."""
        if server is None:
            enrolled = self.system.describe(protected)
        else:
            with torch.inference_mode():
                dev = self.system.device
            z = torch.from_numpy(protected)
            enrolled = (server(z) if dev == "cpu" else module_on(server, dev)(z.to(dev)).cpu()).numpy()
        pos = {s: i for i, s in enumerate(self.clean.ids)}
        i1 = np.array([pos[s] for s in self.protocol.id1])
        i2 = np.array([pos[s] for s in self.protocol.id2])
        e, p = _normalise(enrolled), _normalise(self.clean_desc)
        scores = np.einsum("ij,ij->i", e[i1], p[i2])
        res = kfold_accuracy(scores, self.protocol.genuine, self.protocol.fold)
        return float(res.mean), float(res.std)

    def attack(self, attacker: nn.Module, protected: np.ndarray, batch: int = 64) -> torch.Tensor:
        """Reconstructions of the stored features by the attacker's network, (N, 3, S, S)."""
        attacker.eval()
        dev = self.system.device
        with torch.inference_mode():
            z = torch.from_numpy(np.ascontiguousarray(protected, dtype=np.float32))
            if dev == "cpu":
                return torch.cat([attacker(z[i : i + batch]) for i in range(0, len(z), batch)])
            net = module_on(attacker, dev)
            return torch.cat([net(z[i : i + batch].to(dev)).cpu() for i in range(0, len(z), batch)])

    def evaluate(self, method: str, eps: float, attacker_name: str, attacker: nn.Module,
                 protected: np.ndarray, server: nn.Module | None = None) -> tuple[MethodResult, torch.Tensor]:
        """All metrics of one (method, eps, attacker) cell; also returns the reconstructions."""
        recon = self.attack(attacker, protected)
        originals = images_to_tensor(self.faces.crops, recon.shape[-1])
        replay = self.system.embed_images(recon)
        enrolled = self.system.describe(protected)
        srra = float(np.mean(np.einsum("ij,ij->i", _normalise(replay), _normalise(enrolled)) >= self.srra_threshold))
        acc, acc_std = self.accuracy(server, protected)
        res = MethodResult(
            method=method, eps=float(eps), attacker=attacker_name,
            ssim=float(iq.ssim(recon, originals)), psnr=float(iq.psnr(recon, originals)),
            mse=float(iq.mse(recon, originals)), srra=srra, accuracy=acc, accuracy_std=acc_std, n=len(protected),
        )
        log.info("%s eps=%.2f vs %s: SSIM %.3f PSNR %.2f SRRA %.3f acc %.3f", method, eps, attacker_name,
                 res.ssim, res.psnr, res.srra, res.accuracy)
        return res, recon


def finetune_server(system: SplitSystem, adv: np.ndarray, clean: np.ndarray, epochs: int = 3,
                    lr: float = 1e-5, batch: int = 32, seed: int = 0) -> nn.Module:
    """Offline mode: fine-tune a copy of Psi so Psi'(adversarial feature) points where Psi(clean feature) does.

    Trained on the server's own (shadow) data, never on the eval identities. The loss is
    1 - cosine(Psi'(z_adv), Psi(z)), because verification compares templates by cosine; the paper
    retrains the server network with identity labels on its whole training set, which an
    open-set pretrained network with a few thousand of the server's own photos cannot imitate
    (a classification head on ~75 identities would bend the embedding towards them). Measured
    alternatives (MSE loss, larger learning rates, only the last layer) were no better.
    """
    import copy

    dev = system.device
    server = copy.deepcopy(system.server)
    for p in server.parameters():
        p.requires_grad_(True)
    target = torch.from_numpy(system.describe(clean))
    z = torch.from_numpy(np.ascontiguousarray(adv, dtype=np.float32))
    if dev != "cpu":  # the system's device; the returned server is on the CPU
        server, target, z = server.to(dev), target.to(dev), z.to(dev)
    opt = torch.optim.Adam(server.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    server.train()
    with torch.random.fork_rng(devices=[]):  # a server with dropout draws from ``seed`` only
        torch.manual_seed(seed)
        for _ in range(epochs):
            order = rng.permutation(len(z))
            for i in range(0, len(order), batch):
                idx = torch.from_numpy(order[i : i + batch])
                idx = idx if dev == "cpu" else idx.to(dev)
                loss = (1.0 - nn.functional.cosine_similarity(server(z[idx]), target[idx])).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    server.eval()
    for p in server.parameters():
        p.requires_grad_(False)
    return server if dev == "cpu" else server.to("cpu")
