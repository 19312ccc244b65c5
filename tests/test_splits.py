"""Exports written as several (outcomes.splits): the worked example and its parts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from outcomes.load import load
from outcomes.splits import Export, by_columns, by_period, localised, write_worked_example

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def test_the_worked_example_is_what_the_sample_makes(tmp_path):
    """data/sample/multi is made from data/sample, byte for byte."""
    written = write_worked_example(SAMPLE, tmp_path)
    assert sorted(p.name for p in written) == sorted(
        p.name for p in (SAMPLE / "multi").iterdir() if p.name != "README.md")
    for p in written:
        assert p.read_bytes() == (SAMPLE / "multi" / p.name).read_bytes(), p.name


def test_clean_keeps_only_what_the_loader_loads():
    every = Export.read(SAMPLE / "sessions.csv")
    clean = Export.read(SAMPLE / "sessions.csv", clean=True)
    result = load(SAMPLE / "sessions.csv", progress=False)
    assert len(every.rows) == result.rows_read
    assert len(clean.rows) == result.rows_loaded


def test_periods_overlap_and_columns_keep_their_order():
    e = Export(["patient_id", "session_date", "x"],
               [["P1", "2025-01-01", "a"], ["P2", "2025-02-01", "b"], ["P3", "bad", "c"]])
    d = dt.date.fromisoformat
    a, b = by_period(e, [(d("2025-01-01"), d("2025-02-01")), (d("2025-02-01"), d("2025-03-01"))])
    assert [r[0] for r in a.rows] == ["P1", "P2", "P3"]  # an unreadable date: first export
    assert [r[0] for r in b.rows] == ["P2"]
    (only,) = by_columns(e, [["x", "patient_id"]])
    assert only.header == ["x", "patient_id"] and only.rows[0] == ["a", "P1"]


def test_localised_reads_back_to_the_same_values(tmp_path):
    e = Export(["patient_id", "session_date", "energy_start_mj", "notes"],
               [["P1", "2025-01-31", "12.5", "a.b"], ["P2", "2025-02-01", "20", ""]])
    de = localised(e, {"session_date": "Datum"}, ["session_date"], ["energy_start_mj"])
    assert de.header[1] == "Datum" and de.rows[0][1:] == ["31.01.2025", "12,5", "a.b"]
    de.write(tmp_path / "s.csv", delimiter=";")
    (tmp_path / "s.mapping.toml").write_text(
        '[source]\ndelimiter = ";"\ndecimal = ","\ndate_format = "%d.%m.%Y"\n'
        '[columns]\nsession_date = "Datum"\n', encoding="utf-8")
    e.write(tmp_path / "t.csv")
    a = load(tmp_path / "s.csv", table="sessions", progress=False).data
    b = load(tmp_path / "t.csv", table="sessions", progress=False).data
    cols = ["patient_id", "session_date", "energy_start_mj", "notes"]
    assert a[cols].equals(b[cols])
