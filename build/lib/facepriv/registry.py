"""One registry for every component: ``{kind, name, params}`` -> component.

Kinds: ``model``, ``protection``, ``attack``, ``dataset``. Modules register their classes with
``@register("protection", "pe_miu")``; :func:`create` validates parameter names and values and
says which are allowed.
"""

from __future__ import annotations

import importlib
from typing import Any

from facepriv.base import Component
from facepriv.errors import ParameterError

KINDS = ("model", "protection", "attack", "dataset")
_REGISTRY: dict[str, dict[str, type[Component]]] = {k: {} for k in KINDS}
# Modules whose import registers the components of each kind; imported lazily (and only for the
# kind asked for) so `import facepriv` stays cheap.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "model": ("facepriv.models.zoo",),
    "protection": ("facepriv.protections",),
    "attack": ("facepriv.attacks",),
    # five_celebrities and embeddings-file datasets live with the experiments
    "dataset": ("facepriv.datasets", "facepriv.experiments.sources"),
}
_loaded: set[str] = set()


def register(kind: str, name: str):
    """Class decorator that registers a component under ``kind``/``name``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")

    def deco(cls: type[Component]) -> type[Component]:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not cls:
            raise ValueError(f"{kind} {name!r} registered twice")
        cls.name = name
        _REGISTRY[kind][name] = cls
        return cls

    return deco


def _load(kind: str) -> None:
    if kind in _loaded:
        return
    for mod in _PROVIDERS[kind]:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency, not a provider still to be written
                raise
    _loaded.add(kind)


def available(kind: str) -> dict[str, type[Component]]:
    """Registered components of a kind, by name (sorted)."""
    if kind not in KINDS:
        raise ParameterError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    _load(kind)
    return dict(sorted(_REGISTRY[kind].items()))


def get_class(kind: str, name: str) -> type[Component]:
    """The class registered as ``kind``/``name``, or a ParameterError listing the choices."""
    comps = available(kind)
    if name not in comps:
        raise ParameterError(f"unknown {kind} {name!r}; available: {', '.join(comps) or 'none'}")
    return comps[name]


def create(kind: str, name: str, params: dict[str, Any] | None = None) -> Component:
    """Instantiate ``kind``/``name`` with ``params``, validating names and values."""
    cls = get_class(kind, name)
    params = dict(params or {})
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(
            f"{kind} {name!r}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
        )
    required = [p for p in allowed if p not in cls.param_defaults()]
    missing = [p for p in required if p not in params]
    if missing:
        raise ParameterError(f"{kind} {name!r}: missing required parameter(s) {', '.join(missing)}")
    try:
        comp = cls(**params)
    except TypeError as exc:
        raise ParameterError(f"{kind} {name!r}: {exc}") from None
    comp.validate_params()
    return comp


def describe(kind: str, name: str) -> dict[str, Any]:
    """Name, summary, reference and parameters with defaults of a component."""
    cls = get_class(kind, name)
    return {
        "kind": kind,
        "name": name,
        "summary": cls.summary,
        "reference": cls.reference,
        "params": {p: cls.param_defaults().get(p, "<required>") for p in cls.param_names()},
    }


def find(name: str) -> list[tuple[str, type[Component]]]:
    """All (kind, class) registered under ``name`` in any kind."""
    for kind in KINDS:
        _load(kind)
    return [(k, _REGISTRY[k][name]) for k in KINDS if name in _REGISTRY[k]]
