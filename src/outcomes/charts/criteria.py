"""Each criterion's own charts, chosen by its rule's chart kind, never by its id.

`criterion_figures(audit, criterion)` is the one entry point: the rule in
`outcomes.protocol.rules` names its chart kind (`Rule.chart`), and `CHARTS` maps each
kind to the function that draws it. Bands, targets and quotes come from the criterion.
Only the sessions (or completed courses) the criterion applies to are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from outcomes import schema, stats
from outcomes.charts.common import (
    MAX_POINTS,
    NOTE,
    axis_label,
    band_edges,
    clinicians,
    distribution,
    empty,
    floats,
    heatmap,
    legend_above,
    note,
    pct,
    sample_note,
    strip_by_clinician,
    unit_of,
    whole,
    within,
)
from outcomes.charts.style import MEANING, PALETTE, new_figure, target_band, target_line
from outcomes.protocol import Criterion, Indicator
from outcomes.protocol.rules import condition_text, range_text

if TYPE_CHECKING:
    from outcomes.audit import Audit

#: Most courses the course timeline draws (those with the longest gaps).
MAX_COURSES = 60


def criterion_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """The charts of one criterion, as its rule's chart kind draws them."""
    return CHARTS[c.kind.chart](audit, c)


def applicable(audit: Audit, c: Criterion) -> np.ndarray:
    """Positions (in audit.sessions or audit.courses) of the units the criterion judged."""
    v = audit.verdicts
    mask = (v["criterion"] == c.id) & (v["verdict"] != "not applicable")
    return v["unit"].to_numpy()[mask.to_numpy()]


def _quote(c: Criterion) -> str:
    return f"Protocol: “{c.sheet}”." if c.sheet else f"Criterion: {c.describe()}."


# --------------------------------------------------------------------------- range


def range_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """A numeric setting against the protocol's band: by clinician, or as counts for a
    whole-number field (passes)."""
    s = audit.sessions.iloc[applicable(audit, c)]
    name = c.params["field"]
    lo, hi = c.range()
    values = floats(s[name])
    missing = int(np.isnan(values).sum())
    if whole(name):
        fig, ax = new_figure(f"{c.title}: {schema.label(name).lower()} in each session")
        info = distribution(ax, values, lo, hi, name, whole=True)
        ax.legend(fontsize=8)
        note(fig, _quote(c), f"{pct(info['inside'])} of {info['n']:,} documented sessions "
             f"within {range_text(lo, hi)}; {missing:,} not documented.")
        return [fig]
    who = clinicians(s["operator"])
    n_ops = max(1, pd.Series(who).nunique())
    fig, ax = new_figure(f"{c.title}: by clinician", height=1.6 + 0.55 * n_ops)
    info = strip_by_clinician(ax, values, who, lo, hi, name, MAX_POINTS)
    if info["total"]:
        legend_above(ax, ncols=3)
    note(fig, f"{_quote(c)} Clinicians with the fewest sessions inside the band are at the "
         f"top. Bar: middle half of the clinician's sessions; tick: median. {missing:,} "
         "sessions not documented.", sample_note(info["shown"], info["total"]))
    return [fig]


# --------------------------------------------------------------------------- pair


def pair_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """One field against another in each session (e.g. highest against start energy)."""
    s = audit.sessions.iloc[applicable(audit, c)]
    upper, lower = c.params["field"], c.params["other"]
    band = audit.protocol.range_of(lower) or (None, None)
    a, b = floats(s[lower]), floats(s[upper])
    ok = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[ok], b[ok]
    fig, (ax, ax2) = new_figure(c.title, width=10, height=4.8, ncols=2, width_ratios=[1.1, 1])
    if len(a) == 0:
        empty(ax, "no session with both values documented")
        empty(ax2, "")
        return [fig]
    pairs = pd.DataFrame({"a": np.round(a * 2) / 2, "b": np.round(b * 2) / 2})
    rounded = bool(np.any(pairs["a"].to_numpy() != a) or np.any(pairs["b"].to_numpy() != b))
    counts = pairs.value_counts().reset_index(name="n")
    down = (counts["b"] < counts["a"]).to_numpy()
    size = 12 + 400 * np.sqrt(counts["n"].to_numpy() / counts["n"].max())
    unit = unit_of(lower)
    if band != (None, None):
        target_band(ax, *band, axis="x",
                    label=f"{schema.label(lower).lower()} protocol {range_text(*band, unit)}")
    ax.scatter(counts["a"][~down], counts["b"][~down], s=size[~down], alpha=0.55,
               color=MEANING["compliant"], marker="o", linewidths=0,
               label="at least as high (compliant)", zorder=3)
    ax.scatter(counts["a"][down], counts["b"][down], s=size[down], alpha=0.8,
               color=MEANING["deviation"], marker="v", linewidths=0,
               label="lower (deviation)", zorder=3)
    both = np.concatenate([a, b])
    lim = (math.floor(both.min() / 5) * 5 - 2.5, math.ceil(both.max() / 5) * 5 + 2.5)
    ax.plot(lim, lim, color=PALETTE["black"], linestyle="--", linewidth=1,
            label="equal", zorder=2)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel(axis_label(lower))
    ax.set_ylabel(axis_label(upper))
    ax.set_title("Each circle: sessions with that pair of values\n(area = number of sessions)",
                 fontsize=9, loc="left")
    ax.legend(loc="upper left", fontsize=8)
    step = b - a
    vals, n = np.unique(np.round(step * 2) / 2, return_counts=True)
    neg = vals < 0
    ax2.bar(vals[~neg], n[~neg], width=1.6, color=MEANING["compliant"],
            label="at least as high")
    ax2.bar(vals[neg], n[neg], width=1.6, color=MEANING["deviation"], hatch="///",
            edgecolor="white", linewidth=0, label="lower")
    ax2.axvline(0, color=PALETTE["black"], linewidth=1)
    ax2.set_xlabel(f"{schema.label(upper)} − {schema.label(lower).lower()}"
                   + (f" ({unit})" if unit else ""))
    ax2.set_ylabel("Sessions (count)")
    ax2.set_title(f"{100 * (step < 0).mean():.1f} % of {len(step):,} sessions lower",
                  fontsize=9, loc="left")
    ax2.legend(fontsize=8)
    note(fig, f"{_quote(c)} Sessions missing either value are left out"
         + ("; values rounded to 0.5 for drawing." if rounded else "."))
    return [fig]


# --------------------------------------------------------------------------- yes/no checks


def check_table(checks: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Per check (label → (as the protocol wants, documented)): sessions, as wanted,
    against, not documented, percent as wanted."""
    rows = []
    for label, (ok, known) in checks.items():
        n = len(ok)
        good = int((ok & known).sum())
        bad = int((~ok & known).sum())
        rows.append({"label": label, "sessions": n, "as_protocol": good, "against": bad,
                     "not_documented": n - good - bad,
                     "percent": 100 * good / n if n else np.nan})
    return pd.DataFrame(rows)


def _checks_figure(s: pd.DataFrame, checks: dict[str, tuple[np.ndarray, np.ndarray]],
                   c: Criterion, words: tuple[str, str]) -> Figure:
    """Each check as a bar (as wanted / against / not documented) and by clinician."""
    table = check_table(checks)
    who = clinicians(s["operator"])
    ops = sorted(set(who))
    fig, (ax, ax2) = new_figure(f"{c.title}: each item", width=9,
                                height=2.6 + 0.95 * len(checks), nrows=2)
    y = np.arange(len(table))
    n = table["sessions"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        parts = [(100 * table["as_protocol"] / n, MEANING["compliant"], None, words[0]),
                 (100 * table["against"] / n, MEANING["deviation"], "///", words[1]),
                 (100 * table["not_documented"] / n, MEANING["not documented"], "..",
                  "not documented")]
    left = np.zeros(len(table))
    for vals, colour, hatch, lab in parts:
        ax.barh(y, vals, left=left, color=colour, hatch=hatch, edgecolor="white",
                linewidth=0.5, label=lab, height=0.6)
        left += np.nan_to_num(np.asarray(vals, dtype=float))
    tr = blended_transform_factory(ax.transAxes, ax.transData)
    for yy, r in zip(y, table.itertuples(), strict=True):
        ax.text(0.02, yy, f"{pct(r.percent)}", transform=tr, va="center", color="white",
                fontweight="bold", fontsize=9)
        ax.text(1.01, yy, f"{words[1]}: {r.against:,}\nnot documented: {r.not_documented:,}",
                transform=tr, va="center", fontsize=7)
    target_line(ax, c.target, axis="x", label=f"target {c.target:g} %")
    ax.set_yticks(y, table["label"])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set_xlim(0, 101.5)  # a 100 % target line stays visible
    ax.set_xlabel("Sessions (%)")
    ax.grid(False, axis="y")
    legend_above(ax, ncols=4)
    per = pd.DataFrame({label: ok & known for label, (ok, known) in checks.items()})
    heat = (per.groupby(who).mean() * 100).reindex(ops).T
    heatmap(fig, ax2, heat, [c.target] * len(checks), cbar_label=f"{words[0].capitalize()} (%)")
    ax2.set_title(f"{words[0].capitalize()} by clinician (% of sessions; bold: below the "
                  "target)", fontsize=9, loc="left", pad=26)
    note(fig, f"{_quote(c)} A session counts as compliant only when every item is "
         "documented as the protocol wants; a missing entry counts against it.")
    return fig


def _flag(s: pd.DataFrame, name: str, want: bool) -> tuple[np.ndarray, np.ndarray]:
    b = s[name].astype("boolean")
    return (b == want).fillna(False).to_numpy(dtype=bool), b.notna().to_numpy()


def items_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """Every yes/no item of a required_true / required_false criterion."""
    s = audit.sessions.iloc[applicable(audit, c)]
    want = c.kind.want
    checks = {schema.label(f): _flag(s, f, want) for f in c.params["fields"]}
    words = ("done", "not done") if want else ("absent", "present")
    return [_checks_figure(s, checks, c, words)]


def conditions_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """Every condition of an all_of criterion: met, not met, not documented."""
    s = audit.sessions.iloc[applicable(audit, c)]
    checks = {}
    for cond in c.params["conditions"]:
        if "equals" in cond:
            checks[condition_text(cond)] = _flag(s, cond["field"], bool(cond["equals"]))
        else:
            v = floats(s[cond["field"]])
            known = ~np.isnan(v)
            checks[condition_text(cond)] = (known & within(np.nan_to_num(v), cond.get("min"),
                                                           cond.get("max")), known)
    return [_checks_figure(s, checks, c, ("met", "not met"))]


# --------------------------------------------------------------------------- schedule


def interval_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """Days between treatments: overall, by clinician, and the courses with the longest gaps."""
    return [interval_distribution(audit.sessions, c, audit.protocol.new_course_after_days),
            interval_by_clinician(audit.sessions, c),
            course_timeline(audit.sessions, c, audit.protocol.new_course_after_days)]


def interval_distribution(sessions: pd.DataFrame, c: Criterion, new_course_after: int) -> Figure:
    """Days between consecutive sessions of a course, against the protocol's band."""
    lo, hi = c.range()
    days = floats(sessions["days_since_previous"])
    days = days[~np.isnan(days)]
    fig, ax = new_figure(f"Days between treatments (protocol: {range_text(lo, hi, 'days')})")
    info = distribution(ax, days, lo, hi, "days_since_previous", "intervals")
    ax.set_xlim(0, max(new_course_after, hi + 7) + 1)
    ax.set_xticks(np.arange(0, ax.get_xlim()[1], 7))
    ax.tick_params(axis="x", labelsize=8)
    sec = ax.secondary_xaxis("top", functions=(lambda d: d / 7, lambda w: w * 7))
    sec.set_xlabel("weeks", fontsize=8)
    sec.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="upper right")
    if info["n"]:
        short = 100 * (days < lo).mean()
        long = 100 * (days > hi).mean()
        note(fig, f"{_quote(c)} {info['n']:,} intervals (a course's first session has none): "
             f"{info['inside']:.0f} % within {range_text(lo, hi, 'days')}, {short:.0f} % "
             f"shorter, {long:.0f} % longer. A gap over {new_course_after} days starts a new "
             "course.")
    return fig


def interval_by_clinician(sessions: pd.DataFrame, c: Criterion,
                          max_points: int = MAX_POINTS) -> Figure:
    """Days between treatments by clinician (of the later session), against the band."""
    lo, hi = c.range()
    n_ops = max(1, pd.Series(clinicians(sessions["operator"])).nunique())
    fig, ax = new_figure(f"Days between treatments by clinician "
                         f"(protocol: {range_text(lo, hi, 'days')})",
                         height=1.6 + 0.55 * n_ops)
    info = strip_by_clinician(ax, floats(sessions["days_since_previous"]),
                              clinicians(sessions["operator"]), lo, hi,
                              "days_since_previous", max_points)
    if info["total"]:
        legend_above(ax, ncols=3)
    note(fig, f"{_quote(c)} Each interval counts for the clinician of the later session. "
         "Clinicians with the fewest intervals inside the band are at the top.",
         sample_note(info["shown"], info["total"]))
    return fig


def course_timeline(sessions: pd.DataFrame, c: Criterion, new_course_after: int,
                    max_courses: int = MAX_COURSES) -> Figure:
    """Each course as a row of session marks; the courses with the longest gaps first."""
    lo, hi = c.range()
    s = pd.DataFrame({
        "course": sessions["course_id"].astype("string").to_numpy(dtype=object),
        "patient": sessions["patient_id"].astype("string").to_numpy(dtype=object),
        "who": clinicians(sessions["operator"]),
        "date": pd.to_datetime(sessions["session_date"]).to_numpy(),
        "gap": floats(sessions["days_since_previous"]),
    })
    g = s.groupby("course", sort=False)
    per = pd.DataFrame({"max_gap": g["gap"].max(), "n": g.size()})
    total = len(per)
    per = per.fillna({"max_gap": -1}).reset_index()
    pick = per.sort_values(["max_gap", "n", "course"], ascending=[False, False, True])
    pick = pick.head(max_courses)
    rows = len(pick)
    fig, ax = new_figure("Treatment courses with the longest gaps between sessions",
                         height=1.8 + 0.17 * max(rows, 5))
    if rows == 0:
        empty(ax, "no courses")
        return fig
    sel = s[s["course"].isin(set(pick["course"]))].sort_values(["course", "date"])
    first = sel.groupby("course")["date"].transform("min")
    sel = sel.assign(day=(sel["date"] - first).dt.days.to_numpy(dtype=float))
    ypos = {cid: i for i, cid in enumerate(pick["course"])}
    sel = sel.assign(y=sel["course"].map(ypos).to_numpy(dtype=float))
    prev_day = sel.groupby("course")["day"].shift(1).to_numpy(dtype=float)
    has_prev = ~np.isnan(prev_day)
    gap = sel["day"].to_numpy() - prev_day
    ok_gap = has_prev & within(np.nan_to_num(gap), lo, hi)
    bad_gap = has_prev & ~ok_gap
    y = sel["y"].to_numpy()
    ax.hlines(y[ok_gap], prev_day[ok_gap], sel["day"].to_numpy()[ok_gap],
              color=MEANING["compliant"], linewidth=2, zorder=2,
              label=f"gap within {range_text(lo, hi, 'days')}")
    ax.hlines(y[bad_gap], prev_day[bad_gap], sel["day"].to_numpy()[bad_gap],
              color=MEANING["deviation"], linewidth=2, linestyles=(0, (2, 1)), zorder=2,
              label=f"gap outside {range_text(lo, hi, 'days')} (dashed)")
    ax.plot(sel["day"], y, linestyle="none", marker="o", markersize=5,
            color=PALETTE["black"], zorder=3, label="session")
    last = sel.groupby("course")[["who"]].last()
    first_patient = sel.groupby("course")[["patient"]].first()
    labels = [f"{first_patient.loc[r.course, 'patient']} · {last.loc[r.course, 'who']}"
              for r in pick.itertuples()]
    ax.set_yticks(np.arange(rows), labels, fontsize=7)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.grid(False, axis="y")
    ax.set_xlabel("Days since the course's first session (days)")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9, frameon=True)
    shown = (f"{rows} of {total:,} courses: those with the longest gap between two sessions"
             if rows < total else f"all {total:,} courses, longest gap first")
    note(fig, f"{_quote(c)} Each row is one course (patient · clinician of the last "
         f"session); {shown}. A gap over {new_course_after} days would start a new course.")
    return fig


def course_length_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """Sessions in each completed course against the protocol's range."""
    courses = audit.courses
    lo, hi = c.range()
    done = courses.iloc[applicable(audit, c)]
    n = done["sessions"].to_numpy(dtype="float64")
    fig, ax = new_figure(f"Sessions per completed course (protocol: {range_text(lo, hi)})")
    info = distribution(ax, n, lo, hi, "sessions", "courses", whole=True)
    ax.set_xlabel("Sessions in the course (number)")
    if info["n"]:
        ax.set_xticks(np.arange(1, int(n.max()) + 1))
        ax.legend(fontsize=8)
    note(fig, f"{_quote(c)} {info['n']:,} completed courses (no session for "
         f"{audit.protocol.new_course_after_days} days after the last one); "
         f"{pct(info['inside'])} have {range_text(lo, hi)} sessions. "
         f"{len(courses) - len(done):,} courses still running are left out.")
    return [fig]


# --------------------------------------------------------------------------- follow-up


def assessment_figures(audit: Audit, c: Criterion) -> list[Figure]:
    """Days from a course's last session to its assessment, against the window."""
    lo, hi = c.range()
    v = audit.verdicts
    mine = ((v["criterion"] == c.id) & (v["verdict"] != "not applicable")).to_numpy()
    days = v["observed"].to_numpy(dtype="float64")[mine]
    fig, ax = new_figure(f"{c.title}: days from the last session to the assessment")
    if not mine.any():
        empty(ax, "no completed course whose window has ended"
              if audit.has_outcomes else "no outcomes file: not evaluated")
        note(fig, _quote(c))
        return [fig]
    info = distribution(ax, days, lo, hi, "days_since_previous", "courses")
    ax.set_xlabel("Days from the course's last session to the nearest assessment (days)")
    if info["n"]:
        ax.legend(fontsize=8)
    never = int(np.isnan(days).sum())
    note(fig, f"{_quote(c)} {len(days):,} courses eligible; {pct(info['inside'] if info['n'] else np.nan)} "
         f"of the {info['n']:,} assessed were assessed within {range_text(lo, hi, 'days')}; "
         f"{never:,} have no assessment after the course.")
    return [fig]


#: Chart kind (Rule.chart) → the function that draws a criterion of that kind.
CHARTS: dict[str, Callable[[Any, Criterion], list[Figure]]] = {
    "distribution": range_figures,
    "pair": pair_figures,
    "items": items_figures,
    "conditions": conditions_figures,
    "intervals": interval_figures,
    "course_sizes": course_length_figures,
    "assessment": assessment_figures,
}


# --------------------------------------------------------------------------- indicators


def indicator_figure(audit: Audit, ind: Indicator) -> Figure:
    """A monitored line of the sheet: the share of yes by clinician, or the values by
    clinician (no band: the sheet sets no target)."""
    s = audit.sessions
    who = clinicians(s["operator"])
    if ind.statistic == "share_true":
        b = s[ind.field].astype("boolean")
        frame = pd.DataFrame({"yes": b.fillna(False).to_numpy(dtype=bool),
                              "known": b.notna().to_numpy()}).groupby(who).sum()
        frame = frame.sort_values("yes")
        k, n = frame["yes"].to_numpy(float), frame["known"].to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = 100 * k / n
        lo_ci, hi_ci = stats.wilson_ci(k, n)
        fig, ax = new_figure(f"{ind.title}: by clinician", height=1.6 + 0.5 * len(frame))
        y = np.arange(len(frame))
        ax.barh(y, p, color=MEANING["compliant"], height=0.6)
        ax.errorbar(p, y, xerr=[p - 100 * lo_ci, 100 * hi_ci - p], fmt="none",
                    ecolor=PALETTE["black"], capsize=3, linewidth=1)
        ax.set_yticks(y, [f"{w}\n{int(m):,} documented" for w, m in zip(frame.index, n,
                                                                        strict=True)])
        ax.set_xlim(0, 101)
        ax.set_xlabel(f"{schema.label(ind.field)}: yes (% of documented sessions, 95 % interval)")
        ax.grid(False, axis="y")
    else:
        n_ops = max(1, pd.Series(who).nunique())
        fig, ax = new_figure(f"{ind.title}: by clinician", height=1.6 + 0.55 * n_ops)
        info = strip_by_clinician(ax, floats(s[ind.field]), who, None, None, ind.field,
                                  MAX_POINTS)
        if info["total"]:
            legend_above(ax, ncols=3)
    note(fig, f"Protocol: “{ind.sheet}”. Monitored without a target." if ind.sheet
         else "Monitored without a target.")
    return fig


__all__ = ["CHARTS", "MAX_COURSES", "NOTE", "applicable", "band_edges", "check_table",
           "criterion_figures", "indicator_figure"]
