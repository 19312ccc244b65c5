"""The `outcomes` command line: validate, audit, report, export, sample.

Exit 0 on success, 1 when the input cannot be used, 2 on a usage error. Errors
are one sentence on stderr, never a traceback (set OUTCOMES_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from outcomes import __version__
from outcomes.files import write_atomic
from outcomes.load import LoadError, LoadResult, combine, load, read_mapping


class UsageError(Exception):
    """The command was called wrongly (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="outcomes",
        description="Audit a fractional-laser treatment protocol and track patient outcomes.")
    p.add_argument("--version", action="version", version=f"outcomes {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="load exports and report row accounting and problems")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--mapping", help="mapping file (default: NAME.mapping.toml beside a file)")
    v.add_argument("--rejects", metavar="OUT.csv", help="write the rejection log here")
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    s = sub.add_parser("sample", help="write a synthetic export of that size")
    s.add_argument("--patients", type=int, default=300)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--xlsx", action="store_true",
                   help="also write the sessions as a German XLSX with its mapping (DIR/de/)")
    r = sub.add_parser("report", help="run the notebooks and write report.html and audit.xlsx")
    r.add_argument("data_dir", nargs="?", default="data/sample", metavar="DATA_DIR")
    r.add_argument("--protocol", default="flexsys-hair-regrowth", metavar="ID_OR_FILE")
    r.add_argument("--out", default="report", metavar="DIR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"outcomes {args.command}: {exc}", file=sys.stderr)
        return 2
    except LoadError as exc:
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
    """Group rejection reasons that differ only by row numbers."""
    return re.sub(r" (of|on) row \d+", "", reason)


def cmd_validate(args: argparse.Namespace) -> int:
    mapping = read_mapping(args.mapping) if args.mapping else None
    results = [load(f, mapping=mapping, progress=None if not args.json else False)
               for f in args.files]
    total = combine(results) if len(results) > 1 else results[0]
    if args.rejects:
        out = Path(args.rejects)
        write_atomic(out, lambda tmp: total.rejections.to_csv(tmp, index=False))
    if args.json:
        print(json.dumps(validate_json(results, total), ensure_ascii=False, default=str))
    else:
        print(validate_text(results, args.rejects))
    return 0


def validate_json(results: list[LoadResult], total: LoadResult) -> dict[str, Any]:
    """The `validate --json` object (contract keys first)."""
    rej = total.rejections.astype({"row": "int64"})
    return {
        "rows_read": total.rows_read,
        "rows_loaded": sum(r.rows_loaded for r in results),
        "rows_rejected": sum(r.rows_rejected for r in results),
        "warnings": len(total.warnings),
        "unknown_columns": total.unknown_columns,
        "rejections": rej.to_dict(orient="records"),
        "warnings_by_kind": total.warnings.groupby("kind").size().to_dict()
        if len(total.warnings) else {},
        "warning_list": total.warnings.astype({"row": "int64"}).to_dict(orient="records"),
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
            kinds = r.rejections.assign(kind=r.rejections["reason"].map(_reason_kind))
            for (fname, kind), grp in kinds.groupby(["field", "kind"], sort=False):
                rows = ", ".join(str(x) for x in grp["row"].head(5))
                more = f" and {len(grp) - 5} more" if len(grp) > 5 else ""
                lines.append(f"    {len(grp):>6}  {fname}: {kind} (rows {rows}{more})")
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


def cmd_report(args: argparse.Namespace) -> int:
    print("outcomes report: not yet available (the report lands with the report issue); "
          f"try: outcomes validate {args.data_dir}/sessions.csv")
    return 0


COMMANDS = {"validate": cmd_validate, "sample": cmd_sample, "report": cmd_report}


def _frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records", date_format="iso"))


if __name__ == "__main__":
    sys.exit(main())
