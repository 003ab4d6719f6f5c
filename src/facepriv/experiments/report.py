"""``facepriv report DIR``: the privacy-utility matrix, plots and config of a run, as Markdown + HTML.

Reads ``metrics.json`` (and the per-cell score files for DET curves), draws the plots into
``report_files/`` and writes ``report.md`` and a self-contained ``report.html``
(:mod:`facepriv.experiments.report_html`, images embedded as base64).

Curves an adapter returns follow one format, so a new attack's plots need no report code:
``curves[name] = {"x": [...], "xlabel": str, "ylabel": str, "series": {label: [...]}}``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from facepriv.errors import InputFileError
from facepriv.experiments.config import slug
from facepriv.experiments.report_check import check_metrics, read_config, read_json
from facepriv.experiments.report_data import Figure, ReportData, headline_names
from facepriv.experiments.report_html import render_html
from facepriv.fileio import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

CURVE_TITLES = {
    "accuracy_vs_n": "Similarity attack: accuracy vs. number of fused scores n",
    "psr_vs_eps": "De-identification: protection success rate vs. eps",
    "rsr_vs_fmr": "Reconstruction: reversibility success rate at FMR operating points",
    "eps_sweep": "AdvFace: privacy (SRRA, SSIM) and utility (accuracy) vs. eps",
}


def _fmt_pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * float(v):.1f}%"


def fmt_cell(c: dict[str, Any] | None) -> str:
    """Headline of a cell as text: ``87.5% [80.1, 92.6]`` or its status."""
    if not c:
        return "-"
    st = c.get("status", "ok")
    if st != "ok":
        return {"unavailable": "not available", "not_applicable": "n/a", "failed": "failed"}.get(st, st)
    h = c.get("headline") or {}
    if "value" not in h:
        return "-"
    unit = h.get("unit", "")
    if unit == "percent":
        s = f"{float(h['value']):.1f}%"
        if h.get("ci_low") is not None:
            s += f" [{float(h['ci_low']):.1f}, {float(h['ci_high']):.1f}]"
    elif unit == "fraction":
        s = _fmt_pct(h["value"])
        if h.get("ci_low") is not None:
            s += f" [{100 * float(h['ci_low']):.1f}, {100 * float(h['ci_high']):.1f}]"
    else:
        s = f"{float(h['value']):.4g}"
        if h.get("ci_low") is not None:
            s += f" [{float(h['ci_low']):.4g}, {float(h['ci_high']):.4g}]"
    return s


def _utility_cols(metric_names: list[str]) -> list[tuple[str, Any]]:
    cols: list[tuple[str, Any]] = []
    if "eer" in metric_names:
        cols.append(("EER [interval]", lambda m: f"{_fmt_pct(m.get('eer'))} [{100 * m['eer_low']:.2f}, {100 * m['eer_high']:.2f}]"
                     if m.get("eer") is not None else "n/a"))
    if "fnmr_at_fmr1" in metric_names:
        cols.append(("FNMR@FMR1%", lambda m: _fmt_pct(m.get("fnmr_at_fmr_0.01"))))
    if "kfold_accuracy" in metric_names:
        cols.append(("k-fold accuracy (± std)", lambda m: (
            f"{_fmt_pct(m['kfold_accuracy_mean'])} ± {100 * m['kfold_accuracy_std']:.1f} ({m.get('kfold_folds')} folds)"
            if m.get("kfold_accuracy_mean") is not None else "n/a")))
    return cols


def build_tables(metrics: dict[str, Any], metric_names: list[str]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """One privacy-utility matrix per model: rows protections, columns attacks then utility metrics."""
    out = {}
    for mlabel, m in metrics.get("models", {}).items():
        prots = m.get("protections", {})
        attack_labels: list[str] = []
        for p in prots.values():
            for a in p.get("attacks", {}):
                if a not in attack_labels:
                    attack_labels.append(a)
        ucols = _utility_cols(metric_names)
        header = ["protection", *attack_labels, *(c[0] for c in ucols)]
        rows = []
        for plabel, p in prots.items():
            row = [plabel] + [fmt_cell(p.get("attacks", {}).get(a)) for a in attack_labels]
            u = p.get("utility") or {}
            if u.get("status", "ok") != "ok":
                row += [fmt_cell(u)] * len(ucols)
            else:
                row += [fn(u.get("metrics", {})) for _, fn in ucols]
            rows.append(row)
        out[mlabel] = (header, rows)
    return out


def _plot_curves(metrics: dict[str, Any], fig_dir: Path) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    for mlabel, m in metrics.get("models", {}).items():
        by_curve: dict[str, list[tuple[str, dict]]] = {}
        for plabel, p in m.get("protections", {}).items():
            for alabel, c in p.get("attacks", {}).items():
                for cname, curve in ((c or {}).get("curves") or {}).items():
                    by_curve.setdefault(f"{alabel}|{cname}", []).append((plabel, curve))
        for key, items in by_curve.items():
            alabel, cname = key.split("|", 1)
            multi = len(items) > 1 and any(len(c.get("series") or {}) > 1 for _, c in items)
            # several protections with several series each: one panel per protection (small multiples)
            panels = [[it] for it in items] if multi else [items]
            ncols = min(2, len(panels))
            nrows = math.ceil(len(panels) / ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(7 if ncols == 1 else 11, 4.2 if nrows == 1 else 3.4 * nrows),
                                     dpi=100, squeeze=False, sharey=True)
            try:
                for ax, panel in zip(axes.ravel(), panels, strict=False):
                    for plabel, curve in panel:
                        x = curve.get("x", [])
                        for sname, ys in (curve.get("series") or {}).items():
                            lab = sname if multi else (plabel if len(curve["series"]) == 1 else f"{plabel}: {sname}")
                            yv = [np.nan if v is None else float(v) for v in ys]
                            ax.plot(x, yv, marker="o", ms=3, lw=1.3, label=lab)
                        if curve.get("log_x"):
                            ax.set_xscale("log")
                        ax.set_xlabel(curve.get("xlabel", ""))
                        ax.set_ylabel(curve.get("ylabel", ""))
                    if multi:
                        ax.set_title(panel[0][0], fontsize=9)
                    ax.grid(True, color="0.85", lw=0.6)
                    ax.legend(fontsize=7, loc="best")
                for ax in axes.ravel()[len(panels):]:
                    ax.set_visible(False)
                fig.suptitle(f"{CURVE_TITLES.get(cname, cname)} ({alabel}, {mlabel})", fontsize=10)
                fig.tight_layout()
                out = fig_dir / f"{slug(mlabel)}-{slug(alabel)}-{slug(cname)}.png"
                with atomic_path(out, suffix=".png") as tmp:
                    fig.savefig(tmp, format="png")
            finally:
                plt.close(fig)
            figs.append(Figure(f"{CURVE_TITLES.get(cname, cname)} — {alabel}, {mlabel}", out))
    return figs


def _det_figures(run_dir: Path, metrics: dict[str, Any], fig_dir: Path) -> list[Figure]:
    from facepriv.fileio import read_npz
    from facepriv.metrics.plots import DetCurve, plot_det

    figs = []
    for mlabel, m in metrics.get("models", {}).items():
        curves = []
        for plabel in m.get("protections", {}):
            f = run_dir / "cells" / slug(mlabel) / slug(plabel) / "utility" / "scores.npz"
            if not f.is_file():
                continue
            z = read_npz(f, "scores")
            for key in ("genuine", "impostor"):
                arr = z.get(key)
                if arr is None or arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
                    raise InputFileError(f, f"{key!r} must be a non-empty 1-d array of finite scores")
            curves.append((plabel, z["genuine"], z["impostor"]))
        if curves:
            out = fig_dir / f"{slug(mlabel)}-det.png"
            title = f"DET of each protection ({mlabel})"
            plot_det([DetCurve(*c) for c in curves], out, title=title, overwrite=True, limits=(0.001, 0.6))
            figs.append(Figure(f"DET curves of each protection — {mlabel}", out))
    return figs


def _cell_images(run_dir: Path, metrics: dict[str, Any]) -> list[Figure]:
    figs = []
    for mlabel, m in metrics.get("models", {}).items():
        for plabel, p in m.get("protections", {}).items():
            for alabel, c in p.get("attacks", {}).items():
                cell_dir = run_dir / "cells" / slug(mlabel) / slug(plabel) / slug(alabel)
                for img in (c or {}).get("images", []) or []:
                    f = cell_dir / str(img)
                    # a cell's image stays inside its cell folder (no ``..``, no link elsewhere)
                    if f.is_file() and f.resolve().is_relative_to(cell_dir.resolve()):
                        figs.append(Figure(f"{alabel} on {plabel} ({mlabel}): {Path(img).stem}", f))
    return figs


def collect(run_dir: str | Path, fig_dir: Path | None = None) -> ReportData:
    """Read and check a run folder, then draw its figures into ``fig_dir`` (default ``report_files/``).

    Raises
    ------
    InputFileError
        Not a run folder, or ``metrics.json``, ``config.resolved.yaml``, ``env.json`` or a score
        file that cannot be read or lacks the expected structure (checked before any figure is drawn).
    """
    rd = Path(run_dir)
    if not rd.is_dir():
        raise InputFileError(rd, "no such folder" if not rd.exists() else "not a folder")
    mpath = rd / "metrics.json"
    if not mpath.is_file():
        raise InputFileError(rd, "no metrics.json: not a finished facepriv run (run `facepriv run CONFIG --out DIR` first)")
    metrics = check_metrics(mpath, read_json(mpath))
    cfg_text, cfg = read_config(rd / "config.resolved.yaml")
    env = read_json(rd / "env.json") if (rd / "env.json").exists() else {}
    if not isinstance(env, dict) or not isinstance(env.get("git", {}), dict) \
            or not isinstance(env.get("git", {}).get("commit", ""), (str, type(None))):
        raise InputFileError(rd / "env.json", "expected a JSON object (with an object 'git' whose 'commit' is a string)")
    metric_names = list(cfg.get("metrics") or ["eer", "fnmr_at_fmr1", "kfold_accuracy"])
    data = ReportData(rd, metrics, cfg_text, env)
    data.tables = build_tables(metrics, metric_names)
    fig_dir = rd / "report_files" if fig_dir is None else fig_dir
    fig_dir.mkdir(exist_ok=True)
    data.figures = _det_figures(rd, metrics, fig_dir) + _plot_curves(metrics, fig_dir) + _cell_images(rd, metrics)
    not_applicable: dict[tuple[str, str], list[str]] = {}
    for m in metrics.get("models", {}).values():
        for plabel, p in m.get("protections", {}).items():
            for part in [("utility", p.get("utility")), *p.get("attacks", {}).items()]:
                name, c = part
                if c and c.get("status") == "not_applicable":
                    # one line per attack and reason, not one per protection row
                    not_applicable.setdefault((name, c.get("message", "")), []).append(plabel)
                elif c and c.get("status", "ok") != "ok":
                    data.notes.append(f"{plabel} / {name}: {c.get('status')}: {c.get('message', '')}")
    for (name, why), rows in not_applicable.items():
        data.notes.append(f"{name}: n/a for {', '.join(dict.fromkeys(rows))} ({why})")
    data.notes = list(dict.fromkeys(data.notes))
    for mlabel, m in metrics.get("models", {}).items():
        for plabel, p in m.get("protections", {}).items():
            for alabel, c in p.get("attacks", {}).items():
                for tname, t in ((c or {}).get("tables") or {}).items():
                    rows = [[_fmt_any(v) for v in r] for r in t.get("rows", [])]
                    data.details.append((f"{tname} — {alabel} on {plabel} ({mlabel})", list(t.get("header", [])), rows))
    return data


def _fmt_any(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table."""
    esc = [[c.replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def render_markdown(d: ReportData) -> str:
    """The text of ``report.md`` (figures referenced from ``report_files/``)."""
    m = d.metrics
    ds = m.get("dataset", {})
    parts = [f"# facepriv report: {m.get('experiment', '')}", ""]
    parts.append(f"Dataset `{ds.get('name')}`: {ds.get('images')} images of {ds.get('identities')} identities "
                 f"({ds.get('male_identities')} male, {ds.get('female_identities')} female by identity); "
                 f"listing sha256 `{str(ds.get('listing_sha256', ''))[:16]}…`."
                 + (f" Seed {m['seed']}." if m.get("seed") is not None else ""))
    git = d.env.get("git", {})
    if git.get("commit"):
        parts.append(f"facepriv commit `{git['commit'][:12]}`{' (with local changes)' if git.get('dirty') else ''}.")
    parts.append("")
    hn = headline_names(m)
    if hn:
        parts.append("Attack columns show the headline number with its 95% interval: "
                     + "; ".join(f"{a}: {v}" for a, v in hn.items()) + ". Utility columns: verification on the "
                     "protected templates with the protection's comparator (EER with its FVC2000 interval, FNMR at "
                     "FMR 1%, k-fold accuracy on an identity-disjoint generated pairs protocol).")
        parts.append("")
    for mlabel, (header, rows) in d.tables.items():
        mm = m["models"][mlabel]
        sp = mm.get("split", {})
        parts.append(f"## Privacy-utility matrix — {mlabel}")
        parts.append("")
        parts.append(f"{mm.get('embedded')} templates ({mm.get('no_face')} photos without a detected face); attacker "
                     f"database {sp.get('attacker_identities')} identities / {sp.get('attacker_images')} images, victims "
                     f"{sp.get('victim_identities')} identities / {sp.get('victim_images')} images (identity-disjoint).")
        parts.append("")
        parts.append(md_table(header, rows))
        parts.append("")
    for title, header, rows in d.details:
        parts.append(f"## {title}")
        parts.append("")
        parts.append(md_table(header, rows))
        parts.append("")
    if d.notes:
        parts.append("## Cells not computed (and why)")
        parts.append("")
        parts += [f"- {n}" for n in d.notes]
        parts.append("")
    if d.figures:
        parts.append("## Figures")
        parts.append("")
        for f in d.figures:
            parts.append(f"### {f.title}")
            parts.append("")
            parts.append(f"![{f.title}]({f.path.relative_to(d.run_dir).as_posix()})")
            parts.append("")
    parts.append("## Config")
    parts.append("")
    parts.append("```yaml")
    parts.append(d.config_text.rstrip())
    parts.append("```")
    parts.append("")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into a run folder; returns their paths.

    Figures are drawn into a staging folder first: a run folder that cannot be reported is left
    exactly as it was (no half-drawn ``report_files/``).
    """
    import shutil
    import tempfile


    rd = Path(run_dir)
    if not rd.is_dir():
        raise InputFileError(rd, "no such folder" if not rd.exists() else "not a folder")
    if not (rd / "metrics.json").is_file():
        raise InputFileError(rd, "no metrics.json: not a finished facepriv run (run `facepriv run CONFIG --out DIR` first)")
    final = rd / "report_files"
    stage = Path(tempfile.mkdtemp(prefix=".report_files.", dir=rd))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; a report folder is as readable as the run
    try:
        d = collect(rd, stage)
        render_markdown(d), render_html(d)  # everything renders before anything is replaced
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".report_files.old.", dir=rd))
            os.replace(final, old / "report_files")
        os.replace(stage, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    for f in d.figures:
        if f.path.is_relative_to(stage):
            f.path = final / f.path.relative_to(stage)
    md = rd / "report.md"
    html = rd / "report.html"
    write_text_atomic(md, render_markdown(d))
    write_text_atomic(html, render_html(d))
    return md, html
