"""``facepriv deid eval``: re-detect, re-align and identify stored cloaks with every target model.

Each stored photo (JPEG/PNG as written by ``deid run``) is read back from disk and goes through
the target model's own detector and alignment recipe (which resizes differently from the
source's), then its identification head. Detection failures are reported separately
(``detection_rate``) from identification failures; in ``psr`` an undetected face counts as
protected (N = all probes), ``psr_detected`` uses only the re-detected faces.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from facepriv.attacks.deid.gallery import align_files, gallery_head
from facepriv.attacks.deid.heads import rank_of_true
from facepriv.attacks.deid.protocol import PAPER_KS, psr_at_k
from facepriv.attacks.deid.run import PROTOCOL, RunConfig, stored_name
from facepriv.errors import InputFileError, OutputExistsError, ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def read_run(run_dir: Path) -> tuple[dict, list[tuple[str, str, str]]]:
    """run.json and split.csv rows (image, identity, role) of a ``deid run`` folder."""
    rj, sc = run_dir / "run.json", run_dir / "split.csv"
    if not rj.is_file():
        raise InputFileError(run_dir, "not a 'facepriv deid run' output folder (run.json missing)")
    try:
        rec = json.loads(rj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputFileError(rj, f"not valid JSON ({exc})") from None
    if rec.get("kind") != "facepriv.deid.run":
        raise InputFileError(rj, "not written by 'facepriv deid run'")
    if not sc.is_file():
        raise InputFileError(sc, "split file missing")
    with open(sc, newline="", encoding="utf-8") as f:
        rows = [(r["image"], r["identity"], r["role"]) for r in csv.DictReader(f)]
    return rec, rows


def _config(rec: dict) -> RunConfig:
    c = dict(rec["config"])
    c["eps"] = tuple(c["eps"])
    return RunConfig(**c)


def evaluate_runs(run_dirs: list[Path], targets: list[str], out: Path, overwrite: bool = False,
                  ks: tuple[int, ...] = PAPER_KS) -> dict:
    """Transferability evaluation of one or more runs (one per source model, same gallery).

    Returns the content of ``summary.json``: ``psr[source][target][eps][k]``, ``psr_detected``,
    ``detection_rate[source][target][eps]`` (%), ``template_cosine[source][target][eps]`` (mean
    cosine similarity of the re-detected probes to their identity's enrolled template, the
    open-set view), ``identification_clean_topk``, ``quality[source][eps]`` and more.
    """
    from facepriv.models.zoo import get_model

    if not targets:
        raise ParameterError("--targets: name at least one recognition model")
    for t in targets:
        get_model(t)  # ParameterError for unknown names
    if (out / "summary.json").exists() and not overwrite:
        raise OutputExistsError(out / "summary.json")
    runs = [(d, *read_run(d)) for d in run_dirs]
    galleries = {tuple(sorted((im, i) for im, i, role in rows if role == "gallery")) for _, _, rows in runs}
    if len(galleries) != 1:
        raise ParameterError("the runs use different gallery/probe splits (dataset, seed or split options differ); "
                             "evaluate them separately")
    gallery = list(next(iter(galleries)))
    cfg0 = _config(runs[0][1])
    sources = [rec["config"]["source"] for _, rec, _ in runs]
    if len(set(sources)) != len(sources):
        raise ParameterError(f"two runs have the same source model ({', '.join(sources)}); evaluate them separately")
    methods = sorted({rec["config"]["method"] for _, rec, _ in runs})
    root = Path(cfg0.images)
    t0 = time.perf_counter()
    psr: dict = {}
    psr_det: dict = {}
    det_rate: dict = {}
    clean_acc: dict = {}
    failures: dict = {}
    heads_meta = {}
    template_cos: dict = {}
    cache: dict = {}  # targets sharing a recipe (sface, mobilefacenet) align each photo once
    for target in targets:
        head, info, means, gal_fail = gallery_head(root, gallery, target, cfg0.seed, out / "heads" / target, cache=cache)
        heads_meta[target] = {"train_accuracy": info.train_accuracy, "n_train": info.n_train,
                              "classes": len(info.classes), "gallery_without_face": len(gal_fail)}
        cls = {c: i for i, c in enumerate(info.classes)}
        model = get_model(target)
        for d, rec, rows in runs:
            src = rec["config"]["source"]
            cfg = _config(rec)
            probes = [(im, ident) for im, ident, role in rows if role == "probe" and ident in cls]
            y = np.array([cls[i] for _, i in probes])
            for key in ["0"] + [f"{e:g}" for e in cfg.eps]:
                paths = [d / "cloaks" / f"eps{key}" / stored_name(im, cfg) for im, _ in probes]
                crops, ok, fails = align_files(paths, model.card.alignment, desc=f"{src}->{target} eps {key}", cache=cache)
                ranks = np.full(len(probes), np.inf)
                cos = float("nan")
                if len(ok):
                    import torch

                    emb = model.embed(crops)
                    with torch.no_grad():
                        logits = head(torch.from_numpy(emb)).numpy()
                    ranks[ok] = rank_of_true(logits, y[ok])
                    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
                    cos = float((unit * means[y[ok]]).sum(1).mean())
                template_cos.setdefault(src, {}).setdefault(target, {})[key] = cos
                psr.setdefault(src, {}).setdefault(target, {})[key] = psr_at_k(ranks, ks)
                psr_det.setdefault(src, {}).setdefault(target, {})[key] = psr_at_k(ranks[ok], ks)
                det_rate.setdefault(src, {}).setdefault(target, {})[key] = 100.0 * len(ok) / max(len(probes), 1)
                failures.setdefault(src, {}).setdefault(target, {})[key] = [
                    {"image": str(Path(p).relative_to(d)), "reason": r} for p, r in fails]
            clean_acc.setdefault(src, {})[target] = {k: 100.0 - v for k, v in psr[src][target]["0"].items()}
    summary = {
        "kind": "facepriv.deid.summary",
        "protocol": PROTOCOL,
        "method": methods[0] if len(methods) == 1 else methods,
        "runs": [{"dir": str(d.resolve()), "source": rec["config"]["source"], "method": rec["config"]["method"],
                  "storage": rec["storage"], "probes": rec["counts"]["probes"],
                  "probes_without_face_at_source": rec["counts"]["probes_without_face"]} for d, rec, _ in runs],
        "dataset": {"images": str(root), "labels": cfg0.labels, "identities": len({i for _, i in gallery}),
                    "gallery_images": len(gallery), "seed": cfg0.seed, "probes_per_identity": cfg0.probes_per_identity},
        "targets": targets,
        "ks": list(ks),
        "heads": heads_meta,
        "identification_clean_topk": clean_acc,
        "psr": psr,
        "psr_detected": psr_det,
        "detection_rate": det_rate,
        "template_cosine": template_cos,
        "quality": {rec["config"]["source"]: rec["quality"] for _, rec, _ in runs},
        "source_in_memory": {rec["config"]["source"]: {"clean": rec["source_clean_psr_in_memory"], **{
            e: v["psr_source_in_memory"] for e, v in rec["per_eps"].items()}} for _, rec, _ in runs},
        "detection_failures": failures,
        "seconds": time.perf_counter() - t0,
    }
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", summary_markdown(summary))
    return summary


def summary_markdown(s: dict, ks: tuple[int, ...] = (1, 5)) -> str:
    """Markdown tables: clean identification, then PSR@k (source x target, per eps), quality."""
    ks = tuple(k for k in ks if k in s["ks"]) or tuple(s["ks"][:1])
    lines = [f"# De-identification transferability ({s['method']})", "", f"Protocol: {s['protocol']}.", ""]
    lines += ["## Clean identification (top-k accuracy %, eps 0 photos stored like the cloaks)", "",
              "| source run | target | " + " | ".join(f"top-{k}" for k in s["ks"]) + " |",
              "|---|---|" + "---|" * len(s["ks"])]
    for src, per in s["identification_clean_topk"].items():
        for tgt, acc in per.items():
            lines.append(f"| {src} | {tgt} | " + " | ".join(f"{acc[str(k)] if str(k) in acc else acc[k]:.1f}" for k in s["ks"]) + " |")
    for k in ks:
        lines += ["", f"## PSR@{k} (%), rows source -> target, columns eps (detection rate % in brackets)", ""]
        eps_keys = list(next(iter(next(iter(s["psr"].values())).values())).keys())
        lines += ["| source -> target | " + " | ".join(f"eps {e}" for e in eps_keys) + " |", "|---|" + "---|" * len(eps_keys)]
        for src, per in s["psr"].items():
            for tgt, by_eps in per.items():
                cells = []
                for e in eps_keys:
                    v = by_eps[e]
                    p = v[str(k)] if str(k) in v else v[k]
                    cells.append(f"{p:.1f} ({s['detection_rate'][src][tgt][e]:.0f})")
                lines.append(f"| {src} -> {tgt} | " + " | ".join(cells) + " |")
    lines += ["", "## Image quality of the stored photos vs the clean photo", "", "| source | eps | SSIM | PSNR dB |", "|---|---|---|---|"]
    for src, q in s["quality"].items():
        for e, v in q.items():
            lines.append(f"| {src} | {e} | {v['ssim']:.3f} | {v['psnr']:.1f} |")
    return "\n".join(lines) + "\n"
