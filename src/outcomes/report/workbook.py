"""Excel workbooks a person opens: frozen header, set widths, percent formats, coloured status.

Excel is for summaries and flagged records, never for full verdict tables (it stops at
1,048,576 rows, and writing it is slow); a sheet that would overflow is cut and says so.
Every sheet (its column names and text cells) and the About values pass through
`outcomes.safe`, so no text cell is run as a formula. Headers are words
(one mapping, `HEADERS`), only percents get a percent format, long text wraps in rows
made tall enough for it, and every sheet prints landscape, one page wide, with its
header row repeated on each page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from outcomes.files import atomic_path
from outcomes.progress import Progress
from outcomes.safe import neutralise, safe_text

MAX_ROWS = 1_048_575  # Excel's limit less the header
STATUS_FILL = {
    "met": "C6EFCE", "not met": "FFC7CE", "inconclusive": "FFEB9C", "no data": "EDEDED",
    "not recorded": "EDEDED",
    "improved": "C6EFCE", "worse": "FFC7CE", "deviation": "FFC7CE",
    "not documented": "FFEB9C",
}
STATUS_PATTERN = {k: PatternFill("solid", start_color=v, end_color=v)
                  for k, v in STATUS_FILL.items()}
BOLD = Font(bold=True)
WRAP = Alignment(wrap_text=True, vertical="top")
MAX_WIDTH = 60  # characters; longer text wraps
LINE_HEIGHT = 15  # points per line of 11 pt text

#: Column names of the tables → the headers a person reads (one mapping for every sheet;
#: a name not here is shown with its underscores as spaces, capitalised).
HEADERS = {
    "criterion": "Criterion", "id": "Id", "title": "Title", "eligible": "Eligible",
    "compliant": "Compliant", "deviations": "Deviations", "missing": "Not documented",
    "not_documented": "Not documented", "not_applicable": "Not applicable",
    "documented": "Documented", "percent": "% compliant", "ci_low": "95 % CI low",
    "ci_high": "95 % CI high", "target": "Target", "target_pct": "Target",
    "design_effect": "Design effect", "ci_low_clustered": "95 % CI low (clustered)",
    "ci_high_clustered": "95 % CI high (clustered)", "status": "Status",
    "operator": "Clinician", "clinic": "Clinic", "month": "Month", "session_id": "Session",
    "course_id": "Course", "patient_id": "Patient", "date": "Date", "verdict": "Verdict",
    "reason": "Reason", "observed": "Observed", "source_file": "Source file",
    "source_row": "Source row", "sources": "Sources (file and row)", "statistic": "Statistic", "value": "Value",
    "sheet": "Protocol sheet says", "level": "Level", "rule": "Rule", "file": "File",
    "row": "Row", "field": "Field", "shared": "Records shared with other files",
    "duplicates": "Duplicates of another file", "conflicts": "Conflicts with another file",
    "before_eligible": "Eligible before",
    "before_percent": "% compliant before", "after_eligible": "Eligible after",
    "after_percent": "% compliant after", "difference": "Difference (points)",
    "diff_ci_low": "Difference 95 % CI low", "diff_ci_high": "Difference 95 % CI high",
    "p_value": "p", "q_value": "q (false discovery rate)", "change": "Change",
}
#: Columns that hold percents of compliance (0–100) wherever they appear.
PERCENT_COLUMNS = ("percent", "ci_low", "ci_high", "ci_low_clustered", "ci_high_clustered",
                   "target", "target_pct", "before_percent", "after_percent", "difference",
                   "diff_ci_low", "diff_ci_high")


def header(column: Any) -> str:
    """The header a person reads for a column name."""
    name = str(column)
    return HEADERS.get(name) or name.replace("_", " ").strip().capitalize()


@dataclass(frozen=True)
class Sheet:
    """A table with the cells that hold percents named: `percent_columns` (None: the
    workbook's), and with `percent_rows`, only those rows of them (a table of indicators
    mixes percents with medians in one column)."""

    data: pd.DataFrame
    percent_columns: tuple[str, ...] | None = None
    percent_rows: Sequence[bool] | None = None
    #: a line under the table (what it holds when it is not the whole list)
    note: str | None = None


def _cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime().date() if value == value.normalize() else value.to_pydatetime()
    if isinstance(value, pd.Period):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return safe_text(value)


def write_workbook(path: str | Path, about: list[tuple[str, Any]],
                   sheets: Mapping[str, pd.DataFrame | Sheet],
                   percent_columns: tuple[str, ...] = PERCENT_COLUMNS,
                   progress: bool | None = None, human_headers: bool = False) -> Path:
    """Write an About sheet (label, value pairs) then one sheet per table, atomically.

    Columns named in `percent_columns` hold percents (0–100) and are shown as percents;
    a `Sheet` names its own. With `human_headers`, column names are shown as `HEADERS`
    says (a research export keeps the field names its data dictionary documents).
    Written in openpyxl's write-only mode (rows streamed, each styled as it is made):
    a million-row flagged list takes a minute, not several, in constant memory. A
    table of 100,000 rows or more shows a progress bar on a terminal.
    """
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("About")
    _print_setup(ws, title_row=False)
    ws.column_dimensions["A"].width = 28
    ws.column_dimensions["B"].width = 100
    for i, (label, value) in enumerate(about, start=1):
        shown = (_cell(value) if not isinstance(value, list | tuple)
                 else safe_text(", ".join(map(str, value))))
        ws.row_dimensions[i].height = LINE_HEIGHT * _lines(str(shown or ""), 100)
        ws.append([_styled(ws, _cell(label), font=BOLD, alignment=WRAP),
                   _styled(ws, shown, alignment=WRAP)])
    tables = {name: s if isinstance(s, Sheet) else Sheet(s) for name, s in sheets.items()}
    rows = sum(len(s.data) for s in tables.values())
    bar = Progress(rows + 1, f"writing {Path(path).name}",
                   enabled=progress if rows >= 100_000 else False)
    for name, sheet in tables.items():
        _write_sheet(wb, name, sheet, percent_columns, bar,
                     header if human_headers else str)
    with atomic_path(path) as tmp:
        wb.save(tmp)
    bar.close()
    return Path(path)


def _lines(text: str, width: float) -> int:
    """Lines a text takes wrapped in a column of `width` characters (an estimate)."""
    per_line = max(int(width) - 2, 1)
    return max(1, sum(max(1, math.ceil(len(part) / per_line)) for part in text.split("\n")))


def _row_lines(df: pd.DataFrame, widths: Mapping[str, float]) -> np.ndarray:
    """Lines each row needs: the most of its wrapped cells (1 when none wraps)."""
    lines = np.ones(len(df), dtype=np.int64)
    for col, width in widths.items():
        text = df[col].astype("string").fillna("")
        per_line = max(int(width) - 2, 1)
        need = (-(-text.str.len() // per_line)).clip(lower=1) + text.str.count("\n")
        lines = np.maximum(lines, need.fillna(1).astype("int64").to_numpy())
    return lines


def _print_setup(ws: Any, title_row: bool = True) -> None:
    """Landscape, one page wide (as many pages down as it takes), the header on each page.

    Set before the first row: a write-only sheet writes its properties with it."""
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = "9"  # A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    if title_row:
        ws.print_title_rows = "1:1"


def _write_sheet(wb: Workbook, name: str, sheet: Sheet, percent_columns: tuple[str, ...],
                 bar: Progress, header: Any = header) -> None:
    ws = wb.create_sheet(name[:31])
    df = neutralise(sheet.data)
    percent_columns = (sheet.percent_columns if sheet.percent_columns is not None
                       else percent_columns)
    cut = len(df) > MAX_ROWS
    if cut:
        df = df.iloc[:MAX_ROWS - 1]
    cols = list(df.columns)
    # what a write-only sheet needs before its rows: panes, filter, widths, print setup
    _print_setup(ws)
    ws.freeze_panes = "A2"
    if len(df):
        ws.auto_filter.ref = f"A1:{get_column_letter(len(cols))}{len(df) + 1}"
    wrapped: dict[str, float] = {}
    for j, col in enumerate(cols, start=1):
        sample = [header(col)] + [str(v) for v in df[col].head(200).tolist()]
        longest = max(len(s) for s in sample) + 2
        ws.column_dimensions[get_column_letter(j)].width = min(longest, MAX_WIDTH)
        if longest > MAX_WIDTH and not pd.api.types.is_numeric_dtype(df[col].dtype):
            wrapped[col] = MAX_WIDTH
    ws.append([_styled(ws, header(c), font=BOLD, alignment=WRAP) for c in cols])
    mask = (np.asarray(sheet.percent_rows, dtype=bool)[:len(df)]
            if sheet.percent_rows is not None else None)
    makers = [_cell_maker(ws, df[c], c in percent_columns, c in ("status", "change", "verdict"),
                          wrap=c in wrapped) for c in cols]
    arrays = [df[c].astype(object).to_numpy() for c in cols]
    heights = _row_lines(df, wrapped) if wrapped else None
    for i in range(len(df)):
        if heights is not None and heights[i] > 1:  # LibreOffice does not grow a row itself
            ws.row_dimensions[i + 2].height = LINE_HEIGHT * int(heights[i])
        pct = True if mask is None else bool(mask[i])
        ws.append([make(a[i], pct) for make, a in zip(makers, arrays, strict=True)])
        if i % 50_000 == 49_999:
            bar.step(name, 50_000)
    bar.step(name, len(df) % 50_000)
    if cut:
        ws.append([f"cut at Excel's row limit: the full table is in the CSV file ({name})"])
    if sheet.note:
        ws.append([_styled(ws, safe_text(sheet.note), font=BOLD)])


def _cell_maker(ws: Any, col: pd.Series, percent: bool, status: bool,
                wrap: bool = False) -> Any:
    """A function from a raw value (and whether its row holds percents) to what the sheet
    gets: the plain value, or a styled cell (percent format, status fill, date format,
    wrapped text); styles are made once per column."""
    dates = pd.api.types.is_datetime64_any_dtype(col.dtype)

    def make(value: Any, percent_row: bool = True) -> Any:
        v = _cell(value)
        if percent and percent_row and isinstance(v, int | float) and not isinstance(v, bool):
            return _styled(ws, v / 100, number_format="0.0%")
        if status and str(v) in STATUS_PATTERN:
            return _styled(ws, v, fill=STATUS_PATTERN[str(v)])
        if dates and v is not None:
            return _styled(ws, v, number_format="yyyy-mm-dd")
        if wrap and isinstance(v, str):
            return _styled(ws, v, alignment=WRAP)
        return v

    return make


def _styled(ws: Any, value: Any, **style: Any) -> WriteOnlyCell:
    """A write-only cell with its style set (font, fill, alignment, number_format)."""
    cell = WriteOnlyCell(ws, value=value)
    for name, setting in style.items():
        setattr(cell, name, setting)
    return cell
