"""The meeting pack: the notebooks run into one HTML report (`html`), its PDF, the
scorecard, the clinicians' feedback pages, the findings in words (`text`), the tables
as people read them (`display`) and the Excel workbook (`workbook`)."""

from __future__ import annotations

from typing import Any

__all__ = ["ReportResult", "build_report"]


def __getattr__(name: str) -> Any:
    """`build_report` loads pandas and the notebooks' machinery: only when asked for, so the
    command line answers a usage error before those imports."""
    if name in __all__:
        from outcomes.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'outcomes.report' has no attribute {name!r}")
