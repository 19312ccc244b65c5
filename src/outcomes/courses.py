"""Group sessions into treatment courses.

A course is one patient's run of sessions for one indication and area in which no gap
exceeds the protocol's `new_course_after_days`. It is completed when the data run at
least that many days past its last session. Vectorised: one sort, one diff, one cumsum.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from outcomes.arrowtext import arrow_strings, sorted_codes
from outcomes.parallel import call_threads

NOT_RECORDED = "(not recorded)"


def assign_courses(sessions: pd.DataFrame, new_course_after_days: int = 120,
                   as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Sessions sorted by patient, indication, area and date, with course columns added.

    Adds `course_id`, `session_number` (1-based within the course),
    `days_since_previous` (NA for a course's first session), `days_observed_after`
    (days the data run past the course's last session) and `course_completed`.
    `as_of` is the date the data run to (default: the latest session date).
    """
    return courses_with_starts(sessions, None, new_course_after_days, as_of)[0]


def courses_with_starts(sessions: pd.DataFrame, rows: np.ndarray | None,
                        new_course_after_days: int = 120, as_of: pd.Timestamp | None = None,
                        keep_order: bool = False
                        ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """assign_courses(sessions.iloc[rows]) (all rows when None) and where each course is.

    Returns (frame, starts, order): in course order, course k is frame rows
    order[starts[k]:starts[k + 1]]. By default the frame is sorted into course order (as
    assign_courses gives it) and order is None. With keep_order the frame keeps the rows'
    own order and `order` lists them in course order: no copy of every column, which
    is most of the time on a big export (the audit needs no particular order).
    """
    key = {name: sessions[name].astype("string") for name in ("patient_id", "indication",
                                                               "area")}
    for name in ("indication", "area"):
        key[name] = key[name].fillna(NOT_RECORDED)
    # the key columns are hashed while the kept rows are gathered (kernels that free the
    # GIL); codes sort as the values do (what categoricals give)
    gather = _gather_jobs(sessions, rows) if keep_order and rows is not None else None
    jobs = [partial(sorted_codes, col) for col in key.values()] + (gather or [])
    done = call_threads(jobs, big=len(sessions) >= 10_000)
    (p_codes, p_vals), (i_codes, i_vals), (a_codes, a_vals) = done[:3]
    session_dates = sessions["session_date"].to_numpy()
    if rows is not None:
        p_codes, i_codes, a_codes = p_codes[rows], i_codes[rows], a_codes[rows]
        session_dates = session_dates[rows]
    order = _sort_order(p_codes, i_codes, a_codes, session_dates)
    if keep_order:
        df = (_frame_of(sessions, done[3:]) if gather
              else sessions.reset_index(drop=True) if rows is None
              else _take_rows(sessions, rows))
        dates = df["session_date"].to_numpy(dtype="datetime64[D]")[order]
    else:
        df = _take_rows(sessions, order if rows is None else rows[order])
        dates = df["session_date"].to_numpy(dtype="datetime64[D]")
    p_codes, i_codes, a_codes = p_codes[order], i_codes[order], a_codes[order]
    same = ((p_codes[1:] == p_codes[:-1]) & (i_codes[1:] == i_codes[:-1])
            & (a_codes[1:] == a_codes[:-1]))
    gap = (dates[1:] - dates[:-1]).astype("int64")
    starts = np.ones(len(df), dtype=bool)
    starts[1:] = ~same | (gap > new_course_after_days)
    course_no = np.cumsum(starts)  # global course counter
    # numbering within the patient-indication-area group: groups are runs of rows
    group_start = np.ones(len(df), dtype=bool)
    group_start[1:] = ~same
    group_no = np.cumsum(group_start)
    first_course_in_group = course_no[group_start][group_no - 1] if len(df) else course_no
    k_in_group = course_no - first_course_in_group + 1
    first_idx = np.flatnonzero(starts)
    pos = np.arange(len(df)) - first_idx[course_no - 1]
    days = np.full(len(df), np.nan)
    days[1:] = np.where(starts[1:], np.nan, gap)
    # each course's latest date (dates run upwards within it, NaT, the smallest int64, last)
    last_date = (np.maximum.reduceat(dates.view(np.int64), first_idx).view("datetime64[D]")
                 if len(df) else dates)
    known = dates[~np.isnat(dates)]  # the data run to their latest recorded date
    end = np.datetime64(pd.Timestamp(as_of) if as_of is not None else
                        pd.Timestamp(known.max()) if len(known) else pd.Timestamp(0), "D")
    course_days_after = (end - last_date) // np.timedelta64(1, "D")
    if keep_order:  # each row's values from its place in course order
        course_no, pos, days = (_scatter(x, order) for x in (course_no, pos, days))
    days_after = course_days_after[course_no - 1]
    df["course_id"] = _course_ids(p_vals, i_vals, a_vals, p_codes, i_codes, a_codes,
                                  k_in_group, first_idx, course_no)
    df["session_number"] = pd.array(pos + 1, dtype="Int64")
    df["days_since_previous"] = pd.array(days, dtype="Float64")
    df["days_observed_after"] = pd.array(days_after, dtype="Int64")
    df["course_completed"] = pd.array(days_after >= new_course_after_days, dtype="boolean")
    return df, first_idx, order if keep_order else None


def _sort_order(p: np.ndarray, i: np.ndarray, a: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """np.lexsort((dates, a, i, p)): one stable argsort of a combined key when it fits."""
    if dates.dtype.kind != "M":
        return np.lexsort((dates, a, i, p))
    d = dates.view(np.int64)  # in the dates' own unit
    nat = np.isnat(dates)  # NaT sorts last
    if len(d) and not nat.all():
        low = int(d[~nat].min())
        d = np.where(nat, int(d[~nat].max()) - low + 1, d - low)
        widths = [int(x.max(initial=0)) + 2 for x in (i, a, d)]
        if (int(p.max(initial=0)) + 2) * widths[0] * widths[1] * widths[2] < 2**62 \
                and (p >= 0).all() and (i >= 0).all() and (a >= 0).all():
            key = ((p * widths[0] + i) * widths[1] + a) * widths[2] + d
            return np.argsort(key, kind="stable")
    return np.lexsort((dates, a, i, p))


def _scatter(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Values listed in `order` put back in their rows' places."""
    out = np.empty_like(values)
    out[order] = values
    return out


def _take_rows(df: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    """df.iloc[order] with a fresh RangeIndex, one column per thread (arrow and numpy
    gather without holding the GIL)."""
    jobs = _gather_jobs(df, order)
    if jobs is None:
        return df.iloc[order].reset_index(drop=True)
    return _frame_of(df, call_threads(jobs))


def _gather_jobs(df: pd.DataFrame, rows: np.ndarray) -> list[Any] | None:
    """One job per column gathering `rows`, for the threads; None when iloc does better
    (a small frame) or a column cannot be named alone (repeated names)."""
    names = list(df.columns)
    if len(df) < 10_000 or len(set(names)) != len(names):
        return None
    return [partial(_take, df[name], rows) for name in names]


def _frame_of(df: pd.DataFrame, columns: list[pd.Series]) -> pd.DataFrame:
    """df's column names over gathered columns, without another copy."""
    return pd.DataFrame(dict(zip(df.columns, columns, strict=True)), copy=False)


def _course_ids(p_vals: Any, i_vals: Any, a_vals: Any, p_codes: np.ndarray,
                i_codes: np.ndarray, a_codes: np.ndarray, k_in_group: np.ndarray,
                first_idx: np.ndarray, course_no: np.ndarray) -> pd.Series:
    """patient:indication:area:k for every row, built once per course by arrow."""
    def text(values: Any, codes: np.ndarray) -> pa.Array:
        arr = values.cast(pa.large_string()) if isinstance(values, pa.Array) else \
            pa.array(np.asarray(values, dtype=object), type=pa.large_string())
        return arr.take(pa.array(codes, mask=codes < 0))

    f = first_idx
    ids = pc.binary_join_element_wise(
        text(p_vals, p_codes[f]), text(i_vals, i_codes[f]), text(a_vals, a_codes[f]),
        pa.array(k_in_group[f]).cast(pa.large_string()), pa.scalar(":", pa.large_string()))
    return pd.Series(pd.array(ids.take(pa.array(course_no - 1)), dtype="string"))


def course_table(sessions_with_courses: pd.DataFrame) -> pd.DataFrame:
    """One row per course: patient, indication, area, dates, sessions, clinician, completed.

    `operator` is the clinician of the course's last session (who closed the course),
    `operators` how many clinicians treated in it. Courses are listed in order of first
    appearance; values are a course's first (last) recorded one, as groupby's first()
    and last() give them.
    """
    return course_table_of(sessions_with_courses,
                           course_starts(sessions_with_courses["course_id"]))


def course_table_of(s: pd.DataFrame, starts: np.ndarray | None,
                    order: np.ndarray | None = None) -> pd.DataFrame:
    """course_table, by positions when `starts` gives the first row of each course (every
    course one run of the rows `order` lists, all rows in turn when None), else by a
    groupby."""
    runs = starts is not None and len(s) > 0 and s["session_date"].dtype.kind == "M"
    out = (_course_table_runs(s, starts, order) if runs  # type: ignore[arg-type]
           else _course_table_grouped(s if order is None else _take_rows(s, order)))
    out["duration_days"] = (out["last_date"] - out["first_date"]).dt.days
    return out


def _course_table_grouped(s: pd.DataFrame) -> pd.DataFrame:
    g = s.groupby("course_id", sort=False, observed=True)
    return pd.DataFrame({
        "patient_id": g["patient_id"].first(),
        "indication": g["indication"].first(),
        "area": g["area"].first(),
        "clinic": g["clinic"].last(),
        "operator": g["operator"].last(),
        "operators": g["operator"].nunique(),
        "first_date": g["session_date"].min(),
        "last_date": g["session_date"].max(),
        "sessions": g.size(),
        "completed": g["course_completed"].first(),
        "days_observed_after": g["days_observed_after"].first(),
    }).reset_index()


def course_starts(course_id: pd.Series) -> np.ndarray | None:
    """First row of each course when every course is one run of rows (as assign_courses
    leaves them), else None."""
    strings = arrow_strings(course_id)
    if strings is None or len(course_id) == 0 or course_id.hasnans:
        return None
    ids = strings.combine_chunks()
    change = np.ones(len(ids), dtype=bool)
    change[1:] = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(change)
    if len(pc.unique(ids.take(pa.array(starts)))) != len(starts):
        return None  # a course comes back after another one: not runs
    return starts


def _course_table_runs(s: pd.DataFrame, starts: np.ndarray,
                       order: np.ndarray | None = None) -> pd.DataFrame:
    """course_table for sessions holding each course as one run of rows (of the rows
    `order` lists, when given): positions instead of a groupby on a million course ids.
    Dates are each run's earliest and latest (any row order; missing dates ignored, as
    min() and max() do)."""
    n = len(s)
    ends = np.r_[starts[1:], n]  # one past each course's last row
    idx = np.arange(n)

    def pick(col: pd.Series, at: np.ndarray) -> pd.Series:  # at: places in course order
        return _pick(col, at if order is None else np.where(at >= 0, order[at], -1))

    def recorded(col: pd.Series) -> np.ndarray:
        known = col.notna().to_numpy()
        return known if order is None else known[order]

    def first(name: str) -> pd.Series:
        col = s[name]
        known = recorded(col)
        if known.all():
            return pick(col, starts)
        pos = np.where(known, idx, n)
        nxt = np.minimum.accumulate(pos[::-1])[::-1]  # next recorded row from here on
        at = nxt[starts]
        return pick(col, np.where(at < ends, at, -1))

    def last(name: str) -> pd.Series:
        col = s[name]
        known = recorded(col)
        if known.all():
            return pick(col, ends - 1)
        pos = np.where(known, idx, -1)
        at = np.maximum.accumulate(pos)[ends - 1]  # last recorded row up to the course end
        return pick(col, np.where(at >= starts, at, -1))

    dates = s["session_date"]
    if order is not None:
        dates = pd.Series(dates.to_numpy()[order], dtype=dates.dtype)
    # one column per job on the threads: arrow gathers and numpy scans free the GIL
    jobs: dict[str, Any] = {
        "course_id": lambda: pick(s["course_id"], starts),
        "patient_id": lambda: first("patient_id"),
        "indication": lambda: first("indication"),
        "area": lambda: first("area"),
        "clinic": lambda: last("clinic"),
        "operator": lambda: last("operator"),
        "operators": lambda: _distinct_per_run(s["operator"], starts, order),
        "dates": lambda: _date_span(dates, starts),
        "completed": lambda: first("course_completed"),
        "days_observed_after": lambda: first("days_observed_after"),
    }
    got = dict(zip(jobs, call_threads(jobs.values(), big=n >= 50_000), strict=True))
    span = got.pop("dates")
    return pd.DataFrame({
        **{k: got[k] for k in ("course_id", "patient_id", "indication", "area", "clinic",
                               "operator", "operators")},
        **span,
        "sessions": (ends - starts).astype(np.int64),
        "completed": got["completed"],
        "days_observed_after": got["days_observed_after"],
    }, copy=False)


def _date_span(dates: pd.Series, starts: np.ndarray) -> dict[str, pd.Series]:
    """Earliest and latest date of each run of rows (NaT when a run has none)."""
    d = dates.to_numpy()
    i = d.view(np.int64)  # NaT is the smallest int64: max() passes it by
    big = np.iinfo(np.int64).max
    lo = np.minimum.reduceat(np.where(np.isnat(d), big, i), starts)
    lo[lo == big] = np.iinfo(np.int64).min  # a run without dates: NaT
    hi = np.maximum.reduceat(i, starts)
    return {"first_date": pd.Series(lo.view(d.dtype), dtype=dates.dtype),
            "last_date": pd.Series(hi.view(d.dtype), dtype=dates.dtype)}


def _take(col: pd.Series, rows: np.ndarray, allow_fill: bool = False) -> pd.Series:
    """col's values at rows (with allow_fill, -1 is missing), typed as col was (no
    inference from object columns)."""
    arr = col.array.take(rows, allow_fill=allow_fill)
    return pd.Series(arr, dtype=col.dtype, copy=False, name=col.name)


def _pick(col: pd.Series, rows: np.ndarray) -> pd.Series:
    """col's values at rows, -1 giving a missing value."""
    return _take(col, rows, allow_fill=True)


def _distinct_per_run(col: pd.Series, starts: np.ndarray,
                      order: np.ndarray | None = None) -> np.ndarray:
    """Number of distinct recorded values in each run of rows (of the rows `order`
    lists, when given): groupby nunique."""
    codes, distinct = pd.factorize(col)
    if order is not None:
        codes = codes[order]
    run = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(col)]))
    ok = codes >= 0
    width = max(len(distinct), 1)
    if len(starts) * width <= 50_000_000:  # a run × value table of counts
        seen = np.bincount(run[ok] * width + codes[ok], minlength=len(starts) * width)
        return (seen.reshape(len(starts), width) > 0).sum(axis=1).astype(np.int64)
    pairs = np.unique(run[ok].astype(np.int64) * width + codes[ok])
    return np.bincount(pairs // width, minlength=len(starts)).astype(np.int64)
