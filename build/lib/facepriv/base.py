"""Component base class: constructor arguments are the parameters (scikit-learn style).

A component is fully described by ``{name, params}``: ``__init__`` only stores its arguments,
``get_params`` reads them back from the signature, ``clone`` makes an unfitted copy. Fitted state
ends in ``_``. Validation happens in ``validate_params`` (called by the registry and by ``fit``),
raising :class:`~facepriv.errors.ParameterError`, never ``assert``.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar


class Component:
    """Base of every registered protection, attack and model."""

    #: registry name (snake_case); set by :func:`facepriv.registry.register`
    name: ClassVar[str] = ""
    #: one-line description shown by ``facepriv list``/``describe``
    summary: ClassVar[str] = ""
    #: bibliographic reference(s)
    reference: ClassVar[str] = ""
    #: parameter names whose values are secrets (never written to outputs or logs)
    secret_params: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the constructor parameters."""
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self" and sig.parameters[p].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD]

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """Constructor defaults ({} entry missing for required parameters)."""
        sig = inspect.signature(cls.__init__)
        return {
            k: v.default
            for k, v in sig.parameters.items()
            if k != "self" and v.default is not inspect.Parameter.empty
        }

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments of this instance."""
        return {k: getattr(self, k) for k in self.param_names()}

    def public_params(self) -> dict[str, Any]:
        """Parameters safe to record in outputs: secrets replaced by ``"<secret>"``."""
        return {k: ("<secret>" if k in self.secret_params and v is not None else v) for k, v in self.get_params().items()}

    def clone(self) -> Component:
        """An unfitted copy with the same parameters."""
        return type(self)(**self.get_params())

    def validate_params(self) -> None:
        """Raise ParameterError for invalid parameter values (override in subclasses)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.public_params().items())
        return f"{type(self).__name__}({args})"
