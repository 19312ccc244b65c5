"""outcomes: audit a fractional-laser treatment protocol and track what patients get out of it.

The one entry point for notebooks and scripts::

    import outcomes
    study = outcomes.open("data/sample", protocol="flexsys-hair-regrowth")
    study.summary()            # compliance per criterion
    study.flagged()            # every deviation and gap, with its file and row
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("outcomes")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["Study", "__version__", "open"]


def __getattr__(name: str) -> Any:
    """`open` and `Study` load pandas; the command line's --help should not wait for it."""
    if name in ("open", "Study"):
        from outcomes import study

        return getattr(study, name)
    raise AttributeError(f"module 'outcomes' has no attribute {name!r}")
