"""One obvious entry point: `outcomes.open(data, protocol=...)` loads and audits once.

A `Study` holds the loaded data (with its row accounting), the protocol and the audit,
and never changes. The report opens it once, saves it next to its outputs, and every
notebook reopens that saved study instead of loading and auditing again; a notebook
opened on its own in JupyterLab simply loads and audits. A saved study is used only
when the software, the input files (by SHA-256) and the protocol are the same.
"""

from __future__ import annotations

import builtins
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from outcomes import __version__
from outcomes.audit import Audit, run_audit
from outcomes.dataset import Dataset, as_paths, find_inputs, load_data_dir, load_inputs
from outcomes.files import sha256, write_atomic
from outcomes.load import LoadError, mapping_beside
from outcomes.protocol import DEFAULT_PROTOCOL, Protocol, load_protocol

#: The sample data of the source tree (`data/sample`).
SOURCE_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
#: The same files shipped inside the package, for an install without the source tree.
PACKAGED_SAMPLE = Path(__file__).resolve().parent / "sample_data"


def sample_dir(source: Path = SOURCE_SAMPLE, packaged: Path = PACKAGED_SAMPLE) -> Path:
    """The sample data folder: the source tree's when there is one, else the packaged copy."""
    return source if (source / "sessions.csv").is_file() else packaged


#: The default data set, an absolute path, so it does not depend on the working folder.
SAMPLE = sample_dir()
_MAGIC = "outcomes-study"


@dataclass(frozen=True, eq=False)
class Study:
    """Loaded data, the protocol and the audit of the data against it."""

    dataset: Dataset
    protocol: Protocol
    audit: Audit
    fingerprint: dict[str, Any]

    @property
    def sessions(self) -> pd.DataFrame:
        """Audited sessions with their course columns."""
        return self.audit.sessions

    @property
    def courses(self) -> pd.DataFrame:
        return self.audit.courses

    @property
    def verdicts(self) -> pd.DataFrame:
        return self.audit.verdicts

    @property
    def outcomes(self) -> pd.DataFrame | None:
        """Outcome assessments (None when no outcomes export was given)."""
        return self.dataset.outcomes_data

    def summary(self, by: str | list[str] | None = None) -> pd.DataFrame:
        """Compliance per criterion (and per group), as `Audit.summary`."""
        return self.audit.summary(by)

    def flagged(self) -> pd.DataFrame:
        """Every deviation and documentation gap with its file and row."""
        return self.audit.flagged()

    def files(self) -> pd.DataFrame:
        """One row per input file: rows read, loaded, rejected, SHA-256."""
        return self.dataset.files()

    def save(self, path: str | Path) -> Path:
        """Write the study whole (a temporary name, then renamed) for `open(saved=path)`."""
        def dump(tmp: Path) -> None:
            with builtins.open(tmp, "wb") as fh:
                pickle.dump((_MAGIC, self.fingerprint), fh, protocol=pickle.HIGHEST_PROTOCOL)
                pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)

        return write_atomic(Path(path), dump)


def _inputs(data: list[Path], outcomes: list[Path], mapping: str | Path | None,
            outcomes_mapping: str | Path | None) -> list[Path]:
    """The files a study is made from: exports and their mapping files."""
    if len(data) == 1 and data[0].is_dir():
        files = find_inputs(data[0], "sessions") + find_inputs(data[0], "outcomes")
    else:
        files = data + outcomes
    maps = [Path(m) for m in (mapping, outcomes_mapping) if m]
    maps += [m for m in (mapping_beside(f) for f in files) if m is not None]
    return files + maps


def _fingerprint(data: list[Path], protocol: Protocol, outcomes: list[Path],
                 mapping: str | Path | None, outcomes_mapping: str | Path | None
                 ) -> dict[str, Any]:
    files = _inputs(data, outcomes, mapping, outcomes_mapping)
    return {"software": __version__,
            "inputs": [(str(p.resolve()), sha256(p)) for p in files if p.is_file()],
            "protocol": repr(replace(protocol, path=""))}


def _trace(event: str) -> None:
    """With OUTCOMES_TRACE set, note each load and audit (tests count them)."""
    where = os.environ.get("OUTCOMES_TRACE")
    if where:
        with builtins.open(where, "a", encoding="utf-8") as fh:
            fh.write(f"{event} {os.getpid()}\n")


def _read_saved(path: Path, fingerprint: dict[str, Any]) -> Study | None:
    try:
        with builtins.open(path, "rb") as fh:
            magic, saved_print = pickle.load(fh)
            if magic != _MAGIC or saved_print != fingerprint:
                return None
            study = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
        return None
    return study if isinstance(study, Study) else None


def open(data: str | Path | Sequence[str | Path] | None = None,
         protocol: str | Path | Protocol = DEFAULT_PROTOCOL,
         outcomes: str | Path | Sequence[str | Path] | None = None,
         mapping: str | Path | None = None,
         outcomes_mapping: str | Path | None = None, saved: str | Path | None = None,
         progress: bool | None = None) -> Study:
    """Load a data folder (or a sessions export) and audit it against a protocol.

    `data` is a DATA_DIR (every sessions* and outcomes* export, mappings beside them),
    or one or more sessions exports with `outcomes=` (one or more) beside them; the
    default is the sample data. Several exports of a table are combined into one. With
    `saved`, a study saved there from the same inputs and protocol is reused.
    """
    paths = as_paths(data) or [SAMPLE]
    outcome_paths = as_paths(outcomes)
    for path in paths + outcome_paths:
        if not path.exists():
            kind = "data folder" if data is None or path.suffix == "" else "file"
            raise LoadError(f"{kind} {path} does not exist")
    path = paths[0]
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    fingerprint = _fingerprint(paths, proto, outcome_paths, mapping, outcomes_mapping)
    if saved is not None and Path(saved).is_file():
        study = _read_saved(Path(saved), fingerprint)
        if study is not None:
            return study
    _trace("load")
    if len(paths) == 1 and path.is_dir():
        ds = load_data_dir(path, progress=progress)
    else:
        ds = load_inputs(paths, outcome_paths, mapping=mapping, outcomes_mapping=outcomes_mapping,
                         progress=progress)
    _trace("audit")
    audit = run_audit(ds.sessions.data, proto, ds.outcomes_data)
    if nothing := audit.nothing_audited():
        raise LoadError(f"{ds.paths[0].name}: {nothing}")
    return Study(ds, proto, audit, fingerprint)
