"""Research export: de-identified, documented, reproducible, and safe to open in Excel."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

import outcomes.cli
from outcomes import export
from outcomes.courses import assign_courses
from outcomes.dataset import load_inputs
from outcomes.load import LoadError
from outcomes.protocol import load_protocol
from outcomes.safe import FORMULA_START, neutralise

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SESSIONS, OUTCOMES = SAMPLE / "sessions.csv", SAMPLE / "outcomes.csv"
KEY_A = b"a" * 16 + b"0123456789abcdef0123456789abcdef"
KEY_B = b"b" * 16 + b"0123456789abcdef0123456789abcdef"
IDENTIFYING = ("patient_id", "patient_name", "date_of_birth", "phone", "email", "operator")
HAS_CLI = hasattr(outcomes.cli, "cmd_export")
needs_cli = pytest.mark.skipif(not HAS_CLI, reason="the export subcommand is not yet in cli.py")


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("flexsys-hair-regrowth")


@pytest.fixture(scope="module")
def dataset():
    return load_inputs(SESSIONS, OUTCOMES, progress=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, dataset, protocol):
    """The sample exported under KEY_A: (folder, manifest)."""
    out = tmp_path_factory.mktemp("export") / "e"
    manifest = export.research_export(dataset, protocol, KEY_A, out)
    return out, manifest


def sample_identifiers() -> dict[str, set[str]]:
    """Identifying values read straight from the sample files, not through the library."""
    found: dict[str, set[str]] = {c: set() for c in IDENTIFYING}
    for path in (SESSIONS, OUTCOMES):
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                for c in IDENTIFYING:
                    v = (row.get(c) or "").strip()
                    if v:
                        found[c].add(v)
    dob = set()
    for v in found["date_of_birth"]:
        y, m, d = v.split("-")
        dob |= {f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{y}{m}{d}"}
    found["date_of_birth"] |= dob
    found["phone"] |= {re.sub(r"\D", "", v) for v in found["phone"]}
    return found


def file_blobs(folder: Path) -> dict[str, list[bytes]]:
    """Every output file's bytes, plus the unpacked members of a workbook."""
    blobs: dict[str, list[bytes]] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        parts = [data]
        if p.suffix == ".xlsx":
            with zipfile.ZipFile(p) as z:
                parts += [z.read(n) for n in z.namelist()]
        blobs[p.name] = parts
    return blobs


def read_csv_cells(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


# ---------------------------------------------------------------------------------------------
# the key


def test_read_key_refuses_missing_short_and_absent_key(tmp_path):
    short = tmp_path / "short.key"
    short.write_text("0123456789\n")
    with pytest.raises(LoadError, match=r"shorter than 32 bytes; make one with: python -c "
                                        r"\"import secrets; print\(secrets.token_hex\(32\)\)\" >"):
        export.read_key(short)
    with pytest.raises(LoadError, match="does not exist; make one with"):
        export.read_key(tmp_path / "nope.key")
    with pytest.raises(LoadError, match="needs a key file"):
        export.read_key(None)
    good = tmp_path / "good.key"
    good.write_text("f" * 64 + "\n")
    assert export.read_key(good) == b"f" * 64  # the trailing newline is not part of the key


def test_short_key_refused_by_the_export_itself(dataset, protocol, tmp_path):
    with pytest.raises(LoadError, match="shorter than 32 bytes"):
        export.research_export(dataset, protocol, b"short", tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_key_file_inside_the_output_folder_is_refused(tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    key = out / "k.key"
    key.write_bytes(KEY_A)
    with pytest.raises(LoadError, match="inside the output folder"):
        export.run_export_command(SESSIONS, OUTCOMES, key_file=key, out=out)


# ---------------------------------------------------------------------------------------------
# pseudonyms, dates, age bands


def test_pseudonyms_are_stable_under_one_key_and_differ_under_another():
    p = export.pseudonym("P000056", KEY_A)
    assert re.fullmatch(r"[0-9a-f]{16}", p)
    assert p == export.pseudonym("P000056", KEY_A)
    assert p != export.pseudonym("P000056", KEY_B)
    assert p != export.pseudonym("P000057", KEY_A)
    assert p != export.pseudonym("P000056", KEY_A, "clinician")  # kinds never collide
    df = pd.DataFrame({"patient_id": ["P1", None, "P1"]})
    out = export.pseudonymise(df, "patient_id", KEY_A, new_name="patient_pseudonym")
    assert list(out.columns) == ["patient_pseudonym"]
    assert out["patient_pseudonym"].iloc[0] == out["patient_pseudonym"].iloc[2]
    assert pd.isna(out["patient_pseudonym"].iloc[1])


def test_pseudonyms_across_exports(exported, dataset, protocol, tmp_path):
    folder, _ = exported
    again = tmp_path / "b"
    export.research_export(dataset, protocol, KEY_B, again)
    a = set(pd.read_csv(folder / "sessions.csv")["patient_pseudonym"])
    b = set(pd.read_csv(again / "sessions.csv")["patient_pseudonym"])
    assert len(a) == len(b) == dataset.sessions.data["patient_id"].nunique()
    assert not a & b  # another key: unrelated pseudonyms
    expected = {export.pseudonym(p, KEY_A) for p in dataset.sessions.data["patient_id"]}
    assert a == expected
    # everything that is not a pseudonym or an id made from one is the same under both keys
    sa = pd.read_csv(folder / "sessions.csv").sort_values(["session_year", "session_day",
                                                           "energy_start_mj"])
    sb = pd.read_csv(again / "sessions.csv").sort_values(["session_year", "session_day",
                                                          "energy_start_mj"])
    assert sorted(sa["session_day"]) == sorted(sb["session_day"])


def test_intervals_between_sessions_are_preserved_exactly(exported, dataset, protocol):
    folder, _ = exported
    out = pd.read_csv(folder / "sessions.csv")
    s = dataset.sessions.data
    orig = assign_courses(s, protocol.new_course_after_days, as_of=s["session_date"].max())
    orig = orig.assign(pseudo=[export.pseudonym(p, KEY_A) for p in orig["patient_id"]])
    first = orig.groupby("pseudo")["session_date"].transform("min")
    orig["day"] = (orig["session_date"] - first).dt.days
    orig["year"] = orig["session_date"].dt.year
    a = orig.rename(columns={"pseudo": "patient_pseudonym", "day": "session_day"})
    merged = a.merge(out, on=["patient_pseudonym", "session_day", "area", "session_number"],
                     suffixes=("_o", "_e"), validate="one_to_one")
    assert len(merged) == len(out) == len(s)
    assert (merged["year"] == merged["session_year"]).all()
    prev_o = merged["days_since_previous_o"].astype("float64").to_numpy()
    prev_e = merged["days_since_previous_e"].astype("float64").to_numpy()
    assert np.array_equal(prev_o, prev_e, equal_nan=True)
    # every pair of a patient's sessions keeps its exact distance in days
    for pseudo, grp in out.groupby("patient_pseudonym"):
        o = sorted(orig.loc[orig["pseudo"] == pseudo, "day"])
        assert sorted(grp["session_day"]) == o
        assert min(o) == 0


def test_outcome_days_are_relative_to_the_first_session(exported, dataset):
    folder, _ = exported
    out = pd.read_csv(folder / "outcomes.csv")
    s, o = dataset.sessions.data, dataset.outcomes_data
    first = s.groupby("patient_id")["session_date"].min()
    days = (o["assessment_date"] - o["patient_id"].map(first)).dt.days
    expected = sorted(zip([export.pseudonym(p, KEY_A) for p in o["patient_id"]], days,
                          o["instrument"], o["score"].astype(float), strict=True))
    got = sorted(zip(out["patient_pseudonym"], out["assessment_day"], out["instrument"],
                     out["score"].astype(float), strict=True))
    assert got == expected


def test_age_band():
    birth = pd.Series(pd.to_datetime(["1980-06-15", "1980-06-15", "1930-01-01", None,
                                      "2030-01-01", "2019-03-01"]))
    at = pd.Series(pd.to_datetime(["2025-06-14", "2025-06-15", "2025-01-01", "2025-01-01",
                                   "2025-01-01", "2025-03-01"]))
    got = export.age_band(birth, at).tolist()
    assert got[:3] == ["40–44", "45–49", "90+"]
    assert pd.isna(got[3]) and pd.isna(got[4])  # unknown, and born after the session
    assert got[5] == "5–9"


def test_generalise_text_keeps_codes_and_shared_categories():
    df = pd.DataFrame({"patient_id": [f"P{i}" for i in range(10)],
                       "v": ["none", "infection", "Called Mrs Smith", None, *["x y"] * 6]})
    out = export.generalise_text(df, "v", "patient_id", 8)["v"].tolist()
    assert out[:3] == ["none", "infection", "other"] and pd.isna(out[3])
    assert out[4] == "other"  # a text shared by 6 patients, fewer than 8
    assert export.generalise_text(df, "v", "patient_id", 6)["v"].iloc[4] == "x y"
    fitz = pd.DataFrame({"patient_id": ["a", "b"], "f": ["II", "2"]})
    assert export.generalise_text(fitz, "f", "patient_id", 8, ("I", "II"))["f"].tolist() == [
        "II", "other"]


# ---------------------------------------------------------------------------------------------
# the folder


def test_a_table_too_long_for_a_workbook_is_in_csv_and_parquet_only(dataset, protocol,
                                                                     tmp_path, monkeypatch):
    """A large export keeps its workbook small: long tables are left to CSV and Parquet,
    and README says where they are (threshold lowered here to the sample's size)."""
    monkeypatch.setattr(export.write, "WORKBOOK_ROWS", 400)
    out = tmp_path / "e"
    export.research_export(dataset, protocol, KEY_A, out)
    wb = openpyxl.load_workbook(out / export.WORKBOOK, read_only=True)
    sessions = pd.read_csv(out / "sessions.csv")
    assert len(sessions) > 400 and "sessions" not in wb.sheetnames
    assert "compliance" in wb.sheetnames  # short tables stay
    readme = {r[0]: r[1] for r in wb["README"].iter_rows(values_only=True)}
    assert readme["Sheet sessions"].endswith(
        "this table is in sessions.csv and sessions.parquet only.")
    assert len(pd.read_parquet(out / "sessions.parquet")) == len(sessions)


def test_export_folder_holds_workbook_tables_and_manifest(exported, dataset):
    folder, manifest = exported
    assert {p.name for p in folder.iterdir()} == set(export.OUTPUT_FILES)
    wb = openpyxl.load_workbook(folder / export.WORKBOOK, read_only=True)
    assert wb.sheetnames == ["README", "data_dictionary", "sessions", "courses", "outcomes",
                             "compliance"]
    on_disk = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == manifest
    assert manifest["software"]["version"] == outcomes.__version__
    assert manifest["protocol"] == {"id": "flexsys-hair-regrowth", "version": "1.0",
                                    "title": "FlexSys fractional laser: hair regrowth"}
    files = dataset.files()
    assert [(i["sha256"], i["rows_read"], i["rows_loaded"]) for i in manifest["inputs"]] == [
        (f.sha256, f.rows_read, f.rows_loaded) for f in files.itertuples()]
    assert manifest["suppression_threshold"] == 8
    removed = {(r["table"], r["field"]) for r in manifest["removed"]}
    assert {("sessions", "patient_name"), ("sessions", "phone"), ("sessions", "email"),
            ("sessions", "notes"), ("outcomes", "notes"), ("sessions", "device_serial"),
            ("sessions", "source_file, source_row")} <= removed
    assert "HMAC-SHA256" in manifest["pseudonyms"]["patients"]
    assert manifest["leak_check"]["result"] == "passed"
    assert manifest["adverse_event"]["codes"] == ["blistering", "hyperpigmentation",
                                                  "infection", "none", "prolonged_erythema"]
    for name in export.TABLES:
        csv_df = pd.read_csv(folder / f"{name}.csv")
        pq_df = pd.read_parquet(folder / f"{name}.parquet")
        assert len(csv_df) == len(pq_df) == manifest["tables"][name]["rows"]
        assert list(csv_df.columns) == list(pq_df.columns)
    for name, digest in manifest["files"].items():
        assert export.sha256(folder / name) == digest
    sessions = pd.read_csv(folder / "sessions.csv")
    assert not {"patient_id", "patient_name", "phone", "email", "notes", "date_of_birth",
                "session_date", "operator", "source_file", "source_row",
                "device_serial"} & set(sessions.columns)


def test_no_identifier_from_the_sample_appears_in_any_output_byte(exported):
    folder, _ = exported
    ids = sample_identifiers()
    blobs = file_blobs(folder)
    assert len(blobs) == len(export.OUTPUT_FILES)
    for column, values in ids.items():
        assert values, column
        for v in values:
            needle = v.encode()
            for name, parts in blobs.items():
                assert not any(needle in part for part in parts), (column, name)
    key_texts = [KEY_A, KEY_A.hex().encode()]
    for name, parts in blobs.items():
        assert not any(k in part for k in key_texts for part in parts), name
    # single words of patient and clinician names, as whole words, anywhere
    words = {w for c in ("patient_name", "operator") for v in ids[c]
             for w in re.findall(r"[^\W\d_]{4,}", v)}
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(words))) + r")(?!\w)")
    for name, parts in blobs.items():
        for part in parts:
            m = pattern.search(part.decode("utf-8", errors="replace"))
            assert m is None, (name, "a name word")


def test_same_inputs_and_key_give_byte_identical_tables(exported, dataset, protocol, tmp_path):
    folder, manifest = exported
    again = tmp_path / "again"
    second = export.research_export(dataset, protocol, KEY_A, again)
    for name in export.OUTPUT_FILES:
        if name != export.MANIFEST:
            assert (folder / name).read_bytes() == (again / name).read_bytes(), name
    a = {k: v for k, v in manifest.items() if k != "export_time"}
    b = {k: v for k, v in second.items() if k != "export_time"}
    assert a == b


def test_data_dictionary_covers_every_exported_column(exported):
    folder, _ = exported
    dictionary = pd.read_csv(folder / "data_dictionary.csv", keep_default_na=False)
    assert list(dictionary.columns) == ["field", "table", "type", "unit", "allowed_values",
                                        "meaning", "treatment", "source_field"]
    for table in export.DATA_TABLES:
        columns = list(pd.read_csv(folder / f"{table}.csv", nrows=0).columns)
        documented = dictionary.loc[dictionary["table"] == table, "field"].tolist()
        assert documented == columns, table
    assert set(dictionary["table"]) == set(export.DATA_TABLES)
    assert (dictionary["meaning"].str.len() > 5).all()
    assert (dictionary["treatment"].str.len() > 3).all()
    wb = openpyxl.load_workbook(folder / export.WORKBOOK, read_only=True)
    rows = list(wb["data_dictionary"].iter_rows(values_only=True))
    assert len(rows) - 1 == len(dictionary)


# ---------------------------------------------------------------------------------------------
# suppression


def _equations_ok(table: pd.DataFrame, threshold: int) -> None:
    hidden = table[list(export.COMPLIANCE_COUNTS)].isin([f"<{threshold}",
                                                         export.SECONDARY_MARK])
    shown = table[list(export.COMPLIANCE_COUNTS)].where(~hidden)
    for c in export.COMPLIANCE_COUNTS:
        visible = pd.to_numeric(shown[c].dropna())
        assert not ((visible >= 1) & (visible < threshold)).any(), c
    assert (hidden.sum(axis=1) != 1).all()  # eligible = compliant + deviations + missing
    for _, grp in table.assign(**{f"h_{c}": hidden[c] for c in hidden}).groupby("criterion"):
        if (grp["clinician_code"] == export.ALL_CLINICIANS).sum() != 1 or len(grp) < 2:
            continue
        for c in export.COMPLIANCE_COUNTS:
            assert grp[f"h_{c}"].sum() != 1, c  # the 'all' row = the sum of the clinicians
    blank = hidden["eligible"] | hidden["compliant"]
    assert table.loc[blank, "percent"].isna().all()
    assert (table.loc[blank, "status"] == export.SECONDARY_MARK).all()
    assert table.loc[~blank & (pd.to_numeric(table["eligible"], errors="coerce") > 0),
                     "percent"].notna().all()


def test_compliance_by_clinician_suppresses_small_cells(exported):
    folder, manifest = exported
    comp = pd.read_csv(folder / "compliance.csv", dtype=str, keep_default_na=False)
    comp["percent"] = pd.to_numeric(comp["percent"])
    assert (comp["clinician_code"] == export.ALL_CLINICIANS).sum() == 15
    assert comp["clinician_code"].str.fullmatch(r"all|[0-9a-f]{16}").all()
    assert (comp[list(export.COMPLIANCE_COUNTS)] == "<8").any().any()
    _equations_ok(comp, 8)
    stats = manifest["suppression"]["tables"]["compliance"]
    assert stats["small_cells"] == int((comp[list(export.COMPLIANCE_COUNTS)] == "<8")
                                       .sum().sum())
    wb = openpyxl.load_workbook(folder / export.WORKBOOK, read_only=True)
    cells = [c for row in wb["compliance"].iter_rows(min_row=2, values_only=True)
             for c in row[4:8]]
    assert all(isinstance(c, int) or c in ("<8", export.SECONDARY_MARK) for c in cells)


def test_suppress_small_cells_threshold_is_an_option():
    table = pd.DataFrame({
        "criterion": ["a", "a", "a"], "clinician_code": ["all", "x", "y"],
        "eligible": [40, 20, 20], "compliant": [33, 17, 16], "deviations": [7, 3, 4],
        "missing": [0, 0, 0], "percent": [82.5, 85.0, 80.0], "status": ["met"] * 3})
    kw = {"row_sums": [("eligible", ("compliant", "deviations", "missing"))],
          "totals": ("clinician_code", "all", ("criterion",)),
          "derived": {"percent": ("eligible", "compliant"),
                      "status": ("eligible", "compliant")}}
    out = export.suppress_small_cells(table, export.COMPLIANCE_COUNTS, 8, **kw)
    assert out["deviations"].tolist() == ["<8", "<8", "<8"]
    assert (out["compliant"] == export.SECONDARY_MARK).all()
    assert out["missing"].tolist() == [0, 0, 0] and out["eligible"].tolist() == [40, 20, 20]
    assert out["percent"].isna().all()
    _equations_ok(out, 8)
    loose = export.suppress_small_cells(table, export.COMPLIANCE_COUNTS, 4, **kw)
    small = loose[list(export.COMPLIANCE_COUNTS)] == "<4"
    assert small.to_numpy().sum() == 1 and loose["deviations"].iloc[1] == "<4"
    _equations_ok(loose, 4)
    assert loose.attrs["suppression"]["threshold"] == 4


# ---------------------------------------------------------------------------------------------
# leak check and refusals


def small_export(tmp_path: Path, clinic: str = "Nordstadt", room: list[str] | None = None,
                 notes: str = "", name: str = "Erika Musterfrau") -> Path:
    """A sessions export of 10 patients × 2 sessions with the given text planted."""
    rows = []
    for i in range(10):
        for j, day in enumerate(("2025-01-06", "2025-02-10")):
            rows.append({
                "patient_id": f"PX{i:04d}", "patient_name": f"{name} {i}",
                "phone": f"+49 170 55{i:05d}", "email": f"person{i}@example.org",
                "date_of_birth": f"19{60 + i}-0{1 + i % 9}-1{i}", "session_date": day,
                "operator": "Dr. Beispiel" if i % 2 else "Dr. Muster", "clinic": clinic,
                "indication": "hair_regrowth", "area": "scalp_vertex",
                "energy_start_mj": 25 - j, "passes": 2, "notes": notes,
                "room": (room or ["1"])[(2 * i + j) % len(room or ["1"])]})
    path = tmp_path / "sessions.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_leak_check_finds_planted_values_in_any_spelling(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,49-176-5365408\n", encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"n": "Thomas\u00a0KRAUSE"}), encoding="utf-8")
    (tmp_path / "c.csv").write_text("x\n1982.01.07\n", encoding="utf-8")
    ids = {"phone": {"+49 176 5365408"}, "patient_name": {"Thomas Krause"},
           "date_of_birth": {"1982-01-07"}, "patient_id": {"P1", "123"}}
    hits = export.leak_check(tmp_path, ids)
    assert hits == [("a.csv", "phone"), ("b.json", "patient_name"),
                    ("c.csv", "date_of_birth")]
    short = tmp_path / "short"
    short.mkdir()
    (short / "d.csv").write_text("x\nP1,123,P1234\n", encoding="utf-8")
    assert export.leak_check(short, ids) == []  # too short to search
    big = tmp_path / "big"
    big.mkdir()  # a value across the boundary of two pieces of a big file is still found
    filler = "ab," * ((export.CHUNK - 6) // 3)
    (big / "e.csv").write_text(filler + "Thomas Krause,cd\n", encoding="utf-8")
    assert export.leak_check(big, ids) == [("e.csv", "patient_name")]
    parts = export.leak_check(tmp_path, {}, {"patient_name": {"krause"}})
    assert parts == []  # name words are searched only in the data tables
    (tmp_path / "sessions.csv").write_text("clinic\nkrause\n", encoding="utf-8")
    assert export.leak_check(tmp_path, {}, {"patient_name": {"krause"}}) == [
        ("sessions.csv", "patient_name")]


def test_planted_identifier_refuses_the_export(dataset, protocol, tmp_path):
    s = dataset.sessions.data.copy()
    email = s["email"].dropna().iloc[0]
    s["device_serial"] = s["device_serial"].astype(object)
    s.loc[5, "device_serial"] = email  # an e-mail address in a kept column
    planted = replace(dataset, sessions=replace(dataset.sessions, data=s))
    out = tmp_path / "e"
    with pytest.raises(LoadError) as err:
        export.research_export(planted, protocol, KEY_A, out, keep=["device_serial"])
    msg = str(err.value)
    assert "email in sessions.csv" in msg and "research_export.xlsx" in msg
    assert "refused" in msg and email not in msg
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind
    # a patient id written as a clinic name is replaced by a site code before anything is
    # made of it (the leak check would refuse it otherwise)
    s2 = dataset.sessions.data.copy()
    pid = s2["patient_id"].iloc[10]
    s2.loc[3, "clinic"] = pid
    planted2 = replace(dataset, sessions=replace(dataset.sessions, data=s2))
    manifest = export.research_export(planted2, protocol, KEY_A, out)
    assert {"table": "sessions", "field": "clinic", "values_replaced": 1,
            "rule": export.deidentify._treat("scrubbed", 8)} in manifest["recoded"]
    clinics = set(pd.read_csv(out / "sessions.csv")["clinic"])
    assert clinics - {"Nordstadt", "Südpark"} == {
        "site_" + export.pseudonym(pid, KEY_A, "site")[:8]}
    for name, parts in file_blobs(out).items():
        assert not any(pid.encode() in part for part in parts), name


def test_formula_payloads_are_inert_in_csv_and_xlsx(tmp_path, protocol):
    payloads = ["=1+1", "+SUM(A1:A2)", "-2+3", "@SUM(A1)", "\tcmd", "plain"]
    path = small_export(tmp_path, clinic='=HYPERLINK("http://evil.example","x")',
                        room=payloads, notes="=cmd|' /C calc'!A0", name="@Mallory")
    ds = load_inputs(path, progress=False)
    out = tmp_path / "e"
    export.research_export(ds, protocol, KEY_A, out, keep=["room"])
    seen_clinic = False
    for name in export.TABLES:
        for row in read_csv_cells(out / f"{name}.csv"):
            for cell in row:
                assert not cell.startswith(FORMULA_START), (name, cell)
                seen_clinic |= cell.startswith("'=HYPERLINK")
    assert seen_clinic  # the shared clinic value was kept, neutralised
    rooms = set(pd.read_csv(out / "sessions.csv")["room"])
    assert rooms == {"'=1+1", "'+SUM(A1:A2)", "'-2+3", "'@SUM(A1)", "'\tcmd", "plain"}
    wb = openpyxl.load_workbook(out / export.WORKBOOK)
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate)
                if isinstance(cell.value, str):
                    assert not cell.value.startswith(FORMULA_START), (ws.title, cell.value)
    ws = wb["sessions"]
    header = [c.value for c in ws[1]]
    energy = [r[header.index("energy_start_mj")] for r in ws.iter_rows(min_row=2,
                                                                       values_only=True)]
    days = [r[header.index("session_day")] for r in ws.iter_rows(min_row=2, values_only=True)]
    assert all(isinstance(v, int | float) for v in energy + days)
    for blob in file_blobs(out).values():
        for part in blob:
            assert b"Mallory" not in part and b"/C calc" not in part
    cr = neutralise(pd.DataFrame({"=h": ["\rx", "ok", None], "n": [-1.5, 2.0, 3.0]}))
    assert list(cr.columns) == ["'=h", "n"] and cr.iloc[0, 0] == "'\rx"
    assert cr["n"].dtype == "float64"


def test_output_folder_rules(tmp_path, protocol):
    ds = load_inputs(small_export(tmp_path), progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.docx").write_text("mine")
    with pytest.raises(LoadError, match="not empty and holds no previous research export"):
        export.research_export(ds, protocol, KEY_A, busy)
    assert (busy / "thesis.docx").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    export.research_export(ds, protocol, KEY_A, empty)
    first = (empty / "sessions.csv").read_bytes()
    export.research_export(ds, protocol, KEY_A, empty)  # a previous export is replaced
    assert (empty / "sessions.csv").read_bytes() == first
    assert {p.name for p in empty.iterdir()} == set(export.OUTPUT_FILES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (empty / "notes.txt").write_text("x")
    with pytest.raises(LoadError, match="other files"):
        export.research_export(ds, protocol, KEY_A, empty)


def test_keep_only_applies_to_columns_outside_the_schema(tmp_path, protocol):
    ds = load_inputs(small_export(tmp_path), progress=False)
    with pytest.raises(LoadError, match="patient_name is a schema field"):
        export.research_export(ds, protocol, KEY_A, tmp_path / "e", keep=["patient_name"])
    with pytest.raises(LoadError, match="no such column"):
        export.research_export(ds, protocol, KEY_A, tmp_path / "e", keep=["shoe_size"])
    with pytest.raises(LoadError, match="never exported"):
        export.research_export(ds, protocol, KEY_A, tmp_path / "e", keep=["source_row"])
    manifest = export.research_export(ds, protocol, KEY_A, tmp_path / "e", keep=["room"])
    assert manifest["kept_on_request"] == [{"table": "sessions", "column": "room"}]
    assert pd.read_csv(tmp_path / "e" / "sessions.csv")["room"].tolist() == [1.0] * 20


# ---------------------------------------------------------------------------------------------
# the notebook


def test_notebook_walks_through_the_export(tmp_path):
    from outcomes.report.notebooks import execute_notebook

    path = ROOT / "notebooks" / "04_research_export.ipynb"
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert all(not c.get("outputs") for c in stored["cells"] if c["cell_type"] == "code")
    params = [c for c in stored["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert "".join(params[0]["source"]).startswith('DATA_DIR = "../data/sample"\n'
                                                  'PROTOCOL = "flexsys-hair-regrowth"\n'
                                                  'OUT_DIR = "../report"\nSAVED = None')
    out_dir = tmp_path / "report"
    nb = execute_notebook(path, {"DATA_DIR": str(SAMPLE), "PROTOCOL": "flexsys-hair-regrowth",
                                 "OUT_DIR": str(out_dir)}, cwd=ROOT / "notebooks")
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            assert o["output_type"] != "error", o
            assert o.get("name") != "stderr" or "Traceback" not in o.get("text", "")
            texts.append(o.get("text", ""))
            texts += [str(v) for v in o.get("data", {}).values()]
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in ("# Research export", "## What a research partner receives",
                    "## How each kind of field is treated", "## An example export",
                    "### The leak check", "## Small-cell suppression"):
        assert heading in markdown
    shown = "\n".join(texts)
    assert "hits in the export: []" in shown
    assert "('sessions.csv', 'patient_id')" in shown
    assert "<8" in shown
    for column, values in sample_identifiers().items():
        for v in values:
            assert v not in shown, column
    assert not out_dir.exists()  # the example never writes into the report folder


# ---------------------------------------------------------------------------------------------
# the command line


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outcomes.cli", "export", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


@needs_cli
def test_cli_export_writes_the_folder(tmp_path):
    key = tmp_path / "k.key"
    key.write_text(KEY_A.hex() + "\n")
    out = tmp_path / "e"
    res = run_cli(str(SESSIONS), "--outcomes", str(OUTCOMES), "--key-file", str(key),
                  "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} == set(export.OUTPUT_FILES)
    assert "leak check" in res.stdout
    ids = sample_identifiers()
    for name, parts in file_blobs(out).items():
        for values in ids.values():
            for v in values:
                assert not any(v.encode() in p for p in parts), name
        assert not any(KEY_A.hex().encode() in p for p in parts)


@needs_cli
@pytest.mark.parametrize("key_text,message", [
    (None, "does not exist"), ("0123456789", "shorter than 32 bytes")])
def test_cli_export_refuses_a_missing_or_short_key(tmp_path, key_text, message):
    key = tmp_path / "k.key"
    if key_text is not None:
        key.write_text(key_text)
    res = run_cli(str(SESSIONS), "--key-file", str(key), "--out", str(tmp_path / "e"))
    assert res.returncode == 1
    assert message in res.stderr and "secrets.token_hex(32)" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


@needs_cli
def test_cli_export_without_key_file_says_how_to_make_one(tmp_path):
    res = run_cli(str(SESSIONS), "--out", str(tmp_path / "e"))
    assert res.returncode in (1, 2)
    assert "key" in res.stderr
    assert "secrets.token_hex(32)" in res.stderr
    assert not (tmp_path / "e").exists()
