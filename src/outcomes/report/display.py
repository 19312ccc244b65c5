"""How tables and charts show in the notebooks and the report: made for people to read.

`setup()` (first cell of every notebook) makes every displayed table readable (no index
column of row numbers, thousands separators, "—" for a missing value, text wrapped and
escaped, never cut) and gives every chart an alt text saying what it shows.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from pandas.io.formats.style import Styler


def readable_table(df: pd.DataFrame) -> pd.DataFrame:
    """A row-number index is dropped; a meaningful index becomes the first column."""
    if isinstance(df.index, pd.RangeIndex) and df.index.name is None:
        return df.reset_index(drop=True)
    return df.reset_index()


def table_html(df: pd.DataFrame) -> str:
    """A table as HTML: no row numbers, thousands separators, "—" for missing, escaped."""
    t = readable_table(df)
    t.columns = [str(c) for c in t.columns]
    styler = Styler(t, cell_ids=False)
    styler = (styler.hide(axis="index")
              .format(na_rep="—", thousands=",", precision=1, escape="html")
              .format_index(escape="html", axis=1))
    for col in t.columns:  # whole numbers stay whole
        if pd.api.types.is_integer_dtype(t[col]) or pd.api.types.is_bool_dtype(t[col]):
            styler = styler.format(subset=[col], na_rep="—", thousands=",", precision=0,
                                   escape="html")
    html = styler.set_table_attributes('class="data"').to_html()
    return re.sub(r"<style[^>]*>.*?</style>", "", html, flags=re.DOTALL)


def alt_text(fig: Figure) -> str:
    """What a chart shows: its title, the axes' titles and labels."""
    parts = [fig.get_suptitle()]
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        for text in (ax.get_title("left"), ax.get_title(), ax.get_ylabel(), ax.get_xlabel()):
            if text and text not in parts:
                parts.append(text)
    words = "; ".join(" ".join(p.split()) for p in parts if p and p.strip())
    return f"Chart: {words}" if words else "Chart"


def setup() -> None:
    """Register the readable table and the chart alt text with the running IPython."""
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        return
    formatters = ip.display_formatter.formatters
    formatters["text/html"].for_type(pd.DataFrame, table_html)

    def plain(fig: Figure, printer: Any, cycle: bool) -> None:
        printer.text(alt_text(fig))

    formatters["text/plain"].for_type(Figure, plain)
