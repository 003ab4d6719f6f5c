"""``facepriv protect``: apply a template protection to an embeddings file."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from facepriv.cli import argtypes
from facepriv.cli.component_flags import ComponentHelpParser, param_help
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
  facepriv protect biohash celeba_dlib.npz --length 128 --key-out bh.key --out celeba_bh.npz
      BioHashing with a new key drawn from the OS's entropy, saved (mode 0600) to bh.key
  facepriv protect biohash probes.npz --like celeba_bh.npz --key-file bh.key --out probes_bh.npz
      protect more templates the same way: public parameters (incl. the fitted centre) from the
      record of an earlier output, the key from its key file
  facepriv protect polyprotect celeba_dlib.npz --m 5 --overlap 4 --key-scope user --key-out pp.key --out pp.npz
      PolyProtect with per-user coefficients/exponents derived from the key and each identity
  facepriv protect ive celeba_dlib.npz --n-remove 4 --steps 16 --out celeba_ive.npz
      IVE: removes the 64 dimensions most predictive of gender (needs the gender column)
  facepriv protect NAME IN.npz --param key=value ... --out OUT.npz
      any registered template protection (see `facepriv list protection`)

The output records which protection made it and its public parameters (never the seed, which acts
as a key), so `facepriv verify` and `facepriv attack` pick the right comparator automatically.
Keys: a keyed protection (biohash, polyprotect) needs --key-file K (JSON {"seed": INT}, an existing
key) or --key-out K (draw a new key and write it there); the key is never printed nor recorded.
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


#: flags of the `protect` command only (parameter -> component whose docstring gives the help)
_PROTECT_FLAGS = {"length": "biohash", "key_scope": "biohash", "m": "polyprotect", "overlap": "polyprotect",
                  "n_remove": "ive", "steps": "ive", "attribute": "ive"}


def _protect_params(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters from the generic flags plus the protect-only ones (a flag wins over nothing, --param never)."""
    params = protection_params(args)
    for key in _PROTECT_FLAGS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if key in params:
            raise ParameterError(f"--param {key}=...: give {key} with --{key.replace('_', '-')}", param=key)
        params[key] = value
    return params


def _like_params(path: str, name: str) -> dict[str, Any]:
    """Public parameters recorded in an earlier protected file (masked secrets left out)."""
    from facepriv.embeddings import load_embeddings
    from facepriv.errors import InputFileError

    rec = load_embeddings(path).protection
    if rec is None:
        raise InputFileError(path, "--like: this file records no protection (it is unprotected)")
    if rec.get("name") != name:
        raise InputFileError(path, f"--like: this file was protected with {rec.get('name')!r}, not {name!r}")
    return {k: v for k, v in dict(rec.get("params", {})).items() if v != "<secret>"}


def _key_params(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, int] | None]:
    """(secret parameters to use, key to write with --key-out or None), after checking the key flags."""
    from facepriv.protections.keys import draw_key, read_key_file
    from facepriv.registry import get_class

    cls = get_class("protection", name)
    secret = tuple(getattr(cls, "secret_params", ()))
    key_file, key_out = getattr(args, "key_file", None), getattr(args, "key_out", None)
    flag = "--key-file" if key_file else "--key-out"
    if key_file and key_out:
        raise ParameterError("give --key-file (an existing key) or --key-out (a new key), not both")
    if (key_file or key_out) and (not secret or getattr(cls, "threat_model", "keyless") != "key_secret"):
        raise ParameterError(f"{flag}: protection {name!r} has no key (threat model keyless); drop {flag}")
    if (key_file or key_out) and args.seed is not None and "seed" in secret:
        raise ParameterError(f"--seed and {flag} both give the key of {name!r}; use one")
    if key_file:
        return read_key_file(key_file, secret), None
    if key_out:
        key = draw_key(secret)
        return dict(key), key
    if getattr(cls, "key_required", False) and args.seed is None:
        raise ParameterError(f"protection {name!r} is keyed: give --key-file K (an existing key) or --key-out K "
                             "(draw a new key from the OS and save it to K)")
    return {}, None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``protect`` command."""
    p = subparsers.add_parser(
        "protect",
        help="protect the templates of an embeddings file (PE-MIU, unprotected, ...)",
        description="Apply a registered template protection to an embeddings .npz and write the protected file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # help of the component flags is read from the components when shown (no import at startup)
    p.__class__ = ComponentHelpParser
    p.add_argument("protection", metavar="NAME", help="protection name, e.g. pe_miu, biohash, polyprotect, ive")
    p.add_argument("input", metavar="IN.npz", help="unprotected embeddings file")
    add_protection_args(p)
    p.add_argument("--length", type=argtypes.positive_int, metavar="L", help=param_help("protection:biohash", "length"))
    p.add_argument("--key-scope", choices=("system", "user"), help=param_help("protection:biohash", "key_scope",
                   " (biohash, polyprotect)"))
    p.add_argument("--m", type=argtypes.positive_int, metavar="M", help=param_help("protection:polyprotect", "m"))
    p.add_argument("--overlap", type=argtypes.non_negative_int, metavar="O",
                   help=param_help("protection:polyprotect", "overlap"))
    p.add_argument("--n-remove", type=argtypes.positive_int, metavar="K", help=param_help("protection:ive", "n_remove"))
    p.add_argument("--steps", type=argtypes.positive_int, metavar="S", help=param_help("protection:ive", "steps"))
    p.add_argument("--attribute", metavar="COLUMN", help=param_help("protection:ive", "attribute"))
    p.add_argument("--like", metavar="P.npz",
                   help="take the public parameters recorded in this earlier output of the same protection "
                   "(e.g. BioHashing's fitted centre, IVE's removed dimensions); flags given here win")
    p.add_argument("--key-file", metavar="K.json",
                   help="the key of a keyed protection: JSON {\"seed\": INT} (as written by --key-out)")
    p.add_argument("--key-out", metavar="K.json",
                   help="draw a new key from the OS's entropy and write it here (mode 0600; never printed)")
    p.add_argument("--seed", type=argtypes.seed, default=None, metavar="S",
                   help="seed of the protection's random choices (a secret: never written to the output; "
                   "default: the protection's own default, see `facepriv describe NAME`; for biohash and "
                   "polyprotect prefer --key-file/--key-out, which keep the key off the command line)")
    p.add_argument("--out", required=True, metavar="OUT.npz", help="protected embeddings file to write (not the input)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.npz if it exists (never the input file)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv protect``."""
    from facepriv.embeddings import load_embeddings, save_embeddings
    from facepriv.fileio import check_not_input, check_writable
    from facepriv.protections.base import build_protection
    from facepriv.protections.keys import write_key_file

    inputs = [args.input] + ([args.like] if args.like else []) + ([args.key_file] if args.key_file else [])
    check_not_input(args.out, inputs)
    check_writable(args.out, args.overwrite)
    if args.key_out:
        check_not_input(args.key_out, [*inputs, args.out], flag="--key-out")
        check_writable(args.key_out, args.overwrite)
    params = {**(_like_params(args.like, args.protection) if args.like else {}), **_protect_params(args)}
    if args.seed is not None:
        params["seed"] = args.seed
    key_params, new_key = _key_params(args.protection, args)
    prot = build_protection(args.protection, {**params, **key_params})
    es = load_embeddings(args.input)
    try:
        out = prot.protect(es)
    except ParameterError as exc:  # a data problem (block size vs. dimension, ...): name the file
        raise ParameterError(f"{args.input}: {exc}", param=exc.param) from None
    if new_key is not None:  # the key first: an output without its key could never be matched again
        write_key_file(args.key_out, new_key, overwrite=args.overwrite)
    save_embeddings(out, args.out, overwrite=args.overwrite)
    note = f"; new key written to {args.key_out} (keep it secret)" if new_key is not None else ""
    print(f"protected {len(out)} templates ({es.dim}-d -> {out.dim}-d) with {prot!r}; wrote {args.out}{note}")
    return 0
