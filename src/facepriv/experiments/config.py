"""Experiment configs: YAML -> validated, frozen dataclasses.

A config names the dataset, the recognition model(s), the protections, the attacks, the utility
metrics, the seed and the output folder. Every component is ``{name, params}`` (a bare string is
``{name, params: {}}``) and is validated through :func:`facepriv.registry.create`, which reports
unknown names and parameters with the allowed values. Errors name the config file and the entry
(``protections[1]``) so the user knows what to fix.

Example::

    name: demo
    seed: 0
    dataset: {name: five_celebrities}
    models: [dlib_resnet]
    protections: [unprotected, {name: pe_miu, params: {block_size: 16}}]
    attacks: [{name: similarity}, {name: classifier, params: {classifier: knn}}]
    metrics: [eer, fnmr_at_fmr1, kfold_accuracy]
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facepriv.device import check_device_spec
from facepriv.errors import FacePrivError, InputFileError, ParameterError
from facepriv.experiments.scheduler import check_scheduler_spec

#: largest seed every consumer accepts (scikit-learn's ``random_state`` needs < 2**32)
SEED_MAX = 2**32 - 1

#: utility metrics computed on every protection (verification on protected templates)
UTILITY_METRICS = ("eer", "fnmr_at_fmr1", "kfold_accuracy")
_TOP_KEYS = {"name", "seed", "dataset", "models", "protections", "attacks", "metrics", "output", "notes", "split",
             "subset", "device", "scheduler"}
_SPLIT_KEYS = {"attacker_fraction"}
#: subset keys and defaults: 0 = no limit
SUBSET_DEFAULTS: dict[str, Any] = {
    "max_identities": 0, "max_per_identity": 0, "min_per_identity": 2, "require_gender": False,
    "balance_gender": False,
}


@dataclass(frozen=True)
class ComponentSpec:
    """One ``{name, params}`` entry of a config.

    Attributes
    ----------
    kind : str
        Registry kind (``model``, ``protection``, ``attack``, ``dataset``).
    name : str
        Registered name.
    params : dict
        Parameters as written in the config (defaults are filled by :func:`resolve`).
    label : str
        Short unique label used in file names and report tables.
    """

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def as_dict(self) -> dict[str, Any]:
        """``{name, params, label}`` as written to ``config.resolved.yaml``."""
        return {"name": self.name, "label": self.label, "params": dict(self.params)}


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment.

    Attributes
    ----------
    name : str
    seed : int
        Master seed: every random choice (subsets, splits, protections, attacks) derives from it.
    dataset : ComponentSpec
    models, protections, attacks : tuple of ComponentSpec
    metrics : tuple of str
        Utility metrics (subset of :data:`UTILITY_METRICS`).
    attacker_fraction : float
        Share of identities given to the attacker's labelled database (the rest are victims).
    output : str or None
        Default output folder (``--out`` wins).
    notes : str
    source : str
        Path of the YAML file ("" when built in code).
    device : str
        Where torch work runs (``auto``, ``cpu``, ``cuda``, ``cuda:N``); ``--device`` wins. A run-time
        choice, not part of the experiment: left out of ``config.resolved.yaml`` so that a run can be
        resumed on another device.
    scheduler : str or None
        Where the cells run: None = serially in this process, ``local:N`` = a Dask cluster of N
        worker processes on this machine, ``tcp://HOST:PORT`` = a running Dask scheduler
        (``--scheduler`` wins). A run-time choice like ``device``: not in ``config.resolved.yaml``.
    """

    name: str
    seed: int
    dataset: ComponentSpec
    models: tuple[ComponentSpec, ...]
    protections: tuple[ComponentSpec, ...]
    attacks: tuple[ComponentSpec, ...]
    metrics: tuple[str, ...] = UTILITY_METRICS
    attacker_fraction: float = 0.5
    subset: dict[str, Any] = field(default_factory=lambda: dict(SUBSET_DEFAULTS))
    output: str | None = None
    notes: str = ""
    source: str = ""
    device: str = "auto"
    scheduler: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (the content of ``config.resolved.yaml``)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "dataset": self.dataset.as_dict(),
            "models": [m.as_dict() for m in self.models],
            "protections": [p.as_dict() for p in self.protections],
            "attacks": [a.as_dict() for a in self.attacks],
            "metrics": list(self.metrics),
            "split": {"attacker_fraction": self.attacker_fraction},
            "subset": dict(self.subset),
            "output": self.output,
            "notes": self.notes,
        }


def slug(text: str) -> str:
    """File-name-safe form of a label (letters, digits, ``-_.=``)."""
    s = re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")
    return s or "x"


def default_label(name: str, params: dict[str, Any]) -> str:
    """``pe_miu`` or ``pe_miu(block_size=16)`` from the params written in the config."""
    shown = {k: v for k, v in params.items() if k not in ("seed", "root", "labels", "path", "data_dir")}
    if not shown:
        return name
    inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(shown.items()))
    return f"{name}({inner})"


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


class ConfigError(ParameterError):
    """A config file is invalid (message names the file and the entry)."""


def _err(src: str, where: str, problem: str) -> ConfigError:
    prefix = f"{src}: " if src else ""
    return ConfigError(f"{prefix}{where}: {problem}")


def _spec(kind: str, entry: Any, where: str, src: str) -> ComponentSpec:
    if isinstance(entry, str):
        return ComponentSpec(kind, entry, {}, default_label(entry, {}))
    if not isinstance(entry, dict):
        raise _err(src, where, f"expected a name or a mapping {{name, params}}, got {type(entry).__name__}")
    extra = sorted(set(entry) - {"name", "params", "label"})
    if extra:
        raise _err(src, where, f"unknown key(s) {', '.join(extra)}; allowed: name, params, label")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _err(src, where, "missing 'name'")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise _err(src, where, f"'params' must be a mapping, got {type(params).__name__}")
    label = entry.get("label") or default_label(name, params)
    if not isinstance(label, str):
        raise _err(src, where, "'label' must be a string")
    return ComponentSpec(kind, name, dict(params), label)


def _spec_list(kind: str, raw: Any, key: str, src: str, required: bool = True) -> tuple[ComponentSpec, ...]:
    if raw is None:
        if required:
            raise _err(src, key, "missing (a list of components)")
        return ()
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise _err(src, key, f"must be a list, got {type(raw).__name__}")
    if required and not raw:
        raise _err(src, key, "must not be empty")
    specs = tuple(_spec(kind, e, f"{key}[{i}]", src) for i, e in enumerate(raw))
    labels = [s.label for s in specs]
    dups = sorted({x for x in labels if labels.count(x) > 1})
    if dups:
        raise _err(src, key, f"duplicate entries {', '.join(dups)}; give them distinct 'label's")
    slugs = [slug(x) for x in labels]
    if len(set(slugs)) != len(slugs):
        raise _err(src, key, "two labels map to the same file name; give them distinct 'label's")
    return specs


def parse_config(data: Any, source: str = "") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a parsed YAML mapping (structure only).

    Component names and parameters are checked by :func:`validate`.
    """
    if not isinstance(data, dict):
        raise _err(source, "top level", "a config must be a YAML mapping")
    extra = sorted(set(data) - _TOP_KEYS)
    if extra:
        raise _err(source, "top level", f"unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise _err(source, "seed", f"must be an integer from 0 to {SEED_MAX}, got {seed!r}")
    if "dataset" not in data:
        raise _err(source, "dataset", "missing (e.g. {name: folder, params: {root: DIR}})")
    dataset = _spec("dataset", data["dataset"], "dataset", source)
    models = _spec_list("model", data.get("models", ["dlib_resnet"]), "models", source)
    protections = _spec_list("protection", data.get("protections"), "protections", source)
    attacks = _spec_list("attack", data.get("attacks"), "attacks", source, required=False)
    metrics = data.get("metrics", list(UTILITY_METRICS))
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list):
        raise _err(source, "metrics", "must be a list")
    bad = [m for m in metrics if m not in UTILITY_METRICS]
    if bad:
        raise _err(source, "metrics", f"unknown metric(s) {', '.join(map(str, bad))}; allowed: {', '.join(UTILITY_METRICS)}")
    split = data.get("split") or {}
    if not isinstance(split, dict) or set(split) - _SPLIT_KEYS:
        raise _err(source, "split", f"must be a mapping with keys {', '.join(sorted(_SPLIT_KEYS))}")
    frac = split.get("attacker_fraction", 0.5)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.1 <= float(frac) <= 0.9:
        raise _err(source, "split.attacker_fraction", f"must be a number in [0.1, 0.9], got {frac!r}")
    subset = _parse_subset(data.get("subset") or {}, source)
    output = data.get("output")
    if output is not None and not isinstance(output, str):
        raise _err(source, "output", "must be a folder path string")
    name = data.get("name") or (Path(source).stem if source else "experiment")
    device = data.get("device", "auto")
    try:
        device = check_device_spec(device if isinstance(device, str) else repr(device))
    except ParameterError as exc:
        raise _err(source, "device", str(exc).partition(": ")[2] or str(exc)) from None
    try:
        scheduler = check_scheduler_spec(data.get("scheduler"))
    except ParameterError as exc:
        raise _err(source, "scheduler", str(exc)) from None
    return ExperimentConfig(
        name=str(name), seed=int(seed), dataset=dataset, models=models, protections=protections,
        attacks=attacks, metrics=tuple(dict.fromkeys(metrics)), attacker_fraction=float(frac),
        subset=subset, output=output, notes=str(data.get("notes") or ""), source=source,
        device=device, scheduler=scheduler,
    )


def _parse_subset(raw: Any, src: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _err(src, "subset", "must be a mapping")
    extra = sorted(set(raw) - set(SUBSET_DEFAULTS))
    if extra:
        raise _err(src, "subset", f"unknown key(s) {', '.join(extra)}; allowed: {', '.join(SUBSET_DEFAULTS)}")
    out = dict(SUBSET_DEFAULTS)
    for k, v in raw.items():
        want_bool = isinstance(SUBSET_DEFAULTS[k], bool)
        if want_bool and not isinstance(v, bool):
            raise _err(src, f"subset.{k}", f"must be true or false, got {v!r}")
        if not want_bool and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise _err(src, f"subset.{k}", f"must be a non-negative integer (0 = no limit), got {v!r}")
        out[k] = v
    if out["min_per_identity"] < 1:
        raise _err(src, "subset.min_per_identity", "must be at least 1")
    return out


def load_config(path: str | os.PathLike[str], seed: int | None = None) -> ExperimentConfig:
    """Read, parse and fully validate a YAML config file (``seed`` overrides its master seed).

    Raises
    ------
    InputFileError
        The file is missing or not YAML.
    ConfigError
        Structure, component names or parameters are invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"not valid YAML ({' '.join(str(exc).split())})") from None
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise ParameterError(f"seed must be an integer from 0 to {SEED_MAX}, got {seed!r}", param="seed")
        if isinstance(data, dict):
            data = {**data, "seed": seed}
    cfg = parse_config(data, str(p))
    return resolve(cfg)


#: offsets of the seeds derived for components that do not set one (public seeds only: a
#: parameter that acts as a key is never derived from the public master seed, see :mod:`keys`)
PROTECTION_SEED_OFFSET = 1000
ATTACK_SEED_OFFSET = 2000


def derived_seed(cfg_seed: int, kind: str, index: int) -> int:
    """The seed a component without an explicit ``seed`` gets: master + offset + position."""
    # Wrapped to 32 bits: scikit-learn's random_state accepts nothing larger.
    return (cfg_seed + (PROTECTION_SEED_OFFSET if kind == "protection" else ATTACK_SEED_OFFSET) + index) % (SEED_MAX + 1)


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """Validate every component through the registry and fill in default parameters.

    Public seeds not given in the config are derived from the master seed (same config, same
    numbers). A secret parameter (a protection key such as PE-MIU's ``seed``) is never derived
    from the public seed: when the config does not set it, it stays out of the resolved
    parameters and the runner draws it (see :func:`facepriv.experiments.keys.run_keys`).
    Components are instantiated here, so every parameter error is reported, with the config
    file and the entry, before any work starts.
    """
    from facepriv.registry import create, get_class

    def full(spec: ComponentSpec, where: str, seed_default: int | None) -> ComponentSpec:
        params = dict(spec.params)
        try:
            cls = get_class(spec.kind, spec.name)
            secrets = set(getattr(cls, "secret_params", ()))
            if seed_default is not None and "seed" in cls.param_names() and "seed" not in params and "seed" not in secrets:
                params["seed"] = seed_default
            comp = create(spec.kind, spec.name, params)
        except FacePrivError as exc:
            raise _err(cfg.source, where, _named(spec, exc)) from None
        resolved = comp.get_params()
        for k in secrets - set(params):  # drawn by the runner, never derived or defaulted
            resolved.pop(k, None)
        return ComponentSpec(spec.kind, spec.name, resolved, spec.label)

    dataset = full(cfg.dataset, "dataset", cfg.seed)
    models = tuple(full(m, f"models[{i}]", None) for i, m in enumerate(cfg.models))
    prots = tuple(full(p, f"protections[{i}]", derived_seed(cfg.seed, "protection", i)) for i, p in enumerate(cfg.protections))
    attacks = tuple(full(a, f"attacks[{i}]", derived_seed(cfg.seed, "attack", i)) for i, a in enumerate(cfg.attacks))
    from dataclasses import replace

    return replace(cfg, dataset=dataset, models=models, protections=prots, attacks=attacks)


def _named(spec: ComponentSpec, exc: Exception) -> str:
    """The error text, prefixed with the component name and the parameter when known."""
    msg = str(exc)
    param = getattr(exc, "param", None)
    if param and param not in msg:
        msg = f"{param}: {msg}"
    return msg if spec.name in msg else f"{spec.name}: {msg}"


def dump_yaml(obj: Any) -> str:
    """YAML text of plain data (keys kept in order)."""
    return yaml.safe_dump(_plain(obj), sort_keys=False, allow_unicode=True)


def _plain(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, so ``yaml.safe_dump`` accepts it."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj
