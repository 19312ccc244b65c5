"""The outcomes part of `audit --json`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from outcomes.analysis.final import final_summary
from outcomes.analysis.recurrence import recurrence
from outcomes.analysis.windows import attach_windows

# =============================================================================================
# 8. the JSON object


def _plain(v: Any) -> Any:
    """A Python scalar for JSON: numpy → int/float, NaN/NA → None."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else float(v)
    return v


def outcomes_json(audit: Any, outcomes: pd.DataFrame | None) -> dict[str, Any]:
    """The `outcomes` object of `outcomes audit --json` (plain Python types, None for NaN).

    ``final``: one entry per instrument and rater at the final (3–6 month) assessment
    with instrument, rater, n, median, q1, q3, improved (a fraction; None where the
    instrument defines no threshold), improved_ci_low, improved_ci_high.
    ``recurrence``: courses, events, median_days (None when not reached). Same
    functions as the notebook, so the numbers match it.
    """
    windows = attach_windows(audit, outcomes)
    final = final_summary(windows)
    keys = ["instrument", "rater", "n", "median", "q1", "q3", "improved", "improved_ci_low",
            "improved_ci_high"]
    entries = [{k: _plain(r[k]) for k in keys} for r in final[keys].to_dict("records")]
    _, rec = recurrence(audit, windows)
    r0 = rec.iloc[0]
    return {"final": entries,
            "recurrence": {"courses": int(r0["courses"]), "events": int(r0["events"]),
                           "median_days": _plain(r0["median_days"])}}
