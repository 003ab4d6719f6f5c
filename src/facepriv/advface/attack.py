"""The registered ``advface_table1`` attack: AdvFace's Table 1 and eps sweep on a cell's photos.

The constructor parameters of :class:`AdvFaceTable1` are the one source of every parameter of the
AdvFace experiment and its default: ``facepriv run`` (YAML), ``facepriv advface train|eval``
(their flags' defaults) and ``facepriv describe advface_table1`` read them from here. The noise
defaults (eps, alpha, steps) are the paper's and shared with the ``advface`` / ``random_noise`` /
``laplace_dp`` protections (:mod:`facepriv.advface.params`).

This module imports nothing heavy; the work is in :mod:`facepriv.advface.experiment`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facepriv.advface.params import (
    ALPHA,
    ARCHITECTURES,
    BOUNDS,
    EPS,
    STEPS,
    check_decoder_params,
    check_int,
    check_noise_params,
)
from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline
from facepriv.errors import ParameterError
from facepriv.registry import register

#: eps values of the trade-off sweep (the paper's Fig. 4: 0 to 0.3 in steps of 0.05)
SWEEP = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
#: columns of the Table 1 detail table
TABLE_COLUMNS = ["method", "eps", "ssim", "psnr", "mse", "srra", "accuracy", "accuracy_std", "n"]


@register("attack", "advface_table1")
class AdvFaceTable1(Attack):
    """AdvFace Table 1 and eps sweep: reconstruction of client feature maps vs. verification utility.

    The recognition model is split into a client part E and a server part Psi (at ``cut``); the
    server stores E's feature maps. The cell's identities are split (seeded by ``seed``) into
    disjoint thirds: the server trains its shadow decoder on the ``shadow`` identities, the
    attacker its reconstruction network on the ``attacker`` identities, and the ``eval``
    identities are the enrolled users. Their stored features are protected by each method
    (unprotected, random noise, Laplace DP with budget 1, AdvFace against the shadow decoder) and
    reconstructed by the attacker: SSIM / PSNR / MSE against the photos, SRRA (replayed
    reconstructions accepted at FMR 0.1 %) and k-fold verification accuracy per method, plus the
    AdvFace eps sweep. Headline: SRRA of AdvFace at ``eps``. Runs on the ``unprotected`` row (it
    applies the feature protections itself).

    Parameters
    ----------
    cut : str or None
        Where the recognition model is split into client and server parts (``facepriv models``
        lists the cut points); None = the model's default cut (``stage1`` for dlib_resnet).
    arch : {"resrec", "transrec", "urec"}
        Architecture of the shadow and the attacker's reconstruction networks (the paper's
        Table 1: resrec).
    size : int
        Output side of the decoders in pixels, 8 to 512 (the paper: 160; 64 is CPU-sized).
    epochs : int
        Training epochs of each decoder (>= 1).
    batch_size : int
        Decoder training batch size (>= 2).
    lr : float
        Adam learning rate of the decoders (> 0; the paper: 1e-4 with far more epochs).
    max_images : int or None
        Train each decoder on at most this many photos of its identity group (a seeded subset,
        >= 2); None = every photo of the group.
    eps : float
        Noise bound of Table 1 for AdvFace, random noise and Laplace DP (>= 0; the paper: 0.2).
    alpha : float
        Sign-step size of AdvFace and of the random noise (> 0; the paper: 0.2).
    steps : int
        Iterations of AdvFace's PGD and of the random noise (>= 1; the paper: 40).
    bound : {"ball", "step"}
        How eps limits the noise: "ball" = total change within eps (PGD projection); "step" =
        each step within eps (the paper's Eq. 6 read literally).
    sweep : sequence of float
        eps values of AdvFace's privacy-utility sweep (at least one, each >= 0).
    max_eval : int or None
        Evaluate on at most this many photos of the eval identities (at most 4 per person, as
        many people as fit; >= 4); None = every photo of the eval identities.
    offline_epochs : int
        > 0 adds AdvFace's offline row: Psi fine-tuned this many epochs on adversarial features
        of the server's own (shadow) photos; 0 = online only.
    seed : int
        Seeds the identity split, the training subsets, the decoders' initial weights and batch
        order, the random / Laplace noise, the evaluation subset and the pairs protocol
        (0 .. 2**32 - 1).
    """

    summary = ("AdvFace Table 1: reconstruction of client feature maps (SSIM/PSNR/SRRA) vs. utility, for "
               "unprotected / random noise / Laplace DP / AdvFace features, plus the eps sweep")
    reference = "Wang et al., Privacy-preserving adversarial facial features, CVPR 2023"
    needs_images = True
    only_protections = ("unprotected",)

    def __init__(
        self,
        cut: str | None = None,
        arch: str = "resrec",
        size: int = 64,
        epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-3,
        max_images: int | None = None,
        eps: float = EPS,
        alpha: float = ALPHA,
        steps: int = STEPS,
        bound: str = "ball",
        sweep: Sequence[float] = SWEEP,
        max_eval: int | None = 300,
        offline_epochs: int = 0,
        seed: int = 0,
    ) -> None:
        self.cut = cut
        self.arch = arch
        self.size = size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.max_images = max_images
        self.eps = eps
        self.alpha = alpha
        self.steps = steps
        self.bound = bound
        self.sweep = sweep
        self.max_eval = max_eval
        self.offline_epochs = offline_epochs
        self.seed = seed

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault (no model is loaded)."""
        if self.cut is not None and (not isinstance(self.cut, str) or not self.cut):
            raise ParameterError(f"cut: must be a cut point name or null, got {self.cut!r}", param="cut")
        check_decoder_params(self.arch, self.size, self.epochs, self.batch_size, self.lr, self.seed)
        if self.max_images is not None:
            check_int("max_images", self.max_images, 2)
        check_noise_params(self.eps, self.alpha, self.steps, self.bound, self.seed)
        check_sweep(self.sweep)
        if self.max_eval is not None:
            check_int("max_eval", self.max_eval, 4)
        check_int("offline_epochs", self.offline_epochs, 0)

    def run(self, data: AttackData) -> AttackOutcome:
        """Split the model, extract client features, train both decoders, evaluate every method (in memory).

        Decoder checkpoints (resumed when the cell runs again with the same parameters) go to
        ``work_dir/shadow-ARCH`` and ``work_dir/attacker-ARCH``, the evaluation files
        (``summary.json``, ``summary.md``, the plots) to ``work_dir/eval``; without a
        ``work_dir`` nothing is written. Torch works with a fixed number of threads per machine,
        whatever earlier work in the process left, so the numbers do not depend on which cells
        ran before.
        """
        from facepriv.determinism import machine_threads, torch_threads

        self.validate_params()
        if data.model is None:
            raise ParameterError("advface_table1 needs the photos and a recognition model; the data are an embeddings file")
        with torch_threads(machine_threads()):
            return outcome(self.experiment(data), data.work_dir is not None)

    def experiment(self, data: AttackData) -> dict[str, Any]:
        """The summary of :func:`facepriv.advface.experiment.run_experiment` on the cell's data."""
        from facepriv.advface.experiment import run_experiment

        prep = prepare(self, data)
        return run_experiment(
            prep.features, prep.faces_of, prep.system, {self.arch: prep.decoders["shadow"]},
            {self.arch: prep.decoders["attacker"]}, split_seed=int(self.seed), main_arch=self.arch, eps=float(self.eps),
            alpha=float(self.alpha), steps=int(self.steps), bound=self.bound, sweep=tuple(float(x) for x in self.sweep),
            max_eval=self.max_eval, offline_epochs=int(self.offline_epochs), seed=int(self.seed),
            parts=("table", "sweep"), out_dir=data.work("eval"), runs=prep.runs,
        )


@dataclass
class Prepared:
    """A cell's split system, aligned faces, client features, identity roles and trained decoders."""

    system: Any
    faces: Any
    features: Any
    roles: np.ndarray
    decoders: dict[str, Any]
    runs: dict[str, dict[str, str]]
    configs: dict[str, Any]

    def faces_of(self, fs: Any) -> Any:
        """Aligned crops of a subset of the features (same order)."""
        return self.faces.select(fs.ids.tolist())


def prepare(p: Any, data: AttackData) -> Prepared:
    """Split the model, extract client features, train (or resume) the shadow and attacker decoders.

    ``p`` carries the decoder parameters (``cut, arch, size, epochs, batch_size, lr, max_images,
    seed``) of ``advface_table1`` or ``advface_adaptive``. Checkpoints go to
    ``work_dir/ROLE-ARCH`` (resumed when made with the same settings).
    """
    from facepriv.advface.data import cap_rows, extract_features, faces_from_crops, identity_roles
    from facepriv.advface.split import SplitSystem
    from facepriv.advface.train import DecoderConfig, can_resume, train_decoder

    device = getattr(data, "device", "cpu")  # the run's --device, resolved by the runner
    system = SplitSystem.create(data.model.name, p.cut, device=device)
    identity_of = dict(zip(data.clean.ids.tolist(), data.clean.identity.tolist(), strict=True))
    faces = faces_from_crops(data.aligned_faces(system.alignment), identity_of)
    fs = extract_features(faces, system)
    roles = identity_roles(fs.identity, p.seed)
    decoders, runs, configs = {}, {}, {}
    for role in ("shadow", "attacker"):
        idx = np.flatnonzero(roles == role)
        idx = idx[cap_rows(len(idx), p.max_images, p.seed)]
        cfg = DecoderConfig(arch=p.arch, feature_shape=system.feature_shape, out_size=int(p.size),
                            model=system.model_name, cut=system.cut, input_shape=system.input_shape,
                            epochs=int(p.epochs), batch_size=int(p.batch_size), lr=float(p.lr),
                            seed=int(p.seed), role=role, split_seed=int(p.seed), n_train=len(idx))
        run = data.work(f"{role}-{p.arch}")
        # resume this cell's own checkpoint when it was made with the same settings, else start again
        resume = run is not None and can_resume(run, cfg)
        decoders[role] = train_decoder(fs.features[idx], faces.crops[idx], cfg, run, client=system.client,
                                       resume=resume, overwrite=not resume, device=device)
        runs[role + "s"] = {p.arch: str(run) if run is not None else "(in memory)"}
        configs[role] = cfg
    return Prepared(system, faces, fs, roles, decoders, runs, configs)


def check_sweep(sweep: Any) -> None:
    """At least one eps, each a finite number >= 0 (ParameterError naming ``sweep``)."""
    if isinstance(sweep, (str, bytes)) or not isinstance(sweep, Sequence) or len(sweep) == 0:
        raise ParameterError(f"sweep: give at least one eps value (a list of numbers >= 0), got {sweep!r}", param="sweep")
    for v in sweep:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise ParameterError(f"sweep: every eps must be a finite number >= 0, got {v!r}", param="sweep")


def outcome(s: dict[str, Any], with_files: bool) -> AttackOutcome:
    """The attack's result from an experiment summary (the numbers the report shows)."""
    from facepriv.metrics.stats import wilson_interval

    table = {"header": TABLE_COLUMNS, "rows": [[r.get(c) for c in TABLE_COLUMNS] for r in s["table"]]}
    m: dict[str, Any] = {"eval_images": s["eval_images"], "eval_identities": s["eval_identities"]}
    for r in s["table"]:
        for c in ("ssim", "psnr", "mse", "srra", "accuracy"):
            m[f"{r['method']}_{c}"] = r[c]
    sw = sorted(s["sweep"], key=lambda r: r["eps"])
    curves = {"eps_sweep": {"x": [r["eps"] for r in sw], "xlabel": "AdvFace eps", "ylabel": "%",
                            "series": {"SRRA (%)": [100 * r["srra"] for r in sw],
                                       "verification accuracy (%)": [100 * r["accuracy"] for r in sw],
                                       "SSIM x 100": [100 * r["ssim"] for r in sw]}}}
    adv = next(r for r in s["table"] if r["method"] == "advface")
    n = int(adv["n"])
    lo, hi = wilson_interval(int(round(adv["srra"] * n)), n) if n else (float("nan"), float("nan"))
    images = ["eval/reconstructions.png", "eval/tradeoff_psnr_accuracy.png"] if with_files else []
    return AttackOutcome(headline=headline("srra (advface)", adv["srra"], (lo, hi), "fraction"), metrics=m,
                         curves=curves, images=images, tables={"AdvFace Table 1": table})


__all__ = ["ARCHITECTURES", "BOUNDS", "SWEEP", "AdvFaceTable1", "Prepared", "check_sweep", "outcome", "prepare"]
