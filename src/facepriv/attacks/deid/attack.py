"""The registered ``deid`` attack: photo cloaks vs. closed-set identification (Ghafourian et al. 2023).

The constructor parameters of :class:`DeidAttack` are the one source of every de-identification
parameter and its default: ``facepriv run`` (YAML), ``facepriv deid run|eval`` (flags) and
``facepriv describe deid`` all read them from here. The cloak parameters (``eps``, ``alpha``,
``jpeg_quality``, ``max_side``, ``batch_size``, ``seed``) configure the image protection named by
``method``; their defaults are those of :class:`~facepriv.protections.image.ImageProtection`,
read from its constructor so the two can never disagree.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facepriv.attacks.base import Attack, AttackData, AttackOutcome, headline
from facepriv.attacks.deid.protocol import check_split_params
from facepriv.errors import ParameterError
from facepriv.protections.image import ImageProtection
from facepriv.registry import register

_CLOAK = ImageProtection.param_defaults()


@register("attack", "deid")
class DeidAttack(Attack):
    """Photo de-identification: cloak probe photos on a source model, identify them with target models.

    Per identity a seeded split puts ``probes_per_identity`` photos in the probe set and the rest
    in the gallery; each recognition model gets a softmax identification head trained on the
    gallery. The probes are cloaked at every budget ``eps`` by the image protection ``method`` on
    the ``source`` model, published (JPEG or PNG), read back, re-detected, re-aligned and ranked
    by every target model's head. PSR@k = share of cloaked probes whose identity is not in the
    target's top k (a probe whose face is not re-detected counts as protected). Headline: PSR@1
    at the largest eps, source -> first target.

    Parameters
    ----------
    method : str
        The photo cloak: ``bim`` (untargeted BIM), ``illc`` (iterative least-likely class),
        ``push`` (open-set embedding push), or any registered image protection name or
        ``package.module:Class`` (a subclass of ImageProtection).
    source : str or None
        Differentiable recognition model the cloak is computed on; None = the model of the
        experiment row (``facepriv run``); ``facepriv deid run`` requires it.
    targets : list of str or None
        Recognition models that try to identify the cloaked photos; None = the source only.
    eps : sequence of float
        L-inf budgets in pixel units on 0..255 (one cloak per budget). Default 4, 8, 16, 32: the
        paper's budgets up to 32 (64 and 128 visibly damage the photo and take 68 / 132 iterations).
    alpha : float
        Step size in pixel units; iterations min(eps/alpha + 4, 1.25 eps/alpha) (Kurakin et al.).
    jpeg_quality : int or None
        Cloaks are published as JPEG at this quality (1..100); None = lossless PNG.
    max_side : int
        Working resolution: longer photo side in pixels (larger photos are downscaled first).
    batch_size : int
        Photos cloaked together.
    probes_per_identity : int
        Photos per identity that are cloaked (probes); the rest form the gallery.
    min_gallery : int
        Fewest gallery photos an identity may have.
    min_images : int or None
        Leave out identities with fewer photos; None = such identities are an error.
    max_identities : int or None
        Keep a seeded random subset of this many identities; None = all.
    max_images : int or None
        Cap on the number of probes (round-robin over identities); None = no cap.
    max_gallery : int or None
        Cap on gallery photos per identity (seeded choice); None = all.
    seed : int
        Seeds the gallery/probe split, the identification heads and the cloak's random choices.
    method_params : dict or None
        Further constructor parameters of the image protection ``method`` (its own, beyond the
        common ones above); None = none.
    postprocess : list of str or None
        Also identify the stored photos after each of these post-processings (``jpeg:Q``,
        ``resize:F`` downscale, ``blur:S`` Gaussian sigma), written as copies into separate
        folders (never over a cloak); e.g. jpeg:95, jpeg:75, jpeg:50, resize:0.5, blur:1.5. None = none.
    """

    summary = "Photo cloaks (BIM / ILLC / push / your own) vs. closed-set identification: PSR@k per eps, source -> target"
    reference = "Ghafourian et al., Toward face biometric de-identification using adversarial examples, 2023"
    needs_images = True
    applies_to = ("template", "image")

    @classmethod
    def not_applicable(cls, protection: Any, has_images: bool) -> str | None:
        """Applies to the ``unprotected`` row (cloak = ``method``) and to image-protection rows (their cloak)."""
        if not has_images:
            return "needs the photos; the dataset is an embeddings file"
        if getattr(protection, "kind", "template") == "image" or getattr(protection, "name", "") == "unprotected":
            return None
        return ("cloaks photos: applies to the unprotected row (with its own method) and to image "
                "protections (with the row's cloak)")

    def __init__(
        self,
        method: str = "bim",
        source: str | None = None,
        targets: Sequence[str] | None = None,
        eps: Sequence[float] = _CLOAK["eps"],
        alpha: float = _CLOAK["alpha"],
        jpeg_quality: int | None = _CLOAK["jpeg_quality"],
        max_side: int = _CLOAK["max_side"],
        batch_size: int = _CLOAK["batch_size"],
        probes_per_identity: int = 2,
        min_gallery: int = 3,
        min_images: int | None = None,
        max_identities: int | None = None,
        max_images: int | None = None,
        max_gallery: int | None = None,
        seed: int = _CLOAK["seed"],
        method_params: dict[str, Any] | None = None,
        postprocess: Sequence[str] | None = None,
    ) -> None:
        self.method = method
        self.source = source
        self.targets = targets
        self.eps = eps
        self.alpha = alpha
        self.jpeg_quality = jpeg_quality
        self.max_side = max_side
        self.batch_size = batch_size
        self.probes_per_identity = probes_per_identity
        self.min_gallery = min_gallery
        self.min_images = min_images
        self.max_identities = max_identities
        self.max_images = max_images
        self.max_gallery = max_gallery
        self.seed = seed
        self.method_params = method_params
        self.postprocess = postprocess

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault (no model is loaded)."""
        check_split_params(probes_per_identity=self.probes_per_identity, min_gallery=self.min_gallery,
                           min_images=self.min_images, max_identities=self.max_identities, max_images=self.max_images,
                           max_gallery=self.max_gallery, seed=self.seed)
        if self.method_params is not None and not isinstance(self.method_params, dict):
            raise ParameterError(f"method_params: must be a mapping or None, got {self.method_params!r}",
                                 param="method_params")
        if self.source is not None:
            _check_model_name("source", self.source)
        if self.targets is not None:
            if isinstance(self.targets, str) or not isinstance(self.targets, Sequence) or not self.targets:
                raise ParameterError(f"targets: give a list of one or more models (or None), got {self.targets!r}",
                                     param="targets")
            for t in self.targets:
                _check_model_name("targets", t)
        from facepriv.attacks.deid.postprocess import parse_list

        parse_list(getattr(self, "postprocess", None), "postprocess")
        self.run_config("").protection()  # the image protection validates eps, alpha, jpeg_quality, ...

    def run_config(self, source: str, images: str = "", labels: str | None = None, cloak: Any = None):
        """The :class:`~facepriv.attacks.deid.run.RunConfig` of a cloaking run on ``source``.

        ``cloak`` (an image protection, e.g. the row of a ``facepriv run`` matrix) replaces
        ``method`` and the cloak parameters (eps, alpha, ...) by its own.
        """
        from facepriv.attacks.deid.run import CLOAK_PARAMS, RunConfig

        cloak_params = {k: getattr(self, k) for k in CLOAK_PARAMS}
        method, method_params = self.method, dict(self.method_params or {})
        if cloak is not None:
            own = cloak.get_params()
            method = cloak.name
            # the gallery/probe split follows the attack's seed on every row, so rows stay paired
            cloak_params = {**{k: own[k] for k in CLOAK_PARAMS}, "seed": self.seed}
            method_params = {k: v for k, v in own.items() if k not in CLOAK_PARAMS}
        eps = cloak_params.pop("eps")
        split = {k: getattr(self, k) for k in ("probes_per_identity", "min_gallery", "min_images", "max_identities",
                                               "max_images", "max_gallery")}
        return RunConfig(
            method=method, source=source, eps=tuple(eps) if isinstance(eps, Sequence) and not isinstance(eps, str) else eps,
            **cloak_params, **split, method_params=method_params, images=images, labels=labels,
        )

    def run(self, data: AttackData) -> AttackOutcome:
        """Cloak the cell's probes, identify them with every target; PSR@k per eps (in memory)."""
        from facepriv.attacks.deid.evaluate import evaluate
        from facepriv.attacks.deid.run import run_cloaks

        self.validate_params()
        if data.image_root is None:
            raise ParameterError("the deid attack needs the photos; the data are an embeddings file")
        src = str(self.source or getattr(data.model, "name", "") or "")
        if not src:
            raise ParameterError("source: name the source model (the data have no recognition model)", param="source")
        targets = list(self.targets or [src])
        cloak = data.protection if getattr(data.protection, "kind", "template") == "image" else None
        cfg = self.run_config(src, images=str(data.image_root), cloak=cloak)
        with contextlib.ExitStack() as stack:
            work = data.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facepriv-deid-")))
            device = getattr(data, "device", "cpu")
            run = run_cloaks(cfg, data.clean.ids.tolist(), data.clean.identity.tolist(), data.image_root,
                             work / "cloaks", overwrite=True, device=device)
            s = evaluate([run], targets, work / "eval", overwrite=True, device=device)
            post = _postprocessed(run, self.postprocess, targets, work, device)
        return outcome(s, src, targets, post)


def _check_model_name(param: str, name: Any) -> None:
    from facepriv.registry import get_class

    if not isinstance(name, str) or not name:
        raise ParameterError(f"{param}: name a recognition model, got {name!r}", param=param)
    try:
        get_class("model", name)
    except ParameterError as exc:
        raise ParameterError(f"{param}: {exc}", param=param) from None


def _postprocessed(run: Any, specs: Sequence[str] | None, targets: list[str], work: Path,
                   device: str = "cpu") -> dict[str, dict]:
    """Evaluation summary of each post-processed copy of the run (copies in ``work/post/<label>``)."""
    from facepriv.attacks.deid.evaluate import evaluate
    from facepriv.attacks.deid.postprocess import parse_list, postprocess_run

    out = {}
    for pp in parse_list(specs, "postprocess"):
        pr = postprocess_run(run, pp, work / "post" / pp.label, overwrite=True)
        out[pp.label] = evaluate([pr], targets, work / "post" / pp.label / "eval", overwrite=True, device=device)
    return out


def outcome(s: dict, src: str, targets: list[str], post: dict[str, dict] | None = None) -> AttackOutcome:
    """The attack's result from an evaluation summary (in memory: PSR values carry their counts).

    ``post``: summaries of post-processed copies by label; they add ``psr@k_<target>_<label>_eps<E>``
    metrics and a table per k (rows target x post-processing, columns eps).
    """
    from facepriv.metrics.stats import wilson_interval

    n = int(s["runs"][0]["probes"])
    keys = list(s["psr"][src][targets[0]].keys())
    m: dict[str, Any] = {"probes": n, "identities": s["dataset"]["identities"]}
    series = {}
    for t in targets:
        row = s["psr"][src][t]
        for key in keys:
            for k, v in row[key].items():
                m[f"psr@{k}_{t}_eps{key}"] = float(v)
        series[f"{t} PSR@1"] = [float(row[key][1]) for key in keys]
    top = keys[-1]
    psr1 = s["psr"][src][targets[0]][top][1]
    protected = int(round(float(psr1) * n / 100.0))
    lo, hi = wilson_interval(protected, n) if n else (float("nan"), float("nan"))
    for key, qd in s.get("quality", {}).get(src, {}).items():
        if isinstance(qd, dict):
            m.update({f"{qk}_eps{key}": qv for qk, qv in qd.items() if isinstance(qv, (int, float))})
    curves = {"psr_vs_eps": {"x": [float(k) for k in keys], "xlabel": "eps (pixels, 0..255)",
                             "ylabel": "PSR@1 (%)", "series": series}}
    tables = {}
    if post:
        for k in (1, 5):
            rows = [[t, "published"] + [round(float(s["psr"][src][t][key][k]), 1) for key in keys] for t in targets]
            for label, ps in post.items():
                for t in targets:
                    vals = [float(ps["psr"][src][t][key][k]) for key in keys]
                    rows.append([t, label] + [round(v, 1) for v in vals])
                    m.update({f"psr@{k}_{t}_{label}_eps{key}": v for key, v in zip(keys, vals, strict=True)})
            tables[f"psr@{k} after post-processing (source {src})"] = {
                "header": ["target", "post-processing"] + [f"eps {key}" for key in keys], "rows": rows}
    return AttackOutcome(headline=headline(f"psr@1 eps{top} ({src}->{targets[0]})", float(psr1), (100 * lo, 100 * hi),
                                           "percent"), metrics=m, curves=curves, tables=tables)
