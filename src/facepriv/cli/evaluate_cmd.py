"""``facepriv unlinkability`` and ``facepriv identify``: ISO/IEC 30136 / 19795-1 on embeddings files.

Both read embeddings ``.npz`` files made by any software (format: docs/embedding.md), score them
with the comparator of the protection the files record (cosine when none), and write
``summary.json`` plus a PNG into ``--out``. Every input is read and checked before anything is
written; a bad input ends with one line naming the file and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.cli import argtypes
from facepriv.errors import InputFileError, ParameterError
from facepriv.metrics import identification as _ident
from facepriv.metrics import unlinkability as _unlink

UNLINK_EPILOG = """\
examples:
  facepriv unlinkability key1.npz key2.npz --out unlink/
      the same subjects' templates protected under two keys (e.g. `facepriv protect ... --seed`
      twice); mated = same subject, different samples; non-mated = different subjects
  facepriv unlinkability key1.npz key2.npz --omega 0.1 --bins 50 --out unlink/ --overwrite

Writes unlink/summary.json (Dsys, D<->(s) per bin, densities) and unlink/unlinkability.png.
Dsys: 0 = unlinkable, 1 = fully linkable (Gomez-Barrero et al., IEEE TIFS 2018; docs/iso30136.md).
"""

IDENTIFY_EPILOG = """\
examples:
  facepriv identify celeba_dlib.npz --out ident/
      one file: the first sample of each subject is enrolled, the others are probes
  facepriv identify gallery.npz probes.npz --open-set strangers.npz --out ident/
      closed set (rank-k, CMC) and open set (DIR at FPIR 1 % / 10 %); strangers are not enrolled

Writes ident/summary.json and ident/cmc.png. Ranks: rank-1 = the probe's subject scores best
(ties count for the system). Search is exact (FAISS flat index for cosine, the protection's own
comparator otherwise; docs/iso30136.md).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``unlinkability`` and ``identify`` commands."""
    p = subparsers.add_parser(
        "unlinkability", help="ISO/IEC 30136 unlinkability (Dsys, D<->(s)) of templates protected under two keys",
        description="Mated and non-mated scores between two files of the same subjects protected under two "
                    "different keys; local linkability D<->(s) and global Dsys with their figure.",
        epilog=UNLINK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("key1", metavar="A.npz", help="templates protected under the first key")
    p.add_argument("key2", metavar="B.npz", help="the same subjects' templates protected under a second key")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for summary.json and unlinkability.png")
    p.add_argument("--omega", type=_positive_float, default=_unlink.OMEGA, metavar="W",
                   help=f"prior ratio P(mated)/P(non-mated) (default {_unlink.OMEGA:g})")
    p.add_argument("--bins", type=argtypes.positive_int, default=None, metavar="N",
                   help="histogram bins (default min(n_mated/10, 100))")
    p.add_argument("--max-pairs", type=argtypes.positive_int, default=_unlink.MAX_PAIRS, metavar="N",
                   help=f"at most N mated and N non-mated pairs, drawn with --seed (default {_unlink.MAX_PAIRS})")
    p.add_argument("--seed", type=argtypes.seed, default=0, metavar="S", help="seed of the pair sampling (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=run_unlinkability)

    q = subparsers.add_parser(
        "identify", help="1:N identification (rank-k, CMC, DIR at FPIR) of embeddings files, exact search",
        description="Closed-set rank-k identification rates and CMC, and with --open-set the DIR at FPIR, "
                    "each file scored with the comparator of its recorded protection.",
        epilog=IDENTIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("gallery", metavar="GALLERY.npz", help="enrolled templates (first sample per subject is used)")
    q.add_argument("probes", nargs="?", metavar="PROBES.npz",
                   help="probes of enrolled subjects (default: the gallery file's other samples)")
    q.add_argument("--open-set", metavar="NONMATED.npz", help="probes of subjects that are not enrolled (FPIR)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for summary.json and cmc.png")
    q.add_argument("--ranks", type=_int_list, default=list(_ident.RANKS), metavar="K,K",
                   help=f"ranks of the reported rates (default {','.join(map(str, _ident.RANKS))})")
    q.add_argument("--max-rank", type=argtypes.positive_int, default=_ident.MAX_RANK, metavar="R",
                   help=f"CMC length (default {_ident.MAX_RANK})")
    q.add_argument("--fpir", type=_fraction_list, default=list(_ident.FPIRS), metavar="F,F",
                   help=f"FPIR targets of the open set (default {','.join(f'{f:g}' for f in _ident.FPIRS)})")
    q.add_argument("--chunk", type=argtypes.positive_int, default=_ident.CHUNK, metavar="N",
                   help=f"probes searched at once (default {_ident.CHUNK})")
    q.add_argument("--overwrite", action="store_true", help="replace existing output files")
    q.set_defaults(handler=run_identify)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return v


def _int_list(text: str) -> list[int]:
    parts = [t for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")
    return [argtypes.positive_int(t.strip()) for t in parts]


def _fraction_list(text: str) -> list[float]:
    parts = [t for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}")
    return [argtypes.open_fraction(t.strip()) for t in parts]


def _outputs(out: str, names: tuple[str, ...], inputs: list[Path], overwrite: bool) -> list[Path]:
    """The output files in ``out``, refused before any work (exists, folder is a file, is an input)."""
    from facepriv.fileio import check_writable, same_file

    d = Path(out)
    if d.exists() and not d.is_dir():
        raise InputFileError(d, "--out must be a folder, but this is a file")
    paths = [d / n for n in names]
    for p in paths:
        if any(same_file(p, i) for i in inputs):
            raise ParameterError(f"--out {d}: would overwrite the input {p}")
        check_writable(p, overwrite)
    return paths


def _load(path: Path) -> tuple[Any, Any]:
    """(EmbeddingSet, comparator of its recorded protection); errors name the file."""
    from facepriv.embeddings import load_embeddings
    from facepriv.errors import FacePrivError
    from facepriv.protections.base import comparator_for

    es = load_embeddings(path)
    try:
        comp = comparator_for(es)
        # a dimension the recorded protection cannot hold (e.g. PE-MIU blocks not dividing D) fails here, named
        comp.paired(es.embeddings[:1], es.embeddings[:1])
    except FacePrivError as exc:
        raise InputFileError(path, f"cannot be scored with the comparator of its recorded protection: {exc}") from None
    return es, comp


def _same_system(ref: Any, ref_path: Path, es: Any, path: Path, same_params: bool = True) -> None:
    """``es`` must have ``ref``'s dimension and protection (public parameters too, if asked)."""
    if es.dim != ref.dim:
        raise InputFileError(path, f"templates have dimension {es.dim} but {ref_path.name} has {ref.dim}")
    a, b = ref.protection or {"name": "unprotected"}, es.protection or {"name": "unprotected"}
    if a.get("name") != b.get("name") or (same_params and a.get("params") != b.get("params")):
        raise InputFileError(path, f"records protection {b.get('name')!r} {b.get('params', {})} but "
                                   f"{ref_path.name} records {a.get('name')!r} {a.get('params', {})}")


def _protection_text(es: Any) -> str:
    rec = es.protection
    if not rec:
        return "unprotected"
    params = " ".join(f"{k}={v}" for k, v in sorted(rec.get("params", {}).items()) if v not in ("<secret>", None))
    return f"{rec['name']} {params}".strip()


def _cross_pairs(a: Any, b: Any, mated: bool, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (row of A, row of B) of the same (``mated``, different sample ids) or of different subjects."""
    ia, ib = a.identity.astype(str), b.identity.astype(str)
    if len(ia) * len(ib) <= 20_000_000:
        want = ia[:, None] == ib[None, :]
        want = want & (a.ids.astype(str)[:, None] != b.ids.astype(str)[None, :]) if mated else ~want
        i, j = np.nonzero(want)
    elif mated:
        by_b: dict[str, np.ndarray] = {}
        for k, s in enumerate(ib):
            by_b.setdefault(s, []).append(k)  # type: ignore[attr-defined]
        i_l, j_l = [], []
        for k, s in enumerate(ia):
            js = np.asarray(by_b.get(s, []), dtype=np.int64)
            js = js[b.ids[js].astype(str) != str(a.ids[k])]
            i_l.append(np.full(js.size, k)), j_l.append(js)
        i, j = np.concatenate(i_l), np.concatenate(j_l)
    else:  # draw candidates; no len(A) x len(B) matrix
        c = rng.integers(0, [len(ia), len(ib)], size=(4 * max_pairs, 2))
        c = np.unique(c[ia[c[:, 0]] != ib[c[:, 1]]], axis=0)
        i, j = c[:, 0], c[:, 1]
    if i.size > max_pairs:
        pick = np.sort(rng.choice(i.size, size=max_pairs, replace=False))
        i, j = i[pick], j[pick]
    return i.astype(np.int64), j.astype(np.int64)


def run_unlinkability(args: argparse.Namespace) -> int:
    """Handler of ``facepriv unlinkability``."""
    from facepriv.fileio import sha256_file, write_json_atomic
    from facepriv.metrics.iso_plots import plot_unlinkability
    from facepriv.metrics.unlinkability import linkability

    a_path, b_path = Path(args.key1), Path(args.key2)
    summary_p, fig_p = _outputs(args.out, ("summary.json", "unlinkability.png"), [a_path, b_path], args.overwrite)
    a, comp = _load(a_path)
    b, _ = _load(b_path)
    _same_system(a, a_path, b, b_path, same_params=False)  # secrets are masked; public params may differ only by key
    sa, sb = set(a.identity.tolist()), set(b.identity.tolist())
    if sa != sb:
        only_a, only_b = sorted(sa - sb), sorted(sb - sa)
        raise InputFileError(b_path, f"subjects differ from {a_path.name}: {len(only_a)} only there "
                                     f"(e.g. {only_a[:3]}), {len(only_b)} only here (e.g. {only_b[:3]}); "
                                     "both files must hold the same subjects")
    if len(sa) < 2:
        raise InputFileError(a_path, f"holds {len(sa)} subject; unlinkability needs non-mated pairs (>= 2 subjects)")
    rng = np.random.default_rng(args.seed)
    pairs = {m: _cross_pairs(a, b, m, args.max_pairs, rng) for m in (True, False)}
    if pairs[True][0].size == 0:
        raise InputFileError(b_path, "no mated pairs: no subject has a sample here that differs from its samples in "
                                     f"{a_path.name} (ids must differ)")
    scores = {m: np.asarray(comp.paired(a.embeddings[i], b.embeddings[j]), dtype=np.float64) for m, (i, j) in pairs.items()}
    link = linkability(scores[True], scores[False], args.omega, args.bins)
    print(f"{a_path.name} vs {b_path.name} ({_protection_text(a)}): {scores[True].size} mated, "
          f"{scores[False].size} non-mated pairs; Dsys = {link.dsys:.4f} (omega {args.omega:g}, {link.local.size} bins)")
    out = {
        "files": [{"file": str(p), "sha256": sha256_file(p), "n_templates": len(e), "protection": e.protection}
                  for p, e in ((a_path, a), (b_path, b))],
        "comparator": getattr(comp, "name", type(comp).__name__),
        **link.summary(),
        "mated_mean": float(scores[True].mean()), "nonmated_mean": float(scores[False].mean()),
        "bin_edges": link.edges.tolist(), "mated_density": link.mated_density.tolist(),
        "nonmated_density": link.nonmated_density.tolist(), "local_linkability": link.local.tolist(),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    plot_unlinkability(link, fig_p, title=f"{a_path.name} vs {b_path.name}", overwrite=args.overwrite)
    write_json_atomic(summary_p, out)
    print(f"results: {summary_p}\nfigure: {fig_p}")
    return 0


def run_identify(args: argparse.Namespace) -> int:
    """Handler of ``facepriv identify``."""
    from facepriv.fileio import sha256_file, write_json_atomic
    from facepriv.metrics.identification import enrolment_split, identify
    from facepriv.metrics.iso_plots import plot_cmc
    from facepriv.search import comparator_metric

    g_path = Path(args.gallery)
    p_path = Path(args.probes) if args.probes else None
    o_path = Path(args.open_set) if args.open_set else None
    inputs = [x for x in (g_path, p_path, o_path) if x is not None]
    summary_p, fig_p = _outputs(args.out, ("summary.json", "cmc.png"), inputs, args.overwrite)
    gal, comp = _load(g_path)
    g_rows, rest = enrolment_split(gal.identity)
    if g_rows.size < 2:
        raise InputFileError(g_path, f"holds {g_rows.size} subject; identification needs at least 2 enrolled subjects")
    enrolled = set(gal.identity[g_rows].tolist())
    if p_path is None:
        probes = gal.subset(rest)
        if len(probes) == 0:
            raise InputFileError(g_path, "every subject has a single sample: no probes (give PROBES.npz)")
    else:
        probes, _ = _load(p_path)
        _same_system(gal, g_path, probes, p_path)
        outside = sorted(set(probes.identity.tolist()) - enrolled)
        if outside:
            raise InputFileError(p_path, f"{len(outside)} probe subject(s) are not in the gallery {g_path.name}, "
                                         f"e.g. {outside[:3]} (give them with --open-set)")
    nonmated = None
    if o_path is not None:
        nm, _ = _load(o_path)
        _same_system(gal, g_path, nm, o_path)
        inside = sorted(set(nm.identity.tolist()) & enrolled)
        if inside:
            raise InputFileError(o_path, f"{len(inside)} subject(s) are enrolled in {g_path.name}, e.g. {inside[:3]}; "
                                         "open-set probes must be of non-enrolled subjects")
        nonmated = nm.embeddings
    res = identify(comp, gal.embeddings[g_rows], gal.identity[g_rows], probes.embeddings, probes.identity,
                   nonmated, ks=args.ranks, max_rank=args.max_rank, fpirs=args.fpir, chunk=args.chunk)
    head = ", ".join(f"rank-{k} {100 * float(v):.2f}%" for k, v in res.rank_k.items())
    print(f"{g_path.name} ({_protection_text(gal)}, {comparator_metric(comp)} search): {res.n_gallery} enrolled, "
          f"{res.n_mated} mated probes; {head}")
    for f, (t, d) in res.dir.items():
        print(f"  open set ({res.n_nonmated} non-mated probes): DIR {100 * float(d):.2f}% at FPIR {100 * f:g}% "
              f"(threshold {t:.6g})")
    out = {
        "files": [{"file": str(p), "sha256": sha256_file(p)} for p in inputs],
        "protection": gal.protection, "comparator": getattr(comp, "name", type(comp).__name__),
        "search": comparator_metric(comp),
        "protocol": "gallery = first sample per subject of GALLERY; probes = PROBES (or the gallery file's other samples)",
        **res.to_dict(),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    plot_cmc({_protection_text(gal): res.cmc.tolist()}, fig_p, title=f"CMC: {g_path.name}", overwrite=args.overwrite)
    write_json_atomic(summary_p, out)
    print(f"results: {summary_p}\nfigure: {fig_p}")
    return 0
