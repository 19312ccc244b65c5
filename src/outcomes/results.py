"""Patient outcomes: 3–6 month results, change from baseline, recurrence, adverse events.

The protocol sheet promises "Time of the final result: 3-6 months after #" and says
"Expect recurrence? yes". This module shows whether patients got that result, how it
held up, what adverse events the sessions carried, and whether courses that followed
the protocol did better.

Flow (every step takes and returns DataFrames, vectorised over rows)::

    windows = attach_windows(audit, outcomes)        # each assessment → course and window
    final = final_summary(windows)                   # per instrument × rater at 3–6 months
    paired, change = change_from_baseline(windows)   # hair density: final − baseline
    groups = compliance_groups(audit)                # followed the key criteria or not
    values = course_outcomes(windows, paired)        # one value per course × measure
    covariates = course_covariates(audit, windows)   # baseline density, age band, skin, clinician
    comparison = compare_groups(values, groups, covariates=covariates)
                                                     # Mann–Whitney / Welch with effect sizes,
                                                     # and OLS adjusted, clustered by patient
    table1 = table_one(audit, groups, windows)       # baseline characteristics by group
    rho, energy = spearman_energy(values, audit)     # energy against outcome
    km, rec = recurrence(audit, windows)             # Kaplan–Meier time to recurrence
    cif, crec = recurrence_cif(audit, windows)       # a new course as competing event
    ae = adverse_events(audit, by="operator")        # rates with Wilson intervals
    outcomes_json(audit, outcomes)                   # the `outcomes` object of audit --json

The small statistics helpers below (median CI, paired t, Welch from summary
statistics, rank-biserial with CI, SMD, Spearman CI, log-rank) each cite the method
they implement; ``tests/test_results.py`` checks them against published values or
scipy on the same data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from outcomes import schema
from outcomes.stats import (
    cumulative_incidence,
    kaplan_meier,
    km_median,
    newcombe_diff_ci,
    wilson_ci,
)

__all__ = [
    "AGE_BANDS",
    "COMPETING_WHY",
    "COVARIATES",
    "FOLLOWED",
    "NOT_FOLLOWED",
    "SMD_IMBALANCED",
    "WINDOWS",
    "adjusted_difference",
    "adverse_events",
    "age_band",
    "at_risk_at",
    "attach_windows",
    "change_from_baseline",
    "compare_groups",
    "compliance_groups",
    "course_covariates",
    "course_outcomes",
    "energy_bands",
    "final_summary",
    "format_comparison",
    "format_p",
    "format_recurrence_cif",
    "format_table_one",
    "imbalance_sentence",
    "logrank_test",
    "mann_whitney",
    "median_ci",
    "next_course_days",
    "outcomes_json",
    "paired_t",
    "rank_biserial",
    "rank_biserial_paired",
    "recurrence",
    "recurrence_cif",
    "recurrence_competing_data",
    "recurrence_data",
    "recurrence_followup_text",
    "smd_binary",
    "smd_categorical",
    "smd_continuous",
    "spearman_ci",
    "spearman_energy",
    "table_one",
    "welch_t",
    "welch_t_from_stats",
    "wilcoxon_signed_rank",
]

#: Windows an assessment can fall in, relative to its course.
WINDOWS = ("baseline", "during", "early", "final", "followup", "unmatched")
#: The protocol lines that decide whether a course "followed the protocol".
FOLLOWED = "followed protocol"
NOT_FOLLOWED = "did not"
GROUPS = (FOLLOWED, NOT_FOLLOWED)
FINAL_SCORE = "final score"
CHANGE = "change from baseline"
#: A standardised mean difference above this reads as imbalance between groups.
SMD_IMBALANCED = 0.1
#: Adverse-event field values that mean "no adverse event" (case-insensitive).
NO_EVENT = ("none", "no", "nein", "keine", "yok", "0", "-")

_OUTCOME_COLUMNS = ["course_id", "window", "days_from_last_session",
                    "days_from_first_session", "is_baseline", "is_final", "unmatched_reason"]


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


# =============================================================================================
# 1. outcome windows


def _protocol_window(audit: Any) -> tuple[int, int]:
    lo, hi = audit.protocol.final_result_days
    return int(lo), int(hi)


def attach_windows(audit: Any, outcomes: pd.DataFrame | None,
                   baseline_days: int = 60) -> pd.DataFrame:
    """Each assessment with its course and window: baseline, during, early, final, followup.

    Why: the protocol's final result is due 90–183 days after the last session
    (`audit.protocol.final_result_days`); an assessment only means something relative
    to the course it follows. Every input row comes back (same index and order); rows
    that fit no course get window "unmatched" and a reason, never dropped.

    Rules, per patient (outcomes carry no area, so each assessment goes to one course):

    * during: after the first and on or before the last session of a course;
    * final: 90–183 days (the protocol window) after the last session of the latest
      course that ended before it; ``is_final`` marks, per course × instrument × rater,
      the one closest to the last session (the earliest in the window, as the
      audit's final-assessment criterion reads it);
    * baseline: on or before the first session of a course and at most
      `baseline_days` before it; ``is_baseline`` marks the latest per course ×
      instrument × rater;
    * early (< 90 days) / followup (> 183 days) after the latest course that ended
      before it, when not a baseline of the next course;
    * unmatched: no audited course for the patient, or only long before one.

    An assessment inside one course's protocol window is that course's final even when
    it is also within `baseline_days` of the next course: the protocol's endpoint comes
    first. Where a patient has concurrent courses (two areas), ties go to the course with more
    sessions. A missing rater is filled from the instrument registry. Added columns:
    course_id, window, days_from_last_session, days_from_first_session, is_baseline,
    is_final, unmatched_reason, and previous_course_id / days_after_previous_course
    (the course that ended before the assessment, even when the assessment is the
    baseline of the next one: a follow-up just before a new course still tells whether
    the earlier one recurred).
    """
    if outcomes is None:
        outcomes = schema.empty_frame("outcomes")
    out = outcomes.copy()
    n = len(out)
    lo, hi = _protocol_window(audit)
    courses = audit.courses
    pid_o = out["patient_id"].astype("string")
    pid_c = courses["patient_id"].astype("string")
    codes, _ = pd.factorize(pd.concat([pid_c, pid_o], ignore_index=True))
    c_pid, o_pid = codes[: len(courses)], codes[len(courses):]
    date = out["assessment_date"].to_numpy(dtype="datetime64[D]")
    first = courses["first_date"].to_numpy(dtype="datetime64[D]")
    last = courses["last_date"].to_numpy(dtype="datetime64[D]")
    nsess = courses["sessions"].to_numpy(dtype="int64")
    has_course = np.isin(o_pid, c_pid) & (o_pid >= 0)
    usable = has_course & ~np.isnat(date)

    left = pd.DataFrame({"row": np.flatnonzero(usable), "p": o_pid[usable],
                         "d": date[usable]}).sort_values("d", kind="stable")
    cidx = np.arange(len(courses))
    # running latest end among a patient's courses that started before: "during" cover
    # (ties on a date: the last row wins a backward match, so more sessions sort last)
    by_start = pd.DataFrame({"p": c_pid, "d": first, "c": cidx, "last": last, "s": nsess})
    by_start = by_start.sort_values(["p", "d", "s", "c"], ascending=[True, True, True, False],
                                    kind="stable")
    by_start["cover"] = by_start.groupby("p")["last"].cummax()
    by_start = by_start.sort_values(["d", "s", "c"], ascending=[True, True, False],
                                    kind="stable")

    def asof(right: pd.DataFrame, direction: str, exact: bool, cols: list[str]) -> pd.DataFrame:
        m = pd.merge_asof(left, right[["p", "d", *cols]], on="d", by="p", direction=direction,
                          allow_exact_matches=exact, suffixes=("", "_r"))
        return m.set_index("row").reindex(np.arange(n))

    # course that started strictly before (and the latest end among those): during?
    started = asof(by_start.rename(columns={"c": "c_in"}), "backward", False,
                   ["c_in", "cover"])
    # latest course that ended strictly before
    by_end = pd.DataFrame({"p": c_pid, "d": last, "c_prev": cidx, "s": nsess})
    by_end = by_end.sort_values(["d", "s", "c_prev"], ascending=[True, True, False],
                                kind="stable")
    prev = asof(by_end, "backward", False, ["c_prev"])
    # earliest course that starts on or after
    by_next = pd.DataFrame({"p": c_pid, "d": first, "c_next": cidx, "s": -nsess})
    by_next = by_next.sort_values(["d", "s", "c_next"], kind="stable")
    nxt = asof(by_next, "forward", True, ["c_next"])

    c_in = started["c_in"].to_numpy(dtype="float64")
    cover = started["cover"].to_numpy(dtype="datetime64[D]")
    c_prev = prev["c_prev"].to_numpy(dtype="float64")
    c_next = nxt["c_next"].to_numpy(dtype="float64")
    during = usable & ~np.isnan(c_in) & ~np.isnat(cover) & (cover >= date)
    has_prev = usable & ~np.isnan(c_prev)
    has_next = usable & ~np.isnan(c_next)
    ip = np.where(has_prev, c_prev, 0).astype("int64")
    inx = np.where(has_next, c_next, 0).astype("int64")
    ic = np.where(during, c_in, 0).astype("int64")
    d_prev = np.where(has_prev, (date - last[ip]).astype("int64"), -1)
    d_next = np.where(has_next, (first[inx] - date).astype("int64"), -1)
    in_final = has_prev & (d_prev >= lo) & (d_prev <= hi)
    is_base = has_next & (d_next <= baseline_days)

    conds = [during, ~during & in_final, ~during & ~in_final & is_base,
             ~during & ~in_final & ~is_base & has_prev]
    window = np.select(conds, ["during", "final", "baseline", "after"], "unmatched")
    after = window == "after"
    window = np.where(after & (d_prev < lo), "early", window)
    window = np.where(after & (d_prev > hi), "followup", window)
    course = np.select([window == "during", np.isin(window, ["final", "early", "followup"]),
                        window == "baseline"], [ic, ip, inx], -1)
    matched = course >= 0
    course_ids = courses["course_id"].astype("string").to_numpy(dtype=object)
    cid = np.full(n, None, dtype=object)
    cid[matched] = course_ids[course[matched]]
    days_last = np.full(n, np.nan)
    days_first = np.full(n, np.nan)
    days_last[matched] = (date[matched] - last[course[matched]]).astype("float64")
    days_first[matched] = (date[matched] - first[course[matched]]).astype("float64")
    reason = np.select(
        [matched, np.isnat(date), ~has_course,
         has_next & (d_next > baseline_days)],
        ["", "no assessment date", "no audited course for this patient",
         f"more than {baseline_days} days before the first session"],
        "does not fit a course").astype(object)

    out["course_id"] = pd.array(cid, dtype="string")
    out["window"] = pd.Categorical(window, categories=list(WINDOWS))
    out["days_from_last_session"] = pd.array(days_last, dtype="Int64")
    out["days_from_first_session"] = pd.array(days_first, dtype="Int64")
    rater = out["rater"].astype("string").str.strip().str.lower()
    default = out["instrument"].astype("string").map(
        {i: ins.rater for i, ins in schema.INSTRUMENTS.items()}).astype("string")
    out["rater"] = rater.fillna(default)
    inst_code = pd.factorize(out["instrument"])[0]
    rater_code = pd.factorize(out["rater"])[0]
    out["is_baseline"] = _mark_first(course, inst_code, rater_code, days_last,
                                     window == "baseline", ascending=False)
    out["is_final"] = _mark_first(course, inst_code, rater_code, days_last,
                                  window == "final", ascending=True)
    out["unmatched_reason"] = pd.array(np.where(matched, None, reason), dtype="string")
    # the course that ended before it (also for a baseline of the next course): recurrence
    follows = has_prev & (window != "during")
    prev_id = np.full(n, None, dtype=object)
    prev_id[follows] = course_ids[ip[follows]]
    out["previous_course_id"] = pd.array(prev_id, dtype="string")
    out["days_after_previous_course"] = pd.array(
        np.where(follows, d_prev, np.nan), dtype="Int64")
    return out


def _mark_first(course: np.ndarray, inst: np.ndarray, rater: np.ndarray, days: np.ndarray,
                mask: np.ndarray, ascending: bool) -> np.ndarray:
    """True on the earliest (or latest) row per course × instrument × rater among mask.

    All keys are integer codes, so one lexsort does it; ties keep the input order.
    """
    flag = np.zeros(len(course), dtype=bool)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return flag
    d = days[idx] if ascending else -days[idx]
    s = idx[np.lexsort((idx, d, rater[idx], inst[idx], course[idx]))]
    c, i, r = course[s], inst[s], rater[s]
    new = np.ones(s.size, dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (i[1:] != i[:-1]) | (r[1:] != r[:-1])
    flag[s[new]] = True
    return flag


# =============================================================================================
# 2. final results per instrument


def _improved(instrument: pd.Series, score: np.ndarray) -> np.ndarray:
    """1.0 / 0.0 where the instrument defines "improved" (registry threshold), else nan."""
    inst = instrument.astype("string").to_numpy(dtype=object)
    out = np.full(len(score), np.nan)
    for iid, ins in schema.INSTRUMENTS.items():
        if ins.improved_at is None:
            continue
        here = inst == iid
        better = score >= ins.improved_at if ins.higher_is_better else score <= ins.improved_at
        out[here] = better[here].astype("float64")
    return out


def _instrument_order(ids: pd.Series) -> pd.Series:
    order = {iid: i for i, iid in enumerate(schema.INSTRUMENTS)}
    return ids.map(order).fillna(len(order))


def final_summary(windows: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per instrument × rater at the final (3–6 month) assessment: n, median, IQR, mean, SD,
    share improved with its Wilson interval.

    Why: the protocol promises its final result 3–6 months after the last session; this
    is what patients (and clinicians) scored then. One score per course (``is_final``).
    "Improved" follows the registry (`schema.INSTRUMENTS[...].improved_at` and
    direction): satisfaction 4–5, GAIS 1–3, GPA ≥ 1 (above 0); instruments without a
    threshold (hair density: see change_from_baseline; pain) get nan. Quartiles are
    linear-interpolation (type 7) sample quantiles.
    """
    f = windows[windows["is_final"].to_numpy(dtype=bool)]
    cols = ["instrument", "title", "rater", "unit", "n", "median", "q1", "q3", "mean", "sd",
            "min", "max", "improved_definition", "improved_n", "improved_k", "improved",
            "improved_ci_low", "improved_ci_high"]
    if f.empty:
        return pd.DataFrame(columns=cols)
    score = f["score"].to_numpy(dtype="float64", na_value=np.nan)
    d = pd.DataFrame({"instrument": f["instrument"].astype("string").to_numpy(dtype=object),
                      "rater": f["rater"].astype("string").fillna("").to_numpy(dtype=object),
                      "score": score, "improved": _improved(f["instrument"], score)})
    g = d.groupby(["instrument", "rater"], sort=False)["score"]
    s = pd.DataFrame({"n": g.count(), "median": g.median(), "q1": g.quantile(0.25),
                      "q3": g.quantile(0.75), "mean": g.mean(), "sd": g.std(ddof=1),
                      "min": g.min(), "max": g.max()})
    gi = d.groupby(["instrument", "rater"], sort=False)["improved"]
    s["improved_n"] = gi.count()
    s["improved_k"] = gi.sum(min_count=1)
    s = s.reset_index()
    k = s["improved_k"].to_numpy(dtype="float64")
    m = s["improved_n"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        s["improved"] = np.where(m > 0, k / np.where(m > 0, m, 1), np.nan)
    lo, hi = wilson_ci(np.nan_to_num(k), m, level)
    s["improved_ci_low"] = np.where(m > 0, lo, np.nan)
    s["improved_ci_high"] = np.where(m > 0, hi, np.nan)
    reg = schema.INSTRUMENTS
    s["title"] = s["instrument"].map(lambda i: reg[i].title if i in reg else i)
    s["unit"] = s["instrument"].map(lambda i: reg[i].unit if i in reg else "")
    s["improved_definition"] = s["instrument"].map(
        lambda i: reg[i].improved_text if i in reg and reg[i].improved_at is not None else "")
    s = s.sort_values(["instrument", "rater"], key=lambda c: _instrument_order(c)
                      if c.name == "instrument" else c, kind="stable")
    s["improved_k"] = s["improved_k"].astype("Int64")
    return s[cols].reset_index(drop=True)


# =============================================================================================
# 3. change from baseline


def change_from_baseline(windows: pd.DataFrame, instrument: str = "hair_density",
                         level: float = 0.95) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Paired baseline → final (3–6 month) values per course, and their change.

    Why: a measurement like hair density only says something against the same course's
    baseline. Pairs are the course's baseline (``is_baseline``) and final (``is_final``)
    values of the same instrument and rater. Summary: median change with its exact
    distribution-free (sign-test order statistic) interval (median_ci), Wilcoxon
    signed-rank test, matched-pairs rank-biserial effect size, and beside them the mean
    change with its paired t interval; plus the share that improved in the registry's
    better direction, with a Wilson interval.
    Returns (paired table, summary dict).
    """
    w = windows[windows["instrument"].astype("string") == instrument]
    key = ["course_id", "rater"]
    base = w[w["is_baseline"].to_numpy(dtype=bool)]
    fin = w[w["is_final"].to_numpy(dtype=bool)]
    b = pd.DataFrame({"course_id": base["course_id"].to_numpy(dtype=object),
                      "rater": base["rater"].to_numpy(dtype=object),
                      "patient_id": base["patient_id"].to_numpy(dtype=object),
                      "baseline_date": base["assessment_date"].to_numpy(),
                      "baseline": base["score"].to_numpy(dtype="float64", na_value=np.nan)})
    f = pd.DataFrame({"course_id": fin["course_id"].to_numpy(dtype=object),
                      "rater": fin["rater"].to_numpy(dtype=object),
                      "final_date": fin["assessment_date"].to_numpy(),
                      "days_from_last_session": fin["days_from_last_session"].to_numpy(
                          dtype="float64", na_value=np.nan),
                      "final": fin["score"].to_numpy(dtype="float64", na_value=np.nan)})
    paired = b.merge(f, on=key, how="inner")
    paired["change"] = paired["final"] - paired["baseline"]
    paired.insert(1, "instrument", instrument)
    paired = paired.sort_values("course_id", kind="stable").reset_index(drop=True)
    ins = schema.INSTRUMENTS.get(instrument)
    d = paired["change"].to_numpy(dtype="float64")
    med, mlo, mhi = median_ci(d, level)
    tt = paired_t(d, level)
    wx = wilcoxon_signed_rank(d)
    r, rlo, rhi = rank_biserial_paired(d, level)
    better = d > 0 if (ins is None or ins.higher_is_better) else d < 0
    k, n = int(better.sum()), int(d.size)
    ilo, ihi = wilson_ci(k, n, level)
    summary: dict[str, Any] = {
        "instrument": instrument, "title": ins.title if ins else instrument,
        "unit": ins.unit if ins else "", "level": level,
        "courses_with_baseline": int(base["course_id"].nunique()),
        "courses_with_final": int(fin["course_id"].nunique()), "n": n,
        "baseline_median": float(np.median(paired["baseline"])) if n else math.nan,
        "final_median": float(np.median(paired["final"])) if n else math.nan,
        "median_change": med, "median_ci_low": mlo, "median_ci_high": mhi,
        "median_ci_method": "exact distribution-free (sign-test order statistics)",
        "wilcoxon_statistic": wx["statistic"], "wilcoxon_p": wx["p"],
        "n_nonzero": wx["n_nonzero"],
        "rank_biserial": r, "rank_biserial_ci_low": rlo, "rank_biserial_ci_high": rhi,
        "mean_change": tt["mean"], "sd_change": tt["sd"], "mean_ci_low": tt["ci_low"],
        "mean_ci_high": tt["ci_high"], "t": tt["t"], "df": tt["df"], "t_p": tt["p"],
        "improved_k": k, "improved": k / n if n else math.nan,
        "improved_ci_low": ilo, "improved_ci_high": ihi,
    }
    return paired, summary


# =============================================================================================
# 4. process and outcome


def compliance_groups(audit: Any, criteria: Sequence[str] | None = None,
                      missing: str = "not met") -> pd.DataFrame:
    """One row per course: did it meet the key protocol criteria? ("followed protocol"/"did not").

    The key criteria are the protocol's (its `[analysis] key_criteria`) unless given.
    A course followed the protocol when every verdict of every key criterion for it is
    compliant: for session-level criteria all of its sessions, for course-level ones the
    course itself. Verdicts "not applicable" (a rule that does not apply to a session,
    a course-level rule on a course still running) do not count. "Not documented" (a value the rule needs is missing) is, as in the
    audit, not compliant: with ``missing="not met"`` (default) such a course "did not"
    follow the protocol; with ``missing="exclude"`` a course whose only gaps are
    undocumented values gets group NA and leaves the comparison, a sensitivity check.
    Columns: course_id, patient_id, operator, clinic, completed, sessions, one status
    column per criterion (compliant / deviation / not documented / not applicable),
    deviations, not_documented, failed (criteria not met), group.
    """
    if missing not in ("not met", "exclude"):
        raise ValueError('missing must be "not met" or "exclude"')
    if criteria is None:
        criteria = audit.protocol.key_criteria
    known = {c.id: c for c in audit.protocol.criteria}
    unknown = [c for c in criteria if c not in known]
    if unknown:
        raise ValueError(f"criteria not in protocol {audit.protocol.id}: {', '.join(unknown)}")
    courses = audit.courses
    nc = len(courses)
    out = courses[["course_id", "patient_id", "operator", "clinic", "completed",
                   "sessions"]].copy()
    pos = pd.Index(courses["course_id"].astype("string")).get_indexer(
        audit.sessions["course_id"].astype("string"))
    v = audit.verdicts
    crit_cat = pd.Categorical(v["criterion"])  # categorical codes: no string compare per row
    crit = crit_cat.codes
    crit_index = {str(c): i for i, c in enumerate(crit_cat.categories)}
    unit = v["unit"].to_numpy()
    verdict_cat = pd.Categorical(v["verdict"])
    verdict = verdict_cat.codes
    verdict_index = {str(c): i for i, c in enumerate(verdict_cat.categories)}
    dev_total = np.zeros(nc, dtype=np.int64)
    miss_total = np.zeros(nc, dtype=np.int64)
    failed = np.full(nc, "", dtype=object)
    for cid in criteria:
        here = crit == crit_index.get(cid, -2)
        units = unit[here]
        c_of = units if known[cid].level == "course" else pos[units]
        vv = verdict[here]
        counts = {name: np.bincount(c_of[vv == verdict_index.get(name, -2)], minlength=nc)
                  for name in ("compliant", "deviation", "not documented")}
        status = np.select([counts["deviation"] > 0, counts["not documented"] > 0,
                            counts["compliant"] > 0],
                           ["deviation", "not documented", "compliant"], "not applicable")
        out[cid] = pd.Categorical(status, categories=["compliant", "deviation",
                                                      "not documented", "not applicable"])
        dev_total += counts["deviation"]
        miss_total += counts["not documented"]
        bad = status != "compliant"
        bad &= status != "not applicable"
        failed = np.where(bad, np.where(failed == "", cid, failed + ", " + cid), failed)
    out["deviations"] = dev_total
    out["not_documented"] = miss_total
    out["failed"] = failed
    group = np.where((dev_total == 0) & (miss_total == 0), FOLLOWED, NOT_FOLLOWED).astype(object)
    if not criteria:  # nothing to follow: no course is in either group
        group[:] = None
    if missing == "exclude":
        group[(dev_total == 0) & (miss_total > 0)] = None
    out["group"] = pd.Categorical(group, categories=list(GROUPS))
    return out.reset_index(drop=True)


def course_outcomes(windows: pd.DataFrame, paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """One outcome value per course × measure: final scores, and the change from baseline.

    Long table with course_id, instrument, rater, measure ("final score" or "change from
    baseline"), value; the input of compare_groups and spearman_energy.
    """
    f = windows[windows["is_final"].to_numpy(dtype=bool)]
    parts = [pd.DataFrame({
        "course_id": f["course_id"].to_numpy(dtype=object),
        "instrument": f["instrument"].astype("string").to_numpy(dtype=object),
        "rater": f["rater"].astype("string").to_numpy(dtype=object),
        "measure": FINAL_SCORE,
        "value": f["score"].to_numpy(dtype="float64", na_value=np.nan)})]
    if paired is not None and len(paired):
        parts.append(pd.DataFrame({
            "course_id": paired["course_id"].to_numpy(dtype=object),
            "instrument": paired["instrument"].to_numpy(dtype=object),
            "rater": paired["rater"].to_numpy(dtype=object), "measure": CHANGE,
            "value": paired["change"].to_numpy(dtype="float64")}))
    out = pd.concat(parts, ignore_index=True)
    order = _instrument_order(out["instrument"]) * 2 + (out["measure"] == CHANGE)
    return out.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def _is_continuous(instrument: str) -> bool:
    """A measurement without an upper scale end (hair density) is continuous; scores are ordinal."""
    ins = schema.INSTRUMENTS.get(instrument)
    return ins is not None and ins.high is None


def compare_groups(values: pd.DataFrame, groups: pd.DataFrame, level: float = 0.95,
                   covariates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Outcomes of courses that followed the protocol against those that did not.

    Per measure × instrument × rater: n, median [IQR] and mean (SD) per group; for
    ordinal scores the Mann–Whitney U test with the rank-biserial correlation r and its
    interval (r > 0: the "followed protocol" group scores higher); for continuous
    measures (hair density, its change) Welch's t with the mean difference (followed −
    did not) and its interval. ``favours`` reads the interval with the registry's
    direction of better. Shares improved per group (registry thresholds) with the
    Newcombe interval of their difference where the instrument defines "improved".

    With `covariates` (course_covariates), each row also carries the difference
    adjusted for baseline hair density, age band, Fitzpatrick type and clinician, with
    cluster-robust (patient) standard errors (adjusted_difference): ``mean_diff`` (the
    unadjusted difference of means, same units), ``adjusted_diff`` (followed − did
    not, in the measure's units), ``adjusted_ci_low``/``_high``, ``adjusted_p``,
    ``adjusted_n`` (courses used), ``adjusted_clusters`` (patients),
    ``adjusted_favours``, ``covariates_used``, ``covariates_left_out`` (with why) and
    ``adjusted_note``.
    """
    d = values.merge(groups[["course_id", "group"]], on="course_id", how="inner")
    d = d[d["group"].notna()]
    rows = []
    for (measure, inst, rater), sub in d.groupby(["measure", "instrument", "rater"],
                                                 sort=False, observed=True):
        a = sub.loc[sub["group"] == FOLLOWED, "value"].to_numpy(dtype="float64")
        b = sub.loc[sub["group"] == NOT_FOLLOWED, "value"].to_numpy(dtype="float64")
        ins = schema.INSTRUMENTS.get(inst)
        row: dict[str, Any] = {"measure": measure, "instrument": inst,
                               "title": ins.title if ins else inst, "rater": rater}
        for tag, x in (("followed", a), ("not", b)):
            row[f"n_{tag}"] = x.size
            row[f"median_{tag}"] = float(np.median(x)) if x.size else math.nan
            row[f"q1_{tag}"] = float(np.quantile(x, 0.25)) if x.size else math.nan
            row[f"q3_{tag}"] = float(np.quantile(x, 0.75)) if x.size else math.nan
            row[f"mean_{tag}"] = float(x.mean()) if x.size else math.nan
            row[f"sd_{tag}"] = float(x.std(ddof=1)) if x.size > 1 else math.nan
        continuous = measure == CHANGE or _is_continuous(inst)
        if continuous:
            w = welch_t(a, b, level)
            row.update(test="Welch t", statistic=w["t"], df=w["df"], p=w["p"],
                       effect_name="mean difference", effect=w["diff"],
                       effect_ci_low=w["ci_low"], effect_ci_high=w["ci_high"],
                       smd=smd_continuous(row["mean_followed"], row["sd_followed"],
                                          row["mean_not"], row["sd_not"])
                       if a.size > 1 and b.size > 1 else math.nan)
        else:
            mw = mann_whitney(a, b, level)
            row.update(test="Mann–Whitney U", statistic=mw["u"], df=math.nan, p=mw["p"],
                       effect_name="rank-biserial r", effect=mw["r"],
                       effect_ci_low=mw["r_low"], effect_ci_high=mw["r_high"], smd=math.nan)
        sign = 1 if ins is None or ins.higher_is_better else -1  # change: final − baseline
        lo, hi = row["effect_ci_low"] * sign, row["effect_ci_high"] * sign
        lo, hi = min(lo, hi), max(lo, hi)
        row["favours"] = (FOLLOWED if lo > 0 else NOT_FOLLOWED if hi < 0
                          else "no clear difference") if np.isfinite(lo) else "no data"
        if measure == FINAL_SCORE and ins is not None and ins.improved_at is not None:
            ia = _improved(pd.Series([inst] * a.size, dtype="string"), a)
            ib = _improved(pd.Series([inst] * b.size, dtype="string"), b)
            ka, kb = int(np.nansum(ia)), int(np.nansum(ib))
            dlo, dhi = newcombe_diff_ci(ka, a.size, kb, b.size, level)
            row.update(improved_followed=ka / a.size if a.size else math.nan,
                       improved_not=kb / b.size if b.size else math.nan,
                       improved_diff_ci_low=dlo, improved_diff_ci_high=dhi)
        if covariates is not None:
            row["mean_diff"] = row["mean_followed"] - row["mean_not"]
            row.update(_adjusted_row(sub, covariates, sign > 0, level))
        rows.append(row)
    return pd.DataFrame(rows, columns=_COMPARE_COLUMNS
                        + (_ADJUSTED_COLUMNS if covariates is not None else []))


_COMPARE_COLUMNS = [
    "measure", "instrument", "title", "rater",
    *[f"{s}_{g}" for g in ("followed", "not") for s in ("n", "median", "q1", "q3", "mean",
                                                        "sd")],
    "test", "statistic", "df", "p", "effect_name", "effect", "effect_ci_low",
    "effect_ci_high", "smd", "favours", "improved_followed", "improved_not",
    "improved_diff_ci_low", "improved_diff_ci_high"]


# ---------------------------------------------------------------------------------------------
# adjusted comparison: OLS with cluster-robust (patient) standard errors

#: Covariates of the adjusted comparison, in order: column of course_covariates → label.
COVARIATES = {"baseline_hair_density": "baseline hair density", "age_band": "age band",
              "fitzpatrick_type": "Fitzpatrick type", "operator": "clinician"}
#: Lower edges (years) of the age bands after the first: under 30, 30–39, …, 60 and over.
AGE_BANDS = (30, 40, 50, 60)

_ADJUSTED_COLUMNS = ["mean_diff", "adjusted_diff", "adjusted_ci_low", "adjusted_ci_high",
                     "adjusted_p", "adjusted_n", "adjusted_clusters", "adjusted_favours",
                     "covariates_used", "covariates_left_out", "adjusted_note"]


def age_band(age: Any, edges: Sequence[float] = AGE_BANDS) -> pd.Series:
    """Age in years → band label ("under 30", "30–39", …, "60 and over"); missing stays NA."""
    a = np.asarray(pd.to_numeric(pd.Series(age), errors="coerce"), dtype="float64")
    ed = [float(e) for e in edges]
    labels = ([f"under {ed[0]:g}"] + [f"{lo:g}–{hi - 1:g}" for lo, hi in itertools.pairwise(ed)]
              + [f"{ed[-1]:g} and over"])
    code = np.searchsorted(ed, np.nan_to_num(a), side="right")
    code = np.where(np.isnan(a), -1, code)
    return pd.Series(pd.Categorical.from_codes(code, labels), name="age_band")


def course_covariates(audit: Any, windows: pd.DataFrame | None = None,
                      instrument: str = "hair_density") -> pd.DataFrame:
    """One row per course with the covariates of the adjusted comparison.

    Columns: course_id, patient_id (the cluster), baseline_hair_density (the course's
    baseline value of `instrument`, ``is_baseline``; missing without `windows`),
    age_band (age at the first session from date_of_birth, see age_band),
    fitzpatrick_type (first session) and operator (the course's clinician). A column
    the data do not carry is all missing: adjusted_difference then leaves it out.
    """
    c = audit.courses
    ids = c["course_id"].astype("string")
    first = _first_session(audit).reindex(ids)
    out = pd.DataFrame({"course_id": ids.to_numpy(dtype=object),
                        "patient_id": c["patient_id"].astype("string").to_numpy(dtype=object)})
    base = np.full(len(c), np.nan)
    if windows is not None:
        hd = windows[windows["is_baseline"].to_numpy(dtype=bool)
                     & (windows["instrument"].astype("string") == instrument).to_numpy(
                         dtype=bool, na_value=False)]
        hd = hd.drop_duplicates("course_id").set_index("course_id")["score"]
        base = hd.reindex(ids).to_numpy(dtype="float64", na_value=np.nan)
    out["baseline_hair_density"] = base
    if "date_of_birth" in first:
        age = (first["session_date"] - first["date_of_birth"]).dt.days / 365.25
        out["age_band"] = age_band(age.to_numpy(dtype="float64", na_value=np.nan)).to_numpy()
    else:
        out["age_band"] = None
    fitz = (first["fitzpatrick_type"] if "fitzpatrick_type" in first
            else pd.Series(None, index=first.index))
    out["fitzpatrick_type"] = fitz.astype("string").to_numpy(dtype=object, na_value=None)
    out["operator"] = c["operator"].astype("string").to_numpy(dtype=object, na_value=None)
    return out


def adjusted_difference(data: pd.DataFrame, covariates: Sequence[str] = tuple(COVARIATES),
                        outcome: str = "value", group: str = "followed",
                        cluster: str = "patient_id", level: float = 0.95) -> dict[str, Any]:
    """Difference in `outcome` (group 1 − group 0) adjusted for `covariates` by OLS, with
    cluster-robust standard errors by `cluster` (courses of one patient are not independent).

    Model: outcome ~ group + covariates (a numeric covariate enters linearly, any other
    as indicator columns with its first level, in sorted order, as reference); fitted
    with statsmodels ``OLS(...).fit(cov_type="cluster", cov_kwds={"groups": patient},
    use_t=True)``: the CR1 sandwich with the small-sample factor
    G/(G − 1)·(N − 1)/(N − K) and t with G − 1 degrees of freedom (G patients), as
    Stata's ``regress, vce(cluster)``. Rows with a missing outcome, group or cluster
    are left out. A covariate that is not in `data`, is missing on every row, or takes
    one value only is left out (and named, with why, in ``covariates_left_out``); the
    others are used on the courses where all of them are recorded (complete cases;
    ``n`` says how many). When the covariates determine the group (the group
    coefficient is not estimable) the result is nan with a note.

    Returns diff, ci_low, ci_high, p, n, clusters, used (column names), left_out
    (column → reason), note.
    """
    out: dict[str, Any] = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                           "p": math.nan, "n": 0, "clusters": 0, "used": [],
                           "left_out": {}, "note": ""}
    y_all = pd.to_numeric(data[outcome], errors="coerce").astype("float64")
    g_all = pd.to_numeric(pd.Series(data[group]).astype("Float64"), errors="coerce")
    keep = (y_all.notna() & g_all.notna() & data[cluster].notna()).to_numpy(dtype=bool)
    for name in covariates:
        if name not in data:
            out["left_out"][name] = "not in the data"
    used = []
    for c in covariates:
        if c not in data:
            continue
        x = data.loc[keep, c]
        if x.notna().sum() == 0:
            out["left_out"][c] = "not recorded"
        elif x.nunique(dropna=True) <= 1:
            out["left_out"][c] = "one value only"
        else:
            used.append(c)
    while True:  # on the complete cases a covariate may take one value only: leave it out
        rows = keep.copy()
        for c in used:
            rows &= data[c].notna().to_numpy(dtype=bool)
        constant = [c for c in used if data.loc[rows, c].nunique(dropna=True) <= 1]
        if not constant:
            break
        for c in constant:
            out["left_out"][c] = "one value only"
            used.remove(c)
    out["used"] = used
    n = int(rows.sum())
    out["n"] = n
    d = data.loc[rows]
    groups_codes = pd.factorize(d[cluster].astype("string"))[0]
    out["clusters"] = int(np.unique(groups_codes).size)
    g = g_all[rows].to_numpy(dtype="float64")
    if n == 0 or np.unique(g).size < 2:
        out["note"] = "both groups are needed"
        return out
    parts = [pd.Series(1.0, index=d.index, name="const"),
             pd.Series(g, index=d.index, name=group)]
    for c in used:
        x = d[c]
        if pd.api.types.is_numeric_dtype(x) and not isinstance(x.dtype, pd.CategoricalDtype):
            parts.append(x.astype("float64").rename(c))
        else:
            s = x.astype("string")
            levels = sorted(s.unique())
            for lv in levels[1:]:
                parts.append((s == lv).astype("float64").rename(f"{c}[{lv}]"))
    X = pd.concat(parts, axis=1).to_numpy(dtype="float64")
    y = y_all[rows].to_numpy(dtype="float64")
    rank = np.linalg.matrix_rank(X)
    if rank != np.linalg.matrix_rank(np.delete(X, 1, axis=1)) + 1:
        out["note"] = "the covariates determine the group"
        return out
    if out["clusters"] < 2 or n <= rank:
        out["note"] = "too few courses or patients for the model"
        return out
    import statsmodels.api as sm  # imported here: only the adjusted comparison needs it

    fit = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": groups_codes},
                           use_t=True)
    lo, hi = fit.conf_int(alpha=1 - level)[1]
    out.update(diff=float(fit.params[1]), ci_low=float(lo), ci_high=float(hi),
               p=float(fit.pvalues[1]))
    return out


def _adjusted_row(sub: pd.DataFrame, covariates: pd.DataFrame, higher_is_better: bool,
                  level: float) -> dict[str, Any]:
    d = sub.merge(covariates, on="course_id", how="left")
    d["followed"] = (d["group"] == FOLLOWED).astype("float64")
    names = [c for c in COVARIATES if c in covariates]
    res = adjusted_difference(d, names, level=level)
    for c in COVARIATES:  # a covariate the table does not have at all
        if c not in covariates:
            res["left_out"][c] = "not in the data"
    sign = 1 if higher_is_better else -1
    lo, hi = sorted((res["ci_low"] * sign, res["ci_high"] * sign))
    fav = ((FOLLOWED if lo > 0 else NOT_FOLLOWED if hi < 0 else "no clear difference")
           if np.isfinite(lo) else "no data")
    order = [c for c in COVARIATES if c in res["left_out"]]
    order += [c for c in res["left_out"] if c not in order]
    left = "; ".join(f"{COVARIATES.get(c, c)} ({res['left_out'][c]})" for c in order)
    return {"adjusted_diff": res["diff"], "adjusted_ci_low": res["ci_low"],
            "adjusted_ci_high": res["ci_high"], "adjusted_p": res["p"],
            "adjusted_n": res["n"], "adjusted_clusters": res["clusters"],
            "adjusted_favours": fav,
            "covariates_used": ", ".join(COVARIATES.get(c, c) for c in res["used"])
            or "none",
            "covariates_left_out": left, "adjusted_note": res["note"]}


def _fmt(x: Any, digits: int = 2, signed: bool = False) -> str:
    """A number as printed, "–" where there is none (never "nan" or "None")."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    if not np.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _fmt_ci(est: Any, lo: Any, hi: Any, digits: int = 2, signed: bool = False) -> str:
    e = _fmt(est, digits, signed)
    if e == "–" or _fmt(lo) == "–":
        return e
    return f"{e} ({_fmt(lo, digits, signed)} to {_fmt(hi, digits, signed)})"


def format_comparison(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The comparison table as printed, unadjusted and adjusted side by side, as text.

    One row per measure: instrument, measure, rater, n and median per group; the unadjusted test
    with its effect size and 95 % CI and p; the unadjusted difference of means; the
    adjusted difference (followed − did not, in the measure's units) with its 95 % CI
    and p, the courses and patients it used, the covariates used and those left out
    (with why). Missing values print as "–" (or the reason there is no estimate).
    """
    out = pd.DataFrame({
        "instrument": table["title"].astype(str),
        "measure": table["measure"].astype(str),
        "rater": table["rater"].astype(str),
        "n (followed / did not)": [f"{int(a)} / {int(b)}" for a, b in
                                   zip(table["n_followed"], table["n_not"], strict=True)],
        "median (followed / did not)": [
            f"{_fmt(a, 1)} / {_fmt(b, 1)}" for a, b in
            zip(table["median_followed"], table["median_not"], strict=True)],
        "unadjusted test": table["test"].astype(str),
        "unadjusted effect (95 % CI)": [
            f"{name} {_fmt_ci(e, lo, hi, digits, signed=not name.startswith('rank'))}"
            for name, e, lo, hi in zip(table["effect_name"], table["effect"],
                                       table["effect_ci_low"], table["effect_ci_high"],
                                       strict=True)],
        "unadjusted p": format_p(table["p"]),
    })
    out["unadjusted p"] = out["unadjusted p"].replace("", "–")
    if "adjusted_diff" not in table:
        return out
    out["unadjusted mean difference"] = [_fmt(x, digits, True) for x in table["mean_diff"]]
    out["adjusted difference (95 % CI)"] = [
        _fmt_ci(e, lo, hi, digits, True) if np.isfinite(e) else f"– ({note or 'no data'})"
        for e, lo, hi, note in zip(table["adjusted_diff"].astype(float),
                                   table["adjusted_ci_low"], table["adjusted_ci_high"],
                                   table["adjusted_note"], strict=True)]
    p = format_p(table["adjusted_p"])
    out["adjusted p"] = np.where(p == "", "–", p)
    out["adjusted: courses / patients"] = [
        f"{int(n)} / {int(c)}" for n, c in zip(table["adjusted_n"],
                                               table["adjusted_clusters"], strict=True)]
    out["covariates used"] = table["covariates_used"].astype(str)
    out["covariates left out"] = table["covariates_left_out"].astype(str)
    out["adjusted favours"] = table["adjusted_favours"].astype(str)
    return out

def _first_session(audit: Any) -> pd.DataFrame:
    s = audit.sessions
    first = s[s["session_number"].to_numpy(dtype="int64", na_value=1) == 1]
    return first.drop_duplicates("course_id").set_index("course_id")


def table_one(audit: Any, groups: pd.DataFrame, windows: pd.DataFrame | None = None,
              nonnormal: Sequence[str] = (), level: float = 0.95) -> pd.DataFrame:
    """Baseline characteristics by group, printed the way clinical papers print Table 1.

    Why: if the groups differed before treatment (age, skin type, baseline density),
    the outcome difference may not be the protocol's doing. Courses: those with a
    group, and (when `windows` is given) a final assessment, i.e. the courses compared.
    Characteristics come from the course's first session (age at the first session
    from date_of_birth, sex, Fitzpatrick type, area, clinic) and its baseline hair
    density. Continuous: mean (SD) with Welch's t p, or median [IQR] with Mann–Whitney
    p for names in `nonnormal` ("age", "baseline_hair_density"); categorical: n (%) per level with the chi-square p
    (Yates-corrected for 2×2; Fisher's exact when a 2×2 expected count is below 5).
    SMD: Austin (2009) for continuous, Yang & Dalton (2012) for categorical (absolute).
    Columns: characteristic, level, one per group, p, SMD, imbalanced (SMD above
    SMD_IMBALANCED, 0.1, the usual reading of imbalance: Austin 2009), missing (n per
    group).
    """
    g = groups[groups["group"].notna()][["course_id", "group"]]
    if windows is not None:
        with_final = windows.loc[windows["is_final"].to_numpy(dtype=bool), "course_id"]
        g = g[g["course_id"].isin(set(with_final.dropna()))]
    first = _first_session(audit).reindex(g["course_id"].astype("string"))
    data = pd.DataFrame(index=range(len(g)))
    labels: dict[str, str] = {}
    kinds: dict[str, str] = {}
    if "date_of_birth" in first and first["date_of_birth"].notna().any():
        age = (first["session_date"] - first["date_of_birth"]).dt.days / 365.25
        data["age"] = age.to_numpy(dtype="float64", na_value=np.nan)
        labels["age"], kinds["age"] = "Age at first session, years", "continuous"
    for col, label in (("sex", "Sex"), ("fitzpatrick_type", "Fitzpatrick skin type"),
                       ("area", "Treated area"), ("clinic", "Clinic")):
        if col in first and first[col].notna().any():
            data[col] = first[col].astype("string").to_numpy(dtype=object)
            labels[col], kinds[col] = label, "categorical"
    if windows is not None:
        hd = windows[windows["is_baseline"].to_numpy(dtype=bool)
                     & (windows["instrument"].astype("string") == "hair_density")]
        hd = hd.drop_duplicates("course_id").set_index("course_id")["score"]
        if len(hd):
            data["baseline_hair_density"] = hd.reindex(g["course_id"]).to_numpy(
                dtype="float64", na_value=np.nan)
            labels["baseline_hair_density"] = "Baseline hair density, hairs/cm²"
            kinds["baseline_hair_density"] = "continuous"
    grp = g["group"].astype(str).to_numpy()
    in_a, in_b = grp == FOLLOWED, grp == NOT_FOLLOWED
    rows: list[dict[str, Any]] = [{"characteristic": "Courses, n", "level": "",
                                   FOLLOWED: f"{in_a.sum()}", NOT_FOLLOWED: f"{in_b.sum()}",
                                   "p": math.nan, "SMD": math.nan, "missing": ""}]
    for col, label in labels.items():
        x = data[col]
        miss = f"{int(x[in_a].isna().sum())} / {int(x[in_b].isna().sum())}"
        if kinds[col] == "continuous":
            a = x[in_a].to_numpy(dtype="float64")
            b = x[in_b].to_numpy(dtype="float64")
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if col in nonnormal:
                cell = [_median_iqr(a), _median_iqr(b)]
                p = mann_whitney(a, b)["p"]
                lvl = "median [IQR]"
            else:
                cell = [_mean_sd(a), _mean_sd(b)]
                p = welch_t(a, b)["p"]
                lvl = "mean (SD)"
            smd = (abs(smd_continuous(a.mean(), a.std(ddof=1), b.mean(), b.std(ddof=1)))
                   if a.size > 1 and b.size > 1 else math.nan)
            rows.append({"characteristic": label, "level": lvl, FOLLOWED: cell[0],
                         NOT_FOLLOWED: cell[1], "p": p, "SMD": smd, "missing": miss})
            continue
        levels = sorted(x.dropna().unique(), key=str)
        ca = x[in_a].value_counts().reindex(levels, fill_value=0).to_numpy(dtype="float64")
        cb = x[in_b].value_counts().reindex(levels, fill_value=0).to_numpy(dtype="float64")
        pa = ca / ca.sum() if ca.sum() else ca
        pb = cb / cb.sum() if cb.sum() else cb
        rows.append({"characteristic": label, "level": "n (%)", FOLLOWED: "",
                     NOT_FOLLOWED: "", "p": _categorical_p(ca, cb),
                     "SMD": smd_categorical(pa, pb) if ca.sum() and cb.sum() else math.nan,
                     "missing": miss})
        for lv, na_, nb_, qa, qb in zip(levels, ca, cb, pa, pb, strict=True):
            rows.append({"characteristic": "", "level": str(lv),
                         FOLLOWED: f"{int(na_)} ({100 * qa:.1f} %)",
                         NOT_FOLLOWED: f"{int(nb_)} ({100 * qb:.1f} %)",
                         "p": math.nan, "SMD": math.nan, "missing": ""})
    out = pd.DataFrame(rows, columns=["characteristic", "level", FOLLOWED, NOT_FOLLOWED,
                                      "p", "SMD", "missing"])
    smd = out["SMD"].to_numpy(dtype="float64")
    out.insert(6, "imbalanced", np.nan_to_num(smd, nan=0.0) > SMD_IMBALANCED)
    return out


def format_p(p: Any) -> np.ndarray:
    """p-values as printed: 3 decimals, "<0.001" below that, "" where there is none."""
    v = np.asarray(pd.to_numeric(pd.Series(p), errors="coerce"), dtype="float64")
    return np.where(np.isnan(v), "", np.where(v < 0.001, "<0.001",
                                              np.char.mod("%.3f", np.nan_to_num(v))))


def format_table_one(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as printed: p to 3 decimals ("<0.001" below), SMD to 2, blanks for none,
    and "imbalanced" where the SMD exceeds SMD_IMBALANCED (0.1)."""
    out = table.copy()
    smd = out["SMD"].to_numpy(dtype="float64")
    out["p"] = format_p(out["p"])
    out["SMD"] = np.where(np.isnan(smd), "", np.char.mod("%.2f", np.nan_to_num(smd)))
    flag = (np.nan_to_num(smd, nan=0.0) > SMD_IMBALANCED)
    out["imbalanced"] = np.where(flag, "imbalanced", "")
    return out


def imbalance_sentence(table: pd.DataFrame) -> str:
    """One sentence naming the Table 1 characteristics whose SMD exceeds 0.1, or "" if none."""
    smd = table["SMD"].to_numpy(dtype="float64")
    hit = np.nan_to_num(smd, nan=0.0) > SMD_IMBALANCED
    if not hit.any():
        return ""
    names = [f"{_lower_first(c.split(',')[0])} (SMD {v:.2f})"
             for c, v in zip(table["characteristic"][hit], smd[hit], strict=True)]
    return (f"The groups differed before treatment (standardised mean difference above "
            f"{SMD_IMBALANCED:g}) in {_join(names)}, so read the unadjusted comparison "
            "with that in mind; the adjusted one accounts for the covariates it names.")


def _lower_first(text: str) -> str:
    """"Treated area" → "treated area"; a name ("Fitzpatrick skin type") stays as it is."""
    word = text.split(" ")[0]
    return text if word in ("Fitzpatrick",) else text[:1].lower() + text[1:]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _mean_sd(x: np.ndarray) -> str:
    if x.size == 0:
        return "–"
    sd = f"{x.std(ddof=1):.1f}" if x.size > 1 else "–"
    return f"{x.mean():.1f} ({sd})"


def _median_iqr(x: np.ndarray) -> str:
    if x.size == 0:
        return "–"
    q = np.quantile(x, [0.5, 0.25, 0.75])
    return f"{q[0]:.1f} [{q[1]:.1f}, {q[2]:.1f}]"


def _categorical_p(ca: np.ndarray, cb: np.ndarray) -> float:
    table = np.vstack([ca, cb])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return math.nan
    expected = _st.contingency.expected_freq(table)
    if table.shape == (2, 2) and (expected < 5).any():
        return float(_st.fisher_exact(table).pvalue)
    return float(_st.chi2_contingency(table, correction=True).pvalue)


def course_energy(audit: Any, energy: str = "energy_start_mj") -> pd.Series:
    """Mean energy (mJ) over each course's sessions, indexed by course_id (missing ignored)."""
    s = audit.sessions
    e = s[energy].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(e, index=s["course_id"].astype("string").to_numpy()).groupby(
        level=0).mean()


def spearman_energy(values: pd.DataFrame, audit: Any, energy: str = "energy_start_mj",
                    level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman correlation of each course's mean energy with each outcome measure.

    Why: the sheet sets the starting energy (20–30 mJ); if energy matters, outcomes
    should move with it. Returns (one row per measure × instrument × rater with n, rho,
    its Fisher-z interval and p; the per-course data with an ``energy`` column).
    """
    data = values.copy()
    data["energy"] = course_energy(audit, energy).reindex(
        data["course_id"].astype("string")).to_numpy()
    rows = []
    for (measure, inst, rater), sub in data.groupby(["measure", "instrument", "rater"],
                                                    sort=False):
        ins = schema.INSTRUMENTS.get(inst)
        rows.append({"measure": measure, "instrument": inst, "title": ins.title if ins
                     else inst, "rater": rater, "energy": energy,
                     **spearman_ci(sub["energy"], sub["value"], level)})
    cols = ["measure", "instrument", "title", "rater", "energy", "n", "rho", "ci_low",
            "ci_high", "p"]
    return pd.DataFrame(rows, columns=cols), data


# =============================================================================================
# 5. recurrence


def recurrence_data(audit: Any, windows: pd.DataFrame,
                    groups: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per course with follow-up: days from its last session to recurrence or censoring.

    Why: the sheet says "Expect recurrence? yes"; this measures how soon. Only
    assessments after the course's last session and before the patient's next course
    (``previous_course_id``; a follow-up just before a new course counts for the one
    that ended) where recurrence is recorded (true or false) count: a missing
    recurrence value is missing, not "no recurrence". Event: the first assessment
    noting recurrence (time = its day after the last session: recurrence is known to
    have happened by then). Censored: at the last assessment recording no recurrence.
    Courses without such an assessment are left out. Columns: course_id,
    duration_days, event, operator, clinic, and group when `groups` is given.
    """
    w = windows[windows["previous_course_id"].notna().to_numpy()
                & windows["recurrence"].notna().to_numpy()]
    d = pd.DataFrame({"course_id": w["previous_course_id"].to_numpy(dtype=object),
                      "days": w["days_after_previous_course"].to_numpy(dtype="float64",
                                                                        na_value=np.nan),
                      "rec": w["recurrence"].astype("boolean").to_numpy(dtype=bool)})
    ev = d[d["rec"]].groupby("course_id")["days"].min()
    last = d.groupby("course_id")["days"].max()
    out = pd.DataFrame({"course_id": last.index.astype(object)})
    first_event = ev.reindex(out["course_id"]).to_numpy(dtype="float64")
    out["event"] = ~np.isnan(first_event)
    out["duration_days"] = np.where(out["event"], first_event,
                                    last.to_numpy(dtype="float64"))
    c = audit.courses.set_index(audit.courses["course_id"].astype("string"))
    out["operator"] = c["operator"].reindex(out["course_id"]).astype("string").to_numpy()
    out["clinic"] = c["clinic"].reindex(out["course_id"]).astype("string").to_numpy()
    if groups is not None:
        gg = groups.set_index(groups["course_id"].astype("string"))["group"]
        out["group"] = gg.reindex(out["course_id"]).astype(object).to_numpy()
    return out[["course_id", "duration_days", "event", "operator", "clinic"]
               + (["group"] if groups is not None else [])]


def _median_ci_from_km(km: pd.DataFrame) -> tuple[float | None, float | None]:
    """Median's interval from the pointwise band: first times the band limits reach 0.5
    (Brookmeyer R, Crowley J, Biometrics 1982;38:29-41, as R survfit reports it)."""
    t = km["time"].to_numpy(dtype="float64")
    lo = np.flatnonzero(km["ci_low"].to_numpy(dtype="float64") <= 0.5)
    hi = np.flatnonzero(km["ci_high"].to_numpy(dtype="float64") <= 0.5)
    return (float(t[lo[0]]) if lo.size else None, float(t[hi[0]]) if hi.size else None)


def _surv_at(km: pd.DataFrame, day: float) -> tuple[float, float, float]:
    t = km["time"].to_numpy(dtype="float64")
    i = np.searchsorted(t, day, side="right") - 1
    if km.empty or i < 0:
        return (1.0, 1.0, 1.0) if not km.empty else (math.nan, math.nan, math.nan)
    if t.max() < day:
        return (math.nan, math.nan, math.nan)  # nobody followed that long
    r = km.iloc[i]
    return (float(r["survival"]), float(r["ci_low"]), float(r["ci_high"]))


def _course_key(audit: Any, by: str | None, groups: pd.DataFrame | None) -> pd.Series:
    """Each course's label for a recurrence split (index: course_id), as recurrence_data
    labels the courses with follow-up."""
    c = audit.courses
    ids = c["course_id"].astype("string").to_numpy(dtype=object)
    if by is None:
        return pd.Series("all courses", index=ids, dtype=object)
    if by == "group":
        if groups is None:
            raise ValueError("cannot split recurrence by 'group': give groups=")
        gg = groups.set_index(groups["course_id"].astype("string"))["group"]
        v = gg.reindex(ids).astype("string")
    elif by in c:
        v = c[by].astype("string")
    else:
        raise ValueError(f"cannot split recurrence by {by!r}")
    return pd.Series(v.fillna("(not recorded)").to_numpy(dtype=object), index=ids)


def _split(data: pd.DataFrame, by: str | None) -> pd.Series:
    if by is None:
        return pd.Series("all courses", index=data.index, dtype=object)
    if by not in data:
        raise ValueError(f"cannot split recurrence by {by!r}: give groups= for 'group'")
    return data[by].astype("string").fillna("(not recorded)").astype(object)


def _group_order(names: Any) -> list[str]:
    return sorted(set(names), key=lambda v: (v != FOLLOWED, v != NOT_FOLLOWED, str(v)))


def recurrence(audit: Any, windows: pd.DataFrame, by: str | None = None,
               groups: pd.DataFrame | None = None, level: float = 0.95,
               at_days: float = 365) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kaplan–Meier time to recurrence after the end of a course, overall or by group.

    `by`: None (all courses), "operator", "clinic" or "group" (needs `groups` from
    compliance_groups). Returns (km: stats.kaplan_meier table per group with a
    ``group`` column, log-log interval; summary: one row per group with courses (those
    with a recurrence assessment, the curve's), events, censored, median_days (None
    when the curve never reaches 0.5) and its interval, the recurrence-free share at
    `at_days` with interval, and how complete the follow-up is: courses_all (every
    audited course of the group), assessed_share (courses / courses_all) with its
    Wilson interval; and the log-rank p across groups).
    """
    data = recurrence_data(audit, windows, groups)
    key = _split(data, by)
    every = _course_key(audit, by, groups) if "course_id" in audit.courses else None
    names = _group_order(list(key) + (list(every) if every is not None else []))
    if by is None:
        names = ["all courses"]
    kms, rows = [], []
    for name in names:
        sub = data[(key == name).to_numpy(dtype=bool)]
        km = kaplan_meier(sub["duration_days"], sub["event"], level)
        km.insert(0, "group", name)
        if len(sub):
            kms.append(km)
        m_lo, m_hi = _median_ci_from_km(km)
        s, s_lo, s_hi = _surv_at(km, at_days)
        n_all = int((every == name).sum()) if every is not None else len(sub)
        a_lo, a_hi = wilson_ci(len(sub), n_all, level) if n_all else (math.nan, math.nan)
        rows.append({"group": name, "courses": len(sub), "events": int(sub["event"].sum()),
                     "censored": int((~sub["event"]).sum()), "median_days": km_median(km),
                     "median_ci_low": m_lo, "median_ci_high": m_hi,
                     "followup_median_days": float(sub["duration_days"].median())
                     if len(sub) else math.nan,
                     "at_days": at_days, "recurrence_free": s,
                     "recurrence_free_ci_low": s_lo, "recurrence_free_ci_high": s_hi,
                     "courses_all": n_all,
                     "assessed_share": len(sub) / n_all if n_all else math.nan,
                     "assessed_ci_low": a_lo, "assessed_ci_high": a_hi})
    summary = pd.DataFrame(rows, columns=_RECURRENCE_COLUMNS)
    lr = (logrank_test(data["duration_days"], data["event"], key) if by is not None
          else {"p": math.nan})
    summary["logrank_p"] = lr["p"]
    km_all = (pd.concat(kms, ignore_index=True) if kms else
              pd.DataFrame(columns=["group", "time", "at_risk", "events", "survival",
                                    "ci_low", "ci_high"]))
    return km_all, summary


_RECURRENCE_COLUMNS = [
    "group", "courses", "events", "censored", "median_days", "median_ci_low",
    "median_ci_high", "followup_median_days", "at_days", "recurrence_free",
    "recurrence_free_ci_low", "recurrence_free_ci_high", "courses_all", "assessed_share",
    "assessed_ci_low", "assessed_ci_high"]


def recurrence_followup_text(summary: pd.DataFrame) -> str:
    """One line: how many courses have any recurrence assessment (first row of a
    recurrence summary), with the Wilson interval of the share."""
    r = summary.iloc[0]
    n_all = int(r["courses_all"])
    if n_all == 0:
        return "No courses to follow up."
    return (f"{int(r['courses'])} of {n_all} courses ({_fmt(100 * r['assessed_share'], 1)} %, "
            f"95 % CI {_fmt(100 * r['assessed_ci_low'], 1)}–"
            f"{_fmt(100 * r['assessed_ci_high'], 1)} %) have at least one assessment after "
            "the course recording recurrence (yes or no); only these enter the curves.")


#: Event codes of the competing-risks recurrence data (stats.cumulative_incidence).
CENSORED, RECURRENCE, NEW_COURSE = 0, 1, 2
#: Why a new course competes with recurrence, in one sentence (notebook and chart).
COMPETING_WHY = ("A new course in the same area usually follows loss of the regrowth, so "
                 "censoring a course when the next one starts is informative (it hides "
                 "courses about to recur); the cumulative incidence counts the new course "
                 "as a competing event instead of pretending it was followed further.")


def next_course_days(audit: Any) -> pd.Series:
    """Days from each course's last session to the first session of the patient's next
    course for the same indication and area (nan when there is none); index course_id."""
    c = audit.courses
    first = pd.to_datetime(c["first_date"])
    last = pd.to_datetime(c["last_date"])
    key = [c["patient_id"].astype("string").fillna(""),
           c["indication"].astype("string").fillna(""), c["area"].astype("string").fillna("")]
    order = pd.DataFrame({"k0": key[0], "k1": key[1], "k2": key[2], "first": first})
    order = order.sort_values(["k0", "k1", "k2", "first"], kind="stable")
    nxt = order.groupby(["k0", "k1", "k2"], sort=False)["first"].shift(-1)
    days = (nxt.reindex(c.index) - last).dt.days.astype("float64")
    return pd.Series(days.to_numpy(), index=c["course_id"].astype("string").to_numpy(
        dtype=object))


def recurrence_competing_data(audit: Any, windows: pd.DataFrame,
                              groups: pd.DataFrame | None = None) -> pd.DataFrame:
    """The courses of recurrence_data, with the start of a new course as a competing event.

    Why: re-treatment follows regrowth loss, so a course whose patient starts the next
    course (same indication and area) before any recurrence was noted is not "still
    recurrence-free"; its follow-up ends there for a reason tied to the outcome.
    ``cause``: 1 (RECURRENCE) at the first assessment noting it; else 2 (NEW_COURSE) at
    the first session of the next course; else 0 (CENSORED) at the last assessment
    recording no recurrence (as in recurrence_data). A recurrence noted after the next
    course began counts as the new course (it came first). ``time_days`` is the time of
    that cause; the other columns are recurrence_data's.
    """
    data = recurrence_data(audit, windows, groups)
    nxt = next_course_days(audit).reindex(data["course_id"]).to_numpy(dtype="float64")
    t = data["duration_days"].to_numpy(dtype="float64")
    ev = data["event"].to_numpy(dtype=bool)
    has_next = ~np.isnan(nxt)
    rec_first = ev & (~has_next | (t <= np.nan_to_num(nxt, nan=np.inf)))
    new_first = ~rec_first & has_next
    cause = np.where(rec_first, RECURRENCE, np.where(new_first, NEW_COURSE, CENSORED))
    out = data.copy()
    out.insert(3, "cause", cause.astype("int64"))
    out.insert(4, "time_days", np.where(new_first, nxt, t))
    out.insert(5, "next_course_days", nxt)
    return out


def _value_at(times: np.ndarray, values: np.ndarray, day: float, start: float) -> float:
    """A right-continuous step function at `day`; nan past the last observed time."""
    if times.size == 0 or times.max() < day:
        return math.nan
    i = np.searchsorted(times, day, side="right") - 1
    return start if i < 0 else float(values[i])


def recurrence_cif(audit: Any, windows: pd.DataFrame, by: str | None = None,
                   groups: pd.DataFrame | None = None, level: float = 0.95,
                   at_days: float = 365) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cumulative incidence of recurrence with a new course as competing event, per group.

    stats.cumulative_incidence (Aalen–Johansen, log(−log) delta-method interval) on
    recurrence_competing_data. Returns (cif: its table per group with a ``group``
    column and ``new_course_cif``, the cumulative incidence of the competing event at
    the same times; summary: one row per group with courses, recurrences, new_courses,
    censored, at_days, cif (recurrence by `at_days`) with ci_low/ci_high,
    new_course_cif at `at_days`, and km_cumulative = 1 − Kaplan–Meier at `at_days`
    of recurrence() on the same courses (new courses censored at the last assessment),
    which over-states the risk when re-treatment is common). Values at `at_days` are
    nan when no course was followed that long.
    """
    data = recurrence_competing_data(audit, windows, groups)
    key = _split(data, by)
    tables, rows = [], []
    for name in _group_order(key) if len(data) else []:
        sub = data[(key == name).to_numpy(dtype=bool)]
        t = sub["time_days"].to_numpy(dtype="float64")
        c = sub["cause"].to_numpy(dtype="int64")
        cif = cumulative_incidence(t, c, level)
        swap = np.select([c == RECURRENCE, c == NEW_COURSE], [NEW_COURSE, RECURRENCE], 0)
        cif["new_course_cif"] = cumulative_incidence(t, swap, level)["cif"].to_numpy()
        cif.insert(0, "group", name)
        tables.append(cif)
        times = cif["time"].to_numpy(dtype="float64")
        km = kaplan_meier(sub["duration_days"], sub["event"], level)
        surv, _, _ = _surv_at(km, at_days)
        rows.append({
            "group": name, "courses": len(sub),
            "recurrences": int((c == RECURRENCE).sum()),
            "new_courses": int((c == NEW_COURSE).sum()),
            "censored": int((c == CENSORED).sum()), "at_days": at_days,
            "cif": _value_at(times, cif["cif"].to_numpy(), at_days, 0.0),
            "ci_low": _value_at(times, cif["ci_low"].to_numpy(), at_days, 0.0),
            "ci_high": _value_at(times, cif["ci_high"].to_numpy(), at_days, 0.0),
            "new_course_cif": _value_at(times, cif["new_course_cif"].to_numpy(), at_days,
                                        0.0),
            "km_cumulative": 1 - surv})
    cols = ["group", "time", "at_risk", "events", "competing", "cif", "ci_low", "ci_high",
            "new_course_cif"]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=cols)
    summary = pd.DataFrame(rows, columns=[
        "group", "courses", "recurrences", "new_courses", "censored", "at_days", "cif",
        "ci_low", "ci_high", "new_course_cif", "km_cumulative"])
    return table[cols], summary


def format_recurrence_cif(summary: pd.DataFrame) -> pd.DataFrame:
    """The recurrence_cif summary as printed: percentages with intervals, "–" for none."""
    def pct(x: Any) -> str:
        v = _fmt(100 * float(x), 1) if _fmt(x) != "–" else "–"
        return v if v == "–" else f"{v} %"

    days = float(summary["at_days"].iloc[0]) if len(summary) else 365.0
    when = "1 year" if days == 365 else f"{days:g} days"
    return pd.DataFrame({
        "courses": summary["group"].astype(str),
        "n": summary["courses"].astype(int).astype(str),
        "recurrences": summary["recurrences"].astype(int).astype(str),
        "new course first": summary["new_courses"].astype(int).astype(str),
        "censored": summary["censored"].astype(int).astype(str),
        f"recurrence by {when}, CIF (95 % CI)": [
            pct(c) if pct(lo) == "–" else f"{pct(c)} ({pct(lo)} to {pct(hi)})"
            for c, lo, hi in zip(summary["cif"], summary["ci_low"], summary["ci_high"],
                                 strict=True)],
        f"new course by {when}, CIF": [pct(x) for x in summary["new_course_cif"]],
        f"1 − Kaplan–Meier by {when}": [pct(x) for x in summary["km_cumulative"]],
    })


def at_risk_at(km: pd.DataFrame, times: Sequence[float]) -> np.ndarray:
    """Numbers at risk (duration >= t) at the given times, from a kaplan_meier table."""
    t = km["time"].to_numpy(dtype="float64")
    n = km["at_risk"].to_numpy(dtype="int64")
    i = np.searchsorted(t, np.asarray(times, dtype="float64"), side="left")
    out = np.zeros(i.size, dtype="int64")
    ok = i < t.size
    out[ok] = n[i[ok]]
    return out


# =============================================================================================
# 6. adverse events


def energy_bands(audit: Any, energy: str = "energy_start_mj",
                 edges: Sequence[float] | None = None) -> pd.Series:
    """Each session's energy band; the default edges are the protocol's range on that
    field (its first range criterion on it), else the quartiles of the documented values.

    Labels read "below 20 mJ", "20–30 mJ (protocol)", "above 30 mJ", "not documented".
    """
    s = audit.sessions
    e = s[energy].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    lo, hi = audit.protocol.range_of(energy) or (None, None)
    if edges is None and (lo is None or hi is None):
        x = e[~np.isnan(e)]  # no protocol band: the middle half of the sessions
        edges = sorted(set(np.quantile(x, [0.25, 0.75]).round(1))) if len(x) else [0.0]
    if edges is None:
        labels = [f"below {lo:g} mJ", f"{lo:g}–{hi:g} mJ (protocol)", f"above {hi:g} mJ"]
        code = np.where(e < lo, 0, np.where(e <= hi, 1, 2))
    else:  # bands [a, b), [b, c), …, the last one closed: [y, z]
        ed = sorted(float(x) for x in edges)
        labels = ([f"below {ed[0]:g} mJ"]
                  + [f"{a:g}–{b:g} mJ" for a, b in itertools.pairwise(ed)]
                  + [f"above {ed[-1]:g} mJ"])
        code = np.searchsorted(ed, np.nan_to_num(e), side="right")
        code = np.where(e == ed[-1], len(ed) - 1, code)
    cats = [*labels, "not documented"]
    code = np.where(np.isnan(e), len(labels), code)
    return pd.Series(pd.Categorical.from_codes(code.astype(int), cats), index=s.index,
                     name="energy_band")


def adverse_events(audit: Any, by: str | None = None, level: float = 0.95,
                   energy: str = "energy_start_mj") -> pd.DataFrame:
    """Adverse-event rates per session and per course with Wilson intervals.

    A session had an adverse event when its `adverse_event` field holds anything but
    "none" (or an equivalent, NO_EVENT); an empty field is "not documented" and leaves
    the denominator (counted in ``not_documented``). A course had one when any of its
    documented sessions did. `by`: None (all), "type" (each event type against all
    documented sessions), "energy_band" (protocol start-energy bands, see
    energy_bands), or a session column such as "operator" or "clinic". Per group, a
    course counts when it has a session in the group, with an event when one of those
    sessions had one.
    """
    s = audit.sessions
    raw = s["adverse_event"].astype("string").str.strip()
    documented = (raw.notna() & (raw != "")).to_numpy(dtype=bool)
    low = raw.str.lower()
    event = documented & ~low.isin(list(NO_EVENT)).to_numpy(dtype=bool, na_value=False)
    course = s["course_id"].astype("string").to_numpy(dtype=object)
    if by == "type":
        types = sorted(raw[event].unique())
        rows = []
        base_courses = pd.Series(documented).groupby(course).any()
        n_courses = int(base_courses.sum())
        n_sess = int(documented.sum())
        for t in types:
            ev = event & (raw == t).to_numpy(dtype=bool, na_value=False)
            ce = pd.Series(ev).groupby(course).any()
            rows.append(_ae_row(t, n_sess, int(ev.sum()), n_courses, int(ce.sum()),
                                int((~documented).sum()), level))
        return pd.DataFrame(rows, columns=_AE_COLUMNS)
    if by is None:
        key = pd.Series("all sessions", index=s.index)
    elif by == "energy_band":
        key = energy_bands(audit, energy)
    else:
        key = s[by].astype("string").fillna("(not recorded)")
    frame = pd.DataFrame({"g": key.array, "c": course, "doc": documented, "ev": event})
    sess = frame.groupby("g", observed=True, sort=True).agg(
        sessions=("doc", "sum"), events=("ev", "sum"), rows=("doc", "size"))
    cf = frame[frame["doc"]].groupby(["g", "c"], observed=True)["ev"].any().reset_index()
    cc = cf.groupby("g", observed=True)["ev"].agg(["size", "sum"])
    rows = []
    for g, r in sess.iterrows():
        nc = int(cc.loc[g, "size"]) if g in cc.index else 0
        kc = int(cc.loc[g, "sum"]) if g in cc.index else 0
        rows.append(_ae_row(str(g), int(r["sessions"]), int(r["events"]), nc, kc,
                            int(r["rows"] - r["sessions"]), level))
    return pd.DataFrame(rows, columns=_AE_COLUMNS)


_AE_COLUMNS = ["group", "sessions", "events", "rate", "ci_low", "ci_high", "courses",
               "courses_with_event", "course_rate", "course_ci_low", "course_ci_high",
               "not_documented"]


def _ae_row(group: str, n: int, k: int, nc: int, kc: int, missing: int,
            level: float) -> dict[str, Any]:
    lo, hi = wilson_ci(k, n, level)
    clo, chi = wilson_ci(kc, nc, level)
    return {"group": group, "sessions": n, "events": k, "rate": k / n if n else math.nan,
            "ci_low": lo, "ci_high": hi, "courses": nc, "courses_with_event": kc,
            "course_rate": kc / nc if nc else math.nan, "course_ci_low": clo,
            "course_ci_high": chi, "not_documented": missing}


# =============================================================================================
# 8. the JSON object


def _plain(v: Any) -> Any:
    """A Python scalar for JSON: numpy → int/float, NaN/NA → None."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else float(v)
    return v


def outcomes_json(audit: Any, outcomes: pd.DataFrame | None) -> dict[str, Any]:
    """The `outcomes` object of `outcomes audit --json` (plain Python types, None for NaN).

    ``final``: one entry per instrument and rater at the final (3–6 month) assessment
    with instrument, rater, n, median, q1, q3, improved (a fraction; None where the
    instrument defines no threshold), improved_ci_low, improved_ci_high.
    ``recurrence``: courses, events, median_days (None when not reached). Same
    functions as the notebook, so the numbers match it.
    """
    windows = attach_windows(audit, outcomes)
    final = final_summary(windows)
    keys = ["instrument", "rater", "n", "median", "q1", "q3", "improved", "improved_ci_low",
            "improved_ci_high"]
    entries = [{k: _plain(r[k]) for k in keys} for r in final[keys].to_dict("records")]
    _, rec = recurrence(audit, windows)
    r0 = rec.iloc[0]
    return {"final": entries,
            "recurrence": {"courses": int(r0["courses"]), "events": int(r0["events"]),
                           "median_days": _plain(r0["median_days"])}}
