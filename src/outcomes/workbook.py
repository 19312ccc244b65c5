"""Excel workbooks a person opens: frozen header, set widths, percent formats, coloured status.

Excel is for summaries and flagged records, never for full verdict tables (it stops at
1,048,576 rows, and writing it is slow); a sheet that would overflow is cut and says so.
Every sheet (its column names and text cells) and the About values pass through
`outcomes.safe`, so no text cell is run as a formula.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from outcomes.safe import FORMULA_START, neutralise, safe_text

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
__all__ = ["FORMULA_START", "MAX_ROWS", "safe_text", "write_workbook"]


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
                   sheets: Mapping[str, pd.DataFrame],
                   percent_columns: tuple[str, ...] = ("percent", "ci_low", "ci_high", "target",
                                                       "before_percent", "after_percent",
                                                       "difference", "diff_ci_low",
                                                       "diff_ci_high"),
                   progress: bool | None = None) -> Path:
    """Write an About sheet (label, value pairs) then one sheet per table, atomically.

    Columns named in `percent_columns` hold percents (0–100) and are shown as percents.
    Written in openpyxl's write-only mode (rows streamed, each styled as it is made):
    a million-row flagged list takes a minute, not several, in constant memory. A
    table of 100,000 rows or more shows a progress bar on a terminal.
    """
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("About")
    ws.column_dimensions["A"].width = 28
    ws.column_dimensions["B"].width = 100
    wrap = Alignment(wrap_text=True, vertical="top")
    for label, value in about:
        ws.append([_styled(ws, _cell(label), font=BOLD), _styled(
            ws, _cell(value) if not isinstance(value, list | tuple)
            else safe_text(", ".join(map(str, value))), alignment=wrap)])
    rows = sum(len(df) for df in sheets.values())
    bar = Progress(rows + 1, f"writing {Path(path).name}",
                   enabled=progress if rows >= 100_000 else False)
    for name, df in sheets.items():
        _write_sheet(wb, name, df, percent_columns, bar)
    with atomic_path(path) as tmp:
        wb.save(tmp)
    bar.close()
    return Path(path)


def _write_sheet(wb: Workbook, name: str, df: pd.DataFrame,
                 percent_columns: tuple[str, ...], bar: Progress) -> None:
    ws = wb.create_sheet(name[:31])
    df = neutralise(df)
    cut = len(df) > MAX_ROWS
    if cut:
        df = df.iloc[:MAX_ROWS - 1]
    cols = list(df.columns)
    # what a write-only sheet needs before its rows: panes, filter, widths
    ws.freeze_panes = "A2"
    if len(df):
        ws.auto_filter.ref = f"A1:{get_column_letter(len(cols))}{len(df) + 1}"
    for j, col in enumerate(cols, start=1):
        sample = [str(col)] + [str(v) for v in df[col].head(200).tolist()]
        ws.column_dimensions[get_column_letter(j)].width = min(max(len(s) for s in sample) + 2,
                                                               60)
    ws.append([_styled(ws, str(c), font=BOLD) for c in cols])
    makers = [_cell_maker(ws, df[c], c in percent_columns, c in ("status", "change", "verdict"))
              for c in cols]
    arrays = [df[c].astype(object).to_numpy() for c in cols]
    for i in range(len(df)):
        ws.append([make(a[i]) for make, a in zip(makers, arrays, strict=True)])
        if i % 50_000 == 49_999:
            bar.step(name, 50_000)
    bar.step(name, len(df) % 50_000)
    if cut:
        ws.append([f"cut at Excel's row limit: the full table is in the CSV file ({name})"])


def _cell_maker(ws: Any, col: pd.Series, percent: bool, status: bool) -> Any:
    """A function from a raw value to what the sheet gets: the plain value, or a styled
    cell (percent format, status fill, date format); styles are made once per column."""
    dates = pd.api.types.is_datetime64_any_dtype(col.dtype)

    def make(value: Any) -> Any:
        v = _cell(value)
        if percent and isinstance(v, int | float) and not isinstance(v, bool):
            return _styled(ws, v / 100, number_format="0.0%")
        if status and str(v) in STATUS_PATTERN:
            return _styled(ws, v, fill=STATUS_PATTERN[str(v)])
        if dates and v is not None:
            return _styled(ws, v, number_format="yyyy-mm-dd")
        return v

    return make


def _styled(ws: Any, value: Any, **style: Any) -> WriteOnlyCell:
    """A write-only cell with its style set (font, fill, alignment, number_format)."""
    cell = WriteOnlyCell(ws, value=value)
    for name, setting in style.items():
        setattr(cell, name, setting)
    return cell
