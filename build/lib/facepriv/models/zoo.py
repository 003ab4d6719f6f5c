"""Registry of recognition models: importing this module registers every available backbone."""

from __future__ import annotations

from facepriv.models.base import RecognitionModel
from facepriv.registry import available, create

DEFAULT_MODEL = "dlib_resnet"

for _mod in ("dlib_resnet", "onnx_models"):
    try:
        __import__(f"facepriv.models.{_mod}")
    except ModuleNotFoundError as _exc:  # a backbone module not written yet
        if _exc.name != f"facepriv.models.{_mod}":
            raise


def get_model(name: str = DEFAULT_MODEL, **params) -> RecognitionModel:
    """Create a registered recognition model by name (clear error for unknown names)."""
    return create("model", name, params)  # type: ignore[return-value]


def model_names() -> list[str]:
    """Names of all registered recognition models."""
    return list(available("model"))
