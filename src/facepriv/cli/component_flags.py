"""Flags that set a component's parameters: help text from the component, errors named by the flag.

A command that exposes, say, the ``deid`` attack's ``eps`` as ``--eps`` writes
``help=param_help("attack:deid", "eps")``; the parser (``parser_class=ComponentHelpParser``)
fills in the parameter's meaning and default from the component's docstring and signature when
help is shown, so the CLI never repeats (or contradicts) a default. Importing a component loads
torch; building the parser for every facepriv command must not, hence the late fill-in.

:func:`flag_errors` turns a component's ``ParameterError(param="eps")`` into ``--eps: ...``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

from facepriv.errors import ParameterError

_PLACEHOLDER = "\0param:"


def param_help(component: str, name: str, extra: str = "") -> str:
    """Help placeholder for the flag of parameter ``name`` of ``component`` (``"kind:name"``)."""
    return f"{_PLACEHOLDER}{component}|{name}|{extra}"


def show_default(v: Any) -> str:
    """A default as a user would type it (lists comma-separated)."""
    if isinstance(v, (list, tuple)):
        return ",".join(show_default(x) for x in v) or "none"
    return f"{v:g}" if isinstance(v, float) else str(v)


class ComponentHelpParser(argparse.ArgumentParser):
    """Fills each :func:`param_help` placeholder from its component when help is shown."""

    def format_help(self) -> str:
        from facepriv.registry import get_class, param_docs

        for a in self._actions:
            if isinstance(a.help, str) and a.help.startswith(_PLACEHOLDER):
                comp, name, extra = a.help[len(_PLACEHOLDER):].split("|", 2)
                kind, _, cname = comp.partition(":")
                cls = get_class(kind, cname)
                default = cls.param_defaults()[name]
                a.help = f"{param_docs(cls).get(name, '')}{extra} (default {show_default(default)})".replace("%", "%%")
        return super().format_help()


def flag_errors(flags: dict[str, str] | None = None) -> Callable:
    """Decorator of a command handler: a component's ParameterError names the flag it came from.

    ``flags`` maps parameters to flags of another name (``{"n": "--rows"}``); a parameter with
    an attribute of the same name in the parsed arguments becomes ``--name-with-dashes``.
    """
    flags = dict(flags or {})

    def wrap(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except ParameterError as exc:
                param = exc.param
                if param is None or (param not in flags and not hasattr(args, param)):
                    raise
                flag = flags.get(param, "--" + param.replace("_", "-"))
                msg = str(exc)
                if msg.startswith(f"{param}: "):
                    msg = msg[len(param) + 2:]
                if flag not in msg:
                    msg = f"{flag}: {msg}"
                raise ParameterError(msg) from None
        return run
    return wrap
