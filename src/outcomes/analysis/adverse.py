"""Adverse events per session and per course, by type, clinician and energy band."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from outcomes.analysis.common import NO_EVENT
from outcomes.stats import (
    wilson_ci,
)

# =============================================================================================
# 6. adverse events


def energy_bands(audit: Any, energy: str = "energy_start_mj",
                 edges: Sequence[float] | None = None) -> pd.Series:
    """Each session's energy band; the default edges are the protocol's range on that
    field (its first range criterion on it), else the quartiles of the documented values.

    Labels read "below 20 mJ", "20–30 mJ (protocol)", "above 30 mJ", "not documented".
    """
    s = audit.sessions
    e = s[energy].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    lo, hi = audit.protocol.range_of(energy) or (None, None)
    if edges is None and (lo is None or hi is None):
        x = e[~np.isnan(e)]  # no protocol band: the middle half of the sessions
        edges = sorted(set(np.quantile(x, [0.25, 0.75]).round(1))) if len(x) else [0.0]
    if edges is None:
        labels = [f"below {lo:g} mJ", f"{lo:g}–{hi:g} mJ (protocol)", f"above {hi:g} mJ"]
        code = np.where(e < lo, 0, np.where(e <= hi, 1, 2))
    else:  # bands [a, b), [b, c), …, the last one closed: [y, z]
        ed = sorted(float(x) for x in edges)
        labels = ([f"below {ed[0]:g} mJ"]
                  + [f"{a:g}–{b:g} mJ" for a, b in itertools.pairwise(ed)]
                  + [f"above {ed[-1]:g} mJ"])
        code = np.searchsorted(ed, np.nan_to_num(e), side="right")
        code = np.where(e == ed[-1], len(ed) - 1, code)
    cats = [*labels, "not documented"]
    code = np.where(np.isnan(e), len(labels), code)
    return pd.Series(pd.Categorical.from_codes(code.astype(int), cats), index=s.index,
                     name="energy_band")


def adverse_events(audit: Any, by: str | None = None, level: float = 0.95,
                   energy: str = "energy_start_mj") -> pd.DataFrame:
    """Adverse-event rates per session and per course with Wilson intervals.

    A session had an adverse event when its `adverse_event` field holds anything but
    "none" (or an equivalent, NO_EVENT); an empty field is "not documented" and leaves
    the denominator (counted in ``not_documented``). A course had one when any of its
    documented sessions did. `by`: None (all), "type" (each event type against all
    documented sessions), "energy_band" (protocol start-energy bands, see
    energy_bands), or a session column such as "operator" or "clinic". Per group, a
    course counts when it has a session in the group, with an event when one of those
    sessions had one.
    """
    s = audit.sessions
    raw = s["adverse_event"].astype("string").str.strip()
    documented = (raw.notna() & (raw != "")).to_numpy(dtype=bool)
    low = raw.str.lower()
    event = documented & ~low.isin(list(NO_EVENT)).to_numpy(dtype=bool, na_value=False)
    course = s["course_id"].astype("string").to_numpy(dtype=object)
    if by == "type":
        types = sorted(raw[event].unique())
        rows = []
        base_courses = pd.Series(documented).groupby(course).any()
        n_courses = int(base_courses.sum())
        n_sess = int(documented.sum())
        for t in types:
            ev = event & (raw == t).to_numpy(dtype=bool, na_value=False)
            ce = pd.Series(ev).groupby(course).any()
            rows.append(_ae_row(t, n_sess, int(ev.sum()), n_courses, int(ce.sum()),
                                int((~documented).sum()), level))
        return pd.DataFrame(rows, columns=_AE_COLUMNS)
    if by is None:
        key = pd.Series("all sessions", index=s.index)
    elif by == "energy_band":
        key = energy_bands(audit, energy)
    else:
        key = s[by].astype("string").fillna("(not recorded)")
    frame = pd.DataFrame({"g": key.array, "c": course, "doc": documented, "ev": event})
    sess = frame.groupby("g", observed=True, sort=True).agg(
        sessions=("doc", "sum"), events=("ev", "sum"), rows=("doc", "size"))
    cf = frame[frame["doc"]].groupby(["g", "c"], observed=True)["ev"].any().reset_index()
    cc = cf.groupby("g", observed=True)["ev"].agg(["size", "sum"])
    rows = []
    for g, r in sess.iterrows():
        nc = int(cc.loc[g, "size"]) if g in cc.index else 0
        kc = int(cc.loc[g, "sum"]) if g in cc.index else 0
        rows.append(_ae_row(str(g), int(r["sessions"]), int(r["events"]), nc, kc,
                            int(r["rows"] - r["sessions"]), level))
    return pd.DataFrame(rows, columns=_AE_COLUMNS)


_AE_COLUMNS = ["group", "sessions", "events", "rate", "ci_low", "ci_high", "courses",
               "courses_with_event", "course_rate", "course_ci_low", "course_ci_high",
               "not_documented"]


def _ae_row(group: str, n: int, k: int, nc: int, kc: int, missing: int,
            level: float) -> dict[str, Any]:
    lo, hi = wilson_ci(k, n, level)
    clo, chi = wilson_ci(kc, nc, level)
    return {"group": group, "sessions": n, "events": k, "rate": k / n if n else math.nan,
            "ci_low": lo, "ci_high": hi, "courses": nc, "courses_with_event": kc,
            "course_rate": kc / nc if nc else math.nan, "course_ci_low": clo,
            "course_ci_high": chi, "not_documented": missing}
