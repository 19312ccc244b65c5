"""The assessment window: shared follow-up visits, closed windows only, the next course."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from outcomes import schema
from outcomes.audit import run_audit
from outcomes.protocol import load_protocol
from outcomes.protocol.assessments import assessment_window
from outcomes.protocol.verdicts import Verdict

D = pd.Timestamp


def courses(*rows) -> pd.DataFrame:
    """(patient, area, first, last) rows as a course table."""
    return pd.DataFrame({"patient_id": [r[0] for r in rows], "indication": "hair_regrowth",
                         "area": [r[1] for r in rows],
                         "first_date": [D(r[2]) for r in rows],
                         "last_date": [D(r[3]) for r in rows]})


def visits(*rows) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": [r[0] for r in rows],
                         "assessment_date": [D(r[1]) for r in rows]})


def test_concurrent_courses_in_two_areas_share_one_follow_up_visit():
    c = courses(("P1", "scalp", "2025-01-06", "2025-03-03"),
                ("P1", "beard", "2025-01-06", "2025-03-03"))
    ev = assessment_window(c, visits(("P1", "2025-06-17")), 90, 183, D("2026-01-01"))
    assert ev.code.tolist() == [Verdict.COMPLIANT] * 2
    assert ev.observed.tolist() == [106, 106]


def test_overlapping_courses_each_count_the_visit_in_their_window():
    c = courses(("P1", "scalp", "2025-01-06", "2025-03-03"),
                ("P1", "beard", "2025-02-03", "2025-04-01"))
    ev = assessment_window(c, visits(("P1", "2025-07-01")), 90, 183, D("2026-01-01"))
    assert ev.code.tolist() == [Verdict.COMPLIANT] * 2
    assert ev.observed.tolist() == [120, 91]


def test_an_open_window_is_not_applicable_even_when_already_assessed():
    c = courses(("P1", "scalp", "2025-01-06", "2025-03-03"))
    v = visits(("P1", "2025-06-17"))  # inside, but the window runs to 2025-09-02
    ev = assessment_window(c, v, 90, 183, D("2025-08-01"))
    assert ev.code.tolist() == [Verdict.NOT_APPLICABLE]
    ev = assessment_window(c, v, 90, 183, D("2025-09-02"))  # ended on the last date
    assert ev.code.tolist() == [Verdict.COMPLIANT]


def test_a_visit_after_the_next_course_in_the_same_area_is_not_this_courses():
    c = courses(("P1", "scalp", "2025-01-06", "2025-02-03"),
                ("P1", "scalp", "2025-06-10", "2025-07-08"))
    ev = assessment_window(c, visits(("P1", "2025-06-20")), 90, 183, D("2026-06-01"))
    # day 137 after course 1, but course 2 had started: course 1 has no assessment
    assert ev.code.tolist() == [Verdict.NOT_DOCUMENTED, Verdict.NOT_DOCUMENTED]
    assert [ev.texts[w] for w in ev.why] == ["no outcome assessment after the course"] * 2


def test_too_early_and_too_late_name_the_nearest_visit():
    c = courses(("P1", "scalp", "2025-01-06", "2025-03-03"),
                ("P2", "scalp", "2025-01-06", "2025-03-03"))
    v = visits(("P1", "2025-04-02"), ("P1", "2025-11-08"), ("P2", "2025-10-01"))
    ev = assessment_window(c, v, 90, 183, D("2026-01-01"))
    assert ev.code.tolist() == [Verdict.DEVIATION, Verdict.DEVIATION]
    assert ev.observed.tolist() == [30, 212]  # P1: day 30 is 60 early, day 250 is 67 late
    assert [ev.texts[w] for w in ev.why] == ["assessed too early (before 90 days)",
                                            "assessed too late (after 183 days)"]


def reference(c: pd.DataFrame, v: pd.DataFrame, lo: int, hi: int, end: pd.Timestamp) -> list:
    """The rule written out course by course, from its definition."""
    out = []
    for i, r in c.iterrows():
        if r["last_date"] + pd.Timedelta(days=hi) > end:
            out.append((Verdict.NOT_APPLICABLE, None))
            continue
        later = c[(c["patient_id"] == r["patient_id"]) & (c["area"] == r["area"])
                  & (c["first_date"] > r["first_date"])]
        nxt = later["first_date"].min() if len(later) else None
        days = []
        for _, a in v[v["patient_id"] == r["patient_id"]].iterrows():
            d = (a["assessment_date"] - r["last_date"]).days
            if d > 0 and (nxt is None or a["assessment_date"] < nxt):
                days.append(d)
        inside = [d for d in days if lo <= d <= hi]
        if inside:
            out.append((Verdict.COMPLIANT, min(inside)))
        elif days:
            best = min(days, key=lambda d: (lo - d if d < lo else d - hi, d))
            out.append((Verdict.DEVIATION, best))
        else:
            out.append((Verdict.NOT_DOCUMENTED, None))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["P1", "P2", "P3"]), st.sampled_from(["a", "b"]),
                          st.integers(0, 400), st.integers(0, 90)), min_size=1, max_size=8),
       st.lists(st.tuples(st.sampled_from(["P1", "P2", "P3"]), st.integers(0, 800)),
                max_size=10),
       st.integers(300, 900))
def test_matches_the_rule_written_out(course_rows, visit_rows, end_day):
    base = D("2024-01-01")
    rows = []
    for p, area, start, length in course_rows:  # one course per patient, area and start
        if any(r[0] == p and r[1] == area and abs(r[2] - start) <= 120 + 90 for r in rows):
            continue
        rows.append((p, area, start, length))
    c = pd.DataFrame({"patient_id": [r[0] for r in rows], "indication": "hair_regrowth",
                      "area": [r[1] for r in rows],
                      "first_date": [base + pd.Timedelta(days=r[2]) for r in rows],
                      "last_date": [base + pd.Timedelta(days=r[2] + r[3]) for r in rows]})
    v = pd.DataFrame({"patient_id": [p for p, _ in visit_rows],
                      "assessment_date": [base + pd.Timedelta(days=d) for _, d in visit_rows]})
    end = base + pd.Timedelta(days=end_day)
    ev = assessment_window(c, v, 90, 183, end)
    got = [(Verdict(int(code)), None if np.isnan(o) else int(o))
           for code, o in zip(ev.code, ev.observed, strict=True)]
    want = reference(c, v, 90, 183, end)
    for (gc, go), (wc, wo) in zip(got, want, strict=True):
        assert gc == wc
        if wc in (Verdict.COMPLIANT, Verdict.DEVIATION):
            assert go == wo


def test_through_the_audit_the_window_ends_at_the_datas_last_date():
    """Sessions end in March; the outcomes run to October: the window has ended."""
    s = pd.DataFrame({"patient_id": ["P1"] * 3 + ["P1"] * 3,
                      "session_date": pd.to_datetime(["2025-01-06", "2025-02-03", "2025-03-03"] * 2),
                      "area": ["scalp"] * 3 + ["beard"] * 3, "indication": "hair_regrowth",
                      "operator": "Dr. A"})
    s["session_date"] = s["session_date"].astype("datetime64[s]")
    s["session_id"] = [f"s{i}" for i in range(6)]
    full = schema.empty_frame("sessions")
    s = pd.concat([full, s.astype({k: full[k].dtype for k in s.columns})], ignore_index=True)
    o = pd.DataFrame({"patient_id": ["P1", "P1"],
                      "assessment_date": pd.to_datetime(["2025-06-17", "2025-10-01"])
                      .astype("datetime64[s]"),
                      "instrument": "satisfaction", "score": [5.0, 5.0]})
    protocol = load_protocol()
    a = run_audit(s, protocol, o, as_of=pd.Timestamp("2025-10-01"))
    v = a.verdicts[a.verdicts["criterion"] == "final_assessment"]
    assert v["verdict"].tolist() == ["compliant", "compliant"]
    assert a.info["data_end"] == "2025-10-01"
