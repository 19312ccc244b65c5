"""Loading real-looking exports: formats, mapping options, parsing, rejections, warnings."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcomes.load import FALSE_WORDS, MISSING_WORDS, TRUE_WORDS, LoadError, load, read_mapping

HEADER = "patient_id,session_date,energy_start_mj,test_spot,coverage_pct,passes,operator\n"
GOOD = "P1,2025-01-02,25,yes,8,2,Dr. A\n"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def accounted(r) -> None:
    assert r.rows_read == r.rows_loaded + r.rows_rejected
    assert r.rows_loaded == len(r.data) or r.table == "outcomes"


# --- CSV -------------------------------------------------------------------------------------


def test_csv_canonical_headers_parse_to_canonical_types(tmp_path):
    r = load(write(tmp_path, "sessions.csv", HEADER + GOOD + "P2,2025-01-03,22.5,no,7.5,3,Dr. B\n"))
    accounted(r)
    assert r.rows_loaded == 2 and r.rows_rejected == 0
    d = r.data
    assert d["session_date"].dtype == "datetime64[s]"
    assert d["session_date"].iloc[0] == pd.Timestamp("2025-01-02")
    assert d["energy_start_mj"].tolist() == [25.0, 22.5]
    assert d["test_spot"].tolist() == [True, False]
    assert d["passes"].dtype == "Int64"
    assert d["session_id"].tolist() == ["P1:2025-01-02:1", "P2:2025-01-03:1"]
    assert d["source_row"].tolist() == [2, 3]
    assert "unknown_columns" in r.summary() and r.unknown_columns == []


def test_same_day_sessions_get_numbered_ids(tmp_path):
    r = load(write(tmp_path, "s.csv", HEADER + GOOD + "P1,2025-01-02,26,yes,8,2,Dr. A\n"))
    assert r.data["session_id"].tolist() == ["P1:2025-01-02:1", "P1:2025-01-02:2"]


def test_semicolon_decimal_comma_bom_and_sniffed_delimiter(tmp_path):
    text = ("\ufeffpatient_id;session_date;energy_start_mj;coverage_pct\n"
            "P1;2025-01-02;0,03;8,0\nP2;2025-01-03;0,0225;7,5\n")
    p = write(tmp_path, "s.csv", text)
    m = write(tmp_path, "s.mapping.toml",
              '[source]\ndecimal = ","\n[units]\nenergy_start_mj = "J"\n')
    r = load(p, mapping=m)
    assert r.rows_loaded == 2
    # 0,03 J is exactly 30 mJ: a 30 mJ boundary must hold
    assert r.data["energy_start_mj"].iloc[0] == 30.0
    assert r.data["energy_start_mj"].iloc[1] == 22.5
    assert r.data["coverage_pct"].tolist() == [8.0, 7.5]


def test_mapping_beside_the_file_is_used(tmp_path):
    p = write(tmp_path, "sessions.csv", "Nr;Datum\nP1;02.01.2025\n")
    write(tmp_path, "sessions.mapping.toml", '[source]\ndate_format = "%d.%m.%Y"\n'
          '[columns]\npatient_id = "Nr"\nsession_date = "Datum"\n')
    r = load(p)
    assert r.data["session_date"].iloc[0] == pd.Timestamp("2025-01-02")


def test_quoted_fields_with_separators_quotes_and_newlines_keep_line_numbers(tmp_path):
    text = (HEADER.strip() + ",notes\n"
            'P1,2025-01-02,25,yes,8,2,Dr. A,"said ""fine"", no pain"\n'
            'P2,2025-01-03,25,yes,8,2,Dr. A,"two\nlines"\n'
            "\n"
            "P3,bad-date,25,yes,8,2,Dr. A,\n")
    r = load(write(tmp_path, "s.csv", text))
    accounted(r)
    assert r.data["notes"].tolist() == ['said "fine", no pain', "two\nlines"]
    # P3 starts on line 6: header 1, P1 2, P2 3-4, blank 5
    assert r.rejections["row"].tolist() == [6]
    assert r.data["source_row"].tolist() == [2, 3]


def test_columns_without_a_header_are_dropped_when_empty_else_named(tmp_path):
    """Spreadsheets write trailing delimiters and spare columns: nothing in them, nothing
    to keep; a headerless column holding values is kept as column_N, never dropped."""
    text = ("patient_id;session_date;;passes;;\r\n"
            "P1;2025-01-05;;2;;\r\nP2;2025-01-06;;3;;x\r\n")
    r = load(write(tmp_path, "s.csv", text))
    assert r.rows_loaded == 2
    assert r.unknown_columns == ["column_6"]
    assert r.data["column_6"].isna().tolist() == [True, False]
    assert r.data["column_6"].iloc[1] == "x"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["patient_id", "session_date", None, "passes"])
    ws.append(["P1", "2025-01-05", None, 2])
    ws.append(["P2", "2025-01-06", None, 3, None, "beyond the header"])
    wb.save(tmp_path / "s.xlsx")
    x = load(tmp_path / "s.xlsx")
    assert x.rows_loaded == 2
    assert x.unknown_columns == ["column_6"]
    assert x.data["column_6"].iloc[1] == "beyond the header"
    assert x.data["passes"].tolist() == [2, 3]


@pytest.mark.parametrize("where", ["first", "late"])
def test_a_long_file_in_another_encoding_says_so_wherever_its_first_odd_byte_is(tmp_path,
                                                                             where):
    rows = [f"P{i};2025-01-02;{'Müller' if where == 'first' or i > 2900 else 'plain'} {i}"
            for i in range(3000)]
    p = write(tmp_path, "s.csv", "patient_id;session_date;notes\n" + "\n".join(rows),
              encoding="latin-1")
    assert p.stat().st_size > 65536
    with pytest.raises(LoadError, match="not readable as utf-8; set encoding"):
        load(p)


def test_a_character_cut_by_the_first_piece_read_is_not_an_encoding_error(tmp_path):
    head = "patient_id,session_date,notes\n"
    row = "P2,2025-01-03,"
    filler = "P1,2025-01-02," + "x" * (65535 - len(head) - len(row) - 15) + "\n"
    text = head + filler + row + "ü\n" + row + "ü\n"
    assert text.encode().index("ü".encode()) == 65535  # its two bytes either side of 64 KiB
    p = write(tmp_path, "s.csv", text)
    r = load(p)
    assert r.rows_read == 3 and r.data["notes"].iloc[-1] == "ü"


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_a_header_name_spanning_lines_keeps_its_column_as_text(tmp_path, eol):
    """Every column is read as text, also one whose quoted header holds a line break:
    ids keep their leading zeros."""
    p = write(tmp_path, "s.csv", f'"Patienten-{eol}Nr.";Datum{eol}00123;2025-01-02{eol}'
              f"00124;2025-01-03{eol}")
    name = json.dumps(f"Patienten-{eol}Nr.")  # a TOML basic string, escapes and all
    m = write(tmp_path, "m.toml", f'[columns]\npatient_id = {name}\nsession_date = "Datum"\n')
    r = load(p, mapping=m)
    assert r.data["patient_id"].tolist() == ["00123", "00124"]
    assert r.data["source_row"].tolist() == [3, 4]


@pytest.mark.parametrize("n", [20, 9_000])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_a_few_rows_with_the_wrong_number_of_fields_are_rejected_not_the_file(tmp_path, n,
                                                                              eol):
    """A short row, a long row and a line of spaces are rejected at their lines; the
    other rows load (a note spanning lines included)."""
    lines = ["patient_id,session_date,notes"]
    lines += [f"P{i},2025-01-{1 + i % 28:02d},n{i}" for i in range(n)]
    lines[5] = "P4,2025-01-05"
    lines[9] = "P8,2025-01-09,x,y"
    lines[12] = "   "
    lines[15] = 'P14,2025-01-15,"two' + eol + 'lines"'
    r = load(write(tmp_path, "s.csv", eol.join(lines) + eol), progress=False)
    accounted(r)
    assert r.rows_read == n
    assert r.rejections[["row", "value", "reason"]].values.tolist() == [
        [6, "P4,2025-01-05", "2 fields where the header has 3"],
        [10, "P8,2025-01-09,x,y", "4 fields where the header has 3"],
        [13, "   ", "1 fields where the header has 3"]]
    kept = r.data.set_index("source_row")
    assert kept.loc[16, "notes"] == f"two{eol}lines" and kept.loc[18, "patient_id"] == "P15"
    assert len(r.data) == n - 3


def test_a_short_row_beside_a_huge_note_and_below_a_quoted_title(tmp_path):
    """Finding the short row again reads the file with Python's csv module: no field
    size limit, and title lines skipped as lines (a quote in a title opens nothing)."""
    text = ('"Report Q1\npatient_id,session_date,notes\nP1,2024-01-01,ok\nP2,2024-01-02\n'
            "P3,2024-01-03," + "x" * 200_000 + "\n")
    p = write(tmp_path, "s.csv", text)
    (tmp_path / "s.mapping.toml").write_text("[source]\nheader_row = 2\n", encoding="utf-8")
    r = load(p)
    accounted(r)
    assert r.rejections[["row", "reason"]].values.tolist() == [
        [4, "2 fields where the header has 3"]]
    assert r.data["source_row"].tolist() == [3, 5]
    assert len(r.data["notes"].iloc[1]) == 200_000


def test_a_headerless_column_is_not_named_over_a_real_one(tmp_path):
    r = load(write(tmp_path, "s.csv", "patient_id,session_date,,column_3\nP1,2024-01-01,x,y\n"))
    assert r.unknown_columns == ["column_3_", "column_3"]
    assert r.data[["column_3_", "column_3"]].values.tolist() == [["x", "y"]]


def test_many_rows_with_the_wrong_number_of_fields_reject_the_file_naming_a_line(tmp_path):
    lines = ["patient_id,session_date,notes"] + [f"P{i},2025-01-02,a,b" if i % 2 else
                                                 f"P{i},2025-01-02,n" for i in range(40)]
    with pytest.raises(LoadError, match=r"line 3 has 4 fields where the header has 3; "
                                        r"check the delimiter"):
        load(write(tmp_path, "s.csv", "\n".join(lines) + "\n"))


def test_encoding_from_mapping(tmp_path):
    text = "patient_id;session_date;operator\nP1;2025-01-02;Dr. Müller\n"
    p = write(tmp_path, "s.csv", text, encoding="latin-1")
    m = write(tmp_path, "m.toml", '[source]\nencoding = "latin-1"\ndelimiter = ";"\n')
    assert load(p, mapping=m).data["operator"].iloc[0] == "Dr. Müller"


def test_header_row_below_a_title(tmp_path):
    text = "Export from ClinicSoft 4.2\n\npatient_id,session_date\nP1,2025-01-02\nP2,2025-01-09\n"
    p = write(tmp_path, "s.csv", text)
    m = write(tmp_path, "m.toml", "[source]\nheader_row = 3\n")
    r = load(p, mapping=m)
    assert r.rows_loaded == 2 and r.data["source_row"].tolist() == [4, 5]


def test_aliases_recognised_and_unknown_columns_kept(tmp_path):
    text = "Patient ID,Date,Clinician,Start Energy,room\nP1,2025-01-02,Dr. A,25,3\n"
    r = load(write(tmp_path, "sessions.csv", text))
    assert r.columns_used["operator"] == "Clinician"
    assert r.data["energy_start_mj"].iloc[0] == 25
    assert r.unknown_columns == ["room"]
    assert r.data["room"].iloc[0] == "3"


# --- parsing rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("word,expected", [
    ("yes", True), ("YES ", True), (" x", True), ("1", True), ("true", True), ("Ja", True),
    ("no", False), ("False", False), ("0", False), ("nein", False), ("hayır", False),
    ("", None), ("n/a", None),
])
def test_boolean_spellings(tmp_path, word, expected):
    r = load(write(tmp_path, "s.csv", f"patient_id,session_date,test_spot\nP1,2025-01-02,{word}\n"))
    got = r.data["test_spot"].iloc[0]
    assert (got is pd.NA) if expected is None else bool(got) is expected


def test_mapping_boolean_spellings_and_blank_as_false(tmp_path):
    p = write(tmp_path, "s.csv", "patient_id,session_date,test_spot,edema\n"
              "P1,2025-01-02,evet,\nP2,2025-01-03,done,x\n")
    m = write(tmp_path, "m.toml", '[values]\ntrue = ["done", "evet"]\nfalse = [""]\n')
    r = load(p, mapping=m)
    assert r.data["test_spot"].tolist() == [True, True]
    assert r.data["edema"].tolist() == [False, True]


@pytest.mark.parametrize("rows", [3, 6_000])  # short and long columns take different paths
def test_numeric_yes_no_cells_follow_the_mapping_words_as_csv_text_does(tmp_path, rows):
    """A device coding yes/no as 2/1 in Excel: numbers read as the words in the CSV."""
    m = write(tmp_path, "m.toml", '[values]\ntrue = ["2"]\nfalse = ["1", ""]\n')
    cells = [2, 1, None, 2, 7][:rows] * (rows // 3 + 1)
    cells = cells[:rows]
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["patient_id", "session_date", "test_spot"])
    lines = ["patient_id,session_date,test_spot"]
    for i, c in enumerate(cells):
        ws.append([f"P{i}", "2025-01-02", c])
        lines.append(f"P{i},2025-01-02,{'' if c is None else c}")
    wb.save(tmp_path / "s.xlsx")
    xlsx = load(tmp_path / "s.xlsx", mapping=m, progress=False)
    csv_ = load(write(tmp_path, "s.csv", "\n".join(lines) + "\n"), mapping=m, progress=False)
    expected = {2: True, 1: False, None: False}
    assert xlsx.data["test_spot"].tolist() == [expected[c] for c in cells if c != 7]
    pd.testing.assert_series_equal(xlsx.data["test_spot"], csv_.data["test_spot"])
    assert xlsx.rejections[["row", "value"]].values.tolist() == \
        csv_.rejections[["row", "value"]].values.tolist()
    assert set(xlsx.rejections["value"]) <= {"7"}


def test_unrecognised_boolean_is_rejected_with_its_value(tmp_path):
    r = load(write(tmp_path, "s.csv", "patient_id,session_date,test_spot\nP1,2025-01-02,maybe\n"))
    assert r.rejections.iloc[0][["row", "field", "value", "reason"]].tolist() == [
        2, "test_spot", "maybe", "not a yes/no value"]


@pytest.mark.parametrize("raw,reason", [
    ("2025-02-31", "impossible date"), ("2025-13-01", "impossible date"),
    ("03/04/2025", "not a date in the form YYYY-MM-DD; set date_format in the mapping file"),
    ("02.01.2025", "not a date in the form YYYY-MM-DD; set date_format in the mapping file"),
    ("", "missing session_date"),
])
def test_dates_iso_only_without_format(tmp_path, raw, reason):
    r = load(write(tmp_path, "s.csv", f"patient_id,session_date\nP1,{raw}\nP2,2025-01-02\n"))
    accounted(r)
    assert r.rejections["reason"].tolist() == [reason]
    assert r.rejections["value"].tolist() == [raw]


def test_date_format_rejects_impossible_dates_and_accepts_iso(tmp_path):
    p = write(tmp_path, "s.csv", "patient_id,session_date\nP1,31.02.2025\nP2,28.02.2025\n"
              "P3,2025-03-01\nP4,2025/03/01\nP5,1.3.2025\n")
    m = write(tmp_path, "m.toml", '[source]\ndate_format = "%d.%m.%Y"\n')
    r = load(p, mapping=m)
    assert r.data["session_date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2025-02-28", "2025-03-01", "2025-03-01"]
    assert r.rejections["reason"].tolist() == [
        "impossible date", "not a date in the form YYYY-MM-DD or DD.MM.YYYY"]


def test_iso_datetime_keeps_the_date(tmp_path):
    r = load(write(tmp_path, "s.csv", "patient_id,session_date\nP1,2025-01-02T14:30:00\n"))
    assert r.data["session_date"].iloc[0] == pd.Timestamp("2025-01-02")


def test_numbers_strict(tmp_path):
    p = write(tmp_path, "s.csv", "patient_id,session_date,energy_start_mj,passes\n"
              "P1,2025-01-02,25 ,2\nP2,2025-01-03,abc,2\nP3,2025-01-04,25,2.5\n"
              "P4,2025-01-05,n/a,\nP5,2025-01-06,\"2,5\",2\nP6,2025-01-07,inf,2\n")
    r = load(p)
    accounted(r)
    assert r.data["patient_id"].tolist() == ["P1", "P4"]
    assert r.data["energy_start_mj"].iloc[1] is pd.NA
    assert r.rejections[["row", "reason"]].values.tolist() == [
        [3, "not a number"], [4, "not a whole number"], [6, "not a number"], [7, "not a number"]]


def test_whole_number_fields_reject_fractions_cell_by_cell(tmp_path):
    """pain_nrs is also an instrument's name; in a sessions export it is whole, as
    passes: 3.5 is rejected, not cut to 3; 'abc' is still 'not a number'."""
    p = write(tmp_path, "s.csv", "patient_id,session_date,pain_nrs,passes\n"
              "P1,2025-01-02,3,2\nP2,2025-01-03,3.5,2\nP3,2025-01-04,7,abc\n"
              "P4,2025-01-05,2,2.5\n")
    r = load(p)
    assert r.data["pain_nrs"].tolist() == [3]
    assert str(r.data["pain_nrs"].dtype) == "Int64"
    assert r.rejections[["row", "field", "reason"]].values.tolist() == [
        [3, "pain_nrs", "not a whole number"], [4, "passes", "not a number"],
        [5, "passes", "not a whole number"]]


def test_unusable_file_hints_at_decimal_only_for_numbers_with_the_other_sign(tmp_path):
    comma = load(write(tmp_path, "a.csv", "patient_id,session_date,energy_start_mj\n"
                       'P1,2025-01-02,"27,5"\n'))
    assert "check decimal" in comma.unusable()
    words = load(write(tmp_path, "b.csv", "patient_id,session_date,energy_start_mj\n"
                       "P1,2025-01-02,x\n"))
    assert "not a number" in words.unusable() and "decimal" not in words.unusable()


def test_placeholder_patient_ids_are_missing_ids(tmp_path):
    p = write(tmp_path, "s.csv", "patient_id,session_date\nP1,2025-01-02\nn/a,2025-01-02\n"
              " - ,2025-01-03\n?,2025-01-04\nNULL,2025-01-05\n")
    r = load(p)
    assert r.data["patient_id"].tolist() == ["P1"]
    assert r.rejections[["row", "reason", "value"]].values.tolist() == [
        [3, "missing patient_id", "n/a"], [4, "missing patient_id", " - "],
        [5, "missing patient_id", "?"], [6, "missing patient_id", "NULL"]]


def test_mapping_saved_with_a_byte_order_mark_is_read(tmp_path):
    p = write(tmp_path, "s.csv", "Nr;Datum\nP1;2025-01-02\n")
    m = tmp_path / "m.toml"
    m.write_text('[columns]\npatient_id = "Nr"\nsession_date = "Datum"\n', encoding="utf-8-sig")
    assert load(p, mapping=m).data["patient_id"].tolist() == ["P1"]


def test_numbers_with_a_typographic_minus_grouped_digits_or_a_percent_sign(tmp_path):
    p = write(tmp_path, "s.csv", "patient_id,session_date,coverage_pct,pass_wait_min\n"
              "P1,2025-01-02,8%,\u22122\nP2,2025-01-03,8 %,1 234\nP3,2025-01-04,8,2 5\n"
              "P4,2025-01-05,8,- 3\nP5,2025-01-06,8,1\u00a0234\n")
    r = load(p)
    assert r.data["coverage_pct"].tolist() == [8, 8, 8, 8]
    assert r.data["pass_wait_min"].tolist() == [-2, 1234, -3, 1234]
    assert r.rejections[["row", "field", "value"]].values.tolist() == [
        [4, "pass_wait_min", "2 5"]]


def test_a_mapping_names_a_wrapped_header_as_it_reads(tmp_path):
    """A header typed with Alt-Enter in Excel ('Session\\ndate') is 'Session date'."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Patient  ID", "Session\ndate"])
    ws.append(["P1", dt.date(2025, 1, 2)])
    wb.save(tmp_path / "s.xlsx")
    m = write(tmp_path, "m.toml", '[columns]\npatient_id = "patient id"\n'
              'session_date = "Session date"\n')
    assert load(tmp_path / "s.xlsx", mapping=m).data["patient_id"].tolist() == ["P1"]


def test_a_header_elsewhere_is_named_in_the_error(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.append(["overview"])
    ws = wb.create_sheet("Sessions")
    ws.append(["Session log"])
    ws.append([])
    ws.append(["patient_id", "session_date"])
    ws.append(["P1", dt.date(2025, 1, 2)])
    wb.save(tmp_path / "s.xlsx")
    with pytest.raises(LoadError, match="header was read from row 1 of the first sheet; if "
                                        "it is elsewhere, set header_row or sheet"):
        load(tmp_path / "s.xlsx")
    m = write(tmp_path, "m.toml", '[source]\nsheet = "Sessions"\nheader_row = 3\n')
    assert load(tmp_path / "s.xlsx", mapping=m).data["source_row"].tolist() == [4]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1"])
def test_header_only_csv_without_a_line_end_has_no_rows(tmp_path, encoding):
    p = write(tmp_path, "s.csv", "patient_id,session_date,Coverage %", encoding=encoding)
    m = write(tmp_path, "m.toml", f'[source]\nencoding = "{encoding}"\n'
              '[columns]\ncoverage_pct = "Coverage %"\n')
    r = load(p, mapping=m)
    assert (r.rows_read, r.rows_loaded, r.rows_rejected) == (0, 0, 0)
    assert r.columns_used["coverage_pct"] == "Coverage %"


def test_a_mapping_prefers_the_header_written_exactly_as_it_names_it(tmp_path):
    p = write(tmp_path, "s.csv", 'patient_id,session_date,Energy (mJ),"Energy\n(mJ)"\n'
              "P1,2024-01-02,20,30\n")
    m = write(tmp_path, "m.toml", '[columns]\nenergy_start_mj = "Energy (mJ)"\n')
    assert load(p, mapping=m).data["energy_start_mj"].tolist() == [20]


def test_dates_and_percents_a_spreadsheet_gets_wrong_are_warned(tmp_path):
    """8 % in a percent cell is 0.08; 3 in a date cell is 1900-01-02; a two-digit year
    puts a birth after the session."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["patient_id", "session_date", "coverage_pct", "date_of_birth"])
    ws.append(["P1", dt.date(2025, 1, 2), 0.08, dt.date(1980, 5, 6)])
    ws.append(["P2", 3, 8, dt.date(2055, 5, 12)])
    ws.append(["P3", dt.date(2025, 1, 2), 8, dt.date(2025, 6, 1)])
    wb.save(tmp_path / "s.xlsx")
    r = load(tmp_path / "s.xlsx")
    assert r.rows_loaded == 3  # kept as they are
    got = sorted(zip(r.warnings["row"], r.warnings["field"], r.warnings["kind"], strict=True))
    assert got == [(2, "coverage_pct", "unit"), (3, "date_of_birth", "future_date"),
                   (3, "session_date", "implausible"), (4, "date_of_birth", "implausible")]
    assert "fraction" in r.warnings.loc[r.warnings["field"] == "coverage_pct", "message"].iloc[0]


def test_duplicates_rejected_naming_the_first_row(tmp_path):
    r = load(write(tmp_path, "s.csv", HEADER + GOOD + GOOD + "P2,2025-01-03,25,yes,8,2,Dr. A\n"
                   + GOOD))
    assert r.rejections[["row", "reason"]].values.tolist() == [
        [3, "duplicate of row 2"], [5, "duplicate of row 2"]]


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize("final_eol", [True, False])
@pytest.mark.parametrize("other", ["one line", "multi-line", "short row"])
def test_duplicates_are_the_same_record_text_whatever_else_the_file_holds(
        tmp_path, eol, final_eol, other):
    """Whether a row repeats another must not depend on other rows (a note spanning
    lines, a row with too few fields) or on the file's last line lacking its line end."""
    rows = ["patient_id;session_date;energy_start_mj;notes",
            "P1;2025-01-05;25;A", 'P1;2025-01-05;25;"A"',  # other text: not a repeat
            {"one line": "P2;2025-01-06;25;one line", "short row": "P2;2025-01-06",
             "multi-line": 'P2;2025-01-06;25;"two\nlines"'}[other],
            "P1;2025-01-05;25;A"]
    text = eol.join(r.replace("\n", eol) for r in rows) + (eol if final_eol else "")
    r = load(write(tmp_path, "s.csv", text))
    accounted(r)
    last = 6 if other == "multi-line" else 5
    dups = r.rejections[r.rejections["field"] == "(whole row)"]
    assert dups[["row", "reason"]].values.tolist()[-1] == [last, "duplicate of row 2"]
    assert r.data["source_row"].tolist() == [2, 3] + ([4] if other != "short row" else [])


def test_repeated_session_id_rejected(tmp_path):
    r = load(write(tmp_path, "s.csv", "session_id,patient_id,session_date\n"
                   "S1,P1,2025-01-02\nS1,P2,2025-01-03\n"))
    assert r.rejections[["row", "field", "reason"]].values.tolist() == [
        [3, "session_id", "session_id already used on row 2"]]


def test_implausible_values_kept_and_warned(tmp_path):
    r = load(write(tmp_path, "s.csv", HEADER + "P1,2025-01-02,0.025,yes,80,2,Dr. A\n"))
    assert r.rows_loaded == 1
    assert r.data["energy_start_mj"].iloc[0] == 0.025  # unchanged
    assert r.data["coverage_pct"].iloc[0] == 80
    assert sorted(r.warnings["kind"]) == ["implausible", "unit"]
    assert set(r.warnings["row"]) == {2}
    pain = load(write(tmp_path, "p.csv", "patient_id,session_date,pain_nrs\nP1,2025-01-02,12\n"))
    assert pain.warnings["message"].tolist() == ["pain_nrs outside the plausible range 0–10"]


def test_warnings_show_the_value_as_the_file_writes_it(tmp_path):
    """A reviewer looks the cell up: '80,5' in a decimal-comma export, not 80.5."""
    text = ("patient_id;session_date;energy_start_mj;coverage_pct;session_date_2\n"
            "P1;2025-01-02;25;80,5;x\nP2;2025-01-03;0,025;8;y\n")
    p = write(tmp_path, "s.csv", text)
    (tmp_path / "s.mapping.toml").write_text('[source]\ndecimal = ","\n', encoding="utf-8")
    r = load(p)
    got = sorted(zip(r.warnings["row"], r.warnings["field"], r.warnings["value"],
                     strict=True))
    assert got == [(2, "coverage_pct", "80,5"), (3, "energy_start_mj", "0,025")]
    assert r.data["coverage_pct"].tolist() == [80.5, 8]


# --- outcomes --------------------------------------------------------------------------------


def test_long_outcomes_checked_against_the_instrument_registry(tmp_path):
    p = write(tmp_path, "outcomes.csv", "patient_id,assessment_date,instrument,score,rater\n"
              "P1,2025-05-01,satisfaction,5,patient\nP1,2025-05-01,satisfaction,7,patient\n"
              "P1,2025-05-01,dlqi_x,3,patient\nP1,2025-05-01,GAIS,2,Clinician\n")
    r = load(p)
    accounted(r)
    assert r.data["instrument"].tolist() == ["satisfaction", "gais"]
    assert r.data["rater"].tolist() == ["patient", "clinician"]
    assert [x.split(" (")[0] for x in r.rejections["reason"]] == [
        "outside satisfaction's range 1–5", "unknown instrument"]


def test_long_outcomes_read_instruments_as_wide_headers_are_read(tmp_path):
    """'Hair density' names hair_density in a long file as in a wide header; a missing
    rater is the instrument's own."""
    p = write(tmp_path, "outcomes.csv", "patient_id,assessment_date,instrument,score,rater\n"
              "P1,2025-01-10,Hair density,120,\nP1,2025-01-10, GPA ,\u22122,\n"
              "P2,2025-01-11,satisfaction,6,patient\nP3,2025-01-12,???,2,\n")
    r = load(p)
    assert r.data[["instrument", "score", "rater"]].values.tolist() == [
        ["hair_density", 120, "clinician"], ["gpa", -2, "clinician"]]
    assert [x.split(" (")[0] for x in r.rejections["reason"]] == [
        "outside satisfaction's range 1–5", "unknown instrument"]


def test_outcome_range_without_a_top_reads_as_a_lower_bound(tmp_path):
    p = write(tmp_path, "outcomes.csv", "patient_id,assessment_date,instrument,score\n"
              "P1,2025-01-10,hair_density,-4\n")
    assert load(p).rejections["reason"].tolist() == ["outside hair_density's range ≥ 0"]


def test_wide_outcomes_become_long(tmp_path):
    p = write(tmp_path, "followup.csv", "patient_id,assessment_date,satisfaction,gais,hair_density\n"
              "P1,2025-05-01,4,2,150.5\nP2,2025-05-02,,3,\nP3,2025-05-03,,,\n")
    r = load(p, table="outcomes")
    assert r.rows_read == 3 and r.rows_loaded == 2 and r.rows_rejected == 1
    assert len(r.data) == 4
    assert r.data[["patient_id", "instrument", "score", "rater"]].values.tolist() == [
        ["P1", "satisfaction", 4.0, "patient"], ["P1", "gais", 2.0, "clinician"],
        ["P1", "hair_density", 150.5, "clinician"], ["P2", "gais", 3.0, "clinician"]]
    assert r.data["source_row"].tolist() == [2, 2, 2, 3]


# --- XLSX and Parquet ------------------------------------------------------------------------


def test_xlsx_sheet_header_row_real_dates_and_serials(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.title = "Info"
    wb.active["A1"] = "not this one"
    ws = wb.create_sheet("Behandlungen")
    ws.append(["Praxis Export"])
    ws.append([])
    ws.append(["Nr", "Datum", "Energie (J)", "Testspot"])
    ws.append([1001, dt.datetime(2025, 1, 2), "0,025", "ja"])
    ws.append(["P2", 45660, 0.03, "nein"])  # 45660 is Excel's serial for 2025-01-03
    ws.append(["P3", "31.02.2025", 0.03, "ja"])
    ws.append([None, None, None, None])
    ws.append(["P4", "04.01.2025", 0.02, None])
    path = tmp_path / "s.xlsx"
    wb.save(path)
    m = write(tmp_path, "m.toml", '[source]\ntable = "sessions"\nsheet = "Behandlungen"\n'
              'header_row = 3\ndecimal = ","\ndate_format = "%d.%m.%Y"\n'
              '[columns]\npatient_id = "Nr"\nsession_date = "Datum"\n'
              'energy_start_mj = "Energie (J)"\ntest_spot = "Testspot"\n'
              '[units]\nenergy_start_mj = "J"\n[values]\ntrue = ["ja"]\nfalse = ["nein"]\n')
    r = load(path, mapping=m)
    accounted(r)
    assert r.rows_read == 4
    assert r.data["patient_id"].tolist() == ["1001", "P2", "P4"]
    assert r.data["session_date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2025-01-02", "2025-01-03", "2025-01-04"]
    assert r.data["energy_start_mj"].tolist() == [25.0, 30.0, 20.0]
    assert r.data["test_spot"].tolist()[:2] == [True, False]
    assert r.data["source_row"].tolist() == [4, 5, 8]  # Excel row numbers
    assert r.rejections[["row", "reason"]].values.tolist() == [[6, "impossible date"]]


def test_parquet_yes_no_blank_follows_the_mapping_as_in_a_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"patient_id": ["P1", "P2"], "session_date": ["2024-01-01"] * 2,
                             "test_spot": pa.array([True, None])}), tmp_path / "s.parquet")
    m = write(tmp_path, "m.toml", '[values]\nfalse = [""]\n')
    assert load(tmp_path / "s.parquet", mapping=m).data["test_spot"].tolist() == [True, False]
    assert load(tmp_path / "s.parquet").data["test_spot"].tolist() == [True, pd.NA]


def test_parquet_round_trip(tmp_path):
    df = pd.DataFrame({"patient_id": ["P1", "P2", None], "session_date": pd.to_datetime(
        ["2025-01-02", "2025-01-03", "2025-01-04"]), "energy_start_mj": [25.0, np.nan, 30.0],
        "test_spot": [True, None, False]})
    path = tmp_path / "s.parquet"
    df.to_parquet(path)
    r = load(path)
    accounted(r)
    assert r.data["patient_id"].tolist() == ["P1", "P2"]
    assert r.data["energy_start_mj"].iloc[1] is pd.NA
    assert r.rejections[["row", "reason"]].values.tolist() == [[3, "missing patient_id"]]


@pytest.mark.parametrize("n", [4, 8_000])  # short and long columns take different paths
def test_parquet_typed_columns_load_as_their_values(tmp_path, n):
    """Arrow-typed columns as a device writes them: dates, yes/no and whole numbers with
    missing cells, decimals, zoned timestamps; a pandas index stays out of the data."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    k = n // 4
    day = [dt.date(2025, 1, 2), None, dt.date(2024, 12, 31), dt.date(1970, 5, 6)] * k
    when = pd.to_datetime(["2025-01-02 23:30", "2025-01-03 08:00", "2025-01-04 00:10",
                           "2025-01-05 12:00"] * k).tz_localize("Europe/Berlin")
    table = pa.table({
        "patient_id": pa.array([f"P{i}" for i in range(n)]),
        "session_date": pa.array(when),
        "date_of_birth": pa.array(day, pa.date32()),
        "test_spot": pa.array([True, None, False, True] * k),
        "passes": pa.array([2, None, 3, 1] * k, pa.int32()),
        "energy_start_mj": pa.array([decimal.Decimal("27.5"), None, decimal.Decimal(30),
                                     decimal.Decimal("0.030")] * k, pa.decimal128(6, 3)),
        "pain_nrs": pa.array([3, 4, 5, 6] * k, pa.uint8()),
    })
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    r = load(path, progress=False)
    accounted(r)
    assert r.rows_loaded == n
    d = r.data
    assert d["session_date"].iloc[:4].tolist() == list(pd.to_datetime(
        ["2025-01-02", "2025-01-03", "2025-01-04", "2025-01-05"]))  # the local day
    assert d["date_of_birth"].iloc[:4].tolist() == [pd.Timestamp(v) if v else pd.NaT
                                                    for v in day[:4]]
    assert d["test_spot"].iloc[:4].tolist() == [True, pd.NA, False, True]
    assert d["passes"].iloc[:4].tolist() == [2, pd.NA, 3, 1]
    assert str(d["passes"].dtype) == "Int64"
    assert d["energy_start_mj"].iloc[:4].tolist() == [27.5, pd.NA, 30.0, 0.03]
    assert d["pain_nrs"].iloc[:4].tolist() == [3, 4, 5, 6]

    # written by pandas with the ids as its index: they are the export's patient_id
    # column; an unnamed index (row numbers) is not a column of the export
    for frame in (table.to_pandas().set_index("patient_id"),
                  table.to_pandas().set_index(pd.Index(range(5, 5 + n)))):
        frame.to_parquet(tmp_path / "p.parquet")
        r2 = load(tmp_path / "p.parquet", progress=False)
        assert r2.unknown_columns == []
        pd.testing.assert_frame_equal(r2.data.drop(columns="source_file"),
                                      r.data.drop(columns="source_file"))


# --- errors ----------------------------------------------------------------------------------


def test_errors_are_one_sentence(tmp_path):
    with pytest.raises(LoadError, match="does not exist"):
        load(tmp_path / "missing.csv")
    with pytest.raises(LoadError, match="has no session_date column"):
        load(write(tmp_path, "s.csv", "patient_id,energy_start_mj\nP1,25\n"))
    p = write(tmp_path, "t.csv", "Nr,Datum\nP1,2025-01-02\n")
    m = write(tmp_path, "m.toml", '[columns]\npatient_id = "Patient"\nsession_date = "Datum"\n')
    with pytest.raises(LoadError, match="names column 'Patient' for patient_id"):
        load(p, mapping=m)
    wb = openpyxl.Workbook()
    wb.save(tmp_path / "w.xlsx")
    m2 = write(tmp_path, "m2.toml", '[source]\nsheet = "Nope"\n')
    with pytest.raises(LoadError, match="no sheet named 'Nope'"):
        load(tmp_path / "w.xlsx", mapping=m2)


@pytest.mark.parametrize("text,match", [
    ("[source]\ntable = 'visits'\n", "table must be"),
    ("[columns]\nenergy = 'E'\n", "not a field"),
    ("[units]\nenergy_start_mj = 'kJ'\n", "unit 'kJ'"),
    ("[values]\ntrue = ['x']\nfalse = ['x']\n", "both true and false"),
    ("[source\n", "not valid TOML"),
    ("[source]\ndate_format = 'dd.mm.yyyy'\n", "no % codes"),
])
def test_bad_mapping_files(tmp_path, text, match):
    p = write(tmp_path, "s.csv", "patient_id,session_date\nP1,2025-01-02\n")
    m = write(tmp_path, "m.toml", text)
    with pytest.raises(LoadError, match=match):
        load(p, mapping=read_mapping(m))


def test_input_file_never_changed(tmp_path):
    p = write(tmp_path, "s.csv", HEADER + GOOD + GOOD + "P3,2025-02-31,1,yes,8,2,Dr. A\n")
    before = p.read_bytes()
    load(p)
    assert p.read_bytes() == before


# --- property: nothing lost, nothing altered ---------------------------------------------------

COLUMNS = ["patient_id", "session_date", "energy_start_mj", "passes", "test_spot", "notes"]
JUNK = ["", "  ", "abc", "2025-02-31", "2025-13-01", "03/04/2025", "x", "no", "-1", "1e400",
        "NaN", "n/a", "3,5", "2.5", ";", '"', "a\nb", "é", "=1+1", "0", "1", "1e3", " 7 ",
        "1 234", "2 5", "\u22122"]


def oracle(column: str, text: str):
    """What the loader must make of one cell: a value, None (missing), or BAD."""
    t = text.strip()
    if column == "notes":
        return t or None
    if t.lower() in MISSING_WORDS:  # also for ids: 'n/a' is no patient
        return None
    if column == "patient_id":
        return t
        return None
    if column == "session_date":
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            return "BAD"
        try:
            return pd.Timestamp(dt.date.fromisoformat(t))
        except ValueError:
            return "BAD"
    if column == "test_spot":
        low = t.lower()
        return True if low in TRUE_WORDS else False if low in FALSE_WORDS else "BAD"
    try:  # spaces only between groups of three digits; U+2212 is a minus
        u = re.sub(r"(?<=\d)[ \u00a0\u202f]+(?=\d{3}(?!\d))", "", t).replace("\u2212", "-")
        v = float(re.sub(r"^([+-])\s+", r"\1", u))
    except ValueError:
        return "BAD"
    if not math.isfinite(v) or (column == "passes" and v != int(v)):
        return "BAD"
    return v


@st.composite
def exports(draw):
    n = draw(st.integers(1, 25))
    rows = [[f"P{i % 7}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}", str(20 + i % 11),
             str(2 + i % 2), "yes" if i % 3 else "no", f"note {i}"] for i in range(n)]
    cells = st.tuples(st.integers(0, n - 1), st.integers(0, len(COLUMNS) - 1),
                      st.sampled_from(JUNK))
    for r, c, junk in draw(st.lists(cells, max_size=12)):
        rows[r][c] = junk
    dup = draw(st.lists(st.integers(0, n - 1), max_size=3))
    for r in dup:  # exact repeats of earlier rows
        rows.append(list(rows[r]))
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=exports())
def test_corrupted_exports_account_for_every_row_and_keep_values(tmp_path, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    path = tmp_path / "sessions.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    r = load(path)
    assert r.rows_read == len(rows) == r.rows_loaded + r.rows_rejected
    # expected fate of each row, worked out cell by cell
    seen: set[tuple[str, ...]] = set()
    expected_loaded = []
    for i, row in enumerate(rows):
        vals = [oracle(c, t) for c, t in zip(COLUMNS, row, strict=True)]
        ok = "BAD" not in vals and vals[0] is not None and vals[1] is not None \
            and tuple(row) not in seen
        seen.add(tuple(row))
        if ok:
            expected_loaded.append((i, vals))
    assert r.rows_loaded == len(expected_loaded)
    loaded_rows = r.data["source_row"].tolist()
    for k, (_i, vals) in enumerate(expected_loaded):
        got = r.data.iloc[k]
        for c, v in zip(COLUMNS, vals, strict=True):
            g = got[c]
            if v is None:
                assert g is pd.NA or pd.isna(g), (c, g)
            else:
                assert g == v, (c, g, v)
    assert len(set(loaded_rows)) == len(loaded_rows)
    assert set(loaded_rows).isdisjoint(set(r.rejections["row"]))


@st.composite
def csv_layouts(draw):
    """A CSV text and the line each data record starts on: values with line breaks,
    quotes and delimiters inside, blank lines, lines of delimiters, CRLF or LF, title
    lines above the header."""
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    cell = st.one_of(st.sampled_from(["", "x", "a b", "2025-01-02"]),
                     st.sampled_from(['"two\nlines"', '"say ""hi"""', '"a,b"', '""',
                                      '"\n"', '"end\r\nx"']))
    titles = draw(st.integers(0, 2))
    lines = [f"title {i}" for i in range(titles)]
    lines.append("patient_id,session_date,notes")
    starts = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["record", "record", "record", "blank", "commas"]))
        line_no = sum(part.count("\n") + 1 for part in lines) + 1
        if kind == "blank":
            lines.append("")
            continue
        cells = ["", "", ""] if kind == "commas" else \
            [f"P{len(starts)}", "2025-01-02", draw(cell)]
        starts.append(line_no)
        lines.append(",".join(cells))
    lines = [part.replace("\n", eol) if "\r" not in part else part for part in lines]
    records = [part for part in lines[titles + 1:] if part]
    return eol.join(lines) + draw(st.sampled_from(["", eol])), starts, titles + 1, records


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=csv_layouts())
def test_rows_are_numbered_by_the_line_each_record_starts_on(tmp_path, layout):
    """Record lines followed through quotes (vectorised) and Python's csv module agree
    with where the records were written; the record texts (duplicate keys) are those
    written, without their line ends."""
    from outcomes.load import Mapping, _csv_line_numbers, _record_lines, _scan

    text, starts, header_row, records = layout
    data = text.encode("utf-8")
    buf = np.frombuffer(data, dtype=np.uint8)
    breaks, quotes = _scan(buf)
    found = _record_lines(buf, breaks, quotes, ",", header_row - 1)
    assert found is not None
    lines, spans = found
    assert lines.tolist() == starts
    assert [buf[a:b].tobytes().decode() for a, b in zip(spans.starts, spans.stops,
                                                        strict=True)] == records
    assert _csv_line_numbers(data, Mapping(header_row=header_row), ",").tolist() == starts
    path = tmp_path / "s.csv"
    path.write_bytes(data)
    (tmp_path / "s.mapping.toml").write_text(f"[source]\nheader_row = {header_row}\n")
    r = load(path, progress=False)
    accounted(r)
    assert sorted(r.data["source_row"].tolist() + r.rejections["row"].tolist()) == starts


# --- the committed sample --------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def test_german_xlsx_loads_like_the_csv():
    """The same sessions as a German XLSX (via its mapping) load to the same rows and values."""
    a = load(SAMPLE / "sessions.csv")
    b = load(SAMPLE / "de" / "sessions.xlsx")  # mapping found beside it
    assert (a.rows_read, a.rows_loaded, a.rows_rejected) == (b.rows_read, b.rows_loaded,
                                                              b.rows_rejected)
    assert a.rejections["reason"].str[:14].tolist() == b.rejections["reason"].str[:14].tolist()
    assert (b.rejections["row"] - a.rejections["row"]).eq(2).all()  # two title rows above
    canonical = [c for c in a.data.columns if c not in ("source_file", "source_row",
                                                        "device_serial")]
    pd.testing.assert_frame_equal(a.data[canonical], b.data[canonical], check_dtype=True)
    # same cells warned; the German file declares J, so 0.025 mJ is "implausible" there
    # rather than "looks like joules"
    assert a.warnings["field"].tolist() == b.warnings["field"].tolist()
    assert (b.warnings["row"] - a.warnings["row"]).eq(2).all()


def test_sample_planted_rows_reported_at_their_lines():
    from outcomes.sample import PLANTED

    loaded = {"sessions.csv": load(SAMPLE / "sessions.csv"),
              "outcomes.csv": load(SAMPLE / "outcomes.csv")}
    for p in PLANTED:
        r = loaded[p.file]
        rows = set(r.rejections["row"]) if p.expect == "rejected" else set(r.warnings["row"])
        assert p.line in rows, p
    for r in loaded.values():
        assert r.rows_read == r.rows_loaded + r.rows_rejected


def test_day_text_writes_each_day_as_arrow_would():
    """Derived session ids spell the day YYYY-MM-DD, also through the write-once path."""
    import pyarrow as pa

    from outcomes.load import _day_text

    rng = np.random.default_rng(3)
    days = (np.datetime64("1999-12-25") + rng.integers(0, 3000, 20_000)).astype("datetime64[D]")
    days[::11] = np.datetime64("NaT")
    assert _day_text(days).equals(pa.array(days, type=pa.date32()).cast(pa.large_string()))


def test_kept_text_columns_drop_exactly_the_rejected_rows(tmp_path):
    """Text of a large export with a few bad rows: slices around them, values unchanged."""
    n = 12_000
    bad = {5, 6, 4000, n - 1}
    rows = ["patient_id,session_date,operator,notes"]
    for i in range(n):
        date = "2025-02-31" if i in bad else f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"
        rows.append(f"P{i},{date}, Dr {i % 7} ,note {i}")
    path = tmp_path / "sessions.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    r = load(path, progress=False)
    kept = [i for i in range(n) if i not in bad]
    assert r.rows_loaded == len(kept)
    assert sorted(r.rejections["row"]) == sorted(i + 2 for i in bad)
    assert r.data["patient_id"].tolist() == [f"P{i}" for i in kept]
    assert r.data["operator"].tolist() == [f"Dr {i % 7}" for i in kept]  # stripped
    assert r.data["notes"].tolist() == [f"note {i}" for i in kept]
    assert r.data["source_row"].tolist() == [i + 2 for i in kept]


def test_xlsx_text_conversion_by_blocks_keeps_only_all_text_columns():
    """Block-wise conversion gives each all-text column exactly (missing as null, empty
    text kept), and drops a column when any later block holds a number or a date."""
    import pyarrow as pa

    from outcomes.load import _arrow_texts

    n = 10_000
    text = np.array([f"P{i}" if i % 9 else None for i in range(n)], dtype=object)
    late_number = np.array([f"x{i}" for i in range(n)], dtype=object)
    late_number[n - 3] = 4.5
    late_date = np.array(["" for _ in range(n)], dtype=object)
    late_date[5000] = dt.date(2025, 1, 2)
    numbers = np.arange(n, dtype=float).astype(object)
    got = _arrow_texts(np.stack([text, late_number, late_date, numbers]))
    assert sorted(got) == [0]
    assert got[0].equals(pa.array(text, type=pa.large_string(), from_pandas=True))


@pytest.mark.parametrize("kind", ["date", "float", "int", "bool"])
def test_parsing_each_distinct_value_once_matches_parsing_every_cell(kind):
    """Long columns are parsed one distinct value at a time; values, bad cells and the
    reasons on them must be exactly those of parsing every cell."""
    from outcomes import schema
    from outcomes.load import Mapping, _parse_field, parse_bool, parse_date, parse_float, parse_int

    rng = np.random.default_rng(7)
    pool = {
        "date": ["2025-01-02", "2024-12-31", "2025-02-31", "03/04/2025", " 2025-03-04 ", "",
                 "2025-01-02T10:00", "n/a", "12"],
        "float": ["25", "27.5", "0.03", "1e2", "abc", " 30 ", "", "7,5", "inf", "-"],
        "int": ["2", "3", "2.5", "x", "", " 4 ", "1e1"],
        "bool": ["yes", "No", " TRUE ", "x", "maybe", "", "0", "1", "null"],
    }[kind]
    n = 20_000
    s = pd.Series(pd.array(rng.choice(np.array(pool + [None], dtype=object), n),
                           dtype=pd.StringDtype("pyarrow")))
    field = {"date": "session_date", "float": "energy_start_mj", "int": "passes",
             "bool": "test_spot"}[kind]
    fields = {f.name: f for f in schema.SESSIONS}
    got_values, got_bad, got_why = _parse_field(field, s, fields, Mapping(), "csv",
                                                TRUE_WORDS, FALSE_WORDS)
    every_cell = {"date": parse_date, "float": parse_float, "int": parse_int,
                  "bool": lambda x: parse_bool(x, TRUE_WORDS, FALSE_WORDS)}
    values, bad, why = every_cell[kind](s)
    pd.testing.assert_series_equal(got_values.reset_index(drop=True), values.reset_index(drop=True))
    assert np.array_equal(got_bad, bad)
    assert got_bad.any() and not got_bad.all()
    if isinstance(why, pd.Series):
        assert got_why.to_numpy(dtype=object).tolist() == why.to_numpy(dtype=object).tolist()
        assert set(why[bad]) - {""}, "the bad cells carry their reasons"
    else:
        assert got_why == why


def test_a_duplicate_has_one_wording_everywhere(tmp_path):
    """`duplicate of row N` with its row number: in the rejection log, in `validate`'s
    grouped summary, in the data-quality table and in the README's rejection table."""
    from outcomes.charts import quality
    from outcomes.cli import validate_text

    path = write(tmp_path, "s.csv", "patient_id,session_date\nP1,2025-01-02\nP1,2025-01-02\n"
                 "P2,2025-01-03\nP2,2025-01-03\nP1,2025-01-02\n")
    r = load(path, progress=False)
    assert r.rejections["reason"].tolist() == ["duplicate of row 2", "duplicate of row 4",
                                               "duplicate of row 2"]
    text = validate_text([r], None)
    assert "(whole row): duplicate of row N (rows 3, 5, 6)" in text
    table = quality.reason_table(r.rejections)
    assert table["Reason"].tolist() == ["duplicate of row N"]
    one = load(write(tmp_path, "t.csv", "patient_id,session_date\nP1,2025-01-02\n"
                     "P1,2025-01-02\n"), progress=False)
    assert "(whole row): duplicate of row 2 (rows 3)" in validate_text([one], None)
    assert quality.reason_table(one.rejections)["Reason"].tolist() == ["duplicate of row 2"]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "| `duplicate of row N` |" in readme
    for wording in ("an earlier row", "duplicate (rows", "duplicate of an"):
        assert wording not in text + " ".join(table["Reason"])
    assert "duplicate of an" not in readme and "duplicate (rows" not in readme
