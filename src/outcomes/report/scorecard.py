"""The scorecard: the first page of the meeting pack.

Every criterion with its percent, the clustered 95 % interval, target and status, and
the change from the previous period (a quarter by default) with whether that change is
beyond chance; below it the headline outcomes (final results, recurrence, adverse
events). Every value is escaped: names and codes come from the clinic's export.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from outcomes.audit import compare

if TYPE_CHECKING:
    from outcomes.study import Study

PERIODS = {"quarter": "Q", "month": "M", "year": "Y"}


@dataclass(frozen=True)
class Periods:
    """The period the meeting looks at and the one before it."""

    kind: str
    this: pd.Period | None
    previous: pd.Period | None

    def label(self, p: pd.Period | None) -> str:
        if p is None:
            return "—"
        if self.kind == "quarter":
            return f"{p.year} Q{p.quarter}"
        return p.strftime("%b %Y") if self.kind == "month" else str(p.year)


def choose_periods(verdicts: pd.DataFrame, kind: str = "quarter") -> Periods:
    """The latest period with records, and the one before it."""
    if kind not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    dates = pd.to_datetime(verdicts["date"]).dropna()
    if dates.empty:
        return Periods(kind, None, None)
    this = dates.max().to_period(PERIODS[kind])
    return Periods(kind, this, this - 1)


def in_period(verdicts: pd.DataFrame, p: pd.Period | None) -> pd.DataFrame:
    """The verdict rows whose date falls in period p."""
    if p is None:
        return verdicts.iloc[:0]
    d = pd.to_datetime(verdicts["date"])
    return verdicts[((d >= p.start_time) & (d <= p.end_time)).to_numpy()]


def scorecard(study: Study, period: str = "quarter") -> tuple[pd.DataFrame, Periods]:
    """One row per criterion: overall compliance and this period against the previous."""
    audit = study.audit
    summary = audit.summary()
    periods = choose_periods(audit.verdicts, period)
    now = audit.summary_of(in_period(audit.verdicts, periods.this))
    before = audit.summary_of(in_period(audit.verdicts, periods.previous))
    change = compare(before, now).set_index("criterion")
    rows = []
    for r in summary.itertuples():
        c = change.loc[r.criterion] if r.criterion in change.index else None
        rows.append({
            "criterion": r.criterion, "title": r.title, "eligible": r.eligible,
            "percent": r.percent, "ci_low": r.ci_low_clustered, "ci_high": r.ci_high_clustered,
            "target": r.target, "status": r.status,
            "previous_percent": np.nan if c is None else c["before_percent"],
            "previous_n": 0 if c is None else c["before_eligible"],
            "this_percent": np.nan if c is None else c["after_percent"],
            "this_n": 0 if c is None else c["after_eligible"],
            "change": np.nan if c is None else c["difference"],
            "change_ci_low": np.nan if c is None else c["diff_ci_low"],
            "change_ci_high": np.nan if c is None else c["diff_ci_high"],
            "q_value": np.nan if c is None else c["q_value"],
            "change_words": "no data" if c is None else c["change"],
        })
    return pd.DataFrame(rows), periods


# --------------------------------------------------------------------------- HTML

SHORT_STATUS = {"met": "met", "not met": "not met", "inconclusive": "inconclusive",
                "no data": "no data", "not recorded": "not recorded"}
STATUS_CLASS = {"met": "ok", "not met": "bad", "inconclusive": "warn", "no data": "none",
                "not recorded": "none"}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float, digits: int = 0) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f} %"


def _span(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "—"
    return f"{lo:.0f}–{hi:.0f}"


def _change(r: Any) -> str:
    if not np.isfinite(r.change):
        return "—"
    words = {"improved": "up, beyond chance", "worse": "down, beyond chance",
             "no clear change": "within chance"}.get(r.change_words, r.change_words)
    return (f"{r.change:+.0f} points <span class=\"small\">({r.change_ci_low:+.0f} to "
            f"{r.change_ci_high:+.0f}; {_e(words)})</span>")


def scorecard_html(study: Study, period: str = "quarter") -> str:
    """The scorecard table, the headline outcomes and the findings, as one HTML block."""
    table, periods = scorecard(study, period)
    this, prev = periods.label(periods.this), periods.label(periods.previous)
    head = ("<tr><th>Protocol step</th><th>Compliant</th><th>95 % interval</th>"
            "<th>Target</th><th>Status</th>"
            f"<th>{_e(prev)}</th><th>{_e(this)}</th><th>Change</th></tr>")
    body = []
    for r in table.sort_values("percent", kind="stable", na_position="last").itertuples():
        status = SHORT_STATUS.get(r.status, r.status)
        body.append(
            f"<tr><td>{_e(r.title)}<div class=\"small\">{r.eligible:,} eligible</div></td>"
            f"<td>{_pct(r.percent)}</td><td>{_span(r.ci_low, r.ci_high)}</td>"
            f"<td>{r.target:g} %</td>"
            f"<td><span class=\"status {STATUS_CLASS.get(r.status, 'none')}\">{_e(status)}"
            f"</span></td>"
            f"<td>{_pct(r.previous_percent)}<div class=\"small\">n = {r.previous_n:,}</div></td>"
            f"<td>{_pct(r.this_percent)}<div class=\"small\">n = {r.this_n:,}</div></td>"
            f"<td>{_change(r)}</td></tr>")
    note = ("<p class=\"small\">Compliant: percent of eligible sessions (completed courses for "
            "course steps) over the whole period of the data. The interval allows for sessions "
            "of one patient being alike (patients as clusters); the status reads it against "
            "the target (met: all of it at or above; not met: all below; a 100 % target is "
            f"met only with no miss). {_e(this)} against {_e(prev)}: the change in percentage "
            "points with its 95 % interval (Newcombe); beyond chance means a "
            "Benjamini–Hochberg q below 0.05 over all the steps.</p>")
    return (f"<table class=\"scorecard\"><thead>{head}</thead><tbody>{''.join(body)}"
            f"</tbody></table>{note}{outcomes_html(study)}")


def outcomes_html(study: Study) -> str:
    """The headline outcomes: final results, recurrence and adverse events, with rates."""
    from outcomes import analysis

    audit = study.audit
    items: list[str] = []
    lo, hi = study.protocol.final_result_days
    if study.outcomes is not None:
        windows = analysis.attach_windows(audit, study.outcomes)
        final = analysis.final_summary(windows)
        for r in final.itertuples():
            if r.n and np.isfinite(r.improved):
                items.append(
                    f"{_e(r.title)} ({_e(r.rater)}), {lo}–{hi} days after the last session: "
                    f"{_pct(100 * r.improved)} of {r.n:,} courses improved "
                    f"(95 % interval {_span(100 * r.improved_ci_low, 100 * r.improved_ci_high)}"
                    f"; {_e(r.improved_definition)})")
            elif r.n:
                unit = f" {r.unit}" if isinstance(r.unit, str) and r.unit else ""
                items.append(f"{_e(r.title)} ({_e(r.rater)}), {lo}–{hi} days after the last "
                             f"session: median {r.median:.0f}{_e(unit)} (quartiles "
                             f"{r.q1:.0f}–{r.q3:.0f}) in {r.n:,} courses")
        _, rec = analysis.recurrence(audit, windows)
        if len(rec):
            r = rec.iloc[0]
            items.append(
                f"Recurrence: {int(r['events']):,} of {int(r['courses']):,} followed-up courses; "
                f"recurrence-free at 1 year {_pct(100 * r['recurrence_free'])} "
                f"(95 % interval {_span(100 * r['recurrence_free_ci_low'], 100 * r['recurrence_free_ci_high'])}); "
                f"{_pct(100 * r['assessed_share'])} of all courses had any recurrence "
                "assessment")
    else:
        items.append("No outcomes export was given: final results and recurrence are not "
                     "reported.")
    ae = analysis.adverse_events(audit).iloc[0]
    items.append(f"Adverse events: {int(ae['events']):,} in {int(ae['sessions']):,} sessions "
                 f"({ae['rate'] * 100:.1f} per 100 sessions, 95 % interval "
                 f"{100 * ae['ci_low']:.1f}–{100 * ae['ci_high']:.1f}); "
                 f"{int(ae['courses_with_event']):,} of {int(ae['courses']):,} courses had one")
    lis = "".join(f"<li>{x}</li>" for x in items)
    return f"<h3>Headline outcomes</h3><ul class=\"outcomes\">{lis}</ul>"
