"""The canonical tables, as data.

One place defines every field of `sessions` and `outcomes`: its type, unit,
plausible range, meaning and role. The loader parses and checks by it, the
audit reads field names from it, the research export de-identifies by role
and writes its data dictionary from it, and the docs print it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources

import pandas as pd

#: Field types and the pandas dtype each becomes after loading.
DTYPES: dict[str, str] = {
    "string": "string",
    "float": "Float64",
    "int": "Int64",
    "bool": "boolean",
    "date": "datetime64[s]",
}

#: Roles say what a field is for, so de-identification is driven by the schema.
ROLES = {
    "key": "links records; replaced or derived in a research export",
    "patient_id": "identifies a patient: pseudonymised in a research export",
    "staff": "identifies a clinician: coded in a research export",
    "date": "a calendar date: shifted to days since first session in a research export",
    "identifying": "identifies a person directly: removed from a research export",
    "birth_date": "date of birth: generalised to an age band in a research export",
    "free_text": "free text that may name people: removed from a research export",
    "site": "the clinic (site): kept, few values",
    "clinical": "a clinical observation or setting: kept",
    "demographic": "a patient characteristic that is not identifying on its own: kept",
}


@dataclass(frozen=True)
class Field:
    """One column of a canonical table."""

    name: str
    type: str
    meaning: str
    role: str = "clinical"
    unit: str | None = None
    low: float | None = None  # plausible range: outside it is a warning, not a rejection
    high: float | None = None
    allowed: tuple[str, ...] | None = None
    required: bool = False
    aliases: tuple[str, ...] = field(default=())

    @property
    def dtype(self) -> str:
        return DTYPES[self.type]


def _bools(names: list[str], meaning: str) -> list[Field]:
    return [Field(n, "bool", meaning.format(n=n.replace("_", " "))) for n in names]


PRE_CHECKLIST = ("cosmetics_removed", "herpes_prophylaxis", "eye_protection",
                 "anesthetic_removed_skin_dry")
CONTRAINDICATIONS = ("ci_isotretinoin", "ci_keloid", "ci_post_surgical_skin_changes",
                     "ci_systemic_steroids")

_PATIENT_FIELDS: list[Field] = [
    Field("patient_name", "string", "patient's name", role="identifying"),
    Field("date_of_birth", "date", "patient's date of birth", role="birth_date"),
    Field("sex", "string", "patient's sex", role="demographic"),
    Field("fitzpatrick_type", "string", "Fitzpatrick skin type (I–VI)", role="demographic",
          allowed=("I", "II", "III", "IV", "V", "VI")),
    Field("phone", "string", "patient's phone number", role="identifying"),
    Field("email", "string", "patient's e-mail address", role="identifying"),
]

SESSIONS: list[Field] = [
    Field("session_id", "string", "unique session id; derived as patient_id:session_date:n "
          "when the export has none", role="key"),
    Field("patient_id", "string", "clinic's patient identifier", role="patient_id", required=True),
    Field("session_date", "date", "date of the treatment session", role="date", required=True),
    Field("clinic", "string", "site where the session took place", role="site"),
    Field("operator", "string", "treating clinician", role="staff"),
    Field("indication", "string", "what is treated, e.g. hair_regrowth"),
    Field("area", "string", "treated area"),
    Field("energy_start_mj", "float", "energy of the first (test) setting per pulse", unit="mJ",
          low=1, high=100),
    Field("energy_final_mj", "float", "highest energy used in the session", unit="mJ",
          low=1, high=100),
    Field("coverage_pct", "float", "percent of skin surface covered", unit="%", low=1, high=30),
    Field("passes", "int", "number of passes", unit="passes", low=1, high=6),
    Field("pass_wait_min", "float", "minutes waited between passes", unit="min", low=0, high=60),
    Field("test_spot", "bool", "test spot done"),
    Field("test_spot_wait_min", "float", "minutes waited after the test spot", unit="min",
          low=0, high=60),
    Field("edema", "bool", "edema observed as endpoint"),
    Field("erythema", "bool", "erythema observed as endpoint"),
    Field("endpoint_onset_min", "float", "minutes until the endpoint appeared", unit="min",
          low=0, high=60),
    Field("pain_nrs", "int", "patient's pain rating during treatment (numeric rating scale)",
          unit="NRS 0–10", low=0, high=10),
    Field("cooling_during", "bool", "cooling used during treatment"),
    Field("post_cooling_min", "float", "minutes of cooling after treatment", unit="min",
          low=0, high=60),
    *_bools(list(PRE_CHECKLIST), "pre-treatment checklist: {n}"),
    Field("sun_advice_given", "bool", "post-treatment advice given (no sun 4 weeks, SPF 50)"),
    *_bools(list(CONTRAINDICATIONS), "contraindication present at screening: {n}"),
    Field("adverse_event", "string", "'none' or a short code/description of an adverse event"),
    Field("notes", "string", "free text (may hold identifying details)", role="free_text"),
    *_PATIENT_FIELDS,
]

OUTCOMES: list[Field] = [
    Field("patient_id", "string", "clinic's patient identifier", role="patient_id", required=True),
    Field("assessment_date", "date", "date of the assessment", role="date", required=True),
    Field("instrument", "string", "instrument registry id", required=True),
    Field("score", "float", "score on the instrument's scale", required=True),
    Field("rater", "string", "who rated: patient or clinician", allowed=("patient", "clinician")),
    Field("recurrence", "bool", "recurrence noted at this assessment"),
    Field("notes", "string", "free text (may hold identifying details)", role="free_text"),
]


@dataclass(frozen=True)
class Instrument:
    """An outcome instrument: its range, which direction is better, and what counts as improved."""

    id: str
    title: str
    low: float | None
    high: float | None
    higher_is_better: bool
    rater: str
    improved_at: float | None  # threshold for "improved" (inclusive, in the better direction)
    improved_text: str
    unit: str = "points"


INSTRUMENTS: dict[str, Instrument] = {
    i.id: i
    for i in [
        Instrument("satisfaction", "Patient satisfaction", 1, 5, True, "patient", 4,
                   "satisfied: 4 or 5"),
        Instrument("gais", "Global Aesthetic Improvement Scale", 1, 5, False, "clinician", 3,
                   "improved or better: 1–3 (1 exceptional improvement … 5 worse)"),
        Instrument("gpa", "Global photographic assessment", -3, 3, True, "clinician", 1,
                   "improved: above 0"),
        Instrument("hair_density", "Hair density", 0, None, True, "clinician", None,
                   "change from baseline", unit="hairs/cm²"),
        Instrument("pain_nrs", "Pain (numeric rating scale)", 0, 10, False, "patient", None,
                   "lower is better", unit="NRS 0–10"),
    ]
}

def _with_aliases(table: str, fields: list[Field]) -> list[Field]:
    """The fields with the header aliases `header_aliases.toml` lists for them (data a
    clinic may extend, kept apart from the field definitions)."""
    aliases = tomllib.loads((resources.files("outcomes") / "header_aliases.toml")
                            .read_text(encoding="utf-8")).get(table, {})
    unknown = set(aliases) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"header_aliases.toml names unknown {table} field {min(unknown)!r}")
    return [replace(f, aliases=tuple(aliases.get(f.name, ()))) for f in fields]


SESSIONS = _with_aliases("sessions", SESSIONS)
OUTCOMES = _with_aliases("outcomes", OUTCOMES)
TABLES: dict[str, list[Field]] = {"sessions": SESSIONS, "outcomes": OUTCOMES}

#: Short labels people read in charts, tables and reasons (field names are for files).
LABELS: dict[str, str] = {
    "patient_id": "Patient", "session_date": "Session date", "operator": "Clinician",
    "clinic": "Clinic", "indication": "Indication", "area": "Area",
    "energy_start_mj": "Starting energy",
    "energy_final_mj": "Highest energy in the session",
    "coverage_pct": "Coverage",
    "passes": "Passes",
    "pass_wait_min": "Wait between passes",
    "test_spot": "Test spot done",
    "test_spot_wait_min": "Wait after the test spot",
    "edema": "Edema", "erythema": "Erythema",
    "endpoint_onset_min": "Time until the endpoint appeared",
    "post_cooling_min": "Cooling after treatment",
    "cooling_during": "Cooling during treatment",
    "pain_nrs": "Pain during treatment",
    "days_since_previous": "Days since the previous session",
    "cosmetics_removed": "Cosmetics removed",
    "herpes_prophylaxis": "Herpes prophylaxis",
    "eye_protection": "Correct eye protection",
    "anesthetic_removed_skin_dry": "Anaesthetic removed, skin dry",
    "sun_advice_given": "Sun advice given",
    "ci_isotretinoin": "Isotretinoin",
    "ci_keloid": "Keloid / excessive scarring",
    "ci_post_surgical_skin_changes": "Skin changes after surgery",
    "ci_systemic_steroids": "Systemic steroids",
    "adverse_event": "Adverse event",
}


def label(name: str) -> str:
    """The label people read for a field: 'Starting energy' for energy_start_mj."""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def fields(table: str) -> dict[str, Field]:
    """Fields of a canonical table by name."""
    return {f.name: f for f in TABLES[table]}


def normalise_header(header: str) -> str:
    """Header → snake_case key used for matching canonical names and aliases."""
    text = str(header).strip().lower()
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(a, b)
    return re.sub(r"[^0-9a-z]+", "_", text).strip("_")


def alias_index(table: str) -> dict[str, str]:
    """Normalised header or alias → canonical field name."""
    index: dict[str, str] = {}
    for f in TABLES[table]:
        for alias in f.aliases:
            index.setdefault(normalise_header(alias), f.name)
    for f in TABLES[table]:  # canonical names win over any alias
        index[normalise_header(f.name)] = f.name
    return index


def empty_frame(table: str) -> pd.DataFrame:
    """An empty canonical table with the right dtypes."""
    return pd.DataFrame({f.name: pd.Series(dtype=f.dtype) for f in TABLES[table]})


def describe(table: str) -> pd.DataFrame:
    """The schema of one table as a DataFrame (for docs and the data dictionary)."""
    rows = []
    for f in TABLES[table]:
        rng = ""
        if f.low is not None or f.high is not None:
            rng = f"{'' if f.low is None else f'{f.low:g}'}–{'' if f.high is None else f'{f.high:g}'}"
        rows.append({
            "table": table, "field": f.name, "type": f.type, "unit": f.unit or "",
            "plausible_range": rng, "allowed": ", ".join(f.allowed or ()), "role": f.role,
            "required": f.required, "meaning": f.meaning,
        })
    return pd.DataFrame(rows)
