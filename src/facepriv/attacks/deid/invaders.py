"""Invaders beyond the fixed model: oblivious, adaptive (FaceCure) and training-time (Fawkes).

Each is a registered attack, a column of ``facepriv run`` next to ``deid`` (white box on the
source, plain transfer to the ``targets``):

``deid_oblivious``
    ``deid`` whose targets must all be models the cloak never saw (not the source and not an
    ``ensemble`` member of the row's cloak): refused otherwise, so a column labelled oblivious
    cannot silently contain the white-box case.
``deid_adaptive``
    FaceCure's adaptive invader (Radiya-Dixit et al., ICLR 2022). It has the public cloaking
    tool: it cloaks photos of **other people** (the cell's attacker identities, disjoint from the
    victims) with the same image protection and source model(s) at every budget, and makes its
    recogniser robust to it. On a CPU we train, per target model, a **residual linear adapter on
    the frozen backbone's embedding** (``a(e) = n(e) + W n(e) + b``, W and b start at 0,
    full-batch Adam) that maps the embedding of each cloaked photo to that of its clean original
    and keeps clean embeddings in place; the identification head is then trained on adapted
    gallery embeddings. The backbone itself is not fine-tuned (FaceCure fine-tunes the whole
    extractor). ``setting`` chooses where the cloaks are: ``probe`` (cloaked probes vs a clean
    gallery, as ``deid``) or ``training`` (FaceCure's and Fawkes' setting: the victims' published
    photos are cloaked and train the head, clean photos are probed). Both the fixed and the
    adaptive invader are reported on the same photos.
``deid_training``
    The Fawkes threat model with a fixed recogniser: the victims' published photos are cloaked,
    the invader trains its head on them, clean photos of the victims are probed; PSR = share of
    clean probes not identified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.base import AttackData, AttackOutcome, headline
from facepriv.attacks.deid.attack import _CLOAK, DeidAttack
from facepriv.errors import ParameterError
from facepriv.registry import register

_COMMON = DeidAttack.__doc__.split("Parameters\n    ----------\n", 1)[1]


def _doc(cls: type) -> type:
    """Append the parameters every de-identification attack shares (those of ``deid``)."""
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + _COMMON
    return cls


@register("attack", "deid_oblivious")
@_doc
class DeidObliviousAttack(DeidAttack):
    """Oblivious invader: ``deid`` restricted to target models the cloak was never computed on.

    Parameters
    ----------"""

    summary = "Photo cloaks vs an oblivious invader: PSR@k on models never used as a source (transfer)"
    reference = "Radiya-Dixit, Hong, Carlini, Tramer, Data poisoning won't save you from facial recognition, ICLR 2022"

    def run(self, data: AttackData) -> AttackOutcome:
        """Refuse a target that is a source of the cloak, then run ``deid``."""
        src = str(self.source or getattr(data.model, "name", "") or "")
        cloak = data.protection if getattr(data.protection, "kind", "template") == "image" else None
        cfg = self.run_config(src, cloak=cloak)
        seen = {src, *(getattr(cfg.protection(), "ensemble", None) or [])}
        bad = sorted(seen & set(self.targets or [src]))
        if bad:
            raise ParameterError(f"targets: {', '.join(bad)} computed the cloak (source or ensemble); an oblivious "
                                 "invader uses other models", param="targets")
        return super().run(data)


class _Invader(DeidAttack):
    """Shared run of the training-time and adaptive invaders (see the module docstring)."""

    setting_default = "training"
    adaptive_invader = False

    def _check_extra(self) -> None:
        if self.setting not in ("probe", "training"):
            raise ParameterError(f"setting: 'probe' or 'training', got {self.setting!r}", param="setting")
        for name, low in (("invader_photos", 1), ("adapter_epochs", 1), ("published_per_identity", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ParameterError(f"{name}: must be an integer >= {low}, got {v!r}", param=name)

    def validate_params(self) -> None:
        """Raise ParameterError naming the parameter at fault."""
        super().validate_params()
        self._check_extra()

    def run(self, data: AttackData) -> AttackOutcome:
        """Cloak the victims (and, adaptive, the invader's own people); fixed vs adaptive PSR@k."""
        from facepriv.attacks.deid.invader_eval import invade

        self.validate_params()
        if data.image_root is None:
            raise ParameterError("the deid attacks need the photos; the data are an embeddings file")
        src = str(self.source or getattr(data.model, "name", "") or "")
        if not src:
            raise ParameterError("source: name the source model (the data have no recognition model)", param="source")
        targets = list(self.targets or [src])
        cloak = data.protection if getattr(data.protection, "kind", "template") == "image" else None
        cfg = self.run_config(src, images=str(data.image_root), cloak=cloak)
        if self.setting == "training":  # the published (cloaked) photos are the run's "probes"
            cfg = dataclasses.replace(cfg, probes_per_identity=self.published_per_identity)
        ids, ident = data.clean.ids, data.clean.identity
        vic = np.asarray(data.victim)
        att = np.asarray(data.attacker)
        if self.adaptive_invader and len(att) == 0:
            raise ParameterError("the adaptive invader needs photos of other people (the cell's attacker rows)")
        with contextlib.ExitStack() as stack:
            work = data.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facepriv-invader-")))
            res = invade(cfg, root=Path(data.image_root), victims=(ids[vic].tolist(), ident[vic].tolist()),
                         invaders=(ids[att].tolist(), ident[att].tolist()) if self.adaptive_invader else None,
                         targets=targets, setting=self.setting, invader_photos=self.invader_photos,
                         adapter_epochs=self.adapter_epochs, work=work, seed=self.seed)
        return _outcome(res, src, targets, self.adaptive_invader)


def _extra_init(self: Any, setting: str, published_per_identity: int, invader_photos: int, adapter_epochs: int) -> None:
    self.setting = setting
    self.published_per_identity = published_per_identity
    self.invader_photos = invader_photos
    self.adapter_epochs = adapter_epochs


_EXTRA_DOC = """    setting : str
        ``probe``: cloaked probes vs a clean gallery (as ``deid``); ``training``: the victims'
        published photos are cloaked and train the invader's head, clean photos are probed.
    published_per_identity : int
        ``training`` setting: photos per victim that are published cloaked (the rest are the
        clean probes).
    invader_photos : int
        Adaptive invader: photos per invader identity it cloaks with the public tool to train its
        adapter (the rest train the tool's own head).
    adapter_epochs : int
        Adaptive invader: full-batch Adam epochs of the embedding adapter.
"""


@register("attack", "deid_adaptive")
class DeidAdaptiveAttack(_Invader):
    """Adaptive invader (FaceCure): robust to the public cloak via clean/cloaked pairs of other people.

    Parameters
    ----------
    """

    summary = "Photo cloaks vs an adaptive invader (FaceCure): embedding adapter trained on other people's cloaks"
    reference = "Radiya-Dixit, Hong, Carlini, Tramer, Data poisoning won't save you from facial recognition, ICLR 2022"
    adaptive_invader = True

    def __init__(self, method: str = "bim", source: str | None = None, targets: Sequence[str] | None = None,
                 eps: Sequence[float] = _CLOAK["eps"], alpha: float = _CLOAK["alpha"],
                 jpeg_quality: int | None = _CLOAK["jpeg_quality"], max_side: int = _CLOAK["max_side"],
                 batch_size: int = _CLOAK["batch_size"], probes_per_identity: int = 2, min_gallery: int = 3,
                 min_images: int | None = None, max_identities: int | None = None, max_images: int | None = None,
                 max_gallery: int | None = None, seed: int = _CLOAK["seed"], method_params: dict[str, Any] | None = None,
                 setting: str = "probe", published_per_identity: int = 3, invader_photos: int = 2,
                 adapter_epochs: int = 300) -> None:
        super().__init__(method, source, targets, eps, alpha, jpeg_quality, max_side, batch_size, probes_per_identity,
                         min_gallery, min_images, max_identities, max_images, max_gallery, seed, method_params)
        _extra_init(self, setting, published_per_identity, invader_photos, adapter_epochs)


@register("attack", "deid_training")
class DeidTrainingAttack(_Invader):
    """Training-time invader (Fawkes threat model): head trained on cloaked photos, clean probes.

    Parameters
    ----------
    """

    summary = "Photo cloaks vs a training-time invader (Fawkes threat model): PSR@k of clean probes"
    reference = "Shan et al., Fawkes, USENIX Security 2020; Radiya-Dixit et al., ICLR 2022"

    def __init__(self, method: str = "bim", source: str | None = None, targets: Sequence[str] | None = None,
                 eps: Sequence[float] = _CLOAK["eps"], alpha: float = _CLOAK["alpha"],
                 jpeg_quality: int | None = _CLOAK["jpeg_quality"], max_side: int = _CLOAK["max_side"],
                 batch_size: int = _CLOAK["batch_size"], probes_per_identity: int = 2, min_gallery: int = 3,
                 min_images: int | None = None, max_identities: int | None = None, max_images: int | None = None,
                 max_gallery: int | None = None, seed: int = _CLOAK["seed"], method_params: dict[str, Any] | None = None,
                 setting: str = "training", published_per_identity: int = 3, invader_photos: int = 2,
                 adapter_epochs: int = 300) -> None:
        super().__init__(method, source, targets, eps, alpha, jpeg_quality, max_side, batch_size, probes_per_identity,
                         min_gallery, min_images, max_identities, max_images, max_gallery, seed, method_params)
        _extra_init(self, setting, published_per_identity, invader_photos, adapter_epochs)

    def _check_extra(self) -> None:
        super()._check_extra()
        if self.setting != "training":
            raise ParameterError("setting: the training-time invader works in the 'training' setting "
                                 "(use deid or deid_adaptive for cloaked probes)", param="setting")


for _cls in (DeidAdaptiveAttack, DeidTrainingAttack):
    _cls.__doc__ = (_cls.__doc__ or "").rstrip() + "\n" + _COMMON.rstrip() + "\n" + _EXTRA_DOC


def _outcome(res: dict, src: str, targets: list[str], adaptive: bool) -> AttackOutcome:
    """Metrics, tables (PSR@1/5 per target x invader x eps) and the PSR-vs-eps curve."""
    from facepriv.metrics.stats import wilson_interval

    keys = res["eps_keys"]
    kinds = ["fixed", "adaptive"] if adaptive else ["fixed"]
    m: dict[str, Any] = {"probes": res["probes"], "identities": res["identities"], "setting": res["setting"]}
    series, tables = {}, {}
    for k in (1, 5):
        rows = []
        for t in targets:
            for kind in kinds:
                vals = [float(res["psr"][t][kind][e][k]) for e in keys]
                rows.append([t, kind] + [round(v, 1) for v in vals])
                m.update({f"psr@{k}_{t}_{kind}_eps{e}": v for e, v in zip(keys, vals, strict=True)})
                if k == 1:
                    series[f"{t} {kind}"] = vals
        tables[f"psr@{k} ({res['setting']} setting, source {src})"] = {
            "header": ["target", "invader"] + [f"eps {e}" for e in keys], "rows": rows}
    for key, q in res.get("quality", {}).items():
        m.update({f"{qk}_eps{key}": qv for qk, qv in q.items() if isinstance(qv, (int, float))})
    kind = kinds[-1]
    n = int(res["n_test"])
    v = float(res["psr"][targets[0]][kind][keys[-1]][1])
    lo, hi = wilson_interval(int(round(v * n / 100.0)), n) if n else (float("nan"), float("nan"))
    curves = {"psr_vs_eps": {"x": [float(e) for e in keys], "xlabel": "eps (pixels, 0..255)", "ylabel": "PSR@1 (%)",
                             "series": series}}
    return AttackOutcome(headline=headline(f"psr@1 eps{keys[-1]} ({src}->{targets[0]}, {kind})", v, (100 * lo, 100 * hi),
                                           "percent"), metrics=m, curves=curves, tables=tables)


__all__ = ["DeidAdaptiveAttack", "DeidObliviousAttack", "DeidTrainingAttack"]
