"""``facepriv advface``: split system features, shadow/attacker decoders, AdvFace protection, evaluation.

Parameter flags default to None here: values and defaults come from the components, the
``advface_table1`` attack (:class:`~facepriv.advface.attack.AdvFaceTable1`: decoders and
evaluation) and the ``advface`` / ``random_noise`` / ``laplace_dp`` protections, which validate
them before any work. Their defaults and meanings are filled into ``--help`` only when help is
shown (importing the components loads torch; building the parser for every command must not).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from facepriv.cli import argtypes
from facepriv.cli.component_flags import ComponentHelpParser, flag_errors, param_help
from facepriv.cli.device_flags import add_amp_flag, add_device_flag, resolve_cli_device
from facepriv.errors import InputFileError, OutputExistsError, ParameterError

log = logging.getLogger(__name__)

EPILOG = """\
typical run (Wang et al., CVPR 2023, on a CPU-sized scale):
  facepriv advface extract --images DATA --labels DATA/labels.csv --out F.npz
  facepriv advface train --features F.npz --images DATA --role shadow --arch resrec --out runs/shadow_resrec
  facepriv advface train --features F.npz --images DATA --role attacker --arch resrec --out runs/att_resrec
  facepriv advface protect --features F.npz --shadow runs/shadow_resrec --eps 0.2 --out P.npz
  facepriv advface eval --features F.npz --images DATA --shadow resrec=runs/shadow_resrec \\
      --attacker resrec=runs/att_resrec --out runs/advface_eval
Identities are split (seeded by --split-seed) into disjoint shadow / attacker / eval groups.
Defaults of every parameter: `facepriv describe advface_table1` (decoders, evaluation) and
`facepriv describe advface` (the protection).
"""

#: flags whose component parameter has another name (parameter -> flag), per subcommand
TRAIN_PARAMS = ("arch", "size", "epochs", "batch_size", "lr", "max_images", "seed")
EVAL_PARAMS = ("eps", "alpha", "steps", "bound", "sweep", "max_eval", "offline_epochs", "seed")
NOISE_PARAMS = ("eps", "alpha", "steps", "bound", "seed")
ALL = "all"


def _h(name: str, comp: str = "advface_table1", extra: str = "") -> str:
    return param_help(f"{'attack' if comp == 'advface_table1' else 'protection'}:{comp}", name, extra)


def _runs(spec: str, what: str) -> dict[str, str]:
    out = {}
    for part in [p for p in spec.split(",") if p.strip()]:
        if "=" not in part:
            raise ParameterError(f"--{what}: expected ARCH=RUN_DIR[,ARCH=RUN_DIR...], got {part!r}")
        arch, run = part.split("=", 1)
        out[arch.strip()] = run.strip()
    if not out:
        raise ParameterError(f"--{what}: give at least one ARCH=RUN_DIR")
    return out


def _floats(spec: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise ParameterError(f"sweep: expected comma-separated numbers, got {spec!r}", param="sweep") from None


def _cap(text: str) -> int | str:
    return ALL if text.strip().lower() == ALL else argparse_int(text)


def argparse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer value: {text!r}") from None


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _attack(params: dict[str, Any]):
    """The ``advface_table1`` component with these parameters (the rest at its defaults), validated."""
    from facepriv.advface.attack import AdvFaceTable1

    att = AdvFaceTable1(**params)
    att.validate_params()
    return att


def _image_folder(path: str) -> None:
    if not Path(path).is_dir():
        raise InputFileError(path, "is not a folder of images" if Path(path).exists() else "no such folder")


@flag_errors()
def cmd_extract(args: argparse.Namespace) -> int:
    """Handler of ``facepriv advface extract``."""
    from facepriv.advface.data import extract_features, load_faces
    from facepriv.advface.features import save_features
    from facepriv.advface.split import SplitSystem
    from facepriv.fileio import check_not_input, check_writable

    device = resolve_cli_device(args.device)
    check_not_input(args.out, [p for p in (args.labels,) if p])
    check_writable(args.out, args.overwrite)
    _image_folder(args.images)
    system = SplitSystem.create(args.model, args.cut, device=device)
    fs = extract_features(load_faces(args.images, args.labels, system.alignment), system)
    save_features(fs, args.out, args.overwrite)
    print(f"{len(fs)} feature maps {tuple(fs.features.shape[1:])} from {args.model} cut at {system.cut} -> {args.out}")
    return 0


@flag_errors()
def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``facepriv advface train``."""
    import numpy as np

    from facepriv.advface.data import cap_rows, faces_for, identity_roles
    from facepriv.advface.features import load_features
    from facepriv.advface.split import SplitSystem
    from facepriv.advface.train import DecoderConfig, check_run_folder, train_decoder

    device = resolve_cli_device(args.device)
    att = _attack(_given(args, TRAIN_PARAMS))
    split_seed = type(att).param_defaults()["seed"] if args.split_seed is None else args.split_seed
    check_run_folder(args.out, args.resume, args.overwrite)
    fs = load_features(args.features)
    _image_folder(args.images)
    system = SplitSystem.create(fs.model, fs.cut)
    idx = np.flatnonzero(identity_roles(fs.identity, split_seed) == args.role)
    part = fs.subset(idx[cap_rows(len(idx), att.max_images, att.seed)])
    faces = faces_for(part, args.images, system.alignment)
    cfg = DecoderConfig(arch=att.arch, feature_shape=system.feature_shape, out_size=att.size, model=fs.model,
                        cut=fs.cut, input_shape=system.input_shape, epochs=att.epochs, batch_size=att.batch_size,
                        lr=float(att.lr), seed=att.seed, role=args.role, split_seed=split_seed, n_train=len(part))
    train_decoder(part.features, faces.crops, cfg, args.out, client=system.client, resume=args.resume,
                  overwrite=args.overwrite, device=device, amp=args.amp)
    print(f"trained {att.arch} ({args.role}) on {len(part)} images of {len(np.unique(part.identity))} identities -> {args.out}")
    return 0


@flag_errors()
def cmd_protect(args: argparse.Namespace) -> int:
    """Handler of ``facepriv advface protect``."""
    import numpy as np

    from facepriv.advface.features import load_features, save_features
    from facepriv.fileio import check_not_input, check_writable
    from facepriv.registry import create, get_class

    device = resolve_cli_device(args.device)
    check_not_input(args.out, [args.features])
    check_writable(args.out, args.overwrite)
    cls = get_class("protection", args.method)
    params = _given(args, NOISE_PARAMS)
    if args.shadow is not None:
        params["shadow"] = args.shadow
    extra = sorted(set(params) - set(cls.param_names()))
    if extra:
        raise ParameterError(f"--{extra[0]}: {args.method} has no parameter {extra[0]}", param=extra[0])
    prot = create("protection", args.method, params)
    fs = load_features(args.features)
    if fs.protection is not None:
        raise InputFileError(args.features, f"is already protected with {fs.protection.get('name')!r}; "
                                            "protect unprotected features")
    if hasattr(prot, "on_device"):  # advface: the shadow decoder and E run on the device
        prot.on_device(device)
    prot.fit()
    if args.method == "advface":
        fs.check_compatible(prot.system_.model_name, prot.system_.cut, where=args.features)
    out = fs.with_features(prot.transform(fs.features), prot.record())
    save_features(out, args.out, args.overwrite)
    delta = np.abs(out.features - fs.features).max()
    print(f"protected {len(out)} feature maps with {args.method} (max |change| {delta:.3f}) -> {args.out}")
    return 0


@flag_errors({"arch": "--main-arch"})
def cmd_eval(args: argparse.Namespace) -> int:
    """Handler of ``facepriv advface eval``."""
    from facepriv.advface.experiment import OUTPUT_FILES, PARTS, evaluate_runs
    from facepriv.advface.features import load_features

    device = resolve_cli_device(args.device)
    params = _given(args, EVAL_PARAMS)
    if "sweep" in params:
        params["sweep"] = _floats(params["sweep"])
    if params.get("max_eval") == ALL:
        params["max_eval"] = None
    if args.main_arch is not None:
        params["arch"] = args.main_arch
    att = _attack(params)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts or set(parts) - set(PARTS):
        raise ParameterError(f"--parts: choose from {', '.join(PARTS)}, got {args.parts!r}")
    shadows, attackers = _runs(args.shadow, "shadow"), _runs(args.attacker, "attacker")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "is a file; the output is a folder")
    if not args.overwrite:
        for name in OUTPUT_FILES:
            if (out / name).exists():
                raise OutputExistsError(out / name)
    fs = load_features(args.features)
    _image_folder(args.images)
    summary = evaluate_runs(
        fs, args.images, shadows, attackers, out, main_arch=att.arch, eps=float(att.eps), alpha=float(att.alpha),
        steps=att.steps, bound=att.bound, sweep=tuple(float(x) for x in att.sweep), max_eval=att.max_eval,
        offline_epochs=att.offline_epochs, seed=att.seed, parts=parts, device=device,
    )
    print(f"{'method':<16}{'SSIM':>7}{'PSNR':>8}{'MSE':>8}{'SRRA':>8}{'acc':>8}")
    for r in summary["table"]:
        print(f"{r['method']:<16}{r['ssim']:7.3f}{r['psnr']:8.2f}{r['mse']:8.4f}{100 * r['srra']:7.1f}%{100 * r['accuracy']:7.2f}%")
    print(f"summary, plots and grids in {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``facepriv advface`` and its subcommands."""
    from facepriv.advface.params import ARCHITECTURES, BOUNDS

    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("advface", help="AdvFace (CVPR 2023): adversarial features against reconstruction",
                       description=__doc__.split("\n\n")[0], epilog=EPILOG, formatter_class=raw)
    s = p.add_subparsers(dest="advface_command", metavar="SUBCOMMAND", parser_class=ComponentHelpParser)

    def common(q: argparse.ArgumentParser, seed: str | None = "advface_table1", extra: str = "") -> None:
        q.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        if seed:
            q.add_argument("--seed", type=argtypes.seed, default=None, help=_h("seed", seed, extra))

    q = s.add_parser(
        "extract", help="client features E(x) of a labelled image folder", formatter_class=raw,
        description="Detect, align (with the model's own alignment recipe) and run the client part E of the split "
                    "recognition model on every photo; the feature maps are what the system stores and what "
                    "AdvFace protects.",
        epilog="example:\n  facepriv advface extract --images celeba-crops --labels celeba-crops/labels.csv "
               "--out celeba_feat.npz\n      dlib ResNet cut after stage 1: 32x35x35 feature maps per face")
    q.add_argument("--images", required=True, help="image folder (LFW layout)")
    q.add_argument("--labels", help="labels CSV image,identity[,gender] (default: identity = folder)")
    q.add_argument("--model", default="dlib_resnet", help="splittable recognition model (default dlib_resnet)")
    q.add_argument("--cut", default=None, help=_h("cut"))
    q.add_argument("--out", required=True, help="feature file (.npz)")
    common(q, seed=None)
    add_device_flag(q)
    q.set_defaults(handler=cmd_extract)

    q = s.add_parser(
        "train", help="train a reconstruction network (shadow or attacker) with the L1 loss", formatter_class=raw,
        description="Train TransRec, ResRec or URec from feature maps to face images (L1, Eq. 1/3 of the paper) on "
                    "one identity group: 'shadow' = the server's own decoder that AdvFace attacks, 'attacker' = "
                    "a disjoint group, as an outside attacker would have. Checkpoints every epoch; --resume continues "
                    "(the weights equal an uninterrupted run's).",
        epilog="example:\n  facepriv advface train --features celeba_feat.npz --images celeba-crops --role shadow "
               "--arch resrec --epochs 6 --max-images 600 --out runs/shadow_resrec")
    q.add_argument("--features", required=True, help="feature file from `facepriv advface extract`")
    q.add_argument("--images", required=True, help="the image folder the features came from")
    q.add_argument("--role", choices=("shadow", "attacker"), required=True,
                   help="which public identity group to train on (disjoint from each other and from eval)")
    q.add_argument("--arch", choices=ARCHITECTURES, default=None, help=_h("arch"))
    q.add_argument("--size", type=argparse_int, default=None, metavar="PX", help=_h("size"))
    q.add_argument("--epochs", type=argparse_int, default=None, metavar="N", help=_h("epochs"))
    q.add_argument("--batch-size", type=argparse_int, default=None, metavar="N", help=_h("batch_size"))
    q.add_argument("--lr", type=float, default=None, help=_h("lr"))
    q.add_argument("--max-images", type=argparse_int, default=None, metavar="N", help=_h("max_images"))
    q.add_argument("--split-seed", type=argtypes.seed, default=None, metavar="S",
                   help=_h("seed", extra=" Here: only the identity split; give every run of one experiment the same."))
    q.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    q.add_argument("--out", required=True, help="run folder")
    common(q, extra=" Here: the training subset, initial weights and batch order.")
    add_device_flag(q, "initial weights and batch orders are drawn on the CPU; checkpoints hold CPU tensors")
    add_amp_flag(q)
    q.set_defaults(handler=cmd_train)

    q = s.add_parser(
        "protect", help="protect stored features: advface, random_noise or laplace_dp", formatter_class=raw,
        description="Write protected feature maps: AdvFace (x~ = S(z), then PGD sign steps that push S(z) away "
                    "from x~ within the bound eps), or the random / Laplace baselines with the same bound. The "
                    "output must not be the input file.",
        epilog="example:\n  facepriv advface protect --features celeba_feat.npz --shadow runs/shadow_resrec "
               "--eps 0.2 --out celeba_feat_advface.npz")
    q.add_argument("--features", required=True, help="feature file from `facepriv advface extract`")
    q.add_argument("--method", choices=("advface", "random_noise", "laplace_dp"), default="advface",
                   help="advface (PGD against the shadow decoder), random_noise (random sign steps) or "
                        "laplace_dp (Laplace mechanism, budget 1.0, same bound); default advface")
    q.add_argument("--shadow", help=_h("shadow", "advface"))
    q.add_argument("--eps", type=float, default=None, help=_h("eps", "advface"))
    q.add_argument("--alpha", type=float, default=None, help=_h("alpha", "advface", " (advface, random_noise)"))
    q.add_argument("--steps", type=argparse_int, default=None, help=_h("steps", "advface", " (advface, random_noise)"))
    q.add_argument("--bound", choices=BOUNDS, default=None, help=_h("bound", "advface", " (advface, random_noise)"))
    q.add_argument("--out", required=True, help="protected feature file (.npz); the seed is not written into it")
    common(q, seed="random_noise")
    add_device_flag(q)
    q.set_defaults(handler=cmd_protect)

    q = s.add_parser(
        "eval", help="Table 1, eps sweep, transfer matrix and grids", formatter_class=raw,
        description="On identities no decoder saw: protect their features with every method, reconstruct them "
                    "with the attacker's decoders, and report SSIM/PSNR/MSE, SRRA (replay at FMR 0.1%%) and "
                    "k-fold verification accuracy of the server part on the stored features.",
        epilog="example:\n  facepriv advface eval --features celeba_feat.npz --images celeba-crops "
               "--shadow resrec=runs/shadow_resrec --attacker resrec=runs/attacker_resrec \\\n"
               "      --parts table,sweep --offline-epochs 2 --out runs/advface_eval\n"
               "      writes summary.json, summary.md, tradeoff_psnr_accuracy.png, reconstructions.png")
    q.add_argument("--features", required=True, help="feature file from `facepriv advface extract`")
    q.add_argument("--images", required=True, help="the image folder the features came from (originals for SSIM/PSNR)")
    q.add_argument("--shadow", required=True, help="ARCH=RUN[,ARCH=RUN...] shadow decoders")
    q.add_argument("--attacker", required=True, help="ARCH=RUN[,ARCH=RUN...] attacker decoders")
    q.add_argument("--main-arch", choices=ARCHITECTURES, default=None, help=_h("arch", extra=" Here: of Table 1 and the sweep."))
    q.add_argument("--eps", type=float, default=None, help=_h("eps", extra=" Also of the transfer matrix."))
    q.add_argument("--alpha", type=float, default=None, help=_h("alpha"))
    q.add_argument("--steps", type=argparse_int, default=None, help=_h("steps"))
    q.add_argument("--bound", choices=BOUNDS, default=None, help=_h("bound"))
    q.add_argument("--sweep", default=None, metavar="EPS,EPS,...", help=_h("sweep"))
    q.add_argument("--max-eval", type=_cap, default=None, metavar="N|all", help=_h("max_eval", extra=" ('all' = None)"))
    q.add_argument("--parts", default=",".join(("table", "sweep", "transfer")),
                   help="which evaluations to run: table (Table 1), sweep (Fig. 4), transfer (Table 4); default all")
    q.add_argument("--offline-epochs", type=argparse_int, default=None, metavar="N", help=_h("offline_epochs"))
    q.add_argument("--out", required=True, help="output folder (summary.json, summary.md, plots)")
    common(q)
    add_device_flag(q)
    q.set_defaults(handler=cmd_eval)
    p.set_defaults(handler=lambda a: (p.print_help(), 2)[1])
