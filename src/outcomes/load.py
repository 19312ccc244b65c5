"""Load clinic exports (CSV, XLSX, Parquet) into the canonical tables, losing nothing.

Every data row read is either loaded or rejected with its file, the row number a
person sees (line number in a CSV, Excel row number in a workbook, record number
in Parquet), the field, the raw value and the reason: `rows_read ==
rows_loaded + rows_rejected` always. Implausible but usable values are kept
unchanged and reported as warnings. Input files are only ever read.

Speed: a CSV is read once by pyarrow with every column as text, then each
column is converted by a strict vectorised cast; only a column whose cast fails
takes the slower path that finds the offending cells.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import posixpath
import re
import stat
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from outcomes import schema
from outcomes.arrowtext import arrow_strings
from outcomes.errors import LoadError
from outcomes.parallel import map_threads
from outcomes.progress import Progress

TRUE_WORDS = {"true", "yes", "y", "1", "x", "ja", "j", "evet", "oui", "si", "sí", "wahr"}
FALSE_WORDS = {"false", "no", "n", "0", "nein", "hayır", "hayir", "non", "falsch"}
#: Spellings of "not recorded" in typed (number, yes/no, date) columns.
MISSING_WORDS = {"", "na", "n/a", "nan", "null", "-", "–", "—", "?", "not recorded"}
UNITS = {"mJ": 1, "J": 1000}
DATE_SHAPE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
REJECTION_COLUMNS = ["file", "row", "field", "value", "reason"]
ROW_REFERENCE = re.compile(r"\b(of|on) row \d+")
WARNING_COLUMNS = ["file", "row", "field", "value", "kind", "message"]
FILE_TYPES = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".xlsx": "xlsx", ".xlsm": "xlsx",
              ".parquet": "parquet", ".pq": "parquet"}


def _require_regular_file(path: Path, what: str = "") -> None:
    """Only regular files are read (after following links): a folder, a FIFO, a device
    or a link to /dev/zero would hang the reader or fill memory."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:  # a dangling link, a loop of links, no permission
        raise LoadError(f"{what}{path} cannot be opened ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise LoadError(f"{what}{path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise LoadError(f"{what}{path} is not a regular file (a pipe, device or socket "
                        "cannot be read as an export)")


# ---------------------------------------------------------------------------------------------
# mapping files


@dataclass
class Mapping:
    """How one export maps onto a canonical table (the mapping file of the design)."""

    table: str | None = None
    sheet: str | None = None
    delimiter: str | None = None
    decimal: str = "."
    encoding: str = "utf-8"
    date_format: str | None = None
    header_row: int = 1
    columns: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    true_values: list[str] = field(default_factory=list)
    false_values: list[str] = field(default_factory=list)
    path: Path | None = None


#: The keys of a mapping file's [source] section.
SOURCE_KEYS = frozenset({"table", "sheet", "delimiter", "decimal", "encoding", "date_format",
                         "header_row"})


def read_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; any mistake is a LoadError naming it (and the key)."""
    path = Path(path)
    if not path.exists():
        raise LoadError(f"mapping file {path} does not exist")
    _require_regular_file(path, "mapping file ")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # Notepad writes a BOM
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LoadError(f"mapping file {path} is not valid TOML: {exc}") from None
    except RecursionError:  # tables or lists nested thousands deep
        raise LoadError(f"mapping file {path} is not valid TOML: it is nested too deeply"
                        ) from None
    except OSError as exc:
        raise LoadError(f"mapping file {path} cannot be read ({exc.strerror or exc})") from None
    where = f"mapping file {path.name}"
    unknown = set(doc) - {"source", "columns", "units", "values"}
    if unknown & SOURCE_KEYS:
        key = min(unknown & SOURCE_KEYS)
        raise LoadError(f"{where}: {key} belongs under [source] (write [source] on the line "
                        f"before it)")
    for section in ("source", "columns", "units", "values"):
        if not isinstance(doc.get(section, {}), dict):
            raise LoadError(f"{where}: {section} must be a section ([{section}] on a line of "
                            "its own, then its keys), not a single value")
    for section in ("columns", "units", "values"):  # written below another section
        stray = set(doc.get(section, {})) & SOURCE_KEYS
        if stray:
            raise LoadError(f"{where}: {min(stray)} is under [{section}] but belongs under "
                            "[source] (move it above the other sections)")
    if unknown:
        key = min(unknown)
        what = f"section [{key}]" if isinstance(doc[key], dict) else f"key {key!r}"
        raise LoadError(f"{where} has an unknown {what} (it takes [source], [columns], "
                        "[units] and [values])")
    src = doc.get("source", {})
    if set(src) - SOURCE_KEYS:
        raise LoadError(f"{where}: unknown [source] key '{min(set(src) - SOURCE_KEYS)}'")

    def text(key: str, value: Any, section: str = "source") -> str:
        if not isinstance(value, str):
            raise LoadError(f"{where}: [{section}] {key} must be text in quotes, not "
                            f"{_toml_kind(value)} {value!r}")
        return value

    m = Mapping(path=path)
    m.table = src.get("table")
    if m.table not in (None, "sessions", "outcomes"):
        raise LoadError(f"{where}: table must be \"sessions\" or \"outcomes\", not {m.table!r}")
    m.sheet = None if "sheet" not in src else text("sheet", src["sheet"])
    m.decimal = text("decimal", src.get("decimal", "."))
    if m.decimal not in (".", ","):
        raise LoadError(f"{where}: decimal must be \".\" or \",\", not {m.decimal!r}")
    if "delimiter" in src:
        m.delimiter = text("delimiter", src["delimiter"])
        if len(m.delimiter) != 1 or m.delimiter in "\"\r\n":
            raise LoadError(f"{where}: delimiter must be one character (not a quote or a line "
                            f"break), not {m.delimiter!r}")
        if m.delimiter == m.decimal:
            raise LoadError(f"{where}: delimiter and decimal are both {m.decimal!r}; a number "
                            "such as 2,5 could not be told from two values")
    m.encoding = text("encoding", src.get("encoding", "utf-8"))
    try:
        "".encode(m.encoding)
    except LookupError:
        raise LoadError(f"{where}: unknown encoding {m.encoding!r}") from None
    if "date_format" in src:
        m.date_format = _check_date_format(text("date_format", src["date_format"]), where)
    m.header_row = src.get("header_row", 1)
    if not isinstance(m.header_row, int) or isinstance(m.header_row, bool) or m.header_row < 1:
        raise LoadError(f"{where}: header_row must be a whole number from 1, not "
                        f"{m.header_row!r}")
    m.columns = {str(k): text(str(k), v, "columns") for k, v in doc.get("columns", {}).items()}
    by_header: dict[str, str] = {}
    for fname, header in m.columns.items():
        other = by_header.setdefault(" ".join(header.split()).casefold(), fname)
        if other != fname:  # (headers match whatever their case and spacing)
            raise LoadError(f"{where} maps both {other} and {fname} to the column "
                            f"{m.columns[other]!r}; a column can give one field only")
    m.units = {str(k): text(str(k), v, "units") for k, v in doc.get("units", {}).items()}
    for fname, unit in m.units.items():
        if unit not in UNITS:
            raise LoadError(f"{where}: unit {unit!r} for {fname} is not one of {', '.join(UNITS)}")
        if not fname.endswith("_mj"):
            raise LoadError(f"{where}: [units] only applies to energy fields, not {fname}")
    values = doc.get("values", {})
    if set(values) - {"true", "false"}:
        raise LoadError(f"{where}: [values] takes only true and false lists")
    m.true_values = _spellings(values.get("true", []), "true", where)
    m.false_values = _spellings(values.get("false", []), "false", where)
    clash = {v.strip().lower() for v in m.true_values} & {v.strip().lower() for v in m.false_values}
    if clash:
        raise LoadError(f"{where}: {min(clash)!r} is listed as both true and false")
    return m


def _toml_kind(value: Any) -> str:
    """What a TOML value is, in words: 'a number', 'a list'."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "the number"
    if isinstance(value, list):
        return "the list"
    if isinstance(value, dict):
        return "the table"
    return "the value"


def _spellings(value: Any, key: str, where: str) -> list[str]:
    """A [values] list of spellings; one spelling alone is a list of one."""
    items = value if isinstance(value, list) else [value]
    for v in items:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise LoadError(f"{where}: [values] {key} must be a list of spellings in quotes, "
                            f"such as [\"ja\", \"x\"], not {value!r}")
    return [str(v) for v in items]


def _check_date_format(fmt: str, where: str) -> str:
    """A date_format must write a day, a month and a year and read them back (a sample
    date round trip, as strptime and pandas read it)."""
    if "%" not in fmt:
        raise LoadError(f"{where}: date_format {fmt!r} has no % codes (e.g. %d.%m.%Y)")
    sample = dt.datetime(2024, 11, 23)
    try:
        written = sample.strftime(fmt)
        back = dt.datetime.strptime(written, fmt)
        pd.to_datetime(pd.Series([written]), format=fmt)
    except (ValueError, TypeError, OverflowError):
        back = None
    if back is None or back.date() != sample.date():
        raise LoadError(f"{where}: date_format {fmt!r} cannot read a date with day, month "
                        "and year (e.g. %d.%m.%Y)")
    return fmt


def mapping_beside(path: str | Path) -> Path | None:
    """The mapping file that sits beside an export (`sessions.mapping.toml`), if any."""
    path = Path(path)
    candidate = path.with_name(path.name.split(".")[0] + ".mapping.toml")
    return candidate if candidate.is_file() else None


def reason_kind(reason: str) -> str:
    """A rejection reason with its row reference made generic, for counting reasons:
    `duplicate of row 4` and `duplicate of row 9` are both `duplicate of row N`, the
    wording of the rejection table in the README."""
    return ROW_REFERENCE.sub(r"\1 row N", str(reason))


def reason_label(reasons: Iterable[str]) -> str:
    """The wording for a group of rows rejected for one kind of reason: the reason itself
    when the rows share it exactly (`duplicate of row 4`), else its kind."""
    distinct = set(map(str, reasons))
    return next(iter(distinct)) if len(distinct) == 1 else reason_kind(next(iter(distinct)))


# ---------------------------------------------------------------------------------------------
# raw readers: each returns a Read


#: What a reader returns: the export's own columns as read (one row per data row), the
#: row number of each as a person sees it, each CSV record's text (the duplicate key),
#: the rows that could not be split into the header's fields (row, value, reason), and
#: the Excel error cells ({column: {position of the row read: '#DIV/0!'}}).
Read = tuple[pd.DataFrame, np.ndarray, "RecordText | None", pd.DataFrame | None,
             dict[str, dict[int, str]]]


def _sniff_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        counts = {d: first.count(d) for d in ",;\t|"}
        return max(counts, key=counts.get) if max(counts.values()) else ","


def _file_bytes(path: Path) -> Any:
    """The file's bytes: memory-mapped when large (no copy; never written), else read."""
    if path.stat().st_size < 1 << 24:
        return path.read_bytes()
    return pa.memory_map(str(path), "r").read_buffer()


def _read_csv(path: Path, m: Mapping) -> Read:
    data = _file_bytes(path)  # bytes or an arrow buffer
    buf = np.frombuffer(data, dtype=np.uint8)
    enc = m.encoding.lower().replace("_", "-")
    if enc in ("utf-8", "utf8") and buf[:3].tobytes() == b"\xef\xbb\xbf":
        data, buf = data[3:], buf[3:]
    start = bytes(buf[:4096])
    if _one_byte_lines(m.encoding) and (start[:2] in (b"\xff\xfe", b"\xfe\xff")
                                         or start.count(0) > len(start) // 4):
        raise LoadError(f"{path.name} looks like UTF-16 text (a UTF-16 byte order mark, or a "
                        f"zero byte in every other place), not {m.encoding}; set encoding = "
                        "\"utf-16\" in the mapping file")
    try:  # strict, but a character cut at the end of the piece waits for its last bytes
        head = codecs.getincrementaldecoder(m.encoding)(errors="strict").decode(
            bytes(buf[:65536]), final=len(buf) <= 65536)
    except UnicodeDecodeError:
        raise LoadError(f"{path.name} is not readable as {m.encoding}; "
                        "set encoding in the mapping file") from None
    lines = head.splitlines()
    if len(lines) < m.header_row:
        raise LoadError(f"{path.name} has no header on row {m.header_row}")
    body = "\n".join(lines[m.header_row - 1:m.header_row + 50])
    delim = m.delimiter or _sniff_delimiter(body)
    # the header record as the reader sees it: a quoted name may span lines
    header = next(csv.reader(io.StringIO(_below_lines(head, m.header_row - 1), newline=""),
                             delimiter=delim))
    _check_headers(header, path)
    if len(lines) == m.header_row and len(buf) <= 65536 and not head.endswith(("\n", "\r")):
        # a header without rows or a line end (the reader refuses it): no rows
        empty = pd.DataFrame({i: pd.Series([], dtype="str") for i in range(len(header))})
        empty.columns = header
        return _blank_headers(empty), np.zeros(0, dtype=np.int64), None, None, {}
    # large_string: what pandas' string columns hold, so to_pandas copies nothing
    conv = pacsv.ConvertOptions(column_types={h: pa.large_string() for h in header},
                                strings_can_be_null=True, null_values=[""],
                                quoted_strings_can_be_null=True)
    table = None
    breaks = None
    skipped_fast: list[Any] = []  # rows with the wrong number of fields, per read
    skipped_full: list[Any] = []
    if _one_byte_lines(m.encoding):
        # Reading with newlines_in_values=False is much faster, but the reader then splits
        # the file into blocks at any line break: the table is kept only when no value
        # spans a line, which the scan (run meanwhile: numpy and arrow free the GIL) tells.
        with ThreadPoolExecutor(max_workers=1) as pool:
            fast = pool.submit(_read_csv_table, data, m, _parse_options(
                delim, newlines_in_values=False, skipped=skipped_fast), conv, skipped_fast)
            breaks, quotes = _scan(buf)
            lines_are_records = _values_stay_on_their_line(buf, breaks, quotes, delim)
            try:
                table = fast.result()
            except pa.ArrowInvalid:
                table = None
            if not lines_are_records:
                table = None
    if table is None:  # values may span lines: unless a quote is never closed
        codes = buf if _one_byte_lines(m.encoding) else np.frombuffer(
            bytes(buf).decode(m.encoding, errors="replace").encode("utf-32-le"), dtype="<u4")
        line = _open_quote_line(codes, delim, m.header_row - 1)
        if line is not None:
            raise LoadError(f"{path.name}: the quote that opens a value on line {line} is "
                            "never closed, so the reader would take the rest of the file as "
                            "that one value; close the quote or remove it")
        try:
            table = _read_csv_table(data, m, _parse_options(
                delim, newlines_in_values=True, skipped=skipped_full), conv, skipped_full)
        except pa.ArrowInvalid as exc:
            raise LoadError(_csv_error(path, str(exc), delim, m.encoding)) from None
    else:
        skipped_full = skipped_fast
    n = table.num_rows
    frame = _blank_headers(table.to_pandas())
    if skipped_full:  # rows with the wrong number of fields: found again, by line
        rows, malformed = _malformed_rows(path, bytes(buf), m, delim, len(header), n,
                                          len(skipped_full))
        keys = None
        found = None if breaks is None else _record_lines(buf, breaks, quotes, delim,
                                                          m.header_row - 1)
        if found is not None and len(found[0]) == n + len(malformed):
            fits = ~np.isin(found[0], malformed["row"].to_numpy())
            if np.array_equal(found[0][fits], rows):  # the same records: keep their text
                text = found[1]
                keys = RecordText(buf, text.starts[fits], text.stops[fits])
        return frame, rows, keys, malformed, {}
    # Row numbers as a person sees them: line numbers. Fast when every record is one line.
    newlines = len(breaks) if breaks is not None else int(np.count_nonzero(buf == 10))
    ends_open = len(buf) == 0 or buf[-1] != 10
    if m.encoding.lower().startswith("utf-16"):
        rows, keys = _csv_line_numbers(bytes(buf), m, delim), None
    elif newlines + ends_open == m.header_row + n:
        rows = np.arange(m.header_row + 1, m.header_row + 1 + n, dtype=np.int64)
        if breaks is None:
            breaks = np.flatnonzero(buf == 10)
        keys = _line_text(buf, breaks, m.header_row, n)
    else:  # values span lines, or blank lines: follow the records through the quotes
        found = None if breaks is None else _record_lines(buf, breaks, quotes, delim,
                                                          m.header_row - 1)
        if found is not None and len(found[0]) == n:
            rows, keys = found
        else:
            rows, keys = _csv_line_numbers(bytes(buf), m, delim), None
    return frame, rows, keys, None, {}


def _parse_options(delim: str, newlines_in_values: bool, skipped: list[Any]
                   ) -> pacsv.ParseOptions:
    """The reader's options: a row with the wrong number of fields is set aside in
    `skipped` (the reader cannot say which line it was; _malformed_rows finds it)."""
    def set_aside(row: Any) -> str:
        skipped.append(row)
        return "skip"

    return pacsv.ParseOptions(delimiter=delim, newlines_in_values=newlines_in_values,
                              invalid_row_handler=set_aside)


#: More rows than this with the wrong number of fields (and more than a tenth of them):
#: the delimiter or quoting is wrong for the whole file, not a few rows.
MALFORMED_MOST = 10


def _malformed_rows(path: Path, data: bytes, m: Mapping, delim: str, width: int, n: int,
                    skipped: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Line numbers of the rows read, and a rejection for each row with the wrong number
    of fields (the reader skipped it): a few such rows are rejected, not the file."""
    records = _csv_records(data, m, delim)
    good = np.asarray([line for line, rec in records if len(rec) == width], dtype=np.int64)
    bad = [(line, rec) for line, rec in records if len(rec) != width]
    first = (f"line {bad[0][0]} has {len(bad[0][1])} fields where the header has {width}"
             if bad else f"a row does not have the header's {width} fields")
    if len(good) != n or len(bad) != skipped or not len(good) \
            or len(bad) > max(MALFORMED_MOST, len(records) // 10):
        raise LoadError(f"{path.name} is not a readable CSV file with delimiter "
                        f"{_delimiter_name(delim)}: {first}; check the delimiter (and quoting) in the mapping file, "
                        f"or header_row if the header is not on row {m.header_row}")
    malformed = pd.DataFrame({
        "row": [line for line, _ in bad], "value": [delim.join(rec) for _, rec in bad],
        "reason": [f"{len(rec)} fields where the header has {width}" for _, rec in bad]})
    return good, malformed


def _blank_headers(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns without a header: dropped when every cell is empty (the trailing
    delimiters spreadsheets write), else kept, named column_N after their position."""
    names = [str(c) for c in frame.columns]
    blank = {j for j, h in enumerate(names) if not h.strip()}
    if not blank:
        return frame
    keep = [j for j in range(len(names))
            if j not in blank or _as_text(frame.iloc[:, j]).notna().any()]
    out = frame.iloc[:, keep]
    out.columns = [_unused_name(j, names) if j in blank else names[j] for j in keep]
    return out


def _unused_name(j: int, names: list[str]) -> str:
    """column_N for the headerless column at position j (0-based), N its position, made
    unique against the file's own headers."""
    name = f"column_{j + 1}"
    while name in names:
        name += "_"
    return name


def _scan(buf: np.ndarray, step: int = 1 << 18) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions of every line feed, and of every double quote when no CR stands alone.

    The quotes are None when a CR is not followed by a line feed (the CSV reader also
    breaks lines there) or quotes abound (not worth checking). One pass in cache-sized
    pieces: about twice as fast as whole-array comparisons.
    """
    breaks, quotes = [], []
    n_breaks = n_quotes = 0
    usable = True
    for i in range(0, len(buf), step):
        piece = buf[i:i + step]
        b = np.flatnonzero(piece == 10)
        breaks.append(b + i)
        n_breaks += len(b)
        if not usable:
            continue
        cr = np.flatnonzero(piece == 13) + i
        if len(cr) and ((cr + 1 >= len(buf)).any()
                        or (buf[np.minimum(cr + 1, len(buf) - 1)] != 10).any()):
            usable = False
            continue
        q = np.flatnonzero(piece == 34)
        quotes.append(q + i)
        n_quotes += len(q)
        usable = n_quotes <= 4 * n_breaks + 10_000
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(breaks) if breaks else empty,
            (np.concatenate(quotes) if quotes else empty) if usable else None)


def _read_csv_table(data: Any, m: Mapping, parse_opts: pacsv.ParseOptions,
                    conv: pacsv.ConvertOptions, skipped: list[Any] | None = None) -> pa.Table:
    """Every column as text; a record longer than arrow's default block is read again
    (`skipped`, filled by parse_opts' invalid-row handler, starts afresh then)."""
    for block_size in (None, 1 << 26):
        if skipped is not None:
            skipped.clear()
        read_opts = pacsv.ReadOptions(skip_rows=m.header_row - 1, encoding=m.encoding,
                                      **({"block_size": block_size} if block_size else {}))
        try:
            return pacsv.read_csv(pa.BufferReader(data), read_opts, parse_opts, conv)
        except pa.ArrowInvalid as exc:
            if block_size or "block size" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _one_byte_lines(encoding: str) -> bool:
    """Line breaks, quotes and delimiters are single ASCII bytes in this encoding."""
    enc = encoding.lower().replace("_", "-")
    return enc in {"utf-8", "utf8", "ascii", "us-ascii", "latin-1", "latin1", "iso-8859-1",
                   "iso-8859-15", "cp1252", "windows-1252"}


def _values_stay_on_their_line(buf: np.ndarray, breaks: np.ndarray, q: np.ndarray | None,
                               delim: str) -> bool:
    """True when no quoted value can hold a line break, so lines are records.

    Follows the CSV reader's quoting (a quote opens a value only at its start, and a
    doubled quote inside quotes is a quote): counting the quotes on each line, a line
    is left inside quotes exactly when it has an odd number of them, provided no quote
    stands in the middle of an unquoted value. Both are checked; a lone CR (also a line
    break to the reader) or very many quotes (q is None, see _scan) answer False.
    """
    if q is None:
        return False
    if len(q) == 0:
        return True
    line = np.searchsorted(breaks, q)  # line of each quote: the line breaks before it
    new_line = np.ones(len(q), dtype=bool)
    new_line[1:] = line[1:] != line[:-1]
    idx = np.arange(len(q))
    k = idx - np.maximum.accumulate(np.where(new_line, idx, 0))  # quotes before it, same line
    last = np.ones(len(q), dtype=bool)
    last[:-1] = new_line[1:]
    if (k[last] % 2 == 0).any():  # a line with an odd number of quotes
        return False
    prev = buf[np.maximum(q - 1, 0)]
    at_start = (q == 0) | (prev == 10) | (prev == ord(delim))
    # an even number of quotes before it: outside quotes, so it must open a value (or be
    # the second of a doubled quote, right after the first)
    outside = (k % 2 == 0) & ~at_start & (prev != 34)
    return not outside.any()


def _open_quote_line(codes: np.ndarray, delim: str, skip: int) -> int | None:
    """The line on which a quoted value opens that is never closed, else None.

    `codes`: the file's bytes (or code points); the first `skip` lines are skipped as
    lines, as the reader does. Quotes as the CSV reader reads them: a quote opens a
    value only at the value's start, a doubled quote inside quotes is a quote. When
    every quote outside quotes opens a value (the usual case), the quotes pair up in
    order and an odd count means the last one is never closed; otherwise each quote is
    followed in turn.
    """
    breaks = np.flatnonzero(codes == 10)
    base = 0 if skip == 0 else (int(breaks[skip - 1]) + 1 if len(breaks) >= skip
                                else len(codes))
    q = np.flatnonzero(codes[base:] == 34) + base
    if not len(q):
        return None
    prev = codes[np.maximum(q - 1, 0)]
    at_start = (q == base) | (prev == 10) | (prev == 13) | (prev == ord(delim))
    outside = np.arange(len(q)) % 2 == 0
    opening: int | None = None
    if not (outside & ~at_start & (prev != 34)).any():
        opening = int(q[-1]) if len(q) % 2 else None
    else:
        i, inside = 0, False
        while i < len(q):
            if not inside:
                inside = bool(at_start[i])
                opening = int(q[i])
                i += 1
            elif i + 1 < len(q) and q[i + 1] == q[i] + 1:  # a doubled quote
                i += 2
            else:
                inside = False
                i += 1
        opening = opening if inside else None
    return None if opening is None else int(np.searchsorted(breaks, opening)) + 1


@dataclass(frozen=True)
class RecordText:
    """Where each data record's text lies in the file's bytes, without its line end: the
    exact-duplicate key (a record repeating an earlier one byte for byte)."""

    buf: np.ndarray
    starts: np.ndarray
    stops: np.ndarray

    @classmethod
    def of(cls, buf: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> RecordText:
        """Spans ending at a line feed or the file's end; a CR before the feed is dropped,
        so a last line without its CRLF equals the same line with it."""
        before = buf[np.maximum(stops - 1, 0)]
        if (before == 13).any():
            stops = stops - ((stops > starts) & (before == 13))
        return cls(buf, starts.astype(np.int64, copy=False), stops.astype(np.int64, copy=False))

    def lengths(self) -> np.ndarray:
        return self.stops - self.starts

    def codes(self, rows: np.ndarray) -> np.ndarray:
        """The given records' texts numbered in order of first appearance."""
        texts = [self.buf[a:b].tobytes() for a, b in zip(self.starts[rows], self.stops[rows],
                                                          strict=True)]
        return pa.array(texts, pa.large_binary()).dictionary_encode().indices.to_numpy()\
            .astype(np.int64)


def _line_text(buf: np.ndarray, breaks: np.ndarray, skip: int, n: int) -> RecordText:
    """Lines skip … skip+n-1 (0-based, skip >= 1: below the header) of a file whose
    records are its lines."""
    starts = breaks[skip - 1:skip - 1 + n] + 1
    stops = breaks[skip:skip + n]
    if len(stops) < n:  # the last line has no line feed
        stops = np.append(stops, len(buf))
    return RecordText.of(buf, starts, stops)


def _record_lines(buf: np.ndarray, breaks: np.ndarray, q: np.ndarray | None, delim: str,
                  skip: int) -> tuple[np.ndarray, RecordText] | None:
    """Start line and text of each data record, as the CSV reader splits them, from the
    positions of the line feeds and quotes (see _scan); None when counting cannot follow
    the quotes.

    As the reader does: the first `skip` lines are skipped as lines; then a line feed
    inside quotes continues the record, an empty line (or a lone CR before the feed) is
    no record, and the first record is the header. Inside quotes means an odd number of
    quotes since the skipped lines, which holds while every quote outside quotes opens a
    value (or doubles the one before it); otherwise, or with a lone CR (q is None), the
    caller reads the lines with Python's csv module. Vectorised: a million records with
    a few multi-line notes take milliseconds instead of seconds.
    """
    if q is None:
        return None
    base = 0 if skip == 0 else (int(breaks[skip - 1]) + 1 if len(breaks) >= skip else len(buf))
    q = q[q >= base]
    prev = buf[np.maximum(q - 1, 0)]
    opens = np.arange(len(q)) % 2 == 0  # an even number of quotes before it: outside
    at_start = (q == base) | (prev == 10) | (prev == ord(delim))
    if len(q) % 2 or (opens & ~at_start & (prev != 34)).any():
        return None
    first = np.searchsorted(breaks, base)  # the first line feed after the skipped lines
    inside = np.searchsorted(q, breaks[first:]) % 2 == 1
    ends = np.flatnonzero(~inside) + first  # line feeds that end a record: their index
    starts = np.r_[base, breaks[ends] + 1]
    stops = np.r_[breaks[ends], len(buf)]
    start_line = np.r_[skip + 1, ends + 2]  # feed i ends line i + 1
    length = stops - starts
    lone_cr = (length == 1) & (buf[np.minimum(starts, max(len(buf) - 1, 0))] == 13)
    record = np.flatnonzero((length > 0) & ~lone_cr)[1:]  # the first is the header
    return (start_line[record].astype(np.int64),
            RecordText.of(buf, starts[record], stops[record]))


def _below_lines(text: str, k: int) -> str:
    """The text after its first k lines, counted as the CSV reader's skip_rows counts
    them: as lines, whatever quotes they hold (a title above the header)."""
    above = re.match(r"(?:[^\r\n]*(?:\r\n|\n|\r)){" + str(k) + "}", text)
    return text[above.end() if above else 0:]


def _csv_records(data: bytes, m: Mapping, delim: str) -> list[tuple[int, list[str]]]:
    """Each data record with the line it starts on, by Python's csv module: for files
    whose records numpy cannot follow (UTF-16, a lone CR, odd quoting)."""
    csv.field_size_limit(2**31 - 1)  # a long note is a value, not an error
    text = data.decode(m.encoding, errors="replace")
    skip = m.header_row - 1
    reader = csv.reader(io.StringIO(_below_lines(text, skip), newline=""), delimiter=delim)
    records: list[tuple[int, list[str]]] = []
    start = skip + 1
    header_seen = False
    for rec in reader:
        line_no = start
        start = skip + reader.line_num + 1
        if not rec:  # an empty line is no record; a line of delimiters is (all cells missing)
            continue
        if header_seen:
            records.append((line_no, rec))
        header_seen = True
    return records


def _csv_line_numbers(data: bytes, m: Mapping, delim: str) -> np.ndarray:
    """Start line of each record, for files with blank lines or line breaks inside quotes."""
    return np.asarray([line for line, _ in _csv_records(data, m, delim)], dtype=np.int64)


def _csv_error(path: Path, message: str, delim: str, encoding: str = "utf-8") -> str:
    """One sentence for an unreadable CSV, without echoing the row (it may name a patient)."""
    if "UTF8" in message or "UTF-8" in message:  # bytes past the first 64 KB
        return (f"{path.name} is not readable as {encoding}; "
                "set encoding in the mapping file")
    # (rows with the wrong number of fields never get here: _malformed_rows has them)
    return f"{path.name} is not a readable CSV file with delimiter {_delimiter_name(delim)}"


def _delimiter_name(delim: str) -> str:
    """The delimiter as a message shows it: ',' or tab."""
    return {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}.get(delim, repr(delim))


def _check_headers(header: list[Any], path: Path) -> None:
    names = [str(h).strip() for h in header]
    seen: set[str] = set()
    for h in names:
        if h and h in seen:
            raise LoadError(f"{path.name} has the column {h!r} twice; rename one of them")
        seen.add(h)


#: A sheet is refused when the grid from A1 to its last cell has more cells than this
#: and more cells than its XML has bytes (fewer than one cell in ~25 holds a value):
#: a stray value far below or to the right of the data, which would make the reader
#: fill memory with empty cells (one value in XFD1048576 is 17 billion cells).
XLSX_MIN_CELLS = 1_000_000
OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # an encrypted .xlsx, an .xls, a .doc
DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="(?:[A-Z]+[0-9]+:)?([A-Z]{1,3})([0-9]{1,7})"')
ERROR_CELL = re.compile(rb'<(?:\w+:)?c\s([^>/]*\bt="e"[^>/]*)>(.*?)</(?:\w+:)?c>', re.DOTALL)
CELL_REF = re.compile(rb'\br="([A-Z]{1,3})([0-9]{1,7})"')
CELL_VALUE = re.compile(rb"<(?:\w+:)?v>([^<]*)<")
ROW_NUMBER = re.compile(rb'\br="([0-9]{1,7})"')


@dataclass
class SheetXml:
    """What the sheet's XML says before calamine reads it: its last cell (1-based row
    and column: as <dimension> names it, or lower, the last row's number and column 1,
    when <dimension> is missing or says less), its size, and its error cells."""

    last_cell: tuple[int, int] | None
    size: int
    errors: list[tuple[int, int, str]]  # 0-based row, column, '#DIV/0!'


def _column_number(letters: bytes) -> int:
    n = 0
    for c in letters:
        n = n * 26 + c - 64
    return n


def _cell_name(row: int, col: int) -> str:
    """1-based row and column as Excel names the cell: (1048576, 16384) is XFD1048576."""
    letters = ""
    while col:
        col, r = divmod(col - 1, 26)
        letters = chr(65 + r) + letters
    return f"{letters}{row}"


def _not_xlsx(path: Path, why: str) -> LoadError:
    return LoadError(f"{path.name} is not a readable Excel workbook ({why}, so not an .xlsx "
                     "workbook); open it in Excel and save it as .xlsx")


def _check_xlsx_container(path: Path) -> None:
    """An .xlsx is a zip holding xl/workbook.xml; say what the file is instead."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == OLE_MAGIC:
        raise _not_xlsx(path, "it is a password-protected workbook or an old .xls file")
    if not zipfile.is_zipfile(path):
        raise _not_xlsx(path, "it is not a zip file" if head else "it is empty")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _not_xlsx(path, f"a damaged zip file: {exc}") from None
    if "xl/workbook.xml" not in names:
        raise _not_xlsx(path, "a zip file without a workbook in it")


def _sheet_part(zf: zipfile.ZipFile, sheet: str) -> str | None:
    """The zip member holding a sheet's cells (xl/worksheets/sheetN.xml), found through
    xl/workbook.xml and its relationships; None when they do not say."""
    def xml(name: str) -> ET.Element | None:
        try:
            if zf.getinfo(name).file_size > 1 << 26:
                return None
            return ET.fromstring(zf.read(name))
        except (KeyError, ET.ParseError, zipfile.BadZipFile, OSError, ValueError):
            return None

    book, rels = xml("xl/workbook.xml"), xml("xl/_rels/workbook.xml.rels")
    if book is None or rels is None:
        return None
    rid = next((v for el in book.iter() if el.tag.endswith("}sheet")
                and el.get("name") == sheet
                for k, v in el.attrib.items() if k.endswith("}id")), None)
    target = next((el.get("Target") for el in rels if el.get("Id") == rid), None)
    if not target:
        return None
    part = target.lstrip("/") if target.startswith("/") else posixpath.normpath("xl/" + target)
    return part if part in zf.namelist() else None


def _read_sheet_xml(path: Path, sheet: str) -> SheetXml | None:
    """The sheet's <dimension>, its size and its error cells, read from the zip in
    pieces cut at row ends (calamine returns an error cell as an empty one)."""
    with zipfile.ZipFile(path) as zf:
        part = _sheet_part(zf, sheet)
        if part is None:
            return None
        last_cell = None
        last_row = 0
        size = 0
        errors: list[tuple[int, int, str]] = []
        carry = b""
        with zf.open(part) as fh:
            while True:
                chunk = fh.read(1 << 22)
                if size == 0:
                    found = DIMENSION.search(chunk)
                    if found:
                        last_cell = (int(found[2]), _column_number(found[1]))
                size += len(chunk)
                text = carry + chunk
                cut = text.rfind(b"row>") + 4 if chunk else len(text)  # no cell cut in two
                if cut < 4:
                    cut = 0
                head, carry = text[:cut], text[cut:]
                tag = head.rfind(b"row ")  # the last row's opening tag: its number
                if tag >= 0:
                    number = ROW_NUMBER.search(head, tag, head.find(b">", tag) + 1)
                    last_row = max(last_row, int(number[1])) if number else last_row
                if b't="e"' in head:
                    for cell in ERROR_CELL.finditer(head):
                        ref, value = CELL_REF.search(cell[1]), CELL_VALUE.search(cell[2])
                        if ref and value:
                            errors.append((int(ref[2]) - 1, _column_number(ref[1]) - 1,
                                           value[1].decode("utf-8", "replace")))
                if not chunk:
                    break
    if last_cell is None or last_row > last_cell[0]:
        last_cell = (last_row, last_cell[1] if last_cell else 1) if last_row else last_cell
    return SheetXml(last_cell, size, errors)


def _check_extent(path: Path, sheet: str, last_row: int, last_col: int, size: int) -> None:
    """Refuse a sheet whose grid (A1 to its last cell) is far larger than its content."""
    cells = last_row * last_col
    if cells > XLSX_MIN_CELLS and cells > size:
        raise LoadError(
            f"sheet {sheet!r} of {path.name} reaches cell {_cell_name(last_row, last_col)} "
            f"({last_row:,} rows × {last_col:,} columns) but holds little data; delete the "
            "empty rows and columns after the data (or the stray value far from it) and save "
            "it again")


def _read_xlsx(path: Path, m: Mapping) -> Read:
    from python_calamine import CalamineError, CalamineWorkbook

    _check_xlsx_container(path)
    try:
        wb = CalamineWorkbook.from_path(str(path))
    except (CalamineError, OSError, ValueError) as exc:
        raise LoadError(f"{path.name} is not a readable Excel workbook "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                        ) from None
    names = wb.sheet_names
    sheet_name = m.sheet if m.sheet else (names[0] if names else None)
    if sheet_name not in names:
        raise LoadError(f"{path.name} has no sheet named {m.sheet!r} "
                        f"(sheets: {', '.join(names)})")
    xml = _read_sheet_xml(path, sheet_name)
    size = xml.size if xml else sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    if xml and xml.last_cell:  # before calamine builds the grid
        _check_extent(path, sheet_name, *xml.last_cell, size)
    try:
        sheet = wb.get_sheet_by_name(sheet_name)
    except (CalamineError, IndexError, ValueError) as exc:
        raise LoadError(f"{path.name}: sheet {sheet_name!r} cannot be read ({exc})") from None
    # the real last cell (the <dimension> may be missing or wrong): before the grid from
    # A1 is made in Python
    if sheet.height and sheet.width:
        _check_extent(path, sheet_name, sheet.end[0] + 1, sheet.end[1] + 1, size)
    cells = sheet.to_python(skip_empty_area=False)
    for r, c, code in xml.errors if xml else []:  # as written, not empty: rejected below
        if r < len(cells) and c < len(cells[r]):
            cells[r][c] = code
    if len(cells) < m.header_row:
        raise LoadError(f"{path.name} has no header on row {m.header_row} of sheet "
                        f"{m.sheet or wb.sheet_names[0]!r}")
    header = [("" if h is None else str(h)).strip() for h in cells[m.header_row - 1]]
    # a column without a header is kept when it holds something (below: column_N)
    header += [""] * (max(map(len, cells[m.header_row:]), default=0) - len(header))
    _check_headers(header, path)
    body = cells[m.header_row:]
    width = len(header)
    columns = _cell_columns(body, width)
    del cells, body
    # Each column: which cells are empty ("" or None); a text column becomes arrow
    # text straight away (converting each Python string once is the main cost here).
    texts = _arrow_texts(columns)
    empty = np.zeros((columns.shape[1], width), dtype=bool)
    for j, col in enumerate(columns):
        text = texts.get(j)
        if text is not None:
            empty[:, j] = pc.or_kleene(text.is_null(), pc.equal(text, "")).fill_null(True)\
                .to_numpy(zero_copy_only=False)
        else:
            empty[:, j] = (col == "") | (col == None)  # elementwise, per cell
    keep = np.flatnonzero(~empty.all(axis=1)) if width else np.zeros(0, dtype=np.int64)
    rows = keep.astype(np.int64) + m.header_row + 1
    by_column: dict[int, dict[int, str]] = {}  # error cells: column -> {row read: code}
    for r, c, code in xml.errors if xml else []:
        i = np.searchsorted(keep, r - m.header_row)
        if c < width and i < len(keep) and keep[i] == r - m.header_row:
            by_column.setdefault(c, {})[int(i)] = code
    cols: dict[str, Any] = {}
    errors: dict[str, dict[int, str]] = {}
    for j, h in enumerate(header):
        if not h and (not len(keep) or empty[keep, j].all()):
            continue  # no header and nothing in it: a spreadsheet's spare column
        name = h or _unused_name(j, header)
        if j in by_column:
            errors[name] = by_column[j]
        if not len(keep):
            cols[name] = pd.Series([], dtype=object)
            continue
        missing = empty[keep, j]
        if j in texts and not missing.all():
            # what pandas infers for text with gaps: str, empty cells missing
            text = texts[j].take(pa.array(keep))
            cols[name] = pd.Series(pc.if_else(pa.array(missing), pa.scalar(None, text.type),
                                              text), dtype="str")
            continue
        col = columns[j][keep]
        col[missing] = None  # an empty cell is missing
        # typed as pandas types what a cell-by-cell map returns
        cols[name] = _infer_cells(col)
    return pd.DataFrame(cols), rows, None, None, errors


def _cell_columns(body: list[list[Any]], width: int) -> np.ndarray:
    """The first `width` cells of each row as a (rows, width) object array (short rows
    padded with None); transposed, so that each row of the result is a column."""
    lengths = {len(r) for r in body}
    if len(lengths) == 1 and min(lengths) == width:
        grid = np.empty((len(body), width), dtype=object)
        grid[:] = body
        return grid.T
    grid = np.full((len(body), width), None, dtype=object)
    if body and width:
        if len(lengths) == 1 and min(lengths) > width:
            full = np.empty((len(body), min(lengths)), dtype=object)
            full[:] = body
            grid[:] = full[:, :width]
        else:
            for i, r in enumerate(body):
                part = r[:width]
                grid[i, :len(part)] = part
    return grid.T


def _arrow_texts(columns: np.ndarray, block: int = 4096) -> dict[int, pa.Array]:
    """Arrow text of each column whose cells are all text (or missing).

    Converted a block of rows at a time across all columns: the cell strings were
    made row by row, so a block's strings stay in the CPU cache while every column
    takes its share (about twice as fast as one whole column after another).
    """
    from pandas._config import using_string_dtype

    width, n = columns.shape if columns.ndim == 2 else (0, 0)
    if n < BY_VALUE_MIN_ROWS or not using_string_dtype():
        return {}
    parts: dict[int, list[pa.Array]] = {j: [] for j in range(width)}
    for start in range(0, n, block):
        for j in list(parts):
            try:
                parts[j].append(pa.array(columns[j, start:start + block],
                                         type=pa.large_string(), from_pandas=True))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                del parts[j]  # not all text: numbers, dates or mixed cells
    return {j: pa.chunked_array(p, pa.large_string()).combine_chunks()
            for j, p in parts.items()}


def _infer_cells(values: np.ndarray) -> Any:
    """What `Series.map` makes of these cell values: numbers, str, or object."""
    try:
        from pandas._libs import lib

        return lib.maybe_convert_objects(values)  # what map_infer does after mapping
    except (ImportError, AttributeError, TypeError):  # pandas internals moved: the slow way
        return pd.Series(values, dtype=object).map(lambda v: v)


def _parquet_column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dates as day timestamps and decimals as floats, so pandas gets typed columns: by
    default it makes dates (and decimals) Python objects, a million of them a column."""
    if pa.types.is_date(col.type):
        return col.cast(pa.timestamp("s"))
    if pa.types.is_decimal(col.type):
        return col.cast(pa.float64())
    return col


def _parquet_dtype(t: pa.DataType) -> Any:
    """Yes/no and whole-number columns as pandas' nullable types: with a missing cell
    pandas would make them objects (yes/no) or floats."""
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    if pa.types.is_signed_integer(t) or (pa.types.is_unsigned_integer(t) and t.bit_width < 64):
        return pd.Int64Dtype()
    return None


def _read_parquet(path: Path, m: Mapping) -> Read:
    import pyarrow.parquet as pq

    try:  # the schema first: the reader cannot name a column given twice
        _check_headers(pq.read_schema(path).names, path)
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoadError(f"{path.name} is not a readable Parquet file ({first})") from None
    table = pa.table([_parquet_column(c) for c in table.columns], names=table.column_names,
                     metadata=table.schema.metadata)  # pandas metadata: which is the index
    frame = table.to_pandas(types_mapper=_parquet_dtype)
    # a named index (df.set_index("patient_id").to_parquet()) holds data: keep it
    named = [n for n in frame.index.names if n is not None and n not in frame.columns]
    frame = (frame.reset_index(level=named) if named else frame).reset_index(drop=True)
    return frame, np.arange(1, len(frame) + 1, dtype=np.int64), None, None, {}


# ---------------------------------------------------------------------------------------------
# column parsers: each returns (values, bad mask, reason for the bad cells)


def _is_str(s: pd.Series) -> bool:
    """A real string column (not object, which pandas also calls a string dtype)."""
    return isinstance(s.dtype, pd.StringDtype)


def _as_text(s: pd.Series) -> pd.Series:
    """Values as stripped text, missing as NA; numbers from Excel written without '.0'."""
    arr = arrow_strings(s)
    if arr is not None:  # the same strip pandas does (utf8_trim_whitespace), without pandas
        arr = pc.utf8_trim_whitespace(arr)
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)
        return pd.Series(pd.array(arr, dtype="string"), index=s.index)
    if _is_str(s):
        out = s.str.strip()
    else:
        out = s.map(lambda v: _cell_text(v, strip=True)).astype("string")
    out = out.astype("string")
    return out.mask(out == "")


def _cell_text(v: Any, strip: bool = False) -> str | None:
    """One typed cell (Excel, Parquet) as the text a CSV would hold; None when empty.
    Whole numbers without '.0', dates and times in ISO form."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else pd.Timestamp(v).isoformat()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v).strip() if strip else str(v)


def _missing(text: pd.Series) -> np.ndarray:
    low = text.str.lower()
    return (text.isna() | low.isin(MISSING_WORDS)).to_numpy(dtype=bool, na_value=True)


def parse_string(s: pd.Series) -> tuple[pd.Series, np.ndarray, str]:
    """Text field: stripped, empty is missing. Never bad."""
    return _as_text(s), np.zeros(len(s), dtype=bool), ""


def parse_float(s: pd.Series, decimal: str = ".", factor: float = 1, percent: bool = False
                ) -> tuple[pd.Series, np.ndarray, str]:
    """Number field: strict parse (decimal point or comma), unit factor applied without noise;
    a `percent` field also reads '8 %' as 8."""
    values: np.ndarray
    bad = np.zeros(len(s), dtype=bool)
    if pd.api.types.is_bool_dtype(s.dtype):
        values = np.full(len(s), np.nan)
        bad = s.notna().to_numpy()
    elif pd.api.types.is_numeric_dtype(s.dtype):
        values = s.astype("float64").to_numpy(na_value=np.nan)
    else:
        values = None  # type: ignore[assignment]
        if _is_str(s) and decimal == ".":
            try:  # fast path: a clean column casts in one go
                values = pc.cast(pa.array(s), pa.float64()).to_numpy(zero_copy_only=False)
                if not np.isfinite(values[~np.isnan(values)]).all() or np.isnan(values).sum() != s.isna().sum():
                    values = None
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
                values = None
        if values is None:
            values, bad = _parse_float_slow(s, decimal, percent)
    if factor != 1:
        values = np.round(values * factor, 9)
    return pd.Series(values, index=s.index, dtype="Float64"), bad, "not a number"


#: Spaces between groups of three digits (1 234, also with the no-break spaces
#: spreadsheets write): removed; any other space inside a number makes it no number.
DIGIT_GROUPS = r"(?<=\d)[ \u00a0\u202f]+(?=\d{3}(?!\d))"


def _parse_float_slow(s: pd.Series, decimal: str, percent: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    out = np.full(len(s), np.nan)
    bad = np.zeros(len(s), dtype=bool)
    if s.dtype == object:
        isnum = s.map(lambda v: isinstance(v, int | float | np.number) and not isinstance(v, bool))
        isnum = isnum.to_numpy(dtype=bool)
        out[isnum] = s[isnum].astype("float64").to_numpy()
        isbool = s.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
        bad |= isbool
        rest = ~isnum & ~isbool
    else:
        rest = np.ones(len(s), dtype=bool)
    text = _as_text(s[rest])
    missing = _missing(text)
    # spaces only between groups of three digits (1 234); a typographic minus is a minus
    t = text.str.replace(DIGIT_GROUPS, "", regex=True).str.replace("\u2212", "-", regex=False)\
        .str.replace(r"^([+-])\s+", r"\1", regex=True)
    if percent:
        t = t.str.replace(r"\s*%$", "", regex=True)
    if decimal == ",":
        has_point = t.str.contains(".", regex=False).to_numpy(dtype=bool, na_value=False)
        t = t.str.replace(",", ".", regex=False)
    else:
        has_point = t.str.contains(",", regex=False).to_numpy(dtype=bool, na_value=False)
    num = pd.to_numeric(t.mask(missing | has_point), errors="coerce").astype("float64")
    num = num.to_numpy(na_value=np.nan, copy=True)
    num[~np.isfinite(num)] = np.nan
    out[rest] = num
    bad[rest] = ~missing & np.isnan(num)
    return out, bad


#: Whole numbers from this size on are rejected: a float (how cells are parsed) holds
#: every whole number only below it.
WHOLE_LIMIT = 2.0**53


def parse_int(s: pd.Series, decimal: str = ".") -> tuple[pd.Series, np.ndarray, Any]:
    """Whole-number field: a number with a fraction is bad, not rounded."""
    values, bad, _ = parse_float(s, decimal)
    v = values.to_numpy(dtype="float64", na_value=np.nan)
    # beyond 2**53 a float no longer holds every whole number (and beyond 2**63 no int64
    # does): such a cell is rejected, never wrapped round or rounded
    frac = ~np.isnan(v) & ((v != np.round(v)) | (np.abs(v) >= WHOLE_LIMIT))
    v[frac] = np.nan
    out = pd.array(np.where(np.isnan(v), 0, v).astype("int64"), dtype="Int64")
    out[np.isnan(v)] = pd.NA
    reason: Any = "not a number"
    if frac.any():  # each bad cell its own reason: 2.5 is not whole, 'abc' not a number
        reason = pd.Series(np.where(frac, "not a whole number",
                                    np.where(bad, "not a number", "")),
                           index=s.index, dtype=object)
    return pd.Series(out, index=s.index), bad | frac, reason


def parse_bool(s: pd.Series, true_words: set[str], false_words: set[str]) -> tuple[pd.Series, np.ndarray, str]:
    """Yes/no field: spellings case- and space-insensitive; blank is missing unless mapped."""
    reason = "not a yes/no value"
    if pd.api.types.is_bool_dtype(s.dtype):
        out = s.astype("boolean")
        if "" in false_words or "" in true_words:  # a blank cell mapped, as in a CSV
            out = out.fillna("" in true_words)
        return out, np.zeros(len(s), dtype=bool), reason
    if pd.api.types.is_numeric_dtype(s.dtype):
        # numbers (Excel, Parquet) read as the words a CSV would hold: 1 and 2 under the
        # mapping's [values] spellings, a blank cell as '' (one parse per distinct number)
        codes, distinct = pd.factorize(s, use_na_sentinel=False)
        words = pd.Series([_cell_text(v) for v in distinct], dtype=object)
        values, bad, _ = parse_bool(words, true_words, false_words)
        return (pd.Series(values.array.take(codes), index=s.index),
                np.asarray(bad, dtype=bool)[codes], reason)
    if s.dtype == object:
        s = s.map(lambda v: ("true" if v else "false") if isinstance(v, bool | np.bool_) else v)
    text = _as_text(s)
    low = text.str.lower().fillna("")
    is_true = low.isin(true_words).to_numpy(dtype=bool)
    is_false = low.isin(false_words).to_numpy(dtype=bool)
    missing = ~is_true & ~is_false & _missing(text)
    out = pd.array(np.where(is_true, True, False), dtype="boolean")
    out[~is_true & ~is_false] = pd.NA
    return pd.Series(out, index=s.index), ~is_true & ~is_false & ~missing, reason


#: The strptime codes a date_format may use: how a person writes each, and the shape
#: of its digits (None: no shape check, the code is matched as written).
DATE_CODES: dict[str, tuple[str, str | None]] = {
    "%d": ("DD", r"\d{1,2}"), "%m": ("MM", r"\d{1,2}"), "%Y": ("YYYY", r"\d{4}"),
    "%y": ("YY", r"\d{2}"), "%H": ("hh", r"\d{1,2}"), "%M": ("mm", r"\d{1,2}"),
    "%S": ("ss", r"\d{1,2}"), "%b": ("Mon", None), "%B": ("Month", None), "%%": ("%", None)}


def human_date_form(fmt: str) -> str:
    """'%d.%m.%Y' as a person reads it: 'DD.MM.YYYY' (for rejection reasons)."""
    return re.sub(r"%.", lambda c: DATE_CODES.get(c.group(0), (c.group(0), None))[0], fmt)


def _format_shape(fmt: str) -> re.Pattern[str]:
    """A regex for the shape of a strptime format, to tell 'impossible' from 'wrong form'."""
    out = ""
    i = 0
    while i < len(fmt):
        shape = DATE_CODES.get(fmt[i:i + 2], ("", None))[1]
        if shape is not None:
            out += shape
            i += 2
        else:
            out += re.escape(fmt[i])
            i += 1
    return re.compile(f"^{out}$")


def parse_date(s: pd.Series, date_format: str | None = None,
               excel_serials: bool = False) -> tuple[pd.Series, np.ndarray, pd.Series | str]:
    """Date field: ISO always, another form only with date_format; impossible dates are bad."""
    n = len(s)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    bad = np.zeros(n, dtype=bool)
    form = "YYYY-MM-DD" if date_format is None else \
        f"YYYY-MM-DD or {human_date_form(date_format)}"
    reasons = pd.Series("", index=s.index, dtype=object)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        v = s.dt.tz_localize(None) if getattr(s.dt, "tz", None) is not None else s
        return v.dt.floor("D").astype("datetime64[s]"), bad, ""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        s = s.astype(object)
    if _is_str(s) and date_format is None:
        try:  # fast path: a clean ISO column casts in one go (arrow's cast rejects 2025-02-31)
            arr = pc.cast(pa.array(s), pa.date32())
            return pd.Series(arr.to_pandas(), index=s.index).astype("datetime64[s]"), bad, ""
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
            pass
    rest = np.ones(n, dtype=bool)
    if s.dtype == object:
        kinds = s.map(lambda v: "d" if hasattr(v, "year") else
                      ("n" if isinstance(v, int | float) and not isinstance(v, bool) else "t"))
        isdate = (kinds == "d").to_numpy()
        if isdate.any():
            out[isdate] = pd.to_datetime(s[isdate].map(pd.Timestamp)).dt.floor("D")
        isnum = (kinds == "n").to_numpy() & s.notna().to_numpy()
        if isnum.any():
            if excel_serials:  # Excel stores dates as days since 1899-12-30
                days = np.floor(s[isnum].astype("float64"))
                ok = (days > 0) & (days < 2958466)
                out[isnum & _expand(ok, isnum)] = (
                    pd.Timestamp("1899-12-30") + pd.to_timedelta(days[ok], unit="D"))
                bad[isnum & ~_expand(ok, isnum)] = True
                reasons[isnum & ~_expand(ok, isnum)] = "not an Excel date number"
            else:
                bad[isnum] = True
                reasons[isnum] = f"a number, not a date ({form})"
        rest = ~isdate & ~isnum
    text = _as_text(s[rest])
    missing = _missing(text)
    iso = text.where(~text.str.match(ISO_DATETIME).fillna(False), text.str.slice(0, 10))
    parsed = pd.to_datetime(iso, format="%Y-%m-%d", errors="coerce")
    shape_iso = iso.str.match(DATE_SHAPE).fillna(False).to_numpy(dtype=bool)
    if date_format is not None:
        alt = pd.to_datetime(text, format=date_format, errors="coerce")
        parsed = parsed.fillna(alt)
        shape = shape_iso | text.str.match(_format_shape(date_format)).fillna(False).to_numpy(bool)
    else:
        shape = shape_iso
    failed = ~missing & parsed.isna().to_numpy()
    sub_reason = np.where(shape, "impossible date", f"not a date in the form {form}"
                          + ("" if date_format else "; set date_format in the mapping file"))
    out[rest] = parsed.dt.floor("D").astype("datetime64[s]").to_numpy()
    bad[rest] = failed
    reasons[rest] = np.where(failed, sub_reason, "")
    return out, bad, reasons


def _expand(mask_of_subset: pd.Series, where: np.ndarray) -> np.ndarray:
    full = np.zeros(len(where), dtype=bool)
    full[where] = np.asarray(mask_of_subset, dtype=bool)
    return full


# ---------------------------------------------------------------------------------------------
# the load itself


@dataclass
class LoadResult:
    """A loaded table with the full account of what happened to every row read."""

    table: str
    file: str
    data: pd.DataFrame
    rejections: pd.DataFrame
    warnings: pd.DataFrame
    rows_read: int
    unknown_columns: list[str]
    absent_fields: list[str]
    columns_used: dict[str, str]
    #: per loaded row, whether the export gave its session_id (else it was derived)
    session_id_given: np.ndarray | None = None

    @property
    def rows_rejected(self) -> int:
        """Rows with at least one rejection (a row of one file counts once)."""
        if not len(self.rejections):
            return 0
        return len(self.rejections[["file", "row"]].drop_duplicates())

    @property
    def rows_loaded(self) -> int:
        return self.rows_read - self.rows_rejected

    def unusable(self) -> str | None:
        """One sentence when rows were read but none could be loaded, else None.

        Names the commonest reason, and the mapping setting that usually causes it.
        """
        if self.rows_read == 0 or self.rows_loaded > 0:
            return None
        by = self.rejections.groupby(["field", "reason"], sort=False).size()
        (field, reason), n = by.idxmax(), int(by.max())
        hint = ""
        if "not a date in the form" in reason and "date_format" not in reason:
            hint = "; check date_format in the mapping file"
        elif reason == "not a number":
            values = self.rejections.loc[(self.rejections["field"] == field)
                                         & (self.rejections["reason"] == reason), "value"]
            if values.astype(str).str.fullmatch(r"\s*-?\d+[.,]\d+\s*").any():
                hint = "; check decimal in the mapping file"
        return (f"{Path(self.file).name}: none of its {self.rows_read:,} rows could be loaded "
                f"({n:,} rejected for {field}: {reason}{hint})")

    def summary(self) -> dict[str, Any]:
        """The row accounting as plain data (what `outcomes validate --json` prints)."""
        return {
            "file": self.file, "table": self.table, "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded, "rows_rejected": self.rows_rejected,
            "warnings": len(self.warnings), "unknown_columns": list(self.unknown_columns),
            "absent_fields": list(self.absent_fields),
        }


def detect_table(path: Path, headers: list[str]) -> str:
    """Guess sessions or outcomes from the file name, then from the headers."""
    name = path.name.lower()
    if "outcome" in name or "assessment" in name or "follow" in name:
        return "outcomes"
    if "session" in name or "treatment" in name:
        return "sessions"
    keys = {schema.normalise_header(h) for h in headers}
    outcome_marks = {"assessment_date", "instrument", "score", *schema.INSTRUMENTS}
    session_marks = {"session_date", "energy_start_mj", "coverage_pct", "passes"}
    return "outcomes" if len(keys & outcome_marks) > len(keys & session_marks) else "sessions"


def match_columns(headers: list[str], table: str, mapping: Mapping | None,
                  file: str) -> tuple[dict[str, str], list[str]]:
    """Canonical field → export header, and the headers that match nothing (kept aside)."""
    known = set(schema.fields(table))
    if table == "outcomes":
        known |= set(schema.INSTRUMENTS)
    used: dict[str, str] = {}
    def fold(h: str) -> str:  # case and spacing aside: a wrapped header cell matches
        return " ".join(h.split()).casefold()

    by_case = {h.strip().casefold(): h for h in headers}
    by_fold: dict[str, str | None] = {}
    for h in headers:  # a spacing-blind match only where it names one header
        by_fold[fold(h)] = h if fold(h) not in by_fold else None
    if mapping is not None:
        for fname, header in mapping.columns.items():
            if fname not in known:
                raise LoadError(f"mapping file {mapping.path.name if mapping.path else ''} maps "
                                f"{fname!r}, which is not a field of the {table} table")
            h = by_case.get(header.strip().casefold()) or by_fold.get(fold(header))
            if h is None:
                raise LoadError(f"mapping names column {header!r} for {fname}, "
                                f"which {file} does not have ({_header_hint(mapping, file)})")
            used[fname] = h
    aliases = schema.alias_index(table)
    if table == "outcomes":
        aliases.update({i: i for i in schema.INSTRUMENTS})
    taken = set(used.values())
    for h in headers:
        if h in taken:
            continue
        fname = aliases.get(schema.normalise_header(h))
        if fname and fname not in used:
            used[fname] = h
            taken.add(h)
    unknown = [h for h in headers if h not in taken]
    return used, unknown


def load(path: str | Path, mapping: Mapping | str | Path | None = None, table: str | None = None,
         progress: bool | None = None) -> LoadResult:
    """Load one export file into a canonical table, with its row accounting.

    The mapping defaults to one beside the file (`NAME.mapping.toml`). Raises
    LoadError (one sentence) when the file cannot be used at all.
    """
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path} does not exist")
    if path.is_dir():
        raise LoadError(f"{path} is a folder, not an export file")
    _require_regular_file(path)
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise LoadError(f"{path.name}: unknown file type {path.suffix!r} "
                        "(use .csv, .xlsx or .parquet)")
    if mapping is None:
        mapping = mapping_beside(path)
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = read_mapping(mapping)
    m = mapping or Mapping()
    bar = Progress(4, f"loading {path.name}", enabled=progress)
    reader = {"csv": _read_csv, "xlsx": _read_xlsx, "parquet": _read_parquet}[kind]
    raw, rows, record_text, malformed, excel_errors = reader(path, m)
    bar.step("read")
    headers = [str(c) for c in raw.columns]
    raw.columns = headers
    tname = m.table or table or detect_table(path, headers)
    used, unknown = match_columns(headers, tname, m, path.name)
    result = _normalise(raw, rows, record_text, tname, used, unknown, m, str(path), kind, bar,
                        malformed, excel_errors)
    bar.close()
    return result


def _required_present(table: str, used: dict[str, str], file: str,
                      m: Mapping | None = None) -> bool:
    """Check the required columns; return whether an outcomes export is wide."""
    wide = False
    for f in schema.TABLES[table]:
        if not f.required or f.name in used:
            continue
        if table == "outcomes" and f.name in ("instrument", "score"):
            if any(i in used for i in schema.INSTRUMENTS):
                wide = True
                continue
            raise LoadError(f"{file} has neither instrument and score columns nor a column per "
                            f"instrument ({', '.join(schema.INSTRUMENTS)})")
        raise LoadError(f"{file} has no {f.name} column (required for {table}); "
                        f"name it in a mapping file ({_header_hint(m, file)})")
    return wide


def _header_hint(m: Mapping | None, file: str = "") -> str:
    """Where the header was looked for, for the errors that a misplaced header causes."""
    m = m or Mapping()
    workbook = FILE_TYPES.get(Path(file).suffix.lower()) == "xlsx"
    sheet = f" of sheet {m.sheet!r}" if m.sheet else (" of the first sheet" if workbook else "")
    return (f"the header was read from row {m.header_row}{sheet}; if it is elsewhere, set "
            "header_row or sheet in the mapping file")




#: Text fields the row checks read (kept as parsed from the start).
CHECKED_TEXT = frozenset({"patient_id", "session_id", "instrument", "rater"})

#: Text that identifies or groups: an invisible character in it would make a new
#: patient, session or clinician, so such characters are removed (and warned).
KEY_TEXT = frozenset({"patient_id", "session_id", "operator", "clinic", "area",
                      "instrument", "rater"})
#: Characters that show as nothing: zero-width space, joiners and marks (U+200B–U+200F),
#: bidirectional controls (U+202A–U+202E, U+2066–U+2069), word joiner and invisible
#: operators (U+2060–U+2064), the byte order mark (U+FEFF) and the soft hyphen.
INVISIBLE = "[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"

#: Columns at least this long are parsed one distinct value at a time (see _parse_by_value).
BY_VALUE_MIN_ROWS = 5_000


def _parse_by_value(parse: Any, s: pd.Series) -> tuple[pd.Series, np.ndarray, Any]:
    """Parse each distinct value of a long text column once and spread the results.

    Exactly the same result as `parse(s)`: every parser is cell by cell (a cell's value,
    bad flag and reason depend on that cell alone; the one column-wide choice, the
    fast path, depends only on which values occur). A typed
    column holds few distinct values (dates, energies, yes/no), so this parses
    hundreds of values instead of a million, and a few bad cells no longer send the
    whole column down the slow path.
    """
    arr = arrow_strings(s) if len(s) >= BY_VALUE_MIN_ROWS else None
    if arr is None:
        return parse(s)
    enc = arr.dictionary_encode()
    dictionary = enc.chunk(0).dictionary
    if 4 * len(dictionary) > len(s):  # mostly distinct values: nothing to gain
        return parse(s)
    # the distinct values, then one missing cell (where the missing cells point)
    distinct = pd.Series(pa.concat_arrays([dictionary, pa.nulls(1, dictionary.type)]),
                         dtype=s.dtype)
    codes = pc.fill_null(pa.chunked_array([c.indices for c in enc.chunks], pa.int32()),
                         len(dictionary)).to_numpy()
    values, bad, why = parse(distinct)
    out = pd.Series(values.array.take(codes), index=s.index)
    if isinstance(why, pd.Series):  # reasons are rare: spread only the cells that have one
        reasons = why.to_numpy(dtype=object)
        given = np.flatnonzero((reasons != "")[codes])
        spread = np.full(len(s), "", dtype=object)
        spread[given] = reasons[codes[given]]
        why = pd.Series(spread, index=s.index, dtype=object)  # object: no text inference
    return out, np.asarray(bad, dtype=bool)[codes], why


def _without_invisible(text: pd.Series) -> pd.Series:
    """Text without invisible characters (see INVISIBLE), stripped again; a value of
    nothing else is missing."""
    found = text.str.contains(INVISIBLE, regex=True).to_numpy(dtype=bool, na_value=False)
    if not found.any():
        return text
    clean = text.str.replace(INVISIBLE, "", regex=True).str.strip()
    return clean.mask(clean == "")


def _parse_field(fname: str, s: pd.Series, fields: dict[str, schema.Field], m: Mapping,
                 kind: str, true_words: set[str], false_words: set[str]
                 ) -> tuple[pd.Series, np.ndarray, Any]:
    if fname in schema.INSTRUMENTS and fname not in fields:  # a wide outcomes score column
        return _parse_by_value(lambda x: parse_float(x, m.decimal), s)
    f = fields[fname]
    if f.type == "string":
        text, bad, why = parse_string(s)
        if fname in KEY_TEXT:
            text = _without_invisible(text)
        if fname in ("patient_id", "session_id"):  # 'n/a', '-', '?' stand for no id
            placeholder = _missing(text) & text.notna().to_numpy()
            if placeholder.any():
                text = text.mask(pd.Series(placeholder, index=text.index))
        return text, bad, why
    if f.type == "float":
        factor = UNITS[m.units.get(fname, "mJ")]
        percent = f.unit == "%"
        return _parse_by_value(lambda x: parse_float(x, m.decimal, factor, percent), s)
    if f.type == "int":
        return _parse_by_value(lambda x: parse_int(x, m.decimal), s)
    if f.type == "bool":
        return _parse_by_value(lambda x: parse_bool(x, true_words, false_words), s)
    return _parse_by_value(
        lambda x: parse_date(x, m.date_format, excel_serials=kind == "xlsx"), s)


def _normalise(raw: pd.DataFrame, rows: np.ndarray, record_text: RecordText | None, table: str,
               used: dict[str, str], unknown: list[str], m: Mapping, file: str, kind: str,
               bar: Progress, malformed: pd.DataFrame | None = None,
               excel_errors: dict[str, dict[int, str]] | None = None) -> LoadResult:
    """Parse every used column, reject unusable rows, warn on odd values, build the table.

    `malformed`: rows the reader could not split into the header's fields (row, value,
    reason); they are rejected and counted as read. `excel_errors`: error cells
    (#DIV/0!) by column and row position; a row with one in a used column is rejected."""
    wide = _required_present(table, used, file, m)
    n = len(raw)
    fields = schema.fields(table)
    lower = {v.strip().lower() for v in m.true_values}, {v.strip().lower() for v in m.false_values}
    true_words = (TRUE_WORDS | lower[0]) - lower[1]
    false_words = (FALSE_WORDS | lower[1]) - lower[0]

    rejected = np.zeros(n, dtype=bool)
    reject_field = np.full(n, "", dtype=object)
    reject_reason = np.full(n, "", dtype=object)

    def reject(mask: np.ndarray, fname: str, reason: Any) -> None:
        new = np.asarray(mask, dtype=bool) & ~rejected
        if not new.any():
            return
        reject_field[new] = fname
        reject_reason[new] = reason[new] if isinstance(reason, np.ndarray) else reason
        rejected[new] = True

    values: dict[str, pd.Series] = {}
    problems: dict[str, tuple[np.ndarray, Any]] = {}
    # text nobody checks is stripped after the rejected rows are gone (parse_string
    # never rejects): one copy of the long free-text columns instead of two
    later = {fname: header for fname, header in used.items()
             if fname in fields and fields[fname].type == "string"
             and fname not in CHECKED_TEXT | KEY_TEXT and n >= BY_VALUE_MIN_ROWS}
    columns = {fname: raw[header] for fname, header in used.items() if fname not in later}

    date_field = "session_date" if table == "sessions" else "assessment_date"
    keys: dict[str, np.ndarray] = {}

    def parse(fname: str) -> tuple[pd.Series, np.ndarray, Any]:
        out = _parse_field(fname, columns[fname], fields, m, kind, true_words, false_words)
        # the row keys the checks need, worked out on the threads with the parse
        if fname == "patient_id":
            keys[fname] = pd.factorize(out[0])[0] + 1
        elif fname == date_field:
            keys[fname] = _day_codes(out[0])
        return out

    # columns are independent and arrow does the heavy work without holding the GIL;
    # the two key columns (the longest jobs) first
    order = sorted(columns, key=lambda f: f not in ("patient_id", date_field))
    parsed = dict(zip(order, map_threads(parse, order, big=n >= BY_VALUE_MIN_ROWS),
                      strict=True))
    for fname in columns:
        vals, bad, why = parsed[fname]
        values[fname] = vals.reset_index(drop=True)
        problems[fname] = (bad, why.to_numpy(dtype=object) if isinstance(why, pd.Series) else why)
    bar.step("parsed")

    # rejections, in the order a reader would fix them: Excel errors (the cell holds no
    # value at all), keys, then other fields
    for fname, header in used.items():
        cells = (excel_errors or {}).get(header)
        if cells:
            where = np.fromiter(cells, dtype=np.int64)
            mask = np.zeros(n, dtype=bool)
            mask[where] = True
            reasons = np.full(n, "", dtype=object)
            reasons[where] = [f"Excel error {code}" for code in cells.values()]
            reject(mask, fname, reasons)
    for key in ("patient_id", date_field):
        reject(problems[key][0], key, problems[key][1])
        reject(values[key].isna().to_numpy(), key, f"missing {key}")
    for fname in columns:
        if fname not in ("patient_id", date_field):
            reject(*problems[fname][:1], fname, problems[fname][1])
    if table == "outcomes":
        _check_outcomes(values, wide, reject)
    # patient and day as one number per row: equal rows have equal keys
    patient_day = _pair_key(keys["patient_id"], keys[date_field])
    shared = _shared(patient_day)  # only these rows can repeat another row or its day
    _reject_duplicates(raw, record_text, rows, reject, patient_day, shared)
    given = None
    if table == "sessions":
        sid = values.get("session_id")
        given = np.zeros(n, dtype=bool) if sid is None else sid.notna().to_numpy()
        _derive_session_ids(values, rejected, rows, reject, patient_day, shared)
    bar.step("checked")

    keep = ~rejected
    data = _assemble(raw, values, later, unknown, table, keep, rows, file)
    warnings = _warnings(data, table, m, used, raw, keep)
    if wide:
        data = _melt_wide(data)
    if table == "outcomes":  # no rater given: the instrument's own (long and wide alike)
        data["rater"] = data["rater"].fillna(data["instrument"].map(
            {i: ins.rater for i, ins in schema.INSTRUMENTS.items()}).astype("string"))
    rej = pd.DataFrame({
        "file": file, "row": rows[rejected], "field": reject_field[rejected],
        "value": [_raw_text(raw, used, f, i) for f, i in
                  zip(reject_field[rejected], np.flatnonzero(rejected), strict=True)],
        "reason": reject_reason[rejected],
    }, columns=REJECTION_COLUMNS)
    if malformed is not None and len(malformed):
        rej = pd.concat([malformed.assign(file=file, field="(whole row)"), rej],
                        ignore_index=True)[REJECTION_COLUMNS]
        rej = rej.sort_values("row", kind="stable").reset_index(drop=True)
        n += len(malformed)
    absent = [f.name for f in schema.TABLES[table] if f.name not in used
              and not (wide and f.name in ("instrument", "score"))
              and not (table == "sessions" and f.name == "session_id")]
    return LoadResult(table=table, file=file, data=data, rejections=rej, warnings=warnings,
                      rows_read=n, unknown_columns=unknown, absent_fields=absent,
                      columns_used=dict(used),
                      session_id_given=None if given is None else given[keep])


def _raw_text(raw: pd.DataFrame, used: dict[str, str], fname: str, i: int) -> str:
    header = used.get(fname)
    if header is None:
        return ""
    return _cell_text(raw[header].iloc[i]) or ""


def _check_outcomes(values: dict[str, pd.Series], wide: bool, reject: Any) -> None:
    """Instrument known, score within its range, rater patient or clinician."""
    registry = schema.INSTRUMENTS
    if not wide:  # 'Hair density' is hair_density, as it is as a wide column's header
        codes, names = pd.factorize(values["instrument"])
        known = pd.array([schema.normalise_header(v) or v.strip() or pd.NA for v in names],
                         dtype="string")
        inst = pd.Series(known.take(codes, allow_fill=True), index=values["instrument"].index)
        values["instrument"] = inst
        unknown = inst.notna() & ~inst.isin(list(registry))
        reject(unknown.to_numpy(dtype=bool), "instrument",
               f"unknown instrument (known: {', '.join(registry)})")
        reject(inst.isna().to_numpy(), "instrument", "missing instrument")
        reject(values["score"].isna().to_numpy(), "score", "missing score")
        score = values["score"].astype("float64")
        for iid, ins in registry.items():
            here = (inst == iid).to_numpy(dtype=bool, na_value=False)
            out = np.zeros(len(inst), dtype=bool)
            if ins.low is not None:
                out |= (score < ins.low).to_numpy(dtype=bool, na_value=False)
            if ins.high is not None:
                out |= (score > ins.high).to_numpy(dtype=bool, na_value=False)
            reject(here & out, "score", f"outside {iid}'s range {_range_text(ins)}")
    else:
        present = [i for i in registry if i in values]
        for iid in present:
            ins = registry[iid]
            score = values[iid].astype("float64")
            out = ((score < (ins.low if ins.low is not None else -np.inf))
                   | (score > (ins.high if ins.high is not None else np.inf)))
            reject(out.to_numpy(dtype=bool, na_value=False), iid,
                   f"outside {iid}'s range {_range_text(ins)}")
        none = np.logical_and.reduce([values[i].isna().to_numpy() for i in present])
        reject(none, "score", "no score in any instrument column "
               f"({', '.join(present)})")
    if "rater" in values:
        rater = values["rater"].str.strip().str.lower()
        values["rater"] = rater
        reject((rater.notna() & ~rater.isin(["patient", "clinician"])).to_numpy(dtype=bool),
               "rater", "rater must be patient or clinician")


def _range_text(ins: schema.Instrument) -> str:
    """'1–5', or '≥ 0' for a scale without a top (hair density)."""
    if ins.high is None:
        return "" if ins.low is None else f"≥ {ins.low:g}"
    if ins.low is None:
        return f"≤ {ins.high:g}"
    return f"{ins.low:g}–{ins.high:g}"


def _repeats(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows that repeat an earlier row, and the position of the first such row.

    `codes` number equal rows in order of first appearance (as factorize and arrow's
    dictionary_encode do); -1 is a missing key, never a repeat.
    """
    n = len(codes)
    valid = codes >= 0
    pos = np.flatnonzero(valid)
    c = codes[valid]
    is_first = np.ones(len(c), dtype=bool)
    if len(c) > 1:  # a code appears for the first time when it exceeds every earlier one
        is_first[1:] = c[1:] > np.maximum.accumulate(c)[:-1]
    dup = np.zeros(n, dtype=bool)
    dup[pos[~is_first]] = True
    first = np.full(n, -1, dtype=np.int64)
    first[pos] = pos[is_first][c]
    return dup, first


def _day_codes(dates: pd.Series) -> np.ndarray:
    """Days as small non-negative numbers, 0 for a missing date."""
    days = dates.to_numpy(dtype="datetime64[D]")
    known = ~np.isnat(days)
    out = np.zeros(len(days), dtype=np.int64)
    if known.any():
        d = days[known].astype(np.int64)
        out[known] = d - d.min() + 1
    return out


def _pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 per row, equal exactly when a and b (non-negative codes) both are."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if (int(a.max(initial=0)) + 1) * (int(b.max(initial=0)) + 1) >= 2**62:
        a, b = pd.factorize(a)[0].astype(np.int64), pd.factorize(b)[0].astype(np.int64)
    return a * (int(b.max(initial=0)) + 1) + b


def _shared(key: np.ndarray) -> np.ndarray:
    """Positions of the rows whose key occurs more than once."""
    return np.flatnonzero(pd.Series(key).duplicated(keep=False).to_numpy())


def _reject_duplicates(raw: pd.DataFrame, text: RecordText | None, rows: np.ndarray,
                       reject: Any, patient_day: np.ndarray, shared: np.ndarray) -> None:
    """A row that repeats an earlier row exactly is a duplicate of that row.

    In a CSV, exactly means the record's text (without its line end); otherwise every
    value. Equal rows have the same patient and date (`shared`: the rows whose patient
    and day occur more than once) and, in a CSV, texts of the same length: only rows
    that share those are compared in full.
    """
    n = len(raw)
    if n == 0:
        return
    if text is not None and len(text.starts) == n:
        cand = shared[_shared(_pair_key(text.lengths()[shared], patient_day[shared]))]
        if len(cand) == 0:
            return
        codes = text.codes(cand)
    else:
        cand = shared
        if len(cand) == 0:
            return
        sub = raw.iloc[cand]
        try:
            hashes = pd.util.hash_pandas_object(sub, index=False)
        except TypeError:
            hashes = pd.util.hash_pandas_object(sub.astype(str), index=False)
        codes = pd.factorize(hashes.to_numpy())[0]
    dup_sub, first_sub = _repeats(codes)
    if not dup_sub.any():
        return
    dup = np.zeros(n, dtype=bool)
    dup[cand[dup_sub]] = True
    first = np.full(n, -1, dtype=np.int64)
    first[cand[dup_sub]] = cand[first_sub[dup_sub]]
    reasons = np.full(n, "", dtype=object)
    reasons[dup] = [f"duplicate of row {rows[j]}" for j in first[dup]]
    reject(dup, "(whole row)", reasons)


def _derive_session_ids(values: dict[str, pd.Series], rejected: np.ndarray, rows: np.ndarray,
                        reject: Any, patient_day: np.ndarray, shared: np.ndarray) -> None:
    """session_id as given, else patient_id:session_date:n; a repeated id is rejected.

    n counts the patient's earlier loaded sessions that day (1 for the first); only
    rows in `shared` (patient and day occur more than once) can have n > 1.
    """
    n = len(rejected)
    live = ~rejected  # a live row has its patient and its date
    seq = np.ones(n, dtype=np.int64)
    again = shared[live[shared]]
    again = again[_shared(patient_day[again])]  # sharing the day with another live row
    if len(again):  # rank within each patient-day, in file order
        order = again[np.argsort(patient_day[again], kind="stable")]
        k = patient_day[order]
        pos = np.arange(len(order))
        start = np.maximum.accumulate(np.where(np.r_[True, k[1:] != k[:-1]], pos, 0))
        seq[order] = pos - start + 1
    pid = arrow_strings(values["patient_id"].astype("string"))
    days = values["session_date"].to_numpy(dtype="datetime64[D]")
    day_text = _day_text(days)
    derived = pc.binary_join_element_wise(pid.cast(pa.large_string()), day_text,
        pa.array(seq, mask=rejected).cast(pa.large_string()), pa.scalar(":", pa.large_string()))
    derived = pd.Series(pd.array(derived, dtype="string"))
    given = values.get("session_id")
    if given is None or not given.notna().any():
        # derived ids never repeat: patient, a 10-character day and n read back apart
        values["session_id"] = derived
        return
    sid = given.where(given.notna(), derived)
    values["session_id"] = sid
    live_sid = sid.where(pd.Series(live))
    dup, first = _repeats(pd.factorize(live_sid)[0])
    if dup.any():
        reasons = np.full(n, "", dtype=object)
        reasons[dup] = [f"session_id already used on row {rows[int(j)]}" for j in first[dup]]
        reject(dup, "session_id", reasons)


def _runs(keep: np.ndarray, most: int = 1000) -> list[tuple[int, int]] | None:
    """The runs of kept rows as (start, stop), or None when there are more than `most`."""
    edges = np.flatnonzero(np.diff(np.r_[False, keep, False].astype(np.int8)))
    if len(edges) > 2 * most:
        return None
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _day_text(days: np.ndarray) -> pa.Array:
    """Days as YYYY-MM-DD text (NaT: null); each day of the span written once when the
    span is short (an export covers years, not millennia), then spread."""
    def as_text(x: np.ndarray) -> pa.Array:
        return pa.array(x, type=pa.date32()).cast(pa.large_string())

    d = days.view(np.int64)
    nat = np.isnat(days)
    lo, hi = (int(d[~nat].min()), int(d[~nat].max())) if not nat.all() else (0, 0)
    if nat.all() or len(days) < 10_000 or hi - lo > 100_000:
        return as_text(days)
    span = np.arange(lo, hi + 1, dtype=np.int64).view("datetime64[D]")
    return as_text(span).take(pa.array(np.where(nat, 0, d - lo), mask=nat))


def _assemble(raw: pd.DataFrame, values: dict[str, pd.Series], later: dict[str, str],
              unknown: list[str], table: str, keep: np.ndarray, rows: np.ndarray,
              file: str) -> pd.DataFrame:
    """The loaded table: kept rows of every parsed column (and of the text columns in
    `later`, parsed here), unknown columns as read, then source_file and source_row."""
    k = int(keep.sum())
    picks = None if k == len(keep) else np.flatnonzero(keep)
    runs = _runs(keep) if picks is not None else None

    def kept(s: pd.Series, dtype: Any = None, text: bool = False) -> pd.Series:
        arr = s.array
        if picks is not None:
            strings = arrow_strings(s)
            if strings is not None and runs is not None:
                # slices of the text joined once below: faster than a take over the
                # reader's hundreds of blocks (measured: 0.1 s on a million rows)
                pieces = [c for a, b in runs for c in strings.slice(a, b - a).chunks]
                arr = pd.array(pa.chunked_array(pieces, strings.type), dtype=s.dtype)
            else:
                arr = arr.take(picks)
        if text:
            arr = parse_string(pd.Series(arr, dtype=arr.dtype, copy=False))[0].array
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        out = pd.Series(arr, dtype=arr.dtype, copy=False)  # no inference from object
        strings = arrow_strings(out)
        if strings is not None and strings.num_chunks > 1:
            # one piece per column: the reader's hundreds of blocks slow every later take
            out = pd.Series(pd.array(strings.combine_chunks(), dtype=out.dtype), copy=False)
        return out

    jobs: dict[str, tuple[Any, ...]] = {}
    for f in schema.TABLES[table]:
        if f.name in values:
            jobs[f.name] = (values[f.name], f.dtype)
        elif f.name in later:
            jobs[f.name] = (raw[later[f.name]], f.dtype, True)
    for iid in schema.INSTRUMENTS:
        if table == "outcomes" and iid in values:
            jobs[iid] = (values[iid], None)
    # an unknown column named like an output column (a 'passes' beside the mapped
    # 'Anzahl', a 'source_row') is kept under another name, never in its place
    taken = {f.name for f in schema.TABLES[table]} | set(schema.INSTRUMENTS) \
        | {"source_file", "source_row", "sources"}
    for h in unknown:
        name = h
        while name in taken:
            name = f"{name} (unmapped)"
        taken.add(name)
        jobs[name] = (raw[h], None)
    # one take per column; arrow's (text columns) runs without the GIL
    done = dict(zip(jobs, map_threads(lambda name: kept(*jobs[name]), list(jobs),
                                       big=len(keep) >= BY_VALUE_MIN_ROWS), strict=True))
    cols: dict[str, Any] = {}
    for f in schema.TABLES[table]:
        cols[f.name] = done[f.name] if f.name in done else \
            pd.Series(pd.NaT if f.type == "date" else pd.NA, index=range(k), dtype=f.dtype)
    for name in jobs:
        if name not in cols:
            cols[name] = done[name]
    cols["source_file"] = pd.Series(pd.array(pa.repeat(pa.scalar(file, pa.large_string()), k),
                                             dtype="string"), copy=False)
    cols["source_row"] = pd.Series(rows[keep], dtype="int64")
    return pd.DataFrame(cols, copy=False)


def _melt_wide(data: pd.DataFrame) -> pd.DataFrame:
    """One column per instrument → one row per (assessment, instrument), long format."""
    present = [i for i in schema.INSTRUMENTS if i in data.columns]
    base = data.drop(columns=["instrument", "score", *present])
    parts = []
    for iid in present:
        score = data[iid]
        part = base[score.notna()].copy()
        part["instrument"] = iid
        part["score"] = score[score.notna()]
        parts.append(part)
    long = pd.concat(parts, ignore_index=True) if parts else base.iloc[:0]
    order = [f.name for f in schema.OUTCOMES] + [c for c in long.columns
                                                  if c not in {f.name for f in schema.OUTCOMES}]
    long = long[order].sort_values(["source_row"], kind="stable").reset_index(drop=True)
    long["instrument"] = long["instrument"].astype("string")
    long["score"] = long["score"].astype("Float64")
    return long


def _warnings(data: pd.DataFrame, table: str, m: Mapping, used: dict[str, str],
              raw: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """Implausible but usable values: kept as they are, reported here with the value as
    the file writes it (like a rejection), so a reviewer finds the cell."""
    parts = []
    rows = data["source_row"]
    file = data["source_file"]
    positions = np.flatnonzero(keep)  # each loaded row's place in the file's rows

    def add(mask: pd.Series, fname: str, kind: str, message: str) -> None:
        mask = mask.fillna(False).astype(bool)
        if mask.any():
            where = mask.to_numpy()
            written = _as_text(raw[used[fname]].iloc[positions[where]])
            parts.append(pd.DataFrame({
                "file": file[mask], "row": rows[mask], "field": fname,
                "value": pd.array(written.to_numpy(dtype=object), dtype="string"),
                "kind": kind, "message": message}))

    for f in schema.TABLES[table]:
        if f.name not in used:
            continue
        col = data[f.name]
        if f.type in ("float", "int") and (f.low is not None or f.high is not None):
            low = -np.inf if f.low is None else f.low
            high = np.inf if f.high is None else f.high
            # a value in (0, 1) is most likely in another unit: J for mJ, a fraction for %
            # (a spreadsheet's percent cell holds 8 % as 0.08); warned once, as that
            slip = None
            if f.unit == "mJ" and f.name not in m.units:
                slip = (f"{f.name} below 1 mJ looks like joules; if the export gives J, set "
                        f"[units] {f.name} = \"J\" in the mapping file")
            elif f.unit == "%":
                slip = (f"{f.name} below 1 % looks like a fraction (8 % stored as 0.08, as a "
                        "spreadsheet's percent cells hold it); the export should give the "
                        "percent")
            unit_slip = (col > 0) & (col < 1) if slip else pd.Series(False, index=data.index)
            if slip:
                add(unit_slip, f.name, "unit", slip)
            add(((col < low) | (col > high)) & ~unit_slip, f.name, "implausible",
                _range_warning(f))
        if f.name in KEY_TEXT:
            written = _as_text(raw[used[f.name]].iloc[positions])
            found = written.str.contains(INVISIBLE, regex=True).fillna(False)
            if found.any():
                chars = sorted(set(re.findall(INVISIBLE, "".join(written[found]))))
                add(pd.Series(found.to_numpy(dtype=bool), index=data.index), f.name,
                    "invisible_characters",
                    f"invisible characters removed from {f.name} ("
                    + ", ".join(f"U+{ord(c):04X}" for c in chars) + "); the value is "
                    "otherwise kept")
        if f.allowed and f.type == "string" and f.name != "rater":
            add(col.notna() & ~col.isin(list(f.allowed)), f.name, "not_allowed",
                f"{f.name} is not one of {', '.join(f.allowed)}")
        if f.type == "date":
            add(col > pd.Timestamp.today().normalize(), f.name, "future_date",
                f"{f.name} is in the future")
            # a treatment date before 1990, a birth before 1910: a small Excel day number
            # (3 is 1900-01-02) or a typing slip, not a real date
            year = 1990 if f.role == "date" else 1910
            add(col < pd.Timestamp(year, 1, 1), f.name, "implausible",
                f"{f.name} before {year} (a number in an Excel date cell, or a typing slip?)")
    if table == "sessions" and "date_of_birth" in used:
        born = data["date_of_birth"]
        add((born > data["session_date"]) & (born <= pd.Timestamp.today().normalize()),
            "date_of_birth", "implausible",
            "date_of_birth after the session_date (a year written with two digits?)")
    if not parts:
        return pd.DataFrame(columns=WARNING_COLUMNS)
    return pd.concat(parts, ignore_index=True)[WARNING_COLUMNS].sort_values(
        ["row", "field"], kind="stable").reset_index(drop=True)


def _range_warning(f: schema.Field) -> str:
    """'coverage_pct outside the plausible range 1–30 %' (a unit naming its own scale,
    such as 'NRS 0–10', is not repeated)."""
    span = f"{f.low:g}–{f.high:g}"
    unit = "" if not f.unit or span in f.unit else f" {f.unit}"
    return f"{f.name} outside the plausible range {span}{unit}"
