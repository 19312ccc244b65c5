"""Small statistics of the outcome analysis (medians, t, Wilcoxon, Mann–Whitney, SMD, Spearman,
log-rank), each citing its method."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

# =============================================================================================
# small statistics helpers (general; each cites its method)


def _finite(x: Any) -> np.ndarray:
    """Values as float64 with missing values removed."""
    if isinstance(x, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        a = np.asarray(x.to_numpy(dtype="float64", na_value=np.nan), dtype="float64")
    else:
        a = np.asarray(x, dtype="float64")
    a = a.ravel()
    return a[np.isfinite(a)]


def _zq(level: float) -> float:
    return float(_st.norm.ppf(0.5 + level / 2))


def median_ci(x: Any, level: float = 0.95) -> tuple[float, float, float]:
    """Sample median with its distribution-free (exact binomial) confidence interval.

    The interval inverts the sign test: with B ~ Binomial(n, 1/2) and k the largest
    integer with P(B <= k - 1) <= (1 - level)/2, it runs from the k-th to the
    (n - k + 1)-th order statistic, with coverage at least `level` for any
    continuous distribution (Conover WJ, Practical Nonparametric Statistics, 3rd ed.,
    1999, section 3.2; Campbell MJ, Gardner MJ, BMJ 1988;296:1454-6). No bootstrap, no
    normal approximation; O(n log n). Returns (median, low, high); the interval is
    (nan, nan) when n is too small to reach the level (n < 6 at 95 %).
    """
    a = np.sort(_finite(x))
    n = a.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    med = float(np.median(a))
    alpha = 1 - level
    k = int(_st.binom.ppf(alpha / 2, n, 0.5))  # smallest k with P(B <= k) >= alpha/2
    while k > 0 and _st.binom.cdf(k - 1, n, 0.5) > alpha / 2:
        k -= 1
    while _st.binom.cdf(k, n, 0.5) <= alpha / 2:
        k += 1
    if k < 1:
        return (med, math.nan, math.nan)
    return (med, float(a[k - 1]), float(a[n - k]))


def paired_t(diff: Any, level: float = 0.95) -> dict[str, float]:
    """Mean of paired differences with the paired (one-sample) t interval and test.

    mean ± t_{n-1, 1-alpha/2} · sd / sqrt(n) (Student 1908; any statistics text).
    Returns mean, sd, ci_low, ci_high, t, df, p (two-sided).
    """
    d = _finite(diff)
    n = d.size
    out = {"mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "t": math.nan, "df": math.nan, "p": math.nan}
    if n == 0:
        return out
    out["mean"] = float(d.mean())
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    df = n - 1
    q = float(_st.t.ppf(0.5 + level / 2, df))
    out.update(sd=sd, ci_low=out["mean"] - q * se, ci_high=out["mean"] + q * se, df=df)
    if se > 0:
        t = out["mean"] / se
        out.update(t=t, p=float(2 * _st.t.sf(abs(t), df)))
    return out


def welch_t_from_stats(mean1: float, sd1: float, n1: float, mean2: float, sd2: float,
                       n2: float, level: float = 0.95) -> dict[str, float]:
    """Welch's unequal-variance t test and interval for mean1 − mean2 from summary statistics.

    se = sqrt(s1²/n1 + s2²/n2); Welch–Satterthwaite degrees of freedom
    df = se⁴ / ((s1²/n1)²/(n1−1) + (s2²/n2)²/(n2−1)) (Welch BL, Biometrika 1947;34:28-35).
    Returns diff, ci_low, ci_high, t, df, p (two-sided); nan where a group has n < 2.
    """
    out = {"diff": float(mean1 - mean2), "ci_low": math.nan, "ci_high": math.nan,
           "t": math.nan, "df": math.nan, "p": math.nan}
    if n1 < 2 or n2 < 2:
        return out
    v1, v2 = sd1 ** 2 / n1, sd2 ** 2 / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        return out
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    t = out["diff"] / se
    q = float(_st.t.ppf(0.5 + level / 2, df))
    out.update(ci_low=out["diff"] - q * se, ci_high=out["diff"] + q * se, t=t, df=df,
               p=float(2 * _st.t.sf(abs(t), df)))
    return out


def welch_t(x: Any, y: Any, level: float = 0.95) -> dict[str, float]:
    """Welch's t test of mean(x) − mean(y) from raw values (see welch_t_from_stats)."""
    a, b = _finite(x), _finite(y)
    return welch_t_from_stats(a.mean() if a.size else math.nan,
                              a.std(ddof=1) if a.size > 1 else math.nan, a.size,
                              b.mean() if b.size else math.nan,
                              b.std(ddof=1) if b.size > 1 else math.nan, b.size, level)


def rank_biserial(x: Any, y: Any, level: float = 0.95) -> tuple[float, float, float]:
    """Glass rank-biserial correlation of x against y with its Fisher-z interval.

    r = 2·U_x/(n_x·n_y) − 1 = P(X > Y) − P(X < Y) (ties count half; Glass 1965; Kerby,
    Comprehensive Psychology 2014;3:11.IT.3.1): +1 when every x exceeds every y.
    Interval: tanh(atanh(r) ± z·sqrt((n_x + n_y + 1)/(3·n_x·n_y))), the normal
    approximation used by the R package effectsize (rank_biserial()).
    Returns (r, low, high).
    """
    a, b = _finite(x), _finite(y)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        return (math.nan, math.nan, math.nan)
    ranks = _st.rankdata(np.concatenate([a, b]))
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    r = float(2 * u1 / (n1 * n2) - 1)
    se = math.sqrt((n1 + n2 + 1) / (3 * n1 * n2))
    return (r, *_fisher_interval(r, se, level))


def rank_biserial_paired(diff: Any, level: float = 0.95) -> tuple[float, float, float]:
    """Matched-pairs rank-biserial correlation of paired differences with its interval.

    r = (T+ − T−)/(T+ + T−) over the signed ranks of the non-zero differences (Kerby
    2014): +1 when every pair increased. Interval as in effectsize:
    tanh(atanh(r) ± z·sqrt((2n³ + 3n² + n)/6)/(n(n + 1)/2)). Returns (r, low, high).
    """
    d = _finite(diff)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    ranks = _st.rankdata(np.abs(d))
    tp, tm = ranks[d > 0].sum(), ranks[d < 0].sum()
    r = float((tp - tm) / (tp + tm))
    se = math.sqrt((2 * n ** 3 + 3 * n ** 2 + n) / 6) / (n * (n + 1) / 2)
    return (r, *_fisher_interval(r, se, level))


def _fisher_interval(r: float, se: float, level: float) -> tuple[float, float]:
    if not np.isfinite(r):
        return (math.nan, math.nan)
    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    q = _zq(level)
    return (math.tanh(z - q * se), math.tanh(z + q * se))


def mann_whitney(x: Any, y: Any, level: float = 0.95) -> dict[str, float]:
    """Mann–Whitney U test of x against y (two-sided) with the rank-biserial effect size.

    U and p come from scipy.stats.mannwhitneyu (method "auto": exact for small samples
    without ties, else the normal approximation with tie and continuity correction).
    Returns u (for x), p, r, r_low, r_high.
    """
    a, b = _finite(x), _finite(y)
    r, lo, hi = rank_biserial(a, b, level)
    if a.size == 0 or b.size == 0:
        return {"u": math.nan, "p": math.nan, "r": r, "r_low": lo, "r_high": hi}
    res = _st.mannwhitneyu(a, b, alternative="two-sided")
    return {"u": float(res.statistic), "p": float(res.pvalue), "r": r, "r_low": lo,
            "r_high": hi}


def wilcoxon_signed_rank(diff: Any) -> dict[str, float]:
    """Wilcoxon signed-rank test of paired differences against 0 (two-sided).

    Matches R's default ``wilcox.test(x, mu = 0, exact = NULL, correct = TRUE)``:

    * zero differences are dropped (Wilcoxon's original rule) and n counts the rest;
    * exact p-value (null distribution of the signed-rank statistic) when n < 50 and
      there are neither ties among |d| nor zeros;
    * otherwise the normal approximation with R's tie-corrected variance
      ``n(n+1)(2n+1)/24 - sum(t^3 - t)/48`` and a continuity correction of 0.5
      towards the mean: ``z = (V - n(n+1)/4 - sign(.) * 0.5) / sigma``.

    Computed with scipy.stats.wilcoxon and explicit arguments (``zero_method="wilcox"``,
    ``correction=True``, ``method="exact"`` or ``"asymptotic"`` chosen by the rule
    above). scipy's own ``method="auto"`` differs from R: it is exact up to n = 50
    inclusive, and with ties or zeros it runs a permutation test for n <= 13.
    Returns statistic (the smaller of the two rank sums, scipy's two-sided
    statistic), p, n_nonzero.
    """
    d = _finite(diff)
    nonzero = d[d != 0]
    nz = int(nonzero.size)
    if nz == 0:
        return {"statistic": math.nan, "p": math.nan, "n_nonzero": 0}
    ties = np.unique(np.abs(nonzero)).size < nz
    zeros = nz < d.size
    method = "exact" if (nz < 50 and not ties and not zeros) else "asymptotic"
    res = _st.wilcoxon(d, zero_method="wilcox", correction=True, alternative="two-sided",
                       method=method)
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "n_nonzero": nz}


def smd_continuous(mean1: float, sd1: float, mean2: float, sd2: float) -> float:
    """Standardised mean difference (mean1 − mean2)/sqrt((sd1² + sd2²)/2).

    Austin PC, "Balance diagnostics for comparing the distribution of baseline
    covariates between treatment groups in propensity-score matched samples", Stat Med
    2009;28:3083-3107, eq. 1 (also Commun Stat Simul Comput 2009;38:1228-1234).
    """
    pooled = math.sqrt((sd1 ** 2 + sd2 ** 2) / 2)
    return (mean1 - mean2) / pooled if pooled > 0 else math.nan


def smd_binary(p1: float, p2: float) -> float:
    """SMD of a proportion: (p1 − p2)/sqrt((p1(1−p1) + p2(1−p2))/2) (Austin 2009, eq. 2)."""
    pooled = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / 2)
    return (p1 - p2) / pooled if pooled > 0 else math.nan


def smd_categorical(p1: Sequence[float], p2: Sequence[float]) -> float:
    """SMD of a categorical variable (k levels): sqrt((T − C)ᵀ S⁻¹ (T − C)).

    T, C: level proportions without the first level; S: the mean of the two multinomial
    covariance matrices (diag p − p pᵀ). Yang D, Dalton JE, "A unified approach to
    measuring the effect size between two groups using SAS", SAS Global Forum 2012,
    paper 335-2012; as in R tableone. A generalised inverse handles empty levels.
    For two levels it equals |smd_binary|.
    """
    a = np.asarray(p1, dtype="float64")[1:]
    b = np.asarray(p2, dtype="float64")[1:]
    if a.size == 0:
        return math.nan
    s = (np.diag(a) - np.outer(a, a) + np.diag(b) - np.outer(b, b)) / 2
    d = a - b
    v = float(d @ np.linalg.pinv(s) @ d)
    return math.sqrt(max(v, 0.0))


def spearman_ci(x: Any, y: Any, level: float = 0.95) -> dict[str, float]:
    """Spearman's rho with its p (scipy.stats.spearmanr) and a Fisher-z interval.

    Interval: tanh(atanh(rho) ± z·sqrt(1.06/(n − 3))) (Fieller EC, Hartley HO, Pearson
    ES, Biometrika 1957;44:470-481). Pairs with a missing value are dropped.
    Returns n, rho, ci_low, ci_high, p.
    """
    a = np.asarray(pd.to_numeric(pd.Series(x), errors="coerce"), dtype="float64")
    b = np.asarray(pd.to_numeric(pd.Series(y), errors="coerce"), dtype="float64")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    out = {"n": n, "rho": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    res = _st.spearmanr(a, b)
    rho = float(res.statistic)
    out.update(rho=rho, p=float(res.pvalue))
    if n > 3:
        lo, hi = _fisher_interval(rho, math.sqrt(1.06 / (n - 3)), level)
        out.update(ci_low=lo, ci_high=hi)
    return out


def logrank_test(durations: Any, events: Any, groups: Any) -> dict[str, float]:
    """k-sample log-rank test (Mantel 1966; Peto & Peto 1972) of equal survival curves.

    At each distinct event time the observed minus expected events of each group and
    their hypergeometric covariance are summed; the statistic (O − E)ᵀ V⁻ (O − E) on
    the first k − 1 groups is chi-square with k − 1 degrees of freedom. Vectorised
    over times. Returns chi2, df, p (nan with fewer than two groups).
    """
    t = np.asarray(durations, dtype="float64")
    e = np.asarray(events, dtype="float64")
    g_codes, g_levels = pd.factorize(pd.Series(groups).astype("string"), sort=True)
    k = len(g_levels)
    if k < 2 or t.size == 0 or e.sum() == 0:
        return {"chi2": math.nan, "df": float(max(k - 1, 0)), "p": math.nan}
    times, inv = np.unique(t, return_inverse=True)
    m = times.size
    removed = np.zeros((m, k))
    died = np.zeros((m, k))
    np.add.at(removed, (inv, g_codes), 1)
    np.add.at(died, (inv, g_codes), e)
    at_risk = removed[::-1].cumsum(axis=0)[::-1]  # n_ij: duration >= time
    n_tot = at_risk.sum(axis=1)
    d_tot = died.sum(axis=1)
    use = d_tot > 0
    at_risk, died, n_tot, d_tot = at_risk[use], died[use], n_tot[use], d_tot[use]
    expected = at_risk * (d_tot / n_tot)[:, None]
    o_e = (died - expected).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(n_tot > 1, d_tot * (n_tot - d_tot) / (n_tot ** 2 * (n_tot - 1)), 0.0)
    frac = at_risk
    v = (np.einsum("t,ti,ij->ij", w * n_tot, frac, np.eye(k))
         - np.einsum("t,ti,tj->ij", w, frac, frac))
    oe, vv = o_e[: k - 1], v[: k - 1, : k - 1]
    chi2 = float(oe @ np.linalg.pinv(vv) @ oe)
    df = k - 1
    return {"chi2": chi2, "df": float(df), "p": float(_st.chi2.sf(chi2, df))}
