"""A data set: the sessions export and optional outcomes export, loaded and fingerprinted.

A DATA_DIR holds `sessions.csv|xlsx|parquet` and optionally `outcomes.csv|xlsx|parquet`,
each with an optional mapping beside it (`sessions.mapping.toml`). The report, the
notebooks and the command line all load data through here, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from outcomes.files import sha256
from outcomes.load import LoadError, LoadResult, Mapping, load, read_mapping

SUFFIXES = (".csv", ".xlsx", ".parquet")


@dataclass
class Dataset:
    """Loaded sessions (and outcomes) with the row accounting of every input file."""

    sessions: LoadResult
    outcomes: LoadResult | None
    paths: dict[str, Path]

    @property
    def outcomes_data(self) -> pd.DataFrame | None:
        return None if self.outcomes is None else self.outcomes.data

    def results(self) -> list[LoadResult]:
        return [r for r in (self.sessions, self.outcomes) if r is not None]

    def files(self) -> pd.DataFrame:
        """One row per input file: name, table, rows read/loaded/rejected, warnings, SHA-256."""
        rows = []
        for name, r in (("sessions", self.sessions), ("outcomes", self.outcomes)):
            if r is None:
                continue
            path = self.paths[name]
            rows.append({"file": str(path), "table": r.table, "rows_read": r.rows_read,
                         "rows_loaded": r.rows_loaded, "rows_rejected": r.rows_rejected,
                         "warnings": len(r.warnings), "sha256": sha256(path)})
        return pd.DataFrame(rows)

    def rejections(self) -> pd.DataFrame:
        return pd.concat([r.rejections for r in self.results()], ignore_index=True)

    def warnings(self) -> pd.DataFrame:
        return pd.concat([r.warnings for r in self.results()], ignore_index=True)


def find_input(data_dir: Path, stem: str) -> Path | None:
    """`stem.csv|xlsx|parquet` in data_dir; more than one is ambiguous."""
    found = [data_dir / f"{stem}{s}" for s in SUFFIXES if (data_dir / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise LoadError(f"{data_dir} has {' and '.join(p.name for p in found)}; keep one")
    return found[0] if found else None


def load_data_dir(data_dir: str | Path, progress: bool | None = None) -> Dataset:
    """Load DATA_DIR's sessions and (if present) outcomes, each with its mapping beside it."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LoadError(f"data folder {data_dir} does not exist")
    sessions = find_input(data_dir, "sessions")
    if sessions is None:
        raise LoadError(f"{data_dir} has no sessions.csv, sessions.xlsx or sessions.parquet")
    return load_inputs(sessions, find_input(data_dir, "outcomes"), progress=progress)


def load_inputs(sessions: str | Path, outcomes: str | Path | None = None,
                mapping: str | Path | Mapping | None = None,
                outcomes_mapping: str | Path | Mapping | None = None,
                progress: bool | None = None) -> Dataset:
    """Load a sessions export and an optional outcomes export (mappings beside them by default)."""
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = read_mapping(mapping)
    if outcomes_mapping is not None and not isinstance(outcomes_mapping, Mapping):
        outcomes_mapping = read_mapping(outcomes_mapping)
    s = load(sessions, mapping=mapping, table="sessions", progress=progress)
    if s.table != "sessions":
        raise LoadError(f"{sessions} is an outcomes export; give the sessions export first")
    if s.rows_read == 0:
        raise LoadError(f"{Path(sessions).name} has no sessions to audit (no rows under the "
                        "header)")
    _require_rows(s)
    paths = {"sessions": Path(sessions)}
    o = None
    if outcomes is not None:
        o = load(outcomes, mapping=outcomes_mapping, table="outcomes", progress=progress)
        if o.table != "outcomes":
            raise LoadError(f"{outcomes} is not an outcomes export (its mapping says "
                            f"{o.table})")
        _require_rows(o)
        paths["outcomes"] = Path(outcomes)
    return Dataset(sessions=s, outcomes=o, paths=paths)


def _require_rows(result: LoadResult) -> None:
    """A file whose every row was rejected cannot be used: usually a mapping setting."""
    problem = result.unusable()
    if problem:
        raise LoadError(f"{problem}; outcomes validate lists every rejected row")
