"""Small-cell suppression of aggregate tables, and the compliance table it protects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from outcomes.courses import NOT_RECORDED

# ---------------------------------------------------------------------------------------------
# small-cell suppression
from outcomes.export.deidentify import (
    ALL_CLINICIANS,
    DEFAULT_THRESHOLD,
    SECONDARY_MARK,
    _treat,
    pseudonymise,
)


def suppress_small_cells(table: pd.DataFrame, counts: Sequence[str],
                         threshold: int = DEFAULT_THRESHOLD,
                         row_sums: Sequence[tuple[str, Sequence[str]]] = (),
                         totals: tuple[str, str, Sequence[str]] | None = None,
                         derived: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Counts 1 … threshold−1 shown as `<threshold`, and every cell that would give them away.

    `row_sums` are equations inside a row (`("eligible", ("compliant", "deviations",
    "missing"))`); `totals = (column, label, keys)` says the rows whose `column` is `label`
    are the sums of the other rows with the same `keys`. An equation with exactly one hidden
    cell would give it away, so another cell of it is hidden too (marked `suppressed`):
    preferably a part rather than the total, and one of at least 2 × threshold − 2 so the
    sum does not narrow the small cell down; repeated until no equation has one hidden
    cell. Zeros are shown. `derived` columns (a percent, its interval, a status) computed
    from counts are blanked, or set to `suppressed` for text, where any of those is hidden.
    The result's `attrs["suppression"]` counts the hidden cells.
    """
    out = table.copy().reset_index(drop=True)
    counts = list(counts)
    col_of = {c: j for j, c in enumerate(counts)}
    vals = out[counts].astype("Float64").fillna(0).to_numpy(dtype="int64")
    primary = (vals >= 1) & (vals < threshold)
    hidden = primary.copy()
    equations: list[list[tuple[int, int]]] = []
    for total, parts in row_sums:
        for r in range(len(out)):
            equations.append([(r, col_of[total])] + [(r, col_of[p]) for p in parts])
    if totals is not None:
        label_col, label, keys = totals
        is_total = (out[label_col].astype("string") == label).fillna(False).to_numpy(bool)
        groups = out.groupby(list(keys), sort=False, dropna=False).indices
        for rows in groups.values():
            tot = [r for r in rows if is_total[r]]
            members = [r for r in rows if not is_total[r]]
            if len(tot) != 1 or not members:
                continue
            for j in range(len(counts)):
                equations.append([(tot[0], j)] + [(r, j) for r in members])
    safe_size = 2 * threshold - 2
    changed = True
    while changed:
        changed = False
        for eq in equations:
            if sum(hidden[c] for c in eq) != 1:
                continue
            cands = [(i, c) for i, c in enumerate(eq) if not hidden[c] and vals[c] > 0]
            if not cands:
                continue
            big = [x for x in cands if vals[x[1]] >= safe_size]
            if big:
                _, pick = min(big, key=lambda x: (x[0] == 0, vals[x[1]], x[0]))
            else:
                _, pick = max(cands, key=lambda x: (vals[x[1]], -x[0]))
            hidden[pick] = True
            changed = True
    mark = f"<{threshold}"
    for c, j in col_of.items():
        shown = out[c].astype("Int64").astype(object).where(out[c].notna(), None)
        col = np.where(primary[:, j], mark, np.where(hidden[:, j], SECONDARY_MARK,
                                                       shown.to_numpy(dtype=object)))
        out[c] = pd.Series(col, dtype=object)
    blanked = 0
    for c, sources in (derived or {}).items():
        rows = np.logical_or.reduce([hidden[:, col_of[s]] for s in sources])
        blanked += int(rows.sum())
        if pd.api.types.is_numeric_dtype(out[c].dtype):
            out[c] = out[c].astype("Float64").mask(rows)
        else:
            out[c] = out[c].astype(object).where(~rows, SECONDARY_MARK)
    out.attrs["suppression"] = {"threshold": threshold, "small_cells": int(primary.sum()),
                                "cells_hidden_to_protect_them": int((hidden & ~primary).sum()),
                                "derived_cells_blanked": blanked}
    return out


COMPLIANCE_COUNTS = ("eligible", "compliant", "deviations", "missing")
COMPLIANCE_DERIVED = {"percent": ("eligible", "compliant"), "ci_low": ("eligible", "compliant"),
                      "ci_high": ("eligible", "compliant"), "status": ("eligible", "compliant")}


def compliance_table(audit: Any, key: bytes, threshold: int = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Compliance per criterion, overall (`all`) and per clinician code, small cells hidden."""
    levels = {c.id: c.level for c in audit.protocol.criteria}
    cols = ["criterion", "title", "level", "clinician_code", *COMPLIANCE_COUNTS, "percent",
            "ci_low", "ci_high", "target", "status"]
    overall = audit.summary().assign(clinician_code=ALL_CLINICIANS)
    by = audit.summary("operator")
    by = pseudonymise(by.assign(operator=by["operator"].astype("string")), "operator", key,
                      "clinician", "clinician_code")
    both = pd.concat([overall, by], ignore_index=True)
    both["level"] = both["criterion"].map(levels)
    order = {c.id: i for i, c in enumerate(audit.protocol.criteria)}
    both = both.assign(_o=both["criterion"].map(order),
                       _a=both["clinician_code"] != ALL_CLINICIANS)
    both = both.sort_values(["_o", "_a", "clinician_code"], kind="stable")[cols]
    for c in ("percent", "ci_low", "ci_high"):
        both[c] = both[c].astype("float64").round(2)
    both["clinician_code"] = both["clinician_code"].astype("string")
    return suppress_small_cells(both, COMPLIANCE_COUNTS, threshold,
                                row_sums=[("eligible", ("compliant", "deviations", "missing"))],
                                totals=("clinician_code", ALL_CLINICIANS, ("criterion",)),
                                derived=COMPLIANCE_DERIVED)


def _compliance_doc(threshold: int) -> list[dict[str, Any]]:
    hidden = (f"counts 1–{threshold - 1} shown as '<{threshold}'; a cell that would let one "
              f"work such a count out shown as '{SECONDARY_MARK}'")
    count_type = f"whole number, or text ('<{threshold}', '{SECONDARY_MARK}') where hidden"
    rows = [
        ("criterion", "text", "", "", "id of the protocol criterion (stable across re-audits)",
         "kept"),
        ("title", "text", "", "", "what the criterion checks, in words", "kept"),
        ("level", "text", "", "session, first_session, course",
         ("what the criterion is checked on: every session, a course's first session, or a "
         "completed course"), "kept"),
        ("clinician_code", "text", "", "",
         (f"code of the clinician (as in the sessions table); '{ALL_CLINICIANS}' = every "
         f"clinician together; '{NOT_RECORDED}' = sessions without a clinician"),
         _treat("staff", threshold)),
        ("eligible", count_type, "sessions or courses", "",
         "records the criterion applies to (compliant + deviations + missing)", hidden),
        ("compliant", count_type, "sessions or courses", "", "records that follow the protocol",
         hidden),
        ("deviations", count_type, "sessions or courses", "",
         "records that do not follow the protocol", hidden),
        ("missing", count_type, "sessions or courses", "", ("records where a value the rule "
         "needs is not documented (counted as not compliant)"), hidden),
        ("percent", "number", "%", "0–100", "compliant / eligible × 100",
         "empty where eligible or compliant is hidden"),
        ("ci_low", "number", "%", "0–100", "lower end of the Wilson 95 % interval of percent",
         "empty where eligible or compliant is hidden"),
        ("ci_high", "number", "%", "0–100", "upper end of the Wilson 95 % interval of percent",
         "empty where eligible or compliant is hidden"),
        ("target", "number", "%", "0–100", "compliance the protocol aims for", "kept"),
        ("status", "text", "", f"met, not met, inconclusive, no data, {SECONDARY_MARK}",
         ("met: the whole interval is at or above the target (a 100 % target: no miss); not "
         "met: below it; inconclusive: the interval spans the target"),
         f"'{SECONDARY_MARK}' where eligible or compliant is hidden"),
    ]
    return [{"field": f, "table": "compliance", "type": ty, "unit": u, "allowed_values": a,
             "meaning": m, "treatment": tr, "source_field": "derived (audit)"}
            for f, ty, u, a, m, tr in rows]
