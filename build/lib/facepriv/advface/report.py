"""Markdown tables of an AdvFace evaluation (``summary.json`` -> ``summary.md``).

The layout follows the paper: Table 1 (methods x SSIM/PSNR/MSE/SRRA/accuracy), the eps sweep
behind Fig. 4 and the shadow x attacker transfer matrix of Table 4.
"""

from __future__ import annotations

from typing import Any

METHOD_NAMES = {
    "unprotected": "unprotected",
    "random": "random noise",
    "dp": "Laplace DP (budget 1)",
    "advface": "AdvFace",
    "advface_offline": "AdvFace, offline (Psi fine-tuned)",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _row(r: dict[str, Any], label: str) -> str:
    acc = f"{_pct(r['accuracy'])} ± {100 * r.get('accuracy_std', 0.0):.1f}"
    return (f"| {label} | {r['eps']:.2f} | {r['ssim']:.3f} | {r['psnr']:.2f} | {r['mse']:.4f} | "
            f"{_pct(r['srra'])} | {acc} |")


def summary_markdown(summary: dict[str, Any]) -> str:
    """Render the tables of a ``run_experiment`` summary as Markdown.

    Parameters
    ----------
    summary
        The dictionary written to ``summary.json``.

    Returns
    -------
    str
        Markdown text (headings, tables, a line on the evaluation set and protocol).
    """
    s = summary["settings"]
    proto = summary["accuracy_protocol"]
    lines = [
        f"AdvFace evaluation: {summary['model']} cut at `{summary['cut']}` (features "
        f"{'x'.join(map(str, summary['feature_shape']))}); {summary['eval_images']} evaluation images of "
        f"{summary['eval_identities']} identities never seen by any decoder; PGD {s['steps']} steps, alpha "
        f"{s['alpha']}, bound `{s['bound']}`; SRRA at FMR {100 * summary['srra_fmr']:g}% (threshold "
        f"{summary['srra_threshold']:.4f}); accuracy on {proto['genuine_pairs']} genuine + "
        f"{proto['impostor_pairs']} impostor pairs: {proto['rule']}.",
        "",
    ]
    head = "| method | eps | SSIM | PSNR dB | MSE | SRRA | accuracy |\n|---|---|---|---|---|---|---|"
    if summary.get("table"):
        lines += [f"### Table 1 (attacker: {s['main_arch']})", "", head]
        lines += [_row(r, METHOD_NAMES.get(r["method"], r["method"])) for r in summary["table"]]
        lines.append("")
    if summary.get("sweep"):
        lines += [f"### eps sweep (AdvFace, shadow and attacker: {s['main_arch']})", "", head]
        lines += [_row(r, "AdvFace") for r in summary["sweep"]]
        lines.append("")
    transfer = summary.get("transfer") or {}
    if transfer:
        attackers = sorted({a for row in transfer.values() for a in row})
        lines += [f"### Transfer (eps {s['eps']}): SSIM / PSNR dB / SRRA of the attacker's reconstructions", "",
                  "| shadow \\ attacker | " + " | ".join(attackers) + " |",
                  "|---|" + "---|" * len(attackers)]
        for shadow, row in transfer.items():
            cells = [f"{row[a]['ssim']:.3f} / {row[a]['psnr']:.2f} / {_pct(row[a]['srra'])}" if a in row else "-"
                     for a in attackers]
            lines.append(f"| {shadow} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
