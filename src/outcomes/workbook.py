"""Excel workbooks a person opens: frozen header, set widths, percent formats, coloured status.

Excel is for summaries and flagged records, never for full verdict tables (it stops at
1,048,576 rows, and writing it is slow); a sheet that would overflow is cut and says so.
Text cells that a spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from outcomes.files import atomic_path

MAX_ROWS = 1_048_575  # Excel's limit less the header
STATUS_FILL = {
    "met": "C6EFCE", "not met": "FFC7CE", "inconclusive": "FFEB9C", "no data": "EDEDED",
    "not recorded": "EDEDED",
    "improved": "C6EFCE", "worse": "FFC7CE", "deviation": "FFC7CE",
    "not documented": "FFEB9C",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_text(value: Any) -> Any:
    """A text cell that starts like a formula gets a leading apostrophe-like quote."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


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
                                                       "diff_ci_high")) -> Path:
    """Write an About sheet (label, value pairs) then one sheet per table, atomically.

    Columns named in `percent_columns` hold percents (0–100) and are shown as percents.
    """
    wb = Workbook()
    ws = wb.active
    ws.title = "About"
    bold = Font(bold=True)
    for label, value in about:
        ws.append([label, _cell(value) if not isinstance(value, list | tuple)
                   else ", ".join(map(str, value))])
        ws.cell(ws.max_row, 1).font = bold
    ws.column_dimensions["A"].width = 28
    ws.column_dimensions["B"].width = 100
    for row in ws.iter_rows(min_col=2, max_col=2):
        row[0].alignment = Alignment(wrap_text=True, vertical="top")
    for name, df in sheets.items():
        _write_sheet(wb, name, df, percent_columns)
    with atomic_path(path) as tmp:
        wb.save(tmp)
    return Path(path)


def _write_sheet(wb: Workbook, name: str, df: pd.DataFrame,
                 percent_columns: tuple[str, ...]) -> None:
    ws = wb.create_sheet(name[:31])
    cut = len(df) > MAX_ROWS
    if cut:
        df = df.iloc[:MAX_ROWS - 1]
    ws.append([str(c) for c in df.columns])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    cols = list(df.columns)
    arrays = [df[c].astype(object).to_numpy() for c in cols]
    for i in range(len(df)):
        ws.append([_cell(a[i]) for a in arrays])
    if cut:
        ws.append([f"cut at Excel's row limit: the full table is in the CSV file ({name})"])
    ws.freeze_panes = "A2"
    if len(df):
        ws.auto_filter.ref = f"A1:{get_column_letter(len(cols))}{len(df) + 1}"
    for j, col in enumerate(cols, start=1):
        letter = get_column_letter(j)
        sample = [str(col)] + [str(v) for v in df[col].head(200).tolist()]
        ws.column_dimensions[letter].width = min(max(len(s) for s in sample) + 2, 60)
        if col in percent_columns:
            for (cell,) in ws.iter_rows(min_row=2, max_row=len(df) + 1, min_col=j, max_col=j):
                if isinstance(cell.value, int | float):
                    cell.value = cell.value / 100
                    cell.number_format = "0.0%"
        if col in ("status", "change", "verdict"):
            for (cell,) in ws.iter_rows(min_row=2, max_row=len(df) + 1, min_col=j, max_col=j):
                fill = STATUS_FILL.get(str(cell.value))
                if fill:
                    cell.fill = PatternFill("solid", start_color=fill, end_color=fill)
        if pd.api.types.is_datetime64_any_dtype(df[col].dtype):
            for (cell,) in ws.iter_rows(min_row=2, max_row=len(df) + 1, min_col=j, max_col=j):
                cell.number_format = "yyyy-mm-dd"
