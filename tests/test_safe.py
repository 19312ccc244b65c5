"""Formula payloads are shown, never run, in every CSV and XLSX the project writes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from outcomes.audit import run_audit, write_audit
from outcomes.cli import main
from outcomes.dataset import load_inputs
from outcomes.protocol import load_protocol
from outcomes.report.workbook import write_workbook
from outcomes.safe import neutralise, safe_text

PAYLOADS = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "@SUM(A1:A2)",
            "-2+3", "\t=1+1", " =1+1", "\r=1+1", "\u3000=1+1", "\uff1dSUM(A1)", "\n@x"]


def dangerous(cell: str) -> bool:
    """Text a spreadsheet could run: starts with a formula character, maybe after blanks."""
    return cell.lstrip(" \t\r\n\u3000\u00a0").startswith(("=", "+", "-", "@", "\uff1d")) \
        or cell.startswith(("\t", "\r"))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_safe_text_quotes_every_payload_once(payload):
    assert safe_text(payload) == "'" + payload
    assert safe_text(safe_text(payload)) == "'" + payload
    assert not dangerous(safe_text(payload))


@pytest.mark.parametrize("value", ["plain", "a=b", "100 %", "", "'=already", "e-mail"])
def test_safe_text_leaves_harmless_text(value):
    assert safe_text(value) == value


def test_neutralise_keeps_numbers_dtypes_and_missing_values():
    df = pd.DataFrame({
        "=head": ["=1+1", "ok", None],
        "n": [-1.5, 2.0, np.nan],
        "i": pd.array([-3, None, 4], dtype="Int64"),
        "mixed": pd.Series([-7, "-7", "<8"], dtype=object),
        "s": pd.array(["@x", None, "y"], dtype="string"),
        "c": pd.Categorical(["+a", "b", "+a"]),
        "d": pd.to_datetime(["2025-01-01", None, "2025-02-01"]),
    })
    out = neutralise(df)
    assert list(out.columns) == ["'=head", "n", "i", "mixed", "s", "c", "d"]
    assert out["'=head"].tolist()[:2] == ["'=1+1", "ok"] and pd.isna(out["'=head"].iloc[2])
    assert out["n"].equals(df["n"]) and out["i"].equals(df["i"]) and out["d"].equals(df["d"])
    assert out["mixed"].tolist() == [-7, "'-7", "<8"]  # a number stays a number
    assert out["s"].dtype == df["s"].dtype and out["s"].iloc[0] == "'@x"
    assert out["c"].tolist() == ["'+a", "b", "'+a"]
    assert df.columns[0] == "=head" and df["=head"].iloc[0] == "=1+1"  # input untouched
    assert neutralise(out).equals(out)


def csv_cells(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [c for row in csv.reader(fh) for c in row]


def xlsx_cells(path: Path) -> list[openpyxl.cell.Cell]:
    wb = openpyxl.load_workbook(path)
    return [c for ws in wb.worksheets for row in ws.iter_rows() for c in row]


def assert_inert(cells: list[str], *expected: str) -> None:
    for cell in cells:
        assert not dangerous(cell), cell
    for e in expected:
        assert e in cells, (e, sorted(set(cells))[:40])


def test_workbook_neutralises_every_sheet_header_and_about_value(tmp_path):
    sheets = {"One": pd.DataFrame({"=h": PAYLOADS, "n": np.arange(len(PAYLOADS)) - 5}),
              "Two": pd.DataFrame({"x": pd.array(PAYLOADS, dtype="string")})}
    path = write_workbook(tmp_path / "w.xlsx", [("@label", "=about"), ("list", ["-1", "b"])],
                          sheets)
    cells = xlsx_cells(path)
    assert all(c.data_type != "f" for c in cells)
    texts = [c.value for c in cells if isinstance(c.value, str)]
    # XML reads a carriage return back as a line feed
    assert_inert(texts, "'=h", "'@label", "'=about", "'-1, b",
                 *("'" + p.replace("\r", "\n") for p in PAYLOADS))
    numbers = [c.value for c in openpyxl.load_workbook(path)["One"]["B"][1:]]
    assert numbers == list(range(-5, len(PAYLOADS) - 5))  # negative numbers stay numbers


@pytest.fixture
def hostile_sessions(tmp_path) -> Path:
    rows = []
    for i, p in enumerate(PAYLOADS[:4]):
        rows.append({"session_id": p + f"{i}", "patient_id": f"{p}P{i}",
                     "session_date": f"2025-01-0{i + 1}", "clinic": p, "operator": p,
                     "indication": "hair_regrowth", "area": p, "energy_start_mj": 25,
                     "passes": 2})
    rows.append({**rows[0], "session_id": "S9", "passes": "=2+2"})  # rejected: its raw value
    path = tmp_path / "sessions.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_audit_outputs_are_inert(hostile_sessions, tmp_path):
    ds = load_inputs(hostile_sessions, progress=False)
    audit = run_audit(ds.sessions.data, load_protocol("flexsys-hair-regrowth"))
    paths = write_audit(audit, tmp_path / "out", ds.files(), rejections=ds.rejections())
    quoted = "'" + PAYLOADS[0]
    for name in ("verdicts", "flagged_sessions"):
        assert_inert(csv_cells(paths[name]), quoted, "'@SUM(A1:A2)", "'-2+3")
    assert_inert(csv_cells(paths["compliance"]))
    assert_inert(csv_cells(paths["rejected_rows"]), "'=2+2")
    cells = xlsx_cells(paths["workbook"])
    assert all(c.data_type != "f" for c in cells)
    assert_inert([c.value for c in cells if isinstance(c.value, str)], quoted, "'=2+2")


def test_validate_rejects_log_is_inert(hostile_sessions, tmp_path, capsys):
    rejects = tmp_path / "rejects.csv"
    assert main(["validate", str(hostile_sessions), "--rejects", str(rejects)]) == 0
    assert_inert(csv_cells(rejects), "'=2+2")
