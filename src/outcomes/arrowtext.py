"""Text columns seen through arrow: the arrays behind pandas' string columns.

Why: hashing, sorting and comparing a million strings is many times faster in arrow's
kernels than through pandas' object paths, and needs no copy when the column is
already arrow-backed (what the loader gives). Every function falls back to pandas for
other columns, with the same result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def arrow_strings(s: pd.Series) -> pa.ChunkedArray | None:
    """The arrow strings behind a pyarrow-backed string column (no copy), else None."""
    if not (isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"):
        return None
    arr = s.array.__arrow_array__()
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def sorted_codes(values: pd.Series) -> tuple[np.ndarray, Any]:
    """pd.factorize(values, sort=True): arrow hashes the column and sorts its distinct
    values when it is arrow text (UTF-8 bytes sort as code points do)."""
    arr = arrow_strings(values)
    if arr is None:
        return pd.factorize(values, sort=True)
    enc = arr.combine_chunks().dictionary_encode()
    order = pc.array_sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(len(order) + 1, dtype=np.intp)
    rank[order] = np.arange(len(order))
    rank[-1] = -1  # where a missing value (index -1) points
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
    return rank[idx], enc.dictionary.take(pa.array(order))


def sort_rank(values: pd.Series) -> np.ndarray:
    """Rank of each value in sorted order (equal values equal rank, missing last)."""
    arr = arrow_strings(values)
    if arr is not None and len(arr):  # one sort, no hashing (ids are mostly distinct)
        rank = pc.rank(arr.combine_chunks(), sort_keys="ascending", tiebreaker="dense")
        return rank.to_numpy().astype(np.int64) - 1
    codes = sorted_codes(values)[0].astype(np.int64)
    codes[codes < 0] = codes.max(initial=-1) + 1
    return codes
