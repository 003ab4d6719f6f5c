"""PSR-vs-eps plots in the layout of Ghafourian et al. Figs. 3-5 (one figure per source model)."""

from __future__ import annotations

from pathlib import Path

from facepriv.fileio import atomic_path, check_writable

_MARKERS = ("o", "s", "^", "D", "v")


def _get(d: dict, k: int):
    return d[str(k)] if str(k) in d else d[k]


def _plot(rows: list[tuple[str, dict]], source: str, ks: tuple[int, ...], png: Path) -> Path:
    """rows: (method label, psr[target][eps][k] of this source)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(ks), figsize=(2.6 * len(ks), 2.3 * len(rows)), squeeze=False, sharey=True)
    for r, (label, per_target) in enumerate(rows):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            for t, (target, by_eps) in enumerate(per_target.items()):
                eps = sorted(by_eps, key=float)
                ax.plot([float(e) for e in eps], [_get(by_eps[e], k) for e in eps],
                        marker=_MARKERS[t % len(_MARKERS)], ms=3.5, lw=1.2, label=target)
            ax.set_xscale("symlog", linthresh=4, base=2)
            ticks = sorted({float(e) for by in per_target.values() for e in by})
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{e:g}" for e in ticks], fontsize=7)
            ax.set_ylim(-3, 103)
            ax.grid(alpha=0.3)
            ax.set_title(f"{label.upper()}  Top{k}", fontsize=9)
            if c == 0:
                ax.set_ylabel("PSR (%)", fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel("eps (0..255)", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=7, loc="lower right", title=f"source {source}", title_fontsize=7)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return png


def plot_summary(summary: dict, out: Path, ks: tuple[int, ...] | None = None) -> list[Path]:
    """One ``psr_<source>.png`` per source run of a ``deid eval`` summary (panels: top-k)."""
    n_classes = min((h["classes"] for h in summary.get("heads", {}).values()), default=10**9)
    # top-k with k >= the number of identities is trivially 0 % PSR: no panel for it
    ks = tuple(ks or [k for k in summary["ks"] if k < n_classes] or summary["ks"][:1])
    method = summary["method"] if isinstance(summary["method"], str) else "+".join(summary["method"])
    return [_plot([(method, per)], src, ks, out / f"psr_{src}.png") for src, per in summary["psr"].items()]


def plot_methods(summaries: list[dict], out: Path, ks: tuple[int, ...] = (1, 5, 25), overwrite: bool = False) -> list[Path]:
    """Paper layout: per source model one PNG, rows = methods of the summaries, columns = top-k."""
    sources = sorted({s for summ in summaries for s in summ["psr"]})
    pngs = []
    for src in sources:
        rows = [(str(summ["method"]), summ["psr"][src]) for summ in summaries if src in summ["psr"]]
        png = check_writable(out / f"psr_{src}_{'_'.join(r[0] for r in rows)}.png", overwrite)
        pngs.append(_plot(rows, src, ks, png))
    return pngs
