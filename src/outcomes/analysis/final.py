"""Final results per instrument in the protocol's window, with Wilson intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from outcomes import schema
from outcomes.stats import (
    wilson_ci,
)

# =============================================================================================
# 2. final results per instrument


def _improved(instrument: pd.Series, score: np.ndarray) -> np.ndarray:
    """1.0 / 0.0 where the instrument defines "improved" (registry threshold), else nan."""
    inst = instrument.astype("string").to_numpy(dtype=object)
    out = np.full(len(score), np.nan)
    for iid, ins in schema.INSTRUMENTS.items():
        if ins.improved_at is None:
            continue
        here = inst == iid
        better = score >= ins.improved_at if ins.higher_is_better else score <= ins.improved_at
        out[here] = better[here].astype("float64")
    return out


def _instrument_order(ids: pd.Series) -> pd.Series:
    order = {iid: i for i, iid in enumerate(schema.INSTRUMENTS)}
    return ids.map(order).fillna(len(order))


def final_summary(windows: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per instrument × rater at the final (3–6 month) assessment: n, median, IQR, mean, SD,
    share improved with its Wilson interval.

    Why: the protocol promises its final result 3–6 months after the last session; this
    is what patients (and clinicians) scored then. One score per course (``is_final``).
    "Improved" follows the registry (`schema.INSTRUMENTS[...].improved_at` and
    direction): satisfaction 4–5, GAIS 1–3, GPA ≥ 1 (above 0); instruments without a
    threshold (hair density: see change_from_baseline; pain) get nan. Quartiles are
    linear-interpolation (type 7) sample quantiles.
    """
    f = windows[windows["is_final"].to_numpy(dtype=bool)]
    cols = ["instrument", "title", "rater", "unit", "n", "median", "q1", "q3", "mean", "sd",
            "min", "max", "improved_definition", "improved_n", "improved_k", "improved",
            "improved_ci_low", "improved_ci_high"]
    if f.empty:
        return pd.DataFrame(columns=cols)
    score = f["score"].to_numpy(dtype="float64", na_value=np.nan)
    d = pd.DataFrame({"instrument": f["instrument"].astype("string").to_numpy(dtype=object),
                      "rater": f["rater"].astype("string").fillna("").to_numpy(dtype=object),
                      "score": score, "improved": _improved(f["instrument"], score)})
    g = d.groupby(["instrument", "rater"], sort=False)["score"]
    s = pd.DataFrame({"n": g.count(), "median": g.median(), "q1": g.quantile(0.25),
                      "q3": g.quantile(0.75), "mean": g.mean(), "sd": g.std(ddof=1),
                      "min": g.min(), "max": g.max()})
    gi = d.groupby(["instrument", "rater"], sort=False)["improved"]
    s["improved_n"] = gi.count()
    s["improved_k"] = gi.sum(min_count=1)
    s = s.reset_index()
    k = s["improved_k"].to_numpy(dtype="float64")
    m = s["improved_n"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        s["improved"] = np.where(m > 0, k / np.where(m > 0, m, 1), np.nan)
    lo, hi = wilson_ci(np.nan_to_num(k), m, level)
    s["improved_ci_low"] = np.where(m > 0, lo, np.nan)
    s["improved_ci_high"] = np.where(m > 0, hi, np.nan)
    reg = schema.INSTRUMENTS
    s["title"] = s["instrument"].map(lambda i: reg[i].title if i in reg else i)
    s["unit"] = s["instrument"].map(lambda i: reg[i].unit if i in reg else "")
    s["improved_definition"] = s["instrument"].map(
        lambda i: reg[i].improved_text if i in reg and reg[i].improved_at is not None else "")
    s = s.sort_values(["instrument", "rater"], key=lambda c: _instrument_order(c)
                      if c.name == "instrument" else c, kind="stable")
    s["improved_k"] = s["improved_k"].astype("Int64")
    return s[cols].reset_index(drop=True)
