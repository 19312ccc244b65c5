"""Progress on stderr: a bar on a terminal, one plain line a step without one."""

from __future__ import annotations

import io
import re

from outcomes.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_is_redrawn_in_place():
    out = Terminal()
    with Progress(3, "report", stream=out, lines=True) as bar:
        bar.step("00_scorecard")
        bar.step("02_protocol_compliance")
    text = out.getvalue()
    assert text.count("\r") >= 3 and "[" in text and "3/3" in text
    assert text.endswith("\n") and text.count("\n") == 1  # one line, redrawn


def test_without_a_terminal_one_line_per_finished_step():
    out = io.StringIO()  # a pipe or a log file: isatty() is False
    with Progress(6, "report", stream=out, lines=True) as bar:
        bar.step("audit.xlsx")
        bar.step("00_scorecard")
        bar.step("02_protocol_compliance")
    text = out.getvalue()
    assert "\r" not in text and "[" not in text
    lines = text.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"report: 3/6 02_protocol_compliance done \(\d+ s\)", lines[2])
    assert lines[0].startswith("report: 1/6 audit.xlsx done (")


def test_without_a_terminal_quiet_unless_asked_for_lines_or_disabled():
    quiet = io.StringIO()
    with Progress(4, "loading sessions.csv", stream=quiet) as bar:
        bar.step("read")
    assert quiet.getvalue() == ""
    off = Terminal()
    with Progress(4, "report", stream=off, enabled=False, lines=True) as bar:
        bar.step("read")
    assert off.getvalue() == ""
