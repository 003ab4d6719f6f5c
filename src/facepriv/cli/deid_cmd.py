"""``facepriv deid``: photo cloaks (Ghafourian et al. 2023) and their transferability.

Every parameter and default comes from the ``deid`` attack component
(:class:`facepriv.attacks.deid.attack.DeidAttack`): the flags default to None here and only the
flags a user gives are passed to it, so ``facepriv describe deid``, YAML configs and this command
agree. A component's ParameterError names its parameter; the CLI shows the flag.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from facepriv.cli import argtypes
from facepriv.cli.component_flags import ComponentHelpParser, param_help
from facepriv.cli.device_flags import add_device_flag, resolve_cli_device
from facepriv.errors import InputFileError, OutputExistsError, ParameterError

log = logging.getLogger(__name__)


def _floats(text: str, what: str, param: str | None = None) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ParameterError(f"{what}: expected comma-separated numbers, got {text!r}", param=param) from None
    if not vals:
        raise ParameterError(f"{what}: give at least one value", param=param)
    return vals


def _ints(text: str, what: str) -> tuple[int, ...]:
    vals = _floats(text, what)
    if any(v != int(v) for v in vals):
        raise ParameterError(f"{what}: expected comma-separated whole numbers, got {text!r}")
    return tuple(int(v) for v in vals)


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


def _h(name: str, extra: str = "") -> str:
    return param_help("attack:deid", name, extra)


def attack_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``deid`` attack parameters of the flags the user gave (the rest keep the component's defaults)."""
    p: dict[str, Any] = {}
    for name in ("method", "source", "alpha", "max_side", "batch_size", "probes_per_identity", "min_gallery",
                 "min_images", "max_identities", "max_images", "max_gallery", "seed"):
        v = getattr(args, name, None)
        if v is not None:
            p[name] = v
    if getattr(args, "eps", None) is not None:
        p["eps"] = _floats(args.eps, "eps", param="eps")
    if getattr(args, "png", False):
        p["jpeg_quality"] = None
    elif getattr(args, "jpeg_quality", None) is not None:
        p["jpeg_quality"] = args.jpeg_quality
    if getattr(args, "method_params", None) is not None:
        try:
            mp = json.loads(args.method_params)
        except json.JSONDecodeError as exc:
            raise ParameterError(f"method_params: not a JSON object ({exc.msg})", param="method_params") from None
        p["method_params"] = mp
    transfer = {name: getattr(args, name) for name in TRANSFER_FLAGS if getattr(args, name, None) is not None}
    for name in ("ensemble", "eot"):
        if name in transfer:
            transfer[name] = _names(transfer[name])
    if transfer:
        mp = p.get("method_params")
        p["method_params"] = {**(mp if isinstance(mp, dict) else {}), **transfer} if mp is None or isinstance(mp, dict) \
            else mp  # a non-mapping --method-params is refused by the attack, naming it
    return p


#: flags of the sign-gradient cloaks' transfer options (they go into the image protection's parameters)
TRANSFER_FLAGS = {"momentum": float, "diversity_prob": float, "resize_rate": float, "ti_kernel": int,
                  "vmi_samples": int, "ensemble": str, "eot": str}


def cmd_run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv deid run``."""
    from facepriv.attacks.deid.run import check_outputs, read_labels, run_cloaks
    from facepriv.registry import create

    device = resolve_cli_device(args.device)
    _threads(args.threads)
    attack = create("attack", "deid", attack_params(args))
    cfg = attack.run_config(args.source, images=args.images, labels=args.labels)  # type: ignore[attr-defined]
    cfg.validate()
    out = _out_dir(args.out)
    check_outputs(out, args.overwrite)
    images, identity = read_labels(args.labels, args.images)
    rec = run_cloaks(cfg, images, identity, Path(args.images), out, overwrite=args.overwrite, device=device).record
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
    from facepriv.attacks.deid.evaluate import evaluate, read_run
    from facepriv.attacks.deid.plots import plot_summary
    from facepriv.attacks.deid.postprocess import parse_list, postprocess_run

    device = resolve_cli_device(args.device)
    _threads(args.threads)
    ks = _ints(args.ks, "--ks")
    out = _out_dir(args.out)
    post = parse_list(_names(args.postprocess), "postprocess") if args.postprocess is not None else []
    runs = [read_run(Path(d)) for d in args.run_dirs]
    targets = _names(args.targets) if args.targets is not None else None
    if targets is None:  # the deid attack's default: the source model(s) themselves
        targets = list(dict.fromkeys(r.record["config"]["source"] for r in runs))
    if not args.overwrite:  # before any work: nothing is written when a post-processed result exists
        for pp in post:
            if (out / "post" / pp.label).exists():
                raise OutputExistsError(out / "post" / pp.label)
    s = evaluate(runs, targets, out, overwrite=args.overwrite, ks=ks, device=device)
    pngs = plot_summary(s, out)
    for pp in post:  # copies in OUT/post/<label>/<source>/, never over a cloak
        pruns = [postprocess_run(r, pp, out / "post" / pp.label / r.record["config"]["source"], overwrite=args.overwrite)
                 for r in runs]
        ps = evaluate(pruns, targets, out / "post" / pp.label, overwrite=args.overwrite, ks=ks, device=device)
        for src, per in ps["psr"].items():
            for tgt, by_eps in per.items():
                row = ", ".join(f"eps {e}: {v[ks[0]]:.0f}" for e, v in by_eps.items())
                print(f"after {pp.label}: PSR@{ks[0]} {src} -> {tgt}: {row}")
    for src, per in s["identification_clean_topk"].items():
        for tgt, acc in per.items():
            print(f"clean identification {tgt} (probes of run {src}): top-1 {acc[ks[0]]:.1f}%, detected "
                  f"{s['detection_rate'][src][tgt]['0']:.0f}%")
    for src, per in s["psr"].items():
        for tgt, by_eps in per.items():
            row = ", ".join(f"eps {e}: {v[ks[0]]:.0f}" for e, v in by_eps.items())
            print(f"PSR@{ks[0]} {src} -> {tgt}: {row}")
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'} and {len(pngs)} plot(s)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Handler of ``facepriv deid plot``."""
    from facepriv.attacks.deid.plots import plot_methods

    summaries = []
    for p in args.summaries:
        try:
            s = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputFileError(p, f"not a readable summary.json ({exc})") from None
        if not isinstance(s, dict) or s.get("kind") != "facepriv.deid.summary" or not isinstance(s.get("psr"), dict):
            raise InputFileError(p, "not a 'facepriv deid eval' summary.json")
        summaries.append(s)
    ks = _ints(args.ks, "--ks")
    pngs = plot_methods(summaries, _out_dir(args.out), ks=ks, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in pngs))
    return 0


def register(subparsers) -> None:
    """Add ``deid run``, ``deid eval`` and ``deid plot``."""
    paper_ks = "1,5,10,25,50"  # facepriv.attacks.deid.protocol.PAPER_KS (not imported: it loads torch)

    p = subparsers.add_parser(
        "deid", help="photo de-identification: adversarial photo cloaks and their transferability",
        description="Ghafourian et al. (2023): cloak photos with BIM (untargeted), ILLC (least-likely class), the "
                    "embedding push or your own image protection on a source recognition model, store them (JPEG), "
                    "then re-detect, re-align and identify them with every target model: protection success rate "
                    "PSR@k. Parameters and defaults are those of the 'deid' attack (facepriv describe deid).",
    )
    sub = p.add_subparsers(dest="deid_command", metavar="SUBCOMMAND", parser_class=ComponentHelpParser)

    r = sub.add_parser("run", help="split gallery/probes, train the source head, cloak the probes",
                       description="Per identity, a seeded split puts --probes-per-identity images in the probe "
                                   "set (cloaked) and the rest in the gallery (trains the identification head). "
                                   "Cloaks are computed on the full photo through the source model's alignment "
                                   "warp and stored under OUT/cloaks/eps<E>/.")
    r.add_argument("--images", required=True, help="dataset root folder (image paths in --labels are relative to it)")
    r.add_argument("--labels", required=True, help="labels CSV image,identity[,gender]")
    r.add_argument("--method", default=None, help=_h("method"))
    r.add_argument("--method-params", default=None, metavar="JSON",
                   help="JSON object of further parameters of a plug-in image protection (its own ones)")
    r.add_argument("--source", required=True, help="differentiable source model the cloaks are computed on")
    r.add_argument("--eps", default=None, help=_h("eps", " Comma-separated."))
    r.add_argument("--alpha", type=float, default=None, help=_h("alpha"))
    g = r.add_mutually_exclusive_group()
    g.add_argument("--jpeg-quality", type=int, default=None, help=_h("jpeg_quality"))
    g.add_argument("--png", action="store_true", help="store cloaks losslessly as PNG instead of JPEG")
    for name, typ in (("max_images", int), ("probes_per_identity", int), ("min_gallery", int), ("min_images", int),
                      ("max_identities", int), ("max_gallery", int), ("seed", argtypes.seed), ("max_side", int),
                      ("batch_size", int)):
        r.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=_h(name))
    for name, typ in TRANSFER_FLAGS.items():
        r.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=param_help("protection:bim_cloak", name, " Comma-separated." if typ is str else ""))
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    add_device_flag(r, "gallery embedding, heads and cloaks run there; recorded in run.json")
    r.set_defaults(deid_handler=cmd_run)

    e = sub.add_parser("eval", help="re-detect, re-align and identify stored cloaks with target models",
                       description="Reads one or more 'deid run' folders (one per source model, same split), "
                                   "trains each target model's head on the gallery and writes summary.json "
                                   "(psr[source][target][eps][k]), summary.md and PSR-vs-eps plots.")
    e.add_argument("run_dirs", nargs="+", metavar="DIR", help="'facepriv deid run' output folder(s)")
    e.add_argument("--targets", default=None,
                   help="comma-separated target models (default: the runs' source models, as the deid attack)")
    e.add_argument("--ks", default=paper_ks, help=f"top-k values (default {paper_ks}, the paper's)")
    e.add_argument("--postprocess", default=None, metavar="LIST",
                   help="also identify the stored photos after these post-processings, comma-separated jpeg:Q, "
                        "resize:F, blur:S (e.g. jpeg:95,jpeg:75,jpeg:50,resize:0.5,blur:1.5); copies and results "
                        "go to OUT/post/<label>/ (the cloaks are never written over)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--overwrite", action="store_true", help="replace existing summary.json / summary.md / plots in --out")
    add_device_flag(e, "the targets' embedding and heads run there")
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
