"""``facepriv protect``: apply a template protection to an embeddings file."""

from __future__ import annotations

import argparse
import logging
from typing import Any

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


def protection_params(args: argparse.Namespace) -> dict[str, Any]:
    """Protection parameters from --block-size/--moved-blocks/--seed/--param flags."""
    params: dict[str, Any] = {}
    for item in getattr(args, "param", None) or []:
        if "=" not in item:
            raise ParameterError(f"--param {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        params[k.strip().replace("-", "_")] = _parse_value(v.strip())
    if getattr(args, "block_size", None) is not None:
        params["block_size"] = args.block_size
    if getattr(args, "moved_blocks", None) is not None:
        params["moved_blocks"] = args.moved_blocks
    if getattr(args, "seed", None) is not None:
        params["seed"] = args.seed
    return params


def build_protection(name: str, params: dict[str, Any]):
    """Create a registered protection, keeping only the parameters it has (others: error)."""
    from facepriv.registry import create, get_class

    cls = get_class("protection", name)
    if "seed" in params and "seed" not in cls.param_names():
        params = {k: v for k, v in params.items() if k != "seed"}
    return create("protection", name, params)


def add_protection_args(p: argparse.ArgumentParser, with_name: bool = False) -> None:
    """Flags shared by `protect` and `attack`: block size, moved blocks, extra parameters."""
    if with_name:
        p.add_argument("--protection", metavar="NAME",
                       help="protection the system applies to unprotected targets (e.g. pe_miu); "
                       "already-protected targets use the protection they record")
    p.add_argument("--block-size", type=int, metavar="K", help="PE-MIU block size (must divide the dimension)")
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
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the protection's random choices (a secret: never written to the output; default 0)")
    p.add_argument("--out", required=True, metavar="OUT.npz", help="protected embeddings file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.npz if it exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv protect``."""
    from facepriv.embeddings import load_embeddings, save_embeddings
    from facepriv.fileio import check_writable

    check_writable(args.out, args.overwrite)
    prot = build_protection(args.protection, protection_params(args))
    es = load_embeddings(args.input)
    out = prot.protect(es)
    save_embeddings(out, args.out, overwrite=args.overwrite)
    print(f"protected {len(out)} templates ({es.dim}-d -> {out.dim}-d) with {prot!r}; wrote {args.out}")
    return 0
