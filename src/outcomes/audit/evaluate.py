"""Run an audit: group sessions into courses and give every criterion its verdicts.

Each criterion gives every eligible session (or course) one verdict: compliant,
deviation, or not documented (a value the rule needs is missing: eligible and not
compliant, counted apart so documentation gaps are seen apart from deviations).
Sessions or courses the criterion does not apply to are `not applicable`. The rules
themselves are in `outcomes.protocol.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import numpy as np
import pandas as pd

from outcomes.audit.records import flagged_records
from outcomes.audit.summary import VerdictCube, indicator_table, summarise
from outcomes.courses import NOT_RECORDED, course_table_of, courses_with_starts
from outcomes.parallel import call_threads, map_threads
from outcomes.protocol import VERDICTS, Criterion, Evaluation, Protocol, Tables
from outcomes.protocol.rules import evaluate


@dataclass(frozen=True, eq=False)
class Audit:
    """The result of auditing sessions against a protocol: made once, never changed.

    Its tables are the audit's record; derive new tables from them, never change them
    in place (summaries are counted once per Audit and kept).
    """

    protocol: Protocol
    sessions: pd.DataFrame  # audited sessions, with course columns, in the export's order
    courses: pd.DataFrame
    verdicts: pd.DataFrame  # long: one row per criterion × session (or course)
    excluded: pd.DataFrame  # sessions for other indications, not audited
    has_outcomes: bool
    #: each course's last session (the row a reviewer opens), as positions in `sessions`
    last_rows: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def _cube(self) -> VerdictCube:
        """The verdict counts by criterion, clinician, clinic and month, counted once."""
        return VerdictCube(self.verdicts)

    def __getstate__(self) -> dict[str, Any]:
        """What is pickled: the audit without its counts (counted again when asked)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_cube", "patients")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @cached_property
    def patients(self) -> np.ndarray:
        """Each verdict's patient as a code (-1 missing): the clusters of the summaries."""
        codes, _ = pd.factorize(pd.concat([self.sessions["patient_id"],
                                           self.courses["patient_id"]],
                                          ignore_index=True).astype("string"))
        unit = self.verdicts["unit"].to_numpy().astype(np.int64)
        is_course = (self.verdicts["level"] == "course").to_numpy()
        return codes[np.where(is_course, len(self.sessions) + unit, unit)]

    @cached_property
    def _summaries(self) -> dict[Any, pd.DataFrame]:
        """Summaries made so far, by their grouping (kept with a saved study)."""
        return {}

    def summary(self, by: str | list[str] | None = None) -> pd.DataFrame:
        """Compliance per criterion (and per group): counts, percent, Wilson 95 % CI, the
        design effect of patients as clusters and the clustered interval, status.

        Each grouping is counted once per Audit (its verdicts never change); callers get
        a copy."""
        key = by if by is None or isinstance(by, str) else tuple(by)
        if key not in self._summaries:
            self._summaries[key] = summarise(self.verdicts, self.protocol, by=by,
                                             cube=self._cube, patients=self.patients)
        return self._summaries[key].copy()

    def summary_of(self, verdicts: pd.DataFrame, by: str | list[str] | None = None
                   ) -> pd.DataFrame:
        """The summary of some of this audit's verdict rows (a period, say), clustered
        by patient as `summary` is."""
        return summarise(verdicts, self.protocol, by=by,
                         patients=self.patients[verdicts.index.to_numpy()])

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




def run_audit(sessions: pd.DataFrame, protocol: Protocol, outcomes: pd.DataFrame | None = None,
              as_of: pd.Timestamp | None = None) -> Audit:
    """Group sessions into courses and give every criterion its verdicts."""
    in_scope = _in_scope(sessions["indication"], protocol.indication)
    excluded = sessions.iloc[:0] if in_scope.all() else sessions[~in_scope]
    given = as_of
    if as_of is None and len(sessions):
        as_of = sessions["session_date"].max()
    # sessions stay in the export's order: sorting every column into course order would
    # cost as much as the rest of the audit, and no verdict depends on it
    s, starts, order = courses_with_starts(
        sessions, None if in_scope.all() else np.flatnonzero(in_scope),
        protocol.new_course_after_days, as_of, keep_order=True)
    courses = course_table_of(s, starts, order)

    as_of = None if as_of is None else pd.Timestamp(as_of)
    # a date given is where the data end; else the latest session or assessment
    data_end = pd.Timestamp(given) if given is not None else _data_end(as_of, outcomes)
    tables = Tables(s, courses, outcomes, as_of, data_end=data_end)

    def judge(c: Criterion) -> tuple[Criterion, str, Evaluation]:
        return c, c.unit, evaluate(c.kind, c.params, c.level, c.applies_when, tables)

    # criteria are independent and mostly numpy and arrow work, which frees the GIL; the
    # course criteria (the search of assessment windows) take longest, so they start first
    crit = protocol.criteria
    longest_first = sorted(range(len(crit)), key=lambda i: crit[i].unit != "course")
    done = dict(zip(longest_first, map_threads(judge, [crit[i] for i in longest_first],
                                               big=len(s) >= 50_000), strict=True))
    evaluations = [done[i] for i in range(len(crit))]
    v = _verdict_table(protocol, evaluations, {"session": (s, s["session_date"]),
                                               "course": (courses, courses["last_date"])})
    info = {"sessions_audited": len(s), "sessions_excluded": len(excluded),
            "data_end": None if tables.data_end is None else tables.data_end.date().isoformat(),
            "courses": len(courses), "courses_completed": int(courses["completed"].sum()),
            "as_of": None if as_of is None else pd.Timestamp(as_of).date().isoformat()}
    last_rows = order[np.r_[starts[1:], len(s)] - 1] if len(s) else order
    return Audit(protocol, s, courses, v, excluded, has_outcomes=outcomes is not None,
                 last_rows=last_rows, info=info)


def _data_end(as_of: pd.Timestamp | None, outcomes: pd.DataFrame | None) -> pd.Timestamp | None:
    """The data's last date: the latest session or assessment."""
    dates = [as_of] if as_of is not None else []
    if outcomes is not None and len(outcomes) and outcomes["assessment_date"].notna().any():
        dates.append(pd.Timestamp(outcomes["assessment_date"].max()))
    return max(dates) if dates else None


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


