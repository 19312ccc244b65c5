"""Audit sessions and courses against a protocol: verdicts, compliance summaries, flags.

Each criterion gives every eligible session (or course) one verdict: compliant,
deviation, or not documented (a value the rule needs is missing: eligible and not
compliant, counted apart so documentation gaps are seen apart from deviations).
Sessions or courses the criterion does not apply to are `not applicable`.

Everything is vectorised over sessions: a criterion is evaluated on whole columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from outcomes import schema
from outcomes.arrowtext import appearance_codes, arrow_strings, sort_rank
from outcomes.courses import NOT_RECORDED, course_table_of, courses_with_starts
from outcomes.parallel import call_threads, map_threads
from outcomes.protocol import Criterion, Protocol, describe
from outcomes.stats import newcombe_diff_ci, wilson_ci

VERDICTS = ["compliant", "deviation", "not documented", "not applicable"]
NA, OK, DEV, MISS = 0, 1, 2, 3  # internal verdict codes
CODE_TO_VERDICT = {OK: "compliant", DEV: "deviation", MISS: "not documented",
                   NA: "not applicable"}
STATUS_TEXT = {
    "met": "target met",
    "not met": "target not met",
    "inconclusive": "inconclusive: the interval spans the target",
    "no data": "no eligible records",
    "not recorded": "not recorded: no eligible record documents the value",
}


@dataclass
class Evaluation:
    """One criterion's verdict code, reason and observed value per unit (session or course).

    The reason of unit i is `texts[why[i]]` (`reason` spells them out; texts[0] is "",
    no reason): a handful of texts and a small number per unit instead of a million
    strings, so verdict tables of millions of rows stay cheap to build.
    """

    code: np.ndarray
    why: np.ndarray  # index into texts, per unit
    texts: list[str]
    observed: np.ndarray  # float

    @property
    def reason(self) -> np.ndarray:
        """The reason of each unit as text ("" where compliant or not applicable)."""
        return np.asarray(self.texts, dtype=object)[self.why]

    def clear(self, mask: np.ndarray, code: int | None = None) -> None:
        """Set the units in mask to `code` (if given) with no reason."""
        if code is not None:
            self.code[mask] = code
        self.why[mask] = 0

    def explain(self, mask: np.ndarray, text: str) -> None:
        """Give the units in mask this reason."""
        if mask.any():
            self.texts.append(text)
            self.why[mask] = len(self.texts) - 1


def _why(conditions: list[np.ndarray], texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """np.select over reason texts, as numbers: the first condition that holds, else ""."""
    n = len(conditions[0]) if conditions else 0
    why = np.zeros(n, dtype=np.int16)
    for k in range(len(conditions) - 1, -1, -1):  # the first true condition wins
        why[conditions[k]] = k + 1
    return why, ["", *texts]


def _num(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _bool(df: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, known) arrays of a nullable boolean column."""
    col = df[name].astype("boolean")
    known = col.notna().to_numpy()
    return col.fillna(False).to_numpy(dtype=bool), known


def _unit(name: str) -> str:
    f = schema.fields("sessions").get(name)
    return f" {f.unit}" if f is not None and f.unit else ""


def _range_text(lo: float | None, hi: float | None, unit: str) -> str:
    if lo is not None and hi is not None:
        return f"{lo:g}–{hi:g}{unit}"
    return f"≥ {lo:g}{unit}" if lo is not None else f"≤ {hi:g}{unit}"


def _eval_range(v: np.ndarray, lo: float | None, hi: float | None, name: str) -> Evaluation:
    missing = np.isnan(v)
    below = ~missing & (v < lo) if lo is not None else np.zeros(len(v), bool)
    above = ~missing & (v > hi) if hi is not None else np.zeros(len(v), bool)
    code = np.where(missing, MISS, np.where(below | above, DEV, OK)).astype(np.int8)
    rng = _range_text(lo, hi, _unit(name))
    why, texts = _why([missing, below, above], [f"{name} not documented", f"{name} below {rng}",
                                                f"{name} above {rng}"])
    return Evaluation(code, why, texts, v)


def _eval_flags(df: pd.DataFrame, names: list[str], want: bool) -> Evaluation:
    """All named yes/no fields equal `want`; the first failing one names the reason."""
    n = len(df)
    k = len(names)
    code = np.full(n, OK, dtype=np.int8)
    why = np.zeros(n, dtype=np.int16)
    count = np.zeros(n)
    missing_any = np.zeros(n, dtype=bool)
    miss_why = np.zeros(n, dtype=np.int16)
    failed = np.zeros(n, dtype=bool)
    texts = [""] + [f"{name} present" if not want else f"{name} not done" for name in names] \
        + [f"{name} not documented" for name in names]
    for i, name in enumerate(names):
        val, known = _bool(df, name)
        bad = known & (val != want)
        count += bad if not want else (known & val)
        why[bad & ~failed] = 1 + i
        failed |= bad
        miss_why[~known & ~missing_any] = 1 + k + i
        missing_any |= ~known
    code[failed] = DEV
    gap = ~failed & missing_any
    code[gap] = MISS
    why[gap] = miss_why[gap]
    return Evaluation(code, why, texts, count)


def _eval_condition(df: pd.DataFrame, cond: dict[str, Any]) -> Evaluation:
    name = cond["field"]
    f = schema.fields("sessions")[name]
    if "equals" in cond:
        if f.type == "bool":
            return _eval_flags(df, [name], bool(cond["equals"]))
        col = df[name].astype("string")
        known = col.notna().to_numpy()
        eq = (col == str(cond["equals"])).fillna(False).to_numpy(dtype=bool)
        code = np.where(~known, MISS, np.where(eq, OK, DEV)).astype(np.int8)
        why, texts = _why([~known, ~eq], [f"{name} not documented",
                                          f"{name} is not {cond['equals']}"])
        return Evaluation(code, why, texts, np.full(len(df), np.nan))
    return _eval_range(_num(df, name), cond.get("min"), cond.get("max"), name)


def _combine_all(parts: list[Evaluation]) -> Evaluation:
    """All conditions must hold: the first deviation wins, then the first gap."""
    n = len(parts[0].code)
    code = np.full(n, OK, dtype=np.int8)
    why = np.zeros(n, dtype=np.int16)
    texts = [""]
    recode = []
    for p in parts:  # each part's reason numbers in the combined list of texts
        r = np.arange(len(p.texts)) + len(texts) - 1
        r[0] = 0
        recode.append(r)
        texts += p.texts[1:]
    for want in (DEV, MISS):
        for p, r in zip(parts, recode, strict=True):
            hit = (p.code == want) & (code == OK)
            code[hit] = want
            why[hit] = r[p.why[hit]]
    return Evaluation(code, why, texts, parts[-1].observed)


def evaluate_session_criterion(c: Criterion, s: pd.DataFrame) -> Evaluation:
    """Verdicts of one session-level criterion for every session."""
    p = c.params
    if c.rule == "range":
        ev = _eval_range(_num(s, p["field"]), p.get("min"), p.get("max"), p["field"])
    elif c.rule == "at_least_field":
        a, b = _num(s, p["field"]), _num(s, p["other"])
        missing = np.isnan(a) | np.isnan(b)
        low = ~missing & (a < b)
        code = np.where(missing, MISS, np.where(low, DEV, OK)).astype(np.int8)
        why, texts = _why([np.isnan(a), np.isnan(b), low],
                          [f"{p['field']} not documented", f"{p['other']} not documented",
                           f"{p['field']} below {p['other']}"])
        ev = Evaluation(code, why, texts, a)
    elif c.rule in ("required_true", "required_false"):
        ev = _eval_flags(s, list(p["fields"]), c.rule == "required_true")
    elif c.rule == "all_of":
        ev = _combine_all([_eval_condition(s, cond) for cond in p["conditions"]])
    elif c.rule == "interval_days":
        v = _num(s, "days_since_previous")
        ev = _eval_range(v, p["min"], p["max"], "days_since_previous")
        ev.clear(np.isnan(v), NA)  # a course's first session has no interval
        rng = f"{p['min']:g}–{p['max']:g} days"
        dev = ev.code == DEV
        ev.explain(dev & (v < p["min"]), f"interval shorter than {rng}")
        ev.explain(dev & ~(v < p["min"]), f"interval longer than {rng}")
    else:
        raise ValueError(f"rule {c.rule!r} is not a session rule")
    if c.level == "first_session":
        ev.clear(s["session_number"].to_numpy(dtype="int64", na_value=1) > 1, NA)
    if c.applies_when:
        cond = c.applies_when
        v = _num(s, cond["field"])
        lo, hi = cond.get("min", -np.inf), cond.get("max", np.inf)
        ev.clear(~np.isnan(v) & ((v < lo) | (v > hi)), NA)  # unknown: the rule still applies
    return ev


def evaluate_course_criterion(c: Criterion, courses: pd.DataFrame,
                              outcomes: pd.DataFrame | None) -> Evaluation:
    """Verdicts of one course-level criterion for every course (ongoing: not applicable)."""
    p = c.params
    done = courses["completed"].fillna(False).to_numpy(dtype=bool)
    n = len(courses)
    if c.rule == "sessions_per_course":
        v = courses["sessions"].to_numpy(dtype="float64")
        ev = _eval_range(v, p["min"], p["max"], "sessions")
        ev.explain((ev.code == DEV) & (v < p["min"]), f"fewer than {p['min']} sessions")
        ev.explain((ev.code == DEV) & (v > p["max"]), f"more than {p['max']} sessions")
    elif c.rule == "assessment_window":
        ev = _eval_assessment_window(courses, outcomes, p["min"], p["max"])
    else:
        raise ValueError(f"rule {c.rule!r} is not a course rule")
    ev.clear(~done, NA)
    if n == 0:
        return Evaluation(np.zeros(0, np.int8), np.zeros(0, np.int16), [""], np.zeros(0))
    return ev


def _eval_assessment_window(courses: pd.DataFrame, outcomes: pd.DataFrame | None, lo: int,
                            hi: int) -> Evaluation:
    """An outcome assessment lo–hi days after the course's last session."""
    n = len(courses)
    if outcomes is None:
        return Evaluation(np.full(n, NA, np.int8), np.zeros(n, np.int16), [""],
                          np.full(n, np.nan))
    found = _best_assessment(courses, outcomes, lo, hi)
    observed, inside = found if found is not None else \
        _best_assessment_by_merge(courses, outcomes, lo, hi)
    any_after = ~np.isnan(observed)
    code = np.where(inside, OK, np.where(any_after, DEV, MISS)).astype(np.int8)
    # the window is still open: not yet assessable unless already assessed inside it
    open_window = courses["days_observed_after"].to_numpy(dtype="float64", na_value=0) < hi
    code[open_window & ~inside] = NA
    early = any_after & ~inside & (observed < lo)
    why, texts = _why([code == NA, ~any_after, early, any_after & ~inside],
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


# ---------------------------------------------------------------------------------------------


@dataclass
class Audit:
    """The result of auditing sessions against a protocol."""

    protocol: Protocol
    sessions: pd.DataFrame  # audited sessions, with course columns, in the export's order
    courses: pd.DataFrame
    verdicts: pd.DataFrame  # long: one row per criterion × session (or course)
    excluded: pd.DataFrame  # sessions for other indications, not audited
    has_outcomes: bool
    info: dict[str, Any] = field(default_factory=dict)
    _cube: tuple[tuple[int, ...], VerdictCube] | None = field(default=None, init=False,
                                                               repr=False, compare=False)
    # each course's last session (the row a reviewer opens) as run_audit found it, with
    # what it was found for (_course_keys): a replaced table makes it stale
    _last_rows: tuple[tuple[int, ...], np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False)

    def summary(self, by: str | list[str] | None = None) -> pd.DataFrame:
        """Compliance per criterion (and per group): counts, percent, Wilson 95 % CI, status."""
        v = self.verdicts
        # the counts of every summary by clinician, clinic and month, counted once (again
        # when the verdict table or one of its columns is replaced)
        seen = _frame_key(v, (*VerdictCube.KEYS, "verdict"))
        if self._cube is None or self._cube[0] != seen:
            self._cube = (seen, VerdictCube(v))
        return summarise(v, self.protocol, by=by, cube=self._cube[1])

    def nothing_audited(self) -> str | None:
        """One sentence when no session was for the protocol's indication, else None."""
        if self.info.get("sessions_audited", len(self.sessions)) > 0:
            return None
        if len(self.excluded) == 0:
            return "there are no sessions to audit"
        found = self.excluded["indication"].astype("string").str.strip().value_counts()
        listed = ", ".join(f"{k} ({v:,})" for k, v in found.head(5).items())
        return (f"none of the {len(self.excluded):,} sessions is for "
                f"{self.protocol.indication!r}, the indication of protocol {self.protocol.id} "
                f"(the export has: {listed}); choose another protocol with --protocol")

    def flagged(self) -> pd.DataFrame:
        """Every deviation and documentation gap, with the file and row it came from."""
        return flagged_records(self)

    def indicators(self) -> pd.DataFrame:
        """Advisory lines of the sheet: monitored values without a target."""
        return indicator_table(self)

    def period(self, since: str | None = None, until: str | None = None) -> pd.DataFrame:
        """Verdicts whose session (or course end) date falls in [since, until]."""
        d = self.verdicts["date"]
        mask = pd.Series(True, index=self.verdicts.index)
        if since:
            mask &= d >= pd.Timestamp(since)
        if until:
            mask &= d <= pd.Timestamp(until)
        return self.verdicts[mask]


def _frame_key(df: pd.DataFrame, columns: tuple[str, ...]) -> tuple[int, ...]:
    """What identifies a table and the data of some of its columns: a result remembered
    for one key is stale once the table or one of those columns is replaced."""
    return (id(df), len(df), *(_buffer(df[k]) for k in columns if k in df))


def _buffer(col: pd.Series) -> int:
    """Address of a column's data (codes for a categorical, arrow buffers for text), to
    notice a replaced column."""
    strings = arrow_strings(col)
    if strings is not None:
        return hash(tuple(b.address for chunk in strings.chunks for b in chunk.buffers()
                          if b is not None))
    values = col.cat.codes.to_numpy() if isinstance(col.dtype, pd.CategoricalDtype) else \
        col.array.asi8 if isinstance(col.dtype, pd.PeriodDtype) else col.to_numpy()
    return int(values.__array_interface__["data"][0])


def run_audit(sessions: pd.DataFrame, protocol: Protocol, outcomes: pd.DataFrame | None = None,
              as_of: pd.Timestamp | None = None) -> Audit:
    """Group sessions into courses and give every criterion its verdicts."""
    in_scope = _in_scope(sessions["indication"], protocol.indication)
    excluded = sessions.iloc[:0] if in_scope.all() else sessions[~in_scope]
    if as_of is None and len(sessions):
        as_of = sessions["session_date"].max()
    # sessions stay in the export's order: sorting every column into course order would
    # cost as much as the rest of the audit, and no verdict depends on it
    s, starts, order = courses_with_starts(
        sessions, None if in_scope.all() else np.flatnonzero(in_scope),
        protocol.new_course_after_days, as_of, keep_order=True)
    courses = course_table_of(s, starts, order)

    def evaluate(c: Criterion) -> tuple[Criterion, str, Evaluation]:
        if c.level == "course":
            return c, "course", evaluate_course_criterion(c, courses, outcomes)
        return c, "session", evaluate_session_criterion(c, s)

    # criteria are independent and mostly numpy and arrow work, which frees the GIL; the
    # outcome search of assessment windows is the longest job, so it starts first
    crit = protocol.criteria
    longest_first = sorted(range(len(crit)), key=lambda i: crit[i].rule != "assessment_window")
    done = dict(zip(longest_first, map_threads(evaluate, [crit[i] for i in longest_first],
                                               big=len(s) >= 50_000), strict=True))
    evaluations = [done[i] for i in range(len(crit))]
    v = _verdict_table(protocol, evaluations, {"session": (s, s["session_date"]),
                                               "course": (courses, courses["last_date"])})
    info = {"sessions_audited": len(s), "sessions_excluded": len(excluded),
            "courses": len(courses), "courses_completed": int(courses["completed"].sum()),
            "as_of": None if as_of is None else pd.Timestamp(as_of).date().isoformat()}
    audit = Audit(protocol, s, courses, v, excluded, has_outcomes=outcomes is not None,
                  info=info)
    audit._last_rows = (_course_keys(audit),
                        order[np.r_[starts[1:], len(s)] - 1] if len(s) else order)
    return audit


def _in_scope(indication: pd.Series, wanted: str) -> np.ndarray:
    """Sessions for the protocol's indication (or none recorded), compared case- and
    space-blind, each distinct spelling once (a million rows hold a handful)."""
    codes, distinct = pd.factorize(indication.astype("string"))
    match = pd.Series(distinct, dtype="string").str.strip().str.lower() == wanted.lower()
    return np.r_[match.to_numpy(dtype=bool, na_value=False), True][codes]


def _verdict_table(protocol: Protocol, evaluations: list[tuple[Criterion, str, Evaluation]],
                   units: dict[str, tuple[pd.DataFrame, pd.Series]]) -> pd.DataFrame:
    """The long verdict table: one row per criterion × unit, built from codes.

    Every column is assembled as numbers (categorical codes, period ordinals) and
    labelled once, rather than as millions of strings and Period objects; the big
    columns are concatenated in parallel (numpy copies without the GIL) and handed to
    pandas without another copy.
    """
    kinds = sorted({kind for _, kind, _ in evaluations})
    sizes = [len(ev.code) for _, _, ev in evaluations]
    at = np.r_[0, np.cumsum(sizes, dtype=np.int64)]  # each evaluation's first row
    # the labels of clinicians and clinics, the months and the reasons each evaluation
    # gives are independent: worked out on the threads
    jobs: dict[str, Any] = {
        **{col: partial(_labels, [units[k][0][col] for k in kinds])
           for col in ("operator", "clinic")},
        **{f"month:{k}": partial(lambda d: d.dt.to_period("M").array.asi8, units[k][1])
           for k in kinds},
        **{f"seen:{i}": partial(lambda ev: np.bincount(ev.why, minlength=len(ev.texts)) > 0,
                                ev) for i, (_, _, ev) in enumerate(evaluations)},
    }
    got = dict(zip(jobs, call_threads(jobs.values(), big=int(at[-1]) >= 1_000_000),
                   strict=True))
    labels = {col: got[col] for col in ("operator", "clinic")}
    months = {k: got[f"month:{k}"] for k in kinds}
    dates = {k: units[k][1].to_numpy() for k in kinds}
    # reasons: every evaluation's texts, then the categories pandas would infer from them
    seen_texts: set[str] = set()
    for i, (_, _, ev) in enumerate(evaluations):
        seen_texts.update(t for t, hit in zip(ev.texts, got[f"seen:{i}"], strict=True) if hit)
    reasons = pd.Categorical(pd.array(sorted(seen_texts), dtype="str") if seen_texts
                             else np.zeros(0, dtype=object))  # (an empty table: object)
    ids = [c.id for c in protocol.criteria]
    levels = ["session", "first_session", "course"]
    # labels as the smallest codes that hold them: fewer bytes to write 13 times over
    label_codes = {col: [c.astype(_code_type(len(labels[col][0]))) for c in labels[col][1]]
                   for col in labels}
    reason_type = _code_type(len(reasons.categories))
    reason_codes = [reasons.categories.get_indexer(pd.array(ev.texts, dtype="str"))
                    .astype(reason_type) for _, _, ev in evaluations]
    # verdict codes NA, OK, DEV, MISS are VERDICTS[3], [0], [1], [2]
    verdict_of = np.array([3, 0, 1, 2], dtype=np.int8)

    # each column is written once, evaluation by evaluation, into its place: no
    # per-evaluation copies to concatenate (fresh memory is slow to touch)
    pieces: dict[str, tuple[Any, Any]] = {
        "criterion": (_code_type(len(ids)), lambda i, c, kind, ev: ids.index(c.id)),
        "level": (np.int8, lambda i, c, kind, ev: levels.index(c.level)),
        "unit": (np.int32 if max(sizes, default=0) < 2**31 else np.int64,
                 lambda i, c, kind, ev: np.arange(sizes[i])),
        "reason": (reason_type, lambda i, c, kind, ev: reason_codes[i][ev.why]),
        "observed": (np.float64, lambda i, c, kind, ev: ev.observed),
        **{col: (_code_type(len(labels[col][0])),
                 lambda i, c, kind, ev, col=col: label_codes[col][kinds.index(kind)])
           for col in ("operator", "clinic")},
        "date": (np.result_type(*dates.values()) if dates else np.dtype("datetime64[s]"),
                 lambda i, c, kind, ev: dates[kind]),
        "month": (np.int64, lambda i, c, kind, ev: months[kind]),
        "verdict": (np.int8, lambda i, c, kind, ev: verdict_of[ev.code]),
    }

    def write(name: str) -> np.ndarray:
        dtype, piece = pieces[name]
        out = np.empty(int(at[-1]), dtype=dtype)
        for i, (c, kind, ev) in enumerate(evaluations):
            out[at[i]:at[i + 1]] = piece(i, c, kind, ev)
        return out

    col = dict(zip(pieces, map_threads(write, pieces, big=int(at[-1]) >= 1_000_000),
                   strict=True))

    def cat(codes: np.ndarray, dtype: Any) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)

    return pd.DataFrame({
        "criterion": cat(col["criterion"], pd.CategoricalDtype(ids)),
        "level": cat(col["level"], pd.CategoricalDtype(levels)),
        "unit": col["unit"],
        "reason": cat(col["reason"], reasons.dtype),
        "observed": col["observed"],
        **{k: cat(col[k], pd.CategoricalDtype(labels[k][0])) for k in ("operator", "clinic")},
        "date": col["date"],
        # (an empty table has object months, as concatenated Period objects would)
        "month": pd.arrays.PeriodArray(col["month"], dtype=pd.PeriodDtype("M"))
        if len(col["month"]) else np.zeros(0, dtype=object),
        "verdict": cat(col["verdict"], pd.CategoricalDtype(VERDICTS)),
    }, copy=False)


def _code_type(categories: int) -> type[np.signedinteger]:
    """The integer type pandas gives the codes of a categorical with this many categories."""
    return np.int8 if categories < 2**7 else np.int16 if categories < 2**15 else np.int32


def _labels(columns: list[pd.Series]) -> tuple[pd.Index, list[np.ndarray]]:
    """Shared categories of some text columns (missing as NOT_RECORDED) and their codes.

    The categories are those `astype("category")` gives the values put together.
    """
    found = []
    for col in columns:
        codes, distinct = pd.factorize(col.astype("string").fillna(NOT_RECORDED))
        found.append((codes, distinct))
    cats = pd.Series(pd.concat([pd.Series(d, dtype="string") for _, d in found])
                     if found else pd.Series([], dtype="string")).astype("category").cat.categories
    return cats, [cats.get_indexer(d)[codes] for codes, d in found]


def status_of(compliant: np.ndarray, eligible: np.ndarray, ci_low: np.ndarray,
              ci_high: np.ndarray, target: np.ndarray,
              missing: np.ndarray | None = None) -> np.ndarray:
    """Target met, not met, or inconclusive when the interval spans the target.

    A 100 % target (safety items) is met only when every eligible record complies:
    its interval never reaches 100 %, so the interval rule would never say "met".
    "not recorded" when no eligible record documents the value at all (typically a
    column the export does not have): a documentation question, not a practice one.
    """
    full = target >= 100
    met = np.where(full, compliant == eligible, ci_low * 100 >= target)
    not_met = np.where(full, compliant < eligible, ci_high * 100 < target)
    unrecorded = (eligible > 0) & (missing == eligible) if missing is not None \
        else np.zeros(len(eligible), dtype=bool)
    return np.select([eligible == 0, unrecorded, met, not_met],
                     ["no data", "not recorded", "met", "not met"],
                     "inconclusive").astype(object)


def summarise(verdicts: pd.DataFrame, protocol: Protocol,
              by: str | list[str] | None = None, cube: VerdictCube | None = None
              ) -> pd.DataFrame:
    """Per criterion (× group): eligible, compliant, deviations, missing, percent, CI, status.

    `cube` (the audit's VerdictCube of these verdicts) saves counting them again.
    """
    keys = ["criterion"] + ([by] if isinstance(by, str) else list(by or []))
    if cube is None or not cube.covers(keys):
        cube = VerdictCube(verdicts, keys)
    counts = cube.counts(keys)
    if counts is None:  # keys of another kind: let pandas group them
        counts = (verdicts.groupby(keys, observed=True)["verdict"].value_counts()
                  .unstack("verdict", fill_value=0))
        for v in VERDICTS:
            if v not in counts.columns:
                counts[v] = 0
        counts = counts.reset_index()
    counts = counts[counts[["compliant", "deviation", "not documented"]].sum(axis=1) > 0] \
        if by else counts
    out = pd.DataFrame({k: counts[k] for k in keys})
    out["criterion"] = out["criterion"].astype(str)
    titles = {c.id: c.title for c in protocol.criteria}
    targets = {c.id: c.target for c in protocol.criteria}
    out.insert(1, "title", out["criterion"].map(titles))
    out["eligible"] = (counts["compliant"] + counts["deviation"]
                       + counts["not documented"]).to_numpy()
    out["compliant"] = counts["compliant"].to_numpy()
    out["deviations"] = counts["deviation"].to_numpy()
    out["missing"] = counts["not documented"].to_numpy()
    out["not_applicable"] = counts["not applicable"].to_numpy()
    e = out["eligible"].to_numpy(dtype="float64")
    k = out["compliant"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        out["percent"] = np.where(e > 0, 100 * k / np.where(e > 0, e, 1), np.nan)
    lo, hi = wilson_ci(k, e)
    out["ci_low"] = np.asarray(lo, dtype="float64") * 100
    out["ci_high"] = np.asarray(hi, dtype="float64") * 100
    out["target"] = out["criterion"].map(targets).astype("float64")
    out["status"] = status_of(k, e, np.nan_to_num(out["ci_low"].to_numpy() / 100),
                              np.nan_to_num(out["ci_high"].to_numpy() / 100),
                              out["target"].to_numpy(), out["missing"].to_numpy())
    return out.reset_index(drop=True)


class VerdictCube:
    """Verdict counts by every combination of some keys, from one pass over the verdicts.

    Keys are categorical (categories in order) or monthly periods; each has one more
    slot for a missing key. `counts(keys)` gives for any of them what
    `groupby(keys, observed=True)["verdict"].value_counts().unstack().reset_index()`
    gives: groups in the same order (categories, then months), missing keys dropped.
    """

    KEYS = ("criterion", "operator", "clinic", "month")

    def __init__(self, verdicts: pd.DataFrame, keys: list[str] | tuple[str, ...] = KEYS,
                 max_cells: int = 20_000_000) -> None:
        self.keys: list[str] = []
        self.sizes: list[int] = []
        self.labels: list[Any] = []
        self.table: np.ndarray | None = None
        verdict = verdicts.get("verdict")
        if verdict is None or not (isinstance(verdict.dtype, pd.CategoricalDtype)
                                   and list(verdict.cat.categories) == VERDICTS):
            return
        codes = []
        for k in dict.fromkeys(keys):
            if k not in verdicts:
                continue
            found = self._codes(verdicts[k])
            if found is None:
                continue
            c, n, label = found
            self.keys.append(k)
            self.sizes.append(n)
            self.labels.append(label)
            codes.append(c)
        cells = int(np.prod([n + 1 for n in self.sizes], dtype=float)) * 4
        if cells > max_cells:
            self.keys, self.sizes, self.labels = [], [], []
            return
        v = verdict.cat.codes.to_numpy()
        step = 1 << 18  # in pieces that stay in cache

        def count(i: int) -> np.ndarray:
            g = np.zeros(min(step, len(v) - i), dtype=np.int64)
            for c, n in zip(codes, self.sizes, strict=True):
                part = c(i, i + step)  # -1 for a missing key: it gets slot n
                g *= n + 1
                g += part
                g[part < 0] += n + 1
            g *= 4
            g += v[i:i + step]
            return np.bincount(g, minlength=cells)

        # pieces on one thread per core (numpy frees the GIL), when the counts of every
        # piece fit in memory at once (a small cube: clinicians, clinics and months)
        pieces = range(0, len(v), step)
        table = np.zeros(cells, dtype=np.int64)
        if len(v) >= 4 * step and cells * len(pieces) <= 50_000_000:
            for block in map_threads(count, pieces):
                table += block
        else:
            for i in pieces:
                table += count(i)
        self.table = table.reshape([n + 1 for n in self.sizes] + [4])

    @staticmethod
    def _codes(col: pd.Series) -> tuple[Any, int, Any] | None:
        """(codes of rows i:j, number of values, labels of codes) of a key column."""
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy()
            return (lambda i, j: codes[i:j], len(col.cat.categories),
                    lambda c, dt=col.dtype: pd.Categorical.from_codes(c, dtype=dt))
        if isinstance(col.dtype, pd.PeriodDtype):
            ordinal = col.array.asi8
            nat = np.iinfo(np.int64).min  # NaT: the smallest ordinal
            high = int(ordinal.max(initial=nat))
            low = int(np.min(ordinal, where=ordinal != nat, initial=np.iinfo(np.int64).max))
            if high == nat:
                low, high = 0, -1
            if high - low > 100_000:
                return None

            def codes_of(i: int, j: int) -> np.ndarray:
                part = ordinal[i:j]
                return np.where(part == nat, -1, part - low)

            return (codes_of, high - low + 1,
                    lambda c, dt=col.dtype, low=low: pd.arrays.PeriodArray(
                        np.asarray(c, dtype=np.int64) + low, dtype=dt))
        return None

    def covers(self, keys: list[str]) -> bool:
        return self.table is not None and all(k in self.keys for k in keys)

    def counts(self, keys: list[str]) -> pd.DataFrame | None:
        """The counts per group of `keys` (None when some key is not in the cube)."""
        if not self.covers(keys) or len(set(keys)) != len(keys):
            return None
        assert self.table is not None
        dims = [self.keys.index(k) for k in keys]
        rest = tuple(i for i in range(len(self.keys)) if i not in dims)
        t = self.table.sum(axis=rest) if rest else self.table
        # axes now in cube order of `dims`; put them in the order of keys, drop missing
        kept = sorted(dims)
        t = np.moveaxis(t, list(range(len(kept))), [kept.index(d) for d in kept])
        t = t.transpose([kept.index(d) for d in dims] + [len(dims)])
        t = t[tuple(slice(0, self.sizes[d]) for d in dims)]
        sizes = [self.sizes[d] for d in dims]
        flat = t.reshape(-1, 4)
        present = np.flatnonzero(flat.sum(axis=1) > 0)
        out: dict[str, Any] = {}
        where = np.unravel_index(present, sizes) if sizes else ()
        for k, d, c in zip(keys, dims, where, strict=True):
            out[k] = self.labels[d](c)
        for i, v in enumerate(VERDICTS):
            out[v] = flat[present, i]
        return pd.DataFrame(out)


RECORD_COLUMNS = ["session_id", "course_id", "patient_id", "date", "operator", "clinic",
                  "criterion", "title", "verdict", "reason", "observed", "source_file",
                  "source_row"]


def flagged_records(audit: Audit) -> pd.DataFrame:
    """Deviations and documentation gaps with the session, its source file and row."""
    v = audit.verdicts
    flagged = v["verdict"].cat.categories.get_indexer(["deviation", "not documented"])
    return _records(audit, v, np.flatnonzero(np.isin(v["verdict"].cat.codes.to_numpy(),
                                                     flagged)))


def verdict_records(audit: Audit, verdicts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Verdicts with the session (or, for a course, its last session) they are about.

    Each row names the source file and row, so a reviewer can open the record.
    """
    return _records(audit, audit.verdicts if verdicts is None else verdicts, None)


def _records(audit: Audit, v: pd.DataFrame, pick: np.ndarray | None) -> pd.DataFrame:
    """The records of verdict rows `pick` (all when None), sorted by date and session_id.

    Built from positions: the order is worked out first, then each column is gathered
    once (text columns by arrow), never as millions of Python strings.
    """
    s, c = audit.sessions, audit.courses
    titles = {cr.id: cr.title for cr in audit.protocol.criteria}

    def sel(values: np.ndarray) -> np.ndarray:
        return values if pick is None else values[pick]

    level = v["level"]
    is_course = sel((level.cat.codes == level.cat.categories.get_loc("course")).to_numpy()
                    if isinstance(level.dtype, pd.CategoricalDtype) and "course" in
                    level.cat.categories else (level == "course").to_numpy())
    u = sel(v["unit"].to_numpy())
    row = u.copy()
    # a course's record is its last session: the row a reviewer opens
    kept = audit._last_rows
    if is_course.any() and kept is not None and kept[0] == _course_keys(audit):
        row[is_course] = kept[1][u[is_course]]  # in the course table's order
    elif is_course.any():  # (an Audit not made by run_audit, or with a table replaced)
        codes, course_ids = pd.factorize(s["course_id"])
        last_of = _latest_rows(codes, s["session_date"].to_numpy(), len(course_ids))
        listed = pd.Series(course_ids, dtype=c["course_id"].dtype)
        if len(listed) == len(c) and listed.equals(c["course_id"].reset_index(drop=True)):
            where = u[is_course]  # courses listed in order of first appearance (course_table)
        else:
            where = pd.Index(course_ids).get_indexer(c["course_id"].to_numpy()[u[is_course]])
        row[is_course] = last_of[where]
    date = s["session_date"].to_numpy()[row]
    if is_course.any():
        date[is_course] = c["last_date"].to_numpy()[u[is_course]]
    order = _date_then_rank(date, sort_rank(s["session_id"])[row])
    row, date = row[order], date[order]
    at = order if pick is None else pick[order]
    crit = v["criterion"]
    jobs: dict[str, Any] = {k: (s[k], row, None) for k in ("session_id", "course_id",
                                                           "patient_id", "source_file")
                            if k in s}
    jobs.update({k: (v[k], at, None) for k in ("operator", "clinic", "verdict", "reason")})
    jobs.update(criterion=(crit, at, None), title=(crit, at, titles))
    got = dict(zip(jobs, map_threads(lambda k: _gather(*jobs[k]), jobs), strict=True))
    got.update(date=date, observed=v["observed"].to_numpy()[at],
               source_row=s["source_row"].to_numpy()[row] if "source_row" in s else None)
    return pd.DataFrame({k: got.get(k) for k in RECORD_COLUMNS}, columns=RECORD_COLUMNS)


def _date_then_rank(date: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """np.lexsort((rank, date)) (NaT last): one stable argsort of a combined key if it fits."""
    if date.dtype.kind == "M" and len(date) and not np.isnat(date).any():
        d = date.view(np.int64)
        low = int(d.min())
        width = int(rank.max(initial=0)) + 1
        if (int(d.max()) - low + 1) * width < 2**62 and (rank >= 0).all():
            return np.argsort((d - low) * width + rank, kind="stable")
    return np.lexsort((rank, date))


def _course_keys(audit: Audit) -> tuple[int, ...]:
    """What identifies the sessions and courses an Audit holds (sizes and the data of
    their course ids): another table or column gives other keys."""
    return (*_frame_key(audit.sessions, ("course_id",)),
            *_frame_key(audit.courses, ("course_id",)))


def _latest_rows(codes: np.ndarray, dates: np.ndarray, groups: int) -> np.ndarray:
    """Row of each group's latest date (-1 for none): the last of its rows sorted by date,
    missing dates last, then by row, as a course's rows run in course order."""
    key = np.zeros(len(codes), dtype=np.int64)
    if dates.dtype.kind == "M":
        key = np.where(np.isnat(dates), np.iinfo(np.int64).max, dates.view(np.int64))
    by = np.lexsort((np.arange(len(codes)), key, codes))
    ends = by[np.r_[codes[by][1:] != codes[by][:-1], True]] if len(by) else by
    ends = ends[codes[ends] >= 0]
    last_of = np.full(groups, -1, dtype=np.int64)
    last_of[codes[ends]] = ends
    return last_of


def _gather(col: pd.Series, at: np.ndarray, rename: dict[str, str] | None = None) -> Any:
    """col's values at positions `at`, as the DataFrame constructor would type them.

    Text (string columns, categoricals of text) is gathered by arrow into a str column;
    anything else goes the ordinary way. `rename` maps categories first (titles).
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        labels = [rename.get(k) for k in cats] if rename is not None else list(cats)
        codes = col.cat.codes.to_numpy()[at]
        if len(codes) and all(isinstance(x, str) for x in labels):
            text = pa.array(labels, type=pa.large_string()).take(pa.array(codes,
                                                                          mask=codes < 0))
            if text.null_count < len(text):
                return pd.Series(text, dtype="str")
        return (col.map(rename) if rename is not None else col).to_numpy()[at]
    strings = arrow_strings(col)
    if strings is not None and len(at):
        text = strings.take(pa.array(at))
        if text.null_count < len(text):
            return pd.Series(text, dtype="str")
    return col.to_numpy()[at]


def indicator_table(audit: Audit) -> pd.DataFrame:
    """Monitored indicators overall: documented n and the indicator's statistic."""
    rows = []
    s = audit.sessions
    for ind in audit.protocol.indicators:
        col = s[ind.field]
        n = int(col.notna().sum())
        row: dict[str, Any] = {"id": ind.id, "title": ind.title, "sheet": ind.sheet,
                               "documented": n, "not_documented": int(col.isna().sum())}
        if ind.statistic == "share_true":
            k = int(col.astype("boolean").sum())
            lo, hi = wilson_ci(k, n)
            row.update(statistic="percent yes", value=100 * k / n if n else np.nan,
                       ci_low=100 * lo, ci_high=100 * hi)
        else:
            x = col.astype("Float64").dropna().astype("float64")
            row.update(statistic=ind.statistic,
                       value=float(x.median() if ind.statistic == "median" else x.mean())
                       if n else np.nan,
                       ci_low=float(x.quantile(0.25)) if n else np.nan,
                       ci_high=float(x.quantile(0.75)) if n else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def compare(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Re-audit: two compliance summaries side by side with the Newcombe 95 % CI of the change.

    `change` says "improved" or "worse" only when the interval excludes zero.
    """
    a = before.set_index("criterion")
    b = after.set_index("criterion")
    ids = [i for i in b.index if i in a.index]
    a, b = a.loc[ids], b.loc[ids]
    lo, hi = newcombe_diff_ci(b["compliant"].to_numpy(), b["eligible"].to_numpy(),
                              a["compliant"].to_numpy(), a["eligible"].to_numpy())
    out = pd.DataFrame({
        "criterion": ids, "title": b["title"].to_numpy(),
        "before_eligible": a["eligible"].to_numpy(), "before_percent": a["percent"].to_numpy(),
        "after_eligible": b["eligible"].to_numpy(), "after_percent": b["percent"].to_numpy(),
        "difference": (b["percent"] - a["percent"]).to_numpy(),
        "diff_ci_low": np.asarray(lo, dtype="float64") * 100,
        "diff_ci_high": np.asarray(hi, dtype="float64") * 100,
        "target": b["target"].to_numpy(),
    })
    out["change"] = np.select([out["diff_ci_low"] > 0, out["diff_ci_high"] < 0],
                              ["improved", "worse"], "no clear change")
    out.loc[out["diff_ci_low"].isna(), "change"] = "no data"
    return out


HOW_TO_READ = (
    "Compliant = the record follows the protocol line; deviation = it does not; not "
    "documented = a value the rule needs is missing (counted against compliance, shown "
    "apart). Percent with a Wilson 95 % interval. Status: met when the whole interval is at "
    "or above the target, not met when it is below, inconclusive when it spans the target; "
    "a 100 % target is met only with no miss.")


def about_rows(audit: Audit, files: pd.DataFrame | None = None) -> list[tuple[str, Any]]:
    """What data and protocol produced an audit: the first sheet of its workbook."""
    from outcomes import __version__

    p = audit.protocol
    rows: list[tuple[str, Any]] = [
        ("What this is", f"Protocol compliance audit: {p.title}"),
        ("Protocol", f"{p.id} version {p.version} ({p.source})"),
        ("Data run to", audit.info.get("as_of")),
        ("Sessions audited", audit.info.get("sessions_audited")),
        ("Sessions not audited", (f"{audit.info.get('sessions_excluded')} (indication other "
                                  f"than {p.indication})")),
        ("Courses", (f"{audit.info.get('courses')} ({audit.info.get('courses_completed')} "
                     "completed)")),
        ("Outcome data", ("yes" if audit.has_outcomes else
                          "none given: final_assessment is not evaluated")),
        ("Software", f"outcomes {__version__}"),
        ("Generated", pd.Timestamp.now().strftime("%Y-%m-%d %H:%M")),
        ("How to read", HOW_TO_READ),
    ]
    if files is not None:
        for f in files.itertuples():
            rows.append((f"Input: {f.table}", (f"{f.file}: {f.rows_read} rows read, "
                                               f"{f.rows_loaded} loaded, {f.rows_rejected} "
                                               f"rejected; SHA-256 {f.sha256}")))
    return rows


def write_audit(audit: Audit, out_dir: str | Path, files: pd.DataFrame | None = None,
                comparison: pd.DataFrame | None = None, csv: bool = True,
                rejections: pd.DataFrame | None = None) -> dict[str, Path]:
    """audit.xlsx in out_dir, and (with csv) compliance.csv, verdicts.csv, flagged_sessions.csv.

    The full verdict table goes to CSV only: it can outgrow what Excel opens.
    """
    from outcomes.files import write_atomic
    from outcomes.workbook import write_workbook

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = audit.summary()
    flagged = audit.flagged()
    paths: dict[str, Path] = {}
    if csv:
        paths["compliance"] = write_atomic(out / "compliance.csv",
                                           lambda t: summary.to_csv(t, index=False))
        paths["verdicts"] = write_atomic(out / "verdicts.csv",
                                         lambda t: verdict_records(audit).to_csv(t, index=False))
        paths["flagged_sessions"] = write_atomic(out / "flagged_sessions.csv",
                                                 lambda t: flagged.to_csv(t, index=False))
        if rejections is not None:
            paths["rejected_rows"] = write_atomic(out / "rejected_rows.csv",
                                                  lambda t: rejections.to_csv(t, index=False))
    sheets = {"Compliance": summary, "By clinician": audit.summary("operator"),
              "By clinic": audit.summary("clinic"),
              "By month": audit.summary("month").assign(month=lambda d: d["month"].astype(str)),
              "Flagged sessions": flagged, "Indicators": audit.indicators(),
              **({"Rejected rows": rejections} if rejections is not None else {}),
              "Protocol": pd.DataFrame(describe(audit.protocol))}
    if comparison is not None:
        sheets = {"Re-audit": comparison, **sheets}
    paths["workbook"] = write_workbook(out / "audit.xlsx", about_rows(audit, files), sheets)
    return paths

