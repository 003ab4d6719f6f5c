"""``facepriv deid``: BIM / ILLC photo cloaks (Ghafourian et al. 2023) and their transferability."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from facepriv.errors import ParameterError

log = logging.getLogger(__name__)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ParameterError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ParameterError(f"{what}: give at least one value")
    return vals


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _out_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ParameterError(f"--out {p}: exists and is not a folder")
    return p


def _threads(n: int | None) -> None:
    if n is not None:
        if n < 1:
            raise ParameterError(f"--threads must be >= 1, got {n}")
        import torch

        torch.set_num_threads(n)


def cmd_run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv deid run``."""
    from facepriv.attacks.deid.run import RunConfig, run_cloaks

    _threads(args.threads)
    cfg = RunConfig(
        images=args.images, labels=args.labels, method=args.method, source=args.source,
        eps=_floats(args.eps, "--eps"), alpha=args.alpha, jpeg_quality=None if args.png else args.jpeg_quality,
        max_images=args.max_images, probes_per_identity=args.probes_per_identity, min_gallery=args.min_gallery,
        min_images=args.min_images, max_identities=args.max_identities, max_gallery=args.max_gallery, seed=args.seed, max_side=args.max_side,
        batch_size=args.batch_size,
    )
    out = _out_dir(args.out)
    rec = run_cloaks(cfg, out, overwrite=args.overwrite)
    c = rec["counts"]
    print(f"cloaked {c['probes']} probe(s) of {c['identities']} identities with {cfg.method} on {cfg.source} "
          f"({rec['storage']}); {c['probes_without_face']} without a face skipped -> {out}")
    for e, v in rec["per_eps"].items():
        q = rec["quality"][e]
        print(f"  eps {e:>4}: {v['iterations']:3d} it, in-memory source PSR@1 {v['psr_source_in_memory'][1]:5.1f}%, "
              f"SSIM {q['ssim']:.3f}, PSNR {q['psnr']:.1f} dB, {v['cloaks_per_second']:.2f} cloaks/s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Handler of ``facepriv deid eval``."""
    from facepriv.attacks.deid.evaluate import evaluate_runs
    from facepriv.attacks.deid.plots import plot_summary

    _threads(args.threads)
    ks = tuple(int(k) for k in _floats(args.ks, "--ks"))
    out = _out_dir(args.out)
    s = evaluate_runs([Path(d) for d in args.run_dirs], _names(args.targets), out, overwrite=args.overwrite, ks=ks)
    pngs = plot_summary(s, out)
    for src, per in s["identification_clean_topk"].items():
        for tgt, acc in per.items():
            print(f"clean identification {tgt} (probes of run {src}): top-1 {acc[1]:.1f}%, detected "
                  f"{s['detection_rate'][src][tgt]['0']:.0f}%")
    for src, per in s["psr"].items():
        for tgt, by_eps in per.items():
            row = ", ".join(f"eps {e}: {v[1]:.0f}" for e, v in by_eps.items())
            print(f"PSR@1 {src} -> {tgt}: {row}")
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'} and {len(pngs)} plot(s)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Handler of ``facepriv deid plot``."""
    import json

    from facepriv.attacks.deid.plots import plot_methods
    from facepriv.errors import InputFileError

    summaries = []
    for p in args.summaries:
        try:
            summaries.append(json.loads(Path(p).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(p, f"not a readable summary.json ({exc})") from None
    ks = tuple(int(k) for k in _floats(args.ks, "--ks"))
    pngs = plot_methods(summaries, Path(args.out), ks=ks, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in pngs))
    return 0


def register(subparsers) -> None:
    """Add ``deid run``, ``deid eval`` and ``deid plot``."""
    p = subparsers.add_parser(
        "deid", help="photo de-identification: BIM / ILLC adversarial cloaks and their transferability",
        description="Ghafourian et al. (2023): cloak photos with BIM (untargeted) or ILLC (least-likely "
                    "class) on a source recognition model, store them (JPEG), then re-detect, re-align and "
                    "identify them with every target model: protection success rate PSR@k.",
    )
    sub = p.add_subparsers(dest="deid_command", metavar="SUBCOMMAND")

    r = sub.add_parser("run", help="split gallery/probes, train the source head, cloak the probes",
                       description="Per identity, a seeded split puts --probes-per-identity images in the probe "
                                   "set (cloaked) and the rest in the gallery (trains the identification head). "
                                   "Cloaks are computed on the full photo through the source model's alignment "
                                   "warp and stored under OUT/cloaks/eps<E>/.")
    r.add_argument("--images", required=True, help="dataset root folder (image paths in --labels are relative to it)")
    r.add_argument("--labels", required=True, help="labels CSV image,identity[,gender]")
    r.add_argument("--method", default="bim", choices=["bim", "illc", "push"],
                   help="bim: ascend CE of the true identity; illc: descend CE of the least-likely identity; "
                        "push: open-set variant, minimise cosine similarity to the enrolled template (default bim)")
    r.add_argument("--source", default="dlib_resnet", help="differentiable source model (default dlib_resnet)")
    r.add_argument("--eps", default="4,8,16,32", help="comma-separated L-inf budgets in 0..255 pixel units (default 4,8,16,32)")
    r.add_argument("--alpha", type=float, default=1.0, help="step size in pixel units (default 1); iterations min(eps+4, 1.25 eps)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--jpeg-quality", type=int, default=95, help="store cloaks as JPEG at this quality (default 95)")
    g.add_argument("--png", action="store_true", help="store cloaks losslessly as PNG instead")
    r.add_argument("--max-images", type=int, default=None, help="cap on the number of probes (round-robin over identities)")
    r.add_argument("--probes-per-identity", type=int, default=2, help="probe images per identity (default 2)")
    r.add_argument("--min-gallery", type=int, default=3, help="fewest gallery images an identity may have (default 3)")
    r.add_argument("--min-images", type=int, default=None,
                   help="leave out identities with fewer images (otherwise too-small identities are an error)")
    r.add_argument("--max-identities", type=int, default=None, help="keep a seeded random subset of identities")
    r.add_argument("--max-gallery", type=int, default=None,
                   help="cap on gallery images per identity (seeded choice; default all)")
    r.add_argument("--seed", type=int, default=0, help="seeds the split and the heads (default 0)")
    r.add_argument("--max-side", type=int, default=400, help="working resolution: longer photo side in px (default 400)")
    r.add_argument("--batch-size", type=int, default=8, help="photos cloaked together (default 8)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    r.set_defaults(deid_handler=cmd_run)

    e = sub.add_parser("eval", help="re-detect, re-align and identify stored cloaks with target models",
                       description="Reads one or more 'deid run' folders (one per source model, same split), "
                                   "trains each target model's head on the gallery and writes summary.json "
                                   "(psr[source][target][eps][k]), summary.md and PSR-vs-eps plots.")
    e.add_argument("run_dirs", nargs="+", metavar="DIR", help="'facepriv deid run' output folder(s)")
    e.add_argument("--targets", default="dlib_resnet,sface,mobilefacenet",
                   help="comma-separated target models (default dlib_resnet,sface,mobilefacenet)")
    e.add_argument("--ks", default="1,5,10,25,50", help="top-k values (default 1,5,10,25,50)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--overwrite", action="store_true", help="replace an existing summary in --out")
    e.set_defaults(deid_handler=cmd_eval)

    pl = sub.add_parser("plot", help="paper-style figure (rows: methods, columns: top-k) from summaries",
                        description="One PNG per source model: rows are the methods of the given summaries "
                                    "(e.g. ILLC and BIM), columns top-k, lines target models, x = eps.")
    pl.add_argument("summaries", nargs="+", metavar="SUMMARY", help="summary.json files of 'deid eval'")
    pl.add_argument("--ks", default="1,5,25", help="top-k panels (default 1,5,25 as the paper's figures)")
    pl.add_argument("--out", required=True, help="output folder for the PNGs")
    pl.add_argument("--overwrite", action="store_true", help="replace existing PNGs")
    pl.set_defaults(deid_handler=cmd_plot)

    def dispatch(args: argparse.Namespace) -> int:
        if getattr(args, "deid_handler", None) is None:
            p.print_help()
            return 2
        return args.deid_handler(args)

    p.set_defaults(handler=dispatch)
