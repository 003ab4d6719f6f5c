"""``facepriv attack similarity|classifier``: soft-biometric attacks on (protected) templates."""

from __future__ import annotations

import argparse
import logging

from facepriv.cli.protect_cmd import add_protection_args, build_protection, protection_params
from facepriv.errors import ParameterError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  facepriv attack similarity --attacker celeba_dlib.npz --target celeba_dlib.npz \\
      --split-identities 0.5 --balance --attribute gender --protection pe_miu --block-size 32 \\
      --seed 0 --out runs/sim_pemiu32
      same database, identity-disjoint halves, gender-balanced; the tool protects both halves
      as the system would (PE-MIU, block 32) and attacks with PE-MIU's comparator
  facepriv attack similarity --attacker lfw_dlib.npz --target protected_celeba.npz --out runs/x
      cross-database; the target is already protected: the attacker protects its own database
      with the protection recorded in the target file
  facepriv attack classifier --attacker A.npz --target T.npz --protection pe_miu --block-size 16 --out runs/c
      kNN / SVM / logistic-regression baselines trained on the attacker's protected templates

Rows whose attribute is empty are excluded (the count is logged). Outputs in DIR: summary.json
(accuracy per rule/n/decision with 95% Wilson intervals, best entry, chance level), probes.csv and,
for the similarity attack, accuracy_vs_n.png.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attacker", required=True, metavar="A.npz", help="attacker's labelled embeddings (unprotected)")
    p.add_argument("--target", required=True, metavar="T.npz", help="target embeddings: unprotected (+ --protection) or already protected")
    p.add_argument("--attribute", default="gender", help="attribute column to infer (default gender)")
    add_protection_args(p, with_name=True)
    p.add_argument("--split-identities", type=float, metavar="FRACTION",
                   help="same-database run (A and T the same file): share of each class's identities given to the attacker")
    p.add_argument("--balance", action="store_true", help="subsample both sets to equal class sizes (seeded)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the split, balancing and the protection applied by the tool (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing summary in DIR")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``attack`` command group (similarity, classifier)."""
    p = subparsers.add_parser(
        "attack",
        help="soft-biometric attacks on protected templates (similarity attack, classifier baselines)",
        description="Infer a soft-biometric attribute (gender) from protected templates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="attack", metavar="ATTACK")
    s = sub.add_parser(
        "similarity",
        help="similarity attack of Osorio-Roig et al. (TBIOM 2022)",
        description=(
            "Compare every protected target probe with the attacker's protected labelled database, fuse "
            "the top-n scores per class gallery (max, mean, log, linear) or vote, and report accuracy."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(s)
    s.add_argument("--top-n", default="1,5,10,50,100,200,400,600", metavar="N,N,...",
                   help="numbers of best scores to fuse (default 1,5,10,50,100,200,400,600; capped at the gallery size)")
    s.add_argument("--rules", default="max,mean,log,linear", metavar="R,R,...", help="fusion rules (default all four)")
    s.add_argument("--comparator", choices=("protection", "cosine"), default="protection",
                   help="the protection's own comparator (default) or plain cosine")
    s.add_argument("--decision", choices=("galleries", "vote", "both"), default="both",
                   help="per-class galleries (higher fused score wins), majority vote of the top-n, or both (default)")
    s.add_argument("--threads", type=int, default=1, metavar="T", help="threads of the PE-MIU comparator (default 1)")
    s.set_defaults(handler=run_similarity)
    c = sub.add_parser(
        "classifier",
        help="attribute classifiers (kNN, SVM, logistic regression) as baselines",
        description="Train attribute classifiers on the attacker's (protected) templates and test them on the target's.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(c)
    c.add_argument("--classifier", default="all", help="knn, svm_poly, svm_rbf, svm_sigmoid, logreg or all (default)")
    c.add_argument("--cv", type=int, default=0, metavar="K",
                   help="K-fold cross-validation over attacker+target pooled, identity-grouped folds (default 0: attacker -> target)")
    c.set_defaults(handler=run_classifier)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _int_list(text: str, flag: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ParameterError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not vals:
        raise ParameterError(f"{flag}: no values given")
    return vals


def _sets(args: argparse.Namespace):
    from pathlib import Path

    from facepriv.attacks.attribute_report import check_out_dir
    from facepriv.attacks.sets import prepare_sets
    from facepriv.embeddings import load_embeddings

    check_out_dir(args.out, args.overwrite)
    params = protection_params(args)
    if params and not args.protection:
        params.pop("seed", None)
        if params:
            raise ParameterError("--block-size/--moved-blocks/--param need --protection (e.g. --protection pe_miu)")
    prot = build_protection(args.protection, params) if args.protection else None
    attacker = load_embeddings(args.attacker)
    same = Path(args.attacker).resolve() == Path(args.target).resolve()
    if same and args.split_identities is None:
        raise ParameterError("attacker and target are the same file: give --split-identities FRACTION for identity-disjoint parts")
    target = attacker if same else load_embeddings(args.target)
    gallery, probes = prepare_sets(
        attacker, target, args.attribute, prot, seed=args.seed,
        split_fraction=args.split_identities, balance_classes=args.balance,
    )
    info = {
        "attacker_file": str(args.attacker),
        "target_file": str(args.target),
        "same_database": same,
        "split_identities": args.split_identities,
        "balanced": bool(args.balance),
        "seed": args.seed,
        "protection": gallery.protection or {"name": "unprotected"},
        "attacker_size": len(gallery),
        "attacker_identities": int(len(set(gallery.identity.tolist()))),
        "target_identities": int(len(set(probes.identity.tolist()))),
        "model": probes.model or gallery.model,
    }
    return gallery, probes, info


def run_similarity(args: argparse.Namespace) -> int:
    """Handler of ``facepriv attack similarity``."""
    from facepriv.attacks.attribute_report import write_similarity_report
    from facepriv.attacks.soft_biometric import SimilarityAttack
    from facepriv.protections.base import comparator_for

    top_n = _int_list(args.top_n, "--top-n")
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    gallery, probes, info = _sets(args)
    attack = SimilarityAttack(attribute=args.attribute, top_n=top_n, rules=rules, comparator=args.comparator,
                              decision=args.decision, seed=args.seed).fit(gallery)
    scores = None
    if args.comparator == "protection":
        comp = comparator_for(gallery)
        if hasattr(comp, "threads"):  # PE-MIU's compiled comparator can use several threads
            comp.threads = max(1, args.threads)
        # prepare_sets returned labelled rows only, so these scores match evaluate's probes
        scores = comp.pairwise(probes.embeddings, attack.gallery_.embeddings)
    res = attack.evaluate(probes, scores=scores)
    s = write_similarity_report(res, args.out, info, overwrite=args.overwrite)
    b = s["best"]
    print(f"similarity attack on {s['n_probes']} probes ({info['protection']['name']}): best {100 * b['accuracy']:.1f}% "
          f"[{100 * b['ci_low']:.1f}, {100 * b['ci_high']:.1f}] ({b['rule']}, n={b['n']}, {b['decision']}); "
          f"chance {100 * s['chance']:.1f}%; wrote {args.out}")
    return 0


def run_classifier(args: argparse.Namespace) -> int:
    """Handler of ``facepriv attack classifier``."""
    from facepriv.attacks.attribute_report import write_classifier_report
    from facepriv.attacks.classifiers import ClassifierAttack

    gallery, probes, info = _sets(args)
    attack = ClassifierAttack(attribute=args.attribute, classifier=args.classifier, cv=args.cv, seed=args.seed)
    attack.validate_params()
    res = attack.fit(gallery).evaluate(probes)
    s = write_classifier_report(res, args.out, info, overwrite=args.overwrite)
    parts = ", ".join(f"{r['classifier']} {100 * r['accuracy']:.1f}%" for r in s["results"])
    print(f"classifiers on {s['n_probes']} probes ({info['protection']['name']}): {parts}; "
          f"chance {100 * s['chance']:.1f}%; wrote {args.out}")
    return 0
