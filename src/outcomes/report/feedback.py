"""Feedback for one-to-one talks: one page per clinician, naming no other clinician.

`clinicians/<name>.html` (and `.pdf` where Chromium is installed) shows the clinician's
compliance with every criterion against all other clinicians pooled, where they sit on
each criterion's funnel (the limits for their number of records), and how many of their
sessions were flagged.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from outcomes.charts.compliance import funnel_tables
from outcomes.charts.style import MEANING, PALETTE, new_figure
from outcomes.files import write_atomic
from outcomes.stats import newcombe_diff_ci

if TYPE_CHECKING:
    from outcomes.study import Study

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:960px;
margin:1.5em auto;padding:0 1.2em;color:#1a1a1a;line-height:1.4}
h1{border-bottom:3px solid #0072B2;padding-bottom:.2em;font-size:1.5em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.86em}
th,td{border:1px solid #ccc;padding:.2em .45em;text-align:right;vertical-align:top}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto}.small{color:#555;font-size:.85em}
@page{size:A4;margin:12mm}
@media print{body{max-width:none;margin:0;font-size:8.5pt}table{font-size:7.5pt}
tr,img{break-inside:avoid}img{max-height:120mm}}
"""


def file_name(name: str, used: set[str]) -> str:
    """A file name for a clinician: letters, digits and dashes, unique in the folder."""
    base = re.sub(r"[^0-9A-Za-z]+", "-", name).strip("-").lower() or "clinician"
    stem, n = base, 2
    while stem in used:
        stem, n = f"{base}-{n}", n + 1
    used.add(stem)
    return stem


@dataclass(frozen=True)
class Pooled:
    """What every clinician's page is read against, worked out once for all the pages."""

    by: pd.DataFrame  # compliance by clinician
    funnels: pd.DataFrame  # every clinician on every criterion's funnel
    flagged: pd.DataFrame  # every flagged record

    @classmethod
    def of(cls, study: Study) -> Pooled:
        by = study.audit.summary("operator")
        by = by.assign(operator=by["operator"].astype(str))
        return cls(by, funnel_tables(by), study.audit.flagged())


def clinician_table(study: Study, clinician: str, pooled: Pooled | None = None) -> pd.DataFrame:
    """Per criterion: this clinician against all others pooled, and the funnel position."""
    pooled = pooled or Pooled.of(study)
    by, funnels = pooled.by, pooled.funnels
    mine = by[by["operator"] == clinician].set_index("criterion")
    rows = []
    for c in study.protocol.criteria:
        all_c = by[by["criterion"] == c.id]
        k = float(mine.loc[c.id, "compliant"]) if c.id in mine.index else 0.0
        n = float(mine.loc[c.id, "eligible"]) if c.id in mine.index else 0.0
        k_o = float(all_c["compliant"].sum()) - k
        n_o = float(all_c["eligible"].sum()) - n
        lo, hi = newcombe_diff_ci(k, n, k_o, n_o) if n and n_o else (np.nan, np.nan)
        f = funnels[(funnels["criterion"] == c.id) & (funnels["operator"] == clinician)]
        rows.append({
            "criterion": c.id, "title": c.title, "target": c.target, "n": int(n),
            "percent": 100 * k / n if n else np.nan, "others_n": int(n_o),
            "others_percent": 100 * k_o / n_o if n_o else np.nan,
            "diff_low": 100 * lo, "diff_high": 100 * hi,
            "position": f["position"].iloc[0] if len(f) else "—",
            "beyond_chance": bool(f["beyond_chance"].iloc[0]) if len(f) else False,
            "low95": f["low95"].iloc[0] if len(f) else np.nan,
            "high95": f["high95"].iloc[0] if len(f) else np.nan,
            "low998": f["low998"].iloc[0] if len(f) else np.nan,
            "high998": f["high998"].iloc[0] if len(f) else np.nan,
            "p0": f["p0"].iloc[0] if len(f) else np.nan,
        })
    return pd.DataFrame(rows)


def position_chart(table: pd.DataFrame, clinician: str) -> Figure:
    """Each criterion: the funnel's limits for this clinician's n, the centre, and them."""
    t = table[table["n"] > 0].reset_index(drop=True)
    fig, ax = new_figure(f"{clinician}: position on each step's funnel plot",
                         height=1.2 + 0.38 * max(len(t), 2))
    y = np.arange(len(t))
    ax.hlines(y, t["low998"], t["high998"], color=MEANING["limit"], linewidth=6, alpha=0.35,
              label="99.8 % limits for their n")
    ax.hlines(y, t["low95"], t["high95"], color=MEANING["limit"], linewidth=6, alpha=0.7,
              label="95 % limits")
    ax.scatter(t["p0"], y, marker="|", s=200, color=PALETTE["black"], zorder=3,
               label="all clinicians")
    ax.scatter(t["percent"], y, marker="D", s=45, color=MEANING["compliant"], zorder=4,
               edgecolor=PALETTE["black"], linewidths=0.5, label=clinician)
    ax.set_yticks(y, [f"{title}  ({n:,})" for title, n in zip(t["title"], t["n"],
                                                               strict=True)], fontsize=8)
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.set_xlim(max(0.0, float(np.nanmin(t[["percent", "low998"]].to_numpy())) - 5), 101)
    ax.set_xlabel("Compliant (% of eligible records)")
    ax.grid(False, axis="y")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncols=4, fontsize=8, frameon=False)
    return fig


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _points(lo: float, hi: float) -> str:
    return f"{round(lo) or 0:+d} to {round(hi) or 0:+d}"


def _pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.0f} %"


def clinician_html(study: Study, clinician: str, pooled: Pooled | None = None) -> str:
    """One clinician's feedback page."""
    pooled = pooled or Pooled.of(study)
    table = clinician_table(study, clinician, pooled)
    flagged = pooled.flagged
    theirs = flagged[flagged["operator"].astype(str) == clinician]
    sessions = study.sessions
    n_sessions = int((sessions["operator"].astype(str) == clinician).sum())
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r.title)}</td><td>{_pct(r.percent)}<div class=\"small\">of {r.n:,}</div>"
        f"</td><td>{_pct(r.others_percent)}<div class=\"small\">of {r.others_n:,}</div></td>"
        f"<td>{'—' if not np.isfinite(r.diff_low) else _points(r.diff_low, r.diff_high)}"
        f"</td><td>{r.target:g} %</td><td>{e(r.position)}"
        f"{' (beyond chance)' if r.beyond_chance else ''}</td></tr>"
        for r in table.itertuples())
    by_step = theirs.groupby("title", observed=True).size().sort_values(ascending=False)
    flag_rows = "".join(f"<tr><td>{e(str(t))}</td><td>{k:,}</td></tr>"
                        for t, k in by_step.items())
    fig = position_chart(table, clinician)
    alt = e(f"Chart: {clinician}'s compliance on each step against the funnel limits for "
            "their number of records")
    p = study.protocol
    return (
        f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
        f"{e(clinician)}: protocol feedback</title><style>{CSS}</style></head><body>"
        f"<h1>{e(clinician)}: protocol feedback</h1>"
        f"<p class=\"small\">{e(p.title)} (protocol {e(p.id)} v{e(p.version)}), data to "
        f"{e(str(study.audit.info.get('data_end') or '—'))}. {n_sessions:,} sessions. Other "
        f"clinicians are pooled, never named.</p>"
        f"<table><thead><tr><th>Protocol step</th><th>You</th><th>All other clinicians</th>"
        f"<th>Difference, 95 % interval (points)</th><th>Target</th><th>Funnel plot</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
        f"<img alt=\"{alt}\" src=\"data:image/png;base64,{_png(fig)}\">"
        f"<h2>Flagged records</h2><p>{len(theirs):,} deviations and documentation gaps in "
        f"{theirs['session_id'].nunique():,} of your sessions; the audit workbook lists each "
        f"with its file and row.</p><table><thead><tr><th>Protocol step</th><th>Flagged</th>"
        f"</tr></thead><tbody>{flag_rows}</tbody></table>"
        f"<p class=\"small\">Funnel plot: where your rate lies against the limits chance "
        f"would give for your number of records (widened when clinicians differ more than "
        f"chance). Beyond chance: Benjamini–Hochberg q below 0.05 over every clinician and "
        f"step.</p></body></html>")


def write_clinician_pages(study: Study, out_dir: str | Path, pdf: bool = True) -> list[Path]:
    """clinicians/<name>.html (and .pdf) for every clinician with audited sessions."""
    from outcomes.report.html import print_pdf

    folder = Path(out_dir) / "clinicians"
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(study.sessions["operator"].dropna().astype(str).unique())
    used: set[str] = set()
    written = []
    pooled = Pooled.of(study)
    for name in names:
        stem = file_name(name, used)
        page = write_atomic(folder / f"{stem}.html",
                            lambda t, n=name: t.write_text(clinician_html(study, n, pooled),
                                                           encoding="utf-8"))
        written.append(page)
        if pdf:
            made = print_pdf(page, folder / f"{stem}.pdf", quiet=True)
            if made is not None:
                written.append(made)
    return written
