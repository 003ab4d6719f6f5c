"""Registry of recognition models: importing this module registers every built-in backbone."""

from __future__ import annotations

from facepriv.models import dlib_resnet as _dlib_resnet  # noqa: F401
from facepriv.models import onnx_models as _onnx_models  # noqa: F401
from facepriv.models.base import RecognitionModel
from facepriv.registry import available, create

DEFAULT_MODEL = "dlib_resnet"


def get_model(name: str = DEFAULT_MODEL, **params) -> RecognitionModel:
    """Create a registered recognition model by name or ``module:Class`` (clear error for unknown names)."""
    return create("model", name, params)  # type: ignore[return-value]


def model_names() -> list[str]:
    """Names of all registered recognition models."""
    return list(available("model"))
