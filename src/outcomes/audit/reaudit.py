"""Re-audit against an earlier export that the new one may contain.

Exports overlap: this quarter's export usually repeats last quarter's sessions. A
session present in both is one session, so "after" is what the earlier export did not
have: the new sessions, and the courses whose last session is new. Counting the
overlap twice would dilute the change and make its interval wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from outcomes.audit.summary import compare

if TYPE_CHECKING:
    from outcomes.audit.evaluate import Audit


def new_verdicts(new: Audit, old: Audit) -> pd.DataFrame:
    """The verdict rows of `new` about sessions the earlier audit did not have (for a
    course: its last session)."""
    known = set(old.sessions["session_id"].astype("string").dropna())
    is_new = ~new.sessions["session_id"].astype("string").isin(known).to_numpy(dtype=bool)
    v = new.verdicts
    unit = v["unit"].to_numpy()
    course = (v["level"] == "course").to_numpy()
    rows = np.where(course, new.last_rows[np.minimum(unit, max(len(new.last_rows) - 1, 0))]
                    if len(new.last_rows) else 0, unit)
    return v[is_new[rows] if len(is_new) else np.zeros(len(v), dtype=bool)]


def _span(dates: pd.Series) -> str:
    d = pd.to_datetime(dates).dropna()
    return "—" if d.empty else f"{d.min():%Y-%m-%d} to {d.max():%Y-%m-%d}"


def compare_exports(new: Audit, old: Audit, new_name: str,
                    old_name: str) -> tuple[pd.DataFrame, dict[str, str | int]]:
    """The re-audit table (as `compare`) of the earlier export against what is new in the
    later one, and what each side is: file, period and number of sessions."""
    after = new_verdicts(new, old)
    sessions_after = int(after.loc[after["level"] != "course", "unit"].nunique())
    table = compare(old.summary(), new.summary_of(after))
    about = {"before_file": old_name, "before_period": _span(old.sessions["session_date"]),
             "before_sessions": len(old.sessions), "after_file": new_name,
             "after_period": _span(after["date"]), "after_sessions": sessions_after,
             "shared_sessions": len(new.sessions) - int(
                 (~new.sessions["session_id"].astype("string")
                  .isin(set(old.sessions["session_id"].astype("string").dropna()))).sum())}
    return table, about
