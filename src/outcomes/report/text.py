"""The audit in words and readable tables, for the report's summary and its tables.

`headlines(audit)` says which protocol steps are followed least, by whom, and whether that
has been changing; `step_findings(audit)` is the table behind it. The `*_table` helpers
turn audit tables into what a reader sees: clear column names, rounded numbers, the
status in words. Everything is computed from the audit tables and the statistics in
`outcomes.stats` (through the chart helpers), so the words agree with the charts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from outcomes.audit import Audit
from outcomes.charts.compliance import POSITIONS, funnel_tables, monthly_p_chart
from outcomes.protocol import Criterion, Protocol

__all__ = [
    "clinician_outliers",
    "flagged_table",
    "headlines",
    "headlines_markdown",
    "step_findings",
]

RECENT_MONTHS = 6


def _month(m: object) -> str:
    return pd.Period(m, freq="M").strftime("%b %Y")


def _span(values: pd.Series) -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.0f} %" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f} %"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _names(rows: pd.DataFrame) -> str:
    parts = [f"{r.operator} ({r.percent:.0f} % of {r.eligible:,})" for r in rows.itertuples()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def step_findings(audit: Audit) -> pd.DataFrame:
    """One row per protocol step: compliance, target, status, who is furthest below, trend.

    `below_chance` names the clinicians below the others by more than chance, allowing
    for every clinician and step compared (funnel, Benjamini–Hochberg q < 0.05); `shift` is the p-chart's Anhøj runs signal; `months_out` the months outside
    the 3-sigma limits; `recent`/`before` the pooled percent of the last six months and of
    the months before them.
    """
    s = audit.summary()
    by = audit.summary("operator")
    monthly = audit.summary("month")
    funnels = funnel_tables(by)
    rows = []
    for r in s.itertuples():
        ft = funnels[funnels["criterion"] == r.criterion]
        below = ft[ft["beyond_chance"] & (ft["percent"] < ft["p0"])]
        pc = monthly_p_chart(monthly, r.criterion)
        recent = before = np.nan
        if len(pc) and pc["eligible"].sum():
            last = pc.tail(RECENT_MONTHS)
            first = pc.iloc[:-RECENT_MONTHS]
            if last["eligible"].sum():
                recent = 100 * last["compliant"].sum() / last["eligible"].sum()
            if len(first) and first["eligible"].sum():
                before = 100 * first["compliant"].sum() / first["eligible"].sum()
        out_months = pc[pc["signal"]] if len(pc) else pc
        rows.append({
            "criterion": r.criterion, "title": r.title, "eligible": r.eligible,
            "percent": r.percent, "target": r.target, "status": r.status,
            "missing": r.missing,
            "lowest_clinician": ft["operator"].iloc[0] if len(ft) else None,
            "lowest_percent": ft["percent"].iloc[0] if len(ft) else np.nan,
            "clinician_range": ((ft["percent"].min(), ft["percent"].max()) if len(ft)
                                else (np.nan, np.nan)),
            "below_chance": list(below["operator"]),
            "shift": bool(len(pc) and pc["runs_signal"].iloc[0]),
            "months_out": [(_month(m), "high" if p > c else "low") for m, p, c in
                           zip(out_months["month"], out_months["p"], out_months["centre"])],
            "recent": recent, "before": before,
        })
    return pd.DataFrame(rows)


def headlines(audit: Audit, k: int = 3) -> list[str]:
    """The audit in a few sentences: least-followed steps, by whom, and any change over time."""
    f = step_findings(audit)
    f = f[f["eligible"] > 0].sort_values("percent", kind="stable")
    by = audit.summary("operator")
    info = audit.info
    s = audit.sessions
    lines: list[str] = []
    if f.empty:
        return ["No session or course was eligible for any protocol step: nothing to report."]
    d0, d1 = s["session_date"].min(), s["session_date"].max()
    lines.append(
        f"The audit covers {_plural(info.get('sessions_audited', len(s)), 'session')} in "
        f"{_plural(info.get('courses', 0), 'treatment course')} "
        f"({info.get('courses_completed', 0):,} completed) from {d0:%d %b %Y} to {d1:%d %b %Y}, checked against {len(f)} steps of "
        f"the protocol “{audit.protocol.title}”.")
    counts = f["status"].value_counts()
    lines.append(
        f"{counts.get('met', 0)} of {len(f)} steps meet their target, "
        f"{counts.get('not met', 0)} do not, and {counts.get('inconclusive', 0)} are "
        "inconclusive (the 95 % interval spans the target)"
        + (f"; {counts['not recorded']} are not recorded at all in the data (no eligible "
           "record documents the value: the export may lack the column)"
           if counts.get("not recorded", 0) else "") + ".")
    low = f.head(k)
    lines.append("Followed least: " + "; ".join(
        f"{r.title} ({r.percent:.0f} %, target {r.target:g} %)" for r in low.itertuples())
        + ".")
    # by whom: every step below its target, lowest first
    funnels = funnel_tables(by)
    for r in f[(f["status"] != "met") & (f["percent"] < f["target"])].itertuples():
        ft = funnels[funnels["criterion"] == r.criterion]
        below = ft[ft["beyond_chance"] & (ft["percent"] < ft["p0"])]
        others = ft[~ft["operator"].isin(below["operator"])]
        head = f"{r.title} ({r.percent:.0f} %, target {r.target:g} %): "
        if len(below):
            verb = "is" if len(below) == 1 else "are"
            rng = f"; the other clinicians {_span(others['percent'])}" if len(others) else ""
            lines.append(head + f"{_names(below)} {verb} below the others by more than "
                         f"chance (funnel plot, q < 0.05){rng}.")
        elif len(ft):
            plain = ft[ft["position_unadjusted"] == POSITIONS[0]]
            if len(plain) and float(ft["tau2"].iloc[0]) > 0:
                lines.append(head + f"{_names(plain)} "
                             f"{'is' if len(plain) == 1 else 'are'} below the plain 99.8 % "
                             "funnel limit, but the clinicians vary so much more than chance "
                             "that, allowing for it, no one stands out beyond chance "
                             f"(clinicians {_span(ft['percent'])}); read the funnel plot.")
            else:
                lines.append(head + "no clinician differs from the others by more than "
                             f"chance (clinicians {_span(ft['percent'])}): the shortfall is "
                             "shared.")
    # change over time
    shifted = f[f["shift"]]
    if len(shifted):
        parts = []
        for r in shifted.itertuples():
            trend = ""
            if np.isfinite(r.recent) and np.isfinite(r.before):
                trend = (f" (last {RECENT_MONTHS} months {r.recent:.0f} % against "
                         f"{r.before:.0f} % before)")
            parts.append(r.title + trend)
        lines.append("Changing over time: the runs rules (Anhøj) find non-random variation "
                     "(a shift or drift, not just chance) in " + "; ".join(parts) + ".")
    out = [(r.title, m, d) for r in f.itertuples() for m, d in r.months_out]
    if out:
        lines.append("Months outside the p-chart's control limits (special causes worth a "
                     "look): " + "; ".join(f"{t}, {m} ({d})" for t, m, d in out) + ".")
    if not len(shifted) and not out:
        lines.append("No step shows a signal of change over time: the month-to-month "
                     "variation is what chance alone would give.")
    elif len(f) - len(shifted):
        lines.append(f"The other {len(f) - len(shifted)} steps show no runs signal.")
    # documentation
    eligible = int(f["eligible"].sum())
    missing = int(f["missing"].sum())
    if missing:
        g = by.groupby("operator", observed=True)[["missing", "eligible"]].sum()
        g = g[g["eligible"] > 0]
        rate = 100 * g["missing"] / g["eligible"]
        worst = rate.idxmax()
        rest = rate.drop(worst)
        rest_txt = f" against at most {rest.max():.1f} % for the others" if len(rest) else ""
        lines.append(
            f"Documentation: {100 * missing / eligible:.1f} % of the checks could not be made "
            f"because a value was not documented (counted as not compliant); "
            f"{worst}'s records lack a needed value in {rate[worst]:.1f} % of checks"
            f"{rest_txt}.")
    return lines


def headlines_markdown(audit: Audit) -> str:
    """`headlines` as a Markdown bullet list."""
    return "\n".join(f"- {line}" for line in headlines(audit))


def criterion_table(by_operator: pd.DataFrame, summary: pd.DataFrame,
                    criterion: str) -> pd.DataFrame:
    """One criterion's compliance, all clinicians and each: a short table (clinicians as
    columns) that fits beside the criterion's chart."""
    s = summary.set_index(summary["criterion"].astype(str)).loc[criterion]
    d = by_operator[by_operator["criterion"].astype(str) == criterion]
    cols = {"All clinicians": s}
    cols.update({str(r["operator"]): r for _, r in d.iterrows()})

    def pct(r: pd.Series) -> str:
        return "—" if not np.isfinite(r["percent"]) else f"{r['percent']:.0f} %"

    out = pd.DataFrame({
        "": [f"Compliant (target {s['target']:g} %)", "Eligible", "Deviations",
             "Not documented"],
        **{name: [pct(r), f"{int(r['eligible']):,}", f"{int(r['deviations']):,}",
                  f"{int(r['missing']):,}"] for name, r in cols.items()},
    })
    return out


def clinician_outliers(audit: Audit, which: str = "below") -> pd.DataFrame:
    """Clinicians who differ from the others on a step by more than chance, allowing for
    every clinician and step compared (funnel plot, Benjamini–Hochberg q < 0.05);
    `which`: below, above or both."""
    titles = {c.id: c.title for c in audit.protocol.criteria}
    t = funnel_tables(audit.summary("operator"))
    cols = ["Step", "Clinician", "Eligible", "% compliant", "All clinicians %",
            "99.8 % limits", "p", "q"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    low = t["percent"] < t["p0"]
    side = {"below": low, "above": ~low, "both": low | ~low}[which]
    t = t[t["beyond_chance"] & side].sort_values("percent", kind="stable")
    return pd.DataFrame({
        "Step": t["criterion"].map(titles), "Clinician": t["operator"],
        "Eligible": t["eligible"], "% compliant": t["percent"].round(1),
        "All clinicians %": t["p0"].round(1),
        "99.8 % limits": [f"{lo:.1f}–{hi:.1f}" for lo, hi in zip(t["low998"], t["high998"])],
        "p": [_p_text(p) for p in t["p_value"]], "q": [_p_text(q) for q in t["q_value"]],
    }, columns=cols).reset_index(drop=True)


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def flagged_table(flagged: pd.DataFrame, rows: int = 25) -> pd.DataFrame:
    """The first flagged records (deviations and documentation gaps) with file and row;
    a session combined from several exports names them all."""
    f = flagged.head(rows)
    if "sources" in f:
        where = {"Sources": f["sources"].astype(str).to_numpy()}
    else:
        where = {"Source file": [Path(str(x)).name if x is not None else ""
                                 for x in f["source_file"]],
                 "Row": f["source_row"].to_numpy()}
    return pd.DataFrame({
        "Date": pd.to_datetime(f["date"]).dt.strftime("%Y-%m-%d").to_numpy(),
        "Session": f["session_id"].to_numpy(),
        "Clinician": f["operator"].astype(str).to_numpy(),
        "Step": f["title"].to_numpy(),
        "Verdict": f["verdict"].astype(str).to_numpy(),
        "Reason": f["reason"].astype(str).to_numpy(),
        "Observed": f["observed"].round(1).to_numpy(),
        **where,
    })


def criterion_intro(c: Criterion) -> str:
    """A criterion's heading, the sheet's words and what is checked, as Markdown."""
    unit = {"session": "sessions", "first_session": "first sessions of a course",
            "course": "completed courses"}[c.level]
    quote = f"> {c.sheet}\n\n" if c.sheet else ""
    return (f"### {c.title}\n\n{quote}Checked: {c.describe()}. Target: {c.target:g} % of "
            f"eligible {unit}.")


def key_criteria_text(protocol: Protocol) -> str:
    """Which criteria decide whether a course 'followed the protocol', as Markdown."""
    if not protocol.key_criteria:
        return ("The protocol declares no key criteria, so courses are not split by whether "
                "they followed it.")
    items = "\n".join(f"- {protocol.criterion(i).title} ({protocol.criterion(i).describe()})"
                      for i in protocol.key_criteria)
    return ("A course *followed the protocol* when every verdict of these key criteria was "
            "compliant (an undocumented value counts as not followed, as in the audit):\n\n"
            + items)
