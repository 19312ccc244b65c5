"""Benchmark the audit against loading the same data.

    python benchmarks/bench_audit.py [--sessions N] [--repeat K]

Generates N synthetic sessions (default 1,000,000) and their outcomes, writes both as
CSV (in a child process, so the timing process starts with a clean heap), then times
(best of K runs, load and audit alternating):

* the baseline: loading the sessions CSV with our loader (``outcomes.load.load``);
* the audit as the issue defines it (courses, verdicts, summaries):
  ``run_audit(sessions, load_protocol(), outcomes)`` plus ``summary()``,
  ``summary("operator")`` and ``summary("month")``;
* and, reported beside it, the same plus ``flagged()`` (the list of every deviation
  and gap with its source row: 1.6 million rows here, a report's heaviest table).

Target (from the issue): the audit takes no longer than loading the same CSV
(ratio <= 1.0) and the whole job (load both files, audit, summaries, flagged list)
peaks under 4 GB of resident memory, measured in a subprocess with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

from bench_load import (
    GIB,
    best_of_pair,
    fmt_ratio,
    peak_rss,
    print_table,
    verdict,
    write_inputs_apart,
)

RSS_AUDIT = """
import sys
from outcomes.audit import run_audit
from outcomes.load import load
from outcomes.protocol import load_protocol
s = load(sys.argv[1], progress=False).data
o = load(sys.argv[2], progress=False).data
a = run_audit(s, load_protocol(), o)
a.summary(); a.summary("operator"); a.summary("month"); a.flagged()
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing (best is kept)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory run")
    args = ap.parse_args(argv)

    import pandas as pd
    import pyarrow

    from outcomes.audit import run_audit
    from outcomes.load import load
    from outcomes.protocol import load_protocol

    print(f"pandas {pd.__version__}, pyarrow {pyarrow.__version__}, "
          f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="outcomes-bench-") as tmp:
        folder = Path(tmp)
        # generated and written in a child process: the timing process starts clean
        write_inputs_apart(folder, args.sessions, with_outcomes=True, formats=("csv",))
        s_path, o_path = folder / "sessions.csv", folder / "outcomes.csv"

        k = args.repeat
        data = {"sessions": load(s_path, progress=False).data}
        t = time.perf_counter()
        data["outcomes"] = load(o_path, progress=False).data
        print(f"  (load outcomes CSV: {time.perf_counter() - t:.3f} s, not in the ratio)")
        protocol = load_protocol()

        steps: dict[str, list[float]] = {}

        def audit_once() -> None:
            gc.collect()
            t0 = time.perf_counter()
            a = run_audit(data["sessions"], protocol, data["outcomes"])
            t1 = time.perf_counter()
            a.summary()
            t2 = time.perf_counter()
            a.summary("operator")
            t3 = time.perf_counter()
            a.summary("month")
            t4 = time.perf_counter()
            steps.setdefault("audit", []).append(t4 - t0)
            a.flagged()
            t5 = time.perf_counter()
            steps.setdefault("audit + flagged()", []).append(t5 - t0)
            for name, d in (("run_audit", t1 - t0), ('summary()', t2 - t1),
                            ('summary("operator")', t3 - t2), ('summary("month")', t4 - t3),
                            ("flagged()", t5 - t4)):
                steps.setdefault(name, []).append(d)

        # alternating with the baseline, so a busy spell on a shared machine hits both
        load_s, _ = best_of_pair(lambda: load(s_path, progress=False), audit_once, k)
        print(f"  load sessions CSV: {load_s:.3f} s", flush=True)
        for name, ds in steps.items():
            print(f"  {name:22s} {min(ds):.3f} s")
        audit_s, with_flagged = min(steps["audit"]), min(steps["audit + flagged()"])
        rows = [(f"audit (courses, verdicts, summaries) vs load, {args.sessions:,} rows",
                 f"{load_s:.2f} s", f"{audit_s:.2f} s", fmt_ratio(audit_s, load_s), "<= 1.0x",
                 verdict(audit_s <= load_s)),
                ("the same + flagged() list", f"{load_s:.2f} s", f"{with_flagged:.2f} s",
                 fmt_ratio(with_flagged, load_s), "-", "")]
        data.clear()
        gc.collect()
        if not args.no_memory:
            rss = peak_rss(RSS_AUDIT, str(s_path), str(o_path))
            rows.append(("peak RSS: load both CSVs + audit + summaries + flagged", "-",
                         f"{rss / 2**20:,.0f} MiB", "-", "< 4 GiB", verdict(rss < 4 * GIB)))
            print(f"  peak RSS: {rss / 2**20:,.0f} MiB", flush=True)

    print(f"\nbest of {k} runs")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
