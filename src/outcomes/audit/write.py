"""Write an audit: compliance.csv, verdicts.csv, flagged_sessions.csv and audit.xlsx.

Every table is neutralised (`outcomes.safe`) before it is written: a clinic's text such as
`=HYPERLINK(…)` in a session id, clinic or rejected value is shown, never run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from outcomes.audit.records import verdict_record_slices
from outcomes.protocol import describe

if TYPE_CHECKING:
    from outcomes.audit.evaluate import Audit

HOW_TO_READ = (
    "Compliant = the record follows the protocol line; deviation = it does not; not "
    "documented = a value the rule needs is missing (counted against compliance, shown "
    "apart). Percent with a Wilson 95 % interval. Status: met when the whole interval is at "
    "or above the target, not met when it is below, inconclusive when it spans the target; "
    "a 100 % target is met only with no miss.")


def about_rows(audit: Audit, files: pd.DataFrame | None = None) -> list[tuple[str, Any]]:
    """What data and protocol produced an audit: the first sheet of its workbook."""
    from outcomes import __version__

    p = audit.protocol
    rows: list[tuple[str, Any]] = [
        ("What this is", f"Protocol compliance audit: {p.title}"),
        ("Protocol", f"{p.id} version {p.version} ({p.source})"),
        ("Data run to", audit.info.get("as_of")),
        ("Sessions audited", audit.info.get("sessions_audited")),
        ("Sessions not audited", (f"{audit.info.get('sessions_excluded')} (indication other "
                                  f"than {p.indication})")),
        ("Courses", (f"{audit.info.get('courses')} ({audit.info.get('courses_completed')} "
                     "completed)")),
        ("Outcome data", ("yes" if audit.has_outcomes else
                          "none given: final_assessment is not evaluated")),
        ("Software", f"outcomes {__version__}"),
        ("Generated", pd.Timestamp.now().strftime("%Y-%m-%d %H:%M")),
        ("How to read", HOW_TO_READ),
    ]
    if files is not None:
        for f in files.itertuples():
            rows.append((f"Input: {f.table}", (f"{f.file}: {f.rows_read} rows read, "
                                               f"{f.rows_loaded} loaded, {f.rows_rejected} "
                                               f"rejected; SHA-256 {f.sha256}")))
    return rows


def _csv_in_slices(slices: Iterable[pd.DataFrame], path: Path) -> None:
    """One CSV from consecutive slices of a table, the header once: the file
    `neutralise(whole).to_csv(path, index=False)` would write."""
    from outcomes.safe import neutralise

    with open(path, "w", encoding="utf-8", newline="") as fh:
        for i, part in enumerate(slices):
            neutralise(part).to_csv(fh, index=False, header=i == 0)


#: The flagged records a workbook holds: the most recent ones. Excel is for reading and
#: filtering what a meeting discusses; the full list is flagged_sessions.csv (writing a
#: row to a workbook costs about 0.4 ms: 170,000 flagged records at 100k sessions took
#: 74 s).
FLAGGED_IN_WORKBOOK = 10_000


def flagged_sheet(flagged: pd.DataFrame, most: int = FLAGGED_IN_WORKBOOK) -> Any:
    """The flagged records for the workbook: all of them, or the `most` most recent
    (still in date order) with a line saying so and where the rest are."""
    from outcomes.report.workbook import Sheet

    if len(flagged) <= most:
        return Sheet(flagged)
    return Sheet(flagged.iloc[len(flagged) - most:].reset_index(drop=True),
                 note=(f"The {most:,} most recent of {len(flagged):,} flagged records. "
                       "All of them are in flagged_sessions.csv."))


def write_audit(audit: Audit, out_dir: str | Path, files: pd.DataFrame | None = None,
                comparison: pd.DataFrame | None = None, csv: bool = True,
                rejections: pd.DataFrame | None = None) -> dict[str, Path]:
    """audit.xlsx in out_dir, and (with csv) compliance.csv, verdicts.csv, flagged_sessions.csv.

    The full verdict table goes to CSV only: it can outgrow what Excel opens.
    """
    from outcomes.files import write_atomic
    from outcomes.report.workbook import Sheet, write_workbook

    def csv_of(table: pd.DataFrame | Iterable[pd.DataFrame]) -> Any:
        parts = [table] if isinstance(table, pd.DataFrame) else table
        return lambda tmp: _csv_in_slices(parts, tmp)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = audit.summary()
    flagged = audit.flagged()
    paths: dict[str, Path] = {}
    if csv:
        paths["compliance"] = write_atomic(out / "compliance.csv", csv_of(summary))
        paths["verdicts"] = write_atomic(out / "verdicts.csv",
                                         csv_of(verdict_record_slices(audit)))
        paths["flagged_sessions"] = write_atomic(out / "flagged_sessions.csv", csv_of(flagged))
        if rejections is not None:
            paths["rejected_rows"] = write_atomic(out / "rejected_rows.csv", csv_of(rejections))
    indicators = audit.indicators()  # a median keeps its unit; only shares are percents
    sheets = {"Compliance": summary, "By clinician": audit.summary("operator"),
              "By clinic": audit.summary("clinic"),
              "By month": audit.summary("month").assign(month=lambda d: d["month"].astype(str)),
              "Flagged sessions": flagged_sheet(flagged),
              "Indicators": Sheet(indicators, percent_columns=("value", "ci_low", "ci_high"),
                                  percent_rows=(indicators["statistic"] == "percent yes")
                                  .tolist()),
              **({"Rejected rows": rejections} if rejections is not None else {}),
              "Protocol": pd.DataFrame(describe(audit.protocol))}
    if comparison is not None:
        sheets = {"Re-audit": comparison, **sheets}
    paths["workbook"] = write_workbook(out / "audit.xlsx", about_rows(audit, files), sheets,
                                       human_headers=True)
    return paths

