"""Workbooks a person opens: written (write-only, streamed) and read back with openpyxl."""

from __future__ import annotations

import openpyxl
import pandas as pd

from outcomes.workbook import write_workbook


def test_sheets_round_trip_with_formats(tmp_path):
    compliance = pd.DataFrame({"criterion": ["a", "b"], "percent": [87.5, 100.0],
                               "status": ["not met", "met"]})
    flagged = pd.DataFrame({
        "date": pd.to_datetime(["2025-01-02", None]).astype("datetime64[s]"),
        "verdict": ["deviation", "not documented"],
        "note": ["=HYPERLINK(\"x\")", None],
        "n": pd.array([3, None], dtype="Int64")})
    path = write_workbook(tmp_path / "w.xlsx", [("Data", "sessions.csv"), ("Files", ["a", "b"])],
                          {"Compliance": compliance, "Flagged sessions": flagged})
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["About", "Compliance", "Flagged sessions"]
    about = wb["About"]
    assert about["A1"].value == "Data" and about["A1"].font.b
    assert about["B2"].value == "a, b" and about["B2"].alignment.wrap_text
    ws = wb["Compliance"]
    assert [c.value for c in ws[1]] == ["criterion", "percent", "status"] and ws["A1"].font.b
    assert ws.freeze_panes == "A2" and ws.auto_filter.ref == "A1:C3"
    assert ws["B2"].value == 0.875 and ws["B2"].number_format == "0.0%"
    assert ws["C2"].fill.start_color.rgb.endswith("FFC7CE")  # not met
    assert ws["C3"].fill.start_color.rgb.endswith("C6EFCE")  # met
    fl = wb["Flagged sessions"]
    assert fl["A2"].value.date() == pd.Timestamp("2025-01-02").date()
    assert fl["A2"].number_format == "yyyy-mm-dd" and fl["A3"].value is None
    assert fl["B2"].fill.start_color.rgb.endswith("FFC7CE")
    assert fl["C2"].value == "'=HYPERLINK(\"x\")"  # never run as a formula
    assert fl["D2"].value == 3 and fl["D3"].value is None
    assert fl.column_dimensions["C"].width > len("note")
