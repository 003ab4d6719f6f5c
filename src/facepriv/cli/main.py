"""Entry point of the ``facepriv`` command.

Each command group lives in its own module exposing ``register(subparsers)``; the module's
handlers receive the parsed ``argparse.Namespace`` and return an exit code. User errors
(:class:`~facepriv.errors.FacePrivError`) print one line naming the file/parameter and the
problem, and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a loaded 2-core machine spinning threads made
# torch 4x slower (benchmarks/RESULTS_dlib_resnet.md). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from facepriv import __version__
from facepriv.errors import FacePrivError

# Command-group modules, in the order they appear in --help.
COMMAND_MODULES = (
    "facepriv.cli.embed_cmd",
    "facepriv.cli.verify_cmd",
    "facepriv.cli.evaluate_cmd",
    "facepriv.cli.models_cmd",
    "facepriv.cli.protect_cmd",
    "facepriv.cli.attack_cmd",
    "facepriv.cli.score_attack_cmd",
    "facepriv.cli.reconstruct_cmd",
    "facepriv.cli.deid_cmd",
    "facepriv.cli.advface_cmd",
    "facepriv.cli.experiment_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available command group."""
    parser = argparse.ArgumentParser(
        prog="facepriv",
        description=(
            "Measure how well face privacy protections survive real attacks: detect/align/embed faces "
            "with pretrained recognition models, protect templates or photos, attack them, and report "
            "biometric and privacy metrics."
        ),
    )
    parser.add_argument("--version", action="version", version=f"facepriv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def error_line(exc: Exception, args: argparse.Namespace) -> str:
    """One line for a user error; a component parameter is named by the flag it came from.

    Components raise :class:`~facepriv.errors.ParameterError` with ``param`` set to their
    constructor parameter; when the command has a flag of that name (``eps`` -> ``--eps``) the
    message says so, so a CLI user reads the flag and a YAML user the config entry.
    """
    msg = " ".join(str(exc).split())
    param = getattr(exc, "param", None)
    if param and hasattr(args, param):
        flag = "--" + param.replace("_", "-")
        if msg.startswith(f"{param}: "):
            msg = f"{flag}: {msg[len(param) + 2:]}"
        elif flag not in msg:
            msg = f"{flag}: {msg}"
    return msg


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.quiet:
        os.environ["FACEPRIV_NO_PROGRESS"] = "1"
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except FacePrivError as exc:
        print(f"facepriv: error: {error_line(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facepriv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `facepriv describe X | head`: the reader left; silence Python's flush at exit too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
