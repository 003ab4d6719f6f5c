"""``facepriv embed``: photos in a folder -> detected, aligned, embedded -> embeddings ``.npz``."""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

from facepriv.cli import argtypes
from facepriv.cli.device_flags import add_device_flag, resolve_cli_device
from facepriv.errors import InputFileError, ParameterError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  facepriv embed lfw/ --out lfw_dlib.npz
      every image under lfw/, identity = first folder (LFW layout), dlib ResNet (default model)
  facepriv embed celeba-crops/ --labels celeba-crops/labels.csv --model sface --out celeba_sface.npz
      the images listed in the CSV (image,identity,gender + extra columns), SFace
  facepriv embed photos/ --model onnx_file --model-param path=net.onnx --out photos_net.npz
      your own ONNX model (see `facepriv models` for its parameters)

Each model brings its own detector + alignment (dlib_resnet: dlib HOG + 5 landmarks + 150x150
chip; sface/mobilefacenet/edgeface: YuNet + ArcFace 112x112 template). Images without a detectable
face, and unreadable files, are skipped and listed in OUT.failures.csv (image,reason), written with
OUT; a run in which no image gives a face writes nothing and says why in its error. Aligned crops
are cached in ~/.cache/facepriv/crops (or $FACEPRIV_CACHE/crops), so a second model with the same
alignment, or a rerun, skips detection.
"""


def failures_path(out: Path) -> Path:
    """``E.npz`` -> ``E.failures.csv`` beside it."""
    name = out.name[: -len(".npz")] if out.name.endswith(".npz") else out.name
    return out.with_name(f"{name}.failures.csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` command."""
    p = subparsers.add_parser(
        "embed",
        help="detect, align and embed the faces of an image folder into an embeddings .npz",
        description=(
            "Detect the largest face of every image, align it the way the model expects and write\n"
            "its template to an embeddings .npz (embeddings, ids, identity, gender, model)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="dataset root folder")
    p.add_argument(
        "--labels", metavar="CSV",
        help="labels CSV 'image,identity,gender' (paths relative to IMAGES_DIR; extra columns are kept); "
        "default: all images, identity = first folder",
    )
    p.add_argument("--model", default="dlib_resnet", help="recognition model (see `facepriv models`); default dlib_resnet")
    p.add_argument(
        "--model-param", action="append", default=[], metavar="KEY=VALUE",
        help="model parameter (repeatable; VALUE read as JSON when it parses, else text), e.g. for "
        "--model onnx_file: --model-param path=net.onnx --model-param input_size=[112,112]",
    )
    p.add_argument("--out", required=True, metavar="E.npz", help="output embeddings file")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=32, metavar="N", help="crops per forward pass (default 32)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT and OUT.failures.csv if they exist")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the aligned-crops cache")
    add_device_flag(p)
    p.set_defaults(handler=run)


def parse_model_params(items: list[str]) -> dict[str, object]:
    """``["k=v", ...]`` -> dict; values parsed as JSON when possible (numbers, lists), else strings."""
    import json

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--model-param {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


FAILURES_HEADER = ["image", "reason"]


def _failures_csv(failures: list[tuple[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FAILURES_HEADER)
    w.writerows(failures)
    return buf.getvalue()


def _orphaned_failures(fail_out: Path, out: Path) -> bool:
    """True for a failures CSV left without its embeddings file (an older failed run): it may be replaced."""
    if out.exists() or not fail_out.is_file():
        return False
    try:
        with open(fail_out, encoding="utf-8", newline="") as f:
            return next(csv.reader(f), None) == FAILURES_HEADER
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def _reasons(failures: list[tuple[str, str]]) -> str:
    """``"118 no face detected, 2 not a readable image"``: failure counts by reason (most common first)."""
    from collections import Counter

    kinds = Counter(r.split(" (")[0] for _, r in failures)
    return ", ".join(f"{k} {why}" for why, k in kinds.most_common(3)) + (", ..." if len(kinds) > 3 else "")


def run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv embed``."""
    from facepriv.embeddings import save_embeddings
    from facepriv.fileio import check_not_input, check_writable, write_text_atomic
    from facepriv.models.zoo import get_model
    from facepriv.pipeline import NoFaceError, embed_folder

    device = resolve_cli_device(args.device)  # before anything: CUDA asked for but absent is a one-line error
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ParameterError(f"--out {out}: the embeddings file name must end in .npz")
    if args.labels:
        check_not_input(out, [args.labels])
    fail_out = failures_path(out)
    # refuse before the slow work, not after it
    check_writable(out, args.overwrite)
    check_writable(fail_out, args.overwrite or _orphaned_failures(fail_out, out))
    if out.is_dir() or fail_out.is_dir():
        raise InputFileError(out if out.is_dir() else fail_out, "is a folder; --out names the embeddings file to write")
    root = Path(args.images_dir)
    if not root.is_dir():
        raise InputFileError(root, "no such folder" if not root.exists() else "not a folder")
    model = get_model(args.model, **parse_model_params(args.model_param))
    try:
        es, failures, stats = embed_folder(root, model, args.labels, batch_size=args.batch_size, cache=not args.no_cache,
                                             device=device)
    except NoFaceError as exc:  # nothing is written: the reasons are in the message
        raise InputFileError(exc.path, f"{exc.problem}; reasons: {_reasons(exc.failures)}; nothing written") from None
    save_embeddings(es, out, overwrite=args.overwrite)
    write_text_atomic(fail_out, _failures_csv(failures))  # checked above, before the work
    fail_note = f" (reasons in {fail_out})" if stats.failed else ""
    print(
        f"embed: {stats.found} images found, {stats.embedded} embedded, {stats.failed} failed{fail_note}; "
        f"model {es.model} ({es.dim}-d), {stats.seconds:.1f} s, {stats.images_per_s:.1f} images/s"
        f"{' (crops from cache)' if stats.from_cache else ''} -> {out}"
    )
    return 0
