"""Statistical process control: the Anhøj runs rules and the p-chart."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from outcomes.stats.common import _TIE_RTOL, _as_float, _check_counts
from outcomes.stats.funnels import _binom_quantile

# --------------------------------------------------------------------------- runs


def runs_analysis(values: ArrayLike, centre: float | None = None) -> dict[str, Any]:
    """Anhøj runs analysis of a series around its centre line.

    Detects non-random variation (a shift) in a run chart or control chart
    without limits, as in Anhøj J, Olesen AV (2014) PLoS ONE 9(11):e113825 and
    the qicharts2 R package:

    * missing values and points exactly on the centre line are not useful
      and are dropped (a point on the line neither breaks nor makes a run);
    * ``longest_run`` is the longest sequence of consecutive useful points on
      the same side; ``crossings`` is the number of side changes between
      consecutive useful points;
    * ``longest_run_max = round(log2(n_useful) + 3)``;
    * ``crossings_min`` is the lower 5 % quantile of
      Binomial(n_useful - 1, 0.5) (R's ``qbinom(0.05, n_useful - 1, 0.5)``);
    * ``signal`` is ``longest_run > longest_run_max or
      crossings < crossings_min``.

    ``centre`` defaults to the median of the non-missing values. The returned
    dict also carries ``centre`` (the value used). With no useful points the
    two limits are ``None`` and ``signal`` is False.
    """
    y = _as_float(values).ravel()
    y = y[~np.isnan(y)]
    if centre is None:
        cl = float(np.median(y)) if y.size else float("nan")
    else:
        cl = float(centre)

    if y.size and not np.isnan(cl):
        on_line = np.abs(y - cl) <= _TIE_RTOL * max(1.0, abs(cl))
        side = np.sign(y - cl)[~on_line]
    else:
        side = np.empty(0)

    n_useful = int(side.size)
    if n_useful == 0:
        return {
            "n_useful": 0,
            "longest_run": 0,
            "longest_run_max": None,
            "crossings": 0,
            "crossings_min": None,
            "signal": False,
            "centre": cl,
        }

    change = np.flatnonzero(side[1:] != side[:-1])  # index before each crossing
    crossings = int(change.size)
    bounds = np.concatenate(([0], change + 1, [n_useful]))
    longest_run = int(np.max(np.diff(bounds)))

    # numpy rounds half to even like R; log2(n) + 3 is never exactly x.5 for
    # an integer n, so the rounding rule does not matter here.
    longest_run_max = int(np.round(np.log2(n_useful) + 3))
    crossings_min = _binom_quantile(0.05, n_useful - 1, 0.5)
    signal = bool(longest_run > longest_run_max or crossings < crossings_min)
    return {
        "n_useful": n_useful,
        "longest_run": longest_run,
        "longest_run_max": longest_run_max,
        "crossings": crossings,
        "crossings_min": crossings_min,
        "signal": signal,
        "centre": cl,
    }



# --------------------------------------------------------------------------- p-chart


def p_chart(successes: ArrayLike, sizes: ArrayLike) -> pd.DataFrame:
    """Shewhart p-chart for a proportion per subgroup (e.g. compliance per month).

    ``centre = sum(successes) / sum(sizes)``; each subgroup gets 3-sigma
    limits from its own size, ``centre ± 3 * sqrt(centre * (1 - centre) / n_i)``,
    clipped to [0, 1] (Montgomery, Introduction to Statistical Quality
    Control, section 7.2).

    Columns: ``p``, ``centre``, ``lcl``, ``ucl``, ``signal`` (contract) and
    ``runs_signal``.

    * ``signal`` is True where a point lies strictly outside its limits
      (Shewhart rule 1). It deliberately does *not* include runs signals,
      which belong to the series as a whole rather than to a point.
    * ``runs_signal`` is the Anhøj runs-analysis verdict
      (:func:`runs_analysis` of ``p`` around ``centre``), repeated on every
      row so a chart can draw the centre line dashed when it is True.

    Subgroups with size 0 or a missing value have ``p``/limits nan and
    ``signal`` False, and do not contribute to the centre line. The index of
    a pandas ``successes`` Series is kept (e.g. months).
    """
    index = successes.index if isinstance(successes, pd.Series) else None
    k = _as_float(successes).ravel()
    n = _as_float(sizes).ravel()
    if k.shape != n.shape:
        raise ValueError("p_chart: successes and sizes must have the same length")
    _check_counts(k, n, "p_chart")

    usable = (n > 0) & ~np.isnan(k)
    total_n = n[usable].sum()
    centre = k[usable].sum() / total_n if total_n > 0 else np.nan

    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(usable, k / n, np.nan)
        sigma = np.where(usable, np.sqrt(centre * (1.0 - centre) / n), np.nan)
    lcl = np.clip(centre - 3.0 * sigma, 0.0, 1.0)
    ucl = np.clip(centre + 3.0 * sigma, 0.0, 1.0)
    with np.errstate(invalid="ignore"):
        signal = usable & ((p > ucl) | (p < lcl))

    runs_signal = bool(runs_analysis(p, centre=centre)["signal"]) if usable.any() else False

    return pd.DataFrame(
        {
            "p": p,
            "centre": np.full(k.shape, centre, dtype=float),
            "lcl": lcl,
            "ucl": ucl,
            "signal": signal.astype(bool),
            "runs_signal": np.full(k.shape, runs_signal, dtype=bool),
        },
        index=index,
    )
