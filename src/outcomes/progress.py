"""A terminal progress bar for long work (loading big exports, running the report).

Written by hand rather than adding a dependency: it is one small class. It
draws only when stderr is a terminal, so logs, pipes and tests stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import Self, TextIO


class Progress:
    """Counts steps of a known total and redraws one line on stderr."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total = max(int(total), 1)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self._draw("")

    def step(self, what: str = "", n: int = 1) -> None:
        """Mark n more steps done; `what` names the step now finished."""
        self.done = min(self.done + n, self.total)
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
