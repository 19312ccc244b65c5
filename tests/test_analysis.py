"""Tests for outcomes.analysis against independent values.

Every expected number comes from a cited publication, from scipy on the same data, or
from a small hand-built case whose answer is written out here. Never from our own output.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from outcomes import analysis as R
from outcomes import schema
from outcomes.audit import run_audit
from outcomes.dataset import load_data_dir
from outcomes.protocol import load_protocol

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
NOTEBOOK = ROOT / "notebooks" / "03_patient_outcomes.ipynb"


# =============================================================================================
# hand-built data


def _sessions(rows: list[dict]) -> pd.DataFrame:
    """Canonical sessions from a few dicts; every field not given is missing."""
    df = schema.empty_frame("sessions")
    new = pd.DataFrame(rows)
    out = pd.DataFrame({c: pd.Series(new[c] if c in new else [None] * len(new)).astype(
        df[c].dtype) if c != "session_date" else pd.to_datetime(new[c]).astype(df[c].dtype)
        for c in df.columns})
    out["session_id"] = [f"s{i}" for i in range(len(out))]
    return out


def _outcomes(rows: list[tuple]) -> pd.DataFrame:
    """Canonical outcomes from (patient, date, instrument, score, recurrence) tuples."""
    d = pd.DataFrame(rows, columns=["patient_id", "assessment_date", "instrument", "score",
                                    "recurrence"])
    return pd.DataFrame({
        "patient_id": d["patient_id"].astype("string"),
        "assessment_date": pd.to_datetime(d["assessment_date"]).astype("datetime64[s]"),
        "instrument": d["instrument"].astype("string"),
        "score": d["score"].astype("Float64"),
        "rater": pd.Series([None] * len(d), dtype="string"),
        "recurrence": d["recurrence"].astype("boolean"),
        "notes": pd.Series([None] * len(d), dtype="string"),
    })


GOOD = {"indication": "hair_regrowth", "area": "scalp_vertex", "operator": "Dr. A",
        "clinic": "North", "energy_start_mj": 25.0, "energy_final_mj": 27.5, "edema": True,
        "erythema": True, "adverse_event": "none"}

# Patient A: course A1 (2025-01-10, 02-10, 03-10: 31 and 28 days, 3 sessions, all by the
# protocol) and, 306 days later, course A2 (2026-01-10, 02-10; still running, its second
# session's endpoint not documented). Patient B: one short course (2025-05-01, 06-01: two
# sessions, the second started at 35 mJ with blistering). Patient C has no sessions.
HAND_SESSIONS = [
    {**GOOD, "patient_id": "A", "session_date": "2025-01-10"},
    {**GOOD, "patient_id": "A", "session_date": "2025-02-10"},
    {**GOOD, "patient_id": "A", "session_date": "2025-03-10"},
    {**GOOD, "patient_id": "A", "session_date": "2026-01-10"},
    {**GOOD, "patient_id": "A", "session_date": "2026-02-10", "edema": None,
     "adverse_event": None},
    {**GOOD, "patient_id": "B", "session_date": "2025-05-01", "operator": "Dr. B"},
    {**GOOD, "patient_id": "B", "session_date": "2025-06-01", "operator": "Dr. B",
     "energy_start_mj": 35.0, "energy_final_mj": 37.5, "adverse_event": "blistering"},
]
A1 = "A:hair_regrowth:scalp_vertex:1"
A2 = "A:hair_regrowth:scalp_vertex:2"
B1 = "B:hair_regrowth:scalp_vertex:1"

# (patient, date, instrument, score, recurrence) and the expected attachment, worked out by
# hand: A1 ends 2025-03-10, A2 starts 2026-01-10, B runs 2025-05-01 to 2025-06-01.
HAND_OUTCOMES = [
    # expected: course, window, days from the course's last session, is_baseline, is_final
    (("A", "2024-12-01", "hair_density", 100, None), (A1, "baseline", -99, False, False)),
    (("A", "2025-01-01", "hair_density", 110, None), (A1, "baseline", -68, True, False)),
    (("A", "2025-02-01", "satisfaction", 3, None), (A1, "during", -37, False, False)),
    (("A", "2025-05-09", "satisfaction", 3, None), (A1, "early", 60, False, False)),
    (("A", "2025-06-08", "hair_density", 130, None), (A1, "final", 90, False, True)),
    (("A", "2025-06-08", "satisfaction", 5, None), (A1, "final", 90, False, True)),
    (("A", "2025-07-08", "hair_density", 135, None), (A1, "final", 120, False, False)),
    (("A", "2025-09-09", "gais", 2, None), (A1, "final", 183, False, True)),
    (("A", "2025-09-10", "gpa", 1, False), (A1, "followup", 184, False, False)),
    (("A", "2025-10-01", "satisfaction", 4, False), (A1, "followup", 205, False, False)),
    # 285 days after A1 and 21 days before A2: A2's baseline, and A1's recurrence
    (("A", "2025-12-20", "satisfaction", 2, True), (A2, "baseline", -52, True, False)),
    (("B", "2024-10-01", "hair_density", 90, None), (None, "unmatched", None, False, False)),
    (("B", "2025-05-01", "hair_density", 95, None), (B1, "baseline", -31, True, False)),
    (("B", "2025-06-01", "satisfaction", 3, None), (B1, "during", 0, False, False)),
    (("B", "2025-09-01", "satisfaction", 4, False), (B1, "final", 92, False, True)),
    (("C", "2025-05-01", "satisfaction", 5, None), (None, "unmatched", None, False, False)),
]


@pytest.fixture(scope="module")
def hand():
    audit = run_audit(_sessions(HAND_SESSIONS), load_protocol())
    outcomes = _outcomes([o for o, _ in HAND_OUTCOMES])
    return audit, outcomes, R.attach_windows(audit, outcomes)


@pytest.fixture(scope="module")
def sample():
    ds = load_data_dir(SAMPLE, progress=False)
    audit = run_audit(ds.sessions.data, load_protocol(), ds.outcomes_data)
    return ds, audit, R.attach_windows(audit, ds.outcomes_data)


# =============================================================================================
# 1. windows


def test_hand_built_windows(hand):
    _, outcomes, w = hand
    assert len(w) == len(outcomes)  # listed, not dropped
    assert list(w.index) == list(outcomes.index)
    for i, (_, (course, window, days, is_base, is_final)) in enumerate(HAND_OUTCOMES):
        row = w.iloc[i]
        assert (None if pd.isna(row["course_id"]) else row["course_id"]) == course, i
        assert row["window"] == window, i
        got = row["days_from_last_session"]
        assert (None if pd.isna(got) else int(got)) == days, i
        assert bool(row["is_baseline"]) == is_base, i
        assert bool(row["is_final"]) == is_final, i


def test_unmatched_rows_say_why(hand):
    _, _, w = hand
    assert w.iloc[11]["unmatched_reason"] == "more than 60 days before the first session"
    assert w.iloc[15]["unmatched_reason"] == "no audited course for this patient"
    assert w["unmatched_reason"].notna().sum() == 2


def test_missing_rater_comes_from_the_registry(hand):
    _, _, w = hand
    by_inst = w.drop_duplicates("instrument").set_index("instrument")["rater"]
    assert by_inst["satisfaction"] == "patient"
    assert by_inst["hair_density"] == "clinician"


def test_baseline_of_next_course_still_follows_the_previous(hand):
    _, _, w = hand
    row = w.iloc[10]  # 2025-12-20: A2's baseline, 285 days after A1 ended
    assert row["previous_course_id"] == A1
    assert row["days_after_previous_course"] == 285
    assert row["days_from_first_session"] == -21


def test_window_bounds_come_from_the_protocol(hand):
    audit, outcomes, _ = hand
    narrow = SimpleNamespace(courses=audit.courses,
                             protocol=SimpleNamespace(final_result_days=(100, 150)))
    w = R.attach_windows(narrow, outcomes)
    # 90 days is now early, 120 final, 183 follow-up
    assert list(w["window"].iloc[4:8]) == ["early", "early", "final", "followup"]


def test_no_outcomes_gives_an_empty_table(hand):
    audit, _, _ = hand
    w = R.attach_windows(audit, None)
    assert w.empty and "window" in w and "is_final" in w
    assert R.final_summary(w).empty
    js = R.outcomes_json(audit, None)
    assert js == {"final": [], "recurrence": {"courses": 0, "events": 0, "median_days": None}}


# =============================================================================================
# 2. final summary


def test_final_summary_hand(hand):
    _, _, w = hand
    f = R.final_summary(w).set_index("instrument")
    # satisfaction finals: A1 5 (day 90), B1 4 (day 92); both "satisfied" (4 or 5)
    assert f.loc["satisfaction", "n"] == 2
    assert f.loc["satisfaction", "median"] == 4.5
    assert f.loc["satisfaction", "improved"] == 1.0
    lo, hi = stats.binomtest(2, 2).proportion_ci(method="wilson")
    assert f.loc["satisfaction", "improved_ci_low"] == pytest.approx(lo)
    assert f.loc["satisfaction", "improved_ci_high"] == pytest.approx(hi)
    # GAIS 2 is "improved or better" (1-3, lower is better)
    assert f.loc["gais", "improved"] == 1.0
    # hair density: the day-90 value (closest to the last session), no threshold
    assert f.loc["hair_density", "median"] == 130
    assert math.isnan(f.loc["hair_density", "improved"])


def test_final_summary_quartiles_and_wilson_on_the_sample(sample):
    _, _, w = sample
    f = R.final_summary(w)
    sat = w[w["is_final"] & (w["instrument"] == "satisfaction")]["score"].astype(float)
    row = f[f["instrument"] == "satisfaction"].iloc[0]
    assert row["n"] == len(sat)
    assert row["q1"] == np.percentile(sat, 25) and row["q3"] == np.percentile(sat, 75)
    k = int((sat >= 4).sum())
    lo, hi = stats.binomtest(k, len(sat)).proportion_ci(method="wilson")
    assert row["improved"] == pytest.approx(k / len(sat))
    assert (row["improved_ci_low"], row["improved_ci_high"]) == pytest.approx((lo, hi))


# =============================================================================================
# 3. change from baseline


def test_change_from_baseline_hand(hand):
    _, _, w = hand
    paired, s = R.change_from_baseline(w)
    # A1: baseline 110 (latest before the first session), final 130 (day 90) -> +20.
    # B1: baseline 95, no final hair density -> not paired.
    assert list(paired["course_id"]) == [A1]
    assert paired.loc[0, "baseline"] == 110 and paired.loc[0, "final"] == 130
    assert paired.loc[0, "change"] == 20
    assert s["n"] == 1 and s["median_change"] == 20


def test_median_ci_matches_scipy_order_statistic_interval():
    rng = np.random.default_rng(4)
    for n in (6, 7, 20, 51, 200):
        x = rng.normal(size=n)
        med, lo, hi = R.median_ci(x)
        ref = stats.quantile_test(x, q=np.median(x), p=0.5).confidence_interval(0.95)
        assert med == np.median(x)
        assert (lo, hi) == (ref.low, ref.high)
    assert all(math.isnan(v) for v in R.median_ci([1, 2, 3, 4, 5])[1:])  # n < 6 at 95 %


def test_paired_t_matches_student_sleep_data():
    # Student (1908) sleep data as in R's ?t.test: t.test(extra ~ group, data = sleep,
    # paired = TRUE): mean difference -1.58, t = -4.0621, df = 9, p-value = 0.002833,
    # 95 % CI -2.4598858 to -0.7001142.
    g1 = np.array([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0])
    g2 = np.array([1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4])
    t = R.paired_t(g1 - g2)
    assert t["mean"] == pytest.approx(-1.58)
    assert t["t"] == pytest.approx(-4.0621, abs=5e-5)
    assert t["df"] == 9
    assert t["p"] == pytest.approx(0.002833, abs=5e-7)
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((-2.4598858, -0.7001142), abs=5e-8)


def _wilcoxon_r_by_hand(d, correct=True, alternative="two.sided"):
    """R's wilcox.test(d, mu = 0, exact = FALSE) normal approximation, written out from
    stats:::wilcox.test.default: zeros dropped, V = sum of positive ranks, tie-corrected
    sigma, continuity correction sign(z) * 0.5 (two-sided) or +/- 0.5 (one-sided)."""
    d = np.asarray(d, float)
    d = d[d != 0]
    n = d.size
    r = stats.rankdata(np.abs(d))
    v = r[d > 0].sum()
    _, nties = np.unique(r, return_counts=True)
    z = v - n * (n + 1) / 4
    sigma = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - (nties**3 - nties).sum() / 48)
    corr = 0.0
    if correct:
        corr = {"two.sided": math.copysign(0.5, z) if z else 0.0, "greater": 0.5,
                "less": -0.5}[alternative]
    z = (z - corr) / sigma
    if alternative == "less":
        return v, stats.norm.cdf(z)
    if alternative == "greater":
        return v, stats.norm.sf(z)
    return v, 2 * min(stats.norm.cdf(z), stats.norm.sf(z))


# Hollander & Wolfe (1973) p. 29 depression scores, R's ?wilcox.test example
HW_X = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30])
HW_Y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29])


def test_wilcoxon_exact_matches_r_example():
    # wilcox.test(x, y, paired = TRUE, alternative = "greater"): V = 40, p-value = 0.01953,
    # so the two-sided exact p is 0.0390625 (n = 9 < 50, no ties, no zeros: exact in R).
    w = R.wilcoxon_signed_rank(HW_X - HW_Y)
    ref = stats.wilcoxon(HW_X - HW_Y, method="exact")
    assert (w["statistic"], w["p"]) == (ref.statistic, ref.pvalue)
    assert w["p"] == pytest.approx(0.0390625)
    # The hand-written normal approximation reproduces R's printed large-sample example,
    # wilcox.test(y - x, alternative = "less", exact = FALSE, correct = FALSE):
    # V = 5, p-value = 0.01908 -- a check of the reference, not of our code.
    v, p = _wilcoxon_r_by_hand(HW_Y - HW_X, correct=False, alternative="less")
    assert v == 5 and p == pytest.approx(0.01908, abs=5e-6)


def test_wilcoxon_uses_r_default_rule_and_continuity_correction():
    rng = np.random.default_rng(5)
    # ties and zeros, n = 300: normal approximation with continuity correction
    d = rng.integers(-3, 6, 300).astype(float)
    got = R.wilcoxon_signed_rank(d)
    ref = stats.wilcoxon(d, zero_method="wilcox", correction=True, method="asymptotic")
    assert (got["statistic"], got["p"]) == (ref.statistic, ref.pvalue)
    assert got["p"] == pytest.approx(_wilcoxon_r_by_hand(d)[1], abs=1e-6)
    assert got["n_nonzero"] == int((d != 0).sum())
    # small n with ties (scipy's "auto" would run a permutation test here; R does not)
    d = np.array([1.5, -0.5, 2.0, 2.0, 3.0, -1.0, 4.0, 0.5])
    got = R.wilcoxon_signed_rank(d)
    assert got["p"] == pytest.approx(_wilcoxon_r_by_hand(d)[1], abs=1e-6)
    assert got["p"] != pytest.approx(stats.wilcoxon(d).pvalue, abs=1e-6)
    # a zero and no ties, n < 50: R drops to the normal approximation too
    d = np.array([0.0, 1.1, -0.3, 2.4, 3.7, 0.9, 1.6, -2.2, 4.5, 2.9])
    got = R.wilcoxon_signed_rank(d)
    assert got["p"] == pytest.approx(_wilcoxon_r_by_hand(d)[1], abs=1e-6)
    assert got["n_nonzero"] == 9
    # n = 49 distinct, no zeros: exact; n = 50: normal approximation with correction
    d49 = rng.permutation(np.arange(1, 50)) * rng.choice([-1.0, 1.0], 49) + 0.25
    got = R.wilcoxon_signed_rank(d49)
    assert got["p"] == stats.wilcoxon(d49, method="exact").pvalue
    d50 = rng.permutation(np.arange(1, 51)) * rng.choice([-1.0, 1.0], 50) + 0.25
    got = R.wilcoxon_signed_rank(d50)
    assert got["p"] == pytest.approx(_wilcoxon_r_by_hand(d50)[1], abs=1e-6)
    assert got["p"] == stats.wilcoxon(d50, correction=True, method="asymptotic").pvalue
    assert math.isnan(R.wilcoxon_signed_rank([0.0, 0.0, np.nan])["p"])


def test_matched_pairs_rank_biserial_matches_effectsize():
    # effectsize::rank_biserial(Pair(first, second) ~ 1, data = depression):
    # r = 0.78, 95 % CI [0.30, 0.94] (effectsize documentation, same data as above)
    x = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30])
    y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29])
    r, lo, hi = R.rank_biserial_paired(x - y)
    assert round(r, 2) == 0.78 and round(lo, 2) == 0.30 and round(hi, 2) == 0.94


# =============================================================================================
# 4. process and outcome: tests and effect sizes


def test_mann_whitney_matches_scipy_and_rank_biserial_matches_effectsize():
    # effectsize vignette: A <- c(48, 48, 77, 86, 85, 85); B <- c(14, 34, 34, 77)
    # rank_biserial(A, B): r = 0.79, 95 % CI [0.30, 0.95]; wilcox.test W = 22 (21.5), p = 0.05
    a = [48, 48, 77, 86, 85, 85]
    b = [14, 34, 34, 77]
    m = R.mann_whitney(a, b)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert (m["u"], m["p"]) == (ref.statistic, ref.pvalue)
    assert round(m["r"], 2) == 0.79 and round(m["r_low"], 2) == 0.30
    assert round(m["r_high"], 2) == 0.95
    # r = 2U/(n1 n2) - 1, checked on larger tied data against scipy's U
    rng = np.random.default_rng(6)
    x, y = rng.integers(1, 6, 120), rng.integers(1, 6, 80)
    m = R.mann_whitney(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="two-sided")
    assert (m["u"], m["p"]) == (ref.statistic, ref.pvalue)
    assert m["r"] == pytest.approx(2 * ref.statistic / (120 * 80) - 1)


def test_welch_matches_nist_handbook():
    # NIST/SEMATECH e-Handbook of Statistical Methods, 1.3.5.3 (AUTO83B: US vs Japanese
    # cars, mpg): n 249 / 79, mean 20.14458 / 30.48101, SD 6.41470 / 6.10771; unequal
    # variances: T = -12.94627, df = 136.87499; p = 1.571e-25 (Boost.Math worked example
    # on the same summary statistics).
    w = R.welch_t_from_stats(20.14458, 6.41470, 249, 30.48101, 6.10771, 79)
    assert w["t"] == pytest.approx(-12.94627, abs=5e-6)
    assert w["df"] == pytest.approx(136.87499, abs=5e-5)
    assert w["p"] == pytest.approx(1.571e-25, rel=1e-3)
    ref = stats.ttest_ind_from_stats(20.14458, 6.41470, 249, 30.48101, 6.10771, 79,
                                     equal_var=False)
    assert (w["t"], w["p"]) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)


def test_welch_interval_matches_scipy_on_raw_data():
    rng = np.random.default_rng(7)
    x, y = rng.normal(10, 2, 40), rng.normal(9, 4, 25)
    w = R.welch_t(x, y)
    ref = stats.ttest_ind(x, y, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (w["t"], w["p"], w["df"]) == pytest.approx((ref.statistic, ref.pvalue, ref.df))
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_smd_continuous_matches_effectsize_unpooled_cohens_d():
    # Austin (2009) SMD = (m1 - m2)/sqrt((s1² + s2²)/2), which is effectsize's
    # cohens_d(pooled_sd = FALSE). mtcars by am (0 automatic n=19, 1 manual n=13):
    # mpg 17.14737 (3.833966) vs 24.39231 (6.166504): d = -1.411046;
    # wt 3.768895 (0.7774001) vs 2.411000 (0.6169816): d = 1.934 (effectsize tests).
    assert R.smd_continuous(17.14737, 3.833966, 24.39231, 6.166504) == pytest.approx(
        -1.411046, abs=1e-5)
    assert R.smd_continuous(3.768895, 0.7774001, 2.411000, 0.6169816) == pytest.approx(
        1.934, rel=1e-3)  # the tolerance of effectsize's own test


def test_smd_categorical_matches_published_tableone_output():
    # R tableone print(CreateTableOne(...), smd = TRUE) after 1:1 matching, n = 656 per
    # group (Stack Overflow question 72203772, "Standardised mean differences for
    # categorical variables"): age_group (19-49, 50-64, 65-74, 75-84, 85+, Under 19)
    # 28/63/110/195/259/1 vs 25/69/110/202/249/1: SMD 0.048; gender = Male 324 vs 322:
    # SMD 0.006. tableone implements Yang & Dalton (2012).
    a = np.array([28, 63, 110, 195, 259, 1]) / 656
    b = np.array([25, 69, 110, 202, 249, 1]) / 656
    assert round(R.smd_categorical(a, b), 3) == 0.048
    assert round(R.smd_categorical(b, a), 3) == 0.048  # symmetric, any level order
    assert round(R.smd_categorical(a[::-1], b[::-1]), 3) == 0.048
    assert round(abs(R.smd_binary(324 / 656, 322 / 656)), 3) == 0.006
    # two levels: the categorical formula is the binary one
    assert R.smd_categorical([0.3, 0.7], [0.5, 0.5]) == pytest.approx(
        abs(R.smd_binary(0.7, 0.5)))


def test_spearman_matches_scipy():
    rng = np.random.default_rng(8)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    s = R.spearman_ci(x, y)
    ref = stats.spearmanr(x, y)
    assert (s["rho"], s["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    z, se = math.atanh(ref.statistic), math.sqrt(1.06 / 57)
    assert s["ci_low"] == pytest.approx(math.tanh(z - 1.959963984540054 * se))
    assert s["ci_high"] == pytest.approx(math.tanh(z + 1.959963984540054 * se))


def test_compliance_groups_hand(hand):
    audit, _, _ = hand
    # the protocol's key criteria are the default; these four exercise every level
    key = ("start_energy", "interval", "course_length", "endpoint")
    assert R.compliance_groups(audit)["group"].notna().all()
    g = R.compliance_groups(audit, criteria=key).set_index("course_id")
    # A1: 25 mJ, intervals 31 and 28 days, endpoint each time, 3 sessions -> followed
    assert g.loc[A1, "group"] == R.FOLLOWED and g.loc[A1, "failed"] == ""
    # B1: second session at 35 mJ, 2 sessions in a completed course -> did not
    assert g.loc[B1, "group"] == R.NOT_FOLLOWED
    assert g.loc[B1, "failed"] == "start_energy, course_length"
    assert g.loc[B1, "start_energy"] == "deviation"
    # A2: still running (course length not applicable), one endpoint not documented
    assert g.loc[A2, "course_length"] == "not applicable"
    assert g.loc[A2, "endpoint"] == "not documented"
    assert g.loc[A2, "group"] == R.NOT_FOLLOWED
    ex = R.compliance_groups(audit, criteria=key, missing="exclude").set_index("course_id")
    assert pd.isna(ex.loc[A2, "group"]) and ex.loc[B1, "group"] == R.NOT_FOLLOWED
    with pytest.raises(ValueError, match="not in protocol"):
        R.compliance_groups(audit, criteria=("no_such_criterion",))


def test_no_criterion_of_the_default_protocol_is_named_in_the_code():
    """Comparisons follow `protocol.key_criteria` and energy bands `protocol.range_of`:
    analysis/ and charts/outcomes.py name no criterion id (a quoted id, or an id with
    an underscore anywhere), so another protocol file works unchanged."""
    import re

    ids = [c.id for c in load_protocol().criteria]
    assert "start_energy" in ids and "interval" in ids
    for path in (*sorted((ROOT / "src/outcomes/analysis").glob("*.py")),
                 ROOT / "src/outcomes/charts/outcomes.py"):
        text = path.read_text(encoding="utf-8")
        for cid in ids:
            assert not re.search(rf"[\"']{cid}[\"']", text), (path.name, cid)
            if "_" in cid:
                assert not re.search(rf"(?<![A-Za-z_]){cid}(?![A-Za-z_])", text), (path.name,
                                                                                  cid)


def test_compare_groups_uses_the_right_test(sample):
    _, audit, w = sample
    paired, _ = R.change_from_baseline(w)
    values = R.course_outcomes(w, paired)
    groups = R.compliance_groups(audit)
    cmp = R.compare_groups(values, groups)
    d = values.merge(groups[["course_id", "group"]], on="course_id")
    for row in cmp.itertuples():
        sub = d[(d["measure"] == row.measure) & (d["instrument"] == row.instrument)]
        a = sub.loc[sub["group"] == R.FOLLOWED, "value"].to_numpy()
        b = sub.loc[sub["group"] == R.NOT_FOLLOWED, "value"].to_numpy()
        if row.test == "Welch t":
            ref = stats.ttest_ind(a, b, equal_var=False)
            assert row.instrument == "hair_density"
        else:
            ref = stats.mannwhitneyu(a, b, alternative="two-sided")
        assert (row.statistic, row.p) == pytest.approx((ref.statistic, ref.pvalue))
        # the sample's built-in effect: followed-protocol courses do better everywhere
        assert row.favours == R.FOLLOWED


def test_table_one(sample):
    _, audit, w = sample
    groups = R.compliance_groups(audit)
    t = R.table_one(audit, groups, w)
    assert list(t.columns) == ["characteristic", "level", R.FOLLOWED, R.NOT_FOLLOWED, "p",
                               "SMD", "imbalanced", "missing"]
    with_final = set(w.loc[w["is_final"], "course_id"])
    g = groups[groups["course_id"].isin(with_final)]
    assert t.iloc[0][R.FOLLOWED] == str((g["group"] == R.FOLLOWED).sum())
    # baseline hair density: mean (SD) per group and the Austin SMD, recomputed here
    base = w[w["is_baseline"] & (w["instrument"] == "hair_density")].set_index("course_id")
    x = base["score"].reindex(g["course_id"]).astype(float).to_numpy()
    fa, fb = x[(g["group"] == R.FOLLOWED).to_numpy()], x[(g["group"] == R.NOT_FOLLOWED).to_numpy()]
    row = t[t["characteristic"] == "Baseline hair density, hairs/cm²"].iloc[0]
    assert row[R.FOLLOWED] == f"{fa.mean():.1f} ({fa.std(ddof=1):.1f})"
    smd = abs(fa.mean() - fb.mean()) / math.sqrt((fa.var(ddof=1) + fb.var(ddof=1)) / 2)
    assert row["SMD"] == pytest.approx(smd)
    assert row["p"] == pytest.approx(stats.ttest_ind(fa, fb, equal_var=False).pvalue)
    sex = t.index[t["characteristic"] == "Sex"][0]
    assert list(t.loc[sex + 1: sex + 2, "level"]) == ["F", "M"]
    printed = R.format_table_one(t)
    assert printed.loc[0, "p"] == "" and printed.loc[sex, "SMD"] == f"{t.loc[sex, 'SMD']:.2f}"


# =============================================================================================
# 5. recurrence


# Freireich EJ et al. (1963) Blood 21:699-716, 6-MP arm (weeks of remission; + censored)
MP6_EVENTS = [6, 6, 6, 7, 10, 13, 16, 22, 23]
MP6_CENSORED = [6, 9, 10, 11, 17, 19, 20, 25, 32, 32, 34, 35]
PLACEBO = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]


def _recurrence_case(arms: dict[str, tuple[list[int], list[int]]]):
    """Windows and an audit stand-in where each course has one follow-up assessment."""
    rows, courses = [], []
    for arm, (events, censored) in arms.items():
        for k, (t, rec) in enumerate([(t, True) for t in events]
                                     + [(t, False) for t in censored]):
            cid = f"{arm}{k}"
            courses.append({"course_id": cid, "operator": arm, "clinic": "x"})
            rows.append({"previous_course_id": cid, "days_after_previous_course": t,
                         "recurrence": rec})
    w = pd.DataFrame(rows).astype({"previous_course_id": "string",
                                   "days_after_previous_course": "Int64",
                                   "recurrence": "boolean"})
    return SimpleNamespace(courses=pd.DataFrame(courses)), w


def test_kaplan_meier_recurrence_matches_freireich_published_estimates():
    # Kaplan-Meier estimates for the 6-MP arm as published (e.g. Kleinbaum & Klein,
    # Survival Analysis: A Self-Learning Text, 3rd ed., ch. 2): S(6) = 0.857,
    # S(7) = 0.807, S(10) = 0.753, S(13) = 0.690, S(16) = 0.627, S(22) = 0.538,
    # S(23) = 0.448; at risk 21, 17, 15, 12, 11, 7, 6; median 23 weeks.
    audit, w = _recurrence_case({"6-MP": (MP6_EVENTS, MP6_CENSORED)})
    km, summary = R.recurrence(audit, w)
    ev = km[km["events"] > 0].set_index("time")
    expected = {6: (0.857, 21), 7: (0.807, 17), 10: (0.753, 15), 13: (0.690, 12),
                16: (0.627, 11), 22: (0.538, 7), 23: (0.448, 6)}
    for t, (s, n) in expected.items():
        assert ev.loc[t, "survival"] == pytest.approx(s, abs=5e-4)
        assert ev.loc[t, "at_risk"] == n
    row = summary.iloc[0]
    assert (row["courses"], row["events"], row["median_days"]) == (21, 9, 23.0)
    assert list(R.at_risk_at(km, [0, 10, 20, 36])) == [21, 15, 8, 0]


def test_logrank_matches_published_chi_square_and_scipy():
    # Freireich 6-MP vs placebo: log-rank chi-square 16.79 (Kleinbaum & Klein, ch. 2)
    audit, w = _recurrence_case({"6-MP": (MP6_EVENTS, MP6_CENSORED), "placebo": (PLACEBO, [])})
    _, summary = R.recurrence(audit, w, by="operator")
    data = R.recurrence_data(audit, w)
    lr = R.logrank_test(data["duration_days"], data["event"], data["operator"])
    assert lr["chi2"] == pytest.approx(16.79, abs=5e-3) and lr["df"] == 1
    x = stats.CensoredData(uncensored=MP6_EVENTS, right=MP6_CENSORED)
    ref = stats.logrank(x, PLACEBO)
    assert lr["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert summary["logrank_p"].iloc[0] == pytest.approx(ref.pvalue, rel=1e-9)
    assert summary.set_index("group").loc["placebo", "median_days"] == 8


def test_recurrence_hand_built_censoring(hand):
    audit, _, w = hand
    d = R.recurrence_data(audit, w).set_index("course_id")
    # A1: no recurrence at 184 and 205 days, recurrence noted at 285 (A2's baseline
    # visit) -> event at 285. B1: no recurrence at 92 -> censored at 92. A2: none after.
    assert sorted(d.index) == [A1, B1]
    assert (d.loc[A1, "duration_days"], bool(d.loc[A1, "event"])) == (285, True)
    assert (d.loc[B1, "duration_days"], bool(d.loc[B1, "event"])) == (92, False)
    _, s = R.recurrence(audit, w)
    assert s.iloc[0]["median_days"] == 285  # S drops to 0 at 285 (1 at risk, 1 event)


def test_share_of_courses_with_a_recurrence_assessment(hand):
    audit, _, w = hand
    # A1 and B1 have a follow-up recording recurrence; A2 (still running) has none
    _, s = R.recurrence(audit, w)
    r = s.iloc[0]
    assert (r["courses"], r["courses_all"]) == (2, 3)
    lo, hi = stats.binomtest(2, 3).proportion_ci(method="wilson")
    assert (r["assessed_share"], r["assessed_ci_low"], r["assessed_ci_high"]) == \
        pytest.approx((2 / 3, lo, hi))
    text = R.recurrence_followup_text(s)
    assert text.startswith("2 of 3 courses (66.7 %, 95 % CI ")
    assert f"{100 * lo:.1f}–{100 * hi:.1f} %" in text
    # by clinician: Dr. A's two courses (one assessed), Dr. B's one (assessed)
    _, by = R.recurrence(audit, w, by="operator")
    by = by.set_index("group")
    assert (by.loc["Dr. A", "courses"], by.loc["Dr. A", "courses_all"]) == (1, 2)
    assert (by.loc["Dr. B", "courses"], by.loc["Dr. B", "courses_all"]) == (1, 1)


# =============================================================================================
# 6. adverse events


def test_adverse_events_hand(hand):
    audit, _, _ = hand
    # 7 sessions, one with "blistering", one with nothing recorded (not documented)
    a = R.adverse_events(audit).iloc[0]
    assert (a["sessions"], a["events"], a["not_documented"]) == (6, 1, 1)
    lo, hi = stats.binomtest(1, 6).proportion_ci(method="wilson")
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((lo, hi))
    assert (a["courses"], a["courses_with_event"]) == (3, 1)
    by_op = R.adverse_events(audit, by="operator").set_index("group")
    assert by_op.loc["Dr. B", "events"] == 1 and by_op.loc["Dr. A", "events"] == 0
    band = R.adverse_events(audit, by="energy_band").set_index("group")
    assert band.loc["above 30 mJ", "events"] == 1 and band.loc["above 30 mJ", "sessions"] == 1
    assert band.loc["20–30 mJ (protocol)", "sessions"] == 5
    kind = R.adverse_events(audit, by="type")
    assert list(kind["group"]) == ["blistering"] and kind.iloc[0]["sessions"] == 6


# =============================================================================================
# 8. JSON


def test_outcomes_json_shape_and_numbers(sample):
    ds, audit, w = sample
    js = R.outcomes_json(audit, ds.outcomes_data)
    assert set(js) == {"final", "recurrence"}
    json.dumps(js, allow_nan=False)  # plain types, no NaN
    keys = ["instrument", "rater", "n", "median", "q1", "q3", "improved", "improved_ci_low",
            "improved_ci_high"]
    final = R.final_summary(w)
    assert len(js["final"]) == len(final)
    for entry, row in zip(js["final"], final.itertuples(), strict=True):
        assert list(entry) == keys
        assert entry["n"] == row.n and entry["median"] == row.median
        if row.instrument == "hair_density":
            assert entry["improved"] is None
        else:
            assert entry["improved"] == pytest.approx(row.improved)
    _, rec = R.recurrence(audit, w)
    assert js["recurrence"] == {"courses": int(rec.iloc[0]["courses"]),
                                "events": int(rec.iloc[0]["events"]),
                                "median_days": rec.iloc[0]["median_days"]}
    assert set(js["recurrence"]) == {"courses", "events", "median_days"}


# =============================================================================================
# 7. the notebook


HEADINGS = ["# Patient outcomes", "## Final results",
            "## Hair density change from baseline",
            "## Did courses that followed the protocol do better?", "## Energy and outcome",
            "## Recurrence", "## Adverse events"]


def test_notebook_is_stored_without_outputs_and_has_parameters():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))  # the stored file, as JSON
    assert nb["nbformat"] == 4
    cells = [{**c, "source": "".join(c["source"])} for c in nb["cells"]]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] is None and c["outputs"] == [] for c in code)
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    assert params[0]["source"].splitlines()[:3] == ['DATA_DIR = "../data/sample"',
                                                    'PROTOCOL = "flexsys-hair-regrowth"',
                                                    'OUT_DIR = "../report"']
    assert params[0]["source"].splitlines()[3].startswith("SAVED = None")
    assert code.index(params[0]) == 0 and cells[0]["cell_type"] == "markdown"
    setup = code[1]["source"]
    assert setup.startswith("%matplotlib inline")
    assert "study = outcomes.open(DATA_DIR, protocol=PROTOCOL, saved=SAVED)" in setup
    text = "\n".join(c["source"] for c in cells if c["cell_type"] == "markdown")
    for h in HEADINGS:
        assert h in text
    wilcoxon = ("Wilcoxon signed-rank (R's default: exact for n < 50 without ties, else "
                "normal approximation with continuity correction)")
    assert "\n".join(c["source"] for c in cells).count(wilcoxon) == 1
    assert all(c.get("id") for c in cells)


def _run_notebook(data_dir: Path, out_dir: Path):
    from outcomes.report.notebooks import execute_notebook

    return execute_notebook(NOTEBOOK, {"DATA_DIR": str(data_dir.resolve()),
                                       "PROTOCOL": "flexsys-hair-regrowth",
                                       "OUT_DIR": str(out_dir.resolve())},
                            cwd=NOTEBOOK.parent)


def test_notebook_runs_on_sample_and_generated_data(tmp_path):
    from outcomes.sample import write_sample

    small = tmp_path / "small"
    write_sample(small, patients=40, seed=3)
    with ThreadPoolExecutor(2) as pool:  # two kernels at once keep the test short
        runs = list(pool.map(lambda d: _run_notebook(d, tmp_path / "out"), [SAMPLE, small]))
    for nb, n_images in zip(runs, (9, 9), strict=True):
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(images) == n_images
        tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
        assert len(tables) >= 10
        # no table prints a missing value as NaN / None / <NA>; the new ones are there
        for html in tables:
            for bad in ("NaN", ">nan<", "None", "&lt;NA&gt;", "><NA><"):
                assert bad not in html, bad
        for header in ("adjusted difference (95 % CI)", "covariates used", "imbalanced",
                       "recurrence by 1 year, CIF (95 % CI)", "with an assessment (%)"):
            assert sum(header in html for html in tables) == 1, header
        said = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
        assert "have at least one assessment after the course recording recurrence" in said
        assert "counts the new course as a competing event" in said
    # the sample's groups differ at baseline: the notebook says so in one sentence
    said = [o["data"]["text/markdown"] for c in runs[0].cells if c.cell_type == "code"
            for o in c.outputs if "text/markdown" in o.get("data", {})]
    imbalance = [s for s in said if s.startswith("The groups differed before treatment")]
    assert len(imbalance) == 1 and ". " not in imbalance[0]
    # the JSON for tools is not meeting material: the notebook does not print it
    printed = "".join(o.get("text", "") for c in runs[0].cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
    assert '"final"' not in printed


def test_notebook_without_outcomes_says_so(tmp_path, monkeypatch):
    """The notebook's cells, run in this process on sessions only (no kernel: fast)."""
    import IPython.display
    import nbformat

    from outcomes.sample import write_sample

    data = tmp_path / "data"
    write_sample(data, patients=40, seed=3)
    (data / "outcomes.csv").unlink()
    shown: list = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **_: shown.extend(objs))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        src = "\n".join(ln for ln in cell.source.splitlines() if not ln.startswith("%"))
        if "parameters" in cell.metadata.get("tags", []):
            src += f"\nDATA_DIR = {str(data)!r}\nOUT_DIR = ''"
        exec(compile(src, "notebook", "exec"), ns)  # noqa: S102 - our own notebook
    said = [o.data for o in shown if isinstance(o, IPython.display.Markdown)]
    # said once, in the first cell; each later outcome section shows only a dash
    assert sum("No outcomes file" in s for s in said) == 1
    assert "No outcomes file" in said[0]
    assert said.count("—") == 5
    figures = [o for o in shown if type(o).__name__ == "Figure"]
    assert len(figures) == 1  # adverse events still come from the sessions
    assert figures[0].get_suptitle().startswith("Adverse events")
