"""Courses: gaps start new courses, areas and indications stay apart, completion by data end."""

from __future__ import annotations

import numpy as np
import pandas as pd

from outcomes.courses import assign_courses, course_table


def sessions(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "indication", "area", "session_date"])
    df["session_date"] = pd.to_datetime(df["session_date"]).astype("datetime64[s]")
    df["operator"] = "Dr. A"
    df["clinic"] = "North"
    return df


def messy_sessions(seed: int, n: int, patients: int) -> pd.DataFrame:
    """Random sessions with gaps in the record: missing indication, area, clinician and
    clinic in places, dates in any order."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "patient_id": pd.array(rng.choice([f"P{i}" for i in range(patients)], n),
                               dtype="string"),
        "indication": pd.array(rng.choice(["hair", "acne", None], n, p=[.8, .15, .05]),
                               dtype="string"),
        "area": pd.array(rng.choice(["vertex", "frontal", None], n, p=[.6, .3, .1]),
                         dtype="string"),
        "session_date": (pd.Timestamp("2024-01-01")
                         + pd.to_timedelta(rng.integers(0, 700, n), unit="D"))
        .astype("datetime64[s]"),
        "operator": pd.array(rng.choice(["Dr. A", "Dr. B", None], n, p=[.5, .3, .2]),
                             dtype="string"),
        "clinic": pd.array(rng.choice(["North", None], n, p=[.7, .3]), dtype="string"),
        "row": np.arange(n),
    })


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


def test_course_table_by_positions_equals_groupby_with_gaps_in_the_record():
    """The fast course table (courses as runs of rows) gives what groupby first()/last()/
    nunique() give, also when clinic, clinician, area or indication are missing in places,
    and a shuffled frame (courses not runs) falls back to the groupby."""
    from outcomes.courses import _course_table_grouped

    s = messy_sessions(7, 3000, 300).drop(columns="row")
    with_courses = assign_courses(s, 120)
    expected = _course_table_grouped(with_courses)
    expected["duration_days"] = (expected["last_date"] - expected["first_date"]).dt.days
    pd.testing.assert_frame_equal(course_table(with_courses), expected)
    shuffled = with_courses.sample(frac=1, random_state=1).reset_index(drop=True)
    got = course_table(shuffled).sort_values("course_id").reset_index(drop=True)
    want = expected.sort_values("course_id").reset_index(drop=True)
    same_in_any_order = ["course_id", "patient_id", "operators", "first_date", "last_date",
                         "sessions", "completed", "days_observed_after", "duration_days"]
    pd.testing.assert_frame_equal(got[same_in_any_order], want[same_in_any_order])


def test_course_table_dates_are_the_span_in_any_row_order():
    """A course held as one block of rows but newest first still spans oldest to newest."""
    s = sessions([("P1", "hair", "v", d) for d in ("2025-01-01", "2025-02-01", "2025-03-01")])
    s.loc[1, "session_date"] = pd.NaT
    backwards = assign_courses(s, 120).iloc[::-1].reset_index(drop=True)
    c = course_table(backwards)
    assert c.loc[0, "first_date"] == pd.Timestamp("2025-01-01")
    assert c.loc[0, "last_date"] == pd.Timestamp("2025-03-01")
    assert c.loc[0, "duration_days"] == 59


def test_keeping_the_export_order_gives_the_same_sessions_and_courses():
    """The audit's path (rows kept in the export's order, courses found through `order`)
    gives the rows assign_courses gives, just not sorted, and the same course table; also
    for a subset of rows and with gaps in the record."""
    from outcomes.courses import course_table_of, courses_with_starts

    s = messy_sessions(11, 2000, 150)
    rng = np.random.default_rng(11)
    for rows in (None, np.flatnonzero(rng.random(len(s)) < 0.6)):
        picked = s if rows is None else s.iloc[rows].reset_index(drop=True)
        sorted_rows = assign_courses(picked, 120)
        kept, starts, order = courses_with_starts(s, rows, 120, keep_order=True)
        assert kept["row"].tolist() == picked["row"].tolist()  # the export's order
        pd.testing.assert_frame_equal(kept.iloc[order].reset_index(drop=True), sorted_rows)
        pd.testing.assert_frame_equal(course_table_of(kept, starts, order),
                                      course_table(sorted_rows))
