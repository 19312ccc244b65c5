"""The house style of every chart: one palette, one figure factory, target bands from data.

Charts are matplotlib Figures made without pyplot, so no global state is touched and a
figure is freed when it is no longer referenced. The palette is Okabe–Ito (safe for the
common colour-vision deficiencies); meaning is never carried by colour alone.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = {
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
    "sky": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000",
    "grey": "#999999",
}
CYCLE = [PALETTE[k] for k in ("blue", "orange", "green", "vermillion", "sky", "purple",
                              "yellow", "black")]
#: Colours with a fixed meaning across charts.
MEANING = {
    "compliant": PALETTE["blue"], "deviation": PALETTE["vermillion"],
    "not documented": PALETTE["orange"], "target": PALETTE["green"],
    "signal": PALETTE["vermillion"], "limit": PALETTE["grey"],
}
RC: dict[str, Any] = {
    "font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "legend.frameon": False,
}


def new_figure(title: str, width: float = 8.0, height: float = 4.5, nrows: int = 1,
               ncols: int = 1, subtitle: str | None = None, **kw: Any) -> tuple[Figure, Any]:
    """A Figure in the house style with its axes; the title states the chart's subject."""
    import matplotlib as mpl

    with mpl.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, **kw)
    for ax in (axes.flat if hasattr(axes, "flat") else [axes]):
        _style_axes(ax)
    fig.suptitle(title, fontsize=12, fontweight="bold", x=0.01, ha="left")
    if subtitle:
        fig.text(0.01, 0.0, subtitle, fontsize=8, color=PALETTE["grey"], ha="left", va="bottom")
    return fig, axes


def _style_axes(ax: Axes) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, alpha=0.3)
    ax.set_prop_cycle(color=CYCLE)


def target_band(ax: Axes, low: float | None, high: float | None, axis: str = "y",
                label: str = "protocol") -> None:
    """Shade the protocol's target range (or draw its one-sided line) on an axis."""
    if low is None and high is None:
        return
    colour = MEANING["target"]
    span = ax.axhspan if axis == "y" else ax.axvspan
    line = ax.axhline if axis == "y" else ax.axvline
    if low is not None and high is not None:
        span(low, high, color=colour, alpha=0.15, label=label, zorder=0)
    else:
        line(low if low is not None else high, color=colour, linestyle="--", label=label)


def target_line(ax: Axes, value: float, axis: str = "x", label: str = "target") -> None:
    """A dashed line at a target value (e.g. a compliance target in percent)."""
    (ax.axvline if axis == "x" else ax.axhline)(value, color=MEANING["target"],
                                                 linestyle="--", linewidth=1.2, label=label)
