"""Courses: gaps start new courses, areas and indications stay apart, completion by data end."""

from __future__ import annotations

import pandas as pd

from outcomes.courses import assign_courses, course_table


def sessions(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "indication", "area", "session_date"])
    df["session_date"] = pd.to_datetime(df["session_date"]).astype("datetime64[s]")
    df["operator"] = "Dr. A"
    df["clinic"] = "North"
    return df


def test_gap_over_120_days_starts_a_new_course():
    s = sessions([("A", "hair", "vertex", d) for d in
                  ("2025-01-01", "2025-02-05", "2025-03-12", "2025-07-10", "2025-11-08")])
    out = assign_courses(s, 120, as_of=pd.Timestamp("2026-01-01"))
    # 2025-03-12 → 2025-07-10 is 120 days (same course); → 2025-11-08 is 121 days (new)
    assert out["course_id"].tolist() == ["A:hair:vertex:1"] * 4 + ["A:hair:vertex:2"]
    assert out["session_number"].tolist() == [1, 2, 3, 4, 1]
    assert out["days_since_previous"].tolist()[1:4] == [35, 35, 120]
    assert out["days_since_previous"].isna().tolist() == [True, False, False, False, True]
    # data end 2026-01-01: course 1 ended 175 days before (completed), course 2 54 days
    assert out["course_completed"].tolist() == [True] * 4 + [False]


def test_areas_and_indications_are_separate_courses():
    s = sessions([("A", "hair", "vertex", "2025-01-01"), ("A", "hair", "frontal", "2025-01-01"),
                  ("A", "acne", "face", "2025-01-15"), ("A", "hair", "vertex", "2025-02-01"),
                  ("B", "hair", "vertex", "2025-01-02")])
    c = course_table(assign_courses(s, 120))
    assert sorted(c["course_id"]) == ["A:acne:face:1", "A:hair:frontal:1", "A:hair:vertex:1",
                                      "B:hair:vertex:1"]
    assert c.set_index("course_id").loc["A:hair:vertex:1", "sessions"] == 2


def test_unsorted_input_and_missing_area():
    s = sessions([("A", "hair", None, "2025-03-01"), ("A", "hair", None, "2025-01-01"),
                  ("A", "hair", None, "2025-02-01")])
    out = assign_courses(s, 120)
    assert out["session_date"].dt.strftime("%m").tolist() == ["01", "02", "03"]
    assert out["course_id"].nunique() == 1
    assert out["course_id"].iloc[0] == "A:hair:(not recorded):1"


def test_course_table_dates_and_completion_boundary():
    s = sessions([("A", "hair", "v", "2025-01-01"), ("A", "hair", "v", "2025-02-01"),
                  ("B", "hair", "v", "2025-05-03")])
    c = course_table(assign_courses(s, 120, as_of=pd.Timestamp("2025-06-01")))
    c = c.set_index("patient_id")
    assert c.loc["A", "first_date"] == pd.Timestamp("2025-01-01")
    assert c.loc["A", "last_date"] == pd.Timestamp("2025-02-01")
    assert c.loc["A", "duration_days"] == 31
    assert bool(c.loc["A", "completed"]) is True  # 120 days after 2025-02-01 is 2025-06-01
    assert bool(c.loc["B", "completed"]) is False
