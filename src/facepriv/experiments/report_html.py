"""Self-contained HTML report: one file, images embedded as base64, no scripts, no external assets."""

from __future__ import annotations

import base64
import html

from facepriv.experiments.report_data import ReportData, headline_names

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;
background:#fff;padding:0 16px}
h1{font-size:1.6em;border-bottom:2px solid #2b6cb0;padding-bottom:4px}h2{font-size:1.25em;margin-top:1.6em}
h3{font-size:1em;margin-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#edf2f7}td:first-child,th:first-child{text-align:left;font-weight:600}
tr:nth-child(even) td{background:#f7fafc}.na{color:#999}.note{color:#744210;background:#fefcbf;padding:2px 6px}
figure{display:inline-block;margin:8px 16px 16px 0;vertical-align:top}figure img{max-width:560px;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555;max-width:1100px}pre{background:#f7fafc;border:1px solid #ddd;padding:8px;
overflow-x:auto;font-size:.85em}
"""


def _img(path) -> str:
    raw = path.read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    # PNG width from the IHDR chunk: wide figures (small multiples) get the full page width
    wide = len(raw) > 24 and int.from_bytes(raw[16:20], "big") > 800
    style = ' style="max-width:1100px"' if wide else ""
    return f'<img alt="{html.escape(path.stem)}"{style} src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        tds = []
        for c in r:
            cls = ' class="na"' if c in ("n/a", "-", "not available", "failed") else ""
            tds.append(f"<td{cls}>{html.escape(c)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_html(d: ReportData) -> str:
    """The text of ``report.html``."""
    m = d.metrics
    ds = m.get("dataset", {})
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>facepriv report: {e(str(m.get('experiment', '')))}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>facepriv report: {e(str(m.get('experiment', '')))}</h1>",
        f"<p>Dataset <code>{e(str(ds.get('name')))}</code>: {ds.get('images')} images of {ds.get('identities')} "
        f"identities ({ds.get('male_identities')} male, {ds.get('female_identities')} female by identity). "
        + (f"Seed {e(str(m['seed']))}. " if m.get("seed") is not None else "")
        + f"Listing sha256 <code>{e(str(ds.get('listing_sha256', ''))[:16])}…</code>.</p>",
    ]
    git = d.env.get("git", {})
    if git.get("commit"):
        parts.append(f"<p>facepriv commit <code>{e(git['commit'][:12])}</code>"
                     f"{' (with local changes)' if git.get('dirty') else ''}.</p>")
    hn = headline_names(m)
    if hn:
        parts.append("<p>Attack columns: headline number with its 95% interval ("
                     + "; ".join(f"{e(a)}: {e(v)}" for a, v in hn.items())
                     + "). Utility columns: verification on the protected templates with the protection's comparator.</p>")
    for mlabel, (header, rows) in d.tables.items():
        mm = m["models"][mlabel]
        sp = mm.get("split", {})
        parts.append(f"<h2>Privacy-utility matrix — {e(mlabel)}</h2>")
        parts.append(f"<p>{mm.get('embedded')} templates ({mm.get('no_face')} photos without a detected face); attacker "
                     f"database {sp.get('attacker_identities')} identities, victims {sp.get('victim_identities')} "
                     "identities (identity-disjoint).</p>")
        parts.append(_table(header, rows))
    for title, header, rows in d.details:
        parts.append(f"<h2>{e(title)}</h2>")
        parts.append(_table(header, rows))
    if d.notes:
        parts.append("<h2>Cells not computed (and why)</h2><ul>")
        parts += [f'<li><span class="note">{e(n)}</span></li>' for n in d.notes]
        parts.append("</ul>")
    if d.figures:
        parts.append("<h2>Figures</h2>")
        for f in d.figures:
            parts.append(f"<figure>{_img(f.path)}<figcaption>{e(f.title)}</figcaption></figure>")
    parts.append("<h2>Config</h2>")
    parts.append(f"<pre>{e(d.config_text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
