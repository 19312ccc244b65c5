"""Arrow views of text columns give exactly what pandas gives."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from outcomes.arrowtext import sort_rank, sorted_codes


@given(st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=40))
def test_sorted_codes_are_what_factorize_with_sort_gives(values):
    """Arrow's hash and sort give pandas' codes: UTF-8 bytes sort as code points do."""
    s = pd.Series(values, dtype="string")
    codes, distinct = sorted_codes(s)
    want_codes, want_distinct = pd.factorize(s, sort=True)
    assert codes.tolist() == want_codes.tolist()
    assert distinct.to_pylist() == list(want_distinct)


@given(st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=40))
def test_sort_rank_of_arrow_text_is_the_rank_of_sorted_codes(values):
    """Arrow's dense rank gives what sorted codes give: equal values one rank, missing
    last, code points in order."""
    s = pd.Series(values, dtype="string")
    codes = pd.factorize(s, sort=True)[0]
    codes[codes < 0] = codes.max(initial=-1) + 1
    assert sort_rank(s).tolist() == codes.tolist()


def test_sort_rank_puts_missing_last():
    s = pd.Series(["b", None, "a", "b"], dtype="string")
    assert sort_rank(s).tolist() == [1, 2, 0, 1]
    assert sort_rank(pd.Series(["b", None, "a"], dtype=object)).tolist() == [1, 2, 0]
