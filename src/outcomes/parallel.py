"""Run independent column-sized jobs on one thread per core.

Why threads: the heavy work in loading and auditing is numpy and arrow kernels, which
release the GIL, so two cores gather, parse and compare two columns at once without
the copying a process pool would need.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def map_threads(fn: Callable[[Any], Any], items: Iterable[Any], big: bool = True,
                most: int = 4) -> list[Any]:
    """[fn(x) for x in items] in order, on up to `most` threads (one per core) when the
    work is `big` enough to pay for them."""
    items = list(items)
    workers = min(len(items), most, os.cpu_count() or 1)
    if not big or workers < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def call_threads(jobs: Iterable[Callable[[], Any]], big: bool = True) -> list[Any]:
    """[job() for job in jobs] in order, on the threads as map_threads runs them: for
    jobs of different kinds (a hash here, a column gather there)."""
    return map_threads(lambda job: job(), jobs, big=big)
