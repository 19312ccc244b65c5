"""Recurrence: Kaplan–Meier, follow-up coverage, and the competing event of a new course."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from outcomes.analysis.common import FOLLOWED, NOT_FOLLOWED
from outcomes.analysis.groups import _fmt
from outcomes.analysis.methods import logrank_test
from outcomes.stats import (
    cumulative_incidence,
    kaplan_meier,
    km_median,
    wilson_ci,
)

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
