"""Compliance charts across criteria: every criterion at a glance, compliance over time
(p-charts with the runs rules), and clinicians compared (funnel plots, heat map).

Every function takes audit tables (and the Protocol where a target is drawn) and returns
a matplotlib Figure made with :func:`outcomes.charts.style.new_figure`; pyplot is never
used. The small ``*_table`` / ``monthly_p_chart`` helpers return the numbers a chart
draws, so tests, the report text and the charts agree. Each criterion's own charts are
in :mod:`outcomes.charts.criteria`.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory
from scipy.stats import binom, norm

from outcomes import stats
from outcomes.charts.common import empty, heatmap, legend_above, note, spread
from outcomes.charts.style import MEANING, PALETTE, new_figure, target_line
from outcomes.protocol import Protocol

STATUS_STYLE = {  # marker shape carries the status too, not colour alone
    "met": (MEANING["compliant"], "o", "target met"),
    "inconclusive": (MEANING["not documented"], "s", "inconclusive (interval spans the target)"),
    "not met": (MEANING["deviation"], "D", "target not met"),
    "not recorded": (PALETTE["grey"], "X", "not recorded in the data"),
}


def compliance_summary(summary: pd.DataFrame, protocol: Protocol | None = None) -> Figure:
    """Every criterion: percent compliant with its 95 % interval and its target, lowest first."""
    s = summary[summary["eligible"] > 0].sort_values("percent", kind="stable")
    s = s.reset_index(drop=True)
    fig, ax = new_figure("Compliance with each protocol step, least followed first", width=10,
                         height=1.6 + 0.42 * max(len(s), 3))
    if s.empty:
        empty(ax, "no eligible records")
        return fig
    y = np.arange(len(s))
    pct = s["percent"].to_numpy(dtype=float)
    clustered = "ci_low_clustered" in s
    lo = s["ci_low_clustered" if clustered else "ci_low"].to_numpy(dtype=float)
    hi = s["ci_high_clustered" if clustered else "ci_high"].to_numpy(dtype=float)
    ax.hlines(y, lo, hi, color=PALETTE["black"], linewidth=1.5, zorder=2)
    for status, (colour, marker, label) in STATUS_STYLE.items():
        m = (s["status"] == status).to_numpy()
        if m.any():
            ax.scatter(pct[m], y[m], color=colour, marker=marker, s=55, zorder=3,
                       edgecolor=PALETTE["black"], linewidths=0.5, label=label)
    ax.scatter(s["target"], y, marker="|", s=220, color=MEANING["target"], linewidths=2.5,
               zorder=2, label="target")
    left = max(0.0, math.floor(min(np.nanmin(lo), s["target"].min()) / 10) * 10 - 10)
    ax.set_xlim(left, 100.5)
    levels = _levels(protocol)
    units = {"course": "courses", "session": "sessions", "first_session": "sessions"}
    ax.set_yticks(y, [f"{t}\n{int(e):,} {units.get(levels.get(str(c), ''), 'eligible')}"
                      for t, e, c in zip(s["title"], s["eligible"], s["criterion"])],
                  fontsize=8)
    ax.set_ylim(len(s) - 0.5, -0.5)
    ax.grid(False, axis="y")
    tr = blended_transform_factory(ax.transAxes, ax.transData)
    for yy, p_, t in zip(y, pct, s["target"]):
        ax.text(1.01, yy, f"{p_:.0f} % (target {t:g} %)", transform=tr, va="center", fontsize=8)
    ax.set_xlabel("Compliant (% of eligible sessions or courses, with 95 % interval)")
    legend_above(ax, ncols=4)
    note(fig, "Line: Wilson 95 % interval" + (", widened for the sessions of one patient "
                                              "being alike (patients as clusters)"
                                              if clustered else "") +
         ". Met: the whole interval is at or above the target; "
          "not met: below it; inconclusive: the interval spans the target. A 100 % target is "
          "met only with no miss. Not documented counts as not compliant.")
    return fig


def _levels(protocol: Protocol | None) -> dict[str, str]:
    return {} if protocol is None else {c.id: c.level for c in protocol.criteria}


# --------------------------------------------------------------------------- over time


def monthly_p_chart(monthly: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """Monthly eligible/compliant of one criterion with `stats.p_chart` columns.

    `monthly` is `audit.summary("month")`. Every month between the first and last month of
    the table is present (a month with nothing eligible has `p` missing).
    """
    months = pd.PeriodIndex(monthly["month"].astype(str), freq="M")
    cols = ["month", "eligible", "compliant"]
    if len(months) == 0:
        return pd.DataFrame(columns=[*cols, "p", "centre", "lcl", "ucl", "signal",
                                     "runs_signal"])
    full = pd.period_range(months.min(), months.max(), freq="M")
    m = monthly.assign(month=months)
    m = m[m["criterion"].astype(str) == criterion]
    d = (m.groupby("month")[["eligible", "compliant"]].sum()
         .reindex(full, fill_value=0))
    pc = stats.p_chart(d["compliant"].astype("float64"), d["eligible"].astype("float64"))
    out = pd.concat([d, pc], axis=1)
    out.index.name = "month"
    return out.reset_index()


def runs_text(pc: pd.DataFrame) -> str:
    """The Anhøj runs analysis of a p-chart in words."""
    p = pc["p"].to_numpy(dtype=float)
    if not np.isfinite(p).any():
        return "Runs analysis (Anhøj rules): no data."
    r = stats.runs_analysis(p, centre=float(pc["centre"].iloc[0]))
    if r["n_useful"] == 0:
        return "Runs analysis (Anhøj rules): every month on the centre line, no signal."
    if r["signal"]:
        why = []
        if r["longest_run"] > r["longest_run_max"]:
            why.append(f"{r['longest_run']} months in a row on one side of the centre line "
                       f"(more than {r['longest_run_max']} is unlikely by chance)")
        if r["crossings"] < r["crossings_min"]:
            why.append(f"only {r['crossings']} crossings of the centre line "
                       f"(fewer than {r['crossings_min']} is unlikely by chance)")
        return ("Runs analysis (Anhøj rules): SIGNAL, " + " and ".join(why)
                + ": compliance has shifted, not just varied.")
    return (f"Runs analysis (Anhøj rules): no signal (longest run {r['longest_run']}, limit "
            f"{r['longest_run_max']}; {r['crossings']} crossings, at least "
            f"{r['crossings_min']} expected): month-to-month variation looks random.")


def _month_ticks(ax: Axes, months: pd.Series, max_ticks: int = 12, fontsize: int = 8) -> None:
    n = len(months)
    step = max(1, math.ceil(n / max_ticks))
    pos = np.arange(0, n, step)
    labels = [pd.Period(months.iloc[i]).strftime("%b\n%Y") for i in pos]
    ax.set_xticks(pos, labels, fontsize=fontsize)


def _draw_p_chart(ax: Axes, pc: pd.DataFrame, target: float | None, small: bool = False) -> None:
    x = np.arange(len(pc))
    edges = np.arange(len(pc) + 1) - 0.5
    for col, lab in (("ucl", "control limits (3 sigma)"), ("lcl", None)):
        ax.stairs(100 * pc[col].to_numpy(dtype=float), edges, baseline=None,
                  color=MEANING["limit"], linewidth=1, label=lab, gid=f"p-chart-{col}")
    centre = float(pc["centre"].iloc[0]) if len(pc) else np.nan
    runs = bool(pc["runs_signal"].iloc[0]) if len(pc) else False
    ax.axhline(100 * centre, color=PALETTE["black"], linewidth=1,
               linestyle="--" if runs else "-",
               label=f"centre {100 * centre:.0f} %" + (" (dashed: runs signal)" if runs else ""))
    p = 100 * pc["p"].to_numpy(dtype=float)
    ax.plot(x, p, color=MEANING["compliant"], marker="o", markersize=3 if small else 5,
            linewidth=1.2, label="monthly compliance", gid="p-chart-p")
    sig = pc["signal"].to_numpy(dtype=bool)
    ax.scatter(x[sig], p[sig], marker="D", s=30 if small else 70, color=MEANING["signal"],
               edgecolor=PALETTE["black"], linewidths=0.8, zorder=5,
               label="outside the limits (special cause)", gid="p-chart-signal")
    if target is not None:
        target_line(ax, target, axis="y", label=f"target {target:g} %")
    ax.set_xlim(-0.7, len(pc) - 0.3)
    finite = p[np.isfinite(p)]
    lcl = 100 * pc["lcl"].to_numpy(dtype=float)
    low_vals = np.concatenate([finite, lcl[np.isfinite(lcl)], [target or 100]])
    bottom = max(0.0, math.floor(np.min(low_vals) / 10) * 10 - 5) if low_vals.size else 0.0
    ax.set_ylim(bottom, 102)


def compliance_over_time(monthly: pd.DataFrame, protocol: Protocol, criterion: str) -> Figure:
    """Monthly compliance of one criterion as a p-chart, special causes marked."""
    c = protocol.criterion(criterion)
    pc = monthly_p_chart(monthly, criterion)
    fig, ax = new_figure(f"{c.title}: compliance month by month (p-chart)", height=4.3)
    if pc["eligible"].sum() == 0:
        empty(ax, "no eligible records")
        return fig
    _draw_p_chart(ax, pc, c.target)
    _month_ticks(ax, pc["month"])
    unit = "courses (by month of the last session)" if c.level == "course" else "sessions"
    ax.set_ylabel(f"Compliant (% of eligible {unit.split(' ')[0]})")
    ax.set_xlabel("Month")
    legend_above(ax, ncols=3)
    n_sig = int(pc["signal"].sum())
    months = ", ".join(pd.Period(m).strftime("%b %Y") for m in pc.loc[pc["signal"], "month"])
    note(fig, runs_text(pc),
          (f"{n_sig} month(s) outside the 3-sigma limits: {months}." if n_sig else
           "No month outside the 3-sigma limits.")
          + f" Each point: eligible {unit} that month; limits are wider in months with fewer.")
    return fig


def over_time_criteria(monthly: pd.DataFrame, summary: pd.DataFrame, k: int = 3) -> list[str]:
    """The k criteria to show as single p-charts: signals first, then the least followed."""
    rows = []
    for cid in summary.loc[summary["eligible"] > 0, "criterion"].astype(str):
        pc = monthly_p_chart(monthly, cid)
        if pc.empty:
            continue
        pct = float(summary.loc[summary["criterion"] == cid, "percent"].iloc[0])
        rows.append((-(int(pc["signal"].sum()) + 2 * bool(pc["runs_signal"].iloc[0])), pct, cid))
    return [cid for *_, cid in sorted(rows)[:k]]


def compliance_over_time_overview(monthly: pd.DataFrame, protocol: Protocol,
                                  ncols: int = 3) -> Figure:
    """Small multiples: every criterion's monthly p-chart on one page."""
    ids = [c.id for c in protocol.criteria]
    nrows = max(1, math.ceil(len(ids) / ncols))
    fig, axes = new_figure("Monthly compliance, every protocol step (p-charts)",
                           width=11, height=1.9 * nrows + 1.2, nrows=nrows, ncols=ncols,
                           sharex=True, squeeze=False)
    flat = list(axes.flat)
    months = None
    flagged = []
    for ax, cid in zip(flat, ids):
        c = protocol.criterion(cid)
        pc = monthly_p_chart(monthly, cid)
        if pc.empty or pc["eligible"].sum() == 0:
            empty(ax, f"{c.title}\nno eligible records")
            continue
        months = pc["month"]
        _draw_p_chart(ax, pc, c.target, small=True)
        tag = ""
        if bool(pc["runs_signal"].iloc[0]):
            tag = " ▲ shift"
            flagged.append(c.title)
        ax.set_title(textwrap.shorten(c.title, 46, placeholder="…") + tag, fontsize=8,
                     loc="left", fontweight="bold" if tag else "normal")
        ax.tick_params(labelsize=7)
    for ax in flat[len(ids):]:
        ax.set_visible(False)
    if months is not None:
        for ax in flat[:len(ids)]:
            _month_ticks(ax, months, max_ticks=5, fontsize=7)
    for row in axes:
        row[0].set_ylabel("Compliant (%)", fontsize=8)
    handles = [Line2D([], [], color=MEANING["compliant"], marker="o", markersize=4,
                      label="monthly compliance"),
               Line2D([], [], color=MEANING["limit"], label="control limits (3 sigma)"),
               Line2D([], [], color=PALETTE["black"], label="centre (dashed: runs signal)"),
               Line2D([], [], color=MEANING["target"], linestyle="--", label="target"),
               Line2D([], [], color=MEANING["signal"], marker="D", linestyle="none",
                      markeredgecolor=PALETTE["black"], label="outside the limits")]
    fig.legend(handles=handles, loc="outside upper right", ncols=3, fontsize=8)
    note(fig, "▲ shift: the Anhøj runs rules find a sustained shift in "
          + (", ".join(flagged) if flagged else "no step") + ". Diamonds: months outside "
          "the 3-sigma limits (special causes). Each panel has its own vertical scale.")
    return fig


# --------------------------------------------------------------------------- clinicians


POSITIONS = ("below the 99.8 % limit", "below the 95 % limit", "within the limits",
             "above the 95 % limit", "above the 99.8 % limit")


def funnel_tables(by_operator: pd.DataFrame, targets: dict[str, float] | None = None,
                  leave_out: bool = False, adjust: bool = True) -> pd.DataFrame:
    """Every criterion's clinicians on its funnel, with q-values across all of them.

    Per criterion and clinician: eligible, compliant, percent, the centre `p0` (percent),
    `tau2` (overdispersion, Spiegelhalter 2005, as FunnelPlotR; 0 when none or when
    `adjust` is off), the 95 % and 99.8 % limits at the clinician's n (the limits drawn:
    exact binomial, or on the arcsine scale with tau2 added), the `position` against them,
    the two-sided `p_value` and the Benjamini–Hochberg `q_value` over every criterion ×
    clinician compared; `beyond_chance` is q < 0.05. The centre is all clinicians' rate,
    or the criterion's target with `targets` ({criterion: percent}); with `leave_out`
    each clinician is judged against the others' rate, without their own records.
    """
    parts = [_funnel_one(d, targets.get(str(cid)) if targets else None, leave_out, adjust)
             .assign(criterion=str(cid))
             for cid, d in by_operator.groupby(by_operator["criterion"].astype(str),
                                               sort=False)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=[*FUNNEL_COLUMNS, "q_value", "beyond_chance"])
    t = pd.concat(parts, ignore_index=True)
    t["q_value"] = stats.bh_qvalues(t["p_value"].to_numpy(dtype="float64"))
    t["beyond_chance"] = t["q_value"] < 0.05
    return t


FUNNEL_COLUMNS = ["criterion", "operator", "eligible", "compliant", "percent", "p0", "tau2",
                  "low95", "high95", "low998", "high998", "position", "p_value",
                  "position_unadjusted"]


def _funnel_one(d: pd.DataFrame, target: float | None, leave_out: bool,
                adjust: bool) -> pd.DataFrame:
    d = d[d["eligible"] > 0]
    out = pd.DataFrame({"operator": d["operator"].astype(str).to_numpy(),
                        "eligible": d["eligible"].to_numpy(dtype="int64"),
                        "compliant": d["compliant"].to_numpy(dtype="int64")})
    if out.empty:
        return out
    x = out["compliant"].to_numpy(dtype=float)
    n = out["eligible"].to_numpy(dtype=float)
    centre = target / 100 if target is not None else x.sum() / n.sum()
    tau2 = float(stats.overdispersion(x, n, p0=centre)["tau2"]) if adjust else 0.0
    if leave_out and target is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            p0 = np.where(n.sum() > n, (x.sum() - x) / (n.sum() - n), np.nan)
    else:
        p0 = np.full(len(n), centre)
    out["percent"] = 100 * x / n
    out["p0"] = 100 * p0
    out["tau2"] = tau2
    for level, tag in ((0.95, "95"), (0.998, "998")):
        lo, hi = _limits(p0, n, level, tau2)
        out[f"low{tag}"] = 100 * lo
        out[f"high{tag}"] = 100 * hi
    # the position is read off the limits drawn; a full mark (or zero) cannot lie beyond
    # the limit on its side, whatever the interpolated curve does next to 100 % (or 0)
    p = out["percent"]
    above_ok, below_ok = x < n, x > 0
    out["position"] = np.select(
        [(p < out["low998"]) & below_ok, (p < out["low95"]) & below_ok,
         (p > out["high998"]) & above_ok, (p > out["high95"]) & above_ok],
        [POSITIONS[0], POSITIONS[1], POSITIONS[4], POSITIONS[3]], POSITIONS[2])
    out["p_value"] = _two_sided_p(x, n, p0, tau2)
    # what the plain binomial limits would say: one very different clinician among few
    # widens the adjusted limits, so the reader sees both
    lo, hi = _limits(p0, n, 0.998, 0.0)
    out["position_unadjusted"] = np.select(
        [(p < 100 * lo) & below_ok, (p > 100 * hi) & above_ok],
        [POSITIONS[0], POSITIONS[4]], "within the 99.8 % limits")
    return out.sort_values("percent", kind="stable").reset_index(drop=True)


def _limits(p0: np.ndarray, n: np.ndarray, level: float,
            tau2: float) -> tuple[np.ndarray, np.ndarray]:
    """funnel_limits at each (p0, n); NaN where p0 is unknown."""
    lo, hi = np.full(len(n), np.nan), np.full(len(n), np.nan)
    ok = np.isfinite(p0)
    if ok.any():
        a, b = stats.funnel_limits(p0[ok], n[ok], level, tau2=tau2)
        lo[ok], hi[ok] = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return lo, hi


def _two_sided_p(x: np.ndarray, n: np.ndarray, p0: np.ndarray, tau2: float) -> np.ndarray:
    """Two-sided p of each clinician against the centre: exact binomial without
    overdispersion, else the random-effects z on the arcsine scale (Spiegelhalter 2005)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if tau2 > 0:
            z = ((np.arcsin(np.sqrt(x / n)) - np.arcsin(np.sqrt(p0)))
                 / np.sqrt(1 / (4 * n) + tau2))
            return 2 * norm.sf(np.abs(z))
        p = 2 * np.minimum(binom.cdf(x, n, p0), binom.sf(x - 1, n, p0))
    return np.minimum(p, 1.0)


def funnel_table(by_operator: pd.DataFrame, criterion: str, **options: Any) -> pd.DataFrame:
    """One criterion's rows of `funnel_tables` (q-values still across every criterion)."""
    t = funnel_tables(by_operator, **options)
    return t[t["criterion"] == criterion].reset_index(drop=True)


def funnel_criteria(by_operator: pd.DataFrame, k: int = 3) -> list[str]:
    """The k criteria on which clinicians differ most: most outside the plain 99.8 %
    limits, then most beyond chance (adjusted), then the widest spread."""
    t = funnel_tables(by_operator)
    if t.empty:
        return []
    g = t.groupby("criterion", sort=False)
    rank = pd.DataFrame({
        "beyond": g["beyond_chance"].sum(),
        "plain": g["position_unadjusted"].agg(lambda p: int((p != "within the 99.8 % limits")
                                                            .sum())),
        "spread": g["percent"].max() - g["percent"].min()})
    rank = rank.sort_values(["plain", "beyond", "spread"], ascending=False, kind="stable")
    return list(rank.index[:k])


def clinician_funnel(by_operator: pd.DataFrame, protocol: Protocol, criterion: str) -> Figure:
    """Funnel plot: each clinician's compliance against the number of eligible records."""
    c = protocol.criterion(criterion)
    t = funnel_table(by_operator, criterion)
    fig, ax = new_figure(f"{c.title}: clinicians compared (funnel plot)", width=9, height=5)
    if t.empty:
        empty(ax, "no eligible records")
        return fig
    p0 = float(t["p0"].iloc[0]) / 100
    tau2 = float(t["tau2"].iloc[0])
    nmax = int(t["eligible"].max())
    if nmax <= 1500:
        nn = np.arange(1, math.ceil(nmax * 1.1) + 1, dtype=float)
    else:
        nn = np.unique(np.round(np.geomspace(1, nmax * 1.1, 400)))
    styles = {0.95: ("--", "95 % limits"), 0.998: ("-", "99.8 % limits")}
    for level, (ls, lab) in styles.items():
        lo, hi = stats.funnel_limits(p0, nn, level, tau2=tau2)
        tag = "95" if level == 0.95 else "998"
        ax.plot(nn, 100 * np.asarray(lo), color=MEANING["limit"], linestyle=ls, linewidth=1.2,
                label=lab, gid=f"funnel-{tag}-low")
        ax.plot(nn, 100 * np.asarray(hi), color=MEANING["limit"], linestyle=ls, linewidth=1.2,
                gid=f"funnel-{tag}-high")
    if tau2 > 0:  # the plain binomial limits, for reference
        lo, hi = stats.funnel_limits(p0, nn, 0.998)
        ax.plot(nn, 100 * np.asarray(lo), color=MEANING["limit"], linestyle=":",
                linewidth=1, label="99.8 % limits without the adjustment",
                gid="funnel-998-plain-low")
        ax.plot(nn, 100 * np.asarray(hi), color=MEANING["limit"], linestyle=":",
                linewidth=1, gid="funnel-998-plain-high")
    ax.axhline(100 * p0, color=PALETTE["black"], linewidth=1,
               label=f"all clinicians {100 * p0:.1f} %")
    target_line(ax, c.target, axis="y", label=f"target {c.target:g} %")
    kinds = {  # position → (colour, marker, size, legend)
        POSITIONS[2]: (MEANING["compliant"], "o", 60, "within the 95 % limits"),
        POSITIONS[1]: (MEANING["not documented"], "s", 70, "outside 95 %, within 99.8 %"),
        POSITIONS[3]: (MEANING["not documented"], "s", 70, "outside 95 %, within 99.8 %"),
        POSITIONS[0]: (MEANING["deviation"], "v", 110, "below the 99.8 % limit"),
        POSITIONS[4]: (PALETTE["green"], "^", 110, "above the 99.8 % limit"),
    }
    seen: set[str] = set()
    for pos, (colour, marker, size, lab) in kinds.items():
        m = (t["position"] == pos).to_numpy()
        if m.any():
            ax.scatter(t["eligible"][m], t["percent"][m], color=colour, marker=marker, s=size,
                       edgecolor=PALETTE["black"], linewidths=0.6, zorder=5,
                       label=None if lab in seen else lab, gid=f"funnel-points-{pos}")
            seen.add(lab)
    pts = t["percent"].to_numpy(dtype=float)
    nmin = float(t["eligible"].min())
    low_edge = float(100 * stats.funnel_limits(p0, max(1.0, nmin * 0.5), 0.998, tau2=tau2)[0])
    bottom = max(0.0, math.floor(min(pts.min(), low_edge, c.target) / 5) * 5 - 5)
    top = 101.5
    ax.set_ylim(bottom, top)
    ax.set_xlim(0, nmax * 1.45)
    ax.set_xticks([x for x in MaxNLocator(6, integer=True).tick_values(0, nmax * 1.1)
                   if x <= nmax * 1.1])
    # names in a column right of the points, spread so they never overlap
    axes_pt = fig.get_figheight() * 72 * 0.62  # approximate plot-area height in points
    gap = (top - bottom) * 8 * 1.35 / axes_pt
    ly = spread(pts, gap, bottom + gap / 2, top - gap / 2)
    x_lab = nmax * 1.12
    for r, y_lab in zip(t.itertuples(), ly):
        outlier = r.position in (POSITIONS[0], POSITIONS[4])
        ax.annotate(f"{r.operator}  {r.percent:.0f} % of {r.eligible:,}",
                    xy=(r.eligible, r.percent), xytext=(x_lab, y_lab), fontsize=8,
                    va="center", fontweight="bold" if outlier else "normal",
                    arrowprops={"arrowstyle": "-", "color": PALETTE["grey"], "linewidth": 0.6,
                                "shrinkA": 0, "shrinkB": 4}, zorder=6)
    unit = "courses" if c.level == "course" else "sessions"
    ax.set_xlabel(f"Eligible {unit} per clinician (n)")
    ax.set_ylabel(f"Compliant (% of eligible {unit})")
    legend_above(ax, ncols=3)
    beyond = t[t["beyond_chance"]]
    named = ", ".join(f"{r.operator} ({'below' if r.percent < r.p0 else 'above'})"
                      for r in beyond.itertuples())
    plain = t.loc[t["position_unadjusted"] == POSITIONS[0], "operator"].tolist()
    method = (f"Limits widened for overdispersion (τ² = {tau2:.4f}: the clinicians differ more "
              "than chance alone would make them; random-effects limits on the arcsine scale, "
              "Spiegelhalter 2005; dotted: the limits without it"
              + (f", below which {', '.join(plain)}" if plain else "") + ")" if tau2 > 0 else
              "Limits around the overall rate for a clinician with n eligible records (exact "
              "binomial; no overdispersion found)")
    note(fig, f"Protocol: “{c.sheet}”. {method}. Beyond chance after allowing for every "
         "clinician and step compared (Benjamini–Hochberg q < 0.05): "
         + (named + "." if named else "no clinician."))
    return fig


def clinician_heatmap(by_operator: pd.DataFrame, summary: pd.DataFrame,
                      protocol: Protocol | None = None) -> Figure:
    """Percent compliant, protocol step × clinician, least-followed steps at the top."""
    s = summary[summary["eligible"] > 0].sort_values("percent", kind="stable")
    ops = sorted(by_operator["operator"].astype(str).unique())
    d = by_operator.assign(operator=by_operator["operator"].astype(str),
                           criterion=by_operator["criterion"].astype(str))
    pv = d.pivot_table(index="criterion", columns="operator", values="percent",
                       aggfunc="first", observed=True) if len(d) else pd.DataFrame()
    pv = pv.reindex(index=s["criterion"].astype(str), columns=ops)
    pv["All clinicians"] = s["percent"].to_numpy(dtype=float)
    pv.index = [f"{t} (target {g:g} %)" for t, g in zip(s["title"], s["target"])]
    fig, ax = new_figure("Which protocol steps are followed least, and by whom",
                         width=max(8.0, 3.8 + 0.95 * len(pv.columns)),
                         height=1.9 + 0.38 * max(len(pv), 3))
    if pv.empty:
        empty(ax, "no eligible records")
        return fig
    heatmap(fig, ax, pv, s["target"].to_numpy(dtype=float), separate_last=True,
             cbar_label="Compliant (% of eligible)")
    note(fig, "Percent of eligible sessions (courses for the course steps) that follow each "
          "step. Rows: least followed step at the top. Bold: below the step's target. "
          "–: no eligible record. Not documented counts as not compliant.")
    return fig

