"""Cells a spreadsheet must show as text, never run: formula payloads neutralised.

Every CSV and XLSX the project writes passes its tables through `neutralise` (OWASP, "CSV
injection"): a text cell that a spreadsheet would read as a formula gets a leading single
quote, so `=HYPERLINK(…)` is shown as `'=HYPERLINK(…)` and never run. That covers cells
starting with `=`, `+`, `-`, `@` (and their full-width forms, which an East Asian input
method may turn into the ASCII ones), a tab or a carriage return, and the same characters
after leading blanks (space, tab, CR, LF, no-break or ideographic space), which some
spreadsheets strip before they look. Numbers stored as numbers, negative ones included,
are left alone; so are missing values. Applying it twice changes nothing more.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

#: A cell starting with one of these is run (or, for tab and CR, may be run) as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_RISKY = re.compile(r"[\s\u3000\u00a0\u2000-\u200b\u202f\u205f\ufeff]*"
                    r"[=+\-@\uff1d\uff0b\uff0d\uff20]")
QUOTE = "'"


def needs_quote(value: str) -> bool:
    """True for text a spreadsheet could run as a formula."""
    return value.startswith(FORMULA_START) or _RISKY.match(value) is not None


def safe_text(value: Any) -> Any:
    """`value` with a leading `'` if it is text that starts like a formula; else unchanged."""
    if isinstance(value, str) and needs_quote(value):
        return QUOTE + value
    return value


def _is_text_column(col: pd.Series) -> bool:
    return (col.dtype == object or isinstance(col.dtype, pd.StringDtype | pd.CategoricalDtype))


def _neutralise_column(col: pd.Series) -> pd.Series:
    values = col.astype(object) if isinstance(col.dtype, pd.CategoricalDtype) else col
    try:
        uniques = pd.unique(values.dropna())
    except TypeError:  # unhashable cells (lists): look at each one
        return values.map(safe_text)
    risky = [u for u in uniques if isinstance(u, str) and needs_quote(u)]
    if not risky:
        return col
    mask = values.isin(risky).fillna(False).to_numpy(dtype=bool)
    out = values.astype(object).copy()
    out[mask] = [QUOTE + v for v in values[mask]]
    if isinstance(col.dtype, pd.StringDtype):
        return out.astype(col.dtype)
    return out


def neutralise(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells and column names cannot run as formulas.

    Only text that starts like a formula changes (a `'` in front); number columns, numbers
    in mixed columns, dates and missing values are left as they are, and the dtypes of
    text columns are kept (a categorical text column becomes plain text). Cheap on big
    tables: each distinct value is looked at once.
    """
    out = df.copy()
    names = [safe_text(c) for c in out.columns]
    if names != list(out.columns):
        out.columns = names
    for j in range(out.shape[1]):
        col = out.iloc[:, j]
        if _is_text_column(col):
            new = _neutralise_column(col)
            if new is not col:
                out.isetitem(j, new)
    return out


__all__ = ["FORMULA_START", "QUOTE", "needs_quote", "neutralise", "safe_text"]
