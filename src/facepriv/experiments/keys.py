"""Protection keys of a run: never derived from public values, never written to an output.

A protection parameter listed in the component's ``secret_params`` (e.g. PE-MIU's ``seed``, which
decides the permutations) is a key. Its value comes from

1. the config, when the user sets it (their own file; the run folder's ``config.resolved.yaml``,
   ``metrics.json``, the reports and the logs show ``<secret>``), or
2. the operating system's entropy, drawn once when a run starts and kept in the run folder's
   private key store ``private/keys.json`` (mode 0600) so a resumed run uses the same keys.

The key store is resume state, not a result: no report, metric file or log line reads it, and
``facepriv run`` says where it is. Delete ``private/`` before sharing a run folder. A key is never
computed from the master seed, which every output records.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from facepriv.errors import InputFileError
from facepriv.experiments.config import ExperimentConfig
from facepriv.fileio import write_text_atomic
from facepriv.registry import get_class

KEY_STORE = Path("private") / "keys.json"


def missing_keys(cfg: ExperimentConfig) -> dict[str, list[str]]:
    """Protection label -> secret parameter names the config does not set."""
    out: dict[str, list[str]] = {}
    for spec in cfg.protections:
        cls = get_class("protection", spec.name)
        miss = [k for k in getattr(cls, "secret_params", ()) if k not in spec.params and k in cls.param_names()]
        if miss:
            out[spec.label] = miss
    return out


def run_keys(out: Path, cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Keys of the protections whose keys the config leaves open, drawn once per run folder.

    Returns
    -------
    dict
        protection label -> {secret parameter: value}; empty when the config sets every key.
    """
    need = missing_keys(cfg)
    if not need:
        return {}
    path = out / KEY_STORE
    store: dict[str, dict[str, Any]] = {}
    if path.is_file():
        try:
            store = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(store, dict) or not all(isinstance(v, dict) for v in store.values()):
                raise ValueError("not a mapping of mappings")
        except (OSError, ValueError) as exc:
            raise InputFileError(path, f"unreadable key store ({type(exc).__name__}); the run cannot resume "
                                       "with its keys: pass --overwrite to start afresh") from None
    changed = False
    for label, names in need.items():
        entry = store.setdefault(label, {})
        for k in names:
            if k not in entry:
                entry[k] = secrets.randbelow(2**31 - 1)
                changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        write_text_atomic(path, json.dumps(store, indent=1, sort_keys=True) + "\n")
        os.chmod(path, 0o600)
    return {label: {k: store[label][k] for k in names} for label, names in need.items()}
