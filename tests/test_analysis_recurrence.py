"""Recurrence follow-up completeness and the competing-risks (new course) analysis.

Expected values are worked out by hand in the comments (Aalen–Johansen on seven
courses), by scipy (Wilson interval) and by statsmodels' CumIncidenceRight (the
standard error of the cumulative incidence), never from outcomes' own output.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.duration.survfunc import CumIncidenceRight

from outcomes import analysis as R

# course: (patient, area, first day, last day, follow-up assessments as (day after the
# last session, recurrence)); days count from 2024-01-01.
COURSES = {
    "c1": ("P1", "vertex", 0, 60, [(100, True)]),                 # recurrence at 100
    "c2": ("P2", "vertex", 0, 60, [(90, False)]),                 # next course at 200
    "c2b": ("P2", "vertex", 260, 320, []),                        # (that next course)
    "c3": ("P3", "vertex", 0, 60, [(150, False)]),                # censored at 150
    "c4": ("P4", "vertex", 0, 60, [(200, True)]),                 # recurrence at 200
    "c5": ("P5", "vertex", 0, 60, [(120, False), (300, False)]),  # next course at 400
    "c5b": ("P5", "vertex", 460, 500, []),
    "c6": ("P6", "vertex", 0, 60, [(380, False)]),                # censored at 380: its
    "c6b": ("P6", "frontal", 310, 350, []),                       # next is another area
    "c7": ("P7", "vertex", 0, 60, [(320, True)]),                 # next course at 250
    "c7b": ("P7", "vertex", 310, 330, []),                        # came first: cause 2
}
# Expected (time, cause): c1 (100, 1), c2 (200, 2), c3 (150, 0), c4 (200, 1),
# c5 (400, 2), c6 (380, 0), c7 (250, 2).
EXPECTED = {"c1": (100, 1), "c2": (200, 2), "c3": (150, 0), "c4": (200, 1),
            "c5": (400, 2), "c6": (380, 0), "c7": (250, 2)}
# Aalen–Johansen by hand, N = 7 (S: all-cause Kaplan–Meier just before t):
#   t=100: n=7, 1 recurrence          CIF = 1/7 = 5/35          S after = 6/7
#   t=150: censored
#   t=200: n=5, 1 recurrence, 1 new   CIF += 6/7 · 1/5 = 6/35   -> 11/35, S = 18/35
#                                     new course CIF = 6/7 · 1/5 = 6/35
#   t=250: n=3, 1 new course          new course CIF += 18/35 · 1/3 -> 12/35, S = 12/35
#   t=380: censored
#   t=400: n=1, 1 new course          new course CIF += 12/35 -> 24/35 (11/35 + 24/35 = 1)
# At 365 days: CIF of recurrence 11/35, of a new course 12/35.
# Kaplan–Meier of recurrence censoring at the last assessment (c2 at 90, c3 150, c5 300,
# c6 380; events c1 100, c4 200, c7 320): S(365) = 5/6 · 3/4 · 1/2 = 0.3125.


def _competing_case():
    day0 = pd.Timestamp("2024-01-01")
    courses, rows = [], []
    for cid, (pid, area, first, last, visits) in COURSES.items():
        courses.append({"course_id": cid, "patient_id": pid, "indication": "hair_regrowth",
                        "area": area, "first_date": day0 + pd.Timedelta(days=first),
                        "last_date": day0 + pd.Timedelta(days=last), "operator": "Dr. A",
                        "clinic": "x"})
        rows += [{"previous_course_id": cid, "days_after_previous_course": d,
                  "recurrence": rec} for d, rec in visits]
    w = pd.DataFrame(rows).astype({"previous_course_id": "string",
                                   "days_after_previous_course": "Int64",
                                   "recurrence": "boolean"})
    return SimpleNamespace(courses=pd.DataFrame(courses)), w


def test_competing_data_codes_new_course_of_the_same_area():
    audit, w = _competing_case()
    d = R.recurrence_competing_data(audit, w).set_index("course_id")
    assert sorted(d.index) == sorted(EXPECTED)
    for cid, (t, cause) in EXPECTED.items():
        assert (d.loc[cid, "time_days"], d.loc[cid, "cause"]) == (t, cause), cid
    assert math.isnan(d.loc["c6", "next_course_days"])  # the frontal course is not "next"


def test_cumulative_incidence_matches_hand_computation():
    audit, w = _competing_case()
    table, summary = R.recurrence_cif(audit, w)
    row = summary.iloc[0]
    assert (row["courses"], row["recurrences"], row["new_courses"], row["censored"]) == (
        7, 2, 3, 2)
    assert row["cif"] == pytest.approx(11 / 35, abs=1e-12)
    assert row["new_course_cif"] == pytest.approx(12 / 35, abs=1e-12)
    assert row["km_cumulative"] == pytest.approx(1 - 0.3125, abs=1e-12)
    by_t = table.set_index("time")
    assert list(by_t.index) == [100, 150, 200, 250, 380, 400]
    assert list(by_t["cif"]) == pytest.approx([5 / 35, 5 / 35, 11 / 35, 11 / 35, 11 / 35,
                                               11 / 35], abs=1e-12)
    assert list(by_t["new_course_cif"]) == pytest.approx([0, 0, 6 / 35, 12 / 35, 12 / 35,
                                                          24 / 35], abs=1e-12)
    # the interval: log(-log) transform of the delta-method standard error, which
    # statsmodels computes on its own; at t = 100 it is the binomial sqrt(p(1-p)/N)
    times = np.array([EXPECTED[c][0] for c in EXPECTED], dtype=float)
    causes = np.array([EXPECTED[c][1] for c in EXPECTED])
    with np.errstate(divide="ignore", invalid="ignore"):  # its last time: n = d
        ref = CumIncidenceRight(times, causes)
    se = ref.cinc_se[0][list(ref.times).index(200)]
    assert ref.cinc_se[0][0] == pytest.approx(math.sqrt(1 / 7 * 6 / 7 / 7))
    f, z = 11 / 35, stats.norm.ppf(0.975)
    ratio = z * se / (f * math.log(f))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (f ** math.exp(-ratio), f ** math.exp(ratio)), rel=1e-9)


def test_cif_at_a_day_nobody_reached_is_missing_and_prints_a_dash():
    audit, w = _competing_case()
    _, summary = R.recurrence_cif(audit, w, at_days=900)
    assert math.isnan(summary.iloc[0]["cif"])
    printed = R.format_recurrence_cif(summary)
    html = printed.to_html()
    assert "–" in html and not any(b in html for b in ("NaN", "nan", "None", "<NA>"))
    _, s365 = R.recurrence_cif(audit, w)
    assert "31.4 % (" in R.format_recurrence_cif(s365).iloc[0, 5]
