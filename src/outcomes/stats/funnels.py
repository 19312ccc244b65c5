"""Funnel plots: exact binomial limits, random-effects limits and overdispersion
(Spiegelhalter 2005, as FunnelPlotR)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _st

from outcomes.stats.common import _as_float, _check_counts, _out, _z


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
