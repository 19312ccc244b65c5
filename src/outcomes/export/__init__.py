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
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from outcomes import schema
from outcomes.courses import assign_courses, course_table
from outcomes.export.deidentify import (
    AGE_TOP,
    AGE_WIDTH,
    ALL_CLINICIANS,
    CODE,
    DATA_TABLES,
    DEFAULT_THRESHOLD,
    EXPORT_KIND,
    KEY_HOWTO,
    MANIFEST,
    MIN_KEY_BYTES,
    OTHER,
    OUTPUT_FILES,
    PSEUDONYM_CHARS,
    RENAMED,
    SECONDARY_MARK,
    TABLES,
    VOCABULARIES,
    WORKBOOK,
    _check_keep,
    _courses_table,
    _derive_ids,
    _how,
    _outcomes_table,
    _Plan,
    _sessions_table,
    _treat,
    age_band,
    closed_vocabulary,
    data_dictionary,
    generalise_text,
    pseudonym,
    pseudonymise,
    read_key,
    scrub_identifying_text,
    shift_dates,
    treatment_table,
)
from outcomes.export.leakcheck import (
    CHUNK,
    MIN_ANYWHERE,
    MIN_ANYWHERE_MIXED,
    MIN_WORD,
    Matcher,
    identifiers,
    leak_check,
    name_parts,
    own_texts,
)
from outcomes.export.suppression import (
    COMPLIANCE_COUNTS,
    COMPLIANCE_DERIVED,
    _compliance_doc,
    compliance_table,
    suppress_small_cells,
)
from outcomes.export.write import (
    TABLE_TEXT,
    _check_target,
    _normalise_xlsx,
    _readme,
    _write_csv,
    _write_parquet,
    describe_outputs,
    in_workbook,
)
from outcomes.files import clean_stale_temp, output_folder, private_dir, publish_dir, sha256
from outcomes.load import LoadError
from outcomes.report.workbook import write_workbook
from outcomes.safe import FORMULA_START, neutralise


def build_tables(dataset: Any, protocol: Any, key: bytes, keep: Sequence[str] = (),
                 threshold: int = DEFAULT_THRESHOLD, matcher: Matcher | None = None
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The de-identified tables (sessions, courses, outcomes, compliance, data_dictionary)
    and a record of what was done, without writing anything.

    `matcher`: the input's identifying values (default: built here); the export passes the
    one its leak check uses, so they are gathered once."""
    from outcomes.audit import run_audit

    _check_keep(dataset, keep)
    audit = run_audit(dataset.sessions.data, protocol, dataset.outcomes_data)
    plan = _Plan()
    # text categories that name a person of the input are replaced before anything is made
    # of them (course ids hold indication and area); adverse events keep only their codes
    sessions = dataset.sessions.data.copy()
    to_other: dict[str, int] = {}
    for name, vocabulary in VOCABULARIES.items():
        if name not in sessions.columns:
            continue
        sessions[name], to_other[name] = closed_vocabulary(sessions[name], vocabulary)
        if to_other[name]:
            plan.recoded.append({"table": "sessions", "field": name,
                                 "values_replaced": to_other[name],
                                 "rule": _treat("vocabulary", threshold)})
    if matcher is None:
        matcher = Matcher.build(identifiers(dataset), name_parts(dataset), own_texts(protocol))
    sessions = scrub_identifying_text(sessions, "sessions", matcher.find, key, plan)
    outcomes = dataset.outcomes_data
    if outcomes is not None:
        outcomes = scrub_identifying_text(outcomes, "outcomes", matcher.find, key, plan)
    as_of = sessions["session_date"].max() if len(sessions) else None
    s = assign_courses(sessions, protocol.new_course_after_days, as_of=as_of)
    anchor = s.groupby(s["patient_id"].astype("string"))["session_date"].min()
    # text categories are generalised before the course table takes them over
    text_fields = [f for f in schema.SESSIONS if f.role in ("site", "clinical", "demographic")
                   and f.type == "string"]
    s_gen = s
    for f in text_fields:
        s_gen = generalise_text(s_gen, f.name, "patient_id", threshold,
                                f.allowed or VOCABULARIES.get(f.name))
    s, c = _derive_ids(s, course_table(s_gen), key, anchor)
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
    for table, result in (("sessions", dataset.sessions), ("outcomes", dataset.outcomes)):
        several = result is not None and "sources" in result.data
        plan.removed.append({"table": table,
                             "field": "source_file, source_row" + ", sources" * several,
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
        "adverse_event_to_other": to_other.get("adverse_event", 0),
    }
    return tables, record


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
    out = output_folder(out_dir, "the output folder", replace=True)  # a link to a folder: followed
    _check_target(out)
    ids = identifiers(dataset, key)
    matcher = Matcher.build(ids, name_parts(dataset), own_texts(protocol))
    tables, record = build_tables(dataset, protocol, key, keep, threshold, matcher)
    plan: _Plan = record["plan"]
    files = dataset.files()
    comp = tables["compliance"].attrs.get("suppression", {})
    manifest: dict[str, Any] = {
        "export": EXPORT_KIND,
        "software": {"name": "outcomes", "version": __version__},
        "export_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "protocol": {"id": protocol.id, "version": protocol.version, "title": protocol.title},
        "inputs": [{"file": input_label(f.table, f.sha256), "table": f.table, "sha256": f.sha256,
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
            "decision": "adverse_event is a short code or description; a description (and a "
                        "one-word 'code' such as a name) can name a person, so only the codes of "
                        "a closed vocabulary are kept (case, blanks and dashes ignored) and any "
                        f"other value becomes '{OTHER}'.",
            "vocabulary": list(VOCABULARIES["adverse_event"]),
            "codes": record["adverse_event_codes"],
            "values_recoded_to_other": record["adverse_event_to_other"],
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
            "result": "pending",  # set to passed only after the check
            "searched": "every file of the export, cell by cell: CSV and Parquet cells, JSON "
                        "strings, the text and attributes of every XML member of the XLSX, "
                        "this manifest",
            "how": "values compared normalised: case-folded, separators removed, inside words "
                   f"too (values of {MIN_ANYWHERE}+ letters and digits, {MIN_ANYWHERE_MIXED}+ "
                   "for ids mixing both); dates in the usual spellings (YYYY-MM-DD, "
                   "DD.MM.YYYY, MM/DD/YYYY, YYYYMMDD, D Month YYYY …); phone numbers also as "
                   "digits",
            "fields": sorted(ids),
            "values_searched": matcher.searched,
            "values_too_short_to_search": matcher.too_short,
            "values_too_common_to_search": matcher.too_common,
            "name_words": f"single words ({MIN_WORD}+ letters) of names, and values of "
                          f"{MIN_WORD}–{MIN_ANYWHERE - 1} characters, searched as whole words in "
                          "the data tables",
        },
        "formula_safety": "text cells starting with = + - @, tab or carriage return start "
                          "with an apostrophe in CSV, Parquet and XLSX; numbers stay numbers",
        "reproducible": "the same inputs and key give byte-identical CSV, Parquet and XLSX "
                        "files (see files); only export_time differs",
        "files": {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temp(out)  # what an interrupted earlier run left
    tmp = private_dir(out)  # mode 0700: nobody else reads a half-made or unchecked export
    try:
        safe = {name: neutralise(df) for name, df in tables.items()}
        for name, df in safe.items():
            _write_csv(df, tmp / f"{name}.csv")
            _write_parquet(df, tmp / f"{name}.parquet")
        sheets = {"data_dictionary": safe["data_dictionary"],
                  **{n: safe[n] for n in DATA_TABLES if in_workbook(safe[n])}}
        write_workbook(tmp / WORKBOOK, _readme(tables, manifest), sheets)
        _normalise_xlsx(tmp / WORKBOOK)
        manifest["files"] = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
        _write_manifest(manifest, tmp / MANIFEST)
        made = _generated(tables, manifest)
        hits = leak_check(tmp, ids, generated=made, matcher=matcher)
        if hits:
            found = "; ".join(f"{col} in {file}" for file, col in hits)
            raise LoadError(f"leak check failed, the export was refused and nothing was "
                            f"written: identifying values found ({found})")
        manifest["leak_check"]["result"] = "passed"
        _write_manifest(manifest, tmp / MANIFEST)
        publish_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def input_label(table: str, digest: str) -> str:
    """An input file as its role and hash: `sessions export (sha256 3f2a1b2c3d4e…)`.

    The file's name is never written: clinics name exports after patients and practices.
    """
    return f"{table} export (sha256 {digest[:12]}…)"


def _write_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n",
                    encoding="utf-8")


def _generated(tables: Mapping[str, pd.DataFrame], manifest: Mapping[str, Any]) -> set[str]:
    """What the export made that may hold any digits: pseudonyms, codes, hashes, its time."""
    made = {str(manifest["export_time"]), *map(str, manifest["files"].values())}
    for i in manifest["inputs"]:
        made |= {i["sha256"], i["sha256"][:12]}
    for df in tables.values():
        for col in ("patient_pseudonym", "clinician_code"):
            if col in df.columns:
                made.update(str(v) for v in df[col].dropna().unique())
    return made


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


__all__ = ["ALL_CLINICIANS", "CHUNK", "CODE", "COMPLIANCE_COUNTS", "COMPLIANCE_DERIVED",
           "DATA_TABLES", "DEFAULT_THRESHOLD", "EXPORT_KIND", "FORMULA_START", "KEY_HOWTO",
           "MANIFEST", "MIN_KEY_BYTES", "OTHER", "OUTPUT_FILES", "PSEUDONYM_CHARS", "RENAMED",
           "SECONDARY_MARK", "TABLES", "TABLE_TEXT", "WORKBOOK", "age_band", "build_tables",
           "compliance_table", "data_dictionary", "describe_outputs", "export_text",
           "generalise_text", "identifiers", "leak_check", "name_parts", "pseudonym",
           "pseudonymise", "read_key", "research_export", "run_export_command", "sha256",
           "shift_dates", "suppress_small_cells", "treatment_table"]
