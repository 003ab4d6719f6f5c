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
from typing import Any

import numpy as np

from facepriv.attacks.deid.gallery import align_files, gallery_head
from facepriv.attacks.deid.protocol import PAPER_KS
from facepriv.attacks.deid.run import PROTOCOL, CloakRun
from facepriv.errors import InputFileError, OutputExistsError, ParameterError
from facepriv.fileio import write_json_atomic, write_text_atomic
from facepriv.metrics.privacy import psr_at_k, rank_of_true_identity
from facepriv.protections.image import stored_name

log = logging.getLogger(__name__)


def read_run(run_dir: Path) -> CloakRun:
    """The run.json record and split.csv rows (image, identity, role) of a ``deid run`` folder."""
    run_dir = Path(run_dir)
    rj, sc = run_dir / "run.json", run_dir / "split.csv"
    if not rj.is_file():
        raise InputFileError(run_dir, "not a 'facepriv deid run' output folder (run.json missing)")
    try:
        rec = json.loads(rj.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(rj, f"not valid JSON ({exc})") from None
    if not isinstance(rec, dict) or rec.get("kind") != "facepriv.deid.run":
        raise InputFileError(rj, "not written by 'facepriv deid run'")
    try:
        cfg = rec["config"]
        _ = (cfg["source"], cfg["method"], [float(e) for e in cfg["eps"]], cfg["jpeg_quality"], cfg["images"],
             cfg["seed"], rec["storage"], rec["counts"]["probes"], rec["per_eps"], rec["quality"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(rj, f"incomplete deid run record ({type(exc).__name__}: {exc})") from None
    if not sc.is_file():
        raise InputFileError(sc, "split file missing")
    try:
        with open(sc, newline="", encoding="utf-8") as f:
            rows = [(r["image"], r["identity"], r["role"]) for r in csv.DictReader(f)]
    except (KeyError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(sc, f"not a deid split file ({type(exc).__name__}: {exc})") from None
    return CloakRun(run_dir, rec, rows)


def eval_outputs(out: Path, sources: list[str]) -> list[Path]:
    """Every file ``deid eval`` writes into ``out`` (heads aside: they are keyed, never replaced)."""
    return [out / "summary.json", out / "summary.md"] + [out / f"psr_{s}.png" for s in sources]


def _eps_keys(rec: dict) -> list[str]:
    return ["0"] + [f"{float(e):g}" for e in rec["config"]["eps"]]


def _probe_files(run: CloakRun) -> dict[str, list[Path]]:
    """Stored photo of every probe at every eps; InputFileError for a missing folder or file, or
    one that is not a readable image (checked before any work, so nothing is written)."""
    from facepriv.images import load_rgb

    cfg = run.record["config"]
    probes = [im for im, _, role in run.rows if role == "probe"]
    files = {}
    for key in _eps_keys(run.record):
        folder = run.dir / "cloaks" / f"eps{key}"
        if not folder.is_dir():
            raise InputFileError(folder, f"missing: run.json lists eps {key} ({len(probes)} stored probes); the run "
                                         "folder is incomplete or was altered (rerun 'facepriv deid run')")
        paths = [folder / stored_name(im, cfg["jpeg_quality"]) for im in probes]
        for p in paths:
            if not p.is_file():
                raise InputFileError(p, "stored probe missing; the run folder is incomplete or was altered "
                                        "(rerun 'facepriv deid run')")
            load_rgb(p)  # InputFileError naming the file: corrupt or truncated
        files[key] = paths
    return files


def _psr(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[int, Any]:
    """PSR@k (:func:`facepriv.metrics.privacy.psr_at_k`); NaN for each k when there is no probe."""
    return psr_at_k(ranks, ks) if len(ranks) else {int(k): float("nan") for k in ks}


def evaluate_runs(run_dirs: list[Path], targets: list[str], out: Path, overwrite: bool = False,
                  ks: tuple[int, ...] = PAPER_KS, device: str = "cpu") -> dict:
    """:func:`evaluate` of ``deid run`` folders (one per source model, same gallery)."""
    return evaluate([read_run(d) for d in run_dirs], targets, out, overwrite=overwrite, ks=ks, device=device)


def evaluate(runs: list[CloakRun], targets: list[str], out: Path, overwrite: bool = False,
             ks: tuple[int, ...] = PAPER_KS, device: str = "cpu") -> dict:
    """Transferability evaluation of one or more cloaking runs (one per source model, same gallery).

    Every output (``summary.json``, ``summary.md``, ``psr_<source>.png``) is checked before any
    work: an existing one is refused unless ``overwrite``. Every stored probe must exist and be
    readable (InputFileError naming the file otherwise); a readable photo in which a target's
    detector finds no face counts as protected.

    Returns the content of ``summary.json``: ``psr[source][target][eps][k]``, ``psr_detected``,
    ``detection_rate[source][target][eps]`` (%), ``template_cosine[source][target][eps]`` (mean
    cosine similarity of the re-detected probes to their identity's enrolled template, the
    open-set view), ``identification_clean_topk``, ``quality[source][eps]`` and more.
    ``device`` (resolved torch device) runs the targets' embedding and heads there.
    """
    from facepriv.device import module_on
    from facepriv.models.base import embed_on
    from facepriv.models.zoo import get_model

    if not targets:
        raise ParameterError("targets: name at least one recognition model", param="targets")
    for t in targets:
        try:
            get_model(t)
        except ParameterError as exc:
            raise ParameterError(f"targets: {exc}", param="targets") from None
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ParameterError(f"ks: every k must be >= 1, got {list(ks)}", param="ks")
    if not runs:
        raise ParameterError("give at least one deid run")
    sources = [r.record["config"]["source"] for r in runs]
    if len(set(sources)) != len(sources):
        raise ParameterError(f"two runs have the same source model ({', '.join(sources)}); evaluate them separately")
    if not overwrite:
        for p in eval_outputs(out, sources):
            if p.exists():
                raise OutputExistsError(p)
    galleries = {tuple(sorted((im, i) for im, i, role in r.rows if role == "gallery")) for r in runs}
    if len(galleries) != 1:
        raise ParameterError("the runs use different gallery/probe splits (dataset, seed or split options differ); "
                             "evaluate them separately")
    files = {r.record["config"]["source"]: _probe_files(r) for r in runs}  # before any work: all present
    gallery = list(next(iter(galleries)))
    cfg0 = runs[0].record["config"]
    seed = int(cfg0["seed"])
    methods = sorted({r.record["config"]["method"] for r in runs})
    root = Path(cfg0["images"])
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
        head, info, means, gal_fail = gallery_head(root, gallery, target, seed, out / "heads", cache=cache,
                                                     device=device)
        heads_meta[target] = {"train_accuracy": info.train_accuracy, "n_train": info.n_train,
                              "classes": len(info.classes), "gallery_without_face": len(gal_fail), "key": info.key}
        cls = {c: i for i, c in enumerate(info.classes)}
        model = get_model(target)
        for run in runs:
            src = run.record["config"]["source"]
            all_probes = [im for im, _, role in run.rows if role == "probe"]
            probes = [(im, ident) for im, ident, role in run.rows if role == "probe" and ident in cls]
            pos = {im: j for j, im in enumerate(all_probes)}
            y = np.array([cls[i] for _, i in probes], dtype=np.int64)
            for key in _eps_keys(run.record):
                paths = [files[src][key][pos[im]] for im, _ in probes]
                crops, ok, fails = align_files(paths, model.card.alignment, desc=f"{src}->{target} eps {key}", cache=cache)
                ranks = np.full(len(probes), np.inf)
                cos = float("nan")
                if len(ok):
                    import torch

                    emb = embed_on(model, crops, device)
                    with torch.no_grad():
                        e = torch.from_numpy(emb)
                        logits = (head(e) if device == "cpu" else module_on(head, device)(e.to(device))).cpu().numpy()
                    ranks[ok] = rank_of_true_identity(logits, y[ok])
                    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
                    cos = float((unit * means[y[ok]]).sum(1).mean())
                template_cos.setdefault(src, {}).setdefault(target, {})[key] = cos
                psr.setdefault(src, {}).setdefault(target, {})[key] = _psr(ranks, ks)
                psr_det.setdefault(src, {}).setdefault(target, {})[key] = _psr(ranks[ok], ks)
                det_rate.setdefault(src, {}).setdefault(target, {})[key] = 100.0 * len(ok) / max(len(probes), 1)
                failures.setdefault(src, {}).setdefault(target, {})[key] = [
                    {"image": str(Path(p).relative_to(run.dir)), "reason": r} for p, r in fails]
            clean_acc.setdefault(src, {})[target] = {k: 100.0 - v for k, v in psr[src][target]["0"].items()}
    summary = {
        "kind": "facepriv.deid.summary",
        "protocol": PROTOCOL,
        "method": methods[0] if len(methods) == 1 else methods,
        "runs": [{"dir": str(r.dir.resolve()), "source": r.record["config"]["source"], "method": r.record["config"]["method"],
                  "storage": r.record["storage"], "probes": r.record["counts"]["probes"],
                  "probes_without_face_at_source": r.record["counts"]["probes_without_face"]} for r in runs],
        "dataset": {"images": str(root), "labels": cfg0.get("labels"), "identities": len({i for _, i in gallery}),
                    "gallery_images": len(gallery), "seed": seed, "probes_per_identity": cfg0.get("probes_per_identity")},
        "targets": targets,
        "ks": list(ks),
        "heads": heads_meta,
        "identification_clean_topk": clean_acc,
        "psr": psr,
        "psr_detected": psr_det,
        "detection_rate": det_rate,
        "template_cosine": template_cos,
        "quality": {r.record["config"]["source"]: r.record["quality"] for r in runs},
        "source_in_memory": {r.record["config"]["source"]: {"clean": r.record["source_clean_psr_in_memory"], **{
            e: v["psr_source_in_memory"] for e, v in r.record["per_eps"].items()}} for r in runs},
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
