"""Several exports of one table: split exports give exactly the single export's audit;
repeats, conflicts and the row accounting (outcomes.combine, through the loader)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import outcomes
from outcomes.combine import one_key, order_within
from outcomes.dataset import load_inputs
from outcomes.errors import LoadError
from outcomes.sample import write_sample
from outcomes.splits import Export, by_columns, by_period

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
MULTI = SAMPLE / "multi"
COUNTS = ["eligible", "compliant", "missing", "deviations", "not_applicable"]
KEYS = ["patient_id", "session_date", "area"]


def counts(study: outcomes.Study) -> pd.DataFrame:
    """Per criterion: eligible, compliant, not documented, deviations, not applicable."""
    return study.summary().set_index("criterion")[COUNTS]


def assert_same_audit(split: outcomes.Study, whole: outcomes.Study) -> None:
    pd.testing.assert_frame_equal(counts(split), counts(whole))
    assert split.audit.info == whole.audit.info
    assert len(split.sessions) == len(whole.sessions)


def assert_accounting(ds) -> None:
    """Every row read is loaded or rejected, per file and in total."""
    for r in ds.inputs:
        assert r.rows_read == r.rows_loaded + r.rows_rejected, r.file
    for combined in (ds.sessions, ds.outcomes):
        if combined is None:
            continue
        mine = [r for r in ds.inputs if r.table == combined.table]
        assert combined.rows_read == sum(r.rows_read for r in mine)
        assert combined.rows_rejected == sum(r.rows_rejected for r in mine)
        assert len(combined.data) <= combined.rows_loaded


# ---------------------------------------------------------------------------------------
# the worked example


@pytest.fixture(scope="module")
def whole():
    return outcomes.open(SAMPLE)


@pytest.fixture(scope="module")
def multi():
    return outcomes.open(MULTI)


def test_worked_example_gives_the_sample_audit(multi, whole):
    assert_same_audit(multi, whole)
    assert_accounting(multi.dataset)
    names = [Path(r.file).name for r in multi.dataset.inputs]
    assert names == ["sessions-2025-08.csv", "sessions-2026-03.csv", "sessions-2026-10.csv",
                     "sessions-geraet.csv", "outcomes-2025-12.csv", "outcomes-2026-12.csv"]


def test_worked_example_reports_its_one_conflict(multi):
    rej = multi.dataset.rejections()
    conflicts = rej[rej["reason"].str.startswith("conflicts with")]
    assert len(conflicts) == 1
    c = conflicts.iloc[0]
    assert Path(c["file"]).name == "sessions-2026-03.csv" and c["field"] == "post_cooling_min"
    assert re.fullmatch(r"conflicts with sessions-2025-08\.csv row \d+ on post_cooling_min",
                        c["reason"])
    files = multi.dataset.files().set_index(multi.dataset.files()["file"].map(
        lambda f: Path(f).name))
    assert files.loc["sessions-2026-03.csv", "conflicts"] == 1
    # the overlapping months are repeats of the export before, never lost from the count
    assert files.loc["sessions-2026-03.csv", "duplicates"] > 0
    assert files.loc["sessions-2025-08.csv", "duplicates"] == 0
    dups = rej[rej["reason"].str.startswith("duplicate of")]
    assert dups["reason"].str.fullmatch(r"duplicate of \S+\.csv row \d+").all()


def test_every_session_names_its_files_and_rows(multi):
    s = multi.dataset.sessions.data
    assert s["sources"].str.contains("sessions-geraet.csv row ").all()
    assert s["sources"].str.contains(r"sessions-20\d\d-\d\d\.csv row ").all()
    flagged = multi.audit.flagged()
    assert "sources" in flagged and flagged["sources"].str.contains("; ").all()
    # a source named is the record: the row of that file holds the session's patient
    rec = flagged.iloc[0]
    file, row = rec["sources"].split("; ")[-1].rsplit(" row ", 1)
    text = (MULTI / file).read_text(encoding="utf-8").splitlines()[int(row) - 1]
    assert text.startswith(rec["patient_id"])


def test_audit_command_takes_several_exports_and_writes_provenance(tmp_path):
    sessions = sorted(str(p) for p in MULTI.glob("sessions-*.csv"))
    res = subprocess.run(
        [sys.executable, "-m", "outcomes.cli", "audit", *sessions,
         "--outcomes", str(MULTI / "outcomes-2025-12.csv"),
         "--outcomes", str(MULTI / "outcomes-2026-12.csv"), "--json"],
        capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    one = subprocess.run(
        [sys.executable, "-m", "outcomes.cli", "audit", str(SAMPLE / "sessions.csv"),
         "--outcomes", str(SAMPLE / "outcomes.csv"), "--json"],
        capture_output=True, text=True, check=False, timeout=300)
    want = json.loads(one.stdout)
    for a, b in zip(got["criteria"], want["criteria"], strict=True):
        assert [a[k] for k in ("id", *COUNTS)] == [b[k] for k in ("id", *COUNTS)]
    assert [Path(i["file"]).name for i in got["inputs"]][:4] == [Path(s).name for s in sessions]
    for i in got["inputs"]:
        assert i["rows_read"] == i["rows_loaded"] + i["rows_rejected"]
    out = tmp_path / "audit"
    res = subprocess.run([sys.executable, "-m", "outcomes.cli", "audit", *sessions,
                          "--out", str(out)],
                         capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert verdicts["sources"].str.contains("sessions-geraet.csv row").all()
    wb = openpyxl.load_workbook(out / "audit.xlsx", read_only=True)
    header = [c.value for c in next(wb["Flagged sessions"].iter_rows(max_row=1))]
    assert "Sources (file and row)" in header


# ---------------------------------------------------------------------------------------
# any clean export, split by overlapping periods or by columns


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A synthetic clinic's sessions as the loader loads them (rejected rows left out)."""
    folder = tmp_path_factory.mktemp("clinic")
    write_sample(folder, patients=60, seed=11)
    export = Export.read(folder / "sessions.csv", clean=True)
    whole = folder / "whole.csv"
    export.write(whole)
    return export, outcomes.open(whole), folder


def _days(export: Export) -> tuple[dt.date, dt.date]:
    days = sorted(dt.date.fromisoformat(d) for d in export.column("session_date"))
    return days[0], days[-1]


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.floats(0.05, 0.95), min_size=1, max_size=3, unique=True),
       overlap=st.integers(0, 90))
def test_split_by_overlapping_periods_gives_the_same_audit(clean, tmp_path_factory, cuts,
                                                           overlap):
    export, whole, _ = clean
    first, last = _days(export)
    span = (last - first).days
    edges = [first + dt.timedelta(days=round(c * span)) for c in sorted(cuts)]
    starts = [first] + [e - dt.timedelta(days=overlap) for e in edges]
    ends = [e - dt.timedelta(days=1) for e in edges] + [last]
    folder = tmp_path_factory.mktemp("periods")
    paths = [part.write(folder / f"sessions-{k}.csv")
             for k, part in enumerate(by_period(export, list(zip(starts, ends, strict=True))))]
    split = outcomes.open(paths)
    assert_same_audit(split, whole)
    assert_accounting(split.dataset)
    rej = split.dataset.rejections()
    assert not rej["reason"].str.startswith("conflicts").any()
    # every record in two windows is one session and one duplicate
    in_two = sum(len(p.rows) for p in by_period(export, list(zip(starts, ends, strict=True))))
    assert in_two - len(export.rows) == (rej["reason"].str.startswith("duplicate of")).sum()


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_split_by_columns_gives_the_same_audit(clean, tmp_path_factory, data):
    export, whole, _ = clean
    others = [c for c in export.header if c not in KEYS]
    side = data.draw(st.lists(st.integers(0, 2), min_size=len(others), max_size=len(others)))
    parts = [KEYS + [c for c, k in zip(others, side, strict=True) if k == i] for i in range(3)]
    folder = tmp_path_factory.mktemp("columns")
    paths = [part.write(folder / f"sessions-{k}.csv")
             for k, part in enumerate(by_columns(export, parts))]
    split = outcomes.open(paths)
    assert_same_audit(split, whole)
    assert_accounting(split.dataset)
    # no file gives a field differently; a record with nothing new (a part whose
    # columns are blank in that row) is a repeat, counted and named
    assert split.dataset.rejections()["reason"].str.startswith("duplicate of").all()


def test_device_log_without_ids_joins_the_notes_by_their_session_id(clean, tmp_path):
    export, whole, _ = clean
    ids = Export(["session_id", *export.header],
                 [[f"S{i:05d}", *r] for i, r in enumerate(export.rows)])
    device = ["energy_start_mj", "energy_final_mj", "coverage_pct", "passes", "pass_wait_min"]
    notes = ids.only([c for c in ids.header if c not in device])
    notes.write(tmp_path / "sessions-notes.csv")
    ids.only(KEYS + device).write(tmp_path / "sessions-device.csv")
    split = outcomes.open(tmp_path)  # a DATA_DIR: every sessions* file, in name order
    pd.testing.assert_frame_equal(counts(split), counts(whole))
    assert split.sessions["session_id"].str.fullmatch(r"S\d{5}").all()


# ---------------------------------------------------------------------------------------
# hand cases


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


HEAD = "patient_id,session_date,area,operator,energy_start_mj,passes\n"


def test_a_conflict_keeps_the_first_value_and_rejects_the_later_record(tmp_path):
    a = write(tmp_path / "a.csv", HEAD + "P1,2025-01-02,face,Dr. A,20,3\n"
                                         "P2,2025-01-02,face,Dr. A,22,3\n")
    b = write(tmp_path / "b.csv", HEAD + "P1,2025-01-02,face,Dr. A,25,3\n"
                                         "P2,2025-01-02,face,Dr. A,22,3\n"
                                         "P3,2025-01-03,face,Dr. B,21,2\n")
    ds = load_inputs([a, b], progress=False)
    s = ds.sessions.data.set_index("patient_id")
    assert s.loc["P1", "energy_start_mj"] == 20 and len(s) == 3
    rej = ds.rejections()
    assert rej[["row", "field", "value", "reason"]].to_dict("records") == [
        {"row": 2, "field": "energy_start_mj", "value": "25",
         "reason": "conflicts with a.csv row 2 on energy_start_mj"},
        {"row": 3, "field": "(whole row)", "value": "", "reason": "duplicate of a.csv row 3"}]
    assert (rej["file"] == str(b)).all()
    assert_accounting(ds)
    assert [r.rows_loaded for r in ds.inputs] == [2, 1]
    assert s.loc["P3", "sources"] == "b.csv row 4"


def test_a_blank_field_is_filled_from_a_later_file_and_blank_area_is_a_value(tmp_path):
    a = write(tmp_path / "a.csv", HEAD + "P1,2025-01-02,,Dr. A,,3\n"
                                         "P1,2025-01-02,face,Dr. A,20,\n")
    b = write(tmp_path / "b.csv", HEAD + "P1,2025-01-02,,,18,3\n"
                                         "P1,2025-01-02,face,,,4\n")
    ds = load_inputs([a, b], progress=False)
    s = ds.sessions.data.sort_values("area", na_position="first")
    assert s["energy_start_mj"].tolist() == [18, 20]
    assert s["passes"].tolist() == [3, 4]
    assert s["sources"].tolist() == ["a.csv row 2; b.csv row 2", "a.csv row 3; b.csv row 3"]
    assert s["session_id"].tolist() == ["P1:2025-01-02:1", "P1:2025-01-02:2"]
    assert not len(ds.rejections())


def test_derived_ids_stay_unique_across_files(tmp_path):
    """A day's first session in one file may be its second in the combined data."""
    a = write(tmp_path / "a.csv", HEAD + "P1,2025-01-02,legs,Dr. A,20,3\n")
    b = write(tmp_path / "b.csv", HEAD + "P1,2025-01-02,face,Dr. A,20,3\n"
                                         "P1,2025-01-02,legs,Dr. A,20,3\n")
    ds = load_inputs([a, b], progress=False)
    s = ds.sessions.data
    assert sorted(s["session_id"]) == ["P1:2025-01-02:1", "P1:2025-01-02:2"]
    assert s.set_index("area").loc["legs", "session_id"] == "P1:2025-01-02:1"


def test_a_session_id_identifies_a_session_whose_date_was_corrected(tmp_path):
    head = "session_id,patient_id,session_date,energy_start_mj\n"
    a = write(tmp_path / "a.csv", head + "S1,P1,2025-01-02,20\n")
    b = write(tmp_path / "b.csv", head + "S1,P1,2025-01-03,20\nS2,P1,2025-01-03,21\n")
    ds = load_inputs([a, b], progress=False)
    assert ds.sessions.data["session_id"].tolist() == ["S1", "S2"]
    rej = ds.rejections()
    assert rej["reason"].tolist() == ["conflicts with a.csv row 2 on session_date"]
    assert rej["value"].tolist() == ["2025-01-03"]


def test_outcomes_exports_combine_too(tmp_path):
    sessions = write(tmp_path / "s.csv", HEAD + "P1,2025-01-02,face,Dr. A,20,3\n")
    head = "patient_id,assessment_date,instrument,score\n"
    a = write(tmp_path / "o1.csv", head + "P1,2025-05-02,satisfaction,4\n"
                                          "P1,2025-05-02,gais,1\n")
    b = write(tmp_path / "o2.csv", head + "P1,2025-05-02,satisfaction,5\n"
                                          "P1,2025-05-02,gais,1\n"
                                          "P1,2025-06-01,gais,2\n")
    ds = load_inputs(sessions, [a, b], progress=False)
    o = ds.outcomes.data
    assert len(o) == 3 and o.set_index(["assessment_date", "instrument"]).loc[
        (pd.Timestamp("2025-05-02"), "satisfaction"), "score"] == 4
    assert ds.rejections()["reason"].tolist() == [
        "conflicts with o1.csv row 2 on score", "duplicate of o1.csv row 3"]
    assert_accounting(ds)


def test_the_same_file_twice_is_refused(tmp_path):
    a = write(tmp_path / "a.csv", HEAD + "P1,2025-01-02,legs,Dr. A,20,3\n")
    with pytest.raises(LoadError, match="given twice"):
        load_inputs([a, tmp_path / "." / "a.csv"], progress=False)


def test_one_export_is_loaded_as_before():
    ds = load_inputs(SAMPLE / "sessions.csv", progress=False)
    assert "sources" not in ds.sessions.data
    assert ds.inputs == [ds.sessions] and not ds.several


def test_validate_checks_several_exports_as_the_audit_combines_them(tmp_path):
    files = sorted(str(p) for p in MULTI.glob("*.csv"))
    rejects = tmp_path / "rejects.csv"
    res = subprocess.run([sys.executable, "-m", "outcomes.cli", "validate", *files, "--json",
                          "--rejects", str(rejects)],
                         capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["rows_read"] == got["rows_loaded"] + got["rows_rejected"]
    assert {(c["table"], c["files"], c["rows"]) for c in got["combined"]} == {
        ("sessions", 4, 1172), ("outcomes", 2, 1331)}
    log = pd.read_csv(rejects)
    assert log["reason"].str.startswith("conflicts with").sum() == 1
    assert len(log) == got["rows_rejected"]


# ---------------------------------------------------------------------------------------
# the key helpers, against plain Python


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 2)),
                min_size=1, max_size=60))
def test_one_key_and_order_within_match_plain_python(rows):
    cols = [np.array(c, dtype=np.int64) for c in zip(*rows, strict=True)]
    key = one_key(cols)
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            assert (key[i] == key[j]) == (a == b)
    seen: dict[tuple[int, ...], int] = {}
    want = []
    for r in rows:
        want.append(seen.get(r, 0))
        seen[r] = seen.get(r, 0) + 1
    assert order_within(key).tolist() == want


def test_one_key_stays_exact_when_the_codes_are_wide():
    big = np.array([2**40, 2**40, 3, 2**40], dtype=np.int64)
    key = one_key([big, big, np.array([1, 1, 1, 2], dtype=np.int64)])
    assert key[0] == key[1] and len(set(key.tolist())) == 3


def test_a_device_log_without_an_area_column_joins_on_patient_day_and_order(clean, tmp_path):
    export, whole, _ = clean
    device = ["energy_start_mj", "energy_final_mj", "coverage_pct", "passes"]
    export.only([c for c in export.header if c not in device]).write(tmp_path / "a.csv")
    export.only(["patient_id", "session_date", *device]).write(tmp_path / "b.csv")
    split = outcomes.open([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert_same_audit(split, whole)
