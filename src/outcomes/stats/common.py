"""Shared helpers of the statistics: inputs as floats, z of a level, checks, scalar out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as _st

# Relative tolerance used to decide that a value lies *on* a centre line or
# that a survival estimate has reached 0.5: products and quotients of counts
# that are equal in exact arithmetic can differ in the last bits.
_TIE_RTOL = 1e-12


# --------------------------------------------------------------------------- helpers


def _as_float(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a float ndarray, turning pandas missing values into nan."""
    if isinstance(x, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        return np.asarray(x.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    return np.asarray(x, dtype=float)


def _z(level: float) -> float:
    """Two-sided standard-normal quantile for a confidence ``level``."""
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    return float(_st.norm.ppf(1.0 - (1.0 - level) / 2.0))


def _check_counts(k: np.ndarray, n: np.ndarray, what: str) -> None:
    """Reject impossible counts; nan (missing) is allowed and propagates."""
    with np.errstate(invalid="ignore"):
        if np.any(n < 0):
            raise ValueError(f"{what}: denominators must be >= 0")
        if np.any(k < 0):
            raise ValueError(f"{what}: counts must be >= 0")
        if np.any(k > n):
            raise ValueError(f"{what}: counts cannot exceed their denominators")


def _out(scalar: bool, *arrays: np.ndarray) -> tuple[Any, ...]:
    """Python floats for scalar input, arrays otherwise."""
    if scalar:
        return tuple(float(a) for a in arrays)
    return tuple(arrays)
