"""The research export leaks nothing a hostile input plants, and refuses nothing it need not.

Identifiers glued into codes and free text (`LauraSchmidt`, `Tel491606666241`,
`geb19711202`, `refP000259`, `burn_2025_05_15`) are either removed by the de-identification
or found by the leak check, which then refuses the export; each test says which.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outcomes import export
from outcomes.dataset import load_inputs
from outcomes.load import LoadError
from outcomes.protocol import load_protocol
from outcomes.sample import write_sample

KEY = b"k" * 16 + b"0123456789abcdef0123456789abcdef"
HOSTILE_NAME = "sessions_2024-11-01_to_2025-03-31_Praxis-Weber.csv"


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("flexsys-hair-regrowth")


def squash(text: str) -> str:
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).casefold())


def pieces(folder: Path) -> dict[str, list[str]]:
    """Each output file (and workbook member) as squashed cells: split at CSV, JSON and XML
    boundaries, then case and separators removed (read independently of the library)."""
    out: dict[str, list[str]] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        blobs = [p.read_bytes()]
        if p.suffix == ".xlsx":
            with zipfile.ZipFile(p) as z:
                blobs = [z.read(n) for n in z.namelist()]
        cells: list[str] = []
        for b in blobs:
            text = b.decode("utf-8", errors="replace")
            cells += [squash(c) for c in re.split(r'[,\n<>"]', text)]
        out[p.name] = cells
    return out


def found(folder: Path, needle: str) -> list[str]:
    n = squash(needle)
    return [name for name, cells in pieces(folder).items() if any(n in c for c in cells)]


def hostile_five_rows(folder: Path) -> Path:
    """The tester's file: five rows whose adverse_event codes carry a patient's details."""
    base = {"patient_name": "Laura Schmidt", "date_of_birth": "1971-12-02",
            "phone": "+49 160 6666241", "email": "laura.schmidt94@example.org",
            "clinic": "Nordstadt", "operator": "Dr. Vogt", "indication": "hair_regrowth",
            "area": "scalp_vertex", "energy_start_mj": 25, "passes": 2}
    codes = ["LauraSchmidt", "Tel491606666241", "geb19711202", "refP000259", "burn_2025_05_15"]
    rows = [{**base, "patient_id": "P000259" if i < 3 else "P000260",
             "session_date": ["2025-05-15", "2025-06-20", "2025-08-01", "2025-05-16",
                              "2025-06-30"][i], "adverse_event": c}
            for i, c in enumerate(codes)]
    rows[3]["patient_name"] = rows[4]["patient_name"] = "Max Weber"
    rows[3]["phone"] = rows[4]["phone"] = "+49 170 1234567"
    path = folder / HOSTILE_NAME
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_hostile_codes_dictionary_and_file_names_leak_nothing(tmp_path, protocol):
    ds = load_inputs(hostile_five_rows(tmp_path), progress=False)
    out = tmp_path / "e"
    manifest = export.research_export(ds, protocol, KEY, out)  # removed, so not refused
    for needle in ("LauraSchmidt", "Laura Schmidt", "491606666241", "19711202", "P000259",
                   "2025_05_15", "15.05.2025", "05/15/2025", "Praxis-Weber", "2024-11-01",
                   "2025-03-31", HOSTILE_NAME):
        assert found(out, needle) == [], needle
    assert set(pd.read_csv(out / "sessions.csv")["adverse_event"]) == {"other"}
    assert manifest["adverse_event"]["values_recoded_to_other"] == 5
    assert manifest["adverse_event"]["codes"] == ["other"]
    dictionary = pd.read_csv(out / "data_dictionary.csv", keep_default_na=False)
    ae = dictionary.loc[dictionary["field"] == "adverse_event", "allowed_values"].item()
    assert ae == ", ".join(export.deidentify.ADVERSE_EVENTS)  # the vocabulary, not the data
    digest = ds.files()["sha256"].item()
    assert manifest["inputs"][0]["file"] == f"sessions export (sha256 {digest[:12]}…)"
    assert manifest["leak_check"]["result"] == "passed"
    assert "session_date" in manifest["leak_check"]["fields"]


def test_leak_check_finds_glued_values_inside_words_and_in_every_spelling(tmp_path):
    ids = {"patient_name": {"Laura Schmidt"}, "phone": {"+49 160 6666241"},
           "patient_id": {"P000259"}, "date_of_birth": export.leakcheck.date_spellings(
               "1971-12-02"), "session_date": export.leakcheck.date_spellings("2025-05-15")}
    planted = {"LauraSchmidt": "patient_name", "Tel491606666241": "phone",
               "geb19711202": "date_of_birth", "refP000259": "patient_id",
               "burn_2025_05_15": "session_date", "am 15.05.2025": "session_date",
               "05/15/2025!": "session_date", "15 May 2025": "session_date",
               "LAURA\u00a0schmidt": "patient_name", "2.12.1971": "date_of_birth"}
    for i, (text, column) in enumerate(planted.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "x.csv").write_text(f"a,b\n1,{text}\n", encoding="utf-8")
        assert export.leak_check(folder, ids) == [("x.csv", column)], text
    folder = tmp_path / "members"
    folder.mkdir()
    with zipfile.ZipFile(folder / "w.xlsx", "w") as z:  # any member, any attribute
        z.writestr("xl/sharedStrings.xml", '<sst><si><t>ok</t></si></sst>')
        z.writestr("docProps/custom.xml", '<p name="refP000259"/>')
    (folder / "m.json").write_text(json.dumps({"note": "geb19711202"}), encoding="utf-8")
    assert export.leak_check(folder, ids) == [("m.json", "date_of_birth"),
                                              ("w.xlsx", "patient_id")]
    clean = tmp_path / "clean"
    clean.mkdir()  # numbers do not run together into a date; hex pseudonyms we made are masked
    (clean / "t.csv").write_text("year,day,id\n2025,0515,x\n19.711202,1,a2025051500ff\n"
                                 "0.9219711202999999,0.2121971,x\n", encoding="utf-8")
    assert export.leak_check(clean, ids, generated={"a2025051500ff"}) == []


def small_clinic(folder: Path, clinic: str, operator: str, patient_id: str = "P1",
                 name: str = "Anna Lang", filename: str = "sessions.csv") -> Path:
    rows = [{"patient_id": f"{patient_id}{i}" if i else patient_id, "patient_name": name,
             "session_date": f"2025-0{1 + j}-1{i}", "clinic": clinic, "operator": operator,
             "indication": "hair_regrowth", "area": "scalp_vertex", "energy_start_mj": 25,
             "passes": 2, "adverse_event": "none"} for i in range(3) for j in range(2)]
    path = folder / filename
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("clinic,operator,name,filename", [
    ("Praxis Dr. Brandt", "Dr. Brandt", "Anna Lang", "sessions.csv"),
    ("Praxis Brandt", "Dr. Brandt", "Anna Lang", "sessions.csv"),
    ("Nordstadt", "unknown", "Anna Lang", "sessions.csv"),
    ("Nordstadt", "Laser", "Eva Ott", "sessions_Eva_Ott_2025-01-10.csv"),
    ("Nordstadt", "Dr. Keller", "Li", "sessions.csv"),
])
def test_no_false_refusals(tmp_path, protocol, clinic, operator, name, filename):
    path = small_clinic(tmp_path, clinic, operator, name=name, filename=filename)
    out = tmp_path / "e"
    manifest = export.research_export(load_inputs(path, progress=False), protocol, KEY, out)
    assert manifest["leak_check"]["result"] == "passed"
    clinics = set(pd.read_csv(out / "sessions.csv")["clinic"])
    if "Brandt" in clinic:  # the clinician's name in the clinic's: a site code, kept apart
        assert clinics == {"site_" + export.pseudonym(clinic, KEY, "site")[:8]}
        assert found(out, "Brandt") == []
    if filename != "sessions.csv":  # a patient's name and a date in the file's name
        assert found(out, "Eva_Ott") == [] and found(out, "2025-01-10") == []


def test_identifier_in_a_kept_column_is_refused_by_the_leak_check(tmp_path, protocol):
    path = small_clinic(tmp_path, "Nordstadt", "Dr. Keller", patient_id="P000259")
    df = pd.read_csv(path)
    df["room"] = "Raum-1"
    df.loc[2, "room"] = "geb.02.01.2025-refP000259"  # a session date and an id, glued
    df.to_csv(path, index=False)
    out = tmp_path / "e"
    with pytest.raises(LoadError, match=r"leak check failed.*patient_id in sessions\.csv"):
        export.research_export(load_inputs(path, progress=False), protocol, KEY, out,
                               keep=["room"])
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["sessions.csv"]


# ---------------------------------------------------------------------------------------------
# property: whatever is glued where, it never reaches an output file

SESSION_FIELDS = ("adverse_event", "clinic", "area", "indication", "sex", "notes")
OUTCOME_FIELDS = ("notes", "instrument")
PREFIXES = ("", "ref", "Tel", "geb", "burn", "Pat.", "x")
SEPARATORS = ("", "_", "", "_", "-", " ", ".", "/", ":")  # "" and "_" keep a one-word code


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    write_sample(folder, patients=4, seed=7)
    return folder


def identifiers_of(sessions: pd.DataFrame, outcomes: pd.DataFrame) -> list[str]:
    ids: list[str] = []
    for c in ("patient_id", "patient_name", "phone", "email", "operator"):
        ids += sorted(set(sessions[c]) - {""})
    ids += [re.sub(r"\D", "", p) for p in sorted(set(sessions["phone"]) - {""})]
    dates = sorted(set(sessions["date_of_birth"]) | set(sessions["session_date"])
                   | set(outcomes["assessment_date"]) - {""})
    for d in dates:
        y, m, dd = d.split("-")
        ids += [f"{y}{m}{dd}", f"{dd}.{m}.{y}", f"{m}/{dd}/{y}", f"{y}_{m}_{dd}"]
    return ids


glue = st.tuples(st.sampled_from(PREFIXES), st.sampled_from(SEPARATORS),
                 st.sampled_from(("as is", "upper", "lower", "word", "word", "word")),
                 st.sampled_from(SEPARATORS), st.sampled_from(("", "x", "1", "_ok")))


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plants=st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 1000),
                                 st.integers(0, 1000), glue), min_size=4, max_size=10))
def test_glued_identifiers_never_reach_an_output(plants, sample_dir, protocol, tmp_path):
    sessions = pd.read_csv(sample_dir / "sessions.csv", dtype=str, keep_default_na=False)
    outcomes = pd.read_csv(sample_dir / "outcomes.csv", dtype=str, keep_default_na=False)
    ids = identifiers_of(sessions, outcomes)
    glued = []
    for in_sessions, field_i, row_i, id_i, (pre, sep1, case, sep2, post) in plants:
        table = sessions if in_sessions else outcomes
        fields = SESSION_FIELDS if in_sessions else OUTCOME_FIELDS
        ident = ids[id_i % len(ids)]
        shown = {"as is": ident, "upper": ident.upper(), "lower": ident.lower(),
                 "word": re.sub(r"\W", "", ident)}[case]  # LauraSchmidt, 491606666241
        table.loc[row_i % len(table), fields[field_i % len(fields)]] = \
            f"{pre}{sep1}{shown}{sep2}{post}"
        glued.append(ident)
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # examples share tmp_path
    sessions.to_csv(folder / "sessions.csv", index=False)
    outcomes.to_csv(folder / "outcomes.csv", index=False)
    ds = load_inputs(folder / "sessions.csv", folder / "outcomes.csv", progress=False)
    out = folder / "e"
    # every one of these fields is a code, a category or free text: the de-identification
    # removes what names a person, so the export is made (not refused) and holds none of it
    export.research_export(ds, protocol, KEY, out)
    for ident in glued:
        assert found(out, ident) == [], ident


def _plain_leak_check(folder: Path, ids, made) -> list[tuple[str, str]]:
    """Reference: every file, every unit, searched on its own (no text searched once)."""
    lc = export.leakcheck
    m = lc.Matcher.build(ids)
    hits = set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data_table = path.stem in lc.DATA_TABLES and path.suffix in (".csv", ".parquet")
        hits |= {(rel, c) for c in m.find(rel, whole_words=False)}
        for unit in lc._units(path):
            text = lc._masked(unit, made) if len(unit) >= lc.MIN_WORD else None
            if text is not None:
                hits |= {(rel, c) for c in m.find(text, whole_words=data_table)}
    return sorted(hits)


_PIECES = st.sampled_from(["Laura", "Schmidt", "P000259", "ref", "2025-05-15", "15.05.2025",
                           "0123456789abcdef", "fedcba9876543210", ":12:1", " ", "_", "x",
                           "Tel", "+49 160 6666241", "krause", "1.5", "laser", "Weber"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(cells=["Weber", "x Weber:12:1", "0123456789abcdef:12:1", "fedcba9876543210:12:1"])
@given(cells=st.lists(st.lists(_PIECES, min_size=1, max_size=4).map("".join), min_size=1,
                      max_size=30))
def test_leak_check_searching_each_text_once_finds_what_a_plain_search_finds(cells):
    ids = {"patient_name": {"Laura Schmidt", "Krause", "Weber"}, "phone": {"+49 160 6666241"},
           "patient_id": {"P000259"},
           "session_date": export.leakcheck.date_spellings("2025-05-15")}
    made = {"0123456789abcdef"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frame = pd.DataFrame({"session_id": cells, "note": cells[::-1]})
        frame.to_csv(folder / "sessions.csv", index=False)
        frame.to_parquet(folder / "sessions.parquet", index=False)
        frame.to_csv(folder / "notes.csv", index=False)  # the same cells outside a data table
        assert export.leak_check(folder, ids, generated=made) == \
            _plain_leak_check(folder, ids, made)
