"""Statistics for the protocol audit and the outcome analysis (public contract).

Every function here is called by other tools, so names, arguments and the
returned columns / keys are fixed (see DESIGN.md, "Statistics"). Each one
implements a published method, cited in its docstring, and is tested against
published or independently computed values in ``tests/test_stats.py``.

Conventions
-----------
* Proportion functions accept scalars or array-likes (numpy arrays, pandas
  Series, including nullable ``Int64`` columns). Scalar inputs give Python
  floats; any array input gives numpy arrays, so a whole summary table can be
  processed in one call.
* A denominator of 0, or a missing count, gives ``nan`` rather than an error:
  "no eligible sessions" is a normal state of an audit, not a bug.
* Impossible input (negative counts, more successes than trials, levels
  outside (0, 1)) raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as _st

__all__ = [
    "bh_qvalues",
    "cumulative_incidence",
    "design_effect",
    "funnel_limits",
    "kaplan_meier",
    "km_median",
    "newcombe_diff_ci",
    "overdispersion",
    "p_chart",
    "runs_analysis",
    "wilson_ci",
    "wilson_ci_clustered",
]

# Relative tolerance used to decide that a value lies *on* a centre line or
# that a survival estimate has reached 0.5: products and quotients of counts
# that are equal in exact arithmetic can differ in the last bits.
_TIE_RTOL = 1e-12


# --------------------------------------------------------------------------- helpers


def _as_float(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a float ndarray, turning pandas missing values into nan."""
    if isinstance(x, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        return np.asarray(x.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    return np.asarray(x, dtype=float)


def _z(level: float) -> float:
    """Two-sided standard-normal quantile for a confidence ``level``."""
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    return float(_st.norm.ppf(1.0 - (1.0 - level) / 2.0))


def _check_counts(k: np.ndarray, n: np.ndarray, what: str) -> None:
    """Reject impossible counts; nan (missing) is allowed and propagates."""
    with np.errstate(invalid="ignore"):
        if np.any(n < 0):
            raise ValueError(f"{what}: denominators must be >= 0")
        if np.any(k < 0):
            raise ValueError(f"{what}: counts must be >= 0")
        if np.any(k > n):
            raise ValueError(f"{what}: counts cannot exceed their denominators")


def _out(scalar: bool, *arrays: np.ndarray) -> tuple[Any, ...]:
    """Python floats for scalar input, arrays otherwise."""
    if scalar:
        return tuple(float(a) for a in arrays)
    return tuple(arrays)


# --------------------------------------------------------------------------- Wilson


def _wilson(k: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        z2 = z * z
        denom = n + z2
        centre = (k + z2 / 2.0) / denom
        half = z / denom * np.sqrt(k * (n - k) / n + z2 / 4.0)
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    # The bounds at k = 0 and k = n are exactly 0 and 1 in exact arithmetic;
    # remove rounding noise so "0 of 20" prints as 0, not 1e-17.
    low = np.where(k == 0, 0.0, low)
    high = np.where(k == n, 1.0, high)
    empty = ~(n > 0)  # n == 0 or nan
    low = np.where(empty, np.nan, low)
    high = np.where(empty, np.nan, high)
    return low, high


def wilson_ci(
    successes: ArrayLike, n: ArrayLike, level: float = 0.95
) -> tuple[Any, Any]:
    """Wilson score interval for a binomial proportion (no continuity correction).

    Why Wilson: unlike the Wald interval it never leaves [0, 1], is not
    degenerate at 0 or n successes, and has coverage close to nominal for the
    small denominators typical of per-clinician audit cells (Newcombe RG 1998,
    Stat Med 17:857-872, method 3).

    ``successes`` and ``n`` may be scalars or array-likes (broadcast together);
    scalars give ``(low, high)`` floats, arrays give two float arrays.
    ``n == 0`` (or a missing value) gives ``(nan, nan)``.
    """
    z = _z(level)
    k_arr, n_arr = np.broadcast_arrays(_as_float(successes), _as_float(n))
    _check_counts(k_arr, n_arr, "wilson_ci")
    low, high = _wilson(k_arr, n_arr, z)
    return _out(k_arr.ndim == 0, low, high)


# --------------------------------------------------------------------------- Newcombe


def newcombe_diff_ci(
    k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike, level: float = 0.95
) -> tuple[Any, Any]:
    """Newcombe hybrid score interval for the difference p1 - p2.

    Method 10 of Newcombe RG (1998) "Interval estimation for the difference
    between independent proportions: comparison of eleven methods", Stat Med
    17:873-890. With Wilson limits (l1, u1) and (l2, u2) and d = p1 - p2::

        low  = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)

    Why: closed form, no aberrations at 0 or n, near-nominal coverage; used to
    compare compliance between periods or groups. Vectorised like
    :func:`wilson_ci`; a zero denominator gives ``(nan, nan)``.
    """
    z = _z(level)
    a1, b1, a2, b2 = np.broadcast_arrays(
        _as_float(k1), _as_float(n1), _as_float(k2), _as_float(n2)
    )
    _check_counts(a1, b1, "newcombe_diff_ci (group 1)")
    _check_counts(a2, b2, "newcombe_diff_ci (group 2)")
    l1, u1 = _wilson(a1, b1, z)
    l2, u2 = _wilson(a2, b2, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1 = a1 / b1
        p2 = a2 / b2
        d = p1 - p2
        low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    # Mathematically within [-1, 1]; clip rounding noise only.
    low = np.clip(low, -1.0, 1.0)
    high = np.clip(high, -1.0, 1.0)
    return _out(a1.ndim == 0, low, high)


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


def _binom_quantile(p: float, n: int, prob: float) -> int:
    """Smallest r with P(R <= r) >= p for R ~ Binomial(n, prob) (R's qbinom)."""
    return int(_binom_quantile_arr(np.asarray(p, float), np.asarray(n, float), prob))


def _binom_quantile_arr(p: np.ndarray, n: np.ndarray, prob: Any) -> np.ndarray:
    """Vectorised exact binomial quantile, guarded against ppf rounding."""
    r = _st.binom.ppf(p, n, prob)
    # scipy's ppf inverts a continuous approximation and then checks; make
    # sure r really is the *smallest* r with F(r) >= p.
    down = (r > 0) & (_st.binom.cdf(r - 1, n, prob) >= p)
    r = np.where(down, r - 1, r)
    up = (r < n) & (_st.binom.cdf(r, n, prob) < p)
    return np.where(up, r + 1, r)


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


# --------------------------------------------------------------------------- funnel


def funnel_limits(
    p0: ArrayLike, n: ArrayLike, level: float, tau2: float = 0.0
) -> tuple[Any, Any]:
    """Funnel-plot control limits for a proportion with denominator ``n``.

    Exact binomial limits with interpolation between integers, Spiegelhalter
    DJ (2005) "Funnel plots for comparing institutional performance", Stat
    Med 24:1185-1202, Appendix A.1.1: for p in {(1 - level)/2, 1 - (1 - level)/2}
    and R ~ Binomial(n, p0), let r_p be the smallest r with F(r) >= p, then::

        alpha = (F(r_p) - p) / (F(r_p) - F(r_p - 1))
        limit = (r_p - alpha) / n

    Why: the interpolation gives smooth funnels with near-exact tail
    probabilities even for the small denominators of single clinicians.
    Typical levels are 0.95 and 0.998. Vectorised over ``n`` (and ``p0``);
    limits are clipped to [0, 1]; ``n == 0`` gives nan. For ``p0`` of exactly
    0 or 1 the limits are ``p0`` itself (no variation is possible).

    Overdispersion (``tau2 > 0``, e.g. from :func:`overdispersion`): random-
    effects limits on the variance-stabilising arcsine scale, Spiegelhalter DJ
    (2005) "Handling over-dispersion of performance indicators", Qual Saf
    Health Care 14:347-351, as in the FunnelPlotR R package (proportions)::

        theta = asin(sqrt(p0)) -/+ z * sqrt(1 / (4 n) + tau2)
        limit = sin(theta) ** 2

    with z the two-sided normal quantile of ``level``. ``theta`` is clipped to
    [0, pi/2] *before* squaring the sine: outside that range sin^2 folds back
    and a lower limit below 0 would come out as a positive proportion. This
    also applies when ``p0`` is 0 or 1 (the limits are then one-sided).
    ``tau2 == 0`` keeps the exact binomial limits above (not the arcsine
    approximation), so unadjusted funnels are unchanged.
    """
    z = _z(level)  # validates level
    tau2 = float(tau2)
    if not (np.isfinite(tau2) and tau2 >= 0.0):
        raise ValueError(f"funnel_limits: tau2 must be finite and >= 0, got {tau2!r}")
    p0_arr, n_arr = np.broadcast_arrays(_as_float(p0), _as_float(n))
    with np.errstate(invalid="ignore"):
        if np.any((p0_arr < 0) | (p0_arr > 1)):
            raise ValueError("funnel_limits: p0 must lie in [0, 1]")
        if np.any(n_arr < 0):
            raise ValueError("funnel_limits: n must be >= 0")
    tail = (1.0 - float(level)) / 2.0

    ok = (n_arr > 0) & ~np.isnan(p0_arr)
    n_safe = np.where(ok, n_arr, 1.0)
    p0_safe = np.where(ok, p0_arr, 0.5)

    if tau2 > 0.0:
        theta = np.arcsin(np.sqrt(p0_safe))
        half = z * np.sqrt(1.0 / (4.0 * n_safe) + tau2)
        low = np.sin(np.clip(theta - half, 0.0, np.pi / 2.0)) ** 2
        high = np.sin(np.clip(theta + half, 0.0, np.pi / 2.0)) ** 2
        low = np.where(ok, np.clip(low, 0.0, 1.0), np.nan)
        high = np.where(ok, np.clip(high, 0.0, 1.0), np.nan)
        return _out(p0_arr.ndim == 0, low, high)

    def limit(p: float) -> np.ndarray:
        r = _binom_quantile_arr(np.full(n_safe.shape, p), n_safe, p0_safe)
        f_r = _st.binom.cdf(r, n_safe, p0_safe)
        f_r1 = _st.binom.cdf(r - 1, n_safe, p0_safe)
        with np.errstate(invalid="ignore", divide="ignore"):
            alpha = (f_r - p) / (f_r - f_r1)
        return (r - alpha) / n_safe

    low = limit(tail)
    high = limit(1.0 - tail)
    degenerate = (p0_safe == 0.0) | (p0_safe == 1.0)
    low = np.where(degenerate, p0_safe, low)
    high = np.where(degenerate, p0_safe, high)
    low = np.where(ok, np.clip(low, 0.0, 1.0), np.nan)
    high = np.where(ok, np.clip(high, 0.0, 1.0), np.nan)
    return _out(p0_arr.ndim == 0, low, high)


# --------------------------------------------------------------------------- Kaplan-Meier

_KM_COLUMNS = ["time", "at_risk", "events", "survival", "ci_low", "ci_high"]


def kaplan_meier(
    durations: ArrayLike, events: ArrayLike, level: float = 0.95
) -> pd.DataFrame:
    """Kaplan-Meier product-limit estimate with a log-log confidence interval.

    One row per distinct observed time (event or censoring; censor-only times
    have ``events == 0`` and an unchanged survival). ``at_risk`` is the number
    with duration >= time; ``events`` the number of events at that time.
    ``survival`` is prod(1 - d_i / n_i) over times <= t. The interval uses
    Greenwood's variance on the log-log scale ("exponential Greenwood"), as
    R ``survfit(conf.type = "log-log")`` and lifelines::

        V = sum d_i / (n_i (n_i - d_i))
        S ** exp(± z * sqrt(V) / log(S))

    Edge cases: while S == 1 (no events yet) the interval is (1, 1), as the
    Greenwood variance is 0; where S == 0 it is (nan, nan), as the variance is
    undefined (R returns NA there too).

    ``events`` is 1/True for an event (e.g. recurrence), 0/False for a
    censored observation. Missing values are rejected, not guessed.
    """
    z = _z(level)
    t = _as_float(durations).ravel()
    e = _as_float(events).ravel()
    if t.shape != e.shape:
        raise ValueError("kaplan_meier: durations and events must have the same length")
    if np.isnan(t).any() or np.isnan(e).any():
        raise ValueError("kaplan_meier: durations and events must not be missing")
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ValueError("kaplan_meier: durations must be finite and >= 0")
    if not np.all((e == 0) | (e == 1)):
        raise ValueError("kaplan_meier: events must be 0/1 or booleans")
    if t.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in _KM_COLUMNS}).astype(
            {"at_risk": "int64", "events": "int64"}
        )

    times, inverse = np.unique(t, return_inverse=True)
    removed = np.bincount(inverse, minlength=times.size)
    d = np.bincount(inverse, weights=e, minlength=times.size).astype(np.int64)
    at_risk = t.size - np.concatenate(([0], np.cumsum(removed)[:-1]))

    survival = np.cumprod(1.0 - d / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(d > 0, d / (at_risk * (at_risk - d).astype(float)), 0.0)
        greenwood = np.cumsum(term)
        log_s = np.log(survival)
        ratio = z * np.sqrt(greenwood) / log_s  # negative where 0 < S < 1
        ci_low = survival ** np.exp(-ratio)
        ci_high = survival ** np.exp(ratio)
    interior = (survival > 0) & (survival < 1)
    ci_low = np.where(interior, ci_low, np.where(survival >= 1, 1.0, np.nan))
    ci_high = np.where(interior, ci_high, np.where(survival >= 1, 1.0, np.nan))

    return pd.DataFrame(
        {
            "time": times,
            "at_risk": at_risk.astype(np.int64),
            "events": d,
            "survival": survival,
            "ci_low": ci_low,
            "ci_high": ci_high,
        }
    )


def km_median(table: pd.DataFrame) -> float | None:
    """Median survival time from a :func:`kaplan_meier` table.

    The first time at which the survival estimate is <= 0.5, or ``None`` when
    the curve never gets there ("median not reached" — common for time to
    recurrence with short follow-up). Note: R's ``survfit`` averages with the
    next event time when the curve sits exactly at 0.5; this follows the
    simpler textbook / lifelines definition.
    """
    if table.empty:
        return None
    s = table["survival"].to_numpy(dtype=float)
    hit = np.flatnonzero(s <= 0.5 + _TIE_RTOL)
    if hit.size == 0:
        return None
    return float(table["time"].to_numpy()[hit[0]])


# --------------------------------------------------------------------------- clustering


def design_effect(successes: ArrayLike, n: ArrayLike) -> float:
    """Design effect of a proportion estimated from clusters (e.g. sessions per patient).

    With per-cluster successes ``x_i`` and trials ``n_i`` (i = 1..k clusters),
    ``N = sum(n_i)`` and the ratio estimator ``p = sum(x_i) / N``::

        Var_cluster = k / (k - 1) * sum((x_i - p * n_i) ** 2) / N ** 2
        deff        = Var_cluster / (p * (1 - p) / N)

    ``Var_cluster`` is the linearisation (Taylor-series) variance of a ratio
    estimator with clusters treated as sampled with replacement (Cochran WG,
    Sampling Techniques, 3rd ed., 1977, chapter 6 on ratio estimators; Kish L,
    Survey Sampling, 1965); ``deff`` is Kish's design effect, the
    variance relative to simple random sampling of N sessions. It equals the
    square of the cluster-robust (CR1) standard error of an intercept-only
    regression divided by the square of its HC0 standard error.

    Edge cases (chosen and tested):

    * clusters with ``n_i == 0`` or a missing count carry no information and
      are dropped before k is counted;
    * fewer than 2 clusters: ``nan`` (a between-cluster variance cannot be
      estimated from one cluster);
    * ``p`` of exactly 0 or 1 (with k >= 2): ``1.0``. Every session agrees, so
      both variances are 0 and the ratio is 0/0; 1.0 means "no inflation", so
      a clustered interval falls back to the plain Wilson one, which is still
      informative at 0 of N and N of N.

    Values below 1 (less variation between clusters than binomial) are
    returned as computed; :func:`wilson_ci_clustered` uses ``max(deff, 1)``.
    Note that even with clusters of size 1 the estimator gives k / (k - 1),
    not exactly 1, because of the with-replacement factor.
    """
    x = _as_float(successes).ravel()
    m = _as_float(n).ravel()
    if x.shape != m.shape:
        raise ValueError("design_effect: successes and n must have the same length")
    _check_counts(x, m, "design_effect")
    keep = (m > 0) & ~np.isnan(x)
    x, m = x[keep], m[keep]
    k = x.size
    if k < 2:
        return float("nan")
    total = m.sum()
    p = x.sum() / total
    if p <= 0.0 or p >= 1.0:
        return 1.0
    var_cluster = k / (k - 1.0) * np.sum((x - p * m) ** 2) / total**2
    return float(var_cluster / (p * (1.0 - p) / total))


def wilson_ci_clustered(
    successes: ArrayLike, n_total: ArrayLike, deff: ArrayLike, level: float = 0.95
) -> tuple[Any, Any]:
    """Wilson interval for clustered data, at the effective sample size.

    The Wilson score interval (see :func:`wilson_ci`) computed with both the
    number of successes and the number of trials divided by ``max(deff, 1)``,
    i.e. at the effective size ``N / max(deff, 1)`` and the same proportion
    (Kish's effective sample size, Kish L, Survey Sampling, 1965; the same
    substitution Korn EL and Graubard BI (1998, Survey Methodology 24:193-201)
    make in the Clopper-Pearson interval).

    Because the Wilson interval is the set of p with
    ``n (p_hat - p)^2 <= z^2 p (1 - p)``, a smaller n gives a superset: the
    clustered interval always contains the plain one and is never narrower.
    ``deff`` below 1 is treated as 1 (no credit for clustering); a missing
    ``deff`` (e.g. :func:`design_effect` of a single cluster) gives
    ``(nan, nan)``, as does ``n_total == 0``. Vectorised like
    :func:`wilson_ci`.
    """
    z = _z(level)
    k_arr, n_arr, d_arr = np.broadcast_arrays(
        _as_float(successes), _as_float(n_total), _as_float(deff)
    )
    _check_counts(k_arr, n_arr, "wilson_ci_clustered")
    with np.errstate(invalid="ignore"):
        if np.any(d_arr < 0):
            raise ValueError("wilson_ci_clustered: deff must be >= 0")
    factor = np.maximum(d_arr, 1.0)  # nan propagates
    low, high = _wilson(k_arr / factor, n_arr / factor, z)
    return _out(k_arr.ndim == 0, low, high)


# --------------------------------------------------------------------------- overdispersion


def overdispersion(
    successes: ArrayLike,
    n: ArrayLike,
    p0: float | None = None,
    winsor: float = 0.1,
) -> dict[str, Any]:
    """Overdispersion of unit proportions around a target (funnel plots).

    Spiegelhalter DJ (2005) "Handling over-dispersion of performance
    indicators", Qual Saf Health Care 14:347-351, with the arcsine transform
    for proportions as in the FunnelPlotR R package (Spiegelhalter 2005, Stat
    Med 24:1185-1202). For unit i with ``x_i`` successes of ``n_i``::

        z_i   = (asin(sqrt(x_i / n_i)) - asin(sqrt(p0))) * 2 * sqrt(n_i)
        phi   = mean(winsorised z_i ** 2)
        w_i   = 4 * n_i                      (1 / within-unit variance)
        tau2  = max(0, (k * phi - (k - 1)) / (sum(w) - sum(w ** 2) / sum(w)))

    ``p0`` defaults to ``sum(x) / sum(n)``. The z-scores are winsorised at
    their ``winsor`` and ``1 - winsor`` quantiles (linear interpolation: R's
    ``quantile`` type 7, numpy's default) before ``phi`` is computed, so one
    extreme unit cannot inflate the dispersion. ``phi`` near 1 means the
    units vary as binomial noise predicts; ``tau2`` is the between-unit
    variance on the arcsine scale, for ``funnel_limits(..., tau2=tau2)``.

    Returns a dict:

    * ``phi`` (float): dispersion ratio; ``nan`` when no unit has n > 0;
    * ``tau2`` (float): >= 0; ``0.0`` when fewer than 2 units have n > 0
      (not estimable, so no adjustment);
    * ``z`` (ndarray, one per input unit, in input order): the
      **unwinsorised** z-scores; ``nan`` for units with ``n == 0`` or a
      missing count, which are left out of phi and tau2;
    * ``p0`` (float): the target used.
    """
    x = _as_float(successes).ravel()
    m = _as_float(n).ravel()
    if x.shape != m.shape:
        raise ValueError("overdispersion: successes and n must have the same length")
    _check_counts(x, m, "overdispersion")
    winsor = float(winsor)
    if not 0.0 <= winsor < 0.5:
        raise ValueError(f"overdispersion: winsor must be in [0, 0.5), got {winsor!r}")
    ok = (m > 0) & ~np.isnan(x)
    if p0 is None:
        p0 = float(x[ok].sum() / m[ok].sum()) if ok.any() else float("nan")
    else:
        p0 = float(p0)
        if not 0.0 <= p0 <= 1.0:
            raise ValueError(f"overdispersion: p0 must lie in [0, 1], got {p0!r}")

    z = np.full(x.shape, np.nan)
    z[ok] = (np.arcsin(np.sqrt(x[ok] / m[ok])) - np.arcsin(np.sqrt(p0))) * 2.0 * np.sqrt(m[ok])
    zk = z[ok]
    k = zk.size
    if k == 0 or np.isnan(p0):
        return {"phi": float("nan"), "tau2": 0.0, "z": z, "p0": p0}
    lo, hi = np.quantile(zk, [winsor, 1.0 - winsor])  # linear = R type 7
    phi = float(np.mean(np.clip(zk, lo, hi) ** 2))
    tau2 = 0.0
    if k >= 2:
        w = 4.0 * m[ok]
        denom = w.sum() - np.sum(w**2) / w.sum()
        tau2 = float(max(0.0, (k * phi - (k - 1)) / denom))
    return {"phi": phi, "tau2": tau2, "z": z, "p0": p0}


# --------------------------------------------------------------------------- multiplicity


def bh_qvalues(p: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values ("q-values"), missing-value aware.

    Benjamini Y, Hochberg Y (1995) "Controlling the false discovery rate",
    J R Stat Soc B 57:289-300, step-up procedure as adjusted p-values (R's
    ``p.adjust(method = "BH")``): with the m non-missing p-values sorted,
    ``p_(1) <= ... <= p_(m)``::

        q_(i) = min(1, min_{j >= i} m * p_(j) / j)

    Rejecting every hypothesis with ``q <= alpha`` controls the false
    discovery rate at alpha. ``nan`` (a test that could not be done) stays
    ``nan`` and does not count in m. Returns a float array of the input's
    shape; p-values outside [0, 1] raise ``ValueError``.
    """
    a = _as_float(p)
    flat = a.ravel()
    ok = ~np.isnan(flat)
    pv = flat[ok]
    if np.any((pv < 0) | (pv > 1)):
        raise ValueError("bh_qvalues: p-values must lie in [0, 1]")
    out = np.full(flat.shape, np.nan)
    m = pv.size
    if m:
        order = np.argsort(pv, kind="stable")
        scaled = pv[order] * m / np.arange(1, m + 1)
        q = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        back = np.empty(m)
        back[order] = q
        out[ok] = back
    return out.reshape(a.shape)


# --------------------------------------------------------------------------- competing risks

_CIF_COLUMNS = ["time", "at_risk", "events", "competing", "cif", "ci_low", "ci_high"]


def cumulative_incidence(
    durations: ArrayLike, events: ArrayLike, level: float = 0.95
) -> pd.DataFrame:
    """Aalen-Johansen cumulative incidence of one event type with a competing event.

    ``events`` codes each subject: 0 = censored, 1 = event of interest (e.g.
    recurrence), 2 = competing event (e.g. a new course, or loss of the
    area, that makes the event of interest impossible to observe as such).
    Treating competing events as censored (1 - Kaplan-Meier) overstates the
    risk; the Aalen-Johansen estimator (Aalen OO, Johansen S 1978, Scand J
    Stat 5:141-150; Kalbfleisch JD, Prentice RL, The Statistical Analysis of
    Failure Time Data, 2nd ed., 2002, section 8.2) is::

        CIF(t) = sum_{t_j <= t} S(t_j-) * d1_j / n_j

    with ``S`` the all-cause Kaplan-Meier curve (events 1 and 2 both count),
    ``n_j`` the number at risk and ``d1_j`` the events of interest at t_j.

    Interval: the delta-method ("Greenwood-type") variance of Marubini E,
    Valsecchi MG, Analysing Survival Data from Clinical Trials and
    Observational Studies, Wiley 1995 (as Stata ``stcompet``, SAS
    ``PROC LIFETEST ERROR=DELTA``, statsmodels ``CumIncidenceRight`` and
    lifelines ``AalenJohansenFitter``), with ``d_j`` all events at t_j::

        Var(CIF(t)) = sum_{t_j <= t} (CIF(t) - CIF(t_j))^2 * d_j / (n_j (n_j - d_j))
                    + sum_{t_j <= t} S(t_j-)^2 * d1_j * (n_j - d1_j) / n_j^3
                    - 2 sum_{t_j <= t} (CIF(t) - CIF(t_j)) * S(t_j-) * d1_j / n_j^2

    (without censoring it reduces to the binomial CIF (1 - CIF) / N),
    transformed on the log(-log) scale so the limits stay in (0, 1)::

        CIF ** exp(-/+ z * sqrt(Var) / (CIF * log(CIF)))

    Edge cases: while CIF == 0 the interval is (0, 0) (variance 0); where
    CIF == 1 it is (nan, nan) (the transform is undefined), mirroring
    :func:`kaplan_meier`. A term with ``n_j == d_j`` (everyone left has an
    event) only occurs at the last time, where ``CIF(t) - CIF(t_j)`` is 0, and
    contributes 0.

    One row per distinct observed time (as :func:`kaplan_meier`): ``time``,
    ``at_risk`` (duration >= time), ``events`` (code 1 at that time),
    ``competing`` (code 2), ``cif``, ``ci_low``, ``ci_high``. Tied times of
    different types are handled exactly (no jittering). Missing values are
    rejected.
    """
    z = _z(level)
    t = _as_float(durations).ravel()
    e = _as_float(events).ravel()
    if t.shape != e.shape:
        raise ValueError("cumulative_incidence: durations and events must have the same length")
    if np.isnan(t).any() or np.isnan(e).any():
        raise ValueError("cumulative_incidence: durations and events must not be missing")
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ValueError("cumulative_incidence: durations must be finite and >= 0")
    if not np.all((e == 0) | (e == 1) | (e == 2)):
        raise ValueError("cumulative_incidence: events must be coded 0, 1 or 2")
    if t.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in _CIF_COLUMNS}).astype(
            {"at_risk": "int64", "events": "int64", "competing": "int64"}
        )

    times, inverse = np.unique(t, return_inverse=True)
    removed = np.bincount(inverse, minlength=times.size)
    d1 = np.bincount(inverse, weights=(e == 1), minlength=times.size)
    d2 = np.bincount(inverse, weights=(e == 2), minlength=times.size)
    d = d1 + d2
    n = (t.size - np.concatenate(([0], np.cumsum(removed)[:-1]))).astype(float)

    surv = np.cumprod(1.0 - d / n)
    s_prev = np.concatenate(([1.0], surv[:-1]))
    cif = np.cumsum(s_prev * d1 / n)

    # The three sums, expanded so that each is a running sum over t_j <= t:
    # sum (F(t) - F_j)^2 a_j = F^2 A - 2 F sum(F_j a_j) + sum(F_j^2 a_j).
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where((d > 0) & (n > d), d / (n * (n - d)), 0.0)
    b = s_prev**2 * d1 * (n - d1) / n**3
    c = s_prev * d1 / n**2
    var = (
        cif**2 * np.cumsum(a)
        - 2.0 * cif * np.cumsum(cif * a)
        + np.cumsum(cif**2 * a)
        + np.cumsum(b)
        - 2.0 * (cif * np.cumsum(c) - np.cumsum(cif * c))
    )
    var = np.maximum(var, 0.0)  # rounding noise only

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = z * np.sqrt(var) / (cif * np.log(cif))  # negative where 0 < CIF < 1
        ci_low = cif ** np.exp(-ratio)
        ci_high = cif ** np.exp(ratio)
    interior = (cif > 0) & (cif < 1)
    ci_low = np.where(interior, ci_low, np.where(cif <= 0, 0.0, np.nan))
    ci_high = np.where(interior, ci_high, np.where(cif <= 0, 0.0, np.nan))

    return pd.DataFrame(
        {
            "time": times,
            "at_risk": n.astype(np.int64),
            "events": d1.astype(np.int64),
            "competing": d2.astype(np.int64),
            "cif": cif,
            "ci_low": ci_low,
            "ci_high": ci_high,
        }
    )
