"""Time to event: Kaplan–Meier with log-log intervals, its median, and the
Aalen–Johansen cumulative incidence with a competing event."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from outcomes.stats.common import _TIE_RTOL, _as_float, _z

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
