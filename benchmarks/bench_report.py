"""Benchmark the jobs users wait for: report, audit and export, at several sizes.

    python benchmarks/bench_report.py [--sizes 1000,10000,100000] [--repeat 3]

For each size, a synthetic data folder is generated (`outcomes sample`, about 3.8
sessions per patient), then each job runs as its own process (`python -m outcomes ...`,
a fresh interpreter each time, as a user runs it), `--repeat` times; the median wall
time is kept, and the peak memory: the largest sum of the proportional set sizes (PSS:
shared pages split among the processes sharing them) of the job and all its
descendants (the report's Jupyter kernels, Chromium), sampled every 0.2 s from /proc. The baseline measured
in the same run is pyarrow's raw read of the same sessions CSV (process to process), so
the figures are ratios to something this machine did at the same moment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.csv as pa_csv

BASELINE = ("import sys, pyarrow.csv as c; c.read_csv(sys.argv[1]).to_pandas()")


def _pss(pid: int, rss: int) -> int:
    """A process's proportional share of memory (shared pages split among their users,
    so a tree's sum does not count Chromium's shared pages once per process)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss


def tree_rss(root: int) -> int:
    """Memory of a process and all its descendants: the sum of their proportional set
    sizes (from /proc)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * page
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _pss(pid, rss.get(pid, 0))
        todo += [c for c, p in parent.items() if p == pid]
    return total


def run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and the peak memory (MiB) of one job: the job and its descendants."""
    t = time.perf_counter()
    peak = [0]
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], tree_rss(child.pid))

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
        watcher.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        took = time.perf_counter() - t
        if child.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd[:4])} failed: {err.read().decode()[-500:]}")
    return took, max(peak[0], usage.ru_maxrss * 1024) / 2**20  # never below the job's own


def median_of(cmd: list[str], cwd: Path, repeat: int) -> tuple[float, float]:
    times, peaks = [], []
    for _ in range(repeat):
        t, m = run(cmd, cwd)
        times.append(t)
        peaks.append(m)
    return statistics.median(times), max(peaks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="sessions per data set, comma separated (1000000 takes long)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per job (median kept)")
    ap.add_argument("--jobs", default="report,audit,export",
                    help="which jobs to time, comma separated")
    ap.add_argument("--data", type=Path, default=None,
                    help="time this data folder (sessions.csv, outcomes.csv) instead of "
                    "generated ones")
    args = ap.parse_args(argv)
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        work = Path(tmp)
        key = work / "k.key"
        key.write_text("ab" * 32, encoding="utf-8")
        sizes = [0] if args.data else [int(s) for s in args.sizes.split(",")]
        for sessions in sizes:
            data = args.data or work / f"d{sessions}"
            if not args.data:
                patients = max(10, round(sessions / 3.8))
                subprocess.run([py, "-m", "outcomes", "sample", "--patients", str(patients),
                                "--seed", "3", "--out", str(data)], check=True,
                               capture_output=True)
            n = pa_csv.read_csv(data / "sessions.csv").num_rows
            base, _ = median_of([py, "-c", BASELINE, str(data / "sessions.csv")], work,
                                args.repeat)
            jobs = {
                "report": [py, "-m", "outcomes", "report", str(data), "--out",
                           str(work / f"r{sessions}")],
                "audit": [py, "-m", "outcomes", "audit", str(data / "sessions.csv"),
                          "--outcomes", str(data / "outcomes.csv"), "--out",
                          str(work / f"a{sessions}")],
                "export": [py, "-m", "outcomes", "export", str(data / "sessions.csv"),
                           "--outcomes", str(data / "outcomes.csv"), "--key-file", str(key),
                           "--out", str(work / f"x{sessions}")],
            }
            for job, cmd in jobs.items():
                if job not in args.jobs.split(","):
                    continue
                t, peak = median_of(cmd, work, args.repeat)
                rows.append((n, job, t, peak, t / base))
                print(f"{n:>9,} sessions  {job:<7} {t:8.1f} s  peak {peak:7.0f} MiB  "
                      f"{t / base:7.1f}x the raw CSV read ({base:.2f} s)", flush=True)
    print("\n| sessions | job | median s | peak MiB | x raw read |")
    print("|---:|---|---:|---:|---:|")
    for n, job, t, peak, ratio in rows:
        print(f"| {n:,} | {job} | {t:.1f} | {peak:.0f} | {ratio:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
