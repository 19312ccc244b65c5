"""The meeting pack: the notebooks run into one HTML report (`html`), its PDF, the
scorecard, the clinicians' feedback pages, the findings in words (`text`), the tables
as people read them (`display`) and the Excel workbook (`workbook`)."""

from outcomes.report.html import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
