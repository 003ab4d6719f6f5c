"""``facepriv reconstruct``: train a face decoder on (protected) templates, evaluate it, run a K x P grid.

Every parameter flag defaults to None here: the values and defaults come from the registered
``reconstruction`` attack (:class:`~facepriv.attacks.reconstruction.attack.ReconstructionAttack`),
which validates them before any work. Its defaults and meanings are filled into ``--help`` only
when help is shown (importing the component loads the attack registry; building the parser for
every facepriv command must not).
"""

from __future__ import annotations

import argparse
import logging

from facepriv.cli import argtypes
from facepriv.cli.component_flags import ComponentHelpParser, flag_errors, param_help
from facepriv.cli.device_flags import add_amp_flag, add_device_flag, resolve_cli_device
from facepriv.errors import ParameterError

log = logging.getLogger(__name__)

#: attack parameter -> flag, where the flag's name differs from the parameter's
FLAGS = {"w_ssim": "--ssim-weight", "w_id": "--id-weight", "seed": "--seed", "protection_seed": "--protection-seed"}
#: attack parameters set by flags of the same meaning (dest = parameter name)
TRAIN_PARAMS = ("size", "epochs", "batch_size", "lr", "w_ssim", "w_id", "test_fraction", "max_train", "seed")


EPILOG = """\
examples:
  facepriv reconstruct train --embeddings celeba_dlib.npz --images celeba-crops/ --out runs/unprot --size 64 --epochs 4
      decoder from unprotected dlib templates to 64x64 faces (paper: --size 112 --epochs 100)
  facepriv reconstruct train --embeddings celeba_dlib.npz --images celeba-crops/ --out runs/pemiu32 \\
          --size 64 --epochs 4 --protection pe_miu --block-size 32
      the attacker trains on its own templates protected with PE-MIU (block size 32)
  facepriv reconstruct train ... --protection pe_miu --block-size 16 --moved-blocks 4 --protection-seed 7
      WIFS 2023 variant: K=16, P=4 blocks moved by one fixed permutation (seed = the system's secret)
  facepriv reconstruct train ... --resume
      continue an interrupted run from its last epoch checkpoint
  facepriv reconstruct eval runs/unprot --embeddings celeba_dlib.npz --images celeba-crops/ --out eval/unprot
      RSR / SRRA at FMR 0.1%, 1%, 10%, SSIM/PSNR/MSE, gender, transfer to SFace -> summary.json, samples.png
  facepriv reconstruct decode runs/unprot --embeddings estimates.npz --out faces/
      faces from templates made elsewhere (e.g. the estimates of `facepriv score-attack`)
  facepriv reconstruct grid --embeddings celeba_dlib.npz --images celeba-crops/ --out grid/ \\
          --block-sizes 16,32 --moved-blocks 2,4 --size 64 --epochs 2
      one decoder per (K, P): RSR table + heat-map PNGs

Identities are split (seeded, disjoint): the decoder never sees the test identities, and `eval`
leaves out every identity the run trained on. Targets are the aligned crops the embeddings came
from (re-made with the model's alignment recipe; cached). A run folder holds config.json (public
settings only, never a protection secret), checkpoint.pt + decoder.pt (state dicts, written
atomically every epoch), history.json, split.json and samples/epoch_NNN.png.
"""


def _h(name: str, extra: str = "") -> str:
    return param_help("attack:reconstruction", name, extra)


def _ints(text: str, name: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ParameterError(f"{name}: expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ParameterError(f"{name}: expected positive integers, got {text!r}")
    return vals


def _common_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, metavar="E.npz", help="unprotected embeddings of the attacker's images")
    p.add_argument("--images", required=True, metavar="ROOT", help="image root the embedding ids are relative to")
    p.add_argument("--size", type=int, default=None, metavar="PX", help=_h("size"))
    p.add_argument("--epochs", type=int, default=None, metavar="N", help=_h("epochs"))
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help=_h("batch_size"))
    p.add_argument("--lr", type=float, default=None, help=_h("lr", " Schedule StepLR(10, 0.5)."))
    p.add_argument("--ssim-weight", dest="w_ssim", type=float, default=None, metavar="W", help=_h("w_ssim"))
    p.add_argument("--id-weight", dest="w_id", type=float, default=None, metavar="W", help=_h("w_id"))
    p.add_argument("--test-fraction", type=float, default=None, metavar="F", help=_h("test_fraction"))
    p.add_argument("--max-train", type=int, default=None, metavar="N", help=_h("max_train"))
    p.add_argument("--seed", type=argtypes.seed, default=None, help=_h("seed"))
    p.add_argument("--threads", type=argtypes.positive_int, default=None, metavar="N", help="torch CPU threads (default: torch's choice)")


def _protection_args(p: argparse.ArgumentParser, with_name: bool = True) -> None:
    if with_name:
        p.add_argument("--protection", default=None, metavar="NAME", help="template protection applied to the training templates (e.g. pe_miu)")
        p.add_argument("--block-size", type=int, default=None, metavar="K", help="PE-MIU block size")
        p.add_argument("--moved-blocks", type=int, default=None, metavar="P", help="PE-MIU WIFS variant: number of blocks a fixed permutation moves")
    p.add_argument(
        "--protection-seed", type=argtypes.seed, default=None, metavar="S",
        help="seed of the protection's randomness (for the fixed-permutation variant this is the system's secret; never written to outputs)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reconstruct train|eval|decode|grid|figure``."""
    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruction attack: decode face images from (protected) templates (WIFS 2023)",
        description=(
            "Train the face decoder of Shahreza et al. (ICIP 2022) on templates, optionally protected, and measure "
            "how well the reconstructions fool the recognition system (RSR, SRRA), how close they are to the faces "
            "(SSIM/PSNR/MSE) and how much gender they reveal, as in Osorio-Roig et al. (WIFS 2023). Defaults are "
            "those of the 'reconstruction' attack of `facepriv run` (facepriv describe reconstruction)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="reconstruct_command", metavar="{train,eval,decode,grid,figure}", parser_class=ComponentHelpParser)

    t = sub.add_parser("train", help="train a decoder into a run folder", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_train_args(t)
    t.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, config, sample grids)")
    t.add_argument("--loss-model", default=None, metavar="MODEL", help=_h("loss_model"))
    _protection_args(t)
    t.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="start afresh even if RUN holds a run with a checkpoint")
    add_device_flag(t, "random draws stay on the CPU, checkpoints hold CPU tensors")
    add_amp_flag(t)
    t.set_defaults(handler=run_train)

    e = sub.add_parser("eval", help="evaluate a trained decoder on held-out identities")
    e.add_argument("run", metavar="RUN", help="run folder made by `facepriv reconstruct train`")
    e.add_argument("--embeddings", required=True, metavar="T.npz", help="unprotected embeddings (training identities are left out)")
    e.add_argument("--images", required=True, metavar="ROOT", help="image root of those embeddings")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder: summary.json, samples.png, scores.csv")
    e.add_argument("--transfer", default=None, metavar="MODELS", help=_h("transfer", " Comma-separated, e.g. sface."))
    e.add_argument("--judges", default=None, metavar="MODELS", help=_h("judges", " Comma-separated, e.g. mobilefacenet,edgeface."))
    e.add_argument("--white-box-judges", action="store_const", const=True, default=None, help=_h("white_box_judges"))
    e.add_argument("--max-test", type=int, default=None, metavar="N", help=_h("max_test"))
    e.add_argument("--no-gender", dest="gender", action="store_const", const=False, default=None,
                   help="skip the gender metrics (attack parameter gender: false)")
    e.add_argument("--seed", type=argtypes.seed, default=None, help=_h("seed", " At evaluation: the max_test subset, "
                   "the enrolment pairing, the CV folds and the test templates' per-template permutations."))
    e.add_argument("--threads", type=argtypes.positive_int, default=None, metavar="N", help="torch CPU threads")
    e.add_argument(
        "--protection", default=None, metavar="NAME",
        help="protect the test templates with this protection instead of the run's (e.g. attack PE-MIU templates "
        "with a decoder trained on unprotected ones; 'unprotected' for plain templates)",
    )
    e.add_argument("--block-size", type=int, default=None, metavar="K", help="PE-MIU block size (with --protection)")
    e.add_argument("--moved-blocks", type=int, default=None, metavar="P", help="PE-MIU fixed-variant moved blocks (with --protection)")
    _protection_args(e, with_name=False)
    e.add_argument("--overwrite", action="store_true", help="replace the files of DIR the evaluation writes")
    add_device_flag(e, "decoding and re-embedding run there")
    e.set_defaults(handler=run_eval)

    d = sub.add_parser(
        "decode", help="decode the templates of an embeddings file into face images (e.g. score-attack estimates)",
        description="Decode every template of an embeddings file with a trained decoder, e.g. the templates "
                    "`facepriv score-attack` estimated from comparison scores. Writes DIR/NNNNN.png (file order), "
                    "DIR/index.csv (file,id,identity) and DIR/faces.png (up to 64 faces).")
    d.add_argument("run", metavar="RUN", help="run folder made by `facepriv reconstruct train`")
    d.add_argument("--embeddings", required=True, metavar="T.npz",
                   help="templates to decode (the decoder's size; made by its model when the file names one)")
    d.add_argument("--out", required=True, metavar="DIR", help="output folder")
    d.add_argument("--overwrite", action="store_true", help="replace the files of DIR the decoding writes")
    add_device_flag(d, "decoding runs there")
    d.set_defaults(handler=run_decode)

    g = sub.add_parser(
        "grid", help="K x P grid for the PE-MIU variant: RSR table + heat-maps",
        description="One decoder per (K, P) trained on templates protected with one fixed permutation that moves "
                    "P blocks of size K (an attacker who protects its own data through the system), plus the "
                    "unprotected decoder evaluated on every cell's templates (an attacker who never saw the "
                    "permutation). Finished cells are reused; unfinished trainings resume.")
    _common_train_args(g)
    g.add_argument("--out", required=True, metavar="DIR", help="grid folder (one run per cell, tables, heat-maps)")
    g.add_argument("--block-sizes", default="16,32", metavar="K,...", help="block sizes K, each dividing the template dimension (default 16,32)")
    g.add_argument("--moved-blocks", default="2,4", metavar="P,...", help="moved blocks P, each >= 2 (default 2,4)")
    g.add_argument("--no-unprotected", action="store_true", help="skip the unprotected baseline cell")
    _protection_args(g, with_name=False)
    g.set_defaults(handler=run_grid)
    f = sub.add_parser("figure", help="picture: held-out faces and their reconstructions by several runs, side by side")
    f.add_argument("runs", nargs="+", metavar="RUN", help="run folders (same split), one column each")
    f.add_argument("--embeddings", required=True, metavar="T.npz", help="unprotected embeddings")
    f.add_argument("--images", required=True, metavar="ROOT", help="image root of those embeddings")
    f.add_argument("--out", required=True, metavar="PNG", help="output PNG")
    f.add_argument("--rows", type=argtypes.positive_int, default=6, metavar="N", help="number of held-out people (default 6)")
    f.add_argument("--seed", type=argtypes.seed, default=None, help=_h("seed", " Here: the test templates' permutations."))
    f.add_argument("--overwrite", action="store_true", help="replace PNG if it exists")
    _protection_args(f, with_name=False)
    f.set_defaults(handler=run_figure)
    p.set_defaults(handler=lambda a: (p.print_help(), 2)[1])


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _attack(args: argparse.Namespace, names: tuple[str, ...]):
    """The attack with the parameters of the flags given (the rest at the component's defaults), validated."""
    from facepriv.attacks.reconstruction.attack import ReconstructionAttack

    params = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    for name in ("transfer", "judges"):
        if isinstance(params.get(name), str):
            params[name] = tuple(t.strip() for t in params[name].split(",") if t.strip())
    att = ReconstructionAttack(**params)
    att.validate_params()
    return att


def _protection_params(args: argparse.Namespace) -> dict:
    params = {}
    if getattr(args, "block_size", None) is not None:
        params["block_size"] = args.block_size
    if getattr(args, "moved_blocks", None) is not None:
        params["moved_blocks"] = args.moved_blocks
    if args.protection_seed is not None:
        params["seed"] = args.protection_seed
    return params


@flag_errors(FLAGS)
def run_train(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct train``."""
    from facepriv.attacks.reconstruction.runs_files import train_run

    device = resolve_cli_device(args.device)

    att = _attack(args, (*TRAIN_PARAMS, "loss_model"))
    params = _protection_params(args)
    if params and not args.protection:
        raise ParameterError("--block-size/--moved-blocks/--protection-seed need --protection (e.g. --protection pe_miu)")
    _threads(args)
    res = train_run(
        args.embeddings, args.images, args.out, att.train_config(), args.protection, params,
        resume=args.resume, overwrite=args.overwrite, max_train=att.max_train or None, loss_model=att.loss_model,
        device=device, amp=args.amp,
    )
    last = res.history[-1] if res.history else {}
    print(f"trained {res.epochs_run} epoch(s) in {res.seconds:.0f} s; last loss {last.get('loss', float('nan')):.4f}, "
          f"SSIM {last.get('ssim', float('nan')):.3f}; run folder {args.out}")
    return 0


@flag_errors(FLAGS)
def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct eval``."""
    from facepriv.attacks.reconstruction.runs_files import evaluate_run

    device = resolve_cli_device(args.device)

    att = _attack(args, ("max_test", "transfer", "gender", "seed", "judges", "white_box_judges"))
    _threads(args)
    s = evaluate_run(
        args.run, args.embeddings, args.images, args.out, tuple(att.transfer), _protection_params(args),
        overwrite=args.overwrite, seed=att.seed, gender=att.gender, max_test=att.max_test or None,
        protection=args.protection, judges=tuple(att.judges), white_box_judges=att.white_box_judges,
        device=device,
    )
    rsr = ", ".join(f"{100 * v:.1f}%@{100 * float(k):g}%" for k, v in s["rsr"].items())
    print(f"{s['n_test_images']} test images of {s['n_test_identities']} identities: RSR {rsr}; "
          f"SSIM {s['ssim']:.3f}, PSNR {s['psnr']:.2f} dB; summary in {args.out}/summary.json")
    for name, j in s.get("judges", {}).items():
        sar = ", ".join(f"{100 * v:.1f}%@{100 * float(k):g}%" for k, v in j["sar"].items())
        print(f"judge {name} (never saw the decoder's training): SAR {sar}; {100 * j['detected']:.0f}% re-detected")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct decode``."""
    from facepriv.attacks.reconstruction.runs_files import decode_run

    out = decode_run(args.run, args.embeddings, args.out, args.overwrite, resolve_cli_device(args.device))
    print(f"decoded faces in {out}/ (NNNNN.png, index.csv, faces.png)")
    return 0


@flag_errors({**FLAGS, "block_size": "--block-sizes", "moved_blocks": "--moved-blocks"})
def run_grid(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct grid``."""
    from facepriv.attacks.reconstruction.kp_grid import run_grid as grid

    att = _attack(args, TRAIN_PARAMS)
    ks, ps = _ints(args.block_sizes, "--block-sizes"), _ints(args.moved_blocks, "--moved-blocks")
    _threads(args)
    table = grid(
        args.embeddings, args.images, args.out, att.train_config(), ks, ps,
        protection_seed=args.protection_seed or 0, max_train=att.max_train or None,
        include_unprotected=not args.no_unprotected,
    )
    print(f"{len(table)} cell(s); table in {args.out}/rsr_table.md, heat-maps {args.out}/rsr_heatmap_fmr*.png "
          "(naive attacker: rsr_heatmap_naive_fmr*.png)")
    return 0


@flag_errors({**FLAGS, "n": "--rows"})
def run_figure(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct figure``."""
    from facepriv.attacks.reconstruction.figure import compare_figure

    att = _attack(args, ("seed",))
    out = compare_figure(args.runs, args.embeddings, args.images, args.out, args.rows, _protection_params(args), att.seed,
                         args.overwrite)
    print(f"wrote {out}: columns = original, " + ", ".join(args.runs))
    return 0
