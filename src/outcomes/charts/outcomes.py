"""Charts of patient outcomes, in the house style (outcomes.charts.style).

Each function takes the tables of ``outcomes.analysis`` and returns a matplotlib Figure
(no pyplot). Titles state the subject, axes carry units, colours come from the
Okabe–Ito palette and never carry meaning alone (groups are also named on the axis or
in the legend). The 3–6 month window, the instrument scales and their "improved"
thresholds, and the starting-energy range are read from the protocol and the
instrument registry, never typed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from outcomes import schema
from outcomes.analysis import CHANGE, FOLLOWED, NOT_FOLLOWED, at_risk_at
from outcomes.charts.style import CYCLE, MEANING, PALETTE, new_figure, target_band

__all__ = [
    "adverse_event_chart",
    "assessment_timing_chart",
    "cumulative_incidence_chart",
    "density_change_chart",
    "energy_outcome_chart",
    "final_results_chart",
    "group_comparison_chart",
    "recurrence_chart",
]

#: At most this many points or lines are drawn per panel (a fixed random subset).
MAX_DRAWN = 1500
GROUP_COLOURS = {FOLLOWED: PALETTE["blue"], NOT_FOLLOWED: PALETTE["orange"]}
_DAYS_PER_MONTH = 365.25 / 12
_ENERGY_NAMES = {"energy_start_mj": "starting energy", "energy_final_mj": "highest energy"}


def _months(days: tuple[int, int]) -> str:
    lo, hi = days
    return f"{round(lo / _DAYS_PER_MONTH)}–{round(hi / _DAYS_PER_MONTH)} months"


def _subset(n: int, limit: int = MAX_DRAWN, seed: int = 0) -> np.ndarray:
    """Indices of at most `limit` of n items (all when n <= limit), fixed by the seed."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f} %"


def _num(x: float, digits: int = 1, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "p –"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _scale_label(instrument: str, rater: str) -> str:
    """Axis label of an instrument's scale: range, unit and which way is better."""
    ins = schema.INSTRUMENTS.get(instrument)
    if ins is None:
        return f"{instrument} ({rater})"
    if ins.high is None:
        return f"{ins.title} ({ins.unit})"
    better = "higher" if ins.higher_is_better else "lower"
    return f"{rater} score ({ins.low:g}–{ins.high:g} {ins.unit}, {better} is better)"


def _figure(title: str, **kw: Any) -> tuple[Figure, Any]:
    """style.new_figure, with room kept at the bottom for its subtitle."""
    fig, axes = new_figure(title, **kw)
    if kw.get("subtitle"):
        _room_for_subtitle(fig)
    return fig, axes


def _room_for_subtitle(fig: Figure) -> None:
    """Keep the house-style subtitle (at the bottom edge) clear of the axes labels."""
    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set"):
        engine.set(rect=(0, 0.28 / fig.get_figheight(), 1, 1 - 0.28 / fig.get_figheight()))


def _grid(n: int, max_cols: int = 2) -> tuple[int, int]:
    cols = min(max_cols, max(n, 1))
    return math.ceil(max(n, 1) / cols), cols


def _flat(axes: Any) -> list[Axes]:
    return list(axes.flat) if hasattr(axes, "flat") else [axes]


def _empty(fig: Figure, axes: list[Axes], message: str) -> Figure:
    for ax in axes:
        ax.set_axis_off()
    axes[0].text(0.5, 0.5, message, ha="center", va="center", transform=axes[0].transAxes,
                 color=PALETTE["grey"])
    return fig


# =============================================================================================
# final results


def final_results_chart(windows: pd.DataFrame, summary: pd.DataFrame,
                        final_days: tuple[int, int]) -> Figure:
    """Score distribution at the final assessment, one panel per instrument and rater.

    Bars give the share of courses at each score of the instrument's scale (from the
    registry); the scores that count as "improved" sit in a shaded band labelled with
    the registry's definition, and the panel title carries n, median [IQR] and the
    share improved with its Wilson interval (from `summary`, final_summary).
    Continuous measures (hair density) are shown as a histogram with the median.
    """
    lo_d, hi_d = final_days
    title = (f"Results {_months(final_days)} after the last treatment "
             f"(final assessment {lo_d}–{hi_d} days after it)")
    f = windows[windows["is_final"].to_numpy(dtype=bool)]
    nrows, ncols = _grid(len(summary))
    fig, axes = _figure(title, width=11, height=3.4 * nrows + 0.6, nrows=nrows,
                           ncols=ncols, subtitle="One assessment per course: the first in "
                           "the protocol window. Shaded: what the instrument counts as "
                           "improved.")
    ax_list = _flat(axes)
    if summary.empty:
        return _empty(fig, ax_list, "no final assessments in the data")
    for ax, row in zip(ax_list, summary.itertuples(index=False), strict=False):
        ins = schema.INSTRUMENTS.get(row.instrument)
        here = ((f["instrument"].astype("string") == row.instrument)
                & (f["rater"].astype("string") == row.rater)).to_numpy(dtype=bool)
        x = f.loc[here, "score"].to_numpy(dtype="float64", na_value=np.nan)
        x = x[np.isfinite(x)]
        head = f"{ins.title if ins else row.instrument} ({row.rater}), n = {row.n}"
        if ins is not None and ins.high is not None:
            levels = np.arange(ins.low, ins.high + 1)
            share = np.array([(x == v).mean() * 100 if x.size else 0 for v in levels])
            improved = (levels >= ins.improved_at if ins.higher_is_better
                        else levels <= ins.improved_at) if ins.improved_at is not None \
                else np.zeros(levels.size, bool)
            colours = [PALETTE["blue"] if i else PALETTE["grey"] for i in improved]
            ax.bar(levels, share, color=colours, width=0.7, zorder=2)
            if improved.any():
                ax.axvspan(levels[improved].min() - 0.45, levels[improved].max() + 0.45,
                           color=MEANING["target"], alpha=0.12, zorder=0,
                           label=f"improved ({ins.improved_text})")
            ax.set_xticks(levels)
            ax.set_ylabel("courses (%)")
            head += (f"\nmedian {row.median:g} [IQR {row.q1:g}–{row.q3:g}], improved "
                     f"{_pct(row.improved)} (95 % CI {_pct(row.improved_ci_low)}–"
                     f"{_pct(row.improved_ci_high)})")
            if improved.any():
                head += f"\nshaded: {ins.improved_text.split(' (')[0]}"
        else:
            ax.hist(x, bins=min(30, max(5, int(np.sqrt(max(x.size, 1))))),
                    color=PALETTE["sky"], edgecolor="white", zorder=2)
            ax.axvline(row.median, color=PALETTE["black"], linestyle="--", linewidth=1.2,
                       label=f"median {row.median:g}")
            ax.legend(loc="upper right", fontsize=7)
            ax.set_ylabel("courses (n)")
            head += f"\nmedian {row.median:g} [IQR {row.q1:g}–{row.q3:g}]"
        ax.set_xlabel(_scale_label(row.instrument, row.rater))
        ax.set_title(head, fontsize=9, loc="left")
    for ax in ax_list[len(summary):]:
        ax.set_axis_off()
    return fig


def assessment_timing_chart(windows: pd.DataFrame, final_days: tuple[int, int]) -> Figure:
    """When assessments happened after the last treatment, with the protocol's window shaded.

    One count per course and assessment date (instruments on the same day count once).
    """
    lo_d, hi_d = final_days
    fig, ax = _figure(f"Timing of assessments after the last treatment (protocol: "
                         f"{_months(final_days)})", width=9, height=4)
    after = windows[windows["window"].isin(["early", "final", "followup"]).to_numpy(dtype=bool)]
    days = (after.drop_duplicates(["course_id", "assessment_date"])["days_from_last_session"]
            .to_numpy(dtype="float64", na_value=np.nan))
    days = days[np.isfinite(days)]
    target_band(ax, lo_d, hi_d, axis="x", label=f"protocol window {lo_d}–{hi_d} days")
    if days.size:
        top = max(days.max(), hi_d + 30)
        ax.hist(days, bins=np.arange(0, top + 15, 15), color=PALETTE["blue"],
                edgecolor="white", zorder=2, label="assessments")
    ax.set_xlabel("days after the course's last treatment")
    ax.set_ylabel("assessment visits (n)")
    ax.legend(loc="upper right", fontsize=8)
    return fig


# =============================================================================================
# change from baseline


def density_change_chart(paired: pd.DataFrame, summary: dict[str, Any]) -> Figure:
    """Baseline → final values per course (left) and the distribution of the change (right).

    The right panel marks the median change with its confidence interval (shaded) and
    zero (no change); the title carries the median and mean changes with intervals.
    """
    unit = summary.get("unit", "")
    title = (f"{summary.get('title', 'Change')}: change from baseline to the final "
             f"assessment ({unit})")
    fig, (ax1, ax2) = _figure(title, width=11, height=4.4, ncols=2,
                                 subtitle=f"n = {summary.get('n', 0)} courses with both "
                                 "values. Median change with its exact distribution-free "
                                 "95 % CI; mean with the paired t interval.")
    if paired.empty:
        return _empty(fig, [ax1, ax2], "no courses with a baseline and a final value")
    keep = _subset(len(paired))
    base = paired["baseline"].to_numpy(dtype="float64")
    fin = paired["final"].to_numpy(dtype="float64")
    for b, f_ in zip(base[keep], fin[keep], strict=True):
        ax1.plot([0, 1], [b, f_], color=PALETTE["grey"], alpha=0.25, linewidth=0.8, zorder=1)
    ax1.plot([0, 1], [np.median(base), np.median(fin)], color=PALETTE["blue"], linewidth=3,
             marker="o", zorder=3, label="median")
    ax1.set_xticks([0, 1], ["baseline", "final assessment"])
    ax1.set_xlim(-0.3, 1.3)
    ax1.set_ylabel(f"{summary.get('title', '')} ({unit})")
    shown = "" if len(keep) == len(paired) else f" ({len(keep)} of {len(paired)} drawn)"
    ax1.set_title(f"each line one course{shown}", fontsize=9, loc="left")
    ax1.legend(loc="upper left", fontsize=8)

    d = paired["change"].to_numpy(dtype="float64")
    ax2.hist(d, bins=min(30, max(5, int(np.sqrt(d.size)))), color=PALETTE["sky"],
             edgecolor="white", zorder=2)
    lo, hi = summary.get("median_ci_low"), summary.get("median_ci_high")
    if lo is not None and np.isfinite(lo):
        ax2.axvspan(lo, hi, color=PALETTE["blue"], alpha=0.25, zorder=1,
                    label=f"95 % CI of the median ({lo:g} to {hi:g})")
    ax2.axvline(summary["median_change"], color=PALETTE["blue"], linewidth=2,
                label=f"median change {summary['median_change']:+g}")
    ax2.axvline(0, color=PALETTE["black"], linestyle="--", linewidth=1, label="no change")
    ax2.set_xlabel(f"change, final − baseline ({unit})")
    ax2.set_ylabel("courses (n)")
    ax2.set_title(f"mean {_num(summary.get('mean_change'), signed=True)} (95 % CI "
                  f"{_num(summary.get('mean_ci_low'))} to {_num(summary.get('mean_ci_high'))}),"
                  f" Wilcoxon {_p(summary.get('wilcoxon_p'))}", fontsize=9, loc="left")
    ax2.legend(loc="upper left", fontsize=7)
    return fig


# =============================================================================================
# process and outcome


def group_comparison_chart(values: pd.DataFrame, comparison: pd.DataFrame,
                           groups: pd.DataFrame, criteria: Sequence[str] = ()) -> Figure:
    """Courses that followed the protocol against those that did not, one panel per measure.

    Each dot is a course (jittered); the bar is the group median with its IQR. Panel
    titles give the effect: rank-biserial r or the mean difference with its 95 % CI.
    """
    d = values.merge(groups[["course_id", "group"]], on="course_id", how="inner")
    d = d[d["group"].notna()]
    nrows, ncols = _grid(len(comparison), 3)
    named = f" (key criteria: {', '.join(criteria)})" if criteria else ""
    fig, axes = _figure(f"Did courses that followed the protocol do better?{named}", width=12,
                           height=3.6 * nrows + 0.6, nrows=nrows, ncols=ncols,
                           subtitle="Dots: courses (jittered). Bars: median and IQR. "
                           "r > 0: higher scores in the followed-protocol group.")
    ax_list = _flat(axes)
    if comparison.empty:
        return _empty(fig, ax_list, "no outcomes to compare")
    rng = np.random.default_rng(1)
    for ax, row in zip(ax_list, comparison.itertuples(index=False), strict=False):
        sub = d[(d["measure"] == row.measure) & (d["instrument"] == row.instrument)
                & (d["rater"] == row.rater)]
        ins = schema.INSTRUMENTS.get(row.instrument)
        ordinal = ins is not None and ins.high is not None and row.measure != CHANGE
        for xpos, name in enumerate((FOLLOWED, NOT_FOLLOWED)):
            y = sub.loc[sub["group"] == name, "value"].to_numpy(dtype="float64")
            keep = _subset(y.size)
            yy = y[keep] + (rng.uniform(-0.15, 0.15, keep.size) if ordinal else 0)
            xx = xpos + rng.uniform(-0.18, 0.18, keep.size)
            ax.scatter(xx, yy, s=8, alpha=0.45, color=GROUP_COLOURS[name], zorder=2,
                       linewidths=0)
            if y.size:
                q1, med, q3 = np.quantile(y, [0.25, 0.5, 0.75])
                ax.errorbar([xpos + 0.3], [med], yerr=[[med - q1], [q3 - med]], fmt="s",
                            color=PALETTE["black"], capsize=4, markersize=6, zorder=3)
        ax.set_xticks([0, 1], [f"{FOLLOWED}\n(n = {row.n_followed})",
                               f"{NOT_FOLLOWED}\n(n = {row.n_not})"])
        ax.set_xlim(-0.5, 1.6)
        if row.measure == CHANGE:
            ax.axhline(0, color=PALETTE["grey"], linestyle="--", linewidth=1)
            ax.set_ylabel(f"change from baseline ({ins.unit if ins else ''})")
        else:
            ax.set_ylabel(_scale_label(row.instrument, row.rater), fontsize=8)
        name = ins.title if ins else row.instrument
        what = "change from baseline" if row.measure == CHANGE else f"{row.rater}, final"
        eff = (f"r = {row.effect:.2f} ({row.effect_ci_low:.2f} to {row.effect_ci_high:.2f})"
               if row.effect_name.startswith("rank") else
               f"difference {row.effect:+.1f} ({row.effect_ci_low:+.1f} to "
               f"{row.effect_ci_high:+.1f})")
        ax.set_title(f"{name} ({what})\n{row.test}: {eff}, {_p(row.p)}", fontsize=9,
                     loc="left")
    for ax in ax_list[len(comparison):]:
        ax.set_axis_off()
    return fig


def energy_outcome_chart(energy_data: pd.DataFrame, rho: pd.DataFrame, protocol: Any,
                         energy: str = "energy_start_mj") -> Figure:
    """Course mean energy against each outcome, with the protocol's starting-energy range shaded.

    `energy_data` and `rho` are the two tables of results.spearman_energy.
    """
    lo, hi = protocol.range_of(energy) or (None, None)
    nrows, ncols = _grid(len(rho), 3)
    field = schema.fields("sessions").get(energy)
    unit = field.unit if field is not None and field.unit else "mJ"
    fig, axes = _figure("Energy and outcome: course mean energy against the result",
                           width=12, height=3.4 * nrows + 0.6, nrows=nrows, ncols=ncols,
                           subtitle="Spearman's rho with its 95 % CI (Fisher z). Shaded: the "
                           "protocol's starting-energy range.")
    ax_list = _flat(axes)
    if rho.empty:
        return _empty(fig, ax_list, "no outcomes to relate to energy")
    rng = np.random.default_rng(2)
    for ax, row in zip(ax_list, rho.itertuples(index=False), strict=False):
        sub = energy_data[(energy_data["measure"] == row.measure)
                          & (energy_data["instrument"] == row.instrument)
                          & (energy_data["rater"] == row.rater)]
        x = sub["energy"].to_numpy(dtype="float64")
        y = sub["value"].to_numpy(dtype="float64")
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        keep = _subset(x.size)
        ins = schema.INSTRUMENTS.get(row.instrument)
        ordinal = ins is not None and ins.high is not None and row.measure != CHANGE
        jitter = rng.uniform(-0.15, 0.15, keep.size) if ordinal else 0
        if lo is not None and energy == "energy_start_mj":
            target_band(ax, lo, hi, axis="x", label=f"protocol {lo:g}–{hi:g} {unit}")
        ax.scatter(x[keep], y[keep] + jitter, s=8, alpha=0.5, color=PALETTE["blue"],
                   linewidths=0, zorder=2)
        ax.set_xlabel(f"course mean {_ENERGY_NAMES.get(energy, energy)} ({unit})", fontsize=8)
        if row.measure == CHANGE:
            ax.set_ylabel(f"change from baseline ({ins.unit if ins else ''})", fontsize=8)
        else:
            ax.set_ylabel(_scale_label(row.instrument, row.rater), fontsize=8)
        name = ins.title if ins else row.instrument
        what = "change" if row.measure == CHANGE else row.rater
        ax.set_title(f"{name} ({what}), n = {row.n}\nrho = {_num(row.rho, 2)} "
                     f"({_num(row.ci_low, 2)} to {_num(row.ci_high, 2)}), {_p(row.p)}",
                     fontsize=9, loc="left")
    for ax in ax_list[len(rho):]:
        ax.set_axis_off()
    return fig


# =============================================================================================
# recurrence


def _censor_times(km: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times with censored observations and the survival there (for + marks)."""
    n = km["at_risk"].to_numpy(dtype="int64")
    leaving = n - np.r_[n[1:], 0]
    censored = leaving - km["events"].to_numpy(dtype="int64")
    hit = censored > 0
    return km["time"].to_numpy(dtype="float64")[hit], km["survival"].to_numpy()[hit]


def recurrence_chart(km: pd.DataFrame, summary: pd.DataFrame,
                     ticks: Sequence[float] | None = None) -> Figure:
    """Kaplan–Meier curve of recurrence-free courses with its 95 % band and numbers at risk.

    One curve per group of `km` (results.recurrence), + marks censored courses, the
    dashed line is 50 % (the median where it crosses). Numbers at risk at each tick are
    printed under the curve, one line per group.
    """
    groups = list(dict.fromkeys(km["group"])) if not km.empty else []
    fig, (ax, ax_r) = _figure(
        "Time to recurrence after the end of a course (Kaplan–Meier)", width=10,
        height=5.2 + 0.25 * len(groups), nrows=2, sharex=True,
        gridspec_kw={"height_ratios": [4, 0.5 + 0.35 * max(len(groups), 1)]},
        subtitle="Recurrence as noted at follow-up assessments; courses censored at their "
        "last assessment without recurrence. Band: 95 % CI (log-log).")
    if km.empty:
        return _empty(fig, [ax, ax_r], "no follow-up assessments with recurrence recorded")
    t_max = float(km["time"].max())
    if ticks is None:
        step = 90 if t_max > 360 else 30
        ticks = np.arange(0, t_max + step, step)
    ticks = np.asarray(ticks, dtype="float64")
    colours = {g: CYCLE[i % len(CYCLE)] for i, g in enumerate(groups)}
    colours.update({g: GROUP_COLOURS[g] for g in groups if g in GROUP_COLOURS})
    stats = summary.set_index("group")
    for g in groups:
        k = km[km["group"] == g]
        t = np.r_[0.0, k["time"].to_numpy(dtype="float64")]
        s = np.r_[1.0, k["survival"].to_numpy(dtype="float64")]
        lo = np.r_[1.0, k["ci_low"].to_numpy(dtype="float64")]
        hi = np.r_[1.0, k["ci_high"].to_numpy(dtype="float64")]
        med = stats.loc[g, "median_days"] if g in stats.index else None
        label = (f"{g}: median {med:g} days" if med is not None and np.isfinite(med)
                 else f"{g}: median not reached")
        ax.step(t, s, where="post", color=colours[g], linewidth=2, label=label, zorder=3)
        ax.fill_between(t, lo, hi, step="post", color=colours[g], alpha=0.15, zorder=1,
                        linewidth=0)
        ct, cs = _censor_times(k)
        ax.plot(ct, cs, linestyle="none", marker="+", markersize=7, color=colours[g], zorder=4)
    ax.axhline(0.5, color=PALETTE["grey"], linestyle="--", linewidth=1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("recurrence-free (share of courses)")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f} %")
    ax.legend(loc="lower left", fontsize=8)
    p = summary["logrank_p"].iloc[0] if "logrank_p" in summary and len(groups) > 1 else None
    if p is not None and np.isfinite(p):
        ax.set_title(f"log-rank {_p(p)}", fontsize=9, loc="right")
    # numbers at risk
    ax_r.set_ylim(-0.5, len(groups) - 0.5)
    ax_r.set_yticks(range(len(groups)), groups[::-1], fontsize=8)
    for i, g in enumerate(groups[::-1]):
        n = at_risk_at(km[km["group"] == g], ticks)
        for tx, nx in zip(ticks, n, strict=True):
            ax_r.text(tx, i, str(int(nx)), ha="center", va="center", fontsize=8,
                      color=colours[g])
    ax_r.grid(False)
    ax_r.spines["left"].set_visible(False)
    ax_r.tick_params(axis="y", length=0)
    ax_r.set_title("numbers at risk", fontsize=8, loc="left")
    ax_r.set_xticks(ticks)
    ax_r.set_xlim(-t_max * 0.02, ticks.max() + t_max * 0.02)
    ax_r.set_xlabel("days since the last treatment of the course")
    return fig


def cumulative_incidence_chart(cif: pd.DataFrame, summary: pd.DataFrame,
                               km: pd.DataFrame | None = None) -> Figure:
    """Cumulative incidence of recurrence with a new course as competing event.

    One solid step line per group of `cif` (results.recurrence_cif) with its 95 % band,
    a dotted line for the competing event (a new course started first), and, for the
    groups of `km` (results.recurrence on the same courses), 1 − Kaplan–Meier dashed:
    the curve that censors at the new course, for contrast. A vertical line marks
    the summary's `at_days` and the legend gives the incidence there.
    """
    groups = list(dict.fromkeys(cif["group"])) if not cif.empty else []
    fig, ax = _figure("Recurrence with a new course as competing event (cumulative "
                      "incidence)", width=10, height=5,
                      subtitle="Aalen–Johansen, band: 95 % CI (log-log). Dotted: a new "
                      "course began before any recurrence was noted. Dashed: 1 − "
                      "Kaplan–Meier, which censors those courses instead.")
    if cif.empty:
        return _empty(fig, [ax], "no follow-up assessments with recurrence recorded")
    colours = {g: CYCLE[i % len(CYCLE)] for i, g in enumerate(groups)}
    colours.update({g: GROUP_COLOURS[g] for g in groups if g in GROUP_COLOURS})
    stats = summary.set_index("group")
    at = float(summary["at_days"].iloc[0]) if len(summary) else math.nan
    for g in groups:
        k = cif[cif["group"] == g]
        t = np.r_[0.0, k["time"].to_numpy(dtype="float64")]
        f = np.r_[0.0, k["cif"].to_numpy(dtype="float64")]
        lo = np.r_[0.0, k["ci_low"].to_numpy(dtype="float64")]
        hi = np.r_[0.0, k["ci_high"].to_numpy(dtype="float64")]
        new = np.r_[0.0, k["new_course_cif"].to_numpy(dtype="float64")]
        v = stats.loc[g, "cif"] if g in stats.index else math.nan
        when = "1 year" if at == 365 else f"{at:g} days"
        ax.step(t, f, where="post", color=colours[g], linewidth=2, zorder=3,
                label=f"{g}: recurrence, {_pct(v)} by {when}")
        ax.fill_between(t, lo, hi, step="post", color=colours[g], alpha=0.15, zorder=1,
                        linewidth=0)
        ax.step(t, new, where="post", color=colours[g], linewidth=1.5, linestyle=":",
                zorder=2, label=f"{g}: new course first")
        if km is not None and g in set(km["group"]):
            kk = km[km["group"] == g]
            ax.step(np.r_[0.0, kk["time"].to_numpy(dtype="float64")],
                    np.r_[0.0, 1 - kk["survival"].to_numpy(dtype="float64")], where="post",
                    color=colours[g], linewidth=1.2, linestyle="--", alpha=0.8, zorder=2,
                    label=f"{g}: 1 − Kaplan–Meier")
    if np.isfinite(at):
        ax.axvline(at, color=PALETTE["grey"], linewidth=1, linestyle="-", zorder=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.set_ylabel("cumulative incidence (share of courses)")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f} %")
    ax.set_xlabel("days since the last treatment of the course")
    ax.legend(loc="upper left", fontsize=8)
    return fig


# =============================================================================================
# adverse events


def _rate_panel(ax: Axes, table: pd.DataFrame, title: str) -> None:
    t = table.reset_index(drop=True)
    y = np.arange(len(t))[::-1]
    rate = 100 * t["rate"].to_numpy(dtype="float64")
    lo = 100 * t["ci_low"].to_numpy(dtype="float64")
    hi = 100 * t["ci_high"].to_numpy(dtype="float64")
    ax.errorbar(rate, y, xerr=[rate - lo, hi - rate], fmt="o", color=PALETTE["vermillion"],
                ecolor=PALETTE["black"], capsize=3, zorder=3)
    n_sess = t["sessions"].sum()
    if n_sess:
        overall = 100 * t["events"].sum() / n_sess
        ax.axvline(overall, color=MEANING["limit"], linestyle="--", linewidth=1,
                   label=f"all sessions {overall:.1f}")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks(y, [f"{g}\n{int(k)} of {int(n)}" for g, k, n in
                      zip(t["group"], t["events"], t["sessions"], strict=True)], fontsize=8)
    ax.set_xlabel("adverse events per 100 sessions (95 % Wilson CI)")
    ax.set_xlim(left=0)
    ax.set_title(title, fontsize=10, loc="left")


def adverse_event_chart(by_clinician: pd.DataFrame, by_energy: pd.DataFrame) -> Figure:
    """Adverse-event rate per 100 sessions with Wilson intervals, by clinician and energy band."""
    fig, (ax1, ax2) = _figure("Adverse events per session, by clinician and by starting "
                                 "energy", width=12,
                                 height=1.2 + 0.55 * max(len(by_clinician), len(by_energy), 3),
                                 ncols=2, subtitle="Sessions with the adverse-event field "
                                 "documented. Dashed: the rate over all sessions.")
    if by_clinician.empty and by_energy.empty:
        return _empty(fig, [ax1, ax2], "no sessions with adverse events documented")
    _rate_panel(ax1, by_clinician, "by clinician")
    _rate_panel(ax2, by_energy, "by starting energy (protocol range marked)")
    return fig
