"""A data set: one or more sessions exports and optional outcomes exports, loaded as one.

A DATA_DIR holds every export whose name starts with `sessions` (`sessions.csv`,
`sessions-2026-q1.xlsx`, `sessions_device.parquet`) and optionally `outcomes…` files,
each with an optional mapping beside it (`sessions-2026-q1.mapping.toml`). Several
exports of one table are combined into one (`outcomes.combine`). The report, the
notebooks and the command line all load data through here, so they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from outcomes.combine import OVERLAP_COLUMNS, combine
from outcomes.files import sha256
from outcomes.load import LoadError, LoadResult, Mapping, load, read_mapping

SUFFIXES = (".csv", ".xlsx", ".parquet")

PathLike = str | Path


@dataclass
class Dataset:
    """Sessions (and outcomes), each combined from its exports, with every file's
    row accounting (`inputs`) and how the files overlapped (`overlap`)."""

    sessions: LoadResult
    outcomes: LoadResult | None
    inputs: list[LoadResult]
    overlap: pd.DataFrame

    @property
    def outcomes_data(self) -> pd.DataFrame | None:
        return None if self.outcomes is None else self.outcomes.data

    @property
    def paths(self) -> list[Path]:
        """Every input file, sessions first, in the order they were combined."""
        return [Path(r.file) for r in self.inputs]

    @property
    def several(self) -> bool:
        """More than one export of a table: sessions are combined and name their sources."""
        return len(self.inputs) > (1 if self.outcomes is None else 2)

    def results(self) -> list[LoadResult]:
        """Each input file's own result (its row accounting holds on its own)."""
        return list(self.inputs)

    def files(self) -> pd.DataFrame:
        """One row per input file: name, table, rows read/loaded/rejected, warnings,
        SHA-256, and (several exports) records shared with other files, duplicates and
        conflicts."""
        rows = [{"file": r.file, "table": r.table, "rows_read": r.rows_read,
                 "rows_loaded": r.rows_loaded, "rows_rejected": r.rows_rejected,
                 "warnings": len(r.warnings), "sha256": sha256(Path(r.file))}
                for r in self.inputs]
        frame = pd.DataFrame(rows)
        if self.several:
            frame = frame.merge(self.overlap, on="file", how="left")
        return frame

    def rejections(self) -> pd.DataFrame:
        return pd.concat([r.rejections for r in self.inputs], ignore_index=True)

    def warnings(self) -> pd.DataFrame:
        return pd.concat([r.warnings for r in self.inputs], ignore_index=True)


def find_inputs(data_dir: Path, stem: str) -> list[Path]:
    """Every `stem*.csv|xlsx|parquet` in data_dir, in name order."""
    return sorted((p for p in data_dir.iterdir()
                   if p.name.lower().startswith(stem) and p.suffix.lower() in SUFFIXES
                   and not p.name.startswith((".", "~$")) and p.is_file()),
                  key=lambda p: p.name)


def load_data_dir(data_dir: str | Path, progress: bool | None = None) -> Dataset:
    """Load DATA_DIR's sessions and outcomes exports, each with its mapping beside it."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LoadError(f"data folder {data_dir} does not exist")
    sessions = find_inputs(data_dir, "sessions")
    if not sessions:
        raise LoadError(f"{data_dir} has no sessions export (a .csv, .xlsx or .parquet file "
                        "whose name starts with 'sessions')")
    return load_inputs(sessions, find_inputs(data_dir, "outcomes"), progress=progress)


def as_paths(value: PathLike | Sequence[PathLike] | None) -> list[Path]:
    """One path or several, as a list (none: empty)."""
    if value is None:
        return []
    if isinstance(value, str | Path):
        return [Path(value)]
    return [Path(v) for v in value]


def load_inputs(sessions: PathLike | Sequence[PathLike],
                outcomes: PathLike | Sequence[PathLike] | None = None,
                mapping: PathLike | Mapping | None = None,
                outcomes_mapping: PathLike | Mapping | None = None,
                progress: bool | None = None) -> Dataset:
    """Load sessions exports and optional outcomes exports, each combined into one table.

    `mapping` applies to every sessions export and `outcomes_mapping` to every outcomes
    export; without them each file uses the mapping beside it.
    """
    session_paths, outcome_paths = as_paths(sessions), as_paths(outcomes)
    _no_file_twice(session_paths + outcome_paths)
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = read_mapping(mapping)
    if outcomes_mapping is not None and not isinstance(outcomes_mapping, Mapping):
        outcomes_mapping = read_mapping(outcomes_mapping)
    loaded = []
    for path in session_paths:
        s = load(path, mapping=mapping, table="sessions", progress=progress)
        if s.table != "sessions":
            raise LoadError(f"{path} is an outcomes export; give it with --outcomes")
        loaded.append(s)
    if sum(s.rows_read for s in loaded) == 0:
        names = " and ".join(p.name for p in session_paths)
        raise LoadError(f"{names} {'has' if len(loaded) == 1 else 'have'} no sessions to "
                        "audit (no rows under the header)")
    for s in loaded:
        _require_rows(s)
    sessions_combined = combine(loaded)
    files, overlap = list(sessions_combined.files), [sessions_combined.overlap]
    o = None
    if outcome_paths:
        got = []
        for path in outcome_paths:
            r = load(path, mapping=outcomes_mapping, table="outcomes", progress=progress)
            if r.table != "outcomes":
                raise LoadError(f"{path} is not an outcomes export (its mapping says "
                                f"{r.table})")
            _require_rows(r)
            got.append(r)
        outcomes_combined = combine(got)
        o = outcomes_combined.result
        files += outcomes_combined.files
        overlap.append(outcomes_combined.overlap)
    return Dataset(sessions=sessions_combined.result, outcomes=o, inputs=files,
                   overlap=pd.concat(overlap, ignore_index=True)[OVERLAP_COLUMNS])


def _no_file_twice(paths: list[Path]) -> None:
    seen: set[Path] = set()
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise LoadError(f"{p} is given twice; give each export once")
        seen.add(key)


def _require_rows(result: LoadResult) -> None:
    """A file whose every row was rejected cannot be used: usually a mapping setting."""
    problem = result.unusable()
    if problem:
        raise LoadError(f"{problem}; outcomes validate lists every rejected row")
