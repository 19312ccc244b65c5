"""The command line, run as a subprocess the way a user or another tool runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outcomes", *args], capture_output=True, check=False,
                          text=True, cwd=cwd or ROOT, timeout=600)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    p = tmp_path / "sessions.csv"
    p.write_text("patient_id,session_date,energy_start_mj,room\n"
                 "P1,2025-01-02,25,3\nP1,2025-02-31,25,3\nP2,2025-01-03,0.025,4\n"
                 "P2,2025-01-03,0.025,4\n", encoding="utf-8")
    return p


def test_validate_json_contract(export, tmp_path):
    rejects = tmp_path / "out" / "rejects.csv"
    res = run("validate", str(export), "--json", "--rejects", str(rejects))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["rows_read"] == 4 and out["rows_loaded"] == 2 and out["rows_rejected"] == 2
    assert out["rows_read"] == out["rows_loaded"] + out["rows_rejected"]
    assert out["warnings"] == 1 and out["unknown_columns"] == ["room"]
    assert [(x["row"], x["field"], x["value"], x["reason"]) for x in out["rejections"]] == [
        (3, "session_date", "2025-02-31", "impossible date"),
        (5, "(whole row)", "", "duplicate of row 4")]
    assert set(out["rejections"][0]) == {"file", "row", "field", "value", "reason"}
    assert rejects.read_text().splitlines()[0] == "file,row,field,value,reason"


def test_validate_accounts_for_a_sessions_and_an_outcomes_export_together(tmp_path):
    """The README's example: both sample exports in one call, each accounted for."""
    sample = ROOT / "data" / "sample"
    res = run("validate", str(sample / "sessions.csv"), str(sample / "outcomes.csv"), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    files = {f["table"]: f for f in out["files"]}
    assert set(files) == {"sessions", "outcomes"}
    assert out["rows_read"] == sum(f["rows_read"] for f in files.values())
    assert out["rows_read"] == out["rows_loaded"] + out["rows_rejected"]
    assert out["rows_rejected"] == len(out["rejections"])
    text = run("validate", str(sample / "sessions.csv"), str(sample / "outcomes.csv"))
    assert text.returncode == 0 and "(outcomes)" in text.stdout and "(sessions)" in text.stdout


def test_validate_never_writes_the_rejection_log_over_an_input(export, tmp_path):
    before = export.read_bytes()
    mapping = tmp_path / "sessions.mapping.toml"
    mapping.write_text('[source]\ndelimiter = ","\n', encoding="utf-8")
    for target in (export, mapping):
        res = run("validate", str(export), "--rejects", str(target))
        assert res.returncode == 1
        assert "one of the input files" in res.stderr and "Traceback" not in res.stderr
    assert export.read_bytes() == before
    folder = run("validate", str(export), "--rejects", str(tmp_path))
    assert folder.returncode == 1 and "is a folder" in folder.stderr


def test_validate_readable_summary(export):
    res = run("validate", str(export))
    assert res.returncode == 0
    assert "4 rows read, 2 loaded, 2 rejected, 1 warnings" in res.stdout
    assert "looks like joules" in res.stdout and "room" in res.stdout


@pytest.mark.parametrize("args,code,message", [
    (["validate", "nope.csv"], 1, "does not exist"),
    (["validate"], 2, "required"),
    (["frobnicate"], 2, "invalid choice"),
    # a mistyped flag gets its own command's usage, not the top-level one
    (["audit", "s.csv", "--bogus"], 2, "usage: outcomes audit"),
    (["--bogus", "audit", "s.csv"], 2, "usage: outcomes [-h]"),
])
def test_errors_exit_codes(args, code, message, tmp_path):
    res = run(*args, cwd=tmp_path)
    assert res.returncode == code
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_required_column_and_bad_mapping(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("patient_id,energy_start_mj\nP1,25\n")
    res = run("validate", str(p))
    assert res.returncode == 1 and "has no session_date column" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    m = tmp_path / "m.toml"
    m.write_text('[columns]\nsession_date = "Datum"\n')
    res = run("validate", str(p), "--mapping", str(m))
    assert res.returncode == 1 and "names column 'Datum'" in res.stderr
    assert "Traceback" not in res.stderr


def test_unreadable_sheet_is_exit_1(tmp_path):
    p = tmp_path / "s.xlsx"
    p.write_bytes(b"this is not a zip file")
    res = run("validate", str(p))
    assert res.returncode == 1 and "not a readable Excel workbook" in res.stderr


def test_wrong_delimiter_is_one_sentence_without_patient_data(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("patient_id;session_date;patient_name\nP1;2025-01-02;Anna, Meier\n")
    m = tmp_path / "m.toml"
    m.write_text('[source]\ndelimiter = ","\n')
    res = run("validate", str(p), "--mapping", str(m))
    assert res.returncode == 1
    assert "delimiter ','" in res.stderr and "Anna" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_date_format_that_fits_no_row_is_exit_1_and_says_so(tmp_path):
    """Every row rejected for the date form: validate still lists the rows, but the file
    cannot be used (exit 1), and the reason reads DD.MM.YYYY, not strftime codes."""
    p = tmp_path / "sessions.csv"
    p.write_text("patient_id,session_date\nP1,2025/02/01\nP2,01/02/2025\n"
                 "P3,03/02/2025\n", encoding="utf-8")
    (tmp_path / "sessions.mapping.toml").write_text('[source]\ndate_format = "%d.%m.%Y"\n',
                                                    encoding="utf-8")
    res = run("validate", str(p))
    assert res.returncode == 1
    assert "not a date in the form YYYY-MM-DD or DD.MM.YYYY (rows 2, 3, 4)" in res.stdout
    assert "%d" not in res.stdout
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "none of its 3 rows could be loaded" in err[0]
    assert "check date_format in the mapping file" in err[0]
    res = run("audit", str(p))
    assert res.returncode == 1 and "check date_format" in res.stderr
    assert "outcomes validate lists every rejected row" in res.stderr


def test_a_source_key_outside_its_section_is_named(tmp_path):
    p = tmp_path / "sessions.csv"
    p.write_text("patient_id,session_date\nP1,2025-02-01\n", encoding="utf-8")
    (tmp_path / "sessions.mapping.toml").write_text('date_format = "%d.%m.%Y"\n',
                                                    encoding="utf-8")
    res = run("validate", str(p))
    assert res.returncode == 1
    assert "date_format belongs under [source]" in res.stderr
    (tmp_path / "sessions.mapping.toml").write_text(
        '[columns]\npatient_id = "patient_id"\ndate_format = "%d.%m.%Y"\n', encoding="utf-8")
    res = run("validate", str(p))
    assert res.returncode == 1
    assert "date_format is under [columns] but belongs under [source]" in res.stderr


@pytest.mark.parametrize("args,message", [
    (["report", "/nonexistent-outcomes-data"], "data folder /nonexistent-outcomes-data does not exist"),
    (["audit", "missing.csv"], "missing.csv does not exist"),
    (["export", "missing.csv", "--out", "x"], "missing.csv does not exist"),
    (["report", "--protocol", "missing.toml"], "protocol file missing.toml does not exist"),
])
def test_a_missing_input_is_named_before_the_heavy_imports(args, message, tmp_path):
    """The answer comes at once (pandas, the loader and Jupyter are not imported first)."""
    started = time.perf_counter()
    res = run(*args, cwd=tmp_path)
    took = time.perf_counter() - started
    assert res.returncode == 1 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert took < 3, f"{took:.1f} s"
    assert not (tmp_path / "report").exists()


def test_help_and_a_missing_input_import_no_pandas():
    """Timing on a loaded machine is noisy; what the command imports is not."""
    code = ("import sys; from outcomes import cli; "
            "rc = cli.main(['audit', 'missing.csv']); "
            "print('pandas' in sys.modules, 'outcomes.load' in sys.modules, rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=ROOT, timeout=120)
    assert res.stdout.split() == ["False", "False", "1"], res.stdout + res.stderr


def test_every_argument_of_every_command_has_help():
    """`outcomes COMMAND --help` explains each argument, positional ones included."""
    import argparse

    from outcomes import cli

    def walk(parser: argparse.ArgumentParser, name: str):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(sub, f"{name} {sub_name}")
                continue
            yield name, action

    seen = list(walk(cli._parser(), "outcomes"))
    assert {n for n, _ in seen} >= {"outcomes validate", "outcomes audit", "outcomes export",
                                    "outcomes report", "outcomes sample"}
    missing = [f"{n} {a.option_strings[0] if a.option_strings else a.metavar or a.dest}"
               for n, a in seen if not (a.help or "").strip()]
    assert not missing, f"no --help text for: {', '.join(missing)}"
