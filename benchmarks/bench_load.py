"""Benchmark the loader against the raw readers it is built on.

    python benchmarks/bench_load.py [--sessions N] [--xlsx-rows M] [--repeat K]

Generates N synthetic sessions (``outcomes.sample.generate``, trimmed to exactly N
rows), writes them as CSV and Parquet and the first M rows as XLSX in a temporary
folder (in a child process, so the timing process starts with a clean heap; flushed to
disk before timing), then times, in one run:

* CSV:     raw ``pyarrow.csv.read_csv(path).to_pandas()`` vs ``outcomes.load.load(path)``,
           and vs ``typing_only(path)``: the text read plus arrow casts, no checks (what
           the 1.5x target leaves for the checks)
* Parquet: ``pd.read_parquet`` vs ``load``
* XLSX:    raw calamine ``to_python()`` vs ``load``
* peak memory (RSS) of the raw pyarrow read and of our CSV load, each in its own
  subprocess, read with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``.

Each timing is the best of K runs (default 5), baseline and ours alternating. Targets (from the issue): our CSV load
within 1.5x raw pyarrow, our XLSX load within 1.3x raw calamine, peak memory of our
CSV load of the 1M-row file under 3 GB.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

SESSIONS_PER_PATIENT = 3.8  # what generate() gives on average
GIB = 1024**3

# each runs in a fresh interpreter; the launcher reports RUSAGE_CHILDREN of its one child
RSS_RAW = "import sys, pyarrow.csv as c; t = c.read_csv(sys.argv[1]).to_pandas()"
RSS_OURS = "import sys; from outcomes.load import load; r = load(sys.argv[1], progress=False)"
LAUNCHER = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def generate_exactly(n: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exactly n synthetic sessions (and the outcomes of the patients they cover)."""
    from outcomes.sample import generate

    patients = max(20, math.ceil(n / SESSIONS_PER_PATIENT * 1.03))
    while True:
        sessions, outcomes = generate(patients=patients, seed=seed)
        if len(sessions) >= n:
            break
        patients = math.ceil(patients * 1.1)
    sessions = sessions.iloc[:n].reset_index(drop=True)
    kept = outcomes["patient_id"].isin(sessions["patient_id"].dropna().unique())
    return sessions, outcomes[kept].reset_index(drop=True)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """As the sample export writes it (``outcomes sample``)."""
    df.to_csv(path, index=False, lineterminator="\n", encoding="utf-8")
    return path


def write_xlsx(df: pd.DataFrame, path: Path) -> Path:
    """One sheet, header on row 1, cells as the export gives them (text and numbers)."""
    columns = [[None if pd.isna(v) else v for v in df[c].tolist()] for c in df.columns]
    rows = zip(*columns, strict=True)
    try:
        import xlsxwriter
    except ImportError:  # openpyxl is a dependency; xlsxwriter is only faster
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        ws = wb.create_sheet("sessions")
        ws.append(list(df.columns))
        for r in rows:
            ws.append(list(r))
        wb.save(path)
        return path
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    ws = wb.add_worksheet("sessions")
    ws.write_row(0, 0, list(df.columns))
    for i, r in enumerate(rows, start=1):
        ws.write_row(i, 0, r)
    wb.close()
    return path


def typing_only(path: Path) -> pd.DataFrame:
    """The least a loader that types the columns must do: the CSV read as text (as
    `load` reads it), then every typed field cast by arrow on two threads (numbers, ISO
    dates, yes/no), a bad cell becoming null. No row numbers, rejections, duplicates,
    warnings or stripping. It shows how much of the 1.5x the typing alone takes."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from outcomes import schema

    fields = {f.name: f for f in schema.SESSIONS}
    header = path.open(encoding="utf-8").readline().rstrip("\n").split(",")
    conv = pacsv.ConvertOptions(column_types={h: pa.large_string() for h in header},
                                strings_can_be_null=True, null_values=[""])
    table = pacsv.read_csv(path, convert_options=conv,
                           parse_options=pacsv.ParseOptions(newlines_in_values=False))
    yes = pa.array(["true", "yes", "1", "x"])

    def typed(name: str) -> pa.ChunkedArray:
        col, f = table.column(name), fields.get(name)
        if f is None or f.type == "string":
            return col
        if f.type == "date":
            return pc.strptime(col, format="%Y-%m-%d", unit="s", error_is_null=True)
        if f.type == "bool":
            return pc.is_in(pc.utf8_lower(col), value_set=yes)
        try:
            return pc.cast(col, pa.float64())
        except pa.ArrowInvalid:  # a bad cell: null it, then cast
            ok = pc.match_substring_regex(col, r"^-?[0-9]+(\.[0-9]+)?$")
            return pc.cast(pc.if_else(ok, col, None), pa.float64())

    with ThreadPoolExecutor(max_workers=2) as pool:
        columns = list(pool.map(typed, header))
    return pa.table(columns, names=header).to_pandas()


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of `repeat` runs, the result dropped before the next run."""
    return best_of_pair(fn, None, repeat)[0]


def best_of_pair(first: Callable[[], object], second: Callable[[], object] | None,
                 repeat: int) -> tuple[float, float]:
    """Best wall times of two jobs run alternately (a busy spell on a shared machine then
    hits both, not only one), each result dropped before the next run."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, fn in enumerate((first, second)):
            if fn is None:
                continue
            gc.collect()
            t = time.perf_counter()
            result = fn()
            best[i] = min(best[i], time.perf_counter() - t)
            del result
    return best[0], best[1]


def peak_rss(code: str, *args: str) -> int:
    """Peak resident memory (bytes) of `python -c code args` run in its own process."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-c", code, *args],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) * 1024  # Linux reports KiB


def fmt_ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}x" if base > 0 else "-"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def print_table(rows: list[tuple[str, str, str, str, str, str]]) -> None:
    head = ("measure", "baseline", "ours", "ratio", "target", "")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(str(h).ljust(w) for h, w in zip(head, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    print(line)


def write_inputs(folder: Path, sessions_n: int, xlsx_rows: int, with_outcomes: bool,
                 formats: tuple[str, ...] = ("csv", "parquet", "xlsx")) -> None:
    """Generate the data and write the input files into folder (prints what it wrote)."""
    t = time.perf_counter()
    sessions, outcomes = generate_exactly(sessions_n)
    print(f"generated {len(sessions):,} sessions x {sessions.shape[1]} columns"
          + (f" and {len(outcomes):,} outcome rows" if with_outcomes else "")
          + f" in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    wrote = []
    if "csv" in formats:
        p = write_csv(sessions, folder / "sessions.csv")
        wrote.append(f"CSV ({p.stat().st_size / 2**20:.0f} MiB)")
    if with_outcomes:
        p = write_csv(outcomes, folder / "outcomes.csv")
        wrote.append(f"outcomes CSV ({p.stat().st_size / 2**20:.0f} MiB)")
    if "parquet" in formats:
        p = folder / "sessions.parquet"
        sessions.to_parquet(p, index=False)
        wrote.append(f"Parquet ({p.stat().st_size / 2**20:.0f} MiB)")
    if "xlsx" in formats:
        m = min(xlsx_rows, len(sessions))
        p = write_xlsx(sessions.iloc[:m], folder / "sessions.xlsx")
        wrote.append(f"XLSX {m:,} rows ({p.stat().st_size / 2**20:.0f} MiB)")
    print(f"wrote {', '.join(wrote)} in {time.perf_counter() - t:.1f} s", flush=True)


def write_inputs_apart(folder: Path, sessions_n: int, xlsx_rows: int = 0,
                       with_outcomes: bool = False,
                       formats: tuple[str, ...] = ("csv", "parquet", "xlsx")) -> None:
    """write_inputs in a child process: the timed process starts with a clean heap (as
    `outcomes validate` would), not one fragmented by generating a million rows; then
    the files are flushed to disk before anything is timed."""
    cmd = [sys.executable, __file__, "--write-to", str(folder), "--sessions", str(sessions_n),
           "--xlsx-rows", str(xlsx_rows), "--formats", ",".join(formats)]
    subprocess.run(cmd + (["--with-outcomes"] if with_outcomes else []), check=True)
    # let the system write the new files out first: while it flushes hundreds of MB the
    # first reads of them are slow and erratic (an export on disk is long written)
    os.sync()
    time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000, help="CSV/Parquet rows")
    ap.add_argument("--xlsx-rows", type=int, default=100_000, help="XLSX rows (first M)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing (best is kept)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--write-to", help=argparse.SUPPRESS)  # internal: the writer process
    ap.add_argument("--with-outcomes", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--formats", default="csv,parquet,xlsx", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_to:
        write_inputs(Path(args.write_to), args.sessions, args.xlsx_rows, args.with_outcomes,
                     tuple(args.formats.split(",")))
        return 0

    import pyarrow
    import pyarrow.csv as pacsv
    from python_calamine import CalamineWorkbook

    from outcomes.load import load

    print(f"pandas {pd.__version__}, pyarrow {pyarrow.__version__}, "
          f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="outcomes-bench-") as tmp:
        folder = Path(tmp)
        write_inputs_apart(folder, args.sessions, args.xlsx_rows)
        csv_path = folder / "sessions.csv"
        pq_path = folder / "sessions.parquet"
        xlsx_path = folder / "sessions.xlsx"
        m = min(args.xlsx_rows, args.sessions)

        k = args.repeat
        rows = []

        def timed(label: str, base_fn: Callable[[], object], ours_fn: Callable[[], object],
                  target: float | None) -> None:
            base, ours = best_of_pair(base_fn, ours_fn, k)
            ok = None if target is None else ours / base <= target
            rows.append((label, f"{base:.2f} s", f"{ours:.2f} s", fmt_ratio(ours, base),
                         "-" if target is None else f"<= {target}x", verdict(ok)))
            print(f"  {label}: baseline {base:.3f} s, ours {ours:.3f} s "
                  f"({fmt_ratio(ours, base)})", flush=True)

        n = args.sessions
        timed(f"CSV {n:,} rows: pyarrow read_csv+to_pandas vs load",
              lambda: pacsv.read_csv(csv_path).to_pandas(),
              lambda: load(csv_path, progress=False), 1.5)
        timed(f"CSV {n:,} rows: pyarrow read_csv+to_pandas vs typing only (no checks)",
              lambda: pacsv.read_csv(csv_path).to_pandas(),
              lambda: typing_only(csv_path), None)
        timed(f"Parquet {n:,} rows: pd.read_parquet vs load",
              lambda: pd.read_parquet(pq_path), lambda: load(pq_path, progress=False), None)
        timed(f"XLSX {m:,} rows: calamine to_python vs load",
              lambda: CalamineWorkbook.from_path(str(xlsx_path)).get_sheet_by_index(0)
              .to_python(),
              lambda: load(xlsx_path, progress=False), 1.3)

        if not args.no_memory:
            raw_rss = peak_rss(RSS_RAW, str(csv_path))
            our_rss = peak_rss(RSS_OURS, str(csv_path))
            rows.append((f"peak RSS, CSV {n:,} rows: pyarrow vs load",
                         f"{raw_rss / 2**20:,.0f} MiB", f"{our_rss / 2**20:,.0f} MiB",
                         fmt_ratio(our_rss, raw_rss), "< 3 GiB", verdict(our_rss < 3 * GIB)))
            print(f"  peak RSS: pyarrow {raw_rss / 2**20:,.0f} MiB, "
                  f"ours {our_rss / 2**20:,.0f} MiB", flush=True)

    print(f"\nbest of {k} runs; machine: {_machine()}")
    print_table(rows)
    return 0


def _machine() -> str:
    cores = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{cores} cores, {mem:.0f} GiB"


if __name__ == "__main__":
    sys.exit(main())
