"""The `assessment_window` rule: was a course's result assessed in its window?

For each course, the patient's outcome assessments after its last session are searched
for one inside the window (lo–hi days); otherwise the nearest one is reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from outcomes.arrowtext import appearance_codes, arrow_strings
from outcomes.protocol.verdicts import Evaluation, Verdict, reasons

OK, DEV, MISS, NA = (Verdict.COMPLIANT, Verdict.DEVIATION, Verdict.NOT_DOCUMENTED,
                     Verdict.NOT_APPLICABLE)


def assessment_window(courses: pd.DataFrame, outcomes: pd.DataFrame | None, lo: int,
                            hi: int) -> Evaluation:
    """An outcome assessment lo–hi days after the course's last session."""
    n = len(courses)
    if outcomes is None:
        return Evaluation.empty(n)
    found = _best_assessment(courses, outcomes, lo, hi)
    observed, inside = found if found is not None else \
        _best_assessment_by_merge(courses, outcomes, lo, hi)
    any_after = ~np.isnan(observed)
    code = np.where(inside, OK, np.where(any_after, DEV, MISS)).astype(np.int8)
    # the window is still open: not yet assessable unless already assessed inside it
    open_window = courses["days_observed_after"].to_numpy(dtype="float64", na_value=0) < hi
    code[open_window & ~inside] = NA
    early = any_after & ~inside & (observed < lo)
    why, texts = reasons([code == NA, ~any_after, early, any_after & ~inside],
                      ["", "no outcome assessment after the course",
                       f"assessed too early (before {lo} days)",
                       f"assessed too late (after {hi} days)"])
    return Evaluation(code, why, texts, observed)


def _best_assessment_by_merge(courses: pd.DataFrame, outcomes: pd.DataFrame, lo: int,
                              hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Each course's assessment (days after its last session, NaN if none) and whether
    it lies in the window: the assessment inside the window, else the nearest one."""
    n = len(courses)
    a = outcomes[["patient_id", "assessment_date"]].drop_duplicates()
    c = courses[["patient_id", "first_date", "last_date"]].copy()
    c["row"] = np.arange(n)
    # an assessment belongs to the latest course of the patient that ended before it
    m = c.merge(a, on="patient_id", how="inner")
    days = (m["assessment_date"] - m["last_date"]).dt.days
    m = m[days > 0].assign(days=days[days > 0])
    next_start = c.sort_values("first_date").groupby("patient_id")["first_date"].shift(-1)
    c["next_start"] = next_start.reindex(c.index)
    m = m.merge(c[["row", "next_start"]], on="row")
    m = m[m["next_start"].isna() | (m["assessment_date"] < m["next_start"])]
    m["inside"] = m["days"].between(lo, hi)
    m["dist"] = np.where(m["inside"], 0, np.minimum((m["days"] - lo).abs(), (m["days"] - hi).abs()))
    best = m.sort_values(["row", "dist", "days"]).drop_duplicates("row")
    observed = np.full(n, np.nan)
    observed[best["row"].to_numpy()] = best["days"].to_numpy(dtype="float64")
    inside = np.zeros(n, dtype=bool)
    inside[best["row"].to_numpy()] = best["inside"].to_numpy(dtype=bool)
    return observed, inside


def _best_assessment(courses: pd.DataFrame, outcomes: pd.DataFrame, lo: int,
                     hi: int) -> tuple[np.ndarray, np.ndarray] | None:
    """What _best_assessment_by_merge finds, by binary search instead of a join.

    The patient's assessments, sorted by date, are searched for each course: after its
    last session (days > 0) and before the patient's next course starts (courses taken
    in the order the merge version sorts them). None when keys or dates are missing.
    """
    n = len(courses)
    cp = courses["patient_id"]
    op = outcomes["patient_id"]
    first = courses["first_date"].to_numpy(dtype="datetime64[s]")
    last = courses["last_date"].to_numpy(dtype="datetime64[s]")
    when = outcomes["assessment_date"].to_numpy(dtype="datetime64[s]")
    if (cp.isna().any() or op.isna().any() or np.isnat(first).any() or np.isnat(last).any()
            or np.isnat(when).any()):
        return None
    c_code, o_code = _shared_codes(cp, op)
    patients = np.arange(int(c_code.max(initial=-1)) + 1)
    # each patient's next course start, in the merge version's order (a quicksort)
    order = pd.DataFrame({"f": first}).sort_values("f").index.to_numpy()
    order = order[np.argsort(c_code[order], kind="stable")]
    nxt = np.full(n, np.iinfo(np.int64).max)
    same = c_code[order[1:]] == c_code[order[:-1]]
    nxt[order[:-1][same]] = first.astype(np.int64)[order[1:][same]]
    # assessments as one sorted key: patient, then second
    t = when.astype(np.int64)
    span = int(max(t.max(initial=0), first.astype(np.int64).max(initial=0),
                   last.astype(np.int64).max(initial=0)) + 1)
    base = int(min(t.min(initial=0), first.astype(np.int64).min(initial=0),
                   last.astype(np.int64).min(initial=0)))
    width = span - base + 2 * 86400 * (hi + 2)
    if (len(patients) + 1) * width >= 2**62:
        return None
    mine = o_code >= 0  # and one key per run of rows on one patient's day (its instruments)
    mine[1:] &= (o_code[1:] != o_code[:-1]) | (t[1:] != t[:-1])
    key = np.sort(o_code[mine] * width + (t[mine] - base))
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key  # drop repeats
    day = 86400
    start = c_code * width + (last.astype(np.int64) - base)
    stop = c_code * width + np.minimum(nxt - base, width - 1)
    begin = np.searchsorted(key, start + day)  # days > 0
    end = np.searchsorted(key, stop)  # before the next course starts
    end = np.maximum(end, begin)
    observed = np.full(n, np.nan)
    inside = np.zeros(n, dtype=bool)

    def days_at(i: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return (key[i] - start[rows]) // day

    # inside the window: the first assessment on or after day lo, if on or before day hi
    k = np.searchsorted(key, start + lo * day)
    k = np.maximum(k, begin)
    hit = (k < end) & (k < len(key))
    rows = np.flatnonzero(hit)
    d = days_at(k[rows], rows)
    ok = d <= hi
    inside[rows[ok]] = True
    observed[rows[ok]] = d[ok]
    # otherwise the nearest: the last before day lo or the first after day hi
    rest = np.flatnonzero(~inside & (end > begin))
    early_i = np.minimum(np.searchsorted(key, start[rest] + lo * day), end[rest]) - 1
    late_i = np.searchsorted(key, start[rest] + (hi + 1) * day)
    has_early = early_i >= begin[rest]
    has_late = late_i < end[rest]
    early_d = np.where(has_early, days_at(np.clip(early_i, 0, len(key) - 1), rest), np.nan)
    late_d = np.where(has_late, days_at(np.clip(late_i, 0, max(len(key) - 1, 0)), rest)
                      if len(key) else np.nan, np.nan)
    early_dist = np.where(has_early, lo - early_d, np.inf)
    late_dist = np.where(has_late, late_d - hi, np.inf)
    pick_early = has_early & (early_dist <= late_dist)
    observed[rest] = np.where(pick_early, early_d, np.where(has_late, late_d, np.nan))
    return observed, inside


def _shared_codes(first: pd.Series, second: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of two key columns on one numbering: `first`'s values are 0…k-1 in order of
    appearance; a value of `second` not in `first` gets -1. One hash pass when both are
    arrow text."""
    a, b = arrow_strings(first), arrow_strings(second)
    if a is not None and b is not None and a.type == b.type:
        codes = appearance_codes(pa.chunked_array(a.chunks + b.chunks, a.type))
        c_code, o_code = codes[:len(first)], codes[len(first):]
        return c_code, np.where(o_code <= c_code.max(initial=-1), o_code, -1)
    c_code, distinct = pd.factorize(first)
    return c_code.astype(np.int64), pd.Index(distinct).get_indexer(second).astype(np.int64)
