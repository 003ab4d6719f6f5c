"""``facepriv advface``: split system features, shadow/attacker decoders, AdvFace protection, evaluation."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from facepriv.errors import OutputExistsError, ParameterError

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
"""


def _runs(spec: str, what: str) -> dict[str, str]:
    out = {}
    for part in [p for p in spec.split(",") if p]:
        if "=" not in part:
            raise ParameterError(f"--{what}: expected ARCH=RUN_DIR[,ARCH=RUN_DIR...], got {part!r}")
        arch, run = part.split("=", 1)
        out[arch.strip()] = run.strip()
    if not out:
        raise ParameterError(f"--{what}: give at least one ARCH=RUN_DIR")
    return out


def _floats(spec: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise ParameterError(f"expected comma-separated numbers, got {spec!r}") from None
    if any(v < 0 for v in vals):
        raise ParameterError(f"eps must be >= 0, got {spec!r}")
    return vals


def cmd_extract(args: argparse.Namespace) -> int:
    from facepriv.advface.data import extract_features, load_faces
    from facepriv.advface.features import save_features
    from facepriv.advface.split import SplitSystem
    from facepriv.fileio import check_writable

    check_writable(args.out, args.overwrite)
    system = SplitSystem.create(args.model, args.cut)
    faces = load_faces(args.images, args.labels, "dlib_chip150" if args.model == "dlib_resnet" else "arcface112")
    fs = extract_features(faces, system)
    save_features(fs, args.out, args.overwrite)
    print(f"{len(fs)} feature maps {tuple(fs.features.shape[1:])} from {args.model} cut at {system.cut} -> {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from facepriv.advface.data import faces_for, identity_roles
    from facepriv.advface.features import load_features
    from facepriv.advface.split import SplitSystem
    from facepriv.advface.train import DecoderConfig, train_decoder

    fs = load_features(args.features)
    system = SplitSystem.create(fs.model, fs.cut)
    fs.check_compatible(system.model_name, system.cut, where=args.features)
    roles = identity_roles(fs.identity, args.split_seed)
    part = fs.subset(roles == args.role)
    if args.max_images and len(part) > args.max_images:
        part = part.subset(np.sort(np.random.default_rng(args.seed).permutation(len(part))[: args.max_images]))
    faces = faces_for(part, args.images, "dlib_chip150" if fs.model == "dlib_resnet" else "arcface112")
    cfg = DecoderConfig(arch=args.arch, feature_shape=system.feature_shape, out_size=args.size, model=fs.model,
                        cut=fs.cut, input_shape=system.input_shape, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, seed=args.seed, role=args.role, split_seed=args.split_seed, n_train=len(part))
    train_decoder(part.features, faces.crops, cfg, args.out, client=system.client, resume=args.resume,
                  overwrite=args.overwrite)
    print(f"trained {args.arch} ({args.role}) on {len(part)} images of {len(np.unique(part.identity))} identities -> {args.out}")
    return 0


def cmd_protect(args: argparse.Namespace) -> int:
    from facepriv.advface.features import load_features, save_features
    from facepriv.fileio import check_writable
    from facepriv.registry import create

    check_writable(args.out, args.overwrite)
    fs = load_features(args.features)
    if fs.protection is not None:
        raise ParameterError(f"{args.features} is already protected with {fs.protection.get('name')!r}")
    params: dict = {"eps": args.eps, "seed": args.seed}
    if args.method in ("advface", "random_noise"):
        params |= {"alpha": args.alpha, "steps": args.steps, "bound": args.bound}
    if args.method == "advface":
        if not args.shadow:
            raise ParameterError("--method advface needs --shadow RUN_DIR (a trained shadow decoder)")
        params["shadow"] = args.shadow
    prot = create("protection", args.method, params)
    prot.fit()
    if args.method == "advface":
        fs.check_compatible(prot.config_.model, prot.config_.cut, where=args.features)
    out = fs.with_features(prot.transform(fs.features), prot.record())
    save_features(out, args.out, args.overwrite)
    delta = np.abs(out.features - fs.features).max()
    print(f"protected {len(out)} feature maps with {args.method} (max |change| {delta:.3f}) -> {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from facepriv.advface.experiment import run_experiment
    from facepriv.advface.features import load_features

    out = Path(args.out)
    if (out / "summary.json").exists() and not args.overwrite:
        raise OutputExistsError(out / "summary.json")
    fs = load_features(args.features)
    summary = run_experiment(
        fs, args.images, _runs(args.shadow, "shadow"), _runs(args.attacker, "attacker"), out,
        main_arch=args.main_arch, eps=args.eps, alpha=args.alpha, steps=args.steps, bound=args.bound,
        sweep=_floats(args.sweep), max_eval=args.max_eval, offline_epochs=args.offline_epochs, seed=args.seed,
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
    )
    print(f"{'method':<16}{'SSIM':>7}{'PSNR':>8}{'MSE':>8}{'SRRA':>8}{'acc':>8}")
    for r in summary["table"]:
        print(f"{r['method']:<16}{r['ssim']:7.3f}{r['psnr']:8.2f}{r['mse']:8.4f}{100 * r['srra']:7.1f}%{100 * r['accuracy']:7.2f}%")
    print(f"summary, plots and grids in {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``facepriv advface`` and its subcommands."""
    p = sub.add_parser("advface", help="AdvFace (CVPR 2023): adversarial features against reconstruction",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="advface_command", metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser, seed: bool = True) -> None:
        q.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        if seed:
            q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    raw = argparse.RawDescriptionHelpFormatter
    q = s.add_parser(
        "extract", help="client features E(x) of a labelled image folder", formatter_class=raw,
        description="Detect, align and run the client part E of the split recognition model on every photo; "
                    "the feature maps are what the system stores and what AdvFace protects.",
        epilog="example:\n  facepriv advface extract --images celeba-crops --labels celeba-crops/labels.csv "
               "--out celeba_feat.npz\n      dlib ResNet cut after stage 1: 32x35x35 feature maps per face")
    q.add_argument("--images", required=True, help="image folder (LFW layout)")
    q.add_argument("--labels", help="labels CSV image,identity[,gender] (default: identity = folder)")
    q.add_argument("--model", default="dlib_resnet", help="splittable recognition model (default dlib_resnet)")
    q.add_argument("--cut", default=None, help="cut point (default: stage1 for dlib_resnet; see `facepriv models`)")
    q.add_argument("--out", required=True, help="feature file (.npz)")
    common(q, seed=False)
    q.set_defaults(handler=cmd_extract)

    q = s.add_parser(
        "train", help="train a reconstruction network (shadow or attacker) with the L1 loss", formatter_class=raw,
        description="Train TransRec, ResRec or URec from feature maps to face images (L1, Eq. 1/3 of the paper) on "
                    "one identity group: 'shadow' = the server's own decoder that AdvFace attacks, 'attacker' = "
                    "a disjoint group, as an outside attacker would have. Checkpoints every epoch; --resume continues.",
        epilog="example:\n  facepriv advface train --features celeba_feat.npz --images celeba-crops --role shadow "
               "--arch resrec --epochs 6 --max-images 600 --out runs/shadow_resrec")
    q.add_argument("--features", required=True, help="feature file from `facepriv advface extract`")
    q.add_argument("--images", required=True, help="the image folder the features came from")
    q.add_argument("--role", choices=("shadow", "attacker"), required=True,
                   help="which public identity group to train on (disjoint from each other and from eval)")
    q.add_argument("--arch", choices=("transrec", "resrec", "urec"), default="resrec", help="architecture (default resrec)")
    q.add_argument("--size", type=int, default=64, help="output image size (default 64; the paper uses 160)")
    q.add_argument("--epochs", type=int, default=10)
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (paper 1e-4 with far more epochs)")
    q.add_argument("--max-images", type=int, default=0, help="cap the training images (0 = all of the role)")
    q.add_argument("--split-seed", type=int, default=0, help="seed of the identity split (same for every run)")
    q.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    q.add_argument("--out", required=True, help="run folder")
    common(q)
    q.set_defaults(handler=cmd_train)

    q = s.add_parser(
        "protect", help="protect stored features: advface, random_noise or laplace_dp", formatter_class=raw,
        description="Write protected feature maps: AdvFace (x~ = S(z), then 40 PGD sign steps that push S(z) away "
                    "from x~ within the bound eps), or the random / Laplace baselines with the same bound.",
        epilog="example:\n  facepriv advface protect --features celeba_feat.npz --shadow runs/shadow_resrec "
               "--eps 0.2 --out celeba_feat_advface.npz")
    q.add_argument("--features", required=True, help="feature file from `facepriv advface extract`")
    q.add_argument("--method", choices=("advface", "random_noise", "laplace_dp"), default="advface",
                   help="advface (PGD against the shadow decoder), random_noise (40 random sign steps) or "
                        "laplace_dp (Laplace mechanism, budget 1.0, same bound); default advface")
    q.add_argument("--shadow", help="shadow decoder run folder (advface)")
    q.add_argument("--eps", type=float, default=0.2, help="noise bound (default 0.2)")
    q.add_argument("--alpha", type=float, default=0.2, help="sign-step size (default 0.2)")
    q.add_argument("--steps", type=int, default=40, help="iterations (default 40)")
    q.add_argument("--bound", choices=("ball", "step"), default="ball",
                   help="ball: |z_T - z_0| <= eps (PGD); step: |z_t+1 - z_t| <= eps (Eq. 6 literally)")
    q.add_argument("--out", required=True, help="protected feature file (.npz); the seed is not written into it")
    common(q)
    q.set_defaults(handler=cmd_protect)

    q = s.add_parser(
        "eval", help="Table 1, eps sweep, transfer matrix and grids", formatter_class=raw,
        description="On identities no decoder saw: protect their features with every method, reconstruct them "
                    "with the attacker's decoders, and report SSIM/PSNR/MSE, SRRA (replay at FMR 0.1%%) and "
                    "10-fold verification accuracy of the server part on the stored features.",
        epilog="example:\n  facepriv advface eval --features celeba_feat.npz --images celeba-crops "
               "--shadow resrec=runs/shadow_resrec --attacker resrec=runs/attacker_resrec \\\n"
               "      --parts table,sweep --offline-epochs 2 --out runs/advface_eval\n"
               "      writes summary.json, summary.md, tradeoff_psnr_accuracy.png, reconstructions.png")
    q.add_argument("--features", required=True, help="feature file from `facepriv advface extract`")
    q.add_argument("--images", required=True, help="the image folder the features came from (originals for SSIM/PSNR)")
    q.add_argument("--shadow", required=True, help="ARCH=RUN[,ARCH=RUN...] shadow decoders")
    q.add_argument("--attacker", required=True, help="ARCH=RUN[,ARCH=RUN...] attacker decoders")
    q.add_argument("--main-arch", default="resrec", help="architecture of Table 1 and the sweep (default resrec)")
    q.add_argument("--eps", type=float, default=0.2, help="noise bound of Table 1 and the transfer matrix (default 0.2)")
    q.add_argument("--alpha", type=float, default=0.2, help="sign-step size (default 0.2)")
    q.add_argument("--steps", type=int, default=40, help="PGD iterations (default 40)")
    q.add_argument("--bound", choices=("ball", "step"), default="ball",
                   help="ball: |z_T - z_0| <= eps (PGD, default); step: per-step bound (Eq. 6 literally)")
    q.add_argument("--sweep", default="0,0.05,0.1,0.15,0.2,0.25,0.3", help="eps values of the trade-off sweep")
    q.add_argument("--max-eval", type=int, default=300, help="cap the eval images (at most 4 per identity, as many identities as fit; default 300)")
    q.add_argument("--parts", default="table,sweep,transfer",
                   help="which evaluations to run: table (Table 1), sweep (Fig. 4), transfer (Table 4)")
    q.add_argument("--offline-epochs", type=int, default=0, help="also fine-tune Psi on adversarial features (offline mode)")
    q.add_argument("--out", required=True, help="output folder (summary.json, plots)")
    common(q)
    q.set_defaults(handler=cmd_eval)
    p.set_defaults(handler=lambda a: (p.print_help(), 2)[1])
