"""The audit: sessions and courses judged against a protocol's criteria.

`evaluate` runs it (run_audit → Audit), `summary` counts compliance, `records` lists
the verdicts with their source rows, `write` writes the files.
"""

from outcomes.audit.evaluate import Audit, run_audit
from outcomes.audit.records import RECORD_COLUMNS, flagged_records, verdict_records
from outcomes.audit.summary import (
    STATUS_TEXT,
    VerdictCube,
    compare,
    indicator_table,
    status_of,
    summarise,
)
from outcomes.audit.write import HOW_TO_READ, about_rows, write_audit
from outcomes.protocol import VERDICTS

__all__ = ["HOW_TO_READ", "RECORD_COLUMNS", "STATUS_TEXT", "VERDICTS", "Audit", "VerdictCube",
           "about_rows", "compare", "flagged_records", "indicator_table", "run_audit",
           "status_of", "summarise", "verdict_records", "write_audit"]
