"""``facepriv protect``: apply a template protection to an embeddings file."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from facepriv.cli import argtypes
from facepriv.errors import ParameterError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  facepriv protect pe_miu celeba_dlib.npz --block-size 32 --seed 0 --out celeba_pemiu32.npz
      PE-MIU 2020: a fresh random permutation of the 32-d blocks of every template
  facepriv protect pe_miu celeba_dlib.npz --block-size 16 --moved-blocks 4 --seed 7 --out p.npz
      WIFS-2023 variant: one fixed (secret) permutation moving 4 of the blocks of every template
  facepriv protect unprotected celeba_dlib.npz --out same.npz
      the baseline: templates stored as they are
  facepriv protect NAME IN.npz --param key=value ... --out OUT.npz
      any registered template protection (see `facepriv list protection`)

The output records which protection made it and its public parameters (never the seed, which acts
as a key), so `facepriv verify` and `facepriv attack` pick the right comparator automatically.
"""


def _parse_value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


#: dedicated flags of protection parameters (``--param`` may not set these)
_FLAG_PARAMS = {"block_size": "--block-size", "moved_blocks": "--moved-blocks"}


def protection_params(args: argparse.Namespace) -> dict[str, Any]:
    """Protection parameters the user gave (``--block-size``, ``--moved-blocks``, ``--param``).

    Flags left out are not passed, so the protection's own defaults apply (one default per
    parameter: the component's constructor). The seed is added by the caller.
    """
    params: dict[str, Any] = {}
    for item in getattr(args, "param", None) or []:
        if "=" not in item:
            raise ParameterError(f"--param {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        key = k.strip().replace("-", "_")
        if key in _FLAG_PARAMS or key == "seed":
            flag = _FLAG_PARAMS.get(key, "--seed")
            raise ParameterError(f"--param {item!r}: give {key} with {flag}", param=key)
        params[key] = _parse_value(v.strip())
    for key in _FLAG_PARAMS:
        if getattr(args, key, None) is not None:
            params[key] = getattr(args, key)
    return params


def protection_from_flags(name: str, args: argparse.Namespace, seed: int | None = None):
    """Build protection ``name`` from the flags given (:func:`facepriv.protections.base.build_protection`).

    ``seed``: the protection's seed (its key for keyed protections), passed only when not None.
    """
    from facepriv.protections.base import build_protection

    params = protection_params(args)
    if seed is not None:
        params["seed"] = seed
    return build_protection(name, params)


def add_protection_args(p: argparse.ArgumentParser, with_name: bool = False) -> None:
    """Flags shared by `protect` and `attack`: block size, moved blocks, extra parameters."""
    if with_name:
        p.add_argument("--protection", metavar="NAME",
                       help="protection the system applies to unprotected targets (e.g. pe_miu); "
                       "already-protected targets use the protection they record")
    p.add_argument("--block-size", type=int, metavar="K",
                   help="PE-MIU block size (must divide the dimension; default: the protection's, see `facepriv describe pe_miu`)")
    p.add_argument("--moved-blocks", type=int, metavar="P",
                   help="PE-MIU WIFS-2023 variant: one fixed permutation moving P blocks (default: per-template random)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="further protection parameter (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``protect`` command."""
    p = subparsers.add_parser(
        "protect",
        help="protect the templates of an embeddings file (PE-MIU, unprotected, ...)",
        description="Apply a registered template protection to an embeddings .npz and write the protected file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("protection", metavar="NAME", help="protection name, e.g. pe_miu or unprotected")
    p.add_argument("input", metavar="IN.npz", help="unprotected embeddings file")
    add_protection_args(p)
    p.add_argument("--seed", type=argtypes.seed, default=None, metavar="S",
                   help="seed of the protection's random choices (a secret: never written to the output; "
                   "default: the protection's own default, see `facepriv describe NAME`)")
    p.add_argument("--out", required=True, metavar="OUT.npz", help="protected embeddings file to write (not the input)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.npz if it exists (never the input file)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv protect``."""
    from facepriv.embeddings import load_embeddings, save_embeddings
    from facepriv.fileio import check_not_input, check_writable

    check_not_input(args.out, [args.input])
    check_writable(args.out, args.overwrite)
    prot = protection_from_flags(args.protection, args, args.seed)
    es = load_embeddings(args.input)
    try:
        out = prot.protect(es)
    except ParameterError as exc:  # a data problem (block size vs. dimension, ...): name the file
        raise ParameterError(f"{args.input}: {exc}", param=exc.param) from None
    save_embeddings(out, args.out, overwrite=args.overwrite)
    print(f"protected {len(out)} templates ({es.dim}-d -> {out.dim}-d) with {prot!r}; wrote {args.out}")
    return 0
