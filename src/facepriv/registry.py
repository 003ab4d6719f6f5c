"""One registry for every component: ``{kind, name, params}`` -> component.

Kinds: ``model``, ``protection``, ``attack``, ``dataset``. Three ways to provide a component:

1. built in: a facepriv module registers its class with ``@register("protection", "pe_miu")``;
2. an installed plugin: a Python entry point in group ``facepriv.models``, ``facepriv.protections``,
   ``facepriv.attacks`` or ``facepriv.datasets`` whose name is the component name and whose value
   is the class (``my_pkg.protect:MyProtection``);
3. a reference ``package.module:Class`` written wherever a component name is accepted (YAML
   ``name:``, CLI), imported on use.

A plugin that fails to import or whose class breaks the kind's protocol is reported in one line
naming the entry point and the problem (:func:`plugin_problems`); it never hides a built-in, and a
plugin may not take a built-in's name.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from importlib import metadata
from typing import Any

from facepriv.base import Component
from facepriv.errors import ParameterError, PluginError

log = logging.getLogger(__name__)

KINDS = ("model", "protection", "attack", "dataset")
#: entry-point group of each kind
GROUPS = {"model": "facepriv.models", "protection": "facepriv.protections",
          "attack": "facepriv.attacks", "dataset": "facepriv.datasets"}
_REGISTRY: dict[str, dict[str, type[Component]]] = {k: {} for k in KINDS}
_ORIGIN: dict[tuple[str, str], str] = {}  # (kind, name) -> "built-in" or "plugin <ep>"
# Modules whose import registers the built-in components of each kind; imported lazily (and only
# for the kind asked for) so `import facepriv` stays cheap.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "model": ("facepriv.models.zoo",),
    "protection": ("facepriv.protections",),
    "attack": ("facepriv.attacks",),
    "dataset": ("facepriv.datasets", "facepriv.experiments.sources"),
}
_loaded: set[str] = set()
_problems: dict[str, list[str]] = {k: [] for k in KINDS}
_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def base_class(kind: str) -> type:
    """The class every component of ``kind`` must derive from."""
    if kind == "model":
        from facepriv.models.base import RecognitionModel

        return RecognitionModel
    if kind == "protection":
        from facepriv.protections.base import TemplateProtection

        return TemplateProtection
    if kind == "attack":
        from facepriv.attacks.base import Attack

        return Attack
    if kind == "dataset":
        from facepriv.datasets.base import Dataset

        return Dataset
    raise ParameterError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")


def register(kind: str, name: str):
    """Class decorator that registers a built-in component under ``kind``/``name``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")

    def deco(cls: type[Component]) -> type[Component]:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not cls:
            raise ValueError(f"{kind} {name!r} registered twice")
        cls.name = name
        _REGISTRY[kind][name] = cls
        _ORIGIN[(kind, name)] = f"{cls.__module__}:{cls.__qualname__}"
        return cls

    return deco


def protocol_problem(kind: str, obj: Any) -> str | None:
    """Why ``obj`` is not a valid component class of ``kind`` (None when it is)."""
    base = base_class(kind)
    if not inspect.isclass(obj):
        return f"is a {type(obj).__name__}, not a class"
    if not issubclass(obj, base):
        return f"{obj.__qualname__} does not derive from {base.__module__}.{base.__qualname__}"
    try:
        sig = inspect.signature(obj.__init__)
    except (TypeError, ValueError) as exc:
        return f"its constructor has no readable signature ({exc})"
    var = [p for p in sig.parameters.values() if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if var:
        return f"its constructor takes *args/**kwargs ({var[0].name}); parameters must be named arguments"
    if kind == "attack" and obj.run is base.run:
        return f"{obj.__qualname__} does not implement run(data)"
    if kind == "protection" and obj.transform is base.transform:
        return f"{obj.__qualname__} does not implement transform(x)"
    return None


def _load_entry_points(kind: str) -> None:
    try:
        eps = metadata.entry_points(group=GROUPS[kind])
    except Exception as exc:  # a broken distribution's metadata must not hide the built-ins
        _problems[kind].append(f"entry points of group {GROUPS[kind]} unreadable: {exc}")
        return
    for ep in sorted(eps, key=lambda e: e.name):
        where = f"entry point {ep.name} = {ep.value} (group {GROUPS[kind]})"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported, not raised
            _problems[kind].append(f"{where}: import failed: {type(exc).__name__}: {exc}")
            continue
        if ep.name in _REGISTRY[kind] and _REGISTRY[kind][ep.name] is not obj:
            _problems[kind].append(f"{where}: the name {ep.name!r} is taken by {_ORIGIN[(kind, ep.name)]}; skipped")
            continue
        why = protocol_problem(kind, obj)
        if why:
            _problems[kind].append(f"{where}: {why}")
            continue
        if _REGISTRY[kind].get(ep.name) is obj:
            continue
        obj.name = ep.name
        _REGISTRY[kind][ep.name] = obj
        _ORIGIN[(kind, ep.name)] = f"plugin {ep.value}"


def _load(kind: str) -> None:
    if kind in _loaded:
        return
    for mod in _PROVIDERS[kind]:
        importlib.import_module(mod)
    _loaded.add(kind)  # before plugins: a plugin importing facepriv must not recurse here
    _load_entry_points(kind)
    for p in _problems[kind]:
        log.warning("plugin problem: %s", p)


def plugin_problems(kind: str | None = None) -> list[str]:
    """One line per plugin of ``kind`` (all kinds when None) that could not be registered."""
    kinds = KINDS if kind is None else (kind,)
    out = []
    for k in kinds:
        _load(k)
        out.extend(_problems[k])
    return out


def available(kind: str) -> dict[str, type[Component]]:
    """Registered components of a kind (built-ins and installed plugins), by name (sorted)."""
    if kind not in KINDS:
        raise ParameterError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    _load(kind)
    return dict(sorted(_REGISTRY[kind].items()))


def is_reference(name: str) -> bool:
    """Whether ``name`` is a ``package.module:Class`` reference."""
    return bool(_REF.match(name))


def _from_reference(kind: str, ref: str) -> type[Component]:
    mod_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise PluginError(f"{kind} {ref!r}: cannot import module {mod_name!r} ({exc})") from None
    except AttributeError:
        raise PluginError(f"{kind} {ref!r}: module {mod_name!r} has no attribute {attr!r}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin module failing at import is the plugin's problem
        raise PluginError(f"{kind} {ref!r}: importing {mod_name!r} failed: {type(exc).__name__}: {exc}") from None
    why = protocol_problem(kind, obj)
    if why:
        raise PluginError(f"{kind} {ref!r}: {why}")
    if not getattr(obj, "name", ""):
        obj.name = ref
    return obj


def get_class(kind: str, name: str) -> type[Component]:
    """The class registered as ``kind``/``name`` (or referenced as ``module:Class``).

    Raises
    ------
    ParameterError
        Unknown name (the message lists the choices).
    PluginError
        A ``module:Class`` reference that cannot be imported or breaks the protocol.
    """
    if not isinstance(name, str):
        raise ParameterError(f"{kind} name must be a string, got {type(name).__name__}")
    if is_reference(name):
        return _from_reference(kind, name)
    comps = available(kind)
    if name not in comps:
        broken = [p for p in _problems[kind] if p.startswith(f"entry point {name} = ")]
        if broken:
            raise PluginError(f"{kind} {name!r} is a plugin that cannot be used: {broken[0]}")
        raise ParameterError(f"unknown {kind} {name!r}; available: {', '.join(comps) or 'none'} "
                             "(or a package.module:Class reference)")
    return comps[name]


def create(kind: str, name: str, params: dict[str, Any] | None = None) -> Component:
    """Instantiate ``kind``/``name`` with ``params``, validating names and values."""
    cls = get_class(kind, name)
    params = dict(params or {})
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(
            f"{kind} {name!r}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}",
            param=unknown[0],
        )
    defaults = cls.param_defaults()
    missing = [p for p in allowed if p not in defaults and p not in params]
    if missing:
        raise ParameterError(f"{kind} {name!r}: missing required parameter(s) {', '.join(missing)}", param=missing[0])
    try:
        comp = cls(**params)
    except TypeError as exc:
        raise ParameterError(f"{kind} {name!r}: {exc}") from None
    comp.validate_params()
    return comp


def _own_param_docs(doc: str) -> dict[str, str]:
    lines = doc.splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Parameters" and i + 1 < len(lines)
                     and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return out
    cur: list[str] = []
    body = lines[start + 2:]
    for j, ln in enumerate(body):
        if j + 1 < len(body) and body[j + 1].strip() and set(body[j + 1].strip()) == {"-"}:
            break  # the next section's title
        if ln and not ln.startswith(" "):
            names = [n.strip() for n in ln.split(":")[0].split(",")]  # "a, b : int" documents both
            cur = [n for n in names if n.isidentifier()]
            for n in cur:
                out[n] = ""
        elif cur and ln.strip():
            for n in cur:
                out[n] = (out[n] + " " + ln.strip()).strip()
    return out


def param_docs(cls: type) -> dict[str, str]:
    """Meaning of each constructor parameter, from the numpy-style ``Parameters`` sections.

    A subclass's own section wins; parameters it does not document take the text of the nearest
    base class that does.
    """
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "__doc__" in vars(klass) and klass.__doc__:
            out.update({k: v for k, v in _own_param_docs(inspect.cleandoc(klass.__doc__)).items() if v})
    return out


def describe(kind: str, name: str) -> dict[str, Any]:
    """Name, origin, summary, reference and every parameter with its default and meaning."""
    cls = get_class(kind, name)
    defaults = cls.param_defaults()
    docs = param_docs(cls)
    secrets = set(getattr(cls, "secret_params", ()))
    params = {}
    for p in cls.param_names():
        params[p] = {"default": defaults.get(p, "<required>"), "meaning": docs.get(p, ""),
                     "secret": p in secrets}
    d: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "origin": _ORIGIN.get((kind, name), f"reference {name}"),
        "summary": cls.summary,
        "reference": cls.reference,
        "params": params,
    }
    for attr in ("kind", "threat_model", "needs_images", "applies_to", "only_protections"):
        if attr in ("kind",) and kind != "protection":
            continue
        if hasattr(cls, attr):
            v = getattr(cls, attr)
            d["protection_kind" if attr == "kind" else attr] = list(v) if isinstance(v, tuple) else v
    return d


def find(name: str) -> list[tuple[str, type[Component]]]:
    """All (kind, class) registered under ``name`` in any kind (or referenced by it)."""
    if is_reference(name):
        out = []
        for kind in KINDS:
            try:
                out.append((kind, _from_reference(kind, name)))
            except PluginError:
                continue
        return out
    for kind in KINDS:
        _load(kind)
    return [(k, _REGISTRY[k][name]) for k in KINDS if name in _REGISTRY[k]]
