"""The leak check: every identifying value of the input searched for in every output file."""

from __future__ import annotations

import html
import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from outcomes import schema

# ---------------------------------------------------------------------------------------------
# the leak check
from outcomes.export.deidentify import (
    DATA_TABLES,
    DOB_FORMATS,
    MIN_NUMERIC_CHARS,
    MIN_SEARCH_CHARS,
    SEARCH_ROLES,
    TOKEN,
    WORD,
)


def identifiers(dataset: Any, key: bytes | None = None) -> dict[str, set[str]]:
    """Every identifying value of the input, by field: ids, names, clinicians, dates of birth
    (in the usual spellings), phone numbers (also as bare digits), e-mail addresses, given
    session ids, and the key itself."""
    found: dict[str, set[str]] = {}
    frames = (("sessions", dataset.sessions.data), ("outcomes", dataset.outcomes_data))
    for table, df in frames:
        if df is None:
            continue
        for f in schema.TABLES[table]:
            if f.role not in SEARCH_ROLES or f.name not in df.columns:
                continue
            col = df[f.name].dropna()
            if f.type == "date":
                days = pd.to_datetime(col).drop_duplicates()
                values = {d.strftime(fmt) for d in days for fmt in DOB_FORMATS}
            else:
                values = {str(v).strip() for v in col.astype("string").unique()} - {""}
                for v in list(values):
                    digits = re.sub(r"\D", "", v)
                    if (len(digits) >= 7 and re.fullmatch(r"[\d\s()+\-./]+", v)
                            and digits != v):
                        values.add(digits)
            found.setdefault(f.name, set()).update(values)
    if key:
        text = key.decode("utf-8", errors="replace")
        found["key"] = {text, key.hex()}
    return found


def name_parts(dataset: Any) -> dict[str, set[str]]:
    """Single words (4+ letters) of names: identifying or staff values without digits or @.

    Searched for as whole words in the data tables only, where a name has no business.
    """
    parts: dict[str, set[str]] = {}
    frames = (("sessions", dataset.sessions.data), ("outcomes", dataset.outcomes_data))
    for table, df in frames:
        if df is None:
            continue
        for f in schema.TABLES[table]:
            if f.role not in ("identifying", "staff") or f.type != "string":
                continue
            if f.name not in df.columns:
                continue
            for v in df[f.name].dropna().astype("string").unique():
                if re.search(r"[\d@]", str(v)):
                    continue
                words = {w for w in re.findall(r"[^\W\d_]+", str(v).casefold()) if len(w) >= 4}
                parts.setdefault(f.name, set()).update(words)
    return parts


@dataclass
class _Index:
    """Identifying values as token sequences, by length, each naming its field."""

    by_length: dict[int, dict[tuple[str, ...], str]] = field(default_factory=dict)
    searched: int = 0
    too_short: int = 0


def _index(values: Mapping[str, Iterable[str]]) -> _Index:
    idx = _Index()
    for column, items in values.items():
        for v in items:
            toks = tuple(TOKEN.findall(str(v).casefold()))
            chars = "".join(toks)
            if len(chars) < MIN_SEARCH_CHARS or (chars.isdigit() and len(toks) == 1
                                                  and len(chars) < MIN_NUMERIC_CHARS):
                idx.too_short += 1
                continue
            idx.by_length.setdefault(len(toks), {}).setdefault(toks, column)
            idx.searched += 1
    return idx


CHUNK, OVERLAP = 1 << 22, 1 << 12  # search big texts in pieces that overlap


def _chunks(text: str) -> Iterable[str]:
    """Pieces of a big text that overlap, each starting at a token boundary."""
    for start in range(0, max(len(text), 1), CHUNK):
        begin = max(0, start - OVERLAP)
        piece = text[begin:start + CHUNK]
        if begin:
            m = re.search(r"[\W_]", piece)
            piece = piece[m.start():] if m else ""
        yield piece


def _find(text: str, idx: _Index) -> set[str]:
    """Fields whose values occur in `text` as whole token sequences (case-insensitive)."""
    firsts = {t[0] for d in idx.by_length.values() for t in d}
    hits: set[str] = set()
    for piece in _chunks(text):
        tokens = TOKEN.findall(piece.casefold())
        for i, tok in enumerate(tokens):
            if tok not in firsts:
                continue
            for k, table in idx.by_length.items():
                column = table.get(tuple(tokens[i:i + k]))
                if column is not None:
                    hits.add(column)
    return hits


def _texts(path: Path) -> Iterable[str]:
    """What a reader (or a program) can see in an output file, as text."""
    data = path.read_bytes()
    yield data.decode("utf-8", errors="replace")
    if path.suffix == ".xlsx" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                yield html.unescape(z.read(name).decode("utf-8", errors="replace"))
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
        yield json.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                          for k, v in (table.schema.metadata or {}).items()}, ensure_ascii=False)
        yield table.to_pandas().to_csv(index=False)
    elif path.suffix == ".json":
        try:
            yield json.dumps(json.loads(data), ensure_ascii=False)
        except ValueError:
            pass


def leak_check(out_dir: str | Path, identifiers: Mapping[str, Iterable[str]],
               name_parts: Mapping[str, Iterable[str]] | None = None) -> list[tuple[str, str]]:
    """Search every file under out_dir for every identifying value; return (file, field) hits.

    Values are compared as sequences of words and numbers, ignoring case and punctuation
    (so `+49 176 1234567` is also found as `49-176-1234567`), inside CSV, JSON, the unpacked
    XML of an XLSX and the cells of a Parquet file. A value with fewer than 4 letters or
    digits, or a bare number under 6 digits, is not searched (it would be found anywhere).
    `name_parts` (single words of names) are searched for as whole words in the data rows
    of the table CSVs.
    """
    out_dir = Path(out_dir)
    idx = _index(identifiers)
    parts = {w: col for col, words in (name_parts or {}).items() for w in words}
    hits: set[tuple[str, str]] = set()
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(out_dir).as_posix()
        for text in _texts(path):
            for column in _find(text, idx):
                hits.add((rel, column))
        if parts and path.suffix == ".csv" and path.stem in DATA_TABLES:
            body = path.read_text(encoding="utf-8-sig", errors="replace").split("\n", 1)[-1]
            for piece in _chunks(body):
                for w in set(WORD.findall(piece.casefold())) & parts.keys():
                    hits.add((rel, parts[w]))
    return sorted(hits)
