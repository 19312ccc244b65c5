"""The leak check: every identifying value of the input searched for in every output file.

What is searched: the values of the input's identifying fields only (patient ids, names,
phone numbers, e-mail addresses, clinicians, given session ids, dates of birth, session
and assessment dates, the key), never every word of every field. Dates are searched in
the usual spellings (2025-05-15, 15.05.2025, 05/15/2025, 20250515, 15 May 2025 …), phone
numbers also as bare digits.

How: text is compared normalised (NFKC, case-folded, everything but letters and digits
removed), so `Laura Schmidt` is found in `LauraSchmidt`, `laura_schmidt`, `refLAURA-SCHMIDT`
and `+49 160 6666241` in `Tel491606666241`. A value of 6 or more letters and digits (5 if
it mixes letters and digits, as ids do) is searched anywhere, inside words too; a value of
4–5 and the single words (4+ letters) of names are searched as whole words in the data
tables only, where a name has no business. Shorter values cannot be searched without
false alarms and are counted, not searched; so are values that the export's own texts
contain (an operator recorded as `unknown` or `Laser`), which would refuse every export.

Where: every file of the folder, cell by cell (CSV cells, Parquet cells and metadata,
JSON strings, the text and attributes of every XML member of an XLSX, any other file line
by line). Numbers keep their decimal point, so cells never run together into a date. The
pseudonyms and hashes the export made itself are masked first: hexadecimal can hold any
digits.
"""

from __future__ import annotations

import ast
import csv
import html
import json
import re
import sys
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from outcomes import schema
from outcomes.export.deidentify import DATA_TABLES, MANIFEST, VOCABULARIES

#: Roles whose values identify a person (dates: real calendar dates, which the export shifts).
SEARCH_ROLES = ("patient_id", "identifying", "staff", "birth_date", "key", "date")
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%Y%m%d", "%d %b %Y", "%b %d %Y",
                "%d %B %Y", "%B %d %Y")
MIN_ANYWHERE = 6  # letters and digits: searched inside any text
MIN_ANYWHERE_MIXED = 5  # an id mixing letters and digits (P0259) is distinctive sooner
MIN_WORD = 4  # 4–5: searched as whole words in the data tables
MIN_PHONE_DIGITS = 7
MIN_DATE_DIGITS = 7
TOKEN = re.compile(r"[^\W_]+")
NOT_ALNUM = re.compile(r"[\W_]+")
NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)?(?:e[+-]?\d+)?")
HEX = re.compile(r"[0-9a-f]{12,64}")
XML_TEXT = re.compile(r">([^<]+)<")
XML_ATTR = re.compile(r"=\"([^\"]*)\"")
CHUNK = 1 << 22  # kept for callers; files are read cell by cell now


def fold(text: str) -> str:
    """NFKC and case-folded: `ＬＡＵＲＡ` and `laura` compare equal."""
    return unicodedata.normalize("NFKC", text).casefold()


def compact(text: str) -> str:
    """Folded, with every separator removed: `Laura-Schmidt` → `lauraschmidt`."""
    return NOT_ALNUM.sub("", fold(text))


def date_spellings(day: Any) -> set[str]:
    """A date in the spellings people and programs write (padded and not)."""
    d = pd.Timestamp(day)
    out = {d.strftime(f) for f in DATE_FORMATS}
    out |= {f"{d.year}-{d.month}-{d.day}", f"{d.day}.{d.month}.{d.year}",
            f"{d.month}/{d.day}/{d.year}"}
    # 2.5.1999 as bare digits (251999) is any six digits: only 7+ digits are distinctive
    return {s for s in out if len(compact(s)) >= MIN_DATE_DIGITS}


def identifiers(dataset: Any, key: bytes | None = None) -> dict[str, set[str]]:
    """Every identifying value of the input, by field: ids, names, clinicians, phone numbers
    (also as bare digits), e-mail addresses, given session ids, dates of birth and session
    and assessment dates (in the usual spellings), and the key itself."""
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
                values = set()
                for d in pd.to_datetime(col).drop_duplicates():
                    values |= date_spellings(d)
            else:
                values = {str(v).strip() for v in col.astype("string").unique()} - {""}
                for v in list(values):
                    digits = re.sub(r"\D", "", v)
                    if (len(digits) >= MIN_PHONE_DIGITS and re.fullmatch(r"[\d\s()+\-./]+", v)
                            and digits != v):
                        values.add(digits)
            found.setdefault(f.name, set()).update(values)
    if key:
        found["key"] = {key.decode("utf-8", errors="replace"), key.hex()}
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
                words = {w for w in re.findall(r"[^\W\d_]+", fold(str(v))) if len(w) >= MIN_WORD}
                parts.setdefault(f.name, set()).update(words)
    return parts


# ---------------------------------------------------------------------------------------------
# what the export says itself


@lru_cache(maxsize=1)
def _own_literals() -> str:
    """Every text literal of the export's code, the schema and the course rules (not their
    docstrings): what the export writes that is not data. Keep examples that look like
    data (names, dates, phone numbers) out of these literals: they would not be searched."""
    here = Path(__file__).resolve().parent
    files = [*sorted(here.glob("*.py")), here.parent / "schema.py", here.parent / "courses.py"]
    texts: list[str] = []
    for f in files:
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            continue
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                and n.body and isinstance(n.body[0], ast.Expr)}  # never written to an export
        texts += [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                  and isinstance(n.value, str) and id(n) not in docs]
    texts += [f"{f.name} {f.meaning} {' '.join(f.allowed or ())}" for t in schema.TABLES.values()
              for f in t]
    texts += [f"{i.id} {i.title} {i.unit}" for i in schema.INSTRUMENTS.values()]
    texts += [" ".join(v) for v in VOCABULARIES.values()]
    return "\n".join(texts)


def own_texts(protocol: Any = None) -> list[str]:
    """The export's own texts: its code's literals and, given one, the protocol's words."""
    texts = [_own_literals()]
    if protocol is not None:
        texts.append(" ".join(str(getattr(protocol, a, "") or "")
                              for a in ("id", "title", "version", "source", "indication")))
        texts += [f"{c.id} {getattr(c, 'title', '')} {getattr(c, 'sentence', '')}"
                  for c in getattr(protocol, "criteria", ())]
    return texts


# ---------------------------------------------------------------------------------------------
# the matcher


@dataclass
class Matcher:
    """Identifying values, normalised, each naming its field; `find` says which occur."""

    anywhere: dict[str, str] = field(default_factory=dict)
    words: dict[tuple[str, ...], str] = field(default_factory=dict)
    searched: int = 0
    too_short: int = 0
    too_common: int = 0
    _starts: set[str] = field(default_factory=set)
    _lengths: list[int] = field(default_factory=list)
    _longest_words: int = 1

    @classmethod
    def build(cls, values: Mapping[str, Iterable[str]],
              parts: Mapping[str, Iterable[str]] | None = None,
              common: Iterable[str] | None = None) -> Matcher:
        """`common`: texts the export writes itself; a value they contain is not searched."""
        m = cls()
        own = [compact(t) for t in (own_texts() if common is None else common)]
        own_grams = {s[i:i + MIN_ANYWHERE_MIXED] for s in own
                     for i in range(len(s) - MIN_ANYWHERE_MIXED + 1)}
        own_words = {w for t in (own_texts() if common is None else common)
                     for w in TOKEN.findall(fold(t))}

        def is_common(c: str) -> bool:
            return c[:MIN_ANYWHERE_MIXED] in own_grams and any(c in s for s in own)

        seen: set[tuple[str, str]] = set()
        for column, items in values.items():
            for v in items:
                c = compact(str(v))
                if not c or (column, c) in seen:
                    continue
                seen.add((column, c))
                mixed = any(ch.isdigit() for ch in c) and any(ch.isalpha() for ch in c)
                if len(c) >= MIN_ANYWHERE or (mixed and len(c) >= MIN_ANYWHERE_MIXED):
                    if is_common(c):
                        m.too_common += 1
                        continue
                    m.anywhere.setdefault(c, column)
                elif len(c) >= MIN_WORD:
                    toks = tuple(TOKEN.findall(fold(str(v))))
                    if c in own_words or "".join(toks) in own_words:
                        m.too_common += 1
                        continue
                    m.words.setdefault(toks, column)
                else:
                    m.too_short += 1
                    continue
                m.searched += 1
        for column, words in (parts or {}).items():
            for w in words:
                w = fold(w)
                if len(w) < MIN_WORD or w in own_words:
                    continue
                m.words.setdefault((w,), column)
        m._starts = {c[:MIN_ANYWHERE_MIXED] for c in m.anywhere}
        m._lengths = sorted({len(c) for c in m.anywhere})
        m._longest_words = max((len(k) for k in m.words), default=1)
        return m

    def find(self, text: str, whole_words: bool = True) -> set[str]:
        """Fields whose values occur in `text` (anywhere; and as whole words if asked)."""
        t = fold(text)
        hits: set[str] = set()
        number = NUMBER.fullmatch(t.strip())
        # a number: its whole-number part only (0.9251999999999999 holds no date)
        c = re.split(r"[.,e]", t.strip().lstrip("+-"))[0] if number else NOT_ALNUM.sub("", t)
        n, k = len(c), MIN_ANYWHERE_MIXED
        if self.anywhere and n >= k:
            for i in range(n - k + 1):
                if c[i:i + k] not in self._starts:
                    continue
                for length in self._lengths:
                    if i + length > n:
                        break
                    column = self.anywhere.get(c[i:i + length])
                    if column is not None:
                        hits.add(column)
        if whole_words and self.words:
            toks = TOKEN.findall(t)
            for i in range(len(toks)):
                for j in range(1, self._longest_words + 1):
                    column = self.words.get(tuple(toks[i:i + j]))
                    if column is not None:
                        hits.add(column)
                    if i + j >= len(toks):
                        break
        return hits


# ---------------------------------------------------------------------------------------------
# what a reader (or a program) can see in an output file


def _walk_json(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _walk_json(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_json(v)
    elif isinstance(obj, str):
        yield obj  # numbers in JSON are the export's own counts


def _xml_units(text: str) -> Iterator[str]:
    for m in XML_TEXT.finditer(text):
        yield html.unescape(m.group(1))
    for m in XML_ATTR.finditer(text):
        yield html.unescape(m.group(1))


def _units(path: Path) -> set[str]:
    """Every piece of text of a file that a reader sees as one cell, string or line."""
    units: set[str] = set()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        csv.field_size_limit(sys.maxsize)
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            for row in csv.reader(fh):
                units.update(row)
    elif suffix == ".json":
        raw = path.read_text(encoding="utf-8", errors="replace")
        try:
            units.update(_walk_json(json.loads(raw)))
        except ValueError:
            units.update(raw.splitlines())
    elif suffix == ".parquet":
        table = pq.read_table(path)
        for k, v in (table.schema.metadata or {}).items():
            units.add(k.decode(errors="replace"))
            units.add(v.decode(errors="replace"))
        for name, col in zip(table.column_names, table.columns, strict=True):
            units.add(name)
            units.update(str(v) for v in pc.unique(col).to_pylist() if v is not None)
    elif suffix == ".xlsx" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            units.add(z.comment.decode(errors="replace"))
            for name in z.namelist():
                units.add(name)
                text = z.read(name).decode("utf-8", errors="replace")
                if name.endswith((".xml", ".rels", ".vml")):
                    units.update(_xml_units(text))
                else:
                    units.update(text.splitlines())
    else:
        units.update(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return units


def generated_values(out_dir: str | Path) -> set[str]:
    """What the export made itself and may hold any digits: pseudonyms, codes, hashes and
    the export time (read from the folder: its manifest and pseudonym columns)."""
    out_dir = Path(out_dir)
    made: set[str] = set()
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    if isinstance(manifest, dict):
        made.add(str(manifest.get("export_time", "")))
        for i in manifest.get("inputs", []) or []:
            if isinstance(i, dict) and i.get("sha256"):
                made |= {str(i["sha256"]), str(i["sha256"])[:12]}
        made |= {str(v) for v in (manifest.get("files") or {}).values()}
    for table in DATA_TABLES:
        path = out_dir / f"{table}.parquet"
        if not path.is_file():
            continue
        names = pq.read_schema(path).names
        cols = [c for c in ("patient_pseudonym", "clinician_code") if c in names]
        if cols:
            t = pq.read_table(path, columns=cols)
            for col in t.columns:
                made.update(str(v) for v in pc.unique(col).to_pylist() if v is not None)
    return {fold(v) for v in made if v}


def _masked(unit: str, made: set[str]) -> str | None:
    t = fold(unit).strip()
    if not t or t in made:
        return None
    if made:
        t = HEX.sub(lambda m: " " if m.group() in made else m.group(), t)
    return t


def leak_check(out_dir: str | Path, identifiers: Mapping[str, Iterable[str]],
               name_parts: Mapping[str, Iterable[str]] | None = None,
               generated: Iterable[str] | None = None,
               matcher: Matcher | None = None) -> list[tuple[str, str]]:
    """Search every file under out_dir for every identifying value; return (file, field) hits.

    Values are compared normalised (case, accents' forms and separators ignored, inside
    words too), in every cell of CSV and Parquet files, every string of JSON, the text and
    attributes of every XML member of an XLSX, and every line of any other file. `name_parts`
    (single words of names) and values of 4–5 letters and digits are searched as whole words
    in the data tables. `generated`: the pseudonyms and hashes the export made (default: read
    from the folder), masked before searching.
    """
    out_dir = Path(out_dir)
    m = matcher or Matcher.build(identifiers, name_parts)
    made = {fold(v) for v in generated} if generated is not None else generated_values(out_dir)
    hits: set[tuple[str, str]] = set()
    # a text is searched once: the CSV and Parquet copies of a table hold the same cells, and
    # session ids differ only in their pseudonym, which masking removes
    by_unit: dict[tuple[str, bool], frozenset[str]] = {}
    by_text: dict[tuple[str, bool], frozenset[str]] = {}
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(out_dir).as_posix()
        data_table = path.stem in DATA_TABLES and path.suffix in (".csv", ".parquet")
        for column in m.find(rel, whole_words=False):
            hits.add((rel, column))
        for unit in _units(path):
            if len(unit) < MIN_WORD:  # cell references, style numbers: nothing fits in them
                continue
            found = by_unit.get((unit, data_table))
            if found is None:
                text = _masked(unit, made)
                found = frozenset() if text is None else by_text.get((text, data_table))
                if found is None:
                    found = frozenset(m.find(text, whole_words=data_table))
                    by_text[(text, data_table)] = found
                by_unit[(unit, data_table)] = found
            hits.update((rel, column) for column in found)
    return sorted(hits)


__all__ = ["CHUNK", "SEARCH_ROLES", "Matcher", "compact", "date_spellings", "fold",
           "generated_values", "identifiers", "leak_check", "name_parts", "own_texts"]
