"""The adjusted comparison and the Table 1 imbalance flag, against statsmodels run here.

Each expected value comes from statsmodels' formula interface fitted in the test on a
data set built in the test (the formula written out), never from outcomes' own output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from outcomes import analysis as R
from outcomes.audit import run_audit
from outcomes.dataset import load_data_dir
from outcomes.protocol import load_protocol

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
FULL = ("value ~ followed + baseline_hair_density + C(age_band) + C(fitzpatrick_type)"
        " + C(operator)")


def _fixed_data() -> pd.DataFrame:
    """30 courses of 14 patients (one to three courses each), every covariate varying."""
    rng = np.random.default_rng(20260517)
    patients = [f"P{i:02d}" for i in range(14)]
    pid = patients + patients[:10] + patients[:6]  # 14 + 10 + 6 = 30 courses
    n = len(pid)
    d = pd.DataFrame({
        "course_id": [f"c{i}" for i in range(n)],
        "patient_id": pid,
        "followed": np.tile([1.0, 0.0, 0.0], n // 3),
        "baseline_hair_density": rng.normal(120, 20, n).round(0),
        "age_band": rng.choice(["under 30", "30–39", "40–49", "60 and over"], n),
        "fitzpatrick_type": rng.choice(["II", "III", "IV"], n),
        "operator": rng.choice(["Dr. A", "Dr. B", "Dr. C"], n),
    })
    patient_effect = dict(zip(patients, rng.normal(0, 5, len(patients)), strict=True))
    d["value"] = (10 + 6 * d["followed"] + 0.3 * d["baseline_hair_density"]
                  + d["patient_id"].map(patient_effect) + rng.normal(0, 4, n))
    return d


def _reference(formula: str, data: pd.DataFrame):
    """statsmodels, fitted directly: OLS, clusters = patients, t with G - 1 df."""
    data = data.dropna(subset=[c for c in R.COVARIATES if c in data and c in formula])
    fit = smf.ols(formula, data=data).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(data["patient_id"])[0]},
        use_t=True)
    lo, hi = fit.conf_int().loc["followed"]
    return fit.params["followed"], lo, hi, fit.pvalues["followed"], int(fit.nobs)


def test_adjusted_difference_matches_statsmodels_formula():
    d = _fixed_data()
    got = R.adjusted_difference(d)
    diff, lo, hi, p, n = _reference(FULL, d)
    assert got["diff"] == pytest.approx(diff, abs=1e-8)
    assert got["ci_low"] == pytest.approx(lo, abs=1e-8)
    assert got["ci_high"] == pytest.approx(hi, abs=1e-8)
    assert got["p"] == pytest.approx(p, abs=1e-8)
    assert (got["n"], got["clusters"]) == (n, 14)
    assert got["used"] == list(R.COVARIATES) and got["left_out"] == {}


def test_covariates_missing_or_constant_are_left_out_and_named():
    d = _fixed_data()
    d["fitzpatrick_type"] = None          # not recorded anywhere
    d["operator"] = "Dr. A"               # one clinician only
    d = d.drop(columns="age_band")        # not in the data at all
    d.loc[[3, 7], "baseline_hair_density"] = np.nan  # partly missing: complete cases
    got = R.adjusted_difference(d)
    assert got["used"] == ["baseline_hair_density"]
    assert got["left_out"] == {"age_band": "not in the data",
                               "fitzpatrick_type": "not recorded",
                               "operator": "one value only"}
    diff, lo, hi, p, n = _reference("value ~ followed + baseline_hair_density", d)
    assert n == 28 and got["n"] == 28
    assert (got["diff"], got["ci_low"], got["ci_high"], got["p"]) == pytest.approx(
        (diff, lo, hi, p), abs=1e-8)


def test_a_covariate_constant_on_the_complete_cases_is_left_out():
    d = _fixed_data()
    # the only courses with another clinician lack a baseline: on complete cases the
    # clinician is constant and leaves the model, which then uses every other course
    d["operator"] = "Dr. A"
    d.loc[[0, 1], "operator"] = "Dr. B"
    d.loc[[0, 1], "baseline_hair_density"] = np.nan
    got = R.adjusted_difference(d)
    assert got["left_out"] == {"operator": "one value only"}
    diff, *_ = _reference("value ~ followed + baseline_hair_density + C(age_band)"
                          " + C(fitzpatrick_type)", d)
    assert got["diff"] == pytest.approx(diff, abs=1e-8) and got["n"] == 28


def test_group_determined_by_covariates_gives_no_estimate():
    d = _fixed_data()
    d["operator"] = np.where(d["followed"] == 1, "Dr. A", "Dr. B")
    got = R.adjusted_difference(d)
    assert np.isnan(got["diff"]) and got["note"] == "the covariates determine the group"
    one = R.adjusted_difference(d[d["followed"] == 1])
    assert np.isnan(one["diff"]) and one["note"] == "both groups are needed"


@pytest.fixture(scope="module")
def sample():
    ds = load_data_dir(SAMPLE, progress=False)
    audit = run_audit(ds.sessions.data, load_protocol(), ds.outcomes_data)
    w = R.attach_windows(audit, ds.outcomes_data)
    paired, _ = R.change_from_baseline(w)
    return audit, w, R.course_outcomes(w, paired), R.compliance_groups(audit)


def test_compare_groups_adjusted_columns_match_statsmodels_on_the_sample(sample):
    audit, w, values, groups = sample
    cov = R.course_covariates(audit, w)
    cmp = R.compare_groups(values, groups, covariates=cov)
    plain = R.compare_groups(values, groups)
    assert list(cmp.columns[: len(plain.columns)]) == list(plain.columns)
    pd.testing.assert_frame_equal(cmp[plain.columns], plain)
    # the covariates, rebuilt here from the sessions and outcomes
    s = audit.sessions[audit.sessions["session_number"] == 1].drop_duplicates("course_id")
    age = ((s["session_date"] - s["date_of_birth"]).dt.days / 365.25).astype(float)
    band = pd.cut(age, [-np.inf, 30, 40, 50, 60, np.inf], right=False,
                  labels=["under 30", "30–39", "40–49", "50–59", "60 and over"])
    base = w[w["is_baseline"] & (w["instrument"] == "hair_density")].drop_duplicates(
        "course_id").set_index("course_id")["score"].astype(float)
    cov_ref = pd.DataFrame({"course_id": s["course_id"].astype(str).to_numpy(),
                            "age_band": band.astype(str).to_numpy(),
                            "fitzpatrick_type": s["fitzpatrick_type"].astype(str).to_numpy()})
    cov_ref["baseline_hair_density"] = base.reindex(cov_ref["course_id"]).to_numpy()
    c = audit.courses[["course_id", "patient_id", "operator"]].astype(str)
    cov_ref = cov_ref.merge(c, on="course_id")
    d = values.merge(groups[["course_id", "group"]], on="course_id").merge(
        cov_ref, on="course_id")
    d["followed"] = (d["group"] == R.FOLLOWED).astype(float)
    for row in cmp.itertuples():
        sub = d[(d["measure"] == row.measure) & (d["instrument"] == row.instrument)
                & (d["rater"] == row.rater)].reset_index(drop=True)
        diff, lo, hi, p, n = _reference(FULL, sub)
        assert (row.adjusted_diff, row.adjusted_ci_low, row.adjusted_ci_high,
                row.adjusted_p) == pytest.approx((diff, lo, hi, p), abs=1e-8)
        assert row.adjusted_n == n
        assert row.adjusted_clusters == sub.dropna()["patient_id"].nunique()
        assert row.covariates_used == ("baseline hair density, age band, Fitzpatrick type,"
                                       " clinician")
        assert row.covariates_left_out == ""
        assert row.mean_diff == pytest.approx(row.mean_followed - row.mean_not)


def test_format_comparison_has_no_missing_markers(sample):
    audit, w, values, groups = sample
    cmp = R.compare_groups(values, groups, covariates=R.course_covariates(audit, w))
    cmp.loc[0, ["adjusted_diff", "adjusted_ci_low", "adjusted_ci_high", "adjusted_p"]] = np.nan
    html = R.format_comparison(cmp).to_html()
    for bad in ("NaN", "nan", "None", "<NA>"):
        assert bad not in html
    assert "adjusted difference" in html


# ---------------------------------------------------------------------------------------------
# Table 1: imbalance


def test_table_one_flags_smd_above_a_tenth(sample):
    audit, w, _, groups = sample
    t = R.table_one(audit, groups, w)
    assert list(t.columns) == ["characteristic", "level", R.FOLLOWED, R.NOT_FOLLOWED, "p",
                               "SMD", "imbalanced", "missing"]
    smd = t["SMD"].astype(float)
    assert list(t["imbalanced"]) == list(smd.fillna(0) > 0.1)
    printed = R.format_table_one(t)
    assert list(printed["imbalanced"] == "imbalanced") == list(smd.fillna(0) > 0.1)
    assert set(printed["imbalanced"]) <= {"imbalanced", ""}
    sentence = R.imbalance_sentence(t)
    flagged = t.loc[t["imbalanced"], "characteristic"]
    assert sentence.endswith(".") and ". " not in sentence  # one sentence
    for name in flagged:
        assert name.split(",")[0].lower() in sentence.lower()
    calm = t.assign(SMD=t["SMD"].where(t["SMD"] <= 0.1))
    assert R.imbalance_sentence(calm) == ""
