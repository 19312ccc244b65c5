"""Verdict records a reviewer opens: each verdict with its session, file and row.

A course's verdict is shown on the course's last session. Records are built from
positions: the order is worked out first, then each column is gathered once (text by
arrow), never as millions of Python strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from outcomes.arrowtext import arrow_strings, sort_rank
from outcomes.parallel import map_threads

if TYPE_CHECKING:
    from outcomes.audit.evaluate import Audit

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

    Each row names the source file and row, so a reviewer can open the record; a
    session combined from several exports also names them all (`sources`).
    """
    return _records(audit, audit.verdicts if verdicts is None else verdicts, None)


#: Records per slice when every verdict is written: a million-session audit has some
#: fifteen million verdicts, and a slice at a time holds a fifteenth of their text.
RECORDS_PER_SLICE = 1_000_000


def verdict_record_slices(audit: Audit, rows: int = RECORDS_PER_SLICE
                          ) -> Iterator[pd.DataFrame]:
    """verdict_records(audit) in consecutive slices of at most `rows` records (at least
    one slice, so a CSV gets its header): the same records in the same order."""
    v = audit.verdicts
    row, date, at = _order(audit, v, None)
    for i in range(0, max(len(at), 1), rows):
        part = slice(i, i + rows)
        yield _frame(audit, v, row[part], date[part], at[part])


def _records(audit: Audit, v: pd.DataFrame, pick: np.ndarray | None) -> pd.DataFrame:
    """The records of verdict rows `pick` (all when None), sorted by date and session_id.

    Built from positions: the order is worked out first, then each column is gathered
    once (text columns by arrow), never as millions of Python strings.
    """
    return _frame(audit, v, *_order(audit, v, pick))


def _order(audit: Audit, v: pd.DataFrame, pick: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The session row, date and verdict position of each record, sorted by date and
    session_id."""
    s, c = audit.sessions, audit.courses

    def sel(values: np.ndarray) -> np.ndarray:
        return values if pick is None else values[pick]

    level = v["level"]
    is_course = sel((level.cat.codes == level.cat.categories.get_loc("course")).to_numpy()
                    if isinstance(level.dtype, pd.CategoricalDtype) and "course" in
                    level.cat.categories else (level == "course").to_numpy())
    u = sel(v["unit"].to_numpy())
    row = u.copy()
    # a course's record is its last session: the row a reviewer opens
    row[is_course] = audit.last_rows[u[is_course]]  # in the course table's order
    date = s["session_date"].to_numpy()[row]
    if is_course.any():
        date[is_course] = c["last_date"].to_numpy()[u[is_course]]
    order = _date_then_rank(date, sort_rank(s["session_id"])[row])
    row, date = row[order], date[order]
    return row, date, (order if pick is None else pick[order])


def _frame(audit: Audit, v: pd.DataFrame, row: np.ndarray, date: np.ndarray,
           at: np.ndarray) -> pd.DataFrame:
    """The records of verdict positions `at` (their session rows and dates given)."""
    s = audit.sessions
    titles = {cr.id: cr.title for cr in audit.protocol.criteria}
    crit = v["criterion"]
    jobs: dict[str, Any] = {k: (s[k], row, None) for k in ("session_id", "course_id",
                                                           "patient_id", "source_file")
                            if k in s}
    jobs.update({k: (v[k], at, None) for k in ("operator", "clinic", "verdict", "reason")})
    jobs.update(criterion=(crit, at, None), title=(crit, at, titles))
    got = dict(zip(jobs, map_threads(lambda k: _gather(*jobs[k]), jobs), strict=True))
    got.update(date=date, observed=v["observed"].to_numpy()[at],
               source_row=s["source_row"].to_numpy()[row] if "source_row" in s else None)
    columns = RECORD_COLUMNS + ["sources"] * ("sources" in s)
    if "sources" in s:  # several exports: every file and row the session came from
        got["sources"] = _gather(s["sources"], row)
    return pd.DataFrame({k: got.get(k) for k in columns}, columns=columns)


def _date_then_rank(date: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """np.lexsort((rank, date)) (NaT last): one stable argsort of a combined key if it fits."""
    if date.dtype.kind == "M" and len(date) and not np.isnat(date).any():
        d = date.view(np.int64)
        low = int(d.min())
        width = int(rank.max(initial=0)) + 1
        if (int(d.max()) - low + 1) * width < 2**62 and (rank >= 0).all():
            return np.argsort((d - low) * width + rank, kind="stable")
    return np.lexsort((rank, date))


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


