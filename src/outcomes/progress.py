"""Progress for long work (loading big exports, running the report) on stderr.

Written by hand rather than adding a dependency: it is one small class. On a terminal
it redraws one bar line. Without one (a pipe, a log, a scheduler) a bar's carriage
returns would only make noise, so it draws nothing, or, for work whose steps take
seconds (the report), writes one plain line per finished step, so a log shows the run
is alive: `report: 3/7 02_protocol_compliance done (41 s)`.
"""

from __future__ import annotations

import sys
import time
from typing import Self, TextIO


class Progress:
    """Counts steps of a known total; a bar on a terminal, else (with `lines`) a line a step.

    `enabled` True draws the bar, False draws nothing, None (the default) draws the bar
    when the stream is a terminal and otherwise writes step lines if `lines` is set.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 enabled: bool | None = None, lines: bool = False) -> None:
        self.total = max(int(total), 1)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        tty = _isatty(self.stream)
        self.enabled = tty if enabled is None else enabled
        self.lines = enabled is None and not tty and lines
        self.started = self._last = time.perf_counter()
        self._draw("")

    def step(self, what: str = "", n: int = 1) -> None:
        """Mark n more steps done; `what` names the step now finished."""
        self.done = min(self.done + n, self.total)
        if self.lines:
            now = time.perf_counter()
            name = f" {what}" if what else ""
            self.stream.write(f"{self.label}: {self.done}/{self.total}{name} done "
                              f"({now - self._last:.0f} s)\n")
            self.stream.flush()
            self._last = now
        self._draw(what)

    def close(self) -> None:
        if self.enabled:
            self.done = self.total
            self._draw("done")
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, what: str) -> None:
        if not self.enabled:
            return
        width = 28
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.started
        line = (f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} {elapsed:5.1f}s {what}")
        self.stream.write(line[:100].ljust(100))
        self.stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False
