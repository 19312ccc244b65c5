"""The `assessment_window` rule: was a course's result assessed in its window?

A completed course is judged once its window (last session + lo … hi days) has ended by
the data's last date; before that it is not applicable. Any outcome assessment of the
patient inside the window counts, so one follow-up visit serves every course of that
patient whose window it falls in (two areas treated on the same dates share it). An
assessment made after the patient's next course in the same indication and area has
started belongs to that course, not to this one.

Without an assessment inside the window, the nearest one after the course is reported
(too early or too late: a deviation); with none at all, the assessment is not
documented.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from outcomes.courses import NOT_RECORDED
from outcomes.protocol.verdicts import Evaluation, Verdict, reasons

OK, DEV, MISS, NA = (Verdict.COMPLIANT, Verdict.DEVIATION, Verdict.NOT_DOCUMENTED,
                     Verdict.NOT_APPLICABLE)


def next_course_start(courses: pd.DataFrame) -> pd.Series:
    """The first date of the patient's next course in the same indication and area (NaT
    for the last one)."""
    key = [courses["patient_id"].astype("string"),
           courses["indication"].astype("string").fillna(NOT_RECORDED),
           courses["area"].astype("string").fillna(NOT_RECORDED)]
    frame = pd.DataFrame({"p": key[0], "i": key[1], "a": key[2],
                          "first": pd.to_datetime(courses["first_date"]).to_numpy()})
    ordered = frame.sort_values(["p", "i", "a", "first"], kind="stable")
    nxt = ordered.groupby(["p", "i", "a"], sort=False, dropna=False)["first"].shift(-1)
    return nxt.reindex(frame.index).reset_index(drop=True)


def assessment_window(courses: pd.DataFrame, outcomes: pd.DataFrame | None, lo: int, hi: int,
                      data_end: pd.Timestamp | None) -> Evaluation:
    """An outcome assessment lo–hi days after each course's last session."""
    n = len(courses)
    if outcomes is None or n == 0:
        return Evaluation.empty(n)
    last = pd.to_datetime(courses["last_date"]).reset_index(drop=True)
    c = pd.DataFrame({"row": np.arange(n), "patient_id": courses["patient_id"]
                      .astype("string").to_numpy(), "last": last.to_numpy(),
                      "next": next_course_start(courses).to_numpy()})
    a = pd.DataFrame({"patient_id": outcomes["patient_id"].astype("string").to_numpy(),
                      "when": pd.to_datetime(outcomes["assessment_date"]).to_numpy()})
    a = a.dropna().drop_duplicates()
    m = c.dropna(subset=["patient_id", "last"]).merge(a, on="patient_id")
    m["days"] = (m["when"] - m["last"]).dt.days
    m = m[(m["days"] > 0) & (m["next"].isna() | (m["when"] < m["next"]))]
    inside = m["days"].between(lo, hi)
    # distance to the window: 0 inside, else days before lo or after hi
    m = m.assign(inside=inside, dist=np.where(inside, 0, np.where(m["days"] < lo,
                                                                 lo - m["days"],
                                                                 m["days"] - hi)))
    best = m.sort_values(["row", "dist", "days"], kind="stable").drop_duplicates("row")
    observed = np.full(n, np.nan)
    found = np.zeros(n, dtype=bool)
    rows = best["row"].to_numpy()
    observed[rows] = best["days"].to_numpy(dtype="float64")
    found[rows[best["inside"].to_numpy(dtype=bool)]] = True
    any_after = ~np.isnan(observed)
    code = np.where(found, OK, np.where(any_after, DEV, MISS)).astype(np.int8)
    end = pd.Timestamp(data_end) if data_end is not None else last.max()
    closed = (last + pd.Timedelta(days=hi) <= end).to_numpy(dtype=bool)
    code[~closed] = NA  # the window has not ended: not yet assessable
    early = any_after & ~found & (observed < lo)
    why, texts = reasons([code == NA, ~any_after, early, any_after & ~found],
                         ["", "no outcome assessment after the course",
                          f"assessed too early (before {lo} days)",
                          f"assessed too late (after {hi} days)"])
    return Evaluation(code, why, texts, observed)
