"""Chart helpers shared by the compliance charts: labels, notes, distributions against a
protocol band, clinicians side by side, annotated heat maps.

Large data stay quick: distributions are drawn from value counts, clinician summaries
from group-bys, and only scatter plots draw single sessions, at most ``MAX_POINTS`` of
them, sampled with a fixed seed (the chart says so).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from outcomes import schema
from outcomes.charts.style import MEANING, PALETTE, target_band
from outcomes.courses import NOT_RECORDED
from outcomes.protocol.rules import range_text

#: Most single sessions a scatter plot draws (a fixed-seed sample beyond that).
MAX_POINTS = 5000
SEED = 0
NOTE = "#555555"  # footnote text: darker than the palette grey, for legibility


def unit_of(name: str) -> str:
    """Unit of a sessions field for axis labels ('days' for the interval)."""
    if name == "days_since_previous":
        return "days"
    f = schema.fields("sessions").get(name)
    return (f.unit if f is not None and f.unit else "")


def axis_label(name: str) -> str:
    """Axis label with the unit: 'Starting energy (mJ)'."""
    unit = unit_of(name)
    if whole(name) and unit.isalpha():  # a count named by its unit: 'Passes (number)'
        unit = "number"
    label = schema.label(name)
    return f"{label} ({unit})" if unit else label


def within(v: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    ok = np.ones(len(v), dtype=bool)
    if lo is not None:
        ok &= v >= lo
    if hi is not None:
        ok &= v <= hi
    return ok


def floats(col: pd.Series) -> np.ndarray:
    return pd.Series(col).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def clinicians(col: pd.Series) -> np.ndarray:
    return pd.Series(col).astype("string").fillna(NOT_RECORDED).to_numpy(dtype=object)


def note(fig: Figure, *lines: str) -> None:
    """A footnote under the chart (kept inside the layout, so it never hides a label)."""
    width = int(fig.get_figwidth() * 15)
    text = "\n".join(textwrap.fill(ln, width) for ln in lines if ln)
    if text:
        fig.supxlabel(text, x=0.01, ha="left", fontsize=8, color=NOTE)


def pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.0f} %"


def sample_note(shown: int, total: int) -> str:
    if shown >= total:
        return ""
    return (f"Points: a random sample of {shown:,} of {total:,} sessions (fixed seed {SEED}); "
            "the percentages and medians use every session.")


def sample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, max_points, replace=False))


def empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=NOTE)
    ax.set_xticks([])
    ax.set_yticks([])


def spread(ys: np.ndarray, gap: float, low: float, high: float) -> np.ndarray:
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



def band_edges(lo: float | None, hi: float | None,
               whole: bool = False) -> tuple[float | None, float | None]:
    """Where a band is drawn: the protocol's min/max; for whole-number counts drawn as bars
    (passes, sessions per course) half a unit wider, so the bars of min … max sit inside."""
    if not whole:
        return lo, hi
    return (None if lo is None else lo - 0.5), (None if hi is None else hi + 0.5)


def whole(name: str) -> bool:
    f = schema.fields("sessions").get(name)
    return f is not None and f.type == "int"


def distribution(ax: Axes, v: np.ndarray, lo: float | None, hi: float | None, name: str,
                  unit_word: str = "sessions", whole: bool = False) -> dict[str, Any]:
    """Counts of each value (or a histogram when values are many) against the band.

    The view is cut to where the bulk of the data lie (and the band); values beyond it
    are counted in a note on the chart, never silently dropped.
    """
    v = v[~np.isnan(v)]
    blo, bhi = band_edges(lo, hi, whole)
    target_band(ax, blo, bhi, axis="x", label=f"protocol {range_text(lo, hi, unit_of(name))}")
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
    inside = within(vals, lo, hi)
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
    share = 100 * within(v, lo, hi).mean()
    return {"n": len(v), "inside": share}


def strip_by_clinician(ax: Axes, values: np.ndarray, who: np.ndarray, lo: float | None,
                        hi: float | None, name: str, max_points: int) -> dict[str, Any]:
    """One row per clinician: sampled points, IQR bar and median, share inside the band."""
    ok = ~np.isnan(values)
    v, w = values[ok], who[ok]
    if len(v) == 0:
        empty(ax, "nothing documented")
        return {"clinicians": [], "shown": 0, "total": 0}
    frame = pd.DataFrame({"v": v, "w": w, "in": within(v, lo, hi)})
    g = frame.groupby("w", sort=True)
    table = pd.DataFrame({"n": g.size(), "inside": 100 * g["in"].mean(),
                          "q1": g["v"].quantile(0.25), "median": g["v"].median(),
                          "q3": g["v"].quantile(0.75)})
    table = table.sort_values(["inside", "n"], ascending=[True, False])
    names = list(table.index)
    row = {nm: i for i, nm in enumerate(names)}
    target_band(ax, lo, hi, axis="x", label=f"protocol {range_text(lo, hi, unit_of(name))}")
    idx = sample(len(v), max_points)
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


def legend_above(ax: Axes, ncols: int = 3, **kw: Any) -> None:
    """Legend in a row above the plot area (inside the layout: hides neither data nor labels)."""
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncols=ncols, fontsize=8,
              borderaxespad=0.0, **kw)


def heatmap(fig: Figure, ax: Axes, values: pd.DataFrame, targets: Sequence[float] | None,
             fmt: str = "{:.0f}", cbar_label: str = "Compliant (%)",
             separate_last: bool = False) -> Any:
    """Annotated percent heat map; cells below their row's target in bold."""
    m = values.to_numpy(dtype="float64")
    finite = m[np.isfinite(m)]
    vmin = max(0.0, math.floor((finite.min() if finite.size else 0) / 10) * 10 - 10)
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


