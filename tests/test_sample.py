"""Tests for the synthetic export generator (outcomes.sample).

They read the generated data with plain pandas / csv / openpyxl, not with the
project's loader, so they check the generator on its own.
"""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from outcomes.sample import PLANTED, SESSION_COLUMNS, generate, write_sample

END = pd.Timestamp("2026-10-31")
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
GERMAN = [
    "Patienten-Nr.", "Name", "Geburtsdatum", "Geschlecht", "Hauttyp", "Telefon", "E-Mail",
    "Standort", "Behandler", "Datum", "Indikation", "Areal", "Startenergie (J)",
    "Endenergie (J)", "Abdeckung (%)", "Durchgänge", "Wartezeit Durchgänge (min)", "Testspot",
    "Wartezeit Testspot (min)", "Ödem", "Erythem", "Endpunkt nach (min)", "Schmerz (NRS)",
    "Kühlung während", "Kühlung danach (min)", "Kosmetik entfernt", "Herpesprophylaxe",
    "Augenschutz", "Anästhetikum entfernt", "Sonnenschutz-Beratung", "KI Isotretinoin",
    "KI Keloid", "KI postoperative Hautveränderungen", "KI systemische Steroide",
    "Nebenwirkung", "Bemerkungen", "Geräte-Nr.",
]  # fmt: skip


@pytest.fixture(scope="module")
def big() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A larger sample so the habit and outcome effects are clear of noise."""
    return generate(patients=2000, seed=7)


def clean_sessions(sessions: pd.DataFrame) -> pd.DataFrame:
    """Hair-regrowth sessions with parseable id, date and energy, as plain pandas sees them."""
    s = sessions.drop_duplicates().copy()
    s["date"] = pd.to_datetime(s["session_date"], format="%Y-%m-%d", errors="coerce")
    s["e_start"] = pd.to_numeric(s["energy_start_mj"], errors="coerce")
    s = s.dropna(subset=["patient_id", "date", "e_start"])
    s = s[s["indication"] == "hair_regrowth"].sort_values(["patient_id", "area", "date"])
    s["gap"] = s.groupby(["patient_id", "area"])["date"].diff().dt.days
    s["course"] = (s["gap"].isna() | (s["gap"] > 120)).cumsum()
    return s


def courses(s: pd.DataFrame) -> pd.DataFrame:
    """One row per course with the four compliance conditions the outcomes depend on."""
    s = s.assign(
        ok_gap=s["gap"].isna() | (s["gap"] > 120) | s["gap"].between(28, 42),
        ok_energy=s["e_start"].between(20, 30),
        ok_endpoint=(s["edema"] == "true") & (s["erythema"] == "true"),
    )
    c = s.groupby("course").agg(
        patient_id=("patient_id", "first"),
        n=("date", "size"),
        first=("date", "min"),
        last=("date", "max"),
        ok_gap=("ok_gap", "all"),
        ok_energy=("ok_energy", "all"),
        ok_endpoint=("ok_endpoint", "all"),
    )
    c["compliant"] = c["ok_gap"] & c["ok_energy"] & c["ok_endpoint"] & c["n"].between(3, 4)
    return c


def test_same_seed_same_frames_different_seed_different() -> None:
    s1, o1 = generate(patients=120, seed=3)
    s2, o2 = generate(patients=120, seed=3)
    pd.testing.assert_frame_equal(s1, s2)
    pd.testing.assert_frame_equal(o1, o2)
    s3, o3 = generate(patients=120, seed=4)
    assert not s1.equals(s3)
    assert not o1.equals(o3)


def test_shape_and_counts() -> None:
    sessions, outcomes = generate(patients=300, seed=1)
    assert list(sessions.columns) == list(SESSION_COLUMNS)
    assert "session_id" not in sessions.columns
    assert list(outcomes.columns) == [
        "patient_id", "assessment_date", "instrument", "score", "rater", "recurrence", "notes",
    ]  # fmt: skip
    assert 900 <= len(sessions) <= 1400  # 2–6 sessions per course, ~10 % second courses
    assert 900 <= len(outcomes) <= 2000
    assert sessions["patient_id"].nunique() == 300
    assert set(sessions["operator"].dropna()) == {
        "Dr. Keller", "Dr. Brandt", "Dr. Lehmann", "Dr. Hartmann", "Dr. Vogt", "Dr. Seidel",
    }  # fmt: skip
    assert sessions.groupby("operator")["clinic"].nunique().max() == 1
    share = sessions["indication"].value_counts(normalize=True)
    assert 0.005 < share["acne_scars"] < 0.08
    assert set(sessions["test_spot"].dropna()) == {"true", "false"}
    assert sessions["test_spot"].isna().any()  # missing documentation is an empty cell


def test_clinician_habits_visible(big: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    s = clean_sessions(big[0])
    by_op = s.groupby("operator")
    energy = by_op["e_start"].mean()
    assert energy["Dr. Brandt"] > 32
    assert energy.drop("Dr. Brandt").max() < 27
    gap = s[s["gap"] <= 120].groupby("operator")["gap"].median()
    assert 50 <= gap["Dr. Vogt"] <= 62
    assert gap.drop("Dr. Vogt").between(30, 42).all()
    test_spot = by_op["test_spot"].apply(lambda x: (x == "true").mean())
    assert test_spot["Dr. Lehmann"] < 0.65
    assert test_spot[["Dr. Keller", "Dr. Hartmann", "Dr. Brandt", "Dr. Vogt"]].min() > 0.9
    empty = by_op["coverage_pct"].apply(lambda x: x.isna().mean())
    assert empty["Dr. Seidel"] > 0.12
    assert empty.drop("Dr. Seidel").max() < 0.05
    # each patient is mostly seen by one clinician
    top = s.groupby("patient_id")["operator"].agg(lambda x: x.value_counts().iloc[0] / len(x))
    assert top.mean() > 0.85


def test_courses_and_final_assessments(big: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    sessions, outcomes = big
    c = courses(clean_sessions(sessions))
    per_patient = c.groupby("patient_id").size()
    assert 0.05 < (per_patient > 1).mean() < 0.2  # second courses (and a few two-area ones)
    assert c["n"].between(3, 4).mean() > 0.5
    done = c[(END - c["last"]).dt.days >= 120]
    assert len(done) < len(c)  # some courses are still ongoing at the end
    o = outcomes.assign(date=pd.to_datetime(outcomes["assessment_date"], errors="coerce"))
    m = o.merge(done.reset_index(), on="patient_id")
    days = (m["date"] - m["last"]).dt.days
    final = m[days.between(90, 183)]["course"].nunique() / len(done)
    assert 0.75 < final < 0.93
    early = m[days.between(40, 80)]["course"].nunique() / len(done)
    assert 0.02 < early < 0.1


def test_compliant_courses_do_better(big: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    sessions, outcomes = big
    c = courses(clean_sessions(sessions))
    o = outcomes.assign(date=pd.to_datetime(outcomes["assessment_date"], errors="coerce"))
    m = o.merge(c.reset_index(), on="patient_id")
    days = (m["date"] - m["last"]).dt.days
    final = m[days.between(90, 183)]
    means = final.groupby(["instrument", "compliant"])["score"].mean().unstack()
    assert means.loc["satisfaction", True] - means.loc["satisfaction", False] > 0.6
    assert means.loc["gais", False] - means.loc["gais", True] > 0.6  # lower GAIS is better
    assert means.loc["gpa", True] - means.loc["gpa", False] > 0.6
    base = m[(m["instrument"] == "hair_density") & (m["date"] <= m["first"])
             & ((m["first"] - m["date"]).dt.days <= 14)]  # fmt: skip
    base = base.groupby("course")["score"].first()
    after = final[final["instrument"] == "hair_density"].groupby("course")["score"].first()
    gain = (after - base).dropna()
    comp = c.loc[gain.index, "compliant"]
    assert 110 < base.mean() < 130
    assert gain[comp].mean() - gain[~comp].mean() > 8
    assert 18 < gain[comp].mean() < 32


def test_outcome_values_and_recurrence(big: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    o = big[1].drop_duplicates()
    known = o[o["instrument"] != "dlqi_x"]
    ranges = {"satisfaction": (1, 5), "gais": (1, 5), "gpa": (-3, 3), "hair_density": (20, 400)}
    raters = {"satisfaction": "patient", "gais": "clinician", "gpa": "clinician",
              "hair_density": "clinician"}  # fmt: skip
    assert set(known["instrument"]) == set(ranges)
    for inst, (lo, hi) in ranges.items():
        rows = known[known["instrument"] == inst]
        assert (rows["rater"] == raters[inst]).all()
        outside = ~rows["score"].between(lo, hi)
        assert outside.sum() <= (1 if inst == "satisfaction" else 0)  # the planted score 7
    rec = o[o["recurrence"].notna()]
    assert set(rec["recurrence"]) == {"true", "false"}
    assert set(rec["instrument"]) <= {"satisfaction", "gpa"}
    assert len(rec) > 100


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample(tmp_path_factory.mktemp("sample"), patients=60, seed=2, german_xlsx=True)


def read_lines(path: Path) -> list[list[str]]:
    """CSV rows as raw strings; index 0 is line 1 (the header)."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_write_sample_files(written: dict[str, Path]) -> None:
    assert set(written) == {"sessions", "outcomes", "sessions_xlsx", "mapping"}
    out = written["sessions"].parent
    assert written["sessions_xlsx"] == out / "de" / "sessions.xlsx"
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    sessions, outcomes = generate(patients=60, seed=2)
    assert len(read_lines(written["sessions"])) == len(sessions) + 1
    assert len(read_lines(written["outcomes"])) == len(outcomes) + 1
    text = written["sessions"].read_text(encoding="utf-8")
    assert ",true," in text and ",false," in text and "True" not in text


@pytest.mark.parametrize("file", ["sessions.csv", "outcomes.csv"])
def test_planted_rows_at_their_lines(written: dict[str, Path], file: str) -> None:
    lines = read_lines(written["sessions" if file == "sessions.csv" else "outcomes"])
    header = lines[0]
    planted = [p for p in PLANTED if p.file == file]
    assert len(planted) == (8 if file == "sessions.csv" else 4)
    for p in planted:
        row = dict(zip(header, lines[p.line - 1], strict=True))
        before = dict(zip(header, lines[p.line - 2], strict=True))
        if p.kind == "duplicate_row":
            assert row == before, p
            continue
        assert row[p.field] == p.value, p
        if p.expect == "rejected" and p.kind != "score_out_of_range":
            # a copy of the row before with the planted change only
            assert {k for k in header if row[k] != before[k]} == {p.field}, p
        if p.kind == "score_out_of_range":  # a copy of a real satisfaction row
            assert row["instrument"] == "satisfaction" and row["rater"] == "patient"
            real = [dict(zip(header, r, strict=True)) for r in lines[1:]]
            assert any(r == {**row, "score": r["score"]} and r["score"] != "7" for r in real)
    # no accidental exact duplicate other than the planted one
    rows = [tuple(r) for r in lines[1:]]
    assert len(rows) - len(set(rows)) == 1


def test_planted_rows_same_for_any_seed() -> None:
    for seed in (0, 5, 99):
        sessions, outcomes = generate(patients=20, seed=seed)
        for p in PLANTED:
            df = sessions if p.file == "sessions.csv" else outcomes
            if p.field is None:
                assert df.iloc[p.line - 2].equals(df.iloc[p.line - 3])
            else:
                got = df[p.field].iloc[p.line - 2]
                assert ("" if pd.isna(got) else str(got)) == p.value, (seed, p)


def test_german_xlsx(written: dict[str, Path]) -> None:
    wb = openpyxl.load_workbook(written["sessions_xlsx"])
    assert wb.sheetnames == ["Info", "Behandlungen"]
    assert wb["Info"]["A1"].value
    ws = wb["Behandlungen"]
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][0] and all(v is None for v in rows[1])
    assert list(rows[2]) == GERMAN
    csv_rows = read_lines(written["sessions"])
    assert len(rows) - 3 == len(csv_rows) - 1
    col = {h: i for i, h in enumerate(GERMAN)}
    first = rows[3]
    assert ws.cell(row=4, column=col["Datum"] + 1).is_date
    assert isinstance(first[col["Geburtsdatum"]], str) and first[col["Geburtsdatum"]][2] == "."
    assert isinstance(first[col["Startenergie (J)"]], str)
    assert first[col["Startenergie (J)"]].startswith("0,0")
    assert isinstance(first[col["Abdeckung (%)"]], int)
    assert {r[col["Testspot"]] for r in rows[3:]} <= {"ja", "nein", None}
    # same rows as the CSV: energies convert back from J, planted values keep their meaning
    for xrow, crow in zip(rows[3:], csv_rows[1:], strict=True):
        e = xrow[col["Startenergie (J)"]]
        if crow[12] not in ("", "abc"):
            assert float(e.replace(",", ".")) * 1000 == pytest.approx(float(crow[12]))
        assert (xrow[col["Patienten-Nr."]] or "") == crow[0]
    expected = {
        "missing_patient_id": ("Patienten-Nr.", None),
        "missing_session_date": ("Datum", None),
        "impossible_date": ("Datum", "31.02.2025"),
        "non_iso_date": ("Datum", "03/04/2025"),
        "energy_not_numeric": ("Startenergie (J)", "abc"),
        "coverage_implausible": ("Abdeckung (%)", 80),
        "energy_looks_like_joules": ("Startenergie (J)", "0,000025"),
    }
    for p in PLANTED:
        if p.file == "sessions.csv" and p.kind in expected:
            header, value = expected[p.kind]
            assert rows[p.xlsx_row - 1][col[header]] == value, p


def test_mapping_file(written: dict[str, Path]) -> None:
    m = tomllib.loads(written["mapping"].read_text(encoding="utf-8"))
    assert m["source"] == {
        "table": "sessions", "sheet": "Behandlungen", "decimal": ",",
        "date_format": "%d.%m.%Y", "header_row": 3,
    }  # fmt: skip
    mapped = dict(zip(SESSION_COLUMNS, GERMAN, strict=True))
    del mapped["device_serial"]
    assert m["columns"] == mapped
    assert m["units"] == {"energy_start_mj": "J", "energy_final_mj": "J"}
    assert m["values"] == {"true": ["ja"], "false": ["nein"]}


def test_committed_sample_is_current() -> None:
    """data/sample holds write_sample('data/sample', 300, seed=1, german_xlsx=True)."""
    path = SAMPLE_DIR / "sessions.csv"
    if not path.exists():
        pytest.skip("data/sample not generated")
    sessions, outcomes = generate(patients=300, seed=1)
    assert path.read_text(encoding="utf-8") == sessions.to_csv(index=False, lineterminator="\n")
    out_text = (SAMPLE_DIR / "outcomes.csv").read_text(encoding="utf-8")
    assert out_text == outcomes.to_csv(index=False, lineterminator="\n")
    assert (SAMPLE_DIR / "de" / "sessions.xlsx").exists()
    assert (SAMPLE_DIR / "de" / "sessions.mapping.toml").exists()
