"""``facepriv score-attack``: estimate stored templates from comparison scores alone (score files)."""

from __future__ import annotations

import argparse
import logging
import math

from facepriv.cli import argtypes
from facepriv.errors import InputFileError, ParameterError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  facepriv score-attack --own-scores own_scores.csv --own own_dlib.npz \\
      --victim-scores victim_scores.csv --out estimates.npz
      learn score vector -> embedding on the attacker's own enrolments, estimate each victim

Score files are CSV 'template,query,score': the scores the system gave when the attacker presented
each of its query photos against a stored template (its own enrolments in --own-scores, victims in
--victim-scores). Every template needs a score for every query of the attacker's query set (the
queries of --own-scores, in their order). --own holds the attacker's own embeddings (proxy model),
ids = the template names of --own-scores. The estimates are written as an embeddings file (ids =
victim template names), ready for `facepriv verify` or a reconstruction decoder (docs/score_only.md).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score-attack`` command."""
    p = subparsers.add_parser(
        "score-attack",
        help="score-only attack: estimate victims' templates from the comparison scores of the attacker's own photos",
        description=("Learn a ridge regression from score vectors to embeddings on the attacker's own enrolments "
                     "and apply it to the victims' score vectors (Kim et al., IEEE S&P 2024)."),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--own-scores", required=True, metavar="O.csv", help="scores of the attacker's own enrolments")
    p.add_argument("--own", required=True, metavar="E.npz", help="embeddings of the attacker's own enrolled photos")
    p.add_argument("--victim-scores", required=True, metavar="V.csv", help="scores of the victims' stored templates")
    p.add_argument("--queries", type=argtypes.positive_int, metavar="K",
                   help="use the first K queries of the query set (default: all)")
    p.add_argument("--alpha", type=float, default=1.0, metavar="A", help="ridge penalty (> 0; default 1.0)")
    p.add_argument("--out", required=True, metavar="EST.npz", help="estimated templates (embeddings file)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read and check every input, then fit, estimate and write (nothing written on an error)."""
    from facepriv.attacks.score_only.estimate import RidgeMap
    from facepriv.attacks.score_only.scorefile import read_score_file
    from facepriv.embeddings import EmbeddingSet, load_embeddings, save_embeddings
    from facepriv.fileio import check_not_input, check_writable

    if not math.isfinite(args.alpha) or args.alpha <= 0:
        raise ParameterError(f"--alpha: must be a finite number > 0, got {args.alpha}")
    check_not_input(args.out, [args.own_scores, args.own, args.victim_scores])
    check_writable(args.out, args.overwrite)
    own_t, queries, own_s = read_score_file(args.own_scores)
    if args.queries is not None:
        if args.queries > len(queries):
            raise ParameterError(f"--queries: {args.own_scores} holds {len(queries)} queries, fewer than {args.queries}")
    vic_t, _, vic_s = read_score_file(args.victim_scores, queries)
    k = args.queries or len(queries)
    own = load_embeddings(args.own)
    where = {s: i for i, s in enumerate(own.ids.tolist())}
    missing = [t for t in own_t if t not in where]
    if missing:
        raise InputFileError(args.own, f"has no embedding of {len(missing)} template(s) of {args.own_scores}, "
                                       f"e.g. {missing[0]!r}")
    if len(own_t) < 2:
        raise InputFileError(args.own_scores, "needs scores of at least 2 own enrolments")
    reg = RidgeMap(float(args.alpha)).fit(own_s[:, :k], own.embeddings[[where[t] for t in own_t]])
    est = reg.predict(vic_s[:, :k]).astype("float32")
    names = [str(t) for t in vic_t]
    import numpy as np

    out = EmbeddingSet(est, np.array(names), np.array(names), {}, own.model, None)
    save_embeddings(out, args.out, overwrite=args.overwrite)
    log.info("score-attack: %d victim templates estimated from %d queries (%d own enrolments) -> %s",
             len(names), k, len(own_t), args.out)
    return 0
