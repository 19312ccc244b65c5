"""Change from baseline (hair density): median change, Wilcoxon, paired t."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from outcomes import schema
from outcomes.analysis.methods import (
    median_ci,
    paired_t,
    rank_biserial_paired,
    wilcoxon_signed_rank,
)
from outcomes.stats import (
    wilson_ci,
)

# =============================================================================================
# 3. change from baseline


def change_from_baseline(windows: pd.DataFrame, instrument: str = "hair_density",
                         level: float = 0.95) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Paired baseline → final (3–6 month) values per course, and their change.

    Why: a measurement like hair density only says something against the same course's
    baseline. Pairs are the course's baseline (``is_baseline``) and final (``is_final``)
    values of the same instrument and rater. Summary: median change with its exact
    distribution-free (sign-test order statistic) interval (median_ci), Wilcoxon
    signed-rank test, matched-pairs rank-biserial effect size, and beside them the mean
    change with its paired t interval; plus the share that improved in the registry's
    better direction, with a Wilson interval.
    Returns (paired table, summary dict).
    """
    w = windows[windows["instrument"].astype("string") == instrument]
    key = ["course_id", "rater"]
    base = w[w["is_baseline"].to_numpy(dtype=bool)]
    fin = w[w["is_final"].to_numpy(dtype=bool)]
    b = pd.DataFrame({"course_id": base["course_id"].to_numpy(dtype=object),
                      "rater": base["rater"].to_numpy(dtype=object),
                      "patient_id": base["patient_id"].to_numpy(dtype=object),
                      "baseline_date": base["assessment_date"].to_numpy(),
                      "baseline": base["score"].to_numpy(dtype="float64", na_value=np.nan)})
    f = pd.DataFrame({"course_id": fin["course_id"].to_numpy(dtype=object),
                      "rater": fin["rater"].to_numpy(dtype=object),
                      "final_date": fin["assessment_date"].to_numpy(),
                      "days_from_last_session": fin["days_from_last_session"].to_numpy(
                          dtype="float64", na_value=np.nan),
                      "final": fin["score"].to_numpy(dtype="float64", na_value=np.nan)})
    paired = b.merge(f, on=key, how="inner")
    paired["change"] = paired["final"] - paired["baseline"]
    paired.insert(1, "instrument", instrument)
    paired = paired.sort_values("course_id", kind="stable").reset_index(drop=True)
    ins = schema.INSTRUMENTS.get(instrument)
    d = paired["change"].to_numpy(dtype="float64")
    med, mlo, mhi = median_ci(d, level)
    tt = paired_t(d, level)
    wx = wilcoxon_signed_rank(d)
    r, rlo, rhi = rank_biserial_paired(d, level)
    better = d > 0 if (ins is None or ins.higher_is_better) else d < 0
    k, n = int(better.sum()), int(d.size)
    ilo, ihi = wilson_ci(k, n, level)
    summary: dict[str, Any] = {
        "instrument": instrument, "title": ins.title if ins else instrument,
        "unit": ins.unit if ins else "", "level": level,
        "courses_with_baseline": int(base["course_id"].nunique()),
        "courses_with_final": int(fin["course_id"].nunique()), "n": n,
        "baseline_median": float(np.median(paired["baseline"])) if n else math.nan,
        "final_median": float(np.median(paired["final"])) if n else math.nan,
        "median_change": med, "median_ci_low": mlo, "median_ci_high": mhi,
        "median_ci_method": "exact distribution-free (sign-test order statistics)",
        "wilcoxon_statistic": wx["statistic"], "wilcoxon_p": wx["p"],
        "n_nonzero": wx["n_nonzero"],
        "rank_biserial": r, "rank_biserial_ci_low": rlo, "rank_biserial_ci_high": rhi,
        "mean_change": tt["mean"], "sd_change": tt["sd"], "mean_ci_low": tt["ci_low"],
        "mean_ci_high": tt["ci_high"], "t": tt["t"], "df": tt["df"], "t_p": tt["p"],
        "improved_k": k, "improved": k / n if n else math.nan,
        "improved_ci_low": ilo, "improved_ci_high": ihi,
    }
    return paired, summary
