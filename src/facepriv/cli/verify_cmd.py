"""``facepriv verify``: biometric verification performance of embeddings files (EER, FNMR@FMR, DET)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from facepriv.cli import argtypes
from facepriv.errors import ParameterError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  facepriv verify celeba_dlib.npz --out celeba_dlib.verify.json --det celeba_dlib.det.png
      all pairs for EER / FNMR@FMR / AUC, plus 10-fold accuracy on a generated
      identity-disjoint protocol (seed 0)
  facepriv verify lfw_dlib.npz --pairs lfw-meta/pairs.txt --out lfw.verify.json
      the LFW View 2 protocol: metrics on its 6,000 pairs and 10-fold accuracy
  facepriv verify celeba_dlib.npz celeba_pemiu16.npz --det cmp.png --out cmp.json
      unprotected vs. protected: one DET curve per file on one plot

Protected files are scored with the comparator of the protection they record (e.g. PE-MIU's block
assignment), unprotected ones with cosine similarity. Accept when score >= threshold. Rules: EER
interval of FVC2000; operating point = lowest threshold with FMR <= target; 10-fold threshold =
best accuracy on the other 9 folds (docs/verification.md).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``verify`` command."""
    p = subparsers.add_parser(
        "verify",
        help="verification metrics (EER, FNMR@FMR, AUC, 10-fold accuracy, DET plot) of embeddings files",
        description=(
            "Compare templates of one or more embeddings .npz files and report EER with its interval, "
            "FNMR and thresholds at FMR 0.1%%/1%%/10%%, ROC AUC and LFW-style 10-fold accuracy; "
            "optionally draw DET curves."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("embeddings", nargs="+", metavar="E.npz", help="embeddings file(s)")
    p.add_argument("--out", required=True, metavar="V.json",
                   help="JSON results (one object; with several input files {\"systems\": [...]})")
    p.add_argument("--pairs", metavar="FILE",
                   help="verification protocol: LFW pairs.txt, or a CSV 'fold,id1,id2,genuine' "
                   "(e.g. from --save-protocol); default: all pairs + a generated protocol for k-fold")
    p.add_argument("--drop-missing", action="store_true",
                   help="with --pairs: leave out pairs whose images are not in the file (default: error)")
    p.add_argument("--protocol-seed", type=argtypes.seed, default=0, metavar="S",
                   help="seed of the generated identity-disjoint k-fold protocol (default 0)")
    p.add_argument("--folds", type=int, default=10, metavar="K", help="folds of the generated protocol (default 10)")
    p.add_argument("--pairs-per-fold", type=argtypes.positive_int, default=300, metavar="N",
                   help="genuine and impostor pairs per generated fold, N of each (default 300, as LFW)")
    p.add_argument("--save-protocol", metavar="P.csv", help="write the generated protocol as CSV for reuse")
    p.add_argument("--det", metavar="DET.png", help="draw the DET curve(s) of all input files to this PNG")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="curve label, once per input file (default: file name and protection)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=run)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _evaluate(
    path: Path, args: argparse.Namespace, lfw_like: Any, protocols: dict[Any, Any]
) -> tuple[dict[str, Any], Any]:
    """Metrics of one file: (JSON dict, ProtectedUtility)."""
    from facepriv.embeddings import load_embeddings
    from facepriv.errors import FacePrivError, InputFileError
    from facepriv.fileio import sha256_file
    from facepriv.metrics.protocol import PairsProtocol, protocol_from_lfw_pairs
    from facepriv.metrics.utility import protected_utility
    from facepriv.protections.base import comparator_for

    es = load_embeddings(path)
    try:
        comp = comparator_for(es)
    except FacePrivError as exc:
        raise InputFileError(path, f"cannot build the comparator of its recorded protection: {exc}") from None
    info: dict[str, Any] = {
        "file": str(path),
        "sha256": sha256_file(path),
        "model": es.model,
        "protection": es.protection,
        "comparator": getattr(comp, "name", type(comp).__name__),
        "n_templates": len(es),
        "n_identities": int(len(set(es.identity.tolist()))),
    }
    pairs = None
    if lfw_like is not None:
        if isinstance(lfw_like, PairsProtocol):
            pairs, kind = lfw_like, "pairs-csv"
            missing = {str(s) for s in (*pairs.id1, *pairs.id2)} - set(es.ids.tolist())
            if missing:
                raise ParameterError(
                    f"{path}: {len(missing)} sample id(s) of the protocol {args.pairs} are not in this file, "
                    f"e.g. {sorted(missing)[:3]}"
                )
        else:
            pairs, kind = protocol_from_lfw_pairs(lfw_like, es.ids, str(args.pairs), args.drop_missing), "lfw-pairs"
        info["protocol"] = kind
        info["protocol_source"] = str(args.pairs)
        info["protocol_counts"] = pairs.counts()
    else:
        info["protocol"] = "all-pairs"
    rows = (tuple(es.ids.tolist()), tuple(es.identity.tolist()))  # same rows -> same generated protocol
    try:
        res = protected_utility(es, comp, seed=args.protocol_seed, folds=args.folds, pairs_per_fold=args.pairs_per_fold,
                                pairs=pairs, kfold_protocol=protocols.get(rows))
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}", param=exc.param) from None
    if res.kfold_skipped:
        log.warning("%s: no k-fold accuracy: %s", path, res.kfold_skipped)
        info["kfold_skipped"] = res.kfold_skipped
    if pairs is None and res.protocol is not None:
        protocols[rows] = res.protocol
        info["kfold_protocol"] = res.protocol.source
        info["kfold_protocol_counts"] = res.protocol.counts()
    report = res.report
    info.update(report.to_dict())
    info["fmr_reached_at_fmr"] = {repr(float(k)): v for k, v in report.fmr_at_fmr.items()}
    if res.kfold is not None:
        info["kfold"] = res.kfold.to_dict()
    return info, res


def _protection_text(record: dict[str, Any] | None) -> str:
    """``pe_miu block_size=16`` from a protection record (public parameters only)."""
    if not record:
        return "unprotected"
    params = " ".join(f"{k}={v}" for k, v in sorted(dict(record.get("params", {})).items()) if v not in ("<secret>", None))
    return f"{record['name']} {params}".strip()


def _summary(info: dict[str, Any], report: Any, kfold: Any) -> str:
    prot = _protection_text(info["protection"])
    lines = [
        f"{info['file']}: model {info['model'] or '?'}, protection {prot} ({info['comparator']} comparator), "
        f"{info['n_templates']} templates of {info['n_identities']} identities",
        f"  {info['protocol']}: {report.n_genuine} genuine, {report.n_impostor} impostor comparisons; "
        f"mean score genuine {report.genuine_mean:.4f}, impostor {report.impostor_mean:.4f}",
        f"  EER {_pct(report.eer)} [{_pct(report.eer_low)}, {_pct(report.eer_high)}] at threshold "
        f"{report.eer_threshold:.6g}; ROC AUC {report.auc:.4f}",
        "  FMR target   FNMR      threshold   (FMR reached)",
    ]
    for t, fnmr in report.fnmr_at_fmr.items():
        lines.append(f"  {100 * t:>9g}%   {_pct(fnmr):>8}  {report.threshold_at_fmr[t]:<11.6g} ({_pct(report.fmr_at_fmr[t])})")
    if kfold is not None:
        where = "protocol pairs" if info["protocol"] != "all-pairs" else info.get("kfold_protocol", "")
        lines.append(f"  {len(kfold.accuracies)}-fold accuracy {_pct(kfold.mean)} +- {_pct(kfold.std)} ({where})")
    else:
        lines.append("  k-fold accuracy: skipped (" + info.get("kfold_skipped", "") + ")")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv verify``."""
    from facepriv.errors import InputFileError
    from facepriv.fileio import check_writable, same_file, write_json_atomic
    from facepriv.metrics.plots import DetCurve, plot_det
    from facepriv.metrics.protocol import read_protocol_csv, write_protocol_csv

    inputs = [Path(x) for x in args.embeddings]
    for p in inputs:
        if not p.is_file():
            raise InputFileError(p, "no such file")
    outs = [Path(args.out)] + [Path(x) for x in (args.det, args.save_protocol) if x]
    ins = [*inputs, *([Path(args.pairs)] if args.pairs else [])]
    if any(same_file(a, b) for i, a in enumerate(outs) for b in [*outs[i + 1:], *ins]):
        raise ParameterError("--out, --det, --save-protocol and the input files must all be different paths")
    for o in outs:  # refuse before any heavy work
        check_writable(o, args.overwrite)
    if args.label and len(args.label) != len(inputs):
        raise ParameterError(f"--label given {len(args.label)} time(s) for {len(inputs)} input file(s); give one per file")
    if args.pairs and args.save_protocol:
        raise ParameterError("--save-protocol writes the generated protocol; it cannot be combined with --pairs")
    if args.folds < 2 or args.pairs_per_fold < 1:
        raise ParameterError(f"--folds must be >= 2 and --pairs-per-fold >= 1, got {args.folds} and {args.pairs_per_fold}")

    protocol_in = None
    if args.pairs:
        if Path(args.pairs).suffix.lower() == ".csv":
            protocol_in = read_protocol_csv(args.pairs)
        else:
            from facepriv.datasets.lfw import read_lfw_pairs

            protocol_in = read_lfw_pairs(args.pairs)

    results, curves = [], []
    protocols: dict[Any, Any] = {}  # generated protocols by file rows, reused across files
    generated = None
    for k, path in enumerate(inputs):  # every file is read and scored before anything is written
        info, res = _evaluate(path, args, protocol_in, protocols)
        results.append(info)
        print(_summary(info, res.report, res.kfold))
        if k == 0 and protocol_in is None:
            generated = res.protocol
        if args.det:
            label = args.label[k] if args.label else f"{path.stem} ({_protection_text(info['protection'])})"
            curves.append(DetCurve(label, res.scores.genuine, res.scores.impostor))
    if args.save_protocol:
        if generated is None:
            raise ParameterError(f"--save-protocol {args.save_protocol}: no protocol was generated "
                                 f"({results[0].get('kfold_skipped', 'k-fold skipped')})")
        write_protocol_csv(generated, args.save_protocol, args.overwrite)
    if args.det:
        title = f"DET: {curves[0].label}" if len(curves) == 1 else f"DET curves of {len(curves)} systems"
        plot_det(curves, args.det, title=title, overwrite=args.overwrite)
        print(f"DET plot: {args.det}")
    write_json_atomic(args.out, results[0] if len(results) == 1 else {"systems": results})
    print(f"results: {args.out}")
    return 0
