"""Benchmark loading several exports against one export of the same rows.

    python benchmarks/bench_combine.py [--sessions N] [--files K] [--repeat R] [--dir D]

Generates N synthetic sessions (default 1,200,000), sorted by date, and writes them as
one CSV and as K monthly-style CSV exports (default 12, split at date quantiles so a
day is in one export) in a temporary folder (or D, reused when it already holds
them). Then times, each in a fresh process and alternating, best of R (default 3):

* one:     ``load_inputs(sessions.csv)``
* several: ``load_inputs([sessions-01.csv, …])``: K loads and the combination

and checks both give the same number of sessions. Target (issue "Several exports"):
several ≤ 1.3 × one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import generate_exactly, write_csv

CHILD = """
import sys, time
t = time.perf_counter()
from outcomes.dataset import load_inputs
ds = load_inputs(sys.argv[1:], progress=False)
print(time.perf_counter() - t, len(ds.sessions.data), ds.sessions.rows_rejected)
"""


def make(folder: Path, n: int, files: int) -> tuple[Path, list[Path]]:
    one = folder / "one" / "sessions.csv"
    parts = [folder / "several" / f"sessions-{k + 1:02d}.csv" for k in range(files)]
    if one.is_file() and all(p.is_file() for p in parts):
        return one, parts
    one.parent.mkdir(parents=True, exist_ok=True)
    parts[0].parent.mkdir(parents=True, exist_ok=True)
    sessions, _ = generate_exactly(n)
    sessions = sessions.sort_values("session_date", kind="stable").reset_index(drop=True)
    write_csv(sessions, one)
    # ISO dates sort as text; a row with no date or an odd one still goes to one file
    days = sessions["session_date"].astype(object).fillna("").astype(str).to_numpy()
    ordered = sorted(days)
    edges = [ordered[len(ordered) * k // files] for k in range(1, files)]
    bounds = [None, *edges, None]
    for k, path in enumerate(parts):
        low, high = bounds[k], bounds[k + 1]
        pick = (days >= low if low is not None else True) & \
            (days < high if high is not None else True)
        write_csv(sessions[pick], path)
    return one, parts


def timed(paths: list[Path]) -> tuple[float, int, int]:
    """Wall time of one load in a fresh process (imports excluded), and what it loaded."""
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_200_000)
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None,
                    help="folder for the generated exports (kept and reused)")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-combine-"))
    t = time.perf_counter()
    one, parts = make(folder, args.sessions, args.files)
    print(f"exports in {folder} ({time.perf_counter() - t:.0f} s to make): one file of "
          f"{one.stat().st_size / 1e6:.0f} MB, {len(parts)} files")
    best_one = best_several = float("inf")
    for _ in range(args.repeat):
        a, n_one, rej_one = timed([one])
        b, n_several, rej_several = timed(parts)
        best_one, best_several = min(best_one, a), min(best_several, b)
        print(f"  one {a:6.2f} s   several {b:6.2f} s")
    print(f"sessions: one {n_one:,}, several {n_several:,} "
          f"(rows rejected: {rej_one:,} / {rej_several:,})")
    ratio = best_several / best_one
    print(f"best of {args.repeat}: one {best_one:.2f} s, {len(parts)} files {best_several:.2f} s"
          f" → {ratio:.2f}× (target ≤ 1.3×)")
    return 0 if n_one == n_several else 1


if __name__ == "__main__":
    sys.exit(main())
