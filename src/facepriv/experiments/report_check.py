"""Checks of a run folder's files before ``facepriv report`` draws anything from them.

A ``metrics.json`` holding a list, a cell that is a string, a broken ``config.resolved.yaml``:
each gives one :class:`~facepriv.errors.InputFileError` naming the file and the place in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facepriv.errors import InputFileError
from facepriv.fileio import one_line


def _bad(path: Path, where: str, want: str, got: Any) -> InputFileError:
    return InputFileError(path, f"{where}: expected {want}, got {type(got).__name__}; not a facepriv metrics.json")


def _check_cell(path: Path, where: str, c: Any) -> None:
    if c is None:
        return
    if not isinstance(c, dict):
        raise _bad(path, where, "an object", c)
    for key, want in (("headline", dict), ("metrics", dict), ("curves", dict), ("tables", dict), ("images", list)):
        if c.get(key) is not None and not isinstance(c[key], want):
            raise _bad(path, f"{where}.{key}", "an object" if want is dict else "a list", c[key])
    h = c.get("headline") or {}
    for key in ("value", "ci_low", "ci_high"):
        if h.get(key) is not None and (isinstance(h[key], bool) or not isinstance(h[key], (int, float))):
            raise _bad(path, f"{where}.headline.{key}", "a number", h[key])
    for name, curve in (c.get("curves") or {}).items():
        if not isinstance(curve, dict) or not isinstance(curve.get("x", []), list) \
                or not isinstance(curve.get("series") or {}, dict):
            raise _bad(path, f"{where}.curves.{name}", "an object with a list 'x' and an object 'series'", curve)
        for sname, ys in (curve.get("series") or {}).items():
            if not isinstance(ys, list) or len(ys) != len(curve.get("x", [])) \
                    or any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in ys):
                raise InputFileError(path, f"{where}.curves.{name}.series.{sname}: expected a list of numbers as long as 'x'")
    for tname, t in (c.get("tables") or {}).items():
        if not isinstance(t, dict) or not isinstance(t.get("header", []), list) or not isinstance(t.get("rows", []), list) \
                or not all(isinstance(r, list) for r in t.get("rows", [])):
            raise _bad(path, f"{where}.tables.{tname}", "an object with list 'header' and list-of-lists 'rows'", t)


def check_metrics(path: Path, metrics: Any) -> dict[str, Any]:
    """``metrics`` if it has the structure of a run's ``metrics.json``; InputFileError naming ``path`` if not."""
    if not isinstance(metrics, dict):
        raise _bad(path, "top level", "a JSON object", metrics)
    if "models" not in metrics:
        raise InputFileError(path, "has no 'models' entry; not a facepriv metrics.json")
    for key in ("dataset", "models"):
        if metrics.get(key) is not None and not isinstance(metrics[key], dict):
            raise _bad(path, key, "an object", metrics[key])
    for mlabel, m in (metrics.get("models") or {}).items():
        if not isinstance(m, dict):
            raise _bad(path, f"models.{mlabel}", "an object", m)
        for key in ("split", "protections"):
            if m.get(key) is not None and not isinstance(m[key], dict):
                raise _bad(path, f"models.{mlabel}.{key}", "an object", m[key])
        for plabel, p in (m.get("protections") or {}).items():
            where = f"models.{mlabel}.protections.{plabel}"
            if not isinstance(p, dict):
                raise _bad(path, where, "an object", p)
            if p.get("attacks") is not None and not isinstance(p["attacks"], dict):
                raise _bad(path, f"{where}.attacks", "an object", p["attacks"])
            _check_cell(path, f"{where}.utility", p.get("utility"))
            u = p.get("utility") or {}
            for key, v in (u.get("metrics") or {}).items():
                if v is not None and not isinstance(v, (int, float, str)):
                    raise _bad(path, f"{where}.utility.metrics.{key}", "a number", v)
            for alabel, c in (p.get("attacks") or {}).items():
                _check_cell(path, f"{where}.attacks.{alabel}", c)
    return metrics


def read_json(path: Path) -> Any:
    """A JSON file's content; InputFileError naming it when unreadable or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"not valid JSON ({one_line(exc)})") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or exc})") from None


def read_config(path: Path) -> tuple[str, dict[str, Any]]:
    """Text and parsed mapping of ``config.resolved.yaml`` ("" and {} when absent)."""
    import yaml

    if not path.exists():
        return "", {}
    try:
        text = path.read_text(encoding="utf-8")
        cfg = yaml.safe_load(text) if text.strip() else {}
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or one_line(exc)
        raise InputFileError(path, f"not valid YAML: {problem}{where}") from None
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise InputFileError(path, f"expected a YAML mapping (the resolved experiment config), got {type(cfg).__name__}")
    names = cfg.get("metrics")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise InputFileError(path, "'metrics' must be a list of metric names")
    return text, cfg
