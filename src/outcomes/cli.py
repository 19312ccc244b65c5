"""The `outcomes` command line: validate, audit, report, export, sample.

Exit 0 on success, 1 when the input cannot be used, 2 on a usage error. Errors
are one sentence on stderr, never a traceback (set OUTCOMES_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outcomes import __version__
from outcomes.errors import LoadError, OutcomesError
from outcomes.files import (
    OutputError,
    locked,
    output_folder,
    refuse_inputs_inside,
    refuse_overwriting_inputs,
    write_atomic,
)
from outcomes.report.notebooks import NotebookError

OUT_RULES = ("a symbolic link to a folder is followed (written into the folder it points to); "
             "a file, a link to anything else or a read-only folder is refused")
AUDIT_OUTPUTS = ("compliance.csv", "verdicts.csv", "flagged_sessions.csv", "rejected_rows.csv",
                 "audit.xlsx")


def _flat(*paths: str | list[str] | None) -> list[str | None]:
    """Arguments that may be repeated (SESSIONS…, --outcomes), as one list."""
    return [q for p in paths for q in (p if isinstance(p, list) else [p])]


def _inputs(*paths: str | list[str] | None) -> list[str]:
    """Input files of a command, with the mapping files beside them."""
    given = [p for p in _flat(*paths) if p and Path(p).exists()]  # a protocol id is not a file
    beside = [str(m) for m in map(mapping_beside, given) if m is not None]
    return given + beside


def _write_failed(what: str, exc: OSError) -> OutputError:
    return OutputError(f"{what} could not be written ({exc.strerror or exc}); check that the "
                       "folder exists and is writable")

if TYPE_CHECKING:  # pandas and the loader take seconds to import: each command imports them
    import pandas as pd  # after its arguments are checked, and --help never does

    from outcomes.load import LoadResult


class UsageError(Exception):
    """The command was called wrongly (exit 2)."""


def mapping_beside(path: str | Path) -> Path | None:
    """`outcomes.load.mapping_beside`, imported when first needed."""
    from outcomes.load import mapping_beside as beside

    return beside(path)


def _must_exist(*files: str | list[str] | None, folder: str | None = None) -> None:
    """Name a missing input at once, before the seconds that pandas takes to import."""
    if folder is not None and not Path(folder).exists():
        raise LoadError(f"data folder {folder} does not exist")
    for f in _flat(*files):
        if f is not None and not Path(f).exists():
            raise LoadError(f"{f} does not exist")


def _protocol_must_exist(protocol: str) -> None:
    if protocol.endswith(".toml") and not Path(protocol).exists():
        raise LoadError(f"protocol file {protocol} does not exist")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="outcomes",
        description="Audit a fractional-laser treatment protocol and track patient outcomes.")
    p.add_argument("--version", action="version", version=f"outcomes {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="load exports and report row accounting and problems")
    v.add_argument("files", nargs="+", metavar="FILE",
                   help="one or more exports (csv, xlsx, parquet); sessions and outcomes may "
                   "be checked together")
    v.add_argument("--mapping", metavar="M",
                   help="mapping file (default: NAME.mapping.toml beside a file)")
    v.add_argument("--rejects", metavar="OUT.csv", help="write the rejection log here")
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    s = sub.add_parser("sample", help="write a synthetic export of that size")
    s.add_argument("--patients", type=int, default=300, metavar="N",
                   help="number of synthetic patients (default 300)")
    s.add_argument("--seed", type=int, default=1, metavar="S",
                   help="random seed; the same seed gives the same files (default 1)")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write sessions.csv and outcomes.csv into")
    s.add_argument("--xlsx", action="store_true",
                   help="also write the sessions as a German XLSX with its mapping (DIR/de/)")
    a = sub.add_parser("audit", help="compliance with the protocol and the flagged sessions")
    a.add_argument("sessions", metavar="SESSIONS", nargs="+",
                   help="one or more sessions exports (csv, xlsx, parquet): periods, sites, "
                   "the device log and the notes are combined into one data set")
    a.add_argument("--outcomes", metavar="F", action="append",
                   help="outcomes export (for the outcome-assessment criteria and outcomes); "
                   "repeat for several")
    a.add_argument("--mapping", metavar="M",
                   help="mapping file for every sessions export (default: each one's beside it)")
    a.add_argument("--outcomes-mapping", metavar="M",
                   help="mapping file for every outcomes export (default: each one's beside it)")
    a.add_argument("--protocol", default="flexsys-hair-regrowth", metavar="ID_OR_FILE",
                   help="a shipped protocol id or a protocol .toml file "
                   "(default: flexsys-hair-regrowth)")
    a.add_argument("--out", metavar="DIR",
                   help="write compliance.csv, verdicts.csv, flagged_sessions.csv, audit.xlsx "
                        "(and rejected_rows.csv) into DIR; " + OUT_RULES
                        + "; refused if an output would replace an input file")
    a.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    a.add_argument("--since", metavar="DATE", help="only sessions (course ends) from this date")
    a.add_argument("--until", metavar="DATE", help="only sessions (course ends) up to this date")
    a.add_argument("--split", metavar="DATE",
                   help="re-audit: compare the periods before and from this date")
    a.add_argument("--compare-to", metavar="EARLIER",
                   help="re-audit: compare with an earlier export of sessions (same mapping)")

    e = sub.add_parser("export", help="de-identified research export")
    e.add_argument("sessions", metavar="SESSIONS", nargs="+",
                   help="one or more sessions exports (csv, xlsx, parquet), combined into one "
                   "data set")
    e.add_argument("--outcomes", metavar="F", action="append",
                   help="the outcomes export; repeat for several")
    e.add_argument("--mapping", metavar="M",
                   help="mapping file for every sessions export (default: each one's beside it)")
    e.add_argument("--outcomes-mapping", metavar="M",
                   help="mapping file for every outcomes export (default: each one's beside it)")
    e.add_argument("--key-file", metavar="K", default=None,
                   help="secret key (32+ bytes) for the pseudonyms; never written to the output")
    e.add_argument("--out", required=True, metavar="DIR",
                   help="the export folder, new, empty or a previous export (replaced whole); "
                        + OUT_RULES)
    e.add_argument("--keep", action="append", default=[], metavar="COLUMN",
                   help="keep this column that the schema does not know (repeatable)")
    e.add_argument("--threshold", type=int, default=8, metavar="N",
                   help="counts 1..N-1 in aggregate tables are shown as <N (default 8)")
    e.add_argument("--protocol", default="flexsys-hair-regrowth", metavar="ID_OR_FILE",
                   help="protocol for the export's compliance table: a shipped id or a .toml "
                   "file (default: flexsys-hair-regrowth)")

    r = sub.add_parser("report", help="write the meeting pack: report.html, report.pdf, "
                       "audit.xlsx")
    r.add_argument("data_dir", nargs="?", default=None, metavar="DATA_DIR",
                   help="folder of sessions* (and outcomes*) exports, each with an optional "
                   "NAME.mapping.toml beside it; several are combined into one data set "
                   "(default: the bundled sample data)")
    r.add_argument("--protocol", default="flexsys-hair-regrowth", metavar="ID_OR_FILE",
                   help="a shipped protocol id or a protocol .toml file "
                   "(default: flexsys-hair-regrowth)")
    r.add_argument("--out", default="report", metavar="DIR",
                   help="folder to write the report into (default: report); " + OUT_RULES)
    r.add_argument("--period", default="quarter", choices=["quarter", "month", "year"],
                   help="the scorecard compares the latest period with the one before "
                   "(default: quarter)")
    for command in (v, s, a, e, r):  # a mistyped flag is answered with its command's usage
        command.set_defaults(command_parser=command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            given = list(sys.argv[1:] if argv is None else argv)
            before = given[:given.index(args.command)] if args.command in given else []
            # a stray flag before the command is the top level's; after it, the command's
            wrong = parser if any(x in before for x in extra) else args.command_parser
            wrong.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"outcomes {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OutcomesError, NotebookError) as exc:
        print(f"outcomes {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("outcomes: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 — the contract: one sentence, never a traceback
        if os.environ.get("OUTCOMES_DEBUG"):
            traceback.print_exc()
        print(f"outcomes {args.command}: unexpected error ({type(exc).__name__}: {exc}); "
              "set OUTCOMES_DEBUG=1 for details", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------
# validate


def _reason_kind(reason: str) -> str:
    """Group rejection reasons that differ only by row numbers (`duplicate of row N`)."""
    from outcomes.load import reason_kind

    return reason_kind(reason)


def _check_rejects_target(rejects: str, files: list[str], mapping: str | None) -> None:
    """The rejection log never replaces an input (export or mapping) and is a file."""
    out = Path(rejects)
    if out.is_dir():
        raise LoadError(f"--rejects {out} is a folder; give a file name, such as "
                        f"{out / 'rejects.csv'}")
    inputs = [Path(f) for f in files] + ([Path(mapping)] if mapping else [])
    inputs += [p for p in map(mapping_beside, files) if p is not None]
    if out.exists() and any(p.exists() and out.samefile(p) for p in inputs):
        raise LoadError(f"--rejects {out} is one of the input files, which are never "
                        "overwritten; give another file name")


def cmd_validate(args: argparse.Namespace) -> int:
    _must_exist(*args.files, args.mapping)
    import pandas as pd

    from outcomes.load import load, read_mapping

    if args.rejects:
        _check_rejects_target(args.rejects, args.files, args.mapping)
    mapping = read_mapping(args.mapping) if args.mapping else None
    results = [load(f, mapping=mapping, progress=None if not args.json else False)
               for f in args.files]
    results, combined = _combined(results)
    if args.rejects:  # one log over all files: sessions and outcomes may be checked together
        rejections = pd.concat([r.rejections for r in results], ignore_index=True)
        from outcomes.safe import neutralise

        safe = neutralise(rejections)  # a raw value such as =HYPERLINK(…) is shown, not run
        try:
            write_atomic(Path(args.rejects), lambda tmp: safe.to_csv(tmp, index=False))
        except OSError as exc:
            raise _write_failed(f"--rejects {args.rejects}", exc) from None
    if args.json:
        out = validate_json(results)
        out["combined"] = [{"table": c.table, "files": len(c.file.split(", ")),
                            "rows_used": c.rows_loaded, "rows": len(c.data)} for c in combined]
        print(json.dumps(out, ensure_ascii=False, default=str))
    else:
        print(validate_text(results, args.rejects))
        for c in combined:
            unit = "sessions" if c.table == "sessions" else "assessments"
            print(f"{len(c.file.split(', '))} {c.table} exports combined: "
                  f"{c.rows_loaded:,} rows used make {len(c.data):,} {unit} (repeats and "
                  "conflicts between the files are rejected above)")
    problems = [p for p in (r.unusable() for r in results) if p]
    for p in problems:  # the accounting above says which rows; this says the file is unusable
        print(f"outcomes validate: {p}", file=sys.stderr)
    return 1 if problems else 0


def _combined(results: list[LoadResult]) -> tuple[list[LoadResult], list[LoadResult]]:
    """Several exports of one table are checked as the audit combines them: each file's
    result with the repeats and conflicts between the files, and the combined tables."""
    from outcomes.combine import combine

    by_table: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        by_table.setdefault(r.table, []).append(i)
    results = list(results)
    combined = []
    for at in by_table.values():
        if len(at) < 2:
            continue
        c = combine([results[i] for i in at])
        for i, f in zip(at, c.files, strict=True):
            results[i] = f
        combined.append(c.result)
    return results, combined


def validate_json(results: list[LoadResult]) -> dict[str, Any]:
    """The `validate --json` object (contract keys first), summed over the files."""
    import pandas as pd

    rej = pd.concat([r.rejections for r in results], ignore_index=True)
    warnings = pd.concat([r.warnings for r in results], ignore_index=True)
    return {
        "rows_read": sum(r.rows_read for r in results),
        "rows_loaded": sum(r.rows_loaded for r in results),
        "rows_rejected": sum(r.rows_rejected for r in results),
        "warnings": len(warnings),
        "unknown_columns": list(dict.fromkeys(c for r in results for c in r.unknown_columns)),
        "rejections": rej.astype({"row": "int64"}).to_dict(orient="records"),
        "warnings_by_kind": warnings.groupby("kind").size().to_dict() if len(warnings) else {},
        "warning_list": warnings.astype({"row": "int64"}).to_dict(orient="records"),
        "files": [r.summary() for r in results],
    }


def validate_text(results: list[LoadResult], rejects: str | None) -> str:
    """A readable summary per file: counts, rejections and warnings by kind, unknown columns."""
    lines: list[str] = []
    for r in results:
        lines.append(f"{r.file} ({r.table}): {r.rows_read:,} rows read, {r.rows_loaded:,} "
                     f"loaded, {r.rows_rejected:,} rejected, {len(r.warnings):,} warnings")
        if len(r.rejections):
            lines.append("  rejected rows by reason:")
            from outcomes.load import reason_label

            kinds = r.rejections.assign(kind=r.rejections["reason"].map(_reason_kind))
            for (fname, _kind), grp in kinds.groupby(["field", "kind"], sort=False):
                rows = ", ".join(str(x) for x in grp["row"].head(5))
                more = f" and {len(grp) - 5} more" if len(grp) > 5 else ""
                lines.append(f"    {len(grp):>6}  {fname}: {reason_label(grp['reason'])} "
                             f"(rows {rows}{more})")
        if len(r.warnings):
            lines.append("  warnings (values kept as they are):")
            for (fname, _kind), grp in r.warnings.groupby(["field", "kind"], sort=False):
                rows = ", ".join(str(x) for x in grp["row"].head(5))
                more = f" and {len(grp) - 5} more" if len(grp) > 5 else ""
                lines.append(f"    {len(grp):>6}  {grp['message'].iloc[0]} (rows {rows}{more})")
        if r.unknown_columns:
            lines.append("  columns not in the schema (kept aside, not used): "
                         + ", ".join(r.unknown_columns))
        if r.absent_fields:
            lines.append("  fields the export does not have: " + ", ".join(r.absent_fields))
    if any(len(r.rejections) for r in results):
        lines.append(f"rejection log written to {rejects}" if rejects else
                     "write the rejection log with --rejects FILE.csv")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# sample


def cmd_sample(args: argparse.Namespace) -> int:
    from outcomes.sample import write_sample

    if args.patients < 1:
        raise UsageError("--patients must be at least 1")
    paths = write_sample(args.out, patients=args.patients, seed=args.seed,
                         german_xlsx=args.xlsx)
    for p in paths.values():
        print(p)
    return 0


def _date_arg(value: str | None, flag: str) -> pd.Timestamp | None:
    if value is None:
        return None
    import pandas as pd

    try:
        return pd.Timestamp(dt.date.fromisoformat(value))
    except ValueError:
        raise UsageError(f"{flag} takes a date as YYYY-MM-DD, not {value!r}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    _must_exist(args.sessions, args.outcomes, args.mapping, args.outcomes_mapping,
                args.compare_to)
    _protocol_must_exist(args.protocol)
    from outcomes.audit import compare, run_audit, write_audit
    from outcomes.audit.reaudit import compare_exports
    from outcomes.dataset import load_inputs
    from outcomes.protocol import load_protocol

    since, until = _date_arg(args.since, "--since"), _date_arg(args.until, "--until")
    split = _date_arg(args.split, "--split")
    if split is not None and args.compare_to:
        raise UsageError("use either --split or --compare-to, not both")
    out = None
    if args.out:  # checked before anything is read: a mistake costs no waiting
        out = output_folder(args.out, "--out")
        refuse_overwriting_inputs([out / n for n in AUDIT_OUTPUTS],
                                  _inputs(args.sessions, args.outcomes, args.mapping,
                                          args.outcomes_mapping, args.compare_to,
                                          args.protocol))
    protocol = load_protocol(args.protocol)
    quiet = True if args.json else None
    ds = load_inputs(args.sessions, args.outcomes, args.mapping, args.outcomes_mapping,
                     progress=False if quiet else None)
    audit = run_audit(ds.sessions.data, protocol, ds.outcomes_data)
    if nothing := audit.nothing_audited():
        raise LoadError(f"{', '.join(Path(f).name for f in args.sessions)}: {nothing}")
    verdicts = audit.period(args.since, args.until) if (since or until) else audit.verdicts
    summary = audit.summary_of(verdicts)
    comparison = None
    if split is not None:
        before = audit.summary_of(verdicts[verdicts["date"] < split])
        after = audit.summary_of(verdicts[verdicts["date"] >= split])
        comparison = compare(before, after)
    elif args.compare_to:
        earlier = load_inputs(args.compare_to, None, args.mapping, progress=False if quiet
                              else None)
        before_audit = run_audit(earlier.sessions.data, protocol, ds.outcomes_data)
        comparison, about = compare_exports(audit, before_audit,
                                            ", ".join(Path(f).name for f in args.sessions),
                                            Path(args.compare_to).name)
        comparison = comparison.assign(**about)
    if out is not None:
        try:
            with locked(out):
                write_audit(audit, out, ds.files(), comparison, rejections=ds.rejections())
        except OSError as exc:
            raise _write_failed(f"--out {args.out}", exc) from None
    if args.json:
        print(json.dumps(audit_json(audit, summary, ds, comparison), ensure_ascii=False,
                         default=str, allow_nan=False))
    else:
        print(audit_text(audit, summary, ds, comparison, args.out))
    return 0


def _nan_to_none(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in records]


def audit_json(audit: Any, summary: pd.DataFrame, ds: Any,
               comparison: pd.DataFrame | None) -> dict[str, Any]:
    """The `audit --json` object: `criteria` with the contract keys, then context."""
    cols = ["id", "title", "eligible", "compliant", "percent", "ci_low", "ci_high", "target",
            "status", "missing", "deviations", "not_applicable", "design_effect",
            "ci_low_clustered", "ci_high_clustered"]
    crit = summary.rename(columns={"criterion": "id"})[cols]
    out: dict[str, Any] = {
        "protocol": {"id": audit.protocol.id, "version": audit.protocol.version},
        "criteria": _nan_to_none(_frame_records(crit)),
        "indicators": _nan_to_none(_frame_records(audit.indicators())),
        "flagged": len(audit.flagged()),
        "info": audit.info,
        "inputs": [r.summary() for r in ds.results()],
    }
    from outcomes.analysis import outcomes_json

    out["outcomes"] = outcomes_json(audit, ds.outcomes_data)
    if comparison is not None:
        out["comparison"] = _nan_to_none(_frame_records(comparison))
    return out


def _pct(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:5.1f}%"


def audit_text(audit: Any, summary: pd.DataFrame, ds: Any, comparison: pd.DataFrame | None,
               out: str | None) -> str:
    """A readable terminal table: criterion, n, %, interval, target, status."""
    p = audit.protocol
    info = audit.info
    folder = f"{Path(out)}{os.sep}" if out else None  # audit/ and audit name one folder
    lines = [f"{p.title} (protocol {p.id} v{p.version})",
             (f"{info['sessions_audited']:,} sessions in {info['courses']:,} courses "
              f"({info['courses_completed']:,} completed), data to {info['as_of']}")]
    for r in ds.results():  # rows that never reached the audit are said, not hidden
        if r.rows_rejected:
            lines.append(f"{Path(r.file).name}: {r.rows_read:,} rows read, {r.rows_loaded:,} "
                         f"loaded, {r.rows_rejected:,} rejected and not audited "
                         + (f"(listed in {folder}rejected_rows.csv)" if folder else
                            "(see rejected_rows.csv with --out, or outcomes validate)"))
    if info["sessions_excluded"]:
        lines.append(f"{info['sessions_excluded']:,} sessions for other indications not audited")
    lines.append("")
    lines.append(f"{'criterion':<22}{'n':>7}{'%':>8}  {'95% CI':<15}{'target':>7}  "
                 f"{'status':<13}{'not documented':>15}")
    for r in summary.itertuples():
        ci = "" if math.isnan(r.ci_low) else f"{r.ci_low:4.1f}–{r.ci_high:4.1f}"
        lines.append(f"{r.criterion:<22}{r.eligible:>7,}{_pct(r.percent):>8}  {ci:<15}"
                     f"{r.target:>6.0f}%  {r.status:<13}{r.missing:>15,}")
    if not audit.has_outcomes:
        lines.append("(no outcomes export given: the outcome-assessment criteria are not "
                     "evaluated)")
    if comparison is not None:
        lines.append("")
        if "before_file" in comparison:
            c0 = comparison.iloc[0]
            lines.append(f"re-audit: before = {c0['before_file']} ({c0['before_period']}, "
                         f"{c0['before_sessions']:,} sessions); after = the "
                         f"{c0['after_sessions']:,} sessions of {c0['after_file']} that the "
                         f"earlier export did not have ({c0['after_period']}); "
                         f"{c0['shared_sessions']:,} sessions in both are counted once")
        lines.append(f"{'re-audit':<22}{'before':>8}{'after':>8}  {'change (95% CI)':<24}"
                     "verdict")
        for r in comparison.itertuples():
            ci = "" if math.isnan(r.diff_ci_low) else (
                f"{r.difference:+5.1f} ({r.diff_ci_low:+.1f} to {r.diff_ci_high:+.1f})")
            lines.append(f"{r.criterion:<22}{_pct(r.before_percent):>8}"
                         f"{_pct(r.after_percent):>8}  {ci:<24}{r.change}")
    lines.append("")
    lines.append(f"{len(audit.flagged()):,} flagged records (deviations and documentation gaps)"
                 + (f"; tables written to {folder}" if folder else
                    "; write them with --out DIR"))
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    _must_exist(args.sessions, args.outcomes, args.mapping, args.outcomes_mapping)
    _protocol_must_exist(args.protocol)
    from outcomes.export import export_text, run_export_command

    if args.threshold < 2:
        raise UsageError("--threshold must be at least 2")
    out = output_folder(args.out, "--out", replace=True)  # the folder is replaced whole
    refuse_inputs_inside(out, _inputs(args.sessions, args.outcomes, args.mapping,
                                      args.outcomes_mapping, args.protocol))
    try:
        with locked(out):
            manifest = run_export_command(args.sessions, args.outcomes, args.mapping,
                                          args.outcomes_mapping, args.key_file, out, args.keep,
                                          args.threshold, args.protocol)
    except OSError as exc:
        raise _write_failed(f"--out {args.out}", exc) from None
    print(export_text(manifest, args.out))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _must_exist(folder=args.data_dir)
    _protocol_must_exist(args.protocol)
    from outcomes.report.html import build_report
    from outcomes.study import SAMPLE

    output_folder(args.out, "--out")
    with locked(args.out):  # a second report into the same folder waits its turn: refused
        result = build_report(args.data_dir or SAMPLE, args.protocol, args.out,
                              period=args.period)
    print(f"report written to {result.html}")
    if result.pdf is not None:
        print(f"PDF written to {result.pdf}")
    print(f"workbook written to {result.workbook}")
    pages = [p for p in result.clinicians if p.suffix == ".html"]
    print(f"{len(pages)} clinician feedback page(s) written to {Path(args.out) / 'clinicians'}")
    print(f"({result.timings['total']:.1f} s)")
    return 0


COMMANDS = {"validate": cmd_validate, "sample": cmd_sample, "report": cmd_report,
            "audit": cmd_audit, "export": cmd_export}


def _frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records", date_format="iso"))


if __name__ == "__main__":
    sys.exit(main())
