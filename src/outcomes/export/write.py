"""Writing the export folder: CSV, Parquet, the workbook and its README, the folder itself."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from outcomes import schema

# ---------------------------------------------------------------------------------------------
# writing
from outcomes.export.deidentify import (
    AGE_TOP,
    AGE_WIDTH,
    DATA_TABLES,
    EXPORT_KIND,
    MANIFEST,
    OTHER,
    OUTPUT_FILES,
    SECONDARY_MARK,
    TABLES,
    WORKBOOK,
    ZIP_TIME,
)
from outcomes.load import LoadError


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


#: A table longer than this goes to CSV and Parquet only, not into the workbook: writing
#: a workbook costs about 0.4 ms a row (a million rows: minutes, and Excel stops at
#: 1,048,576), and a researcher analyses the CSV or Parquet.
WORKBOOK_ROWS = 50_000


def in_workbook(table: pd.DataFrame) -> bool:
    """Whether a data table is a sheet of the workbook (else CSV and Parquet only)."""
    return len(table) <= WORKBOOK_ROWS


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
    for i in manifest["inputs"]:  # the file's role and hash: a file name can name a patient
        rows.append((f"Input: {i['table']}", (f"{i['file']}: {i['rows_read']} rows read, "
                     f"{i['rows_loaded']} loaded, {i['rows_rejected']} rejected; SHA-256 "
                     f"{i['sha256']}")))
    for name in DATA_TABLES:
        where = "" if in_workbook(tables[name]) else (
            f" Too long for a workbook a person opens (more than {WORKBOOK_ROWS:,} rows): "
            f"this table is in {name}.csv and {name}.parquet only.")
        rows.append((f"Sheet {name}", f"{len(tables[name])} rows. {TABLE_TEXT[name]}{where}"))
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
        ("Text categories", (f"Text values (clinic, indication, area, sex …) are kept where "
         f"they are a code (one word) or shared by at least {t} patients; anything else, which "
         f"could be a note about a person, is replaced by '{OTHER}'. adverse_event keeps only "
         f"the codes of its closed vocabulary (see data_dictionary), anything else is "
         f"'{OTHER}'. A value that holds a name, id, phone number, e-mail address or date of "
         f"the input is replaced too (a clinic by a code, site_ and 8 hex characters).")),
        ("Small cells", (f"In the compliance table counts of 1–{t - 1} are shown as '<{t}', and "
         f"cells that would let one work such a count out are shown as '{SECONDARY_MARK}'; "
         "percent and interval are left empty where their counts are hidden. Row-level tables "
         "are not aggregated and so not suppressed.")),
        ("Leak check", ("Before release every identifying value of the input (patient ids, "
         "names, clinician names, dates of birth, session and assessment dates, phone numbers, "
         "e-mail addresses, session ids, the key) was searched for in every file of the "
         "export, inside words too and whatever the case and separators; an export with a "
         "single hit is never released. Input files are named by their role and SHA-256, "
         "not by their names.")),
        ("Excel safety", ("A text cell that starts with = + - @ (also after blanks), a tab or "
         "a carriage return starts with an apostrophe, so no cell is run as a formula. Numbers "
         "are numbers.")),
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
             f"compliance sheets (a table of more than {WORKBOOK_ROWS:,} rows is in its CSV "
             "and Parquet files only, and README says so)")),
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

