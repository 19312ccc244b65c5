"""De-identification by schema role: key, pseudonyms, dates, age bands, text categories,
and the de-identified tables with their data-dictionary rows."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from outcomes import schema
from outcomes.courses import NOT_RECORDED
from outcomes.load import LoadError

MIN_KEY_BYTES = 32
KEY_HOWTO = 'python -c "import secrets; print(secrets.token_hex(32))" > {path}'
PSEUDONYM_CHARS = 16
DEFAULT_THRESHOLD = 8
DATA_TABLES = ("sessions", "courses", "outcomes", "compliance")
TABLES = (*DATA_TABLES, "data_dictionary")
WORKBOOK = "research_export.xlsx"
MANIFEST = "manifest.json"
OUTPUT_FILES = (WORKBOOK, MANIFEST, *[f"{t}.{ext}" for t in TABLES for ext in ("csv", "parquet")])
EXPORT_KIND = "outcomes research export"
ALL_CLINICIANS = "all"
OTHER = "other"
SECONDARY_MARK = "suppressed"
#: A code: one word of letters, digits and underscores, starting with a letter (no spaces).
CODE = re.compile(r"[^\W\d_]\w{0,39}")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
AGE_WIDTH, AGE_TOP = 5, 90
#: Output names of the fields that change their meaning in the export.
RENAMED = {"patient_id": "patient_pseudonym", "operator": "clinician_code",
           "date_of_birth": "age_band"}
#: Adverse-event codes the export keeps; any other value becomes `other` (a description can
#: name a person, and so can a one-word "code" such as `LauraSchmidt`). A mapping may extend
#: it later; the sample's codes are in it.
ADVERSE_EVENTS = (
    "none", "erythema_prolonged", "edema_prolonged", "blister", "crust", "burn",
    "hyperpigmentation", "hypopigmentation", "infection", "scarring", "herpes_reactivation",
    "pain", "other",
    "prolonged_erythema", "prolonged_edema", "blistering",  # the sample's spellings
)
#: Closed vocabularies of text fields: the field keeps only these values.
VOCABULARIES: dict[str, tuple[str, ...]] = {"adverse_event": ADVERSE_EVENTS}
SITE_CODE_CHARS = 8


def vocabulary_code(value: Any) -> str:
    """A value as a vocabulary code: trimmed, case-folded, blanks and dashes as `_`."""
    return re.sub(r"[\s\-]+", "_", str(value).strip().casefold())


def closed_vocabulary(values: pd.Series, vocabulary: Sequence[str]) -> tuple[pd.Series, int]:
    """Values as codes of `vocabulary` (`Prolonged erythema` → `prolonged_erythema`); any
    other value becomes `other`. Returns the values and how many became `other`."""
    text = values.astype("string")
    codes = text.map(lambda v: v if pd.isna(v) else vocabulary_code(v)).astype("string")
    known = codes.isin(list(vocabulary)).fillna(False)
    out = codes.where(text.isna() | known, OTHER).astype("string")
    return out, int((text.notna() & ~known).sum())


def _how(path: Any) -> str:
    return "make one with: " + KEY_HOWTO.format(path=path)


# ---------------------------------------------------------------------------------------------
# the key and pseudonyms


def read_key(path: str | Path | None) -> bytes:
    """The pseudonymisation key: the file's bytes without surrounding whitespace (≥ 32 bytes).

    Raises LoadError with one sentence that says how to make a key.
    """
    if path is None or str(path).strip() == "":
        raise LoadError(f"a research export needs a key file (--key-file K); {_how('K')}")
    p = Path(path)
    if not p.is_file():
        raise LoadError(f"key file {p} does not exist; {_how(p)}")
    key = p.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise LoadError(f"key file {p} is shorter than {MIN_KEY_BYTES} bytes; {_how(p)}")
    return key


def pseudonym(value: str, key: bytes, kind: str = "patient") -> str:
    """First 16 hex characters of HMAC-SHA256(key, kind + ":" + value)."""
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_CHARS]


def pseudonymise(df: pd.DataFrame, column: str, key: bytes, kind: str = "patient",
                 new_name: str | None = None) -> pd.DataFrame:
    """`column` replaced (in place of it, optionally renamed) by its keyed pseudonyms.

    Missing stays missing; `(not recorded)` stays as it is (it names nobody).
    """
    codes, uniques = pd.factorize(df[column].astype("string"))  # missing: code -1
    made = [v if v == NOT_RECORDED else pseudonym(v, key, kind) for v in uniques]
    out = df.copy()
    out[column] = pd.Series(np.array([*made, None], dtype=object)[codes], index=df.index,
                            dtype="string")
    return out.rename(columns={column: new_name}) if new_name else out


def _date_stem(column: str) -> str:
    return column.removesuffix("_date")


def shift_dates(df: pd.DataFrame, columns: Sequence[str], anchor: pd.Series,
                patient_column: str = "patient_id") -> pd.DataFrame:
    """Each date column X_date becomes X_day (days since the patient's anchor) and X_year.

    `anchor` maps a patient (the values of `patient_column`) to their first session date;
    a patient without one gets a missing day and keeps the year.
    """
    out = df.copy()
    base = pd.to_datetime(out[patient_column].map(anchor))
    for col in columns:
        d = pd.to_datetime(out[col])
        days = (d - base).dt.days.astype("Int64")
        year = d.dt.year.astype("Int64")
        pos = out.columns.get_loc(col)
        out = out.drop(columns=col)
        out.insert(pos, f"{_date_stem(col)}_day", days)
        out.insert(pos + 1, f"{_date_stem(col)}_year", year)
    return out


def age_band(birth: pd.Series, at: pd.Series, width: int = AGE_WIDTH,
             top: int = AGE_TOP) -> pd.Series:
    """Age in completed years at `at` as bands `40–44` … `85–89` and `90+` (missing: unknown).

    The en dash keeps Excel from reading a band such as 5–9 as a date.
    """
    b, a = pd.to_datetime(birth), pd.to_datetime(at)
    before = (a.dt.month < b.dt.month) | ((a.dt.month == b.dt.month) & (a.dt.day < b.dt.day))
    age = (a.dt.year - b.dt.year - before.astype("Int64")).astype("Int64")
    low = age // width * width
    label = low.astype("string") + "–" + (low + width - 1).astype("string")
    label = label.mask((age >= top).fillna(False), f"{top}+")
    return label.mask(age.isna() | (age < 0).fillna(False)).astype("string")


def generalise_text(df: pd.DataFrame, column: str, patient_column: str, min_patients: int,
                    allowed: Iterable[str] | None = None) -> pd.DataFrame:
    """Text category kept only where it cannot carry a name; anything else becomes `other`.

    With an `allowed` list, values in it are kept. Otherwise a value is kept when it is a
    code (one word: letters, digits, underscores) or is shared by at least `min_patients`
    patients (a category, not a note about one person).
    """
    out = df.copy()
    text = out[column].astype("string")
    uniq = [str(v) for v in text.dropna().unique()]
    if allowed is not None:
        ok = set(allowed) & set(uniq)
    else:
        shared = out.assign(_v=text).groupby("_v")[patient_column].nunique()
        ok = {v for v in uniq if CODE.fullmatch(v) or shared.get(v, 0) >= min_patients}
    out[column] = text.where(text.isna() | text.isin(sorted(ok)), OTHER).astype("string")
    return out


# ---------------------------------------------------------------------------------------------
# building the de-identified tables


@dataclass
class _Table:
    """Columns of one output table with their data-dictionary rows."""

    name: str
    columns: dict[str, pd.Series] = field(default_factory=dict)
    doc: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, values: pd.Series, type_: str, meaning: str, treatment: str,
            source: str = "", unit: str = "", allowed: str | None = None) -> None:
        self.columns[name] = values.reset_index(drop=True)
        self.doc.append({"field": name, "table": self.name, "type": type_, "unit": unit,
                         "allowed_values": allowed, "meaning": meaning,
                         "treatment": treatment, "source_field": source})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns)


@dataclass
class _Plan:
    """What the export did, for the manifest and the README."""

    removed: list[dict[str, Any]] = field(default_factory=list)
    recoded: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)


def _treat(role: str, threshold: int) -> str:
    return {
        "key": "re-derived from the pseudonym; the clinic's id is not exported",
        "patient_id": ("pseudonymised: first 16 hex characters of HMAC-SHA256(key, "
                       "'patient:' + patient id); the key stays with the clinic"),
        "staff": ("coded: first 16 hex characters of HMAC-SHA256(key, 'clinician:' + name); "
                  "the key stays with the clinic"),
        "date": "shifted: days since the patient's first session, plus the calendar year",
        "identifying": "removed",
        "birth_date": (f"generalised: age at the patient's first session in {AGE_WIDTH}-year "
                       f"bands, {AGE_TOP} and over as {AGE_TOP}+"),
        "free_text": "removed",
        "text": (f"kept where a code (one word) or shared by at least {threshold} patients, "
                 "and naming no one of the input; "
                 f"any other text replaced by '{OTHER}'"),
        "allowed": f"kept where one of the allowed values; anything else replaced by '{OTHER}'",
        "vocabulary": ("kept where a code of the closed vocabulary (see allowed_values; case, "
                       f"blanks and dashes ignored); anything else replaced by '{OTHER}'"),
        "scrubbed": ("held an identifying value of the input (a name, id, phone number, e-mail "
                     "address or date): a site became a code made under the key "
                     f"(site_ + 8 hex), any other field '{OTHER}'"),
        "kept": "kept as recorded",
    }[role]


def treatment_table(threshold: int = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """How each role of the canonical schema is treated, with the fields that have it."""
    rows = []
    for role, meaning in schema.ROLES.items():
        names = [f"{t}.{f.name}" for t in schema.TABLES for f in schema.TABLES[t]
                 if f.role == role]
        if role in ("site", "clinical", "demographic"):
            what = (f"numbers and yes/no kept as recorded; text {_treat('text', threshold)}; "
                    "text with a list of allowed values keeps only those")
        else:
            what = _treat(role, threshold)
        rows.append({"role": role, "schema_says": meaning, "in_this_export": what,
                     "fields": ", ".join(names)})
    rows.append({"role": "(not in the schema)", "schema_says": "a column the loader did not "
                 "recognise", "in_this_export": "removed, unless named with --keep COLUMN "
                 "(then kept as given and listed in the manifest)",
                 "fields": "any other column"})
    rows.append({"role": "(load bookkeeping)", "schema_says": "source_file, source_row, sources",
                 "in_this_export": "removed: row numbers link back to the clinic's file",
                 "fields": "source_file, source_row, sources"})
    return pd.DataFrame(rows)


def _schema_type(f: schema.Field) -> str:
    return {"string": "text", "float": "number", "int": "whole number", "bool": "yes/no",
            "date": "date"}[f.type]


def _kept_field(t: _Table, df: pd.DataFrame, f: schema.Field, threshold: int,
                patient_column: str, plan: _Plan) -> None:
    """A site, clinical or demographic field: numbers kept, text generalised by rule."""
    if f.type != "string":
        t.add(f.name, df[f.name], _schema_type(f), f.meaning, _treat("kept", threshold),
              f.name, f.unit or "", "true, false" if f.type == "bool" else "")
        return
    before = df[f.name].astype("string")
    vocabulary = VOCABULARIES.get(f.name)
    allowed = f.allowed or vocabulary
    out = generalise_text(df, f.name, patient_column, threshold, allowed)[f.name]
    changed = int((before.notna() & (before != out).fillna(False)).sum())
    kind = "vocabulary" if vocabulary else "allowed" if f.allowed else "text"
    if changed:
        plan.recoded.append({"table": t.name, "field": f.name, "values_replaced": changed,
                             "rule": _treat(kind, threshold)})
    t.add(f.name, out, "text", f.meaning, _treat(kind, threshold), f.name, f.unit or "",
          ", ".join(vocabulary) if vocabulary else None)


def _kept_columns(t: _Table, df: pd.DataFrame, keep: Sequence[str], plan: _Plan) -> None:
    for name in keep:
        if name not in df.columns:
            continue
        col = df[name]
        text = col.astype("string")
        numeric = pd.to_numeric(text, errors="coerce")
        leading_zero = text.str.match(r"^[+0]\d").fillna(False).any()
        if numeric.notna().sum() == text.notna().sum() and not leading_zero:
            values, type_ = numeric.astype("Float64"), "number"
        else:
            values, type_ = text, "text"
        t.add(name, values, type_, "column outside the schema, kept at the user's request "
              "(--keep); meaning as in the clinic's export", "kept as given (--keep)", name, "",
              "")
        plan.kept.append({"table": t.name, "column": name})


def _sessions_table(s: pd.DataFrame, key: bytes, threshold: int, keep: Sequence[str],
                    plan: _Plan, anchor: pd.Series) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Sessions (with course columns) de-identified by role; sorted by pseudonym and day."""
    t = _Table("sessions")
    fields = schema.fields("sessions")
    pid = s["patient_id"].astype("string")
    pseudo = pseudonymise(s, "patient_id", key)["patient_id"]
    shifted = shift_dates(s[["patient_id", "session_date"]], ["session_date"], anchor)
    t.add("session_id", s["session_id_new"], "text",
          "session id made for this export: patient_pseudonym:session_day:n (n counts the "
          "patient's sessions on that day)", _treat("key", threshold), "session_id")
    t.add("course_id", s["course_id_new"], "text",
          "treatment course: patient_pseudonym:indication:area:k, the k-th course of the "
          "patient for that indication and area (a gap of more than the protocol's "
          "new_course_after_days starts a new course)",
          _treat("key", threshold), "course_id (derived from the sessions)")
    t.add("session_number", s["session_number"], "whole number",
          "number of the session within its course (1 = first)", "derived", "")
    t.add("patient_pseudonym", pseudo, "text", "patient pseudonym: the same patient has the "
          "same pseudonym in every table of this export", _treat("patient_id", threshold),
          "patient_id", "", "")
    t.add("session_day", shifted["session_day"], "whole number",
          f"{fields['session_date'].meaning}, as days since the patient's first session "
          "(0 = first session)", _treat("date", threshold), "session_date", "days", "")
    t.add("session_year", shifted["session_year"], "whole number",
          "calendar year of the session", "generalised: the year of session_date",
          "session_date", "year", "")
    t.add("days_since_previous", s["days_since_previous"].astype("Float64").round()
          .astype("Int64"), "whole number", "days since the previous session of the same "
          "course (empty for a course's first session); exact", "derived from the dates",
          "session_date", "days", "")
    for f in schema.SESSIONS:
        if f.role in ("key", "patient_id", "date"):
            continue
        if f.role in ("identifying", "free_text"):
            plan.removed.append({"table": "sessions", "field": f.name, "role": f.role,
                                 "had_values": bool(s[f.name].notna().any()),
                                 "reason": schema.ROLES[f.role]})
            continue
        if f.role == "staff":
            name = RENAMED.get(f.name, f"{f.name}_code")
            t.add(name, pseudonymise(s, f.name, key, "clinician")[f.name], "text",
                  f"code of the {f.meaning}: the same clinician has the same code in every "
                  "table of this export", _treat("staff", threshold), f.name, "", "")
        elif f.role == "birth_date":
            first = pid.map(anchor)
            t.add(RENAMED.get(f.name, f"{f.name}_age_band"), age_band(s[f.name], first),
                  "text", "patient's age at their first session, in completed years, in "
                  f"{AGE_WIDTH}-year bands", _treat("birth_date", threshold), f.name, "years")
        else:
            _kept_field(t, s, f, threshold, "patient_id", plan)
    _kept_columns(t, s, keep, plan)
    return t.frame(), t.doc


def _courses_table(c: pd.DataFrame, key: bytes, anchor: pd.Series,
                   threshold: int) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    t = _Table("courses")
    pseudo = pseudonymise(c, "patient_id", key)["patient_id"]
    shifted = shift_dates(c[["patient_id", "first_date", "last_date"]],
                          ["first_date", "last_date"], anchor)
    text_rule = _treat("text", threshold)
    t.add("course_id", c["course_id_new"], "text", "treatment course, as in the sessions "
          "table: patient_pseudonym:indication:area:k", _treat("key", threshold), "course_id")
    t.add("patient_pseudonym", pseudo, "text", "patient pseudonym (as in the sessions table)",
          _treat("patient_id", threshold), "patient_id", "", "")
    t.add("indication", c["indication"], "text", "what the course treats", text_rule,
          "indication")
    t.add("area", c["area"], "text", "treated area", text_rule, "area")
    t.add("clinic", c["clinic"], "text", "site of the course's last session", text_rule,
          "clinic")
    t.add("clinician_code", pseudonymise(c, "operator", key, "clinician")["operator"], "text",
          "code of the clinician of the course's last session (who closed the course)",
          _treat("staff", threshold), "operator", "", "")
    t.add("clinicians", c["operators"].astype("Int64"), "whole number",
          "how many clinicians treated in the course", "derived", "operator", "clinicians", "")
    for stem, what in (("first", "first"), ("last", "last")):
        t.add(f"{stem}_day", shifted[f"{stem}_day"], "whole number",
              f"day of the course's {what} session, as days since the patient's first session",
              _treat("date", threshold), "session_date", "days", "")
        t.add(f"{stem}_year", shifted[f"{stem}_year"], "whole number",
              f"calendar year of the course's {what} session", "generalised: the year",
              "session_date", "year", "")
    t.add("sessions", c["sessions"].astype("Int64"), "whole number",
          "number of sessions in the course", "derived", "", "sessions", "")
    t.add("duration_days", c["duration_days"].astype("Int64"), "whole number",
          "days from the course's first to its last session", "derived from the dates",
          "session_date", "days", "")
    t.add("completed", c["completed"].astype("boolean"), "yes/no",
          "the data run at least the protocol's new_course_after_days past the course's last "
          "session, so no further session of it is expected", "derived", "", "",
          "true, false")
    return t.frame(), t.doc


def _outcomes_table(o: pd.DataFrame, key: bytes, anchor: pd.Series, threshold: int,
                    keep: Sequence[str], plan: _Plan) -> tuple[pd.DataFrame,
                                                               list[dict[str, Any]]]:
    t = _Table("outcomes")
    pseudo = pseudonymise(o, "patient_id", key)["patient_id"]
    for f in schema.OUTCOMES:
        if f.role == "patient_id":
            t.add("patient_pseudonym", pseudo, "text", "patient pseudonym (as in the sessions "
                  "table)", _treat("patient_id", threshold), f.name, "", "")
        elif f.role == "date":
            shifted = shift_dates(o[["patient_id", f.name]], [f.name], anchor)
            stem = _date_stem(f.name)
            t.add(f"{stem}_day", shifted[f"{stem}_day"], "whole number",
                  f"{f.meaning}, as days since the patient's first session (negative: before "
                  "it, e.g. a baseline; empty: the patient has no session in the export)",
                  _treat("date", threshold), f.name, "days", "")
            t.add(f"{stem}_year", shifted[f"{stem}_year"], "whole number",
                  f"calendar year of the {f.meaning.removeprefix('date of the ')}",
                  "generalised: the year", f.name, "year", "")
        elif f.role in ("identifying", "free_text"):
            plan.removed.append({"table": "outcomes", "field": f.name, "role": f.role,
                                 "had_values": bool(o[f.name].notna().any()),
                                 "reason": schema.ROLES[f.role]})
        elif f.name == "score":
            t.add(f.name, o[f.name], "number", f"{f.meaning} (ranges and the better direction: "
                  "see the instrument registry in the README)", _treat("kept", threshold),
                  f.name, "points of the instrument", "")
        else:
            _kept_field(t, o, f, threshold, "patient_id", plan)
    _kept_columns(t, o, keep, plan)
    return t.frame(), t.doc


def data_dictionary(tables: Mapping[str, pd.DataFrame],
                    docs: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per exported column: field, table, type, unit, allowed values, meaning,
    what was done to it, and the field of the input it comes from.

    Allowed values not given by the schema are listed from the data for text columns with
    at most 30 values (never for ids, pseudonyms or codes).
    """
    rows = []
    for d in docs:
        d = dict(d)
        if d["allowed_values"] is None:
            col = tables[d["table"]][d["field"]]
            uniq = sorted(str(v) for v in col.dropna().unique())
            text = col.dtype == object or isinstance(col.dtype, pd.StringDtype)
            d["allowed_values"] = ", ".join(uniq) if text and 0 < len(uniq) <= 30 else ""
        rows.append(d)
    return pd.DataFrame(rows, columns=["field", "table", "type", "unit", "allowed_values",
                                       "meaning", "treatment", "source_field"])


def _derive_ids(s: pd.DataFrame, c: pd.DataFrame, key: bytes,
                anchor: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Course and session ids made from pseudonyms (the clinic's ids contain real ids)."""
    c = c.copy()
    c["_p"] = pseudonymise(c, "patient_id", key)["patient_id"]
    ind = c["indication"].astype("string").fillna(NOT_RECORDED)
    area = c["area"].astype("string").fillna(NOT_RECORDED)
    c = c.assign(_i=ind, _a=area).sort_values(["_p", "_i", "_a", "first_date"], kind="stable")
    k = c.groupby(["_p", "_i", "_a"], sort=False).cumcount() + 1
    c["course_id_new"] = (c["_p"] + ":" + c["_i"] + ":" + c["_a"] + ":"
                          + k.astype("string")).astype("string")
    new_course = dict(zip(c["course_id"], c["course_id_new"], strict=True))
    s = s.copy()
    s["course_id_new"] = s["course_id"].map(new_course).astype("string")
    s["_p"] = pseudonymise(s, "patient_id", key)["patient_id"]
    day = (s["session_date"] - pd.to_datetime(s["patient_id"].map(anchor))).dt.days
    s["_d"] = day.astype("int64")
    s = s.sort_values(["_p", "_d", "course_id_new", "session_number"], kind="stable")
    n = s.groupby(["_p", "_d"], sort=False).cumcount() + 1
    s["session_id_new"] = (s["_p"] + ":" + s["_d"].astype("string") + ":"
                           + n.astype("string")).astype("string")
    c = c.sort_values(["_p", "first_date", "course_id_new"], kind="stable")
    return (s.drop(columns=["_p", "_d"]).reset_index(drop=True),
            c.drop(columns=["_p", "_i", "_a"]).reset_index(drop=True))


def _check_keep(dataset: Any, keep: Sequence[str]) -> None:
    known = {f.name: f for t in schema.TABLES.values() for f in t}
    unknown = set(dataset.sessions.unknown_columns)
    if dataset.outcomes is not None:
        unknown |= set(dataset.outcomes.unknown_columns)
    for name in keep:
        if name in known:
            raise LoadError(f"--keep applies to columns outside the schema; {name} is a schema "
                            f"field (role {known[name].role}) and is treated by its role")
        if name in ("source_file", "source_row", "sources"):
            raise LoadError(f"--keep {name}: file names and row numbers link back to the "
                            "clinic's records and are never exported")
        if name not in unknown:
            listed = ", ".join(sorted(unknown)) or "none"
            raise LoadError(f"--keep {name}: the inputs have no such column outside the schema "
                            f"(columns outside it: {listed})")


def scrub_identifying_text(df: pd.DataFrame, table: str, find: Callable[[str], Any],
                           key: bytes, plan: _Plan) -> pd.DataFrame:
    """Text categories (site, clinical, demographic) holding an identifying value of the
    input (`find(value)` is true) replaced before anything else is made from them.

    A site (`Praxis Dr. Brandt`, the clinician's own name) becomes a code made under the key
    (`site_` and 8 hex characters), so sites stay apart and the export stays possible; any
    other field becomes `other`. Each replacement is counted in the plan.
    """
    out = df.copy()
    for f in schema.TABLES[table]:
        if f.role not in ("site", "clinical", "demographic") or f.type != "string" \
                or f.name not in out.columns:
            continue
        text = out[f.name].astype("string")
        bad = sorted(str(v) for v in text.dropna().unique() if find(str(v)))
        if not bad:
            continue
        mask = text.isin(bad).fillna(False)
        if f.role == "site":
            codes = {v: f"site_{pseudonym(v, key, 'site')[:SITE_CODE_CHARS]}" for v in bad}
            new = text.map(lambda v, c=codes: c.get(v, v))
        else:
            new = text.mask(mask, OTHER)
        out[f.name] = new.astype("string")
        plan.recoded.append({"table": table, "field": f.name, "values_replaced": int(mask.sum()),
                             "rule": _treat("scrubbed", 0)})
    return out
