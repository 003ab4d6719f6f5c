"""The registered ``advface_adaptive`` attack: an attacker who knows the feature protection, and AdvFace's cost.

This module imports nothing heavy; the work is in :mod:`facepriv.advface.adaptive` (the adaptive
attacker) and :mod:`facepriv.advface.cost` (utility and SRRA against the shadow's training data).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from facepriv.advface.attack import check_sweep, outcome, prepare
from facepriv.advface.params import ALPHA, EPS, STEPS, check_decoder_params, check_int, check_noise_params
from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline
from facepriv.errors import ParameterError
from facepriv.registry import register

METHODS = ("advface", "random", "dp")
ADAPTIVE_COLUMNS = ["method", "eps", "ssim", "adaptive_ssim", "psnr", "adaptive_psnr", "srra", "adaptive_srra",
                    "accuracy", "n"]
COST_COLUMNS = ["shadow_images", "shadow_identities", "eps", "accuracy", "accuracy_ci95", "cost_points", "srra",
                "srra_ci95", "ssim", "psnr"]


@register("attack", "advface_adaptive")
class AdvFaceAdaptive(Attack):
    """Adaptive attacker against AdvFace / random / Laplace-DP features, and AdvFace's cost vs its shadow's data.

    As ``advface_table1``, the cell's identities are split into shadow (server), attacker and
    evaluation thirds and both decoders are trained. The attacker then adapts: it knows the
    method and its public parameters but not the server's shadow decoder nor its noise seeds; it
    protects features of its own photos with its own copy (for AdvFace, its own decoder as the
    shadow) and fine-tunes its decoder on them. SSIM / PSNR / SRRA of the non-adaptive and the
    adaptive attacker per (method, eps) on the same server-protected evaluation features. With
    ``shadow_sizes``, shadow decoders trained on that many of the server's photos give AdvFace's
    verification accuracy, its cost against unprotected features and the SRRA (95 % Wilson
    intervals) at eps 0 and ``eps``. Headline: SRRA of the adaptive attacker on AdvFace at
    ``eps``. Runs on the ``unprotected`` row (it applies the feature protections itself).

    Parameters
    ----------
    cut : str or None
        Where the recognition model is split into client and server parts; None = the model's
        default cut (``stage1`` for dlib_resnet).
    arch : {"resrec", "transrec", "urec"}
        Architecture of the shadow and the attacker's decoders.
    size : int
        Output side of the decoders in pixels, 8 to 512.
    epochs : int
        Training epochs of the shadow and the attacker's decoders (>= 1).
    batch_size : int
        Decoder training batch size (>= 2).
    lr : float
        Adam learning rate of the decoders and of the adaptive fine-tuning (> 0).
    max_images : int or None
        Train each decoder on at most this many photos of its identity group (>= 2); None = all.
    eps : float
        Noise bound of the headline (and of the shadow-size study) (>= 0; the paper: 0.2).
    alpha : float
        Sign-step size of AdvFace and of the random noise (> 0).
    steps : int
        Iterations of AdvFace's PGD and of the random noise (>= 1).
    bound : {"ball", "step"}
        How eps limits the noise (as ``advface_table1``).
    max_eval : int or None
        Evaluate on at most this many photos of the eval identities (>= 4); None = all.
    methods : sequence of str
        Feature protections the attacker adapts to: any of "advface", "random", "dp"; empty = no
        adaptive attacker (only the shadow-size study; the headline is then Table 1's AdvFace SRRA).
    adaptive_eps : sequence of float
        Noise bounds of the adaptive comparison (each >= 0; must include ``eps`` when "advface"
        is among the methods).
    adaptive_epochs : int
        Fine-tuning epochs of the adaptive attacker's decoder (>= 1).
    adaptive_images : int or None
        Own photos the attacker protects and fine-tunes on (a seeded subset, >= 2; AdvFace's PGD
        costs about 0.15 s per photo on a CPU); None = all of its photos.
    shadow_sizes : sequence of int
        Shadow training-set sizes of the cost study (each >= 2; empty = no study).
    seed : int
        Seeds the identity split, subsets, initial weights, batch orders, noise and protocol.
    """

    summary = ("AdvFace against an adaptive attacker (trained on features protected with its own copy of the "
               "method) vs the non-adaptive one, and AdvFace's utility cost vs its shadow decoder's data")
    reference = "Wang et al., Privacy-preserving adversarial facial features, CVPR 2023 (threat model extended)"
    needs_images = True
    only_protections = ("unprotected",)

    def __init__(self, cut: str | None = None, arch: str = "resrec", size: int = 64, epochs: int = 10,
                 batch_size: int = 32, lr: float = 1e-3, max_images: int | None = None, eps: float = EPS,
                 alpha: float = ALPHA, steps: int = STEPS, bound: str = "ball", max_eval: int | None = 200,
                 methods: Sequence[str] = METHODS, adaptive_eps: Sequence[float] = (0.1, 0.2, 0.3),
                 adaptive_epochs: int = 5, adaptive_images: int | None = 300, shadow_sizes: Sequence[int] = (),
                 seed: int = 0) -> None:
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
        self.max_eval = max_eval
        self.methods = methods
        self.adaptive_eps = adaptive_eps
        self.adaptive_epochs = adaptive_epochs
        self.adaptive_images = adaptive_images
        self.shadow_sizes = shadow_sizes
        self.seed = seed

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault (no model is loaded)."""
        if self.cut is not None and (not isinstance(self.cut, str) or not self.cut):
            raise ParameterError(f"cut: must be a cut point name or null, got {self.cut!r}", param="cut")
        check_decoder_params(self.arch, self.size, self.epochs, self.batch_size, self.lr, self.seed)
        if self.max_images is not None:
            check_int("max_images", self.max_images, 2)
        check_noise_params(self.eps, self.alpha, self.steps, self.bound, self.seed)
        if self.max_eval is not None:
            check_int("max_eval", self.max_eval, 4)
        m = self.methods
        if isinstance(m, (str, bytes)) or not isinstance(m, Sequence) or set(m) - set(METHODS):
            raise ParameterError(f"methods: choose from {', '.join(METHODS)} (empty = no adaptive attacker), got {m!r}",
                                 param="methods")
        try:
            check_sweep(self.adaptive_eps)
        except ParameterError as exc:
            raise ParameterError(str(exc).replace("sweep", "adaptive_eps", 1), param="adaptive_eps") from None
        if "advface" in m and not any(abs(float(e) - float(self.eps)) < 1e-12 for e in self.adaptive_eps):
            raise ParameterError(f"adaptive_eps: must include eps ({self.eps}) for the headline", param="adaptive_eps")
        check_int("adaptive_epochs", self.adaptive_epochs, 1)
        if self.adaptive_images is not None:
            check_int("adaptive_images", self.adaptive_images, 2)
        s = self.shadow_sizes
        if isinstance(s, (str, bytes)) or not isinstance(s, Sequence) or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 2 for v in s):
            raise ParameterError(f"shadow_sizes: give a list of integers >= 2 (or none), got {s!r}", param="shadow_sizes")

    def run(self, data: AttackData) -> AttackOutcome:
        """Train the decoders, evaluate the non-adaptive and the adaptive attackers (and the cost study)."""
        from facepriv.determinism import machine_threads, torch_threads

        self.validate_params()
        if data.model is None:
            raise ParameterError("advface_adaptive needs the photos and a recognition model; the data are an embeddings file")
        with torch_threads(machine_threads()):
            return adaptive_outcome(self.experiment(data), float(self.eps), data.work_dir is not None)

    def experiment(self, data: AttackData) -> dict[str, Any]:
        """Table 1 plus the ``adaptive`` rows and the ``shadow_size`` rows of the summary."""
        from facepriv.advface.adaptive import adaptive_rows
        from facepriv.advface.cost import shadow_size_rows
        from facepriv.advface.data import cap_rows
        from facepriv.advface.experiment import run_experiment

        prep = prepare(self, data)
        fs, seed = prep.features, int(self.seed)
        noise = {"alpha": float(self.alpha), "steps": int(self.steps), "bound": self.bound, "seed": seed}

        def extras(ctx, protected) -> dict[str, Any]:
            own = np.flatnonzero(prep.roles == "attacker")
            own = own[cap_rows(len(own), self.adaptive_images, seed)]
            out: dict[str, Any] = {"adaptive": adaptive_rows(
                ctx, protected, prep.decoders["attacker"], fs.features[own], prep.faces.crops[own],
                methods=list(self.methods), eps_values=[float(e) for e in self.adaptive_eps], epochs=int(self.adaptive_epochs),
                lr=float(self.lr), batch_size=int(self.batch_size), arch=self.arch, **noise) if self.methods else [],
                "adaptive_images": int(len(own)) if self.methods else 0}
            if self.shadow_sizes:
                sh = np.flatnonzero(prep.roles == "shadow")
                out["shadow_size"] = shadow_size_rows(
                    ctx, fs.features[sh], prep.faces.crops[sh], fs.identity[sh], prep.configs["shadow"],
                    prep.decoders["attacker"], sizes=list(self.shadow_sizes), eps_values=sorted({0.0, float(self.eps)}),
                    **noise)
            return out

        return run_experiment(
            fs, prep.faces_of, prep.system, {self.arch: prep.decoders["shadow"]}, {self.arch: prep.decoders["attacker"]},
            split_seed=seed, main_arch=self.arch, eps=float(self.eps), sweep=(float(self.eps),), max_eval=self.max_eval,
            offline_epochs=0, parts=("table",), out_dir=data.work("eval"), runs=prep.runs, extras=extras, **noise,
        )


def _table(rows: list[dict], columns: list[str]) -> dict[str, Any]:
    return {"header": columns, "rows": [[r.get(c) for c in columns] for r in rows]}


def adaptive_outcome(s: dict[str, Any], eps: float, with_files: bool) -> AttackOutcome:
    """Table 1's outcome with the adaptive rows (headline) and the cost study added."""
    from facepriv.metrics.stats import wilson_interval

    base = outcome(s, with_files)
    base.curves = {}  # Table 1's eps sweep is not run here
    if with_files:
        base.images = ["eval/reconstructions.png"]
    rows = s["adaptive"]  # empty: cost study only, Table 1's headline stays
    for r in rows:
        for c in ("ssim", "psnr", "srra", "adaptive_ssim", "adaptive_psnr", "adaptive_srra"):
            base.metrics[f"{r['method']}_eps{r['eps']:g}_{c}"] = r[c]
    base.metrics["adaptive_images"] = s["adaptive_images"]
    base.tables["adaptive vs non-adaptive attacker"] = _table(rows, ADAPTIVE_COLUMNS)
    pick = [r for r in rows if r["method"] == "advface" and abs(r["eps"] - eps) < 1e-12] or rows
    if pick:
        h = pick[0]
        lo, hi = wilson_interval(int(round(h["adaptive_srra"] * h["n"])), h["n"])
        base.headline = headline(f"srra (adaptive attacker, {h['method']} eps {h['eps']:g})", h["adaptive_srra"],
                                 (lo, hi), "fraction")
    for method in sorted({r["method"] for r in rows}):
        mr = sorted((r for r in rows if r["method"] == method), key=lambda r: r["eps"])
        base.curves[f"adaptive_{method}"] = {
            "x": [r["eps"] for r in mr], "xlabel": f"{method} eps", "ylabel": "SRRA (%)",
            "series": {"non-adaptive attacker": [100 * r["srra"] for r in mr],
                       "adaptive attacker": [100 * r["adaptive_srra"] for r in mr]}}
    cost = s.get("shadow_size")
    if cost:
        base.tables["AdvFace cost vs shadow training set"] = _table(cost, COST_COLUMNS)
        at = sorted((r for r in cost if abs(r["eps"] - eps) < 1e-12), key=lambda r: r["shadow_images"])
        base.curves["cost_vs_shadow_images"] = {
            "x": [r["shadow_images"] for r in at], "xlabel": "shadow decoder training photos", "ylabel": "%",
            "log_x": True, "series": {"verification accuracy (%)": [100 * r["accuracy"] for r in at],
                                      "SRRA (%)": [100 * r["srra"] for r in at]}}
        for r in cost:
            base.metrics[f"cost_n{r['shadow_images']}_eps{r['eps']:g}_accuracy"] = r["accuracy"]
    return base
