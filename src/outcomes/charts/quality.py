"""Data-quality charts and tables: what was read, loaded and rejected, and what is missing.

Functions take the loader's tables (`Dataset.files()`, `LoadResult.rejections`,
`LoadResult.warnings`, the loaded canonical table) and return a matplotlib Figure made
with :func:`outcomes.charts.style.new_figure`, or a readable DataFrame. Counting is
vectorised, so a million rows draw as quickly as a thousand.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from outcomes import schema
from outcomes.charts.style import MEANING, PALETTE, new_figure
from outcomes.courses import NOT_RECORDED
from outcomes.load import reason_kind, reason_label

__all__ = [
    "files_table",
    "missing_by_clinician",
    "missing_by_field",
    "missing_table",
    "reason_table",
    "rejection_list",
    "rejections_by_reason",
    "row_accounting",
    "unknown_columns_table",
    "warning_list",
]

NOTE = "#555555"


def _note(fig: Figure, *lines: str) -> None:
    width = int(fig.get_figwidth() * 15)
    text = "\n".join(textwrap.fill(ln, width) for ln in lines if ln)
    if text:
        fig.supxlabel(text, x=0.01, ha="left", fontsize=8, color=NOTE)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=NOTE)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- tables


def files_table(files: pd.DataFrame) -> pd.DataFrame:
    """`Dataset.files()` with readable column names (file name, rows, SHA-256)."""
    if files.empty:
        return pd.DataFrame(columns=["File", "Table", "Rows read", "Loaded", "Rejected",
                                     "Warnings", "SHA-256"])
    return pd.DataFrame({
        "File": [Path(f).name for f in files["file"]],
        "Table": files["table"].to_numpy(),
        "Rows read": files["rows_read"].to_numpy(),
        "Loaded": files["rows_loaded"].to_numpy(),
        "Rejected": files["rows_rejected"].to_numpy(),
        "Warnings": files["warnings"].to_numpy(),
        "SHA-256": files["sha256"].to_numpy(),
    })


def combined_text(dataset: Any) -> str:
    """One paragraph: how many records from how many files became how many sessions."""
    parts = []
    for table, result, unit in (("sessions", dataset.sessions, "sessions"),
                                ("outcomes", dataset.outcomes, "assessments")):
        if result is None:
            continue
        files = [r for r in dataset.inputs if r.table == table]
        if len(files) == 1:
            parts.append(f"The {table} come from one export, {Path(files[0].file).name}.")
            continue
        parts.append(
            f"{len(files)} {table} exports: {result.rows_read:,} records read, "
            f"{result.rows_loaded:,} used, combined into {len(result.data):,} {unit}; "
            f"{result.rows_rejected:,} rejected (repeats, conflicts and unusable rows).")
    return " ".join(parts)


def overlap_table(files: pd.DataFrame) -> pd.DataFrame:
    """Per input file: records read and used, records of sessions another file also has,
    repeats of another file's record, and records that conflict with another file."""
    if "shared" not in files:
        files = files.assign(shared=0, duplicates=0, conflicts=0)
    return pd.DataFrame({
        "File": [Path(f).name for f in files["file"]],
        "Table": files["table"].to_numpy(),
        "Rows read": files["rows_read"].to_numpy(),
        "Used": files["rows_loaded"].to_numpy(),
        "Shared with another file": files["shared"].to_numpy(),
        "Duplicates": files["duplicates"].to_numpy(),
        "Conflicts": files["conflicts"].to_numpy(),
    })


def conflict_list(rejections: pd.DataFrame, rows: int | None = 100) -> pd.DataFrame:
    """The records rejected because another export gives a field differently."""
    r = rejections[rejections["reason"].astype(str).str.startswith("conflicts with")]
    return rejection_list(r, rows)


def _with_field(field: Any, text: str) -> str:
    field = str(field)
    return text if field in ("(whole row)", "", "nan", "<NA>") else f"{field}: {text}"


def reason_table(rejections: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows per file and reason (a row rejected for two reasons counts under each).

    Reasons that differ only by the row they name are counted together as one kind
    (`duplicate of row N`); a group whose rows share one reason exactly shows it whole
    (`duplicate of row 4`)."""
    cols = ["File", "Reason", "Rows rejected", "Example rows"]
    if rejections is None or rejections.empty:
        return pd.DataFrame(columns=cols)
    fields, reasons = rejections["field"], rejections["reason"].astype(str)
    r = pd.DataFrame({"file": [Path(str(f)).name for f in rejections["file"]],
                      "kind": [_with_field(f, reason_kind(x)) for f, x in zip(fields, reasons)],
                      "exact": [_with_field(f, x) for f, x in zip(fields, reasons)],
                      "row": rejections["row"].to_numpy()})
    g = r.groupby(["file", "kind"], sort=False)
    out = pd.DataFrame({"Reason": g["exact"].agg(reason_label),
                        "Rows rejected": g["row"].nunique(),
                        "Example rows": g["row"].agg(lambda x: ", ".join(
                            str(v) for v in sorted(pd.unique(x))[:5])
                            + (" …" if x.nunique() > 5 else ""))}).reset_index()
    out = out.rename(columns={"file": "File"})
    return out.sort_values(["Rows rejected", "File"], ascending=[False, True],
                           ignore_index=True)[cols]


def rejection_list(rejections: pd.DataFrame, rows: int | None = 100) -> pd.DataFrame:
    """The rejection log for reading: file name, row (as in the file), field, value, reason."""
    r = rejections if rows is None else rejections.head(rows)
    return pd.DataFrame({
        "File": [Path(str(f)).name for f in r["file"]],
        "Row": r["row"].to_numpy(),
        "Field": r["field"].astype(str).to_numpy(),
        "Value": r["value"].astype(str).to_numpy(),
        "Reason": r["reason"].astype(str).to_numpy(),
    })


def warning_list(warnings: pd.DataFrame, rows: int | None = 100) -> pd.DataFrame:
    """Warnings (kept, implausible values) for reading: file, row, field, value, message."""
    w = warnings if rows is None else warnings.head(rows)
    return pd.DataFrame({
        "File": [Path(str(f)).name for f in w["file"]],
        "Row": w["row"].to_numpy(),
        "Field": w["field"].astype(str).to_numpy(),
        "Value": w["value"].astype(str).to_numpy(),
        "Kind": w["kind"].astype(str).to_numpy(),
        "Message": w["message"].astype(str).to_numpy(),
    })


def unknown_columns_table(results: Iterable[Any]) -> pd.DataFrame:
    """Columns of each input file that match no canonical field (kept aside, not dropped)."""
    rows = []
    for r in results:
        for col in r.unknown_columns:
            rows.append({"File": Path(r.file).name, "Table": r.table, "Column": col})
    return pd.DataFrame(rows, columns=["File", "Table", "Column"])


def missing_table(data: pd.DataFrame, table: str = "sessions",
                  absent: Sequence[str] = ()) -> pd.DataFrame:
    """Per canonical field: rows, missing count and percent; fields not in the export marked."""
    fields = [f for f in schema.fields(table).values() if f.name in data.columns]
    n = len(data)
    missing = data[[f.name for f in fields]].isna().sum() if fields else pd.Series(dtype=int)
    out = pd.DataFrame({
        "Field": [f.name for f in fields],
        "Meaning": [f.meaning for f in fields],
        "Missing": [int(missing[f.name]) for f in fields],
    })
    out["Missing %"] = (100 * out["Missing"] / n) if n else np.nan
    out["In the export"] = ~out["Field"].isin(set(absent))
    return out.sort_values(["Missing %", "Field"], ascending=[False, True], ignore_index=True)


# --------------------------------------------------------------------------- charts


def row_accounting(files: pd.DataFrame) -> Figure:
    """Rows read per input file, split into loaded and rejected."""
    fig, ax = new_figure("Rows read, loaded and rejected per input file",
                         height=1.6 + 0.7 * max(len(files), 1))
    if files.empty:
        _empty(ax, "no input files")
        return fig
    names = [f"{Path(f).name}\n({t})" for f, t in zip(files["file"], files["table"])]
    y = np.arange(len(files))
    loaded = files["rows_loaded"].to_numpy(dtype=float)
    rejected = files["rows_rejected"].to_numpy(dtype=float)
    ax.barh(y, loaded, color=MEANING["compliant"], height=0.55, label="loaded")
    ax.barh(y, rejected, left=loaded, color=MEANING["deviation"], hatch="///",
            edgecolor="white", linewidth=0, height=0.55, label="rejected")
    tr = blended_transform_factory(ax.transAxes, ax.transData)
    for yy, lo, rj in zip(y, loaded, rejected):
        ax.text(1.01, yy, f"{int(lo + rj):,} read\n{int(lo):,} loaded\n{int(rj):,} rejected",
                transform=tr, va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_ylim(len(files) - 0.5, -0.5)
    ax.set_xlabel("Rows (count)")
    ax.grid(False, axis="y")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncols=2, fontsize=8,
              borderaxespad=0.0)
    _note(fig, "Every row read is either loaded or rejected (rows read = loaded + rejected); "
          "the rejected rows are listed with file, row and reason below.")
    return fig


def rejections_by_reason(rejections: pd.DataFrame) -> Figure:
    """Rejected rows by reason (and field), most frequent first."""
    t = reason_table(rejections)
    labels = [f"{r}  ({Path(f).name})" for r, f in zip(t["Reason"], t["File"])]
    fig, ax = new_figure("Rejected rows by reason", height=1.5 + 0.38 * max(len(t), 2))
    if t.empty:
        _empty(ax, "No row was rejected.")
        return fig
    y = np.arange(len(t))
    counts = t["Rows rejected"].to_numpy(dtype=float)
    ax.barh(y, counts, color=MEANING["deviation"], hatch="///", edgecolor="white",
            linewidth=0, height=0.6)
    for yy, c in zip(y, counts):
        ax.text(c, yy, f" {int(c):,}", va="center", fontsize=8)
    ax.set_yticks(y, [textwrap.shorten(lb, 70, placeholder="…") for lb in labels], fontsize=8)
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.set_xlim(0, counts.max() * 1.15)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("Rejected rows (count)")
    ax.grid(False, axis="y")
    _note(fig, "A rejected row is not used anywhere in the audit. Fix it in the export (or add "
          "a mapping file) and load again.")
    return fig


def missing_by_field(data: pd.DataFrame, table: str = "sessions",
                     absent: Sequence[str] = (), only_missing: bool = False) -> Figure:
    """Percent of loaded rows with each canonical field empty, most often missing first."""
    t = missing_table(data, table, absent)
    if only_missing:
        t = t[t["Missing"] > 0]
    fig, ax = new_figure(f"Missing values per field ({table}, {len(data):,} loaded rows)",
                         height=1.5 + 0.22 * max(len(t), 3))
    if t.empty:
        _empty(ax, "no missing values")
        return fig
    y = np.arange(len(t))
    pct = t["Missing %"].to_numpy(dtype=float)
    in_export = t["In the export"].to_numpy(dtype=bool)
    ax.barh(y[in_export], pct[in_export], color=MEANING["not documented"], height=0.7,
            label="empty in the export")
    if (~in_export).any():
        ax.barh(y[~in_export], pct[~in_export], color=PALETTE["grey"], hatch="xx",
                edgecolor="white", linewidth=0, height=0.7, label="column not in the export")
    for yy, p, n in zip(y, pct, t["Missing"]):
        ax.text(p, yy, f" {p:.1f} % ({int(n):,})", va="center", fontsize=7)
    ax.set_yticks(y, t["Field"], fontsize=7)
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.set_xlim(0, max(10.0, float(np.nanmax(pct)) * 1.25))
    ax.set_xlabel("Rows with the field empty (% of loaded rows)")
    ax.grid(False, axis="y")
    ax.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.9)
    _note(fig, "A value the protocol needs that is missing counts as 'not documented' in the "
          "audit: against compliance, and shown apart from deviations.")
    return fig


def _protocol_fields() -> list[str]:
    """Clinical session fields with a unit or a yes/no answer: what a session should document."""
    skip = {"indication", "area", "adverse_event"}
    return [f.name for f in schema.SESSIONS
            if f.role == "clinical" and f.name not in skip and (f.unit or f.type == "bool")]


def missing_by_clinician(sessions: pd.DataFrame, fields: Sequence[str] | None = None) -> Figure:
    """Per clinician: percent of the documentation fields left empty."""
    fields = [f for f in (fields or _protocol_fields()) if f in sessions.columns]
    who = sessions["operator"].astype("string").fillna(NOT_RECORDED)
    fig, ax = new_figure("Documentation gaps by clinician",
                         height=1.6 + 0.45 * max(who.nunique(), 2))
    if not fields or sessions.empty:
        _empty(ax, "nothing to count")
        return fig
    gaps = sessions[fields].isna().to_numpy()
    expected = np.ones_like(gaps)
    # a wait is only expected where there was something to wait for
    conditions = {
        "test_spot_wait_min": lambda d: d["test_spot"].astype("boolean"),
        "pass_wait_min": lambda d: d["passes"].astype("Float64") >= 2,
    }
    for name, needs in conditions.items():
        if name in fields:
            keep = needs(sessions).fillna(True).to_numpy(dtype=bool)
            expected[:, fields.index(name)] = keep
    with np.errstate(invalid="ignore"):
        empty = (gaps & expected).sum(axis=1) / expected.sum(axis=1)
    per = pd.DataFrame({"who": who.to_numpy(), "empty": 100 * empty}).groupby("who")["empty"]
    table = pd.DataFrame({"pct": per.mean(), "n": per.size()}).sort_values("pct",
                                                                          ascending=False)
    y = np.arange(len(table))
    ax.barh(y, table["pct"], color=MEANING["not documented"], height=0.6)
    for yy, p in zip(y, table["pct"]):
        ax.text(p, yy, f" {p:.1f} %", va="center", fontsize=8)
    overall = 100 * float(empty.mean())
    ax.axvline(overall, color=PALETTE["black"], linestyle="--", linewidth=1,
               label=f"all clinicians {overall:.1f} %")
    ax.set_yticks(y, [f"{w}\n{int(n):,} sessions" for w, n in zip(table.index, table["n"])])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set_xlim(0, max(5.0, float(table["pct"].max()) * 1.25))
    ax.set_xlabel(f"Empty fields (% of {len(fields)} documentation fields per session)")
    ax.grid(False, axis="y")
    ax.legend(loc="lower right", fontsize=8)
    _note(fig, "Documentation fields: " + ", ".join(fields) + ". The wait after a test "
          "spot is not expected when no test spot was done, nor the wait between passes "
          "after a single pass.")
    return fig
