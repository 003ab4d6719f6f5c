"""``facepriv reconstruct``: train a face decoder on (protected) templates, evaluate it, run a K x P grid."""

from __future__ import annotations

import argparse
import logging

from facepriv.errors import ParameterError

log = logging.getLogger(__name__)

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
  facepriv reconstruct grid --embeddings celeba_dlib.npz --images celeba-crops/ --out grid/ \\
          --block-sizes 16,32 --moved-blocks 2,4 --size 64 --epochs 2
      one decoder per (K, P): RSR table + heat-map PNGs

Identities are split (seeded, disjoint): the decoder never sees the test identities, and `eval`
leaves out every identity the run trained on. Targets are the aligned crops the embeddings came
from (re-made with the model's alignment recipe; cached). A run folder holds config.json (public
settings only, never a protection secret), checkpoint.pt + decoder.pt (state dicts, written
atomically every epoch), history.json, split.json and samples/epoch_NNN.png.
"""


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
    p.add_argument("--size", type=int, default=112, choices=(64, 112), help="decoder output side (paper 112; 64 for CPU-sized runs)")
    p.add_argument("--epochs", type=int, default=100, metavar="N", help="training epochs (paper 100)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="batch size (paper 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (paper 1e-3; StepLR(10, 0.5))")
    p.add_argument("--ssim-weight", type=float, default=0.1, metavar="W", help="weight of (1 - SSIM)/2 (paper 0.1)")
    p.add_argument(
        "--id-weight", type=float, default=0.005, metavar="W",
        help="weight of the ID loss, MSE of embeddings through the frozen model (paper 0.005, tuned for ArcFace-scale "
        "embeddings of norm ~20; dlib descriptors have norm ~1.5, so 0.005 makes the term ~360x weaker: see docs)",
    )
    p.add_argument("--test-fraction", type=float, default=0.1, metavar="F", help="share of identities held out (paper 0.1)")
    p.add_argument("--max-train", type=int, default=None, metavar="N", help="use at most N training images (seeded subset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the batch order")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's choice)")


def _protection_args(p: argparse.ArgumentParser, with_name: bool = True) -> None:
    if with_name:
        p.add_argument("--protection", default=None, metavar="NAME", help="template protection applied to the training templates (e.g. pe_miu)")
        p.add_argument("--block-size", type=int, default=None, metavar="K", help="PE-MIU block size")
        p.add_argument("--moved-blocks", type=int, default=None, metavar="P", help="PE-MIU WIFS variant: number of blocks a fixed permutation moves")
    p.add_argument(
        "--protection-seed", type=int, default=None, metavar="S",
        help="seed of the protection's randomness (for the fixed-permutation variant this is the system's secret; never written to outputs)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reconstruct train|eval|grid|figure``."""
    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruction attack: decode face images from (protected) templates (WIFS 2023)",
        description=(
            "Train the face decoder of Shahreza et al. (ICIP 2022) on templates, optionally protected, and measure "
            "how well the reconstructions fool the recognition system (RSR, SRRA), how close they are to the faces "
            "(SSIM/PSNR/MSE) and how much gender they reveal, as in Osorio-Roig et al. (WIFS 2023)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="reconstruct_command", metavar="{train,eval,grid,figure}")

    t = sub.add_parser("train", help="train a decoder into a run folder", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_train_args(t)
    t.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, config, sample grids)")
    _protection_args(t)
    t.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="start afresh even if RUN holds a run")
    t.set_defaults(handler=run_train)

    e = sub.add_parser("eval", help="evaluate a trained decoder on held-out identities")
    e.add_argument("run", metavar="RUN", help="run folder made by `facepriv reconstruct train`")
    e.add_argument("--embeddings", required=True, metavar="T.npz", help="unprotected embeddings (training identities are left out)")
    e.add_argument("--images", required=True, metavar="ROOT", help="image root of those embeddings")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder: summary.json, samples.png, scores.csv")
    e.add_argument("--transfer", default="sface", metavar="MODELS", help="comma-separated second models for the transfer RSR ('' for none; default sface)")
    e.add_argument("--max-test", type=int, default=None, metavar="N", help="evaluate a seeded subset of N held-out images (CPU budget)")
    e.add_argument("--no-gender", action="store_true", help="skip the gender metrics")
    e.add_argument("--seed", type=int, default=0, help="seed of the enrolment pairing and the CV folds")
    e.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    e.add_argument(
        "--protection", default=None, metavar="NAME",
        help="protect the test templates with this protection instead of the run's (e.g. attack PE-MIU templates "
        "with a decoder trained on unprotected ones; 'unprotected' for plain templates)",
    )
    e.add_argument("--block-size", type=int, default=None, metavar="K", help="PE-MIU block size (with --protection)")
    e.add_argument("--moved-blocks", type=int, default=None, metavar="P", help="PE-MIU fixed-variant moved blocks (with --protection)")
    _protection_args(e, with_name=False)
    e.add_argument("--overwrite", action="store_true", help="replace DIR/summary.json if it exists")
    e.set_defaults(handler=run_eval)

    g = sub.add_parser(
        "grid", help="K x P grid for the PE-MIU variant: RSR table + heat-maps",
        description="One decoder per (K, P) trained on templates protected with one fixed permutation that moves "
                    "P blocks of size K (an attacker who protects its own data through the system), plus the "
                    "unprotected decoder evaluated on every cell's templates (an attacker who never saw the "
                    "permutation). Finished cells are reused; unfinished trainings resume.")
    _common_train_args(g)
    g.add_argument("--out", required=True, metavar="DIR", help="grid folder (one run per cell, tables, heat-maps)")
    g.add_argument("--block-sizes", default="16,32", metavar="K,...", help="block sizes K (default 16,32)")
    g.add_argument("--moved-blocks", default="2,4", metavar="P,...", help="moved blocks P, each >= 2 (default 2,4)")
    g.add_argument("--no-unprotected", action="store_true", help="skip the unprotected baseline cell")
    _protection_args(g, with_name=False)
    g.set_defaults(handler=run_grid)
    f = sub.add_parser("figure", help="picture: held-out faces and their reconstructions by several runs, side by side")
    f.add_argument("runs", nargs="+", metavar="RUN", help="run folders (same split), one column each")
    f.add_argument("--embeddings", required=True, metavar="T.npz", help="unprotected embeddings")
    f.add_argument("--images", required=True, metavar="ROOT", help="image root of those embeddings")
    f.add_argument("--out", required=True, metavar="PNG", help="output PNG")
    f.add_argument("--rows", type=int, default=6, metavar="N", help="number of held-out people (default 6)")
    f.add_argument("--seed", type=int, default=0, help="seed of the test templates' permutations")
    f.add_argument("--overwrite", action="store_true", help="replace PNG if it exists")
    _protection_args(f, with_name=False)
    f.set_defaults(handler=run_figure)
    p.set_defaults(handler=lambda a: (p.print_help(), 2)[1])


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        if args.threads < 1:
            raise ParameterError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)


def _config(args: argparse.Namespace):
    from facepriv.attacks.reconstruction.trainer import TrainConfig

    if args.max_train is not None and args.max_train < 2:
        raise ParameterError(f"--max-train must be at least 2, got {args.max_train}")
    cfg = TrainConfig(size=args.size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, test_fraction=args.test_fraction,
        w_ssim=args.ssim_weight, w_id=args.id_weight,
    )
    cfg.validate()
    return cfg


def _protection_params(args: argparse.Namespace) -> dict:
    params = {}
    if getattr(args, "block_size", None) is not None:
        params["block_size"] = args.block_size
    if getattr(args, "moved_blocks", None) is not None:
        params["moved_blocks"] = args.moved_blocks
    if args.protection_seed is not None:
        params["seed"] = args.protection_seed
    return params


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct train``."""
    from facepriv.attacks.reconstruction.runs import train_run

    _threads(args)
    cfg = _config(args)
    params = _protection_params(args)
    if params and not args.protection:
        raise ParameterError("--block-size/--moved-blocks/--protection-seed need --protection (e.g. --protection pe_miu)")
    res = train_run(
        args.embeddings, args.images, args.out, cfg, args.protection, params,
        resume=args.resume, overwrite=args.overwrite, max_train=args.max_train,
    )
    last = res.history[-1] if res.history else {}
    print(f"trained {res.epochs_run} epoch(s) in {res.seconds:.0f} s; last loss {last.get('loss', float('nan')):.4f}, "
          f"SSIM {last.get('ssim', float('nan')):.3f}; run folder {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct eval``."""
    from facepriv.attacks.reconstruction.runs import evaluate_run

    _threads(args)
    transfer = tuple(t.strip() for t in args.transfer.split(",") if t.strip())
    s = evaluate_run(
        args.run, args.embeddings, args.images, args.out, transfer, _protection_params(args),
        overwrite=args.overwrite, seed=args.seed, gender=not args.no_gender, max_test=args.max_test,
        protection=args.protection,
    )
    rsr = ", ".join(f"{100 * v:.1f}%@{100 * float(k):g}%" for k, v in s["rsr"].items())
    print(f"{s['n_test_images']} test images of {s['n_test_identities']} identities: RSR {rsr}; "
          f"SSIM {s['ssim']:.3f}, PSNR {s['psnr']:.2f} dB; summary in {args.out}/summary.json")
    return 0


def run_grid(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct grid``."""
    from facepriv.attacks.reconstruction.kp_grid import run_grid as grid

    _threads(args)
    cfg = _config(args)
    table = grid(
        args.embeddings, args.images, args.out, cfg,
        _ints(args.block_sizes, "--block-sizes"), _ints(args.moved_blocks, "--moved-blocks"),
        protection_seed=args.protection_seed or 0, max_train=args.max_train, include_unprotected=not args.no_unprotected,
    )
    print(f"{len(table)} cell(s); table in {args.out}/rsr_table.md, heat-maps {args.out}/rsr_heatmap_fmr*.png "
          "(naive attacker: rsr_heatmap_naive_fmr*.png)")
    return 0


def run_figure(args: argparse.Namespace) -> int:
    """Handler of ``facepriv reconstruct figure``."""
    from facepriv.attacks.reconstruction.runs import compare_figure

    if args.rows < 1:
        raise ParameterError(f"--rows must be positive, got {args.rows}")
    out = compare_figure(args.runs, args.embeddings, args.images, args.out, args.rows, _protection_params(args), args.seed, args.overwrite)
    print(f"wrote {out}: columns = original, " + ", ".join(args.runs))
    return 0
