"""Protocol-compliance charts: settings against the protocol's bands, compliance over time,
clinicians compared.

Every function takes canonical or audit tables (and the Protocol where a target is drawn)
and returns a matplotlib Figure made with :func:`outcomes.charts.style.new_figure`; pyplot
is never used. Bands and target lines come from the protocol file, never typed again.

Large data stay quick: distributions are drawn from value counts, clinician summaries from
group-bys, and only scatter plots draw single sessions, at most ``MAX_POINTS`` of them,
sampled with a fixed seed (the chart says so). The course timeline shows at most
``MAX_COURSES`` courses: those with the longest gaps (the chart says so too).

The small ``*_table`` / ``monthly_p_chart`` helpers return the numbers a chart draws, so
tests, the report text and the charts agree.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory
from scipy.stats import binom

from outcomes import schema, stats
from outcomes.charts.style import MEANING, PALETTE, new_figure, target_band, target_line
from outcomes.courses import NOT_RECORDED
from outcomes.protocol import Protocol

__all__ = [
    "MAX_COURSES",
    "MAX_POINTS",
    "checklist_items",
    "clinician_funnel",
    "clinician_heatmap",
    "compliance_over_time",
    "compliance_over_time_overview",
    "compliance_summary",
    "contraindication_items",
    "course_timeline",
    "endpoint_observations",
    "energy_titration",
    "energy_vs_pain",
    "funnel_criteria",
    "funnel_table",
    "interval_by_clinician",
    "interval_distribution",
    "item_table",
    "monthly_p_chart",
    "over_time_criteria",
    "protocol_range",
    "runs_text",
    "sessions_per_course",
    "start_energy_by_clinician",
    "technique",
    "test_spot_by_clinician",
]

#: Most single sessions a scatter plot draws (a fixed-seed sample beyond that).
MAX_POINTS = 5000
#: Most courses the course timeline draws (those with the longest gaps).
MAX_COURSES = 60
SEED = 0
NOTE = "#555555"  # footnote text: darker than the palette grey, for legibility

FIELD_LABELS = {
    "energy_start_mj": "Starting energy",
    "energy_final_mj": "Highest energy in the session",
    "coverage_pct": "Coverage",
    "passes": "Passes",
    "pass_wait_min": "Wait between passes",
    "test_spot_wait_min": "Wait after the test spot",
    "endpoint_onset_min": "Time until edema and erythema appeared",
    "post_cooling_min": "Cooling after treatment",
    "pain_nrs": "Pain during treatment",
    "days_since_previous": "Days since the previous session",
}
ITEM_LABELS = {
    "cosmetics_removed": "Cosmetics removed",
    "herpes_prophylaxis": "Herpes prophylaxis",
    "eye_protection": "Correct eye protection",
    "anesthetic_removed_skin_dry": "Anaesthetic removed, skin dry",
    "sun_advice_given": "Sun advice given (after treatment)",
    "ci_isotretinoin": "Isotretinoin",
    "ci_keloid": "Keloid / excessive scarring",
    "ci_post_surgical_skin_changes": "Skin changes after surgery",
    "ci_systemic_steroids": "Systemic steroids",
}
STATUS_STYLE = {  # marker shape carries the status too, not colour alone
    "met": (MEANING["compliant"], "o", "target met"),
    "inconclusive": (MEANING["not documented"], "s", "inconclusive (interval spans the target)"),
    "not met": (MEANING["deviation"], "D", "target not met"),
    "not recorded": (PALETTE["grey"], "X", "not recorded in the data"),
}


# --------------------------------------------------------------------------- helpers


def protocol_range(protocol: Protocol, criterion: str,
                   field: str | None = None) -> tuple[float | None, float | None]:
    """(min, max) of a criterion in the protocol file; for `all_of`, of the named field."""
    p = protocol.criterion(criterion).params
    if "conditions" in p:
        cond = next(c for c in p["conditions"] if ("min" in c or "max" in c)
                    and (field is None or c["field"] == field))
        return cond.get("min"), cond.get("max")
    return p.get("min"), p.get("max")


def _unit(name: str) -> str:
    if name == "days_since_previous":
        return "days"
    f = schema.fields("sessions").get(name)
    return (f.unit if f is not None and f.unit else "")


def axis_label(name: str) -> str:
    """Axis label with the unit: 'Starting energy (mJ)'."""
    unit = _unit(name)
    if name == "passes":
        unit = "number"
    label = FIELD_LABELS.get(name, name.replace("_", " ").capitalize())
    return f"{label} ({unit})" if unit else label


def _range_text(lo: float | None, hi: float | None, unit: str = "") -> str:
    u = f" {unit}" if unit else ""
    if lo is not None and hi is not None:
        return f"{lo:g}–{hi:g}{u}"
    return f"≥ {lo:g}{u}" if lo is not None else f"≤ {hi:g}{u}"


def _inside(v: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    ok = np.ones(len(v), dtype=bool)
    if lo is not None:
        ok &= v >= lo
    if hi is not None:
        ok &= v <= hi
    return ok


def _floats(col: pd.Series) -> np.ndarray:
    return pd.Series(col).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _clinicians(col: pd.Series) -> np.ndarray:
    return pd.Series(col).astype("string").fillna(NOT_RECORDED).to_numpy(dtype=object)


def _note(fig: Figure, *lines: str) -> None:
    """A footnote under the chart (kept inside the layout, so it never hides a label)."""
    width = int(fig.get_figwidth() * 15)
    text = "\n".join(textwrap.fill(ln, width) for ln in lines if ln)
    if text:
        fig.supxlabel(text, x=0.01, ha="left", fontsize=8, color=NOTE)


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.0f} %"


def _sample_note(shown: int, total: int) -> str:
    if shown >= total:
        return ""
    return (f"Points: a random sample of {shown:,} of {total:,} sessions (fixed seed {SEED}); "
            "the percentages and medians use every session.")


def _sample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, max_points, replace=False))


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=NOTE)
    ax.set_xticks([])
    ax.set_yticks([])


def _spread(ys: np.ndarray, gap: float, low: float, high: float) -> np.ndarray:
    """Label positions at least `gap` apart, as close as possible to `ys`, within [low, high]."""
    order = np.argsort(ys)
    y = np.asarray(ys, dtype=float)[order].copy()
    for i in range(1, len(y)):
        y[i] = max(y[i], y[i - 1] + gap)
    if len(y) and y[-1] > high:
        y -= y[-1] - high
        for i in range(len(y) - 2, -1, -1):
            y[i] = min(y[i], y[i + 1] - gap)
    y = np.maximum(y, low) if len(y) else y
    out = np.empty_like(y)
    out[order] = y
    return out


# --------------------------------------------------------------------------- distributions


def band_edges(lo: float | None, hi: float | None,
               whole: bool = False) -> tuple[float | None, float | None]:
    """Where a band is drawn: the protocol's min/max; for whole-number counts drawn as bars
    (passes, sessions per course) half a unit wider, so the bars of min … max sit inside."""
    if not whole:
        return lo, hi
    return (None if lo is None else lo - 0.5), (None if hi is None else hi + 0.5)


def _whole(name: str) -> bool:
    f = schema.fields("sessions").get(name)
    return f is not None and f.type == "int"


def _distribution(ax: Axes, v: np.ndarray, lo: float | None, hi: float | None, name: str,
                  unit_word: str = "sessions", whole: bool = False) -> dict[str, Any]:
    """Counts of each value (or a histogram when values are many) against the band.

    The view is cut to where the bulk of the data lie (and the band); values beyond it
    are counted in a note on the chart, never silently dropped.
    """
    v = v[~np.isnan(v)]
    blo, bhi = band_edges(lo, hi, whole)
    target_band(ax, blo, bhi, axis="x", label=f"protocol {_range_text(lo, hi, _unit(name))}")
    if len(v) == 0:
        ax.text(0.5, 0.5, "nothing documented", transform=ax.transAxes, ha="center",
                color=NOTE)
        ax.set_xlabel(axis_label(name))
        return {"n": 0, "inside": np.nan}
    vals, counts = np.unique(v, return_counts=True)
    if len(vals) > 60:
        counts, edges = np.histogram(v, bins=40)
        vals = (edges[:-1] + edges[1:]) / 2
        width = edges[1] - edges[0]
    else:
        step = np.min(np.diff(vals)) if len(vals) > 1 else 1.0
        width = 0.7 * min(step, 1.0)
    inside = _inside(vals, lo, hi)
    ax.bar(vals[inside], counts[inside], width=width, color=MEANING["compliant"],
           label="within the protocol", zorder=2)
    ax.bar(vals[~inside], counts[~inside], width=width, color=MEANING["deviation"],
           hatch="///", edgecolor="white", linewidth=0, label="outside the protocol", zorder=2)
    # keep the view on the bulk of the data: far outliers (a typo, a unit slip) get a note
    q_lo, q_hi = np.quantile(v, [0.005, 0.995])
    bulk_lo = min(q_lo, lo) if lo is not None else q_lo
    bulk_hi = max(q_hi, hi) if hi is not None else q_hi
    span = max(bulk_hi - bulk_lo, width * 4)
    beyond = (v < bulk_lo - 3 * span) | (v > bulk_hi + 3 * span)
    if beyond.any():
        near = v[~beyond]
        view_lo = min(near.min(), bulk_lo) - width
        view_hi = max(near.max(), bulk_hi) + width
        ax.set_xlim(view_lo - 0.05 * span, view_hi + 0.05 * span)
        far = np.sort(v[beyond])
        shown = ", ".join(f"{x:g}" for x in far[:4]) + (" …" if len(far) > 4 else "")
        ax.text(0.99, 0.55, f"{len(far):,} off the scale: {shown}", transform=ax.transAxes,
                ha="right", va="center", fontsize=7, color=NOTE)
    if whole:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(axis_label(name))
    ax.set_ylabel(f"{unit_word.capitalize()} (count)")
    share = 100 * _inside(v, lo, hi).mean()
    return {"n": len(v), "inside": share}


def _strip_by_clinician(ax: Axes, values: np.ndarray, who: np.ndarray, lo: float | None,
                        hi: float | None, name: str, max_points: int) -> dict[str, Any]:
    """One row per clinician: sampled points, IQR bar and median, share inside the band."""
    ok = ~np.isnan(values)
    v, w = values[ok], who[ok]
    if len(v) == 0:
        _empty(ax, "nothing documented")
        return {"clinicians": [], "shown": 0, "total": 0}
    frame = pd.DataFrame({"v": v, "w": w, "in": _inside(v, lo, hi)})
    g = frame.groupby("w", sort=True)
    table = pd.DataFrame({"n": g.size(), "inside": 100 * g["in"].mean(),
                          "q1": g["v"].quantile(0.25), "median": g["v"].median(),
                          "q3": g["v"].quantile(0.75)})
    table = table.sort_values(["inside", "n"], ascending=[True, False])
    names = list(table.index)
    row = {nm: i for i, nm in enumerate(names)}
    target_band(ax, lo, hi, axis="x", label=f"protocol {_range_text(lo, hi, _unit(name))}")
    idx = _sample(len(v), max_points)
    rng = np.random.default_rng(SEED)
    y = np.array([row[x] for x in w[idx]], dtype=float) + rng.uniform(-0.27, 0.27, len(idx))
    inside = frame["in"].to_numpy()[idx]
    ax.scatter(v[idx][inside], y[inside], s=9, alpha=0.35, color=MEANING["compliant"],
               marker="o", linewidths=0, label="session within the protocol", zorder=2)
    ax.scatter(v[idx][~inside], y[~inside], s=14, alpha=0.6, color=MEANING["deviation"],
               marker="x", linewidths=1, label="session outside the protocol", zorder=2)
    ys = np.arange(len(names))
    ax.hlines(ys, table["q1"], table["q3"], color=PALETTE["black"], linewidth=3, zorder=3,
              label="middle half of sessions")
    ax.plot(table["median"], ys, linestyle="none", marker="|", markersize=16,
            markeredgewidth=2.5, color=PALETTE["black"], zorder=4, label="median")
    ax.set_yticks(ys, [f"{nm}\n{int(n):,} sessions" for nm, n in zip(names, table["n"])])
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(False, axis="y")
    tr = blended_transform_factory(ax.transAxes, ax.transData)
    for yy, share in zip(ys, table["inside"]):
        ax.text(1.01, yy, f"{share:.0f} % within", transform=tr, va="center", fontsize=9)
    ax.set_xlabel(axis_label(name))
    return {"clinicians": names, "table": table, "shown": len(idx), "total": len(v)}


def _legend_above(ax: Axes, ncols: int = 3, **kw: Any) -> None:
    """Legend in a row above the plot area (inside the layout: hides neither data nor labels)."""
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncols=ncols, fontsize=8,
              borderaxespad=0.0, **kw)


# --------------------------------------------------------------------------- energy


def start_energy_by_clinician(sessions: pd.DataFrame, protocol: Protocol,
                              max_points: int = MAX_POINTS) -> Figure:
    """Starting energy of every session by clinician, against the protocol's band."""
    c = protocol.criterion("start_energy")
    name = c.params["field"]
    lo, hi = protocol_range(protocol, "start_energy")
    n_ops = max(1, pd.Series(_clinicians(sessions["operator"])).nunique())
    fig, ax = new_figure(f"Starting energy by clinician (protocol: {_range_text(lo, hi, 'mJ')})",
                         height=1.6 + 0.55 * n_ops)
    info = _strip_by_clinician(ax, _floats(sessions[name]), _clinicians(sessions["operator"]),
                               lo, hi, name, max_points)
    if info["total"]:
        _legend_above(ax, ncols=3)
    _note(fig, f"Protocol: “{c.sheet}”. Clinicians with the fewest sessions inside the band "
          "are at the top. Bar: middle half of the clinician's sessions; tick: median.",
          _sample_note(info["shown"], info["total"]))
    return fig


def energy_titration(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """Start against highest energy of each session, and the step up within the session."""
    c = protocol.criterion("energy_titration")
    final, start = c.params["field"], c.params["other"]
    lo, hi = protocol_range(protocol, "start_energy")
    a, b = _floats(sessions[start]), _floats(sessions[final])
    ok = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[ok], b[ok]
    fig, (ax, ax2) = new_figure("Energy titration within each session: start and highest energy",
                                width=10, height=4.8, ncols=2, width_ratios=[1.1, 1])
    if len(a) == 0:
        _empty(ax, "no session with both energies documented")
        _empty(ax2, "")
        return fig
    pairs = pd.DataFrame({"a": np.round(a * 2) / 2, "b": np.round(b * 2) / 2})
    rounded = bool(np.any(pairs["a"].to_numpy() != a) or np.any(pairs["b"].to_numpy() != b))
    counts = pairs.value_counts().reset_index(name="n")
    down = (counts["b"] < counts["a"]).to_numpy()
    size = 12 + 400 * np.sqrt(counts["n"].to_numpy() / counts["n"].max())
    target_band(ax, lo, hi, axis="x", label=f"start energy protocol {_range_text(lo, hi, 'mJ')}")
    ax.scatter(counts["a"][~down], counts["b"][~down], s=size[~down], alpha=0.55,
               color=MEANING["compliant"], marker="o", linewidths=0,
               label="stepped up or kept", zorder=3)
    ax.scatter(counts["a"][down], counts["b"][down], s=size[down], alpha=0.8,
               color=MEANING["deviation"], marker="v", linewidths=0,
               label="stepped down (deviation)", zorder=3)
    both = np.concatenate([a, b])
    lim = (math.floor(both.min() / 5) * 5 - 2.5, math.ceil(both.max() / 5) * 5 + 2.5)
    ax.plot(lim, lim, color=PALETTE["black"], linestyle="--", linewidth=1,
            label="highest = start", zorder=2)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel(axis_label(start))
    ax.set_ylabel(axis_label(final))
    ax.set_title("Each circle: sessions with that start and highest energy\n"
                 "(area = number of sessions)", fontsize=9, loc="left")
    ax.legend(loc="upper left", fontsize=8)
    step = b - a
    vals, n = np.unique(np.round(step * 2) / 2, return_counts=True)
    neg = vals < 0
    ax2.bar(vals[~neg], n[~neg], width=1.6, color=MEANING["compliant"],
            label="stepped up or kept")
    ax2.bar(vals[neg], n[neg], width=1.6, color=MEANING["deviation"], hatch="///",
            edgecolor="white", linewidth=0, label="stepped down")
    ax2.axvline(0, color=PALETTE["black"], linewidth=1)
    ax2.set_xlabel("Step up within the session: highest − starting energy (mJ)")
    ax2.set_ylabel("Sessions (count)")
    ax2.set_title(f"{100 * (step < 0).mean():.1f} % of {len(step):,} sessions stepped down",
                  fontsize=9, loc="left")
    ax2.legend(fontsize=8)
    _note(fig, f"Protocol: “{protocol.criterion('start_energy').sheet}” and “{c.sheet}”. "
          "Sessions missing either energy are left out"
          + (" ; energies rounded to 0.5 mJ for drawing." if rounded else "."))
    return fig


def energy_vs_pain(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """Pain reported at each highest energy: does pain rise with energy?"""
    sheet = next((i.sheet for i in protocol.indicators if i.field == "pain_nrs"),
                 "If patient complains of pain or winces repeatedly, fluence is too high")
    e, p = _floats(sessions["energy_final_mj"]), _floats(sessions["pain_nrs"])
    ok = ~np.isnan(e) & ~np.isnan(p)
    e, p = np.round(e[ok] * 2) / 2, p[ok]
    fig, ax = new_figure("Pain during treatment against the highest energy used", height=4.8)
    if len(e) == 0:
        _empty(ax, "no session with both energy and pain documented")
        return fig
    counts = pd.DataFrame({"e": e, "p": p}).value_counts().reset_index(name="n")
    size = 10 + 350 * np.sqrt(counts["n"].to_numpy() / counts["n"].max())
    ax.scatter(counts["e"], counts["p"], s=size, alpha=0.45, color=MEANING["compliant"],
               linewidths=0, label="sessions (area = number)", zorder=2)
    med = pd.DataFrame({"e": e, "p": p}).groupby("e")["p"].agg(["median", "size"])
    med = med[med["size"] >= 10]
    ax.plot(med.index, med["median"], color=PALETTE["black"], marker="D", markersize=5,
            linewidth=1.5, label="median pain (energies with ≥ 10 sessions)", zorder=3)
    ax.set_xlabel(axis_label("energy_final_mj"))
    ax.set_ylabel(axis_label("pain_nrs"))
    ax.set_ylim(-0.5, 10.5)
    ax.set_yticks(range(11))
    ax.legend(loc="upper left", fontsize=8)
    rho = pd.Series(e).corr(pd.Series(p), method="spearman") if len(e) > 2 else np.nan
    _note(fig, f"Protocol: “{sheet}”. {len(e):,} sessions with both values; Spearman "
          f"correlation {rho:.2f}. The protocol sets no pain threshold, so no band is drawn.")
    return fig


# --------------------------------------------------------------------------- intervals


def interval_distribution(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """Days between consecutive sessions of a course, against the 4–6 week band."""
    c = protocol.criterion("interval")
    lo, hi = protocol_range(protocol, "interval")
    days = _floats(sessions["days_since_previous"])
    days = days[~np.isnan(days)]
    fig, ax = new_figure(f"Days between treatments (protocol: {_range_text(lo, hi, 'days')})")
    info = _distribution(ax, days, lo, hi, "days_since_previous", "intervals")
    ax.set_xlim(0, max(protocol.new_course_after_days, hi + 7) + 1)
    ax.set_xticks(np.arange(0, ax.get_xlim()[1], 7))
    ax.tick_params(axis="x", labelsize=8)
    sec = ax.secondary_xaxis("top", functions=(lambda d: d / 7, lambda w: w * 7))
    sec.set_xlabel("weeks", fontsize=8)
    sec.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="upper right")
    if info["n"]:
        short = 100 * (days < lo).mean() if lo is not None else 0.0
        long = 100 * (days > hi).mean() if hi is not None else 0.0
        _note(fig, f"Protocol: “{c.sheet}”. {info['n']:,} intervals (a course's first session has "
              f"none): {info['inside']:.0f} % within {_range_text(lo, hi, 'days')}, "
              f"{short:.0f} % shorter, {long:.0f} % longer. A gap over "
              f"{protocol.new_course_after_days} days starts a new course.")
    return fig


def interval_by_clinician(sessions: pd.DataFrame, protocol: Protocol,
                          max_points: int = MAX_POINTS) -> Figure:
    """Days between treatments by clinician (of the later session), against the band."""
    c = protocol.criterion("interval")
    lo, hi = protocol_range(protocol, "interval")
    n_ops = max(1, pd.Series(_clinicians(sessions["operator"])).nunique())
    fig, ax = new_figure(f"Days between treatments by clinician "
                         f"(protocol: {_range_text(lo, hi, 'days')})",
                         height=1.6 + 0.55 * n_ops)
    info = _strip_by_clinician(ax, _floats(sessions["days_since_previous"]),
                               _clinicians(sessions["operator"]), lo, hi,
                               "days_since_previous", max_points)
    if info["total"]:
        _legend_above(ax, ncols=3)
    _note(fig, f"Protocol: “{c.sheet}”. Each interval counts for the clinician of the later "
          "session. Clinicians with the fewest intervals inside the band are at the top.",
          _sample_note(info["shown"], info["total"]))
    return fig


def course_timeline(sessions: pd.DataFrame, protocol: Protocol,
                    max_courses: int = MAX_COURSES) -> Figure:
    """Each course as a row of session marks; the courses with the longest gaps first.

    `sessions` are audited sessions (with `course_id` and `days_since_previous`).
    """
    lo, hi = protocol_range(protocol, "interval")
    s = pd.DataFrame({
        "course": sessions["course_id"].astype("string").to_numpy(dtype=object),
        "patient": sessions["patient_id"].astype("string").to_numpy(dtype=object),
        "who": _clinicians(sessions["operator"]),
        "date": pd.to_datetime(sessions["session_date"]).to_numpy(),
        "gap": _floats(sessions["days_since_previous"]),
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
        _empty(ax, "no courses")
        return fig
    sel = s[s["course"].isin(set(pick["course"]))].sort_values(["course", "date"])
    first = sel.groupby("course")["date"].transform("min")
    sel = sel.assign(day=(sel["date"] - first).dt.days.to_numpy(dtype=float))
    ypos = {cid: i for i, cid in enumerate(pick["course"])}
    sel = sel.assign(y=sel["course"].map(ypos).to_numpy(dtype=float))
    prev_day = sel.groupby("course")["day"].shift(1).to_numpy(dtype=float)
    has_prev = ~np.isnan(prev_day)
    gap = sel["day"].to_numpy() - prev_day
    ok_gap = has_prev & _inside(np.nan_to_num(gap), lo, hi)
    bad_gap = has_prev & ~ok_gap
    y = sel["y"].to_numpy()
    ax.hlines(y[ok_gap], prev_day[ok_gap], sel["day"].to_numpy()[ok_gap],
              color=MEANING["compliant"], linewidth=2, zorder=2,
              label=f"gap within {_range_text(lo, hi, 'days')}")
    ax.hlines(y[bad_gap], prev_day[bad_gap], sel["day"].to_numpy()[bad_gap],
              color=MEANING["deviation"], linewidth=2, linestyles=(0, (2, 1)), zorder=2,
              label=f"gap outside {_range_text(lo, hi, 'days')} (dashed)")
    ax.plot(sel["day"], y, linestyle="none", marker="o", markersize=5,
            color=PALETTE["black"], zorder=3, label="session")
    labels = []
    for r in pick.itertuples():
        who = sel.loc[sel["course"] == r.course, "who"].iloc[-1]
        patient = sel.loc[sel["course"] == r.course, "patient"].iloc[0]
        labels.append(f"{patient} · {who}")
    ax.set_yticks(np.arange(rows), labels, fontsize=7)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.grid(False, axis="y")
    ax.set_xlabel("Days since the course's first session (days)")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9, frameon=True)
    shown = (f"{rows} of {total:,} courses: those with the longest gap between two sessions"
             if rows < total else f"all {total:,} courses, longest gap first")
    _note(fig, f"Protocol: “{protocol.criterion('interval').sheet}”. Each row is one course "
          f"(patient · clinician of the last session); {shown}. A gap over "
          f"{protocol.new_course_after_days} days would start a new course.")
    return fig


def sessions_per_course(courses: pd.DataFrame, protocol: Protocol) -> Figure:
    """Sessions in each completed course against the protocol's 3–4."""
    c = protocol.criterion("course_length")
    lo, hi = protocol_range(protocol, "course_length")
    done = courses[courses["completed"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
    n = done["sessions"].to_numpy(dtype="float64")
    fig, ax = new_figure(f"Sessions per completed course (protocol: {_range_text(lo, hi)})")
    info = _distribution(ax, n, lo, hi, "sessions", "courses", whole=True)
    ax.set_xlabel("Sessions in the course (number)")
    if info["n"]:
        ax.set_xticks(np.arange(1, int(n.max()) + 1))
        ax.legend(fontsize=8)
    _note(fig, f"Protocol: “{c.sheet}”. {info['n']:,} completed courses (no session for "
          f"{protocol.new_course_after_days} days after the last one); "
          f"{_pct(info['inside'])} have {_range_text(lo, hi)} sessions. "
          f"{len(courses) - len(done):,} courses still running are left out.")
    return fig


# --------------------------------------------------------------------------- technique


def technique(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """Coverage, passes, wait between passes and cooling after treatment against the bands."""
    ids = [cid for cid in ("coverage", "passes", "pass_wait", "post_cooling")
           if any(c.id == cid for c in protocol.criteria)]
    ncols = 2
    nrows = max(1, math.ceil(len(ids) / ncols))
    fig, axes = new_figure("Treatment technique and cooling against the protocol", width=10,
                           height=3.3 * nrows + 0.8, nrows=nrows, ncols=ncols, squeeze=False)
    flat = list(axes.flat)
    for ax, cid in zip(flat, ids):
        c = protocol.criterion(cid)
        name = c.params["field"]
        v = _floats(sessions[name])
        if c.applies_when:  # e.g. wait between passes only where there were ≥ 2 passes
            w = _floats(sessions[c.applies_when["field"]])
            lo_w = c.applies_when.get("min", -np.inf)
            hi_w = c.applies_when.get("max", np.inf)
            v = v[np.isnan(w) | ((w >= lo_w) & (w <= hi_w))]
        lo, hi = protocol_range(protocol, cid)
        info = _distribution(ax, v, lo, hi, name, whole=_whole(name))
        missing = int(np.isnan(v).sum())
        ax.set_title(f"{c.title}\n{_pct(info['inside'])} of {info['n']:,} documented within; "
                     f"{missing:,} not documented", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right")
    for ax in flat[len(ids):]:
        ax.set_visible(False)
    _note(fig, "Protocol: " + "; ".join(f"“{protocol.criterion(c).sheet}”" for c in ids) + ".")
    return fig


# --------------------------------------------------------------------------- endpoint


def _rate(col: pd.Series) -> tuple[int, int]:
    """(documented as present, all sessions): a sign not documented counts as not reached."""
    b = pd.Series(col).astype("boolean")
    return int(b.fillna(False).sum()), len(b)


def endpoint_observations(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """How often edema and erythema were reached, and how long they took to appear."""
    c = protocol.criterion("endpoint")
    fields = list(c.params["fields"])
    onset = protocol.criterion("endpoint_onset")
    lo, hi = protocol_range(protocol, "endpoint_onset")
    fig, (ax, ax2) = new_figure("Clinical endpoint: edema and erythema, and time to appear",
                                width=10, height=4.4, ncols=2, width_ratios=[1, 1.2])
    vals = [pd.Series(sessions[f]).astype("boolean") for f in fields]
    both = vals[0]
    for v in vals[1:]:
        both = both & v
    rows = [(FIELD_LABELS.get(f, f.capitalize()), *_rate(v)) for f, v in zip(fields, vals)]
    rows.append((" and ".join(f for f in fields), *_rate(both)))
    labels = [r[0].capitalize() for r in rows]
    k = np.array([r[1] for r in rows], dtype=float)
    n = np.array([r[2] for r in rows], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100 * k / n
    lo_ci, hi_ci = stats.wilson_ci(k, n)
    y = np.arange(len(rows))
    ax.barh(y, pct, color=[MEANING["compliant"]] * (len(rows) - 1) + [PALETTE["sky"]],
            height=0.6)
    ax.errorbar(pct, y, xerr=[pct - 100 * lo_ci, 100 * hi_ci - pct], fmt="none",
                ecolor=PALETTE["black"], capsize=3, linewidth=1, label="95 % interval")
    for yy, p_, nn in zip(y, pct, n):
        ax.text(2, yy, f"{_pct(p_)} of {int(nn):,}", va="center", color="white", fontsize=9,
                fontweight="bold")
    target_line(ax, c.target, axis="x", label=f"target {c.target:g} % (both)")
    ax.set_yticks(y, labels)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 101.5)  # a 100 % target line stays visible
    ax.set_xlabel("Sessions with the sign documented as present (% of all sessions)")
    _legend_above(ax, ncols=2)
    ax.grid(False, axis="y")
    info = _distribution(ax2, _floats(sessions[onset.params["field"]]), lo, hi,
                         onset.params["field"])
    ax2.set_title(f"{onset.title}: {_pct(info['inside'])} of {info['n']:,} documented",
                  fontsize=9, loc="left")
    ax2.legend(fontsize=8)
    _note(fig, f"Protocol: “{c.sheet}” and “{onset.sheet}”. As in the audit, a sign that was "
          "not documented counts as not reached; bars: 95 % intervals.")
    return fig


def test_spot_by_clinician(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """Test spot done and waited for, by clinician, and the minutes waited."""
    c = protocol.criterion("test_spot")
    done_f = next(x["field"] for x in c.params["conditions"] if "equals" in x)
    wait_f = next(x["field"] for x in c.params["conditions"] if "min" in x or "max" in x)
    lo, hi = protocol_range(protocol, "test_spot", wait_f)
    done = pd.Series(sessions[done_f]).astype("boolean")
    wait = _floats(sessions[wait_f])
    d = done.fillna(False).to_numpy(dtype=bool)
    known = done.notna().to_numpy()
    cats = {
        f"done, waited {_range_text(lo, hi, 'min')}": d & _inside(np.nan_to_num(wait, nan=-1e9),
                                                                   lo, hi),
        "done, other wait": d & ~np.isnan(wait) & ~_inside(np.nan_to_num(wait), lo, hi),
        "done, wait not documented": d & np.isnan(wait),
        "not done": known & ~d,
        "not documented": ~known,
    }
    styles = [(MEANING["compliant"], None), (PALETTE["sky"], "..."),
              (MEANING["not documented"], "xx"), (MEANING["deviation"], "///"),
              (PALETTE["grey"], "\\\\")]
    who = _clinicians(sessions["operator"])
    frame = pd.DataFrame({k: v for k, v in cats.items()}).groupby(who).mean() * 100
    frame = frame.sort_values(frame.columns[0])
    n = pd.Series(who).value_counts().reindex(frame.index)
    fig, (ax, ax2) = new_figure("Test spot done and waited for, by clinician", width=10,
                                height=1.8 + 0.5 * len(frame) + 0.6, ncols=2,
                                width_ratios=[1.5, 1])
    y = np.arange(len(frame))
    left = np.zeros(len(frame))
    for (col, (colour, hatch)) in zip(frame.columns, styles):
        ax.barh(y, frame[col], left=left, color=colour, hatch=hatch, edgecolor="white",
                linewidth=0.5, label=col, height=0.65)
        left += frame[col].to_numpy()
    for yy, v in zip(y, frame.iloc[:, 0]):
        ax.text(1.5, yy, f"{v:.0f} %", va="center", color="white", fontweight="bold", fontsize=9)
    target_line(ax, c.target, axis="x", label=f"target {c.target:g} %")
    ax.set_yticks(y, [f"{w}\n{int(k):,} sessions" for w, k in zip(frame.index, n)])
    ax.set_ylim(len(frame) - 0.5, -0.5)
    ax.set_xlim(0, 101.5)  # a 100 % target line stays visible
    ax.set_xlabel("Sessions (%)")
    ax.grid(False, axis="y")
    _legend_above(ax, ncols=3)
    info = _distribution(ax2, wait[d], lo, hi, wait_f)
    ax2.set_title(f"Minutes waited after a test spot: {_pct(info['inside'])} within",
                  fontsize=9, loc="left")
    ax2.legend(fontsize=8)
    _note(fig, f"Protocol: “{c.sheet}”. Only the first (blue) part of each bar complies.")
    return fig


# --------------------------------------------------------------------------- checklists


def item_table(sessions: pd.DataFrame, items: Sequence[str], good: bool = True) -> pd.DataFrame:
    """Per yes/no item: sessions, how many as the protocol wants, against, not documented."""
    rows = []
    for item in items:
        b = pd.Series(sessions[item]).astype("boolean")
        ok = int((b == good).sum())
        bad = int((b == (not good)).sum())
        n = len(b)
        rows.append({"item": item, "label": ITEM_LABELS.get(item, item), "sessions": n,
                     "as_protocol": ok, "against": bad, "not_documented": n - ok - bad,
                     "percent": 100 * ok / n if n else np.nan})
    return pd.DataFrame(rows)


def _heatmap(fig: Figure, ax: Axes, values: pd.DataFrame, targets: Sequence[float] | None,
             fmt: str = "{:.0f}", cbar_label: str = "Compliant (%)",
             separate_last: bool = False) -> Any:
    """Annotated percent heat map; cells below their row's target in bold."""
    m = values.to_numpy(dtype="float64")
    finite = m[np.isfinite(m)]
    vmin = max(0.0, math.floor((finite.min() if finite.size else 0) / 10) * 10 - 10)
    import matplotlib as mpl

    cmap = mpl.colormaps["cividis"].with_extremes(bad="#eeeeee")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=100, aspect="auto")
    ax.grid(False)
    norm = im.norm
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "–", ha="center", va="center", fontsize=8, color=NOTE)
                continue
            below = targets is not None and v < targets[i]
            dark = norm(v) < 0.55
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black",
                    fontweight="bold" if below else "normal")
    ax.set_xticks(np.arange(m.shape[1]), [textwrap.fill(str(c), 13) for c in values.columns],
                  fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(m.shape[0]), list(values.index), fontsize=8)
    ax.tick_params(length=0)
    for side in ("left", "bottom", "top", "right"):
        ax.spines[side].set_visible(False)
    if separate_last and m.shape[1] > 1:
        ax.axvline(m.shape[1] - 1.5, color="white", linewidth=4)
    cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
    cb.set_label(cbar_label, fontsize=8)
    cb.ax.tick_params(labelsize=8)
    return im


def _items_figure(sessions: pd.DataFrame, items: Sequence[str], good: bool, title: str,
                  labels: tuple[str, str], target: float, sheet: str) -> Figure:
    table = item_table(sessions, items, good)
    who = _clinicians(sessions["operator"])
    ops = sorted(set(who))
    fig, (ax, ax2) = new_figure(title, width=9, height=2.6 + 0.95 * len(items), nrows=2)
    y = np.arange(len(table))
    n = table["sessions"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        parts = [(100 * table["as_protocol"] / n, MEANING["compliant"], None, labels[0]),
                 (100 * table["against"] / n, MEANING["deviation"], "///", labels[1]),
                 (100 * table["not_documented"] / n, MEANING["not documented"], "..",
                  "not documented")]
    left = np.zeros(len(table))
    for vals, colour, hatch, lab in parts:
        ax.barh(y, vals, left=left, color=colour, hatch=hatch, edgecolor="white",
                linewidth=0.5, label=lab, height=0.6)
        left += np.nan_to_num(np.asarray(vals, dtype=float))
    tr = blended_transform_factory(ax.transAxes, ax.transData)
    for yy, r in zip(y, table.itertuples()):
        ax.text(0.02, yy, f"{_pct(r.percent)}", transform=tr, va="center", color="white",
                fontweight="bold", fontsize=9)
        ax.text(1.01, yy, f"{labels[1]}: {r.against:,}\nnot documented: {r.not_documented:,}",
                transform=tr, va="center", fontsize=7)
    target_line(ax, target, axis="x", label=f"target {target:g} %")
    ax.set_yticks(y, table["label"])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set_xlim(0, 101.5)  # a 100 % target line stays visible
    ax.set_xlabel("Sessions (%)")
    ax.grid(False, axis="y")
    _legend_above(ax, ncols=4)
    per = pd.DataFrame({i: (pd.Series(sessions[i]).astype("boolean") == good)
                        .fillna(False).to_numpy() for i in items})
    heat = (per.groupby(who).mean() * 100).reindex(ops).T
    heat.index = [ITEM_LABELS.get(i, i) for i in heat.index]
    _heatmap(fig, ax2, heat, [target] * len(items), cbar_label=f"{labels[0].capitalize()} (%)")
    ax2.set_title(f"{labels[0].capitalize()} by clinician (% of sessions; bold: below the "
                  "target)", fontsize=9, loc="left", pad=26)
    _note(fig, f"Protocol: “{sheet}”. A session counts as compliant only when the item is "
          "documented; a missing entry counts against it.")
    return fig


def checklist_items(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """Each pre-treatment checklist item (and the sun advice after treatment) per session."""
    c = protocol.criterion("pre_checklist")
    items = [*schema.PRE_CHECKLIST]
    if any(cr.id == "sun_advice" for cr in protocol.criteria):
        items.append(protocol.criterion("sun_advice").params["fields"][0])
    return _items_figure(sessions, items, True, "Pre-treatment checklist and sun advice: "
                         "each item", ("done", "not done"), c.target, c.sheet)


def contraindication_items(sessions: pd.DataFrame, protocol: Protocol) -> Figure:
    """Each contraindication: screened and absent, present, or not documented."""
    c = protocol.criterion("no_contraindication")
    return _items_figure(sessions, list(schema.CONTRAINDICATIONS), False,
                         "Contraindications at screening: each item",
                         ("screened, absent", "present"), c.target, c.sheet)


# --------------------------------------------------------------------------- summary


def compliance_summary(summary: pd.DataFrame, protocol: Protocol | None = None) -> Figure:
    """Every criterion: percent compliant with its 95 % interval and its target, lowest first."""
    s = summary[summary["eligible"] > 0].sort_values("percent", kind="stable")
    s = s.reset_index(drop=True)
    fig, ax = new_figure("Compliance with each protocol step, least followed first", width=10,
                         height=1.6 + 0.42 * max(len(s), 3))
    if s.empty:
        _empty(ax, "no eligible records")
        return fig
    y = np.arange(len(s))
    pct = s["percent"].to_numpy(dtype=float)
    lo = s["ci_low"].to_numpy(dtype=float)
    hi = s["ci_high"].to_numpy(dtype=float)
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
    _legend_above(ax, ncols=4)
    _note(fig, "Line: Wilson 95 % interval. Met: the whole interval is at or above the target; "
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
        _empty(ax, "no eligible records")
        return fig
    _draw_p_chart(ax, pc, c.target)
    _month_ticks(ax, pc["month"])
    unit = "courses (by month of the last session)" if c.level == "course" else "sessions"
    ax.set_ylabel(f"Compliant (% of eligible {unit.split(' ')[0]})")
    ax.set_xlabel("Month")
    _legend_above(ax, ncols=3)
    n_sig = int(pc["signal"].sum())
    months = ", ".join(pd.Period(m).strftime("%b %Y") for m in pc.loc[pc["signal"], "month"])
    _note(fig, runs_text(pc),
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
            _empty(ax, f"{c.title}\nno eligible records")
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
    _note(fig, "▲ shift: the Anhøj runs rules find a sustained shift in "
          + (", ".join(flagged) if flagged else "no step") + ". Diamonds: months outside "
          "the 3-sigma limits (special causes). Each panel has its own vertical scale.")
    return fig


# --------------------------------------------------------------------------- clinicians


POSITIONS = ("below the 99.8 % limit", "below the 95 % limit", "within the limits",
             "above the 95 % limit", "above the 99.8 % limit")


def funnel_table(by_operator: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """Per clinician: eligible, compliant, percent, funnel limits (percent) and position.

    `by_operator` is `audit.summary("operator")`; p0 is the criterion's overall compliance.
    """
    d = by_operator[by_operator["criterion"].astype(str) == criterion]
    d = d[d["eligible"] > 0]
    out = pd.DataFrame({"operator": d["operator"].astype(str).to_numpy(),
                        "eligible": d["eligible"].to_numpy(dtype="int64"),
                        "compliant": d["compliant"].to_numpy(dtype="int64")})
    total = out["eligible"].sum()
    p0 = out["compliant"].sum() / total if total else np.nan
    out["percent"] = 100 * out["compliant"] / out["eligible"]
    out["p0"] = 100 * p0
    n = out["eligible"].to_numpy(dtype=float)
    for level, tag in ((0.95, "95"), (0.998, "998")):
        lo, hi = stats.funnel_limits(p0, n, level) if total else (np.full(len(n), np.nan),) * 2
        out[f"low{tag}"] = 100 * np.asarray(lo, dtype=float)
        out[f"high{tag}"] = 100 * np.asarray(hi, dtype=float)
    p = out["percent"]
    # Beyond the drawn limit *and* an exact binomial tail below the level's: the interpolated
    # limits sit a hair under 100 % when p0 is near 1, and 17 of 17 is no outlier there.
    k = out["compliant"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        p_low = binom.cdf(k, n, p0) if total else np.full(len(n), np.nan)  # P(X <= k)
        p_high = binom.sf(k - 1, n, p0) if total else np.full(len(n), np.nan)  # P(X >= k)
    out["position"] = np.select(
        [(p < out["low998"]) & (p_low < 0.001), (p < out["low95"]) & (p_low < 0.025),
         (p > out["high998"]) & (p_high < 0.001), (p > out["high95"]) & (p_high < 0.025)],
        [POSITIONS[0], POSITIONS[1], POSITIONS[4], POSITIONS[3]], POSITIONS[2])
    return out.sort_values("percent", kind="stable").reset_index(drop=True)


def funnel_criteria(by_operator: pd.DataFrame, k: int = 3) -> list[str]:
    """The k criteria on which clinicians differ most (most outside the 99.8 % limits)."""
    rows = []
    for cid in by_operator["criterion"].astype(str).unique():
        t = funnel_table(by_operator, cid)
        if t.empty:
            continue
        out998 = int(t["position"].isin([POSITIONS[0], POSITIONS[4]]).sum())
        out95 = int(t["position"].isin([POSITIONS[1], POSITIONS[3]]).sum())
        spread = float(t["percent"].max() - t["percent"].min())
        rows.append((-out998, -out95, -spread, cid))
    return [cid for *_, cid in sorted(rows)[:k]]


def clinician_funnel(by_operator: pd.DataFrame, protocol: Protocol, criterion: str) -> Figure:
    """Funnel plot: each clinician's compliance against the number of eligible records."""
    c = protocol.criterion(criterion)
    t = funnel_table(by_operator, criterion)
    fig, ax = new_figure(f"{c.title}: clinicians compared (funnel plot)", width=9, height=5)
    if t.empty:
        _empty(ax, "no eligible records")
        return fig
    p0 = float(t["p0"].iloc[0]) / 100
    nmax = int(t["eligible"].max())
    if nmax <= 1500:
        nn = np.arange(1, math.ceil(nmax * 1.1) + 1, dtype=float)
    else:
        nn = np.unique(np.round(np.geomspace(1, nmax * 1.1, 400)))
    styles = {0.95: ("--", "95 % limits"), 0.998: ("-", "99.8 % limits")}
    for level, (ls, lab) in styles.items():
        lo, hi = stats.funnel_limits(p0, nn, level)
        tag = "95" if level == 0.95 else "998"
        ax.plot(nn, 100 * np.asarray(lo), color=MEANING["limit"], linestyle=ls, linewidth=1.2,
                label=lab, gid=f"funnel-{tag}-low")
        ax.plot(nn, 100 * np.asarray(hi), color=MEANING["limit"], linestyle=ls, linewidth=1.2,
                gid=f"funnel-{tag}-high")
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
    low_edge = float(100 * stats.funnel_limits(p0, max(1.0, nmin * 0.5), 0.998)[0])
    bottom = max(0.0, math.floor(min(pts.min(), low_edge, c.target) / 5) * 5 - 5)
    top = 101.5
    ax.set_ylim(bottom, top)
    ax.set_xlim(0, nmax * 1.45)
    ax.set_xticks([x for x in MaxNLocator(6, integer=True).tick_values(0, nmax * 1.1)
                   if x <= nmax * 1.1])
    # names in a column right of the points, spread so they never overlap
    axes_pt = fig.get_figheight() * 72 * 0.62  # approximate plot-area height in points
    gap = (top - bottom) * 8 * 1.35 / axes_pt
    ly = _spread(pts, gap, bottom + gap / 2, top - gap / 2)
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
    _legend_above(ax, ncols=3)
    below = t.loc[t["position"] == POSITIONS[0], "operator"].tolist()
    _note(fig, f"Protocol: “{c.sheet}”. Limits around the overall rate for a clinician with n "
          "eligible records (exact binomial). A point outside the 99.8 % funnel is very unlikely "
          "to be chance: " + (", ".join(below) + " below it." if below else
                              "no clinician is below it."))
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
        _empty(ax, "no eligible records")
        return fig
    _heatmap(fig, ax, pv, s["target"].to_numpy(dtype=float), separate_last=True,
             cbar_label="Compliant (% of eligible)")
    _note(fig, "Percent of eligible sessions (courses for the course steps) that follow each "
          "step. Rows: least followed step at the top. Bold: below the step's target. "
          "–: no eligible record. Not documented counts as not compliant.")
    return fig
