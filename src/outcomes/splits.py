"""One export written as several: by overlapping periods, and by columns.

The worked example `data/sample/multi/` is made from the sample this way, and the tests
and the benchmark of the combination (`outcomes.combine`) use it to check that the split
exports give exactly the audit of the single one. Cells are copied as text, so nothing
changes on the way but what a split asks for (another delimiter, date form or decimal
mark for a device log in another language).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from outcomes.files import write_atomic
from outcomes.load import load

Rows = list[list[str]]


@dataclass(frozen=True, repr=False)
class Export:
    """A CSV export as text: its header and its records."""

    header: list[str]
    rows: Rows

    def __repr__(self) -> str:
        return f"Export({len(self.header)} columns, {len(self.rows)} rows)"

    @classmethod
    def read(cls, path: str | Path, clean: bool = False) -> Export:
        """Read a CSV export; with `clean`, only the records the loader loads."""
        with Path(path).open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows, lines = [], []
            start = reader.line_num + 1
            for rec in reader:
                rows.append(rec)
                lines.append(start)
                start = reader.line_num + 1
        if clean:
            rejected = set(load(path, progress=False).rejections["row"].astype(int))
            rows = [r for r, line in zip(rows, lines, strict=True) if line not in rejected]
        return cls(header, rows)

    def column(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [r[i] for r in self.rows]

    def only(self, columns: Sequence[str]) -> Export:
        """The export with these columns only, in this order."""
        at = [self.header.index(c) for c in columns]
        return Export([self.header[i] for i in at], [[r[i] for i in at] for r in self.rows])

    def where(self, keep: Callable[[list[str]], bool]) -> Export:
        return Export(self.header, [r for r in self.rows if keep(r)])

    def write(self, path: str | Path, delimiter: str = ",") -> Path:
        def dump(tmp: Path) -> None:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
                w.writerow(self.header)
                w.writerows(self.rows)

        return write_atomic(Path(path), dump)


def by_period(export: Export, windows: Sequence[tuple[dt.date, dt.date]],
              date_column: str = "session_date") -> list[Export]:
    """One export per window (first and last day, inclusive); windows may overlap, so
    a record can be in several. Records without a readable ISO date go to the first."""
    i = export.header.index(date_column)

    def day(r: list[str]) -> dt.date | None:
        try:
            return dt.date.fromisoformat(r[i].strip())
        except ValueError:
            return None

    parts = []
    for k, (first, last) in enumerate(windows):
        parts.append(export.where(lambda r, a=first, b=last, k=k: (
            a <= d <= b if (d := day(r)) is not None else k == 0)))
    return parts


def by_columns(export: Export, parts: Sequence[Sequence[str]]) -> list[Export]:
    """One export per group of columns (each should hold the identifying columns)."""
    return [export.only(p) for p in parts]


NUMBER = re.compile(r"-?\d+\.\d+")


def localised(export: Export, headers: dict[str, str], date_columns: Sequence[str],
              number_columns: Sequence[str]) -> Export:
    """The export as another language's software writes it: its own headers, dates as
    dd.mm.yyyy and a decimal comma (values that are not dates or numbers stay as they
    are)."""
    dates = {export.header.index(c) for c in date_columns}
    numbers = {export.header.index(c) for c in number_columns}

    def cell(i: int, v: str) -> str:
        if i in dates:
            try:
                return dt.date.fromisoformat(v.strip()).strftime("%d.%m.%Y")
            except ValueError:
                return v
        if i in numbers and NUMBER.fullmatch(v.strip()):
            return v.strip().replace(".", ",")
        return v

    rows = [[cell(i, v) for i, v in enumerate(r)] for r in export.rows]
    return Export([headers.get(h, h) for h in export.header], rows)


# ---------------------------------------------------------------------------------------
# the worked example: data/sample/multi

#: What the laser's own log holds: who, when, where, and the settings.
DEVICE_COLUMNS = ["patient_id", "session_date", "area", "energy_start_mj", "energy_final_mj",
                  "coverage_pct", "passes", "pass_wait_min", "device_serial"]
DEVICE_HEADERS = {"patient_id": "Patienten-Nr.", "session_date": "Datum", "area": "Areal",
                  "energy_start_mj": "Startenergie (mJ)", "energy_final_mj": "Endenergie (mJ)",
                  "coverage_pct": "Abdeckung (%)", "passes": "Durchgänge",
                  "pass_wait_min": "Pause zw. Durchgängen (min)", "device_serial": "Geräte-Nr."}
DEVICE_MAPPING = """\
# The laser's own treatment log, written by its German software: `;` between fields,
# dates as dd.mm.yyyy, decimal commas. Geräte-Nr. (the device serial) stays unmapped.
[source]
table = "sessions"
delimiter = ";"
decimal = ","
date_format = "%d.%m.%Y"

[columns]
{columns}
"""
#: The clinic software's exports: each reaches two months back into the one before.
NOTES_WINDOWS = {"sessions-2025-08.csv": ("2024-11-01", "2025-08-31"),
                 "sessions-2026-03.csv": ("2025-07-01", "2026-03-31"),
                 "sessions-2026-10.csv": ("2026-02-01", "2026-10-31")}
OUTCOMES_WINDOWS = {"outcomes-2025-12.csv": ("2024-11-01", "2025-12-31"),
                    "outcomes-2026-12.csv": ("2025-10-01", "2026-12-31")}
#: The one value the second notes export gives differently (corrected after the first
#: export was taken): the first export's value is kept and the record reported.
CORRECTED = ("sessions-2026-03.csv", "post_cooling_min")


def write_worked_example(sample: str | Path, out: str | Path) -> list[Path]:
    """data/sample/multi from data/sample: the sessions the sample loads, as three
    overlapping exports of the clinic software without the device's settings, the
    device's own log in German with its mapping, and the outcomes as two overlapping
    exports. Audited together they give exactly the sample's audit."""
    sample, out = Path(sample), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sessions = Export.read(sample / "sessions.csv", clean=True)
    keys = ["patient_id", "session_date", "area"]
    notes = sessions.only([c for c in sessions.header
                           if c not in DEVICE_COLUMNS or c in keys])
    written = []
    windows = [(dt.date.fromisoformat(a), dt.date.fromisoformat(b))
               for a, b in NOTES_WINDOWS.values()]
    for name, part in zip(NOTES_WINDOWS, by_period(notes, windows), strict=True):
        if name == CORRECTED[0]:
            part = _correct_one(part, CORRECTED[1], NOTES_WINDOWS)
        written.append(part.write(out / name))
    device = localised(sessions.only(DEVICE_COLUMNS), DEVICE_HEADERS, ["session_date"],
                       DEVICE_COLUMNS[3:8])
    written.append(device.write(out / "sessions-geraet.csv", delimiter=";"))
    columns = "\n".join(f'{k} = "{v}"' for k, v in DEVICE_HEADERS.items()
                        if k != "device_serial")
    mapping = out / "sessions-geraet.mapping.toml"
    write_atomic(mapping, lambda tmp: tmp.write_text(DEVICE_MAPPING.format(columns=columns),
                                                     encoding="utf-8"))
    written.append(mapping)
    outcomes = Export.read(sample / "outcomes.csv", clean=True)
    windows = [(dt.date.fromisoformat(a), dt.date.fromisoformat(b))
               for a, b in OUTCOMES_WINDOWS.values()]
    for name, part in zip(OUTCOMES_WINDOWS, by_period(outcomes, windows, "assessment_date"),
                          strict=True):
        written.append(part.write(out / name))
    return written


def _correct_one(part: Export, column: str, windows: dict[str, tuple[str, str]]) -> Export:
    """The export with one value changed in a record the export before also holds."""
    i, d = part.header.index(column), part.header.index("session_date")
    overlap_end = next(iter(windows.values()))[1]
    rows = [list(r) for r in part.rows]
    for r in rows:
        if r[d] <= overlap_end and r[i].isdigit():
            r[i] = str(int(r[i]) + 5)
            break
    return Export(part.header, rows)
