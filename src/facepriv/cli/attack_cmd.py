"""``facepriv attack similarity|classifier``: soft-biometric attacks on (protected) templates."""

from __future__ import annotations

import argparse
import logging

from facepriv.cli import argtypes
from facepriv.cli.protect_cmd import add_protection_args, protection_from_flags, protection_params
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
for the similarity attack, accuracy_vs_n.png; none of them is replaced without --overwrite.
Defaults not shown here are the attack's own (`facepriv describe similarity|classifier`). When the
tool applies a keyed protection (PE-MIU), --seed is also its key and is written as "<secret>".
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attacker", required=True, metavar="A.npz", help="attacker's labelled embeddings (unprotected)")
    p.add_argument("--target", required=True, metavar="T.npz", help="target embeddings: unprotected (+ --protection) or already protected")
    p.add_argument("--attribute", help="attribute column to infer (default: the attack's, gender)")
    add_protection_args(p, with_name=True)
    p.add_argument("--split-identities", type=argtypes.open_fraction, metavar="FRACTION",
                   help="same-database run (A and T the same file): share of each class's identities given to the attacker")
    p.add_argument("--balance", action="store_true", help="subsample both sets to equal class sizes (seeded)")
    p.add_argument("--seed", type=argtypes.seed, metavar="S",
                   help="seed of the split, balancing and the protection applied by the tool (its key for a keyed "
                   "protection: then never written); default: the attack's")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")


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
    s.add_argument("--top-n", metavar="N,N,...",
                   help="numbers of best scores to fuse (default: the attack's, 1,5,10,50,100,200,400,600; capped at the gallery size)")
    s.add_argument("--rules", metavar="R,R,...", help="fusion rules among max, mean, log, linear (default: all four)")
    s.add_argument("--comparator", choices=("protection", "cosine"),
                   help="the protection's own comparator (the attack's default) or plain cosine")
    s.add_argument("--decision", choices=("galleries", "vote", "both"),
                   help="per-class galleries (higher fused score wins; the attack's default), majority vote of the top-n, or both")
    s.add_argument("--threads", type=argtypes.positive_int, default=None, metavar="T",
                   help="threads of the PE-MIU comparator (default: the CPUs this process may use)")
    s.set_defaults(handler=run_similarity)
    c = sub.add_parser(
        "classifier",
        help="attribute classifiers (kNN, SVM, logistic regression) as baselines",
        description="Train attribute classifiers on the attacker's (protected) templates and test them on the target's.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(c)
    c.add_argument("--classifier", help="knn, svm_poly, svm_rbf, svm_sigmoid, logreg or all (the attack's default)")
    c.add_argument("--cv", type=argtypes.non_negative_int, metavar="K",
                   help="K-fold cross-validation over attacker+target pooled, identity-grouped folds (default 0: attacker -> target)")
    c.set_defaults(handler=run_classifier)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _int_list(text: str, flag: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ParameterError(f"{flag} {text!r}: expected comma-separated integers", param="top_n") from None
    if not vals:
        raise ParameterError(f"{flag}: no values given", param="top_n")
    return vals


def _attack_params(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, object]:
    """The attack parameters the user gave (flag -> parameter); the rest keep the attack's defaults."""
    params: dict[str, object] = {}
    for dest, param in flags.items():
        v = getattr(args, dest, None)
        if v is None:
            continue
        if dest == "top_n":
            v = _int_list(v, "--top-n")
        elif dest == "rules":
            v = [r.strip() for r in v.split(",") if r.strip()]
            if not v:
                raise ParameterError("--rules: no values given", param="rules")
        params[param] = v
    return params


def _build_attack(name: str, params: dict[str, object]):
    """The registered attack with ``params`` (validated; defaults from its constructor)."""
    from facepriv.registry import create

    return create("attack", name, params)


def _sets(args: argparse.Namespace, attack, outputs: tuple[str, ...]):
    from facepriv.attacks.attribute_report import check_out_dir
    from facepriv.attacks.sets import prepare_sets
    from facepriv.embeddings import load_embeddings
    from facepriv.fileio import same_file
    from facepriv.registry import get_class

    out = check_out_dir(args.out, args.overwrite, outputs)
    for f in (args.attacker, args.target):
        if same_file(out, f):
            raise ParameterError(f"--out {args.out} is the input file {f}; choose an output folder")
    params = protection_params(args)
    if params and not args.protection:
        raise ParameterError("--block-size/--moved-blocks/--param need --protection (e.g. --protection pe_miu)")
    seed = attack.seed
    prot = None
    if args.protection:
        with_seed = "seed" in get_class("protection", args.protection).param_names()
        prot = protection_from_flags(args.protection, args, seed if with_seed else None)
    attacker = load_embeddings(args.attacker)
    same = same_file(args.attacker, args.target)
    if same and args.split_identities is None:
        raise ParameterError("attacker and target are the same file: give --split-identities FRACTION for identity-disjoint parts")
    target = attacker if same else load_embeddings(args.target)
    try:
        gallery, probes = prepare_sets(
            attacker, target, attack.attribute, prot, seed=seed,
            split_fraction=args.split_identities, balance_classes=args.balance,
        )
    except ParameterError as exc:  # a problem of the data: name the file(s)
        files = str(args.attacker) if same else f"{args.attacker}, {args.target}"
        raise ParameterError(f"{files}: {exc}", param=exc.param) from None
    # with a keyed protection the seed is its key (the protection records it as "<secret>"): never written
    seed_is_key = ((gallery.protection or {}).get("params") or {}).get("seed") == "<secret>"
    info = {
        "attacker_file": str(args.attacker),
        "target_file": str(args.target),
        "same_database": same,
        "split_identities": args.split_identities,
        "balanced": bool(args.balance),
        "seed": "<secret>" if seed_is_key else seed,
        "protection": gallery.protection or {"name": "unprotected"},
        "attacker_size": len(gallery),
        "attacker_identities": int(len(set(gallery.identity.tolist()))),
        "target_identities": int(len(set(probes.identity.tolist()))),
        "model": probes.model or gallery.model,
    }
    if seed_is_key:
        info["seed_note"] = "the seed also keyed the protection applied by the tool, so it is not recorded"
    return gallery, probes, info


def _fit(attack, gallery, args: argparse.Namespace):
    try:
        return attack.fit(gallery)
    except ParameterError as exc:
        raise ParameterError(f"{args.attacker}: {exc}", param=exc.param) from None


SIMILARITY_FLAGS = {"attribute": "attribute", "top_n": "top_n", "rules": "rules", "comparator": "comparator",
                    "decision": "decision", "seed": "seed"}
CLASSIFIER_FLAGS = {"attribute": "attribute", "classifier": "classifier", "cv": "cv", "seed": "seed"}


def run_similarity(args: argparse.Namespace) -> int:
    """Handler of ``facepriv attack similarity``."""
    from facepriv.attacks.attribute_report import SIMILARITY_OUTPUTS, write_similarity_report
    from facepriv.protections.base import comparator_for

    attack = _build_attack("similarity", _attack_params(args, SIMILARITY_FLAGS))
    gallery, probes, info = _sets(args, attack, SIMILARITY_OUTPUTS)
    attack = _fit(attack, gallery, args)
    scores = None
    if attack.comparator == "protection":
        comp = comparator_for(gallery)
        if hasattr(comp, "threads"):  # PE-MIU's compiled comparator can use several threads
            comp.threads = args.threads or 0  # 0: the CPUs this process may use
        # prepare_sets returned labelled rows only, so these scores match evaluate's probes
        scores = comp.pairwise(probes.embeddings, attack.gallery_.embeddings)
    try:
        res = attack.evaluate(probes, scores=scores)
    except ParameterError as exc:
        raise ParameterError(f"{args.target}: {exc}", param=exc.param) from None
    s = write_similarity_report(res, args.out, info, overwrite=args.overwrite)
    b = s["best"]
    print(f"similarity attack on {s['n_probes']} probes ({info['protection']['name']}): best {100 * b['accuracy']:.1f}% "
          f"[{100 * b['ci_low']:.1f}, {100 * b['ci_high']:.1f}] ({b['rule']}, n={b['n']}, {b['decision']}); "
          f"chance {100 * s['chance']:.1f}%; wrote {args.out}")
    return 0


def run_classifier(args: argparse.Namespace) -> int:
    """Handler of ``facepriv attack classifier``."""
    from facepriv.attacks.attribute_report import CLASSIFIER_OUTPUTS, write_classifier_report

    attack = _build_attack("classifier", _attack_params(args, CLASSIFIER_FLAGS))
    gallery, probes, info = _sets(args, attack, CLASSIFIER_OUTPUTS)
    attack = _fit(attack, gallery, args)
    try:
        res = attack.evaluate(probes)
    except ParameterError as exc:
        raise ParameterError(f"{args.target}: {exc}", param=exc.param) from None
    s = write_classifier_report(res, args.out, info, overwrite=args.overwrite)
    parts = ", ".join(f"{r['classifier']} {100 * r['accuracy']:.1f}%" for r in s["results"])
    print(f"classifiers on {s['n_probes']} probes ({info['protection']['name']}): {parts}; "
          f"chance {100 * s['chance']:.1f}%; wrote {args.out}")
    return 0
