"""Cells of the protection x attack matrix: one adapter function per attack.

A cell is (model, protection, attack). The runner builds a :class:`CellContext` (clean
embeddings, the attacker/victim split, a factory for the protection, the attack's parameters, a
folder for the cell's files) and calls the attack's adapter, which returns a :class:`CellResult`
(headline number with its interval, further metrics, curves, images). Adding an attack = one
adapter function plus one :class:`AttackAdapter` entry in :data:`ATTACKS` (see ``adapters.py``).

Adapters call the other engineers' public library functions; when a library module is missing
from this build, the adapter is reported as "not available in this build" instead of crashing.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.embeddings import EmbeddingSet
from facepriv.errors import FacePrivError, ParameterError
from facepriv.registry import available, create

log = logging.getLogger(__name__)

#: components named by the issue whose modules may be missing from a build (kind, name) -> module
KNOWN_MODULES: dict[tuple[str, str], str] = {
    ("protection", "pe_miu"): "facepriv.protections.pe_miu",
    ("attack", "similarity"): "facepriv.attacks.soft_biometric",
    ("attack", "classifier"): "facepriv.attacks.classifiers",
}


@dataclass
class CellContext:
    """What an adapter gets.

    Attributes
    ----------
    seed : int
        Seed of this cell (derived from the config's seed).
    model_name : str
    model : RecognitionModel or None
        The recognition model (None for an embeddings-file dataset).
    clean : EmbeddingSet
        Unprotected embeddings of every selected sample with a face.
    attacker, victim : ndarray of int
        Row indices of the identity-disjoint attacker (labelled database) and victim sets.
    protection_name : str
    protection_params : dict
    attack_params : dict
        Resolved parameters of the attack.
    out_dir : Path
        Folder for the cell's files (PNG, npz); created on demand.
    image_root : Path or None
        Image folder of the dataset (None for an embeddings file).
    cache_dir : Path
        Run-wide cache folder (e.g. trained decoders shared by cells).
    """

    seed: int
    model_name: str
    model: Any
    clean: EmbeddingSet
    attacker: np.ndarray
    victim: np.ndarray
    protection_name: str
    protection_params: dict[str, Any]
    attack_params: dict[str, Any]
    out_dir: Path
    image_root: Path | None
    cache_dir: Path
    _protection: Any = None

    def protection(self):
        """The protection, fitted on the clean set (one instance per cell: same secret/params)."""
        if self._protection is None:
            p = create("protection", self.protection_name, self.protection_params)
            p.fit(self.clean)
            self._protection = p
        return self._protection

    def protect(self, es: EmbeddingSet) -> EmbeddingSet:
        """``es`` protected with this cell's protection (recorded in the set)."""
        prot = self.protection()
        out = prot.transform(es.embeddings)
        return es.with_embeddings(out, None if self.protection_name == "unprotected" else prot.record())


@dataclass
class CellResult:
    """Outcome of one cell.

    Attributes
    ----------
    headline : dict
        ``{"metric", "value", "ci_low", "ci_high", "unit"}``: the number shown in the matrix.
    metrics : dict
        Further numbers (JSON numbers only).
    curves : dict of str -> dict of str -> list
        Small series for plots, e.g. ``{"accuracy_vs_n": {"n": [...], "accuracy": [...]}}``.
    images : list of str
        PNG files written into the cell folder (names relative to it).
    tables : dict of str -> {"header": [...], "rows": [[...], ...]}
        Detail tables shown under the matrix (e.g. AdvFace's Table 1).
    status : str
        ``ok``, ``unavailable`` (library missing from this build), ``not_applicable``.
    message : str
    """

    headline: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, list]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    status: str = "ok"
    message: str = ""
    tables: dict[str, dict[str, list]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"status": self.status, "message": self.message, "headline": self.headline,
                "metrics": self.metrics, "curves": self.curves, "images": self.images, "tables": self.tables}


def headline(metric: str, value: float, ci: tuple[float, float] | None = None, unit: str = "") -> dict[str, Any]:
    """A headline entry (``ci`` may be None when no interval applies)."""
    lo, hi = ci if ci is not None else (None, None)
    return {"metric": metric, "value": float(value), "ci_low": None if lo is None else float(lo),
            "ci_high": None if hi is None else float(hi), "unit": unit}


@dataclass(frozen=True)
class AttackAdapter:
    """How the runner calls one attack.

    Attributes
    ----------
    name : str
        Attack name in configs.
    run : callable(CellContext) -> CellResult
    modules : tuple of str
        Library modules it needs; when one is missing the attack is "not available in this build".
    defaults : dict
        Parameters and defaults when the attack is not a registered component (otherwise the
        registry validates its parameters).
    needs_images : bool
        Needs the photos (not applicable to an embeddings-file dataset).
    protections : tuple of str or None
        Protections it applies to (None = every template protection).
    summary, reference : str
    """

    name: str
    run: Callable[[CellContext], CellResult]
    modules: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    needs_images: bool = False
    protections: tuple[str, ...] | None = None
    summary: str = ""
    reference: str = ""

    def missing(self) -> str | None:
        """The first required module missing from this build, or None."""
        for mod in self.modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if exc.name and mod.startswith(exc.name.split(".")[0]) and exc.name.startswith("facepriv"):
                    return mod
                raise
            except ImportError as exc:  # a name the adapter needs is not there (yet)
                return f"{mod} ({exc})"
        return None

    def applicable(self, protection: str, has_images: bool) -> str | None:
        """None if the attack applies to this protection and data, else the reason it does not."""
        if self.needs_images and not has_images:
            return "needs the photos; the dataset is an embeddings file"
        if self.protections is not None and protection not in self.protections:
            return f"applies to {', '.join(self.protections)} only"
        return None


#: attack name -> adapter; filled by :mod:`facepriv.experiments.adapters`
ATTACKS: dict[str, AttackAdapter] = {}


def add_attack(adapter: AttackAdapter) -> AttackAdapter:
    """Register an adapter (a second adapter for the same name is an error)."""
    if adapter.name in ATTACKS:
        raise ValueError(f"attack adapter {adapter.name!r} added twice")
    ATTACKS[adapter.name] = adapter
    return adapter


def attacks() -> dict[str, AttackAdapter]:
    """Every attack adapter, by name."""
    importlib.import_module("facepriv.experiments.adapters")
    return dict(sorted(ATTACKS.items()))


# ------------------------------------------------------------------------- parameter resolution
def _registered(kind: str, name: str) -> bool:
    return name in available(kind)


def unavailable_reason(kind: str, name: str) -> str | None:
    """Why a known component cannot run in this build (None when it can)."""
    if kind == "attack":
        ad = attacks().get(name)
        if ad is None:
            return None
        miss = ad.missing()
        if miss:
            return f"attack {name} not available in this build (module {miss} is missing)"
        return None
    if not _registered(kind, name) and (kind, name) in KNOWN_MODULES:
        return f"{kind} {name} not available in this build (module {KNOWN_MODULES[(kind, name)]} is missing)"
    return None


def param_names(kind: str, name: str) -> list[str]:
    """Parameter names of a component or attack adapter ([] when unknown to this build)."""
    if kind == "attack" and name in attacks() and not _registered("attack", name):
        return list(attacks()[name].defaults)
    if _registered(kind, name):
        return available(kind)[name].param_names()
    return []


def resolve_params(kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params`` and return them with every default filled in.

    Registered components go through :func:`facepriv.registry.create` (unknown names and
    parameters are reported with the allowed ones). Attacks known only as adapters are checked
    against the adapter's defaults. Components named by the issue but missing from this build
    keep their parameters as written (the runner reports them as unavailable).
    """
    if kind == "attack":
        ads = attacks()
        if name not in ads and not _registered("attack", name):
            known = sorted(set(ads) | set(available("attack")))
            raise ParameterError(f"unknown attack {name!r}; available: {', '.join(known) or 'none'}")
        if name in ads and ads[name].missing():
            return dict(params)
        if not _registered("attack", name):
            defaults = ads[name].defaults
            unknown = sorted(set(params) - set(defaults))
            if unknown:
                raise ParameterError(
                    f"attack {name!r}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(defaults) or 'none'}"
                )
            return {**defaults, **params}
    elif not _registered(kind, name) and (kind, name) in KNOWN_MODULES:
        return dict(params)
    comp = create(kind, name, params)
    return comp.get_params()


def describe_attack(name: str) -> dict[str, Any]:
    """Name, summary, reference, parameters and availability of an attack."""
    ad = attacks().get(name)
    if _registered("attack", name):
        from facepriv.registry import describe

        d = describe("attack", name)
    elif ad is not None:
        d = {"kind": "attack", "name": name, "summary": ad.summary, "reference": ad.reference,
             "params": dict(ad.defaults)}
    else:
        raise ParameterError(f"unknown attack {name!r}")
    if ad is not None:
        d["available"] = ad.missing() is None
        d["applies_to"] = "all template protections" if ad.protections is None else ", ".join(ad.protections)
        d["summary"] = d.get("summary") or ad.summary
        d["reference"] = d.get("reference") or ad.reference
    return d


def run_cell(adapter: AttackAdapter, ctx: CellContext) -> CellResult:
    """Run one cell, turning a missing module into an "unavailable" result."""
    miss = adapter.missing()
    if miss:
        return CellResult(status="unavailable", message=f"attack {adapter.name} not available in this build ({miss} missing)")
    try:
        return adapter.run(ctx)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("facepriv"):
            return CellResult(status="unavailable", message=f"attack {adapter.name} not available in this build ({exc.name} missing)")
        raise
    except FacePrivError:
        raise
