"""Seeded synthetic clinic export: sessions and outcomes as a real export would look.

Why: the audit, the statistics, the report and the research export all need data
that behaves like the clinic's (courses, clinician habits, outcomes that depend on
compliance, documentation gaps, a few broken rows) without touching real patients.

Everything is vectorised with numpy so ``generate(patients=300_000)`` (about one
million sessions) stays fast; only the handful of planted rows and the six
clinicians are handled in small Python loops.

Planted bad rows sit at fixed line numbers (see ``PLANTED``) for any seed as long
as ``patients >= 20``, so other tests can check that the loader reports them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "CLINICIANS",
    "GERMAN_HEADERS",
    "HABITS",
    "OUTCOME_COLUMNS",
    "PLANTED",
    "SESSION_COLUMNS",
    "Planted",
    "generate",
    "write_sample",
]

SESSION_COLUMNS: tuple[str, ...] = (
    "patient_id", "patient_name", "date_of_birth", "sex", "fitzpatrick_type", "phone",
    "email", "clinic", "operator", "session_date", "indication", "area",
    "energy_start_mj", "energy_final_mj", "coverage_pct", "passes", "pass_wait_min",
    "test_spot", "test_spot_wait_min", "edema", "erythema", "endpoint_onset_min",
    "pain_nrs", "cooling_during", "post_cooling_min", "cosmetics_removed",
    "herpes_prophylaxis", "eye_protection", "anesthetic_removed_skin_dry",
    "sun_advice_given", "ci_isotretinoin", "ci_keloid", "ci_post_surgical_skin_changes",
    "ci_systemic_steroids", "adverse_event", "notes", "device_serial",
)  # fmt: skip

OUTCOME_COLUMNS: tuple[str, ...] = (
    "patient_id", "assessment_date", "instrument", "score", "rater", "recurrence", "notes",
)  # fmt: skip

#: clinician -> (clinic, habit). Index order matters: the generator uses it.
CLINICIANS: dict[str, tuple[str, str]] = {
    "Dr. Keller": ("Nordstadt", "follows the protocol"),
    "Dr. Brandt": ("Nordstadt", "starts at 35 mJ most of the time"),
    "Dr. Lehmann": ("Nordstadt", "often skips the test spot"),
    "Dr. Hartmann": ("Südpark", "follows the protocol"),
    "Dr. Vogt": ("Südpark", "leaves about 8 weeks between sessions"),
    "Dr. Seidel": ("Südpark", "poor documentation (~20 % of optional fields empty)"),
}
#: habit -> clinician, for tests and notebooks that want to point at a deviation.
HABITS: dict[str, str] = {
    "high_start_energy": "Dr. Brandt",
    "skips_test_spot": "Dr. Lehmann",
    "long_intervals": "Dr. Vogt",
    "poor_documentation": "Dr. Seidel",
    "compliant": "Dr. Keller",
    "compliant_2": "Dr. Hartmann",
}
_OPS = np.array(list(CLINICIANS), dtype=object)
_CLINICS = np.array(["Nordstadt", "Südpark"], dtype=object)
_DEVICES = np.array(["FX-2108-00417", "FX-2108-00532", "FX-2203-01088"], dtype=object)
_KELLER, _BRANDT, _LEHMANN, _HARTMANN, _VOGT, _SEIDEL = range(6)

GERMAN_HEADERS: dict[str, str] = {
    "patient_id": "Patienten-Nr.",
    "patient_name": "Name",
    "date_of_birth": "Geburtsdatum",
    "sex": "Geschlecht",
    "fitzpatrick_type": "Hauttyp",
    "phone": "Telefon",
    "email": "E-Mail",
    "clinic": "Standort",
    "operator": "Behandler",
    "session_date": "Datum",
    "indication": "Indikation",
    "area": "Areal",
    "energy_start_mj": "Startenergie (J)",
    "energy_final_mj": "Endenergie (J)",
    "coverage_pct": "Abdeckung (%)",
    "passes": "Durchgänge",
    "pass_wait_min": "Wartezeit Durchgänge (min)",
    "test_spot": "Testspot",
    "test_spot_wait_min": "Wartezeit Testspot (min)",
    "edema": "Ödem",
    "erythema": "Erythem",
    "endpoint_onset_min": "Endpunkt nach (min)",
    "pain_nrs": "Schmerz (NRS)",
    "cooling_during": "Kühlung während",
    "post_cooling_min": "Kühlung danach (min)",
    "cosmetics_removed": "Kosmetik entfernt",
    "herpes_prophylaxis": "Herpesprophylaxe",
    "eye_protection": "Augenschutz",
    "anesthetic_removed_skin_dry": "Anästhetikum entfernt",
    "sun_advice_given": "Sonnenschutz-Beratung",
    "ci_isotretinoin": "KI Isotretinoin",
    "ci_keloid": "KI Keloid",
    "ci_post_surgical_skin_changes": "KI postoperative Hautveränderungen",
    "ci_systemic_steroids": "KI systemische Steroide",
    "adverse_event": "Nebenwirkung",
    "notes": "Bemerkungen",
    "device_serial": "Geräte-Nr.",
}

_BOOL_COLS = (
    "test_spot", "edema", "erythema", "cooling_during", "cosmetics_removed",
    "herpes_prophylaxis", "eye_protection", "anesthetic_removed_skin_dry", "sun_advice_given",
    "ci_isotretinoin", "ci_keloid", "ci_post_surgical_skin_changes", "ci_systemic_steroids",
)  # fmt: skip
_INT_COLS = (
    "coverage_pct", "passes", "pass_wait_min", "test_spot_wait_min", "endpoint_onset_min",
    "pain_nrs", "post_cooling_min",
)  # fmt: skip
_ENERGY_COLS = ("energy_start_mj", "energy_final_mj")
# fields the poor documenter leaves empty ~20 % of the time (others ~0.5 %)
_OPTIONAL = (*_INT_COLS, *_BOOL_COLS, "energy_final_mj")


# --------------------------------------------------------------------------- planted rows
@dataclass(frozen=True)
class Planted:
    """One deliberately bad row in a sample file.

    ``line`` is the 1-based line in the CSV (header = line 1); in the German XLSX
    the same sessions row is at ``line + 2`` (title row, empty row, header on row 3).
    ``expect`` is ``"rejected"`` (an extra row the loader must reject) or
    ``"warning"`` (a real row with an implausible but usable value, loaded and warned).
    """

    kind: str
    file: str
    line: int
    field: str | None
    value: str
    expect: str

    @property
    def xlsx_row(self) -> int:
        """Row of this record in ``de/sessions.xlsx`` (sessions only)."""
        return self.line + 2


PLANTED: tuple[Planted, ...] = (
    Planted("missing_patient_id", "sessions.csv", 4, "patient_id", "", "rejected"),
    Planted("missing_session_date", "sessions.csv", 8, "session_date", "", "rejected"),
    Planted("impossible_date", "sessions.csv", 12, "session_date", "2025-02-31", "rejected"),
    Planted("non_iso_date", "sessions.csv", 16, "session_date", "03/04/2025", "rejected"),
    Planted("duplicate_row", "sessions.csv", 20, None, "", "rejected"),
    Planted("energy_not_numeric", "sessions.csv", 24, "energy_start_mj", "abc", "rejected"),
    Planted("coverage_implausible", "sessions.csv", 28, "coverage_pct", "80", "warning"),
    Planted("energy_looks_like_joules", "sessions.csv", 32, "energy_start_mj", "0.025", "warning"),
    Planted("missing_assessment_date", "outcomes.csv", 5, "assessment_date", "", "rejected"),
    Planted("score_out_of_range", "outcomes.csv", 9, "score", "7", "rejected"),
    Planted("unknown_instrument", "outcomes.csv", 13, "instrument", "dlqi_x", "rejected"),
    Planted("duplicate_row", "outcomes.csv", 17, None, "", "rejected"),
)


# --------------------------------------------------------------------------- name pools
_FIRST_F = np.array(
    ["Anna", "Maria", "Laura", "Julia", "Sarah", "Lena", "Katharina", "Sophie", "Claudia",
     "Sabine", "Petra", "Monika", "Elif", "Ayşe", "Zeynep", "Nina", "Lea", "Hannah", "Jana",
     "Sandra", "Birgit", "Emma", "Mia", "Jülide"], dtype=object)  # fmt: skip
_FIRST_M = np.array(
    ["Thomas", "Michael", "Andreas", "Stefan", "Markus", "Jan", "Lukas", "Felix", "Daniel",
     "Tobias", "Mehmet", "Emre", "Can", "Jonas", "Paul", "Florian", "Christian", "Alexander",
     "Sebastian", "Tim", "Jörg", "Uwe", "Murat", "Björn"], dtype=object)  # fmt: skip
_LAST = np.array(
    ["Berger", "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner",
     "Becker", "Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann",
     "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann", "Yılmaz", "Kaya", "Demir", "Şahin",
     "Lange", "Werner", "Krause", "Lorenz", "Öztürk", "Jäger"], dtype=object)  # fmt: skip
_TRANSLIT = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ı": "i", "ş": "s", "ç": "c", "ğ": "g",
     "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "Ş": "S"})  # fmt: skip


def _mail(names: np.ndarray) -> np.ndarray:
    """E-mail-safe lower-case spelling of each name in a small pool."""
    return np.array([n.translate(_TRANSLIT).lower() for n in names], dtype=object)


# (prefix, with full name?, suffix): a few notes carry the patient's name on purpose
_SESSION_NOTES = (
    ("", True, " reports mild itching"),
    ("", True, " asked whether results last"),
    ("Photos taken before treatment", False, ""),
    ("Called by ", True, " to reschedule"),
    ("Slight redness from last session still visible", False, ""),
    ("", True, " prefers morning appointments"),
    ("Patient nervous, explained procedure again", False, ""),
    ("Hair wash 24 h before recommended", False, ""),
)
_OUTCOME_NOTES = (
    ("Trichoscopy photo documented", False, ""),
    ("", True, " very happy with the result"),
    ("Same measurement site as baseline", False, ""),
    ("", True, " notices thinning again"),
)
_AE_CODES = np.array(
    ["prolonged_erythema", "hyperpigmentation", "blistering", "infection"], dtype=object
)
_INSTRUMENTS = np.array(["hair_density", "satisfaction", "gais", "gpa"], dtype=object)
_RATERS = np.array(["clinician", "patient", "clinician", "clinician"], dtype=object)
_HD, _SAT, _GAIS, _GPA = range(4)


# --------------------------------------------------------------------------- helpers
def _day(s: str) -> int:
    return int(np.datetime64(s, "D").astype(np.int64))



class _Table:
    """Columns kept as (categories, codes) or (ints, mask) until the frame is built.

    Why: reordering, inserting the planted copies and editing single cells are then
    integer operations, and each text column becomes a pyarrow string array with one
    ``take`` (much faster and smaller than Python string objects for ~1M rows).
    """

    def __init__(self) -> None:
        self.text: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.ints: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.order: list[str] = []

    def add_text(self, name: str, cats: np.ndarray, codes: np.ndarray) -> None:
        """Text column: ``cats[codes]``, code -1 = missing (empty cell)."""
        self.text[name] = (np.asarray(cats, dtype=object), np.asarray(codes, dtype=np.int64))
        self.order.append(name)

    def add_ints(self, name: str, values: np.ndarray, missing: np.ndarray) -> None:
        """Integer column with a missing mask."""
        self.ints[name] = (np.asarray(values, dtype=np.int64), np.asarray(missing, dtype=bool))
        self.order.append(name)

    def take(self, idx: np.ndarray) -> None:
        """Reorder / repeat rows."""
        self.text = {k: (c, codes[idx]) for k, (c, codes) in self.text.items()}
        self.ints = {k: (v[idx], m[idx]) for k, (v, m) in self.ints.items()}

    def set(self, name: str, row: int, value: object) -> None:
        """Change one cell; ``None`` makes it empty."""
        if name in self.ints:
            values, missing = self.ints[name]
            missing[row] = value is None
            values[row] = 0 if value is None else int(value)  # type: ignore[call-overload]
            return
        cats, codes = self.text[name]
        if value is None:
            codes[row] = -1
            return
        hit = np.flatnonzero(cats == value)
        if hit.size:
            codes[row] = hit[0]
        else:
            self.text[name] = (np.append(cats, np.array([value], dtype=object)), codes)
            codes[row] = cats.size

    def __len__(self) -> int:
        first = self.order[0]
        return len(self.text[first][1] if first in self.text else self.ints[first][0])

    def frame(self) -> pd.DataFrame:
        """Build the DataFrame (``str`` columns backed by pyarrow, nullable ``Int64``)."""
        data: dict[str, object] = {}
        for name in self.order:
            if name in self.ints:
                values, missing = self.ints[name]
                data[name] = pd.arrays.IntegerArray(values, missing.copy())
            else:
                cats, codes = self.text[name]
                arr = pa.array(cats, type=pa.large_string()).take(
                    pa.array(codes, mask=codes < 0)
                )
                data[name] = pd.array(arr, dtype="str")
        return pd.DataFrame(data, columns=self.order)


def _iso(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ISO date strings for integer day numbers, as (categories, codes)."""
    uniq, inv = np.unique(days, return_inverse=True)
    return uniq.astype("datetime64[D]").astype(str).astype(object), inv


def _energy_text(values: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies as the export writes them (``25``, ``27.5``), as (categories, codes)."""
    uniq, inv = np.unique(values, return_inverse=True)
    cats = np.array([f"{v:g}" for v in uniq], dtype=object)
    return cats, np.where(missing, -1, inv)


_TF = np.array(["false", "true"], dtype=object)


def _bool_codes(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    return np.where(missing, -1, values.astype(np.int64))


def _texts(
    rng: np.random.Generator,
    n: int,
    rate: float,
    templates: tuple[tuple[str, bool, str], ...],
    name_of_row: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Mostly empty free text; some entries name the patient (identifying on purpose).

    Returns (categories, codes) with one category per non-empty note.
    """
    rows = np.flatnonzero(rng.random(n) < rate)
    pick = rng.integers(0, len(templates), rows.size)
    cats = np.empty(rows.size, dtype=object)
    for t, (prefix, with_name, suffix) in enumerate(templates):  # a few templates only
        sel = pick == t
        cats[sel] = (prefix + name_of_row(rows[sel]) + suffix) if with_name else prefix + suffix
    codes = np.full(n, -1, dtype=np.int64)
    codes[rows] = np.arange(rows.size)
    return cats, codes


def _segments(group: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a contiguous group array."""
    return np.flatnonzero(np.r_[True, group[1:] != group[:-1]])


def _expand(
    rng: np.random.Generator,
    start_day: np.ndarray,
    n_sessions: np.ndarray,
    clinician: np.ndarray,
    end_day: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Session days for courses (course-major); drops sessions after ``end_day``.

    Returns (course index, position in course, day) for the kept sessions.
    """
    course = np.repeat(np.arange(start_day.size), n_sessions)
    first = np.cumsum(n_sessions) - n_sessions
    pos = np.arange(course.size) - first[course]
    vogt = clinician[course] == _VOGT
    gaps = np.rint(rng.normal(np.where(vogt, 56.0, 35.0), np.where(vogt, 5.0, 4.0)))
    late = rng.random(course.size) < 0.05  # a missed appointment now and then
    gaps = gaps + late * rng.integers(10, 35, course.size)
    gaps = np.clip(gaps, 14, 110).astype(np.int64)
    gaps[pos == 0] = 0
    cs = np.cumsum(gaps)
    day = start_day[course] + cs - cs[first[course]]
    keep = day <= end_day
    return course[keep], pos[keep], day[keep]


# --------------------------------------------------------------------------- generate
def generate(
    patients: int = 300, seed: int = 1, start: str = "2024-11-01", end: str = "2026-10-31"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (sessions, outcomes) as an export would look.

    Canonical column names (plus the unknown ``device_serial``), values as the export
    writes them: ISO date strings, ``true``/``false``, energies as text, missing as
    empty (NA). Planted bad rows (``PLANTED``) are included, so
    ``df.to_csv(index=False)`` gives exactly the sample file.
    """
    if patients < 1:
        raise ValueError("patients must be at least 1")
    rng = np.random.default_rng(seed)
    d0, d1 = _day(start), _day(end)
    if d1 - d0 < 60:
        raise ValueError("the period from start to end must be at least 60 days")
    p = patients

    # ---- patients
    clinic = (rng.random(p) < 0.45).astype(np.int64)  # 0 Nordstadt, 1 Südpark
    primary = clinic * 3 + rng.choice(3, p, p=[0.36, 0.32, 0.32])
    female = rng.random(p) < 0.45
    all_first = np.concatenate([_FIRST_F, _FIRST_M])
    name_i = np.where(
        female, rng.integers(0, _FIRST_F.size, p), _FIRST_F.size + rng.integers(0, _FIRST_M.size, p)
    )
    li = rng.integers(0, _LAST.size, p)
    full_name = all_first[name_i] + " " + _LAST[li]
    domains = np.array(["@example.org", "@example.com", "@example.net"], dtype=object)
    num = np.char.zfill(rng.integers(0, 100, p).astype(str), 2).astype(object)
    email = _mail(all_first)[name_i] + "." + _mail(_LAST)[li] + num + domains[
        rng.integers(0, 3, p)
    ]
    prefixes = np.array(["+49 151 ", "+49 160 ", "+49 170 ", "+49 176 ", "+49 40 "], dtype=object)
    phone = prefixes[rng.integers(0, prefixes.size, p)] + rng.integers(
        1_000_000, 9_999_999, p
    ).astype(str).astype(object)
    dob = d0 - rng.integers(20 * 365, 68 * 365, p)
    fitz = rng.choice(6, p, p=[0.05, 0.30, 0.35, 0.18, 0.08, 0.04])
    width = max(6, len(str(p)))
    pid = ("P" + np.char.zfill(np.arange(1, p + 1).astype(str), width)).astype(object)
    acne = rng.random(p) < 0.03
    area = np.where(acne, 2, (rng.random(p) < 0.25).astype(np.int64))  # vertex, frontal, face
    both = ~acne & (rng.random(p) < 0.03)  # vertex and frontal as separate courses

    n_choices = np.array([2, 3, 4, 5, 6])
    n_p = [0.14, 0.35, 0.33, 0.12, 0.06]

    # ---- first courses: start anywhere in the period; late ones are still ongoing
    start1 = rng.integers(d0, d1 - 30, p)
    c1, pos1, day1 = _expand(rng, start1, rng.choice(n_choices, p, p=n_p), primary, d1)
    last1 = day1[np.r_[_segments(c1)[1:], c1.size] - 1]  # every patient keeps a session
    # ---- return courses (~10 % of patients) after a gap well over 120 days
    start2 = last1 + rng.integers(200, 420, p)
    rp = np.flatnonzero((rng.random(p) < 0.2) & (start2 <= d1))
    c2, pos2, day2 = _expand(
        rng, start2[rp], rng.choice(n_choices, rp.size, p=n_p), primary[rp], d1
    )
    # ---- the second area of "both" patients: same days, separate course
    bp = np.flatnonzero(both)
    bsel = np.flatnonzero(both[c1])
    b_course = np.searchsorted(bp, c1[bsel])

    # course tables; sessions are course-major: first courses, return courses, second areas
    course_patient = np.concatenate([np.arange(p), rp, bp])
    course_area = np.concatenate([area, area[rp], 1 - area[bp]])
    course_kind = np.concatenate(
        [np.zeros(p, np.int8), np.ones(rp.size, np.int8), np.full(bp.size, 2, np.int8)]
    )
    s_course = np.concatenate([c1, p + c2, p + rp.size + b_course])
    s_pos = np.concatenate([pos1, pos2, pos1[bsel]])
    s_day = np.concatenate([day1, day2, day1[bsel]])
    n = s_course.size
    s_pat = course_patient[s_course]

    # ---- per-session fields; the operator is the patient's clinician 90 % of the time
    op = primary[s_pat].copy()
    other = rng.random(n) < 0.10
    op[other] = clinic[s_pat][other] * 3 + (op[other] % 3 + rng.integers(1, 3, other.sum())) % 3
    is_acne = acne[s_pat]

    e_start = rng.choice([20.0, 22.5, 25.0, 27.5, 30.0], n, p=[0.25, 0.2, 0.3, 0.15, 0.1])
    dev = rng.random(n)
    e_start = np.where(dev < 0.015, 17.5, np.where(dev < 0.03, 32.5, e_start))
    e_start = np.where((op == _BRANDT) & (rng.random(n) < 0.8), 35.0, e_start)
    e_start = np.where(is_acne, rng.choice([35.0, 40.0, 45.0, 50.0], n), e_start)
    steps = rng.choice(7, n, p=[0.05, 0.12, 0.22, 0.25, 0.18, 0.1, 0.08])
    e_final = e_start + 2.5 * steps
    e_final = np.where(rng.random(n) < 0.01, e_start - 2.5, e_final)  # no titration

    ints = {
        "coverage_pct": np.where(rng.random(n) < 0.025, 10, 8),
        "passes": rng.choice([1, 2, 3, 4], n, p=[0.02, 0.5, 0.47, 0.01]),
        "pass_wait_min": rng.choice([5, 6, 7, 8, 10], n, p=[0.3, 0.15, 0.2, 0.15, 0.2]),
        "test_spot_wait_min": rng.choice([5, 7, 10], n, p=[0.45, 0.25, 0.3]),
        "endpoint_onset_min": rng.choice([5, 6, 7, 8, 10], n, p=[0.25, 0.2, 0.25, 0.15, 0.15]),
        "pain_nrs": np.zeros(n, np.int64),
        "post_cooling_min": rng.choice([5, 10, 15], n, p=[0.3, 0.5, 0.2]),
    }
    ints["coverage_pct"][rng.random(n) < 0.005] = 6
    ints["pass_wait_min"] = np.where(rng.random(n) < 0.06, rng.choice([4, 12], n),
                                     ints["pass_wait_min"])  # fmt: skip
    ints["test_spot_wait_min"] = np.where(rng.random(n) < 0.05, rng.choice([3, 15], n),
                                          ints["test_spot_wait_min"])  # fmt: skip
    ints["endpoint_onset_min"] = np.where(rng.random(n) < 0.08, rng.choice([3, 4, 12, 15], n),
                                          ints["endpoint_onset_min"])  # fmt: skip
    pain = np.clip(np.rint(2.0 + (e_final - 20.0) / 6.0 + rng.normal(0, 1, n)), 2, 7)
    ints["pain_nrs"] = np.where(rng.random(n) < 0.02, rng.choice([1, 8], n), pain)
    pc = ints["post_cooling_min"]
    pc[rng.random(n) < 0.02] = 3
    pc[rng.random(n) < 0.01] = 20

    endpoint = rng.random(n) < 0.94
    which = rng.random(n)
    bools = {
        "test_spot": rng.random(n) < np.where(op == _LEHMANN, 0.5, 0.97),
        "edema": endpoint | (which < 0.4),
        "erythema": endpoint | ((which >= 0.4) & (which < 0.8)),
        "cooling_during": rng.random(n) < 0.85,
        **{c: rng.random(n) >= 0.02 for c in _BOOL_COLS[4:8]},  # pre-treatment checklist
        "sun_advice_given": rng.random(n) < 0.88,
        **{c: rng.random(n) < 0.005 for c in _BOOL_COLS[9:]},  # contraindications
    }

    # documentation gaps: the poor documenter ~20 %, everyone else ~0.5 %
    miss_rate = np.where(op == _SEIDEL, 0.2, 0.005)
    missing = {c: rng.random(n) < miss_rate for c in _OPTIONAL}
    missing["pass_wait_min"] |= ints["passes"] < 2
    missing["test_spot_wait_min"] |= ~bools["test_spot"] | missing["test_spot"]
    missing["endpoint_onset_min"] |= ~(bools["edema"] | bools["erythema"])
    for c in _BOOL_COLS[4:9]:
        missing[c] |= rng.random(n) < 0.01

    ae = rng.random(n) < 0.004 + 0.004 * np.clip(e_final - 25.0, 0, None)  # worse when hotter
    ae_code = np.where(ae, 1 + rng.choice(4, n, p=[0.45, 0.25, 0.2, 0.1]), 0)

    # ---- course compliance (drives outcomes); sessions are still course-major here
    seg = _segments(s_course)
    n_per = np.diff(np.r_[seg, n])
    gap = np.r_[0, np.diff(s_day)]
    ok_start = (e_start >= 20) & (e_start <= 30)
    ok_gap = (s_pos == 0) | ((gap >= 28) & (gap <= 42))
    ok_end = bools["edema"] & bools["erythema"] & ~missing["edema"] & ~missing["erythema"]
    compliant = (
        np.logical_and.reduceat(ok_start, seg)
        & np.logical_and.reduceat(ok_gap, seg)
        & np.logical_and.reduceat(ok_end, seg)
        & (n_per >= 3)
        & (n_per <= 4)
    )
    outcomes = _outcomes(
        rng, course_patient, course_kind, s_day[seg], s_day[np.r_[seg[1:], n] - 1], compliant,
        acne[course_patient], p, rp, d0, d1, pid, full_name,
    )  # fmt: skip

    # ---- sessions table, then export order (by date, patient, area) and planted rows
    t = _Table()
    t.add_text("patient_id", pid, s_pat)
    t.add_text("patient_name", full_name, s_pat)
    t.add_text("date_of_birth", *_iso(dob[s_pat]))
    t.add_text("sex", np.array(["M", "F"], dtype=object), female[s_pat].astype(np.int64))
    t.add_text("fitzpatrick_type", np.array(["I", "II", "III", "IV", "V", "VI"], object),
               fitz[s_pat])  # fmt: skip
    t.add_text("phone", phone, s_pat)
    t.add_text("email", email, s_pat)
    t.add_text("clinic", _CLINICS, clinic[s_pat])
    t.add_text("operator", _OPS, op)
    t.add_text("session_date", *_iso(s_day))
    t.add_text("indication", np.array(["hair_regrowth", "acne_scars"], dtype=object),
               is_acne.astype(np.int64))  # fmt: skip
    t.add_text("area", np.array(["scalp_vertex", "scalp_frontal", "face"], dtype=object),
               course_area[s_course])  # fmt: skip
    t.add_text("energy_start_mj", *_energy_text(e_start, np.zeros(n, bool)))
    t.add_text("energy_final_mj", *_energy_text(e_final, missing["energy_final_mj"]))
    for name in SESSION_COLUMNS[14:34]:
        if name in ints:
            t.add_ints(name, ints[name], missing[name])
        else:
            t.add_text(name, _TF, _bool_codes(bools[name], missing[name]))
    t.add_text("adverse_event", np.r_[np.array(["none"], dtype=object), _AE_CODES], ae_code)
    t.add_text("notes", *_texts(rng, n, 0.08, _SESSION_NOTES, lambda r: full_name[s_pat[r]]))
    device = np.where(clinic[s_pat] == 1, 2, rng.integers(0, 2, n))
    t.add_text("device_serial", _DEVICES, device)
    t.take(np.lexsort((course_area[s_course], s_pat, s_day)))
    _plant(t, "sessions.csv")
    return t.frame(), outcomes


def _outcomes(
    rng: np.random.Generator,
    course_patient: np.ndarray,
    course_kind: np.ndarray,
    first_day: np.ndarray,
    last_day: np.ndarray,
    compliant: np.ndarray,
    course_acne: np.ndarray,
    p: int,
    rp: np.ndarray,
    d0: int,
    d1: int,
    pid: np.ndarray,
    full_name: np.ndarray,
) -> pd.DataFrame:
    """Long-format assessments for hair-regrowth courses (not the second-area copies).

    Compliant courses get a larger hair-density gain, and every score follows the gain,
    so compliant courses do clearly better; recurrence comes sooner without compliance.
    """
    sel = np.flatnonzero((course_kind < 2) & ~course_acne)
    pat, fd, ld, comp = course_patient[sel], first_day[sel], last_day[sel], compliant[sel]
    # next course of the same patient: later follow-ups of course 1 stop before it
    next_start = np.full(course_kind.size, np.iinfo(np.int64).max, dtype=np.int64)
    next_start[rp] = first_day[p : p + rp.size]
    nxt = next_start[sel]
    k = sel.size
    parts: list[tuple[np.ndarray, ...]] = []  # (patient, day, instrument, score, recurrence)

    def add(rows: np.ndarray, day: np.ndarray, inst: int | np.ndarray, score: np.ndarray,
            rec: np.ndarray | None = None) -> None:  # fmt: skip
        m = rows.size
        inst_a = np.broadcast_to(np.asarray(inst, dtype=np.int64), (m,))
        rec_a = np.full(m, -1, np.int64) if rec is None else rec.astype(np.int64)
        parts.append((pat[rows], day, inst_a, np.asarray(score, np.int64), rec_a))

    # baseline on or before the first session (not before the export period starts)
    baseline = np.clip(rng.normal(120, 25, k), 40, 220)
    base_day = np.minimum(fd, np.maximum(fd - rng.integers(0, 15, k), d0))
    add(np.arange(k), base_day, _HD, np.rint(baseline))

    completed = d1 - ld >= 120
    u = rng.random(k)
    final = completed & (u < 0.85)
    early = completed & (u >= 0.85) & (u < 0.90)
    gain = rng.normal(10.0 + 15.0 * comp, 8.0)
    sat_lat = 2.2 + gain / 12.0 + rng.normal(0, 0.7, k)
    gais_lat = 4.6 - gain / 10.0 + rng.normal(0, 0.6, k)
    gpa_lat = -0.3 + gain / 10.0 + rng.normal(0, 0.7, k)

    def scores(rows: np.ndarray, day: np.ndarray, factor: float) -> None:
        shift = (1.0 - factor) * 1.5  # assessed too early: not the full effect yet
        add(rows, day, _HD, np.rint(baseline[rows] + gain[rows] * factor))
        add(rows, day, _SAT, np.clip(np.rint(sat_lat[rows] - shift), 1, 5))
        add(rows, day, _GAIS, np.clip(np.rint(gais_lat[rows] + shift), 1, 5))
        add(rows, day, _GPA, np.clip(np.rint(gpa_lat[rows] - shift), -3, 3))

    fr = np.flatnonzero(final)
    scores(fr, ld[fr] + rng.integers(90, np.minimum(183, d1 - ld[fr]) + 1), 1.0)
    er = np.flatnonzero(early)
    scores(er, ld[er] + rng.integers(40, 81, er.size), 0.6)

    # later follow-ups at ~9, 12 and 18 months carry recurrence and one score
    t_rec = rng.exponential(np.where(comp, 540.0, 300.0) / np.log(2.0))
    for offset in (270, 365, 548):
        day = ld[fr] + offset + np.rint(rng.normal(0, 10, fr.size)).astype(np.int64)
        ok = (rng.random(fr.size) < 0.75) & (day <= d1) & (day < nxt[fr] - 14)
        rows, day = fr[ok], day[ok]
        rec = (day - ld[rows]) >= t_rec[rows]
        use_sat = rng.random(rows.size) < 0.6
        sat = np.clip(np.rint(sat_lat[rows] - 0.3 - 1.3 * rec), 1, 5)
        gpa = np.clip(np.rint(gpa_lat[rows] - 0.3 - 1.5 * rec), -3, 3)
        add(rows, day, np.where(use_sat, _SAT, _GPA), np.where(use_sat, sat, gpa), rec)

    o_pat, o_day, o_inst, o_score, o_rec = (np.concatenate(a) for a in zip(*parts, strict=True))
    order = np.lexsort((o_inst, o_pat, o_day))
    o_pat = o_pat[order]
    t = _Table()
    t.add_text("patient_id", pid, o_pat)
    t.add_text("assessment_date", *_iso(o_day[order]))
    t.add_text("instrument", _INSTRUMENTS, o_inst[order])
    t.add_ints("score", o_score[order], np.zeros(o_pat.size, bool))
    t.add_text("rater", _RATERS, o_inst[order])
    t.add_text("recurrence", _TF, o_rec[order])
    t.add_text("notes", *_texts(rng, o_pat.size, 0.05, _OUTCOME_NOTES,
                                lambda r: full_name[o_pat[r]]))  # fmt: skip
    _plant(t, "outcomes.csv")
    return t.frame()


# how each planted kind changes its row: (field, value) pairs; None = empty cell
_CHANGES: dict[str, tuple[tuple[str, object], ...]] = {
    "missing_patient_id": (("patient_id", None),),
    "missing_session_date": (("session_date", None),),
    "impossible_date": (("session_date", "2025-02-31"),),
    "non_iso_date": (("session_date", "03/04/2025"),),
    "energy_not_numeric": (("energy_start_mj", "abc"),),
    "coverage_implausible": (("coverage_pct", 80),),
    "energy_looks_like_joules": (("energy_start_mj", "0.025"),),
    "missing_assessment_date": (("assessment_date", None),),
    "score_out_of_range": (
        ("instrument", "satisfaction"), ("rater", "patient"), ("recurrence", None), ("score", 7),
    ),
    "unknown_instrument": (("instrument", "dlqi_x"),),
    "duplicate_row": (),
}  # fmt: skip


def _plant(t: _Table, file: str) -> None:
    """Insert the extra rows of ``PLANTED`` for ``file`` and apply their changes.

    An extra row is a copy of the real row just before it, with one change (the
    duplicate has none; the out-of-range score copies a satisfaction row); warning rows are real rows edited in place, so they add no
    phantom session. Nothing is planted when the table is too short to hold them all.
    """
    rows = [pl for pl in PLANTED if pl.file == file]
    extra = [pl.line - 2 for pl in rows if pl.expect == "rejected"]
    n = len(t)
    if n < max(pl.line for pl in rows) - 1 - len(extra):
        return
    total = n + len(extra)
    is_extra = np.zeros(total, dtype=bool)
    is_extra[extra] = True
    take = np.empty(total, dtype=np.int64)
    take[~is_extra] = np.arange(n)
    for pos in extra:  # a handful of rows: copy of the row just before
        take[pos] = take[pos - 1]
    for pl in rows:  # the out-of-range score copies a real satisfaction row when there is one
        if pl.kind == "score_out_of_range":
            cats, codes = t.text["instrument"]
            source = (codes == np.flatnonzero(cats == "satisfaction")[0]) & (
                t.text["recurrence"][1] < 0
            )
            if source.any():
                take[pl.line - 2] = np.argmax(source)
    t.take(take)
    for pl in rows:
        for field, value in _CHANGES[pl.kind]:
            t.set(field, pl.line - 2, value)


# --------------------------------------------------------------------------- writing
def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write via a temporary file in the same folder, then rename (all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a sample file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _joules(text: str) -> str:
    """``25`` (mJ) -> ``0,025`` (J, decimal comma); non-numbers stay as they are."""
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value / 1000:.9f}".rstrip("0").rstrip(".").replace(".", ",")


def _german_date(text: str, as_cell: bool) -> object:
    """ISO date -> a real date (cell) or ``dd.mm.yyyy`` text; bad ISO keeps its day."""
    try:
        d = dt.date.fromisoformat(text)
    except ValueError:
        parts = text.split("-")
        return f"{parts[2]}.{parts[1]}.{parts[0]}" if len(parts) == 3 else text
    return d if as_cell else d.strftime("%d.%m.%Y")


def _german_rows(sessions: pd.DataFrame) -> list[list[object]]:
    """Cell values of the German export, one list per sessions row (same order)."""
    cols: list[list[object]] = []
    for name in SESSION_COLUMNS:
        values = [None if pd.isna(v) else v for v in sessions[name].tolist()]
        if name in _BOOL_COLS:
            values = [None if v is None else {"true": "ja", "false": "nein"}[v] for v in values]
        elif name in _ENERGY_COLS:
            values = [None if v is None else _joules(v) for v in values]
        elif name in _INT_COLS:
            values = [None if v is None else int(v) for v in values]
        elif name in ("session_date", "date_of_birth"):
            cell = name == "session_date"
            values = [None if v is None else _german_date(v, cell) for v in values]
        cols.append(values)
    return [list(r) for r in zip(*cols, strict=True)]


def _write_xlsx(sessions: pd.DataFrame, path: Path) -> None:
    """German clinic export: sheet Info, then Behandlungen with a title, headers on row 3."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    if len(sessions) + 3 > 1_048_576:
        raise ValueError("too many sessions for one Excel sheet (limit 1,048,573 rows)")
    wb = Workbook(write_only=True)
    wb.properties.created = dt.datetime(2026, 1, 1)  # stable file metadata
    info = wb.create_sheet("Info")
    info.append(
        ["Export aus der Praxissoftware (synthetische Beispieldaten). Energien in Joule."]
    )
    ws = wb.create_sheet("Behandlungen")
    ws.append(["Behandlungen FlexSys – Standorte Nordstadt und Südpark"])
    ws.append([])
    ws.append([GERMAN_HEADERS[c] for c in SESSION_COLUMNS])
    date_i = SESSION_COLUMNS.index("session_date")
    for cells in _german_rows(sessions):
        if isinstance(cells[date_i], dt.date):
            cell = WriteOnlyCell(ws, value=cells[date_i])
            cell.number_format = "DD.MM.YYYY"
            cells[date_i] = cell
        ws.append(cells)
    wb.save(path)


def _mapping_toml() -> str:
    """Mapping for the German export, in the DESIGN.md format (device serial unmapped)."""

    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=False)  # a valid TOML basic string

    lines = [
        "# German clinic export (synthetic sample) -> canonical sessions table.",
        "# Geräte-Nr. (device serial) is deliberately left unmapped.",
        "[source]",
        'table = "sessions"',
        'sheet = "Behandlungen"',
        'decimal = ","',
        'date_format = "%d.%m.%Y"',
        "header_row = 3",
        "",
        "[columns]",
        *(f"{c} = {q(GERMAN_HEADERS[c])}" for c in SESSION_COLUMNS if c != "device_serial"),
        "",
        "[units]",
        'energy_start_mj = "J"',
        'energy_final_mj = "J"',
        "",
        "[values]",
        'true = ["ja"]',
        'false = ["nein"]',
        "",
    ]
    return "\n".join(lines)


def write_sample(
    out_dir: str | os.PathLike[str],
    patients: int = 300,
    seed: int = 1,
    german_xlsx: bool = False,
) -> dict[str, Path]:
    """Write ``sessions.csv`` and ``outcomes.csv`` (and optionally the German XLSX).

    Each file is written to a temporary name and renamed, so a reader never sees a
    half-written file. With ``german_xlsx`` also writes ``de/sessions.xlsx`` and
    ``de/sessions.mapping.toml`` (same rows, German headers, energies in J).
    Returns the written paths keyed ``sessions``, ``outcomes`` and, with the XLSX,
    ``sessions_xlsx`` and ``mapping``.
    """
    out = Path(out_dir)
    sessions, outcomes = generate(patients=patients, seed=seed)

    def csv(df: pd.DataFrame) -> Callable[[Path], None]:
        return lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8")

    paths = {
        "sessions": _atomic(out / "sessions.csv", csv(sessions)),
        "outcomes": _atomic(out / "outcomes.csv", csv(outcomes)),
    }
    if german_xlsx:
        paths["sessions_xlsx"] = _atomic(
            out / "de" / "sessions.xlsx", lambda tmp: _write_xlsx(sessions, tmp)
        )
        paths["mapping"] = _atomic(
            out / "de" / "sessions.mapping.toml",
            lambda tmp: tmp.write_text(_mapping_toml(), encoding="utf-8"),
        )
    return paths
