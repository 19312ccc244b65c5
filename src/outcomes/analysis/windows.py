"""Outcome assessments placed in their course: baseline, during, early, final, follow-up."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from outcomes import schema
from outcomes.analysis.common import WINDOWS

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
