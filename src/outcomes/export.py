"""Research export: de-identified, documented, reproducible, and safe to open in Excel.

A research partner receives the folder this writes. Fields are treated by their role in
the canonical schema (`outcomes.schema`), never by guessing from column names:

* patient ids become HMAC-SHA256 pseudonyms under a key the clinic keeps, clinicians
  become codes the same way, and session and course ids are re-derived from them;
* dates become days since the patient's first session, plus the calendar year;
* date of birth becomes the age at the first session in 5-year bands, 90 and over grouped;
* names, phone numbers, e-mail addresses and free text are removed, and so are columns
  outside the schema unless the user keeps them by name;
* aggregate tables hide small counts, and the cells that would give them away.

The whole folder is written beside its target and renamed into place only after a leak
check has searched every output file for every identifying value of the input: one hit
and nothing is released. Text cells a spreadsheet would run as a formula are neutralised.
The same inputs and key give byte-identical tables (CSV, Parquet and XLSX); only the
export time in `manifest.json` differs between runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from outcomes import schema
from outcomes.courses import NOT_RECORDED, assign_courses, course_table
from outcomes.files import sha256
from outcomes.load import LoadError
from outcomes.workbook import FORMULA_START, safe_text, write_workbook

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
DOB_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y%m%d", "%d-%m-%Y")
SEARCH_ROLES = ("patient_id", "identifying", "staff", "birth_date", "key")
TOKEN = re.compile(r"[^\W_]+")
WORD = re.compile(r"\w+")
MIN_SEARCH_CHARS = 4  # shorter values cannot be searched without false alarms
MIN_NUMERIC_CHARS = 6  # a bare number shorter than this is found in any table of numbers


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
    values = df[column].astype("string")
    mapping = {v: (v if v == NOT_RECORDED else pseudonym(v, key, kind))
               for v in values.dropna().unique()}
    out = df.copy()
    out[column] = values.map(mapping).astype("string")
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
# small-cell suppression


def suppress_small_cells(table: pd.DataFrame, counts: Sequence[str],
                         threshold: int = DEFAULT_THRESHOLD,
                         row_sums: Sequence[tuple[str, Sequence[str]]] = (),
                         totals: tuple[str, str, Sequence[str]] | None = None,
                         derived: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Counts 1 … threshold−1 shown as `<threshold`, and every cell that would give them away.

    `row_sums` are equations inside a row (`("eligible", ("compliant", "deviations",
    "missing"))`); `totals = (column, label, keys)` says the rows whose `column` is `label`
    are the sums of the other rows with the same `keys`. An equation with exactly one hidden
    cell would give it away, so another cell of it is hidden too (marked `suppressed`):
    preferably a part rather than the total, and one of at least 2 × threshold − 2 so the
    sum does not narrow the small cell down; repeated until no equation has one hidden
    cell. Zeros are shown. `derived` columns (a percent, its interval, a status) computed
    from counts are blanked, or set to `suppressed` for text, where any of those is hidden.
    The result's `attrs["suppression"]` counts the hidden cells.
    """
    out = table.copy().reset_index(drop=True)
    counts = list(counts)
    col_of = {c: j for j, c in enumerate(counts)}
    vals = out[counts].astype("Float64").fillna(0).to_numpy(dtype="int64")
    primary = (vals >= 1) & (vals < threshold)
    hidden = primary.copy()
    equations: list[list[tuple[int, int]]] = []
    for total, parts in row_sums:
        for r in range(len(out)):
            equations.append([(r, col_of[total])] + [(r, col_of[p]) for p in parts])
    if totals is not None:
        label_col, label, keys = totals
        is_total = (out[label_col].astype("string") == label).fillna(False).to_numpy(bool)
        groups = out.groupby(list(keys), sort=False, dropna=False).indices
        for rows in groups.values():
            tot = [r for r in rows if is_total[r]]
            members = [r for r in rows if not is_total[r]]
            if len(tot) != 1 or not members:
                continue
            for j in range(len(counts)):
                equations.append([(tot[0], j)] + [(r, j) for r in members])
    safe_size = 2 * threshold - 2
    changed = True
    while changed:
        changed = False
        for eq in equations:
            if sum(hidden[c] for c in eq) != 1:
                continue
            cands = [(i, c) for i, c in enumerate(eq) if not hidden[c] and vals[c] > 0]
            if not cands:
                continue
            big = [x for x in cands if vals[x[1]] >= safe_size]
            if big:
                _, pick = min(big, key=lambda x: (x[0] == 0, vals[x[1]], x[0]))
            else:
                _, pick = max(cands, key=lambda x: (vals[x[1]], -x[0]))
            hidden[pick] = True
            changed = True
    mark = f"<{threshold}"
    for c, j in col_of.items():
        shown = out[c].astype("Int64").astype(object).where(out[c].notna(), None)
        col = np.where(primary[:, j], mark, np.where(hidden[:, j], SECONDARY_MARK,
                                                       shown.to_numpy(dtype=object)))
        out[c] = pd.Series(col, dtype=object)
    blanked = 0
    for c, sources in (derived or {}).items():
        rows = np.logical_or.reduce([hidden[:, col_of[s]] for s in sources])
        blanked += int(rows.sum())
        if pd.api.types.is_numeric_dtype(out[c].dtype):
            out[c] = out[c].astype("Float64").mask(rows)
        else:
            out[c] = out[c].astype(object).where(~rows, SECONDARY_MARK)
    out.attrs["suppression"] = {"threshold": threshold, "small_cells": int(primary.sum()),
                                "cells_hidden_to_protect_them": int((hidden & ~primary).sum()),
                                "derived_cells_blanked": blanked}
    return out


# ---------------------------------------------------------------------------------------------
# the leak check


def identifiers(dataset: Any, key: bytes | None = None) -> dict[str, set[str]]:
    """Every identifying value of the input, by field: ids, names, clinicians, dates of birth
    (in the usual spellings), phone numbers (also as bare digits), e-mail addresses, given
    session ids, and the key itself."""
    found: dict[str, set[str]] = {}
    frames = (("sessions", dataset.sessions.data), ("outcomes", dataset.outcomes_data))
    for table, df in frames:
        if df is None:
            continue
        for f in schema.TABLES[table]:
            if f.role not in SEARCH_ROLES or f.name not in df.columns:
                continue
            col = df[f.name].dropna()
            if f.type == "date":
                days = pd.to_datetime(col).drop_duplicates()
                values = {d.strftime(fmt) for d in days for fmt in DOB_FORMATS}
            else:
                values = {str(v).strip() for v in col.astype("string").unique()} - {""}
                for v in list(values):
                    digits = re.sub(r"\D", "", v)
                    if (len(digits) >= 7 and re.fullmatch(r"[\d\s()+\-./]+", v)
                            and digits != v):
                        values.add(digits)
            found.setdefault(f.name, set()).update(values)
    if key:
        text = key.decode("utf-8", errors="replace")
        found["key"] = {text, key.hex()}
    return found


def name_parts(dataset: Any) -> dict[str, set[str]]:
    """Single words (4+ letters) of names: identifying or staff values without digits or @.

    Searched for as whole words in the data tables only, where a name has no business.
    """
    parts: dict[str, set[str]] = {}
    frames = (("sessions", dataset.sessions.data), ("outcomes", dataset.outcomes_data))
    for table, df in frames:
        if df is None:
            continue
        for f in schema.TABLES[table]:
            if f.role not in ("identifying", "staff") or f.type != "string":
                continue
            if f.name not in df.columns:
                continue
            for v in df[f.name].dropna().astype("string").unique():
                if re.search(r"[\d@]", str(v)):
                    continue
                words = {w for w in re.findall(r"[^\W\d_]+", str(v).casefold()) if len(w) >= 4}
                parts.setdefault(f.name, set()).update(words)
    return parts


@dataclass
class _Index:
    """Identifying values as token sequences, by length, each naming its field."""

    by_length: dict[int, dict[tuple[str, ...], str]] = field(default_factory=dict)
    searched: int = 0
    too_short: int = 0


def _index(values: Mapping[str, Iterable[str]]) -> _Index:
    idx = _Index()
    for column, items in values.items():
        for v in items:
            toks = tuple(TOKEN.findall(str(v).casefold()))
            chars = "".join(toks)
            if len(chars) < MIN_SEARCH_CHARS or (chars.isdigit() and len(toks) == 1
                                                  and len(chars) < MIN_NUMERIC_CHARS):
                idx.too_short += 1
                continue
            idx.by_length.setdefault(len(toks), {}).setdefault(toks, column)
            idx.searched += 1
    return idx


CHUNK, OVERLAP = 1 << 22, 1 << 12  # search big texts in pieces that overlap


def _chunks(text: str) -> Iterable[str]:
    """Pieces of a big text that overlap, each starting at a token boundary."""
    for start in range(0, max(len(text), 1), CHUNK):
        begin = max(0, start - OVERLAP)
        piece = text[begin:start + CHUNK]
        if begin:
            m = re.search(r"[\W_]", piece)
            piece = piece[m.start():] if m else ""
        yield piece


def _find(text: str, idx: _Index) -> set[str]:
    """Fields whose values occur in `text` as whole token sequences (case-insensitive)."""
    firsts = {t[0] for d in idx.by_length.values() for t in d}
    hits: set[str] = set()
    for piece in _chunks(text):
        tokens = TOKEN.findall(piece.casefold())
        for i, tok in enumerate(tokens):
            if tok not in firsts:
                continue
            for k, table in idx.by_length.items():
                column = table.get(tuple(tokens[i:i + k]))
                if column is not None:
                    hits.add(column)
    return hits


def _texts(path: Path) -> Iterable[str]:
    """What a reader (or a program) can see in an output file, as text."""
    data = path.read_bytes()
    yield data.decode("utf-8", errors="replace")
    if path.suffix == ".xlsx" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                yield html.unescape(z.read(name).decode("utf-8", errors="replace"))
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
        yield json.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                          for k, v in (table.schema.metadata or {}).items()}, ensure_ascii=False)
        yield table.to_pandas().to_csv(index=False)
    elif path.suffix == ".json":
        try:
            yield json.dumps(json.loads(data), ensure_ascii=False)
        except ValueError:
            pass


def leak_check(out_dir: str | Path, identifiers: Mapping[str, Iterable[str]],
               name_parts: Mapping[str, Iterable[str]] | None = None) -> list[tuple[str, str]]:
    """Search every file under out_dir for every identifying value; return (file, field) hits.

    Values are compared as sequences of words and numbers, ignoring case and punctuation
    (so `+49 176 1234567` is also found as `49-176-1234567`), inside CSV, JSON, the unpacked
    XML of an XLSX and the cells of a Parquet file. A value with fewer than 4 letters or
    digits, or a bare number under 6 digits, is not searched (it would be found anywhere).
    `name_parts` (single words of names) are searched for as whole words in the data rows
    of the table CSVs.
    """
    out_dir = Path(out_dir)
    idx = _index(identifiers)
    parts = {w: col for col, words in (name_parts or {}).items() for w in words}
    hits: set[tuple[str, str]] = set()
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(out_dir).as_posix()
        for text in _texts(path):
            for column in _find(text, idx):
                hits.add((rel, column))
        if parts and path.suffix == ".csv" and path.stem in DATA_TABLES:
            body = path.read_text(encoding="utf-8-sig", errors="replace").split("\n", 1)[-1]
            for piece in _chunks(body):
                for w in set(WORD.findall(piece.casefold())) & parts.keys():
                    hits.add((rel, parts[w]))
    return sorted(hits)


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
        "text": (f"kept where a code (one word) or shared by at least {threshold} patients; "
                 f"any other text replaced by '{OTHER}'"),
        "allowed": f"kept where one of the allowed values; anything else replaced by '{OTHER}'",
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
    rows.append({"role": "(load bookkeeping)", "schema_says": "source_file, source_row",
                 "in_this_export": "removed: row numbers link back to the clinic's file",
                 "fields": "source_file, source_row"})
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
    out = generalise_text(df, f.name, patient_column, threshold, f.allowed)[f.name]
    changed = int((before.notna() & (before != out).fillna(False)).sum())
    kind = "allowed" if f.allowed else "text"
    if changed:
        plan.recoded.append({"table": t.name, "field": f.name, "values_replaced": changed,
                             "rule": _treat(kind, threshold)})
    t.add(f.name, out, "text", f.meaning, _treat(kind, threshold), f.name, f.unit or "")


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


COMPLIANCE_COUNTS = ("eligible", "compliant", "deviations", "missing")
COMPLIANCE_DERIVED = {"percent": ("eligible", "compliant"), "ci_low": ("eligible", "compliant"),
                      "ci_high": ("eligible", "compliant"), "status": ("eligible", "compliant")}


def compliance_table(audit: Any, key: bytes, threshold: int = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Compliance per criterion, overall (`all`) and per clinician code, small cells hidden."""
    levels = {c.id: c.level for c in audit.protocol.criteria}
    cols = ["criterion", "title", "level", "clinician_code", *COMPLIANCE_COUNTS, "percent",
            "ci_low", "ci_high", "target", "status"]
    overall = audit.summary().assign(clinician_code=ALL_CLINICIANS)
    by = audit.summary("operator")
    by = pseudonymise(by.assign(operator=by["operator"].astype("string")), "operator", key,
                      "clinician", "clinician_code")
    both = pd.concat([overall, by], ignore_index=True)
    both["level"] = both["criterion"].map(levels)
    order = {c.id: i for i, c in enumerate(audit.protocol.criteria)}
    both = both.assign(_o=both["criterion"].map(order),
                       _a=both["clinician_code"] != ALL_CLINICIANS)
    both = both.sort_values(["_o", "_a", "clinician_code"], kind="stable")[cols]
    for c in ("percent", "ci_low", "ci_high"):
        both[c] = both[c].astype("float64").round(2)
    both["clinician_code"] = both["clinician_code"].astype("string")
    return suppress_small_cells(both, COMPLIANCE_COUNTS, threshold,
                                row_sums=[("eligible", ("compliant", "deviations", "missing"))],
                                totals=("clinician_code", ALL_CLINICIANS, ("criterion",)),
                                derived=COMPLIANCE_DERIVED)


def _compliance_doc(threshold: int) -> list[dict[str, Any]]:
    hidden = (f"counts 1–{threshold - 1} shown as '<{threshold}'; a cell that would let one "
              f"work such a count out shown as '{SECONDARY_MARK}'")
    count_type = f"whole number, or text ('<{threshold}', '{SECONDARY_MARK}') where hidden"
    rows = [
        ("criterion", "text", "", "", "id of the protocol criterion (stable across re-audits)",
         "kept"),
        ("title", "text", "", "", "what the criterion checks, in words", "kept"),
        ("level", "text", "", "session, first_session, course",
         ("what the criterion is checked on: every session, a course's first session, or a "
         "completed course"), "kept"),
        ("clinician_code", "text", "", "",
         (f"code of the clinician (as in the sessions table); '{ALL_CLINICIANS}' = every "
         f"clinician together; '{NOT_RECORDED}' = sessions without a clinician"),
         _treat("staff", threshold)),
        ("eligible", count_type, "sessions or courses", "",
         "records the criterion applies to (compliant + deviations + missing)", hidden),
        ("compliant", count_type, "sessions or courses", "", "records that follow the protocol",
         hidden),
        ("deviations", count_type, "sessions or courses", "",
         "records that do not follow the protocol", hidden),
        ("missing", count_type, "sessions or courses", "", ("records where a value the rule "
         "needs is not documented (counted as not compliant)"), hidden),
        ("percent", "number", "%", "0–100", "compliant / eligible × 100",
         "empty where eligible or compliant is hidden"),
        ("ci_low", "number", "%", "0–100", "lower end of the Wilson 95 % interval of percent",
         "empty where eligible or compliant is hidden"),
        ("ci_high", "number", "%", "0–100", "upper end of the Wilson 95 % interval of percent",
         "empty where eligible or compliant is hidden"),
        ("target", "number", "%", "0–100", "compliance the protocol aims for", "kept"),
        ("status", "text", "", f"met, not met, inconclusive, no data, {SECONDARY_MARK}",
         ("met: the whole interval is at or above the target (a 100 % target: no miss); not "
         "met: below it; inconclusive: the interval spans the target"),
         f"'{SECONDARY_MARK}' where eligible or compliant is hidden"),
    ]
    return [{"field": f, "table": "compliance", "type": ty, "unit": u, "allowed_values": a,
             "meaning": m, "treatment": tr, "source_field": "derived (audit)"}
            for f, ty, u, a, m, tr in rows]


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


def build_tables(dataset: Any, protocol: Any, key: bytes, keep: Sequence[str] = (),
                 threshold: int = DEFAULT_THRESHOLD) -> tuple[dict[str, pd.DataFrame],
                                                              dict[str, Any]]:
    """The de-identified tables (sessions, courses, outcomes, compliance, data_dictionary)
    and a record of what was done, without writing anything."""
    from outcomes.audit import run_audit

    sessions = dataset.sessions.data
    outcomes = dataset.outcomes_data
    _check_keep(dataset, keep)
    audit = run_audit(sessions, protocol, outcomes)
    as_of = sessions["session_date"].max() if len(sessions) else None
    s = assign_courses(sessions, protocol.new_course_after_days, as_of=as_of)
    anchor = s.groupby(s["patient_id"].astype("string"))["session_date"].min()
    # text categories are generalised before the course table takes them over
    text_fields = [f for f in schema.SESSIONS if f.role in ("site", "clinical", "demographic")
                   and f.type == "string"]
    s_gen = s
    for f in text_fields:
        s_gen = generalise_text(s_gen, f.name, "patient_id", threshold, f.allowed)
    s, c = _derive_ids(s, course_table(s_gen), key, anchor)
    plan = _Plan()
    keep_s = [k for k in keep if k in sessions.columns]
    keep_o = [k for k in keep if outcomes is not None and k in outcomes.columns]
    # the sessions table generalises the same text again, counting what it replaces
    sess, doc_s = _sessions_table(s, key, threshold, keep_s, plan, anchor)
    courses, doc_c = _courses_table(c, key, anchor, threshold)
    if outcomes is not None:
        o = outcomes.copy()
        o["_p"] = pseudonymise(o, "patient_id", key)["patient_id"]
        o["_d"] = (o["assessment_date"] - pd.to_datetime(o["patient_id"].map(anchor))).dt.days
        o = o.sort_values(["_p", "_d", "instrument", "rater", "score"], kind="stable",
                          na_position="last").drop(columns=["_p", "_d"])
    else:
        o = schema.empty_frame("outcomes")
    outs, doc_o = _outcomes_table(o.reset_index(drop=True), key, anchor, threshold, keep_o,
                                  plan)
    comp = compliance_table(audit, key, threshold)
    tables = {"sessions": sess, "courses": courses, "outcomes": outs, "compliance": comp}
    docs = [*doc_s, *doc_c, *doc_o, *_compliance_doc(threshold)]
    tables["data_dictionary"] = data_dictionary(tables, docs)
    unknown = sorted({(t, col) for t, r in (("sessions", dataset.sessions),
                                            ("outcomes", dataset.outcomes)) if r is not None
                      for col in r.unknown_columns if col not in keep})
    for table, col in unknown:
        plan.removed.append({"table": table, "field": col, "role": "(not in the schema)",
                             "had_values": True, "reason": "column outside the schema; keep "
                             "it with --keep COLUMN if the research needs it"})
    for table in ("sessions", "outcomes"):
        plan.removed.append({"table": table, "field": "source_file, source_row",
                             "role": "(load bookkeeping)", "had_values": True,
                             "reason": "file name and row number link back to the clinic's "
                             "records"})
    plan.removed.append({"table": "courses", "field": "days_observed_after",
                         "role": "(derived)", "had_values": True,
                         "reason": "days from a course's end to the end of the data: with the "
                         "data's end date it would give back every calendar date"})
    record = {
        "audit": audit, "plan": plan,
        "patients": int(pd.concat([sessions["patient_id"], o["patient_id"]]).nunique()),
        "clinicians": int(sessions["operator"].nunique()),
        "outcomes_without_session": int(outs["assessment_day"].isna().sum()),
        "adverse_event_codes": sorted(str(v) for v in sess["adverse_event"].dropna().unique()),
    }
    return tables, record


def _check_keep(dataset: Any, keep: Sequence[str]) -> None:
    known = {f.name: f for t in schema.TABLES.values() for f in t}
    unknown = set(dataset.sessions.unknown_columns)
    if dataset.outcomes is not None:
        unknown |= set(dataset.outcomes.unknown_columns)
    for name in keep:
        if name in known:
            raise LoadError(f"--keep applies to columns outside the schema; {name} is a schema "
                            f"field (role {known[name].role}) and is treated by its role")
        if name in ("source_file", "source_row"):
            raise LoadError(f"--keep {name}: file names and row numbers link back to the "
                            "clinic's records and are never exported")
        if name not in unknown:
            listed = ", ".join(sorted(unknown)) or "none"
            raise LoadError(f"--keep {name}: the inputs have no such column outside the schema "
                            f"(columns outside it: {listed})")


# ---------------------------------------------------------------------------------------------
# writing


def _neutralise(df: pd.DataFrame) -> pd.DataFrame:
    """Text cells (and headers) that start like a formula get a leading apostrophe."""
    out = df.rename(columns=lambda c: safe_text(str(c)))
    for c in out.columns:
        col = out[c]
        if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
            out[c] = col.map(lambda v: safe_text(v) if isinstance(v, str) else v)
            if isinstance(col.dtype, pd.StringDtype):
                out[c] = out[c].astype(col.dtype)
    return out


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    # UTF-8 with BOM so Excel reads accents right; one line ending for byte-identical files
    df.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\n")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:  # mixed counts and marks: text, as in the CSV
            out[c] = out[c].map(lambda v: None if v is None or v is pd.NA or
                                (isinstance(v, float) and np.isnan(v)) else str(v))
            out[c] = out[c].astype("string")
    table = pa.Table.from_pandas(out, preserve_index=False)
    # uncompressed: a byte search of the file sees every text value as it is
    pq.write_table(table, path, compression="none")


def _normalise_xlsx(path: Path) -> None:
    """Fixed ZIP timestamps, no created/modified times, and the About sheet named README."""
    with zipfile.ZipFile(path) as zin:
        members = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in members:
            if name == "docProps/core.xml":
                data = re.sub(rb"<dcterms:(created|modified)\b[^>]*>[^<]*</dcterms:\1>", b"",
                              data)
            elif name == "xl/workbook.xml":
                data = data.replace(b'<sheet name="About"', b'<sheet name="README"', 1)
            elif name == "docProps/app.xml":
                data = data.replace(b"<vt:lpstr>About</vt:lpstr>", b"<vt:lpstr>README</vt:lpstr>",
                                    1)
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zout.writestr(info, data)
    os.replace(tmp, path)


def _readme(tables: Mapping[str, pd.DataFrame],
            manifest: Mapping[str, Any]) -> list[tuple[str, Any]]:
    t = manifest["suppression"]["threshold"]
    p = manifest["protocol"]
    rows: list[tuple[str, Any]] = [
        ("What this is", ("A de-identified research export of fractional-laser treatment "
         "sessions, the treatment courses they form, patient outcomes and protocol compliance "
         "by clinician. Patients and clinicians cannot be identified from it.")),
        ("How it was made", (f"outcomes {manifest['software']['version']} (command: outcomes "
         "export); every field treated by its role in the canonical schema; see "
         "data_dictionary for every column and manifest.json for the details.")),
        ("Protocol", f"{p['id']} version {p['version']}: {p['title']}"),
    ]
    for i in manifest["inputs"]:
        rows.append((f"Input: {i['table']}", (f"{i['file']}: {i['rows_read']} rows read, "
                     f"{i['rows_loaded']} loaded, {i['rows_rejected']} rejected; SHA-256 "
                     f"{i['sha256']}")))
    for name in DATA_TABLES:
        rows.append((f"Sheet {name}", f"{len(tables[name])} rows. {TABLE_TEXT[name]}"))
    rows += [
        ("Patients", ("Each patient is a pseudonym: the first 16 hex characters of "
         "HMAC-SHA256 of the patient id under a secret key the clinic keeps. The same key "
         "gives the same pseudonyms (a later export links up); no table linking pseudonyms to "
         "real ids exists in this export.")),
        ("Clinicians", "Each clinician is a code made the same way from the name."),
        ("Dates", ("Every date is given as days since the patient's first session (session_day, "
         "assessment_day, first_day, last_day) plus its calendar year; intervals between "
         "sessions and assessments are exact.")),
        ("Age", (f"Date of birth is given only as age at the first session in {AGE_WIDTH}-year "
         f"bands, {AGE_TOP} and over as {AGE_TOP}+.")),
        ("Removed", "; ".join(f"{r['table']}.{r['field']} ({r['reason']})"
                              for r in manifest["removed"])),
        ("Text categories", (f"Text values (clinic, indication, area, adverse_event, sex …) "
         f"are kept where they are a code (one word) or shared by at least {t} patients; "
         f"anything else, which could be a note about a person, is replaced by '{OTHER}'.")),
        ("Small cells", (f"In the compliance table counts of 1–{t - 1} are shown as '<{t}', and "
         f"cells that would let one work such a count out are shown as '{SECONDARY_MARK}'; "
         "percent and interval are left empty where their counts are hidden. Row-level tables "
         "are not aggregated and so not suppressed.")),
        ("Leak check", ("Before release every identifying value of the input (patient ids, "
         "names, clinician names, dates of birth, phone numbers, e-mail addresses, session "
         "ids, the key) was searched for in every file of the export; an export with a single "
         "hit is never released.")),
        ("Excel safety", ("A text cell that starts with = + - @, a tab or a carriage return "
         "starts with an apostrophe, so no cell is run as a formula. Numbers are numbers.")),
        ("Row order", ("Rows are sorted by pseudonym and day, not in the order of the clinic's "
         "files.")),
        ("Missing values", "An empty cell is a value that was not recorded."),
        ("Reproducible", ("The same inputs and key give byte-identical table files (CSV, "
         "Parquet and this workbook); only the export time in manifest.json differs.")),
        ("Instruments", "; ".join(f"{i.id}: {i.title}, {_range(i)}, "
                                  f"{'higher' if i.higher_is_better else 'lower'} is better"
                                  for i in schema.INSTRUMENTS.values())),
    ]
    return rows


def _range(i: schema.Instrument) -> str:
    low = "" if i.low is None else f"{i.low:g}"
    high = "" if i.high is None else f"{i.high:g}"
    return f"{low}–{high} {i.unit}"


TABLE_TEXT = {
    "sessions": "One row per treatment session with its course, settings, endpoints, "
                "checklist, contraindications, adverse event and the patient's sex, skin type "
                "and age band.",
    "courses": "One row per treatment course: a patient's run of sessions for one indication "
               "and area without a gap longer than the protocol allows.",
    "outcomes": "One row per outcome assessment (instrument, score, rater, recurrence).",
    "compliance": "Protocol compliance per criterion, for all clinicians together and per "
                  "clinician code, with small counts hidden.",
}


def describe_outputs() -> pd.DataFrame:
    """The files of an export folder and what each holds."""
    rows = [(WORKBOOK, ("the workbook: README, data_dictionary, sessions, courses, outcomes, "
             "compliance sheets")),
            (MANIFEST, ("how the export was made: software and protocol versions, input "
             "SHA-256 and row counts, what was removed, generalised or suppressed, the "
             "suppression threshold, the leak check and the export time"))]
    for name in TABLES:
        text = TABLE_TEXT.get(name, "every exported column: type, unit, allowed values, "
                              "meaning and what was done to it")
        rows.append((f"{name}.csv, {name}.parquet", text))
    return pd.DataFrame(rows, columns=["file", "holds"])


# ---------------------------------------------------------------------------------------------
# the export


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise LoadError(f"{out} exists and is not a folder; give a new or empty folder")
    if not out.is_dir():
        return
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    if not _is_export(out / MANIFEST):
        raise LoadError(f"output folder {out} is not empty and holds no previous research "
                        "export; give a new or empty folder")
    extra = sorted(names - set(OUTPUT_FILES))
    if extra:
        raise LoadError(f"output folder {out} holds a previous export and other files "
                        f"({', '.join(extra[:3])}); move them or give another folder")


def _is_export(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("export") == EXPORT_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)


def research_export(dataset: Any, protocol: Any, key: bytes, out_dir: str | Path,
                    keep: Sequence[str] = (), threshold: int = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Write the de-identified research export folder and return its manifest.

    The folder is written beside `out_dir` and renamed into place only after the leak check
    found nothing; otherwise it is removed and LoadError names the field and file of each hit.
    """
    from outcomes import __version__

    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise LoadError(f"the key is shorter than {MIN_KEY_BYTES} bytes; {_how('K')}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer) \
            or threshold < 1:
        raise LoadError(f"the suppression threshold must be a whole number from 1, not "
                        f"{threshold!r}")
    threshold = int(threshold)
    keep = list(dict.fromkeys(keep))
    out = Path(out_dir)
    _check_target(out)
    tables, record = build_tables(dataset, protocol, key, keep, threshold)
    plan: _Plan = record["plan"]
    files = dataset.files()
    ids = identifiers(dataset, key)
    idx = _index(ids)
    comp = tables["compliance"].attrs.get("suppression", {})
    manifest: dict[str, Any] = {
        "export": EXPORT_KIND,
        "software": {"name": "outcomes", "version": __version__},
        "export_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "protocol": {"id": protocol.id, "version": protocol.version, "title": protocol.title},
        "inputs": [{"file": Path(f.file).name, "table": f.table, "sha256": f.sha256,
                    "rows_read": int(f.rows_read), "rows_loaded": int(f.rows_loaded),
                    "rows_rejected": int(f.rows_rejected)} for f in files.itertuples()],
        "tables": {name: {"rows": len(df), "columns": len(df.columns)}
                   for name, df in tables.items()},
        "patients": record["patients"],
        "clinicians": record["clinicians"],
        "pseudonyms": {
            "patients": "first 16 hex characters of HMAC-SHA256(key, 'patient:' + patient_id)",
            "clinicians": "first 16 hex characters of HMAC-SHA256(key, 'clinician:' + name)",
            "session_id": "patient_pseudonym:session_day:n (n counts the patient's sessions "
                          "on that day)",
            "course_id": "patient_pseudonym:indication:area:k (k-th course of the patient for "
                         "that indication and area)",
            "key": "not in this export; the clinic keeps it. The same key gives the same "
                   "pseudonyms, another key unrelated ones. No table linking pseudonyms to "
                   "real ids is written.",
        },
        "removed": plan.removed,
        "generalised": [
            {"field": "session_date, assessment_date", "to": "*_day and *_year",
             "how": "days since the patient's first session (in this export) plus the "
                    "calendar year; intervals are exact"},
            {"field": "date_of_birth", "to": "age_band",
             "how": f"age in completed years at the first session, {AGE_WIDTH}-year bands, "
                    f"{AGE_TOP}+ grouped"},
            {"field": "text categories (site, clinical, demographic)", "to": "the same field",
             "how": _treat("text", threshold) + "; fields with allowed values keep only "
                    "those"},
        ],
        "recoded": plan.recoded,
        "adverse_event": {
            "decision": "adverse_event is a short code or description; a description can name "
                        "a person, so a value is kept only if it is a code (one word of "
                        "letters, digits and underscores) or shared by at least "
                        f"{threshold} patients, else it becomes '{OTHER}'. The codes kept "
                        "form the closed list below.",
            "codes": record["adverse_event_codes"],
        },
        "kept_on_request": plan.kept,
        "suppression": {
            "threshold": threshold,
            "rule": f"counts 1–{threshold - 1} shown as '<{threshold}'; any cell that, with "
                    "the row's sum (eligible = compliant + deviations + missing) or the "
                    f"'{ALL_CLINICIANS}' row, would give such a count away shown as "
                    f"'{SECONDARY_MARK}'; percent, interval and status blanked where their "
                    "counts are hidden; zeros shown",
            "tables": {"compliance": comp},
            "not_applicable": "not exported in the compliance table: it would need its own "
                              "suppression and the sessions table gives it",
            "row_level_tables": "sessions, courses and outcomes are row-level and not "
                                "suppressed; the suppression protects the compliance table "
                                "when it is quoted or passed on alone",
        },
        "suppression_threshold": threshold,
        "dates": "calendar dates are not exported; the data's end date and each course's days "
                 "to it are left out, since with them every date could be worked back",
        "row_order": "sorted by pseudonym and day, not by the clinic's files",
        "outcomes_without_session": record["outcomes_without_session"],
        "leak_check": {
            "result": "passed",
            "searched": "every file of the export (CSV, Parquet cells and bytes, the unpacked "
                        "XLSX, this manifest)",
            "fields": sorted(ids),
            "values_searched": idx.searched,
            "values_too_short_to_search": idx.too_short,
            "name_words": "single words (4+ letters) of names searched in the data rows of "
                          "the table CSVs",
        },
        "formula_safety": "text cells starting with = + - @, tab or carriage return start "
                          "with an apostrophe in CSV, Parquet and XLSX; numbers stay numbers",
        "reproducible": "the same inputs and key give byte-identical CSV, Parquet and XLSX "
                        "files (see files); only export_time differs",
        "files": {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        safe = {name: _neutralise(df) for name, df in tables.items()}
        for name, df in safe.items():
            _write_csv(df, tmp / f"{name}.csv")
            _write_parquet(df, tmp / f"{name}.parquet")
        sheets = {"data_dictionary": safe["data_dictionary"],
                  **{n: safe[n] for n in DATA_TABLES}}
        write_workbook(tmp / WORKBOOK, _readme(tables, manifest), sheets)
        _normalise_xlsx(tmp / WORKBOOK)
        manifest["files"] = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False,
                                               default=str) + "\n", encoding="utf-8")
        hits = leak_check(tmp, ids, name_parts(dataset))
        if hits:
            found = "; ".join(f"{col} in {file}" for file, col in hits)
            raise LoadError(f"leak check failed, the export was refused and nothing was "
                            f"written: identifying values found ({found})")
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def run_export_command(sessions: str | Path, outcomes: str | Path | None = None,
                       mapping: str | Path | None = None,
                       outcomes_mapping: str | Path | None = None,
                       key_file: str | Path | None = None, out: str | Path | None = None,
                       keep: Sequence[str] | None = (), threshold: int = DEFAULT_THRESHOLD,
                       protocol: str | Path | None = None) -> dict[str, Any]:
    """Everything `outcomes export` does: read the key, load, audit, export, leak check.

    Returns the manifest. Every problem the user can cause is a one-sentence LoadError.
    """
    from outcomes.dataset import load_inputs
    from outcomes.protocol import load_protocol

    key = read_key(key_file)
    if out is None or str(out).strip() == "":
        raise LoadError("a research export needs an output folder (--out DIR)")
    out_path = Path(out).resolve()
    key_path = Path(key_file).resolve()  # type: ignore[arg-type]
    if out_path == key_path or out_path in key_path.parents:
        raise LoadError(f"key file {key_file} is inside the output folder {out}; keep the key "
                        "elsewhere, it must never travel with the export")
    proto = load_protocol(protocol or "flexsys-hair-regrowth")
    ds = load_inputs(sessions, outcomes, mapping, outcomes_mapping)
    return research_export(ds, proto, key, out, keep=list(keep or ()), threshold=threshold)


def export_text(manifest: Mapping[str, Any], out: str | Path) -> str:
    """A short summary of an export for the terminal."""
    tables = manifest["tables"]
    sup = manifest["suppression"]["tables"].get("compliance", {})
    removed = sorted({r["field"] for r in manifest["removed"] if r.get("had_values")})
    lines = [
        f"research export written to {out} ({WORKBOOK}, CSV and Parquet tables, {MANIFEST})",
        "  " + ", ".join(f"{n}: {tables[n]['rows']:,} rows" for n in DATA_TABLES),
        (f"  {manifest['patients']:,} patients pseudonymised and {manifest['clinicians']:,} "
         "clinicians coded under the key (not stored in the export)"),
        "  removed: " + ", ".join(removed),
        (f"  compliance: {sup.get('small_cells', 0)} small counts shown as "
         f"'<{manifest['suppression_threshold']}', {sup.get('cells_hidden_to_protect_them', 0)}"
         " more hidden to protect them"),
        (f"  leak check passed: {manifest['leak_check']['values_searched']:,} identifying "
         f"values searched in {len(manifest['files']) + 1} files"),
    ]
    if manifest.get("kept_on_request"):
        lines.append("  kept on request: " + ", ".join(k["column"]
                                                       for k in manifest["kept_on_request"]))
    return "\n".join(lines)


__all__ = ["FORMULA_START", "age_band", "build_tables", "compliance_table", "data_dictionary",
           "describe_outputs", "export_text", "generalise_text", "identifiers", "leak_check",
           "name_parts", "pseudonym", "pseudonymise", "read_key", "research_export",
           "run_export_command", "shift_dates", "suppress_small_cells", "treatment_table"]
