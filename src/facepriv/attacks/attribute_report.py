"""Reports of the attribute attacks: per-probe CSV, ``summary.json`` and an accuracy plot.

``summary.json`` holds ``results`` (one entry per rule/n/decision or per classifier: accuracy,
balanced accuracy, 95 % Wilson interval, number of probes), the ``best`` entry, the ``chance``
level (majority-class share of the target probes) and what was run. Every file is written
atomically; no existing output (summary, per-probe CSV, plot) is replaced unless ``overwrite``, and
all of them are checked before the first is written.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.attacks.classifiers import ClassifierResult
from facepriv.attacks.soft_biometric import AttackResult
from facepriv.fileio import atomic_path, check_writable, write_json_atomic, write_text_atomic

CI_NOTE = "ci_low/ci_high: 95% Wilson score interval of the accuracy (facepriv.metrics.stats.wilson_interval)"


#: files each report writes into its folder
SIMILARITY_OUTPUTS = ("probes.csv", "accuracy_vs_n.png", "summary.json")
CLASSIFIER_OUTPUTS = ("probes.csv", "summary.json")


def check_out_dir(out_dir: str | os.PathLike[str], overwrite: bool, outputs: tuple[str, ...] = SIMILARITY_OUTPUTS) -> Path:
    """The output folder; refuses one that holds any of ``outputs`` unless ``overwrite``.

    Raises
    ------
    InputFileError
        ``out_dir`` is a file, or one of the outputs exists as a folder.
    OutputExistsError
        One of the outputs exists and ``overwrite`` is false.
    """
    from facepriv.errors import InputFileError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder")
    for name in outputs:
        if (out / name).is_dir():
            raise InputFileError(out / name, "is a folder; the report writes a file of this name")
        check_writable(out / name, overwrite)
    return out


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:.6f}"


def similarity_csv(res: AttackResult) -> str:
    """Per-probe CSV: id, true label, fused score per rule/n/class, predictions."""
    header = ["probe_id", "true"]
    cols: list[np.ndarray] = []
    for (rule, n), f in res.fused.items():
        for k, c in enumerate(res.classes):
            header.append(f"score_{rule}_n{n}_{c}")
            cols.append(f[:, k])
    for (rule, n, decision), p in res.predictions.items():
        header.append(f"pred_{rule}_n{n}" if decision == "galleries" else f"pred_vote_n{n}")
        cols.append(p)
    rows = []
    for i in range(len(res.true)):
        row: list[Any] = [res.probe_ids[i], res.true[i]]
        row += [_fmt(c[i]) if c.dtype.kind == "f" else c[i] for c in cols]
        rows.append(row)
    return _csv_text(header, rows)


def classifier_csv(res: ClassifierResult) -> str:
    """Per-probe CSV: id, true label, prediction of each classifier."""
    names = list(res.predictions)
    rows = [[res.probe_ids[i], res.true[i], *[res.predictions[n][i] for n in names]] for i in range(len(res.true))]
    return _csv_text(["probe_id", "true", *[f"pred_{n}" for n in names]], rows)


def plot_similarity(res: AttackResult, path: Path) -> None:
    """Accuracy vs n per fusion rule (and majority vote), with the chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res.rows()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key in sorted({(r["rule"], r["decision"]) for r in rows}):
        pts = sorted((r["n"], r["accuracy"], r["ci_low"], r["ci_high"]) for r in rows if (r["rule"], r["decision"]) == key)
        n, acc, lo, hi = (np.array(v) for v in zip(*pts, strict=True))
        label = key[0] if key[1] == "galleries" else "majority vote"
        ax.plot(n, 100 * acc, marker="o", label=label)
        ax.fill_between(n, 100 * lo, 100 * hi, alpha=0.12)
    ax.axhline(100 * res.chance(), color="grey", linestyle="--", label="chance (majority class)")
    ax.set_xscale("log")
    ax.set_xlabel("n (top scores fused)")
    ax.set_ylabel(f"{res.meta.get('attribute', 'attribute')} accuracy (%)")
    ax.set_title("Similarity attack")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_similarity_report(
    res: AttackResult, out_dir: str | os.PathLike[str], run_info: dict[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Write ``probes.csv``, ``accuracy_vs_n.png`` and ``summary.json`` (last) into ``out_dir``."""
    out = check_out_dir(out_dir, overwrite, SIMILARITY_OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "probes.csv", similarity_csv(res))
    plot_similarity(res, out / "accuracy_vs_n.png")
    rows = res.rows()
    n1 = [r for r in rows if r["n"] == 1 and r["decision"] == "galleries"]
    summary = {
        "attack": "similarity",
        **run_info,
        **res.meta,
        "classes": res.classes,
        "n_probes": len(res.true),
        "target_class_counts": {str(c): int(k) for c, k in zip(*np.unique(res.true, return_counts=True), strict=True)},
        "chance": res.chance(),
        "chance_note": "majority-class share of the target probes",
        "confidence_interval": CI_NOTE,
        "best": res.best(),
        "best_note": "highest accuracy over rule/n/decision on these probes (an optimistic pick)",
        "n1_max": n1[0] if n1 else None,
        "results": rows,
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def write_classifier_report(
    res: ClassifierResult, out_dir: str | os.PathLike[str], run_info: dict[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Write ``probes.csv`` and ``summary.json`` (last) into ``out_dir``."""
    out = check_out_dir(out_dir, overwrite, CLASSIFIER_OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "probes.csv", classifier_csv(res))
    summary = {
        "attack": "classifier",
        **run_info,
        **res.meta,
        "n_probes": len(res.true),
        "chance": res.chance(),
        "chance_note": "majority-class share of the evaluated probes",
        "confidence_interval": CI_NOTE,
        "best": res.best(),
        "results": res.rows(),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
