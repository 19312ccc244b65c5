"""Workbooks a person opens: written (write-only, streamed) and read back with openpyxl."""

from __future__ import annotations

import openpyxl
import pandas as pd

from outcomes.report.workbook import write_workbook


def test_sheets_round_trip_with_formats(tmp_path):
    compliance = pd.DataFrame({"criterion": ["a", "b"], "percent": [87.5, 100.0],
                               "status": ["not met", "met"]})
    flagged = pd.DataFrame({
        "date": pd.to_datetime(["2025-01-02", None]).astype("datetime64[s]"),
        "verdict": ["deviation", "not documented"],
        "note": ["=HYPERLINK(\"x\")", None],
        "n": pd.array([3, None], dtype="Int64")})
    path = write_workbook(tmp_path / "w.xlsx", [("Data", "sessions.csv"), ("Files", ["a", "b"])],
                          {"Compliance": compliance, "Flagged sessions": flagged},
                          human_headers=True)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["About", "Compliance", "Flagged sessions"]
    about = wb["About"]
    assert about["A1"].value == "Data" and about["A1"].font.b
    assert about["B2"].value == "a, b" and about["B2"].alignment.wrap_text
    ws = wb["Compliance"]
    assert [c.value for c in ws[1]] == ["Criterion", "% compliant", "Status"] and ws["A1"].font.b
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


def test_the_audit_workbook_reads_and_prints_well(tmp_path):
    """The workbook of an audit, read back: words for headers, percents only where the
    numbers are percents (a median's interval keeps its unit), one scale for targets,
    every sheet printable (landscape, one page wide, header repeated), tall rows for
    wrapped text."""
    import re

    import outcomes
    from outcomes.audit import write_audit

    study = outcomes.open()
    path = write_audit(study.audit, tmp_path, study.files(), csv=False,
                       rejections=study.dataset.rejections())["workbook"]
    wb = openpyxl.load_workbook(path)
    snake = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")
    for ws in wb.worksheets:
        assert ws.page_setup.orientation == "landscape", ws.title
        assert ws.page_setup.fitToWidth == 1 and ws.page_setup.fitToHeight == 0, ws.title
        assert ws.sheet_properties.pageSetUpPr.fitToPage, ws.title
        if ws.title == "About":
            continue
        headers = [c.value for c in ws[1]]
        assert not [h for h in headers if snake.match(str(h)) or "_" in str(h)], (ws.title,
                                                                                 headers)
        assert ws.print_title_rows == "$1:$1", ws.title
    # one wording: a missing value the rule needs is "Not documented" on every sheet
    assert "Not documented" in [c.value for c in wb["Compliance"][1]]
    assert "Not documented" in [c.value for c in wb["Indicators"][1]]
    ind = wb["Indicators"]
    cols = {c.value: c.column for c in ind[1]}
    rows = {ind.cell(r, cols["Statistic"]).value: r for r in range(2, ind.max_row + 1)}
    median, share = rows["median"], rows["percent yes"]
    for name in ("Value", "95 % CI low", "95 % CI high"):
        cell = ind.cell(median, cols[name])
        assert "%" not in cell.number_format and cell.value >= 1, (name, cell.value)
        assert ind.cell(share, cols[name]).number_format == "0.0%"
    # targets on one scale: a fraction shown as percent on both sheets
    for sheet in ("Compliance", "Protocol"):
        ws = wb[sheet]
        target = next(c.column for c in ws[1] if c.value == "Target")
        cell = ws.cell(2, target)
        assert cell.number_format == "0.0%" and 0 < cell.value <= 1, (sheet, cell.value)
    about = wb["About"]
    how = next(r for r in range(1, about.max_row + 1) if about.cell(r, 1).value == "How to read")
    assert about.row_dimensions[how].height >= 45 and about.cell(how, 2).alignment.wrap_text


def test_long_text_wraps_in_a_row_tall_enough(tmp_path):
    long = "a reason that goes on " * 10
    df = pd.DataFrame({"criterion": ["a", "b"], "reason": [long, "short"]})
    wb = openpyxl.load_workbook(write_workbook(tmp_path / "w.xlsx", [], {"Flagged": df}))
    ws = wb["Flagged"]
    assert ws.column_dimensions["B"].width <= 60
    assert ws["B2"].alignment.wrap_text
    assert ws.row_dimensions[2].height >= 15 * 4  # 220 characters in a 60-wide column
    assert ws.row_dimensions[3].height is None


def test_a_long_flagged_list_keeps_the_most_recent_rows_and_says_so(tmp_path):
    import outcomes
    from outcomes.audit.write import flagged_sheet

    flagged = outcomes.open().audit.flagged()
    assert flagged_sheet(flagged).note is None  # the sample's list fits whole
    sheet = flagged_sheet(flagged, most=100)
    path = write_workbook(tmp_path / "f.xlsx", [("What", "test")], {"Flagged sessions": sheet},
                          human_headers=True)
    rows = list(openpyxl.load_workbook(path)["Flagged sessions"].iter_rows(values_only=True))
    assert len(rows) == 1 + 100 + 1
    assert rows[-1][0] == (f"The 100 most recent of {len(flagged):,} flagged records. "
                           "All of them are in flagged_sessions.csv.")
    dates = [r[rows[0].index("Date")] for r in rows[1:-1]]
    assert dates == sorted(dates)
    assert dates[-1] == pd.Timestamp(flagged["date"].max()).to_pydatetime()
