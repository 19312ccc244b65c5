"""Did courses that followed the protocol do better? Groups by key criteria, comparisons
(unadjusted and adjusted), Table 1, energy and outcome."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from outcomes import schema
from outcomes.analysis.common import (
    CHANGE,
    FINAL_SCORE,
    FOLLOWED,
    GROUPS,
    NOT_FOLLOWED,
    SMD_IMBALANCED,
)
from outcomes.analysis.final import _improved, _instrument_order
from outcomes.analysis.methods import (
    mann_whitney,
    smd_categorical,
    smd_continuous,
    spearman_ci,
    welch_t,
)
from outcomes.stats import (
    newcombe_diff_ci,
)

# =============================================================================================
# 4. process and outcome


def compliance_groups(audit: Any, criteria: Sequence[str] | None = None,
                      missing: str = "not met") -> pd.DataFrame:
    """One row per course: did it meet the key protocol criteria? ("followed protocol"/"did not").

    The key criteria are the protocol's (its `[analysis] key_criteria`) unless given.
    A course followed the protocol when every verdict of every key criterion for it is
    compliant: for session-level criteria all of its sessions, for course-level ones the
    course itself. Verdicts "not applicable" (a rule that does not apply to a session,
    a course-level rule on a course still running) do not count. "Not documented" (a value the rule needs is missing) is, as in the
    audit, not compliant: with ``missing="not met"`` (default) such a course "did not"
    follow the protocol; with ``missing="exclude"`` a course whose only gaps are
    undocumented values gets group NA and leaves the comparison, a sensitivity check.
    Columns: course_id, patient_id, operator, clinic, completed, sessions, one status
    column per criterion (compliant / deviation / not documented / not applicable),
    deviations, not_documented, failed (criteria not met), group.
    """
    if missing not in ("not met", "exclude"):
        raise ValueError('missing must be "not met" or "exclude"')
    if criteria is None:
        criteria = audit.protocol.key_criteria
    known = {c.id: c for c in audit.protocol.criteria}
    unknown = [c for c in criteria if c not in known]
    if unknown:
        raise ValueError(f"criteria not in protocol {audit.protocol.id}: {', '.join(unknown)}")
    courses = audit.courses
    nc = len(courses)
    out = courses[["course_id", "patient_id", "operator", "clinic", "completed",
                   "sessions"]].copy()
    pos = pd.Index(courses["course_id"].astype("string")).get_indexer(
        audit.sessions["course_id"].astype("string"))
    v = audit.verdicts
    crit_cat = pd.Categorical(v["criterion"])  # categorical codes: no string compare per row
    crit = crit_cat.codes
    crit_index = {str(c): i for i, c in enumerate(crit_cat.categories)}
    unit = v["unit"].to_numpy()
    verdict_cat = pd.Categorical(v["verdict"])
    verdict = verdict_cat.codes
    verdict_index = {str(c): i for i, c in enumerate(verdict_cat.categories)}
    dev_total = np.zeros(nc, dtype=np.int64)
    miss_total = np.zeros(nc, dtype=np.int64)
    failed = np.full(nc, "", dtype=object)
    for cid in criteria:
        here = crit == crit_index.get(cid, -2)
        units = unit[here]
        c_of = units if known[cid].level == "course" else pos[units]
        vv = verdict[here]
        counts = {name: np.bincount(c_of[vv == verdict_index.get(name, -2)], minlength=nc)
                  for name in ("compliant", "deviation", "not documented")}
        status = np.select([counts["deviation"] > 0, counts["not documented"] > 0,
                            counts["compliant"] > 0],
                           ["deviation", "not documented", "compliant"], "not applicable")
        out[cid] = pd.Categorical(status, categories=["compliant", "deviation",
                                                      "not documented", "not applicable"])
        dev_total += counts["deviation"]
        miss_total += counts["not documented"]
        bad = status != "compliant"
        bad &= status != "not applicable"
        failed = np.where(bad, np.where(failed == "", cid, failed + ", " + cid), failed)
    out["deviations"] = dev_total
    out["not_documented"] = miss_total
    out["failed"] = failed
    group = np.where((dev_total == 0) & (miss_total == 0), FOLLOWED, NOT_FOLLOWED).astype(object)
    if not criteria:  # nothing to follow: no course is in either group
        group[:] = None
    if missing == "exclude":
        group[(dev_total == 0) & (miss_total > 0)] = None
    out["group"] = pd.Categorical(group, categories=list(GROUPS))
    return out.reset_index(drop=True)


def course_outcomes(windows: pd.DataFrame, paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """One outcome value per course × measure: final scores, and the change from baseline.

    Long table with course_id, instrument, rater, measure ("final score" or "change from
    baseline"), value; the input of compare_groups and spearman_energy.
    """
    f = windows[windows["is_final"].to_numpy(dtype=bool)]
    parts = [pd.DataFrame({
        "course_id": f["course_id"].to_numpy(dtype=object),
        "instrument": f["instrument"].astype("string").to_numpy(dtype=object),
        "rater": f["rater"].astype("string").to_numpy(dtype=object),
        "measure": FINAL_SCORE,
        "value": f["score"].to_numpy(dtype="float64", na_value=np.nan)})]
    if paired is not None and len(paired):
        parts.append(pd.DataFrame({
            "course_id": paired["course_id"].to_numpy(dtype=object),
            "instrument": paired["instrument"].to_numpy(dtype=object),
            "rater": paired["rater"].to_numpy(dtype=object), "measure": CHANGE,
            "value": paired["change"].to_numpy(dtype="float64")}))
    out = pd.concat(parts, ignore_index=True)
    order = _instrument_order(out["instrument"]) * 2 + (out["measure"] == CHANGE)
    return out.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def _is_continuous(instrument: str) -> bool:
    """A measurement without an upper scale end (hair density) is continuous; scores are ordinal."""
    ins = schema.INSTRUMENTS.get(instrument)
    return ins is not None and ins.high is None


def compare_groups(values: pd.DataFrame, groups: pd.DataFrame, level: float = 0.95,
                   covariates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Outcomes of courses that followed the protocol against those that did not.

    Per measure × instrument × rater: n, median [IQR] and mean (SD) per group; for
    ordinal scores the Mann–Whitney U test with the rank-biserial correlation r and its
    interval (r > 0: the "followed protocol" group scores higher); for continuous
    measures (hair density, its change) Welch's t with the mean difference (followed −
    did not) and its interval. ``favours`` reads the interval with the registry's
    direction of better. Shares improved per group (registry thresholds) with the
    Newcombe interval of their difference where the instrument defines "improved".

    With `covariates` (course_covariates), each row also carries the difference
    adjusted for baseline hair density, age band, Fitzpatrick type and clinician, with
    cluster-robust (patient) standard errors (adjusted_difference): ``mean_diff`` (the
    unadjusted difference of means, same units), ``adjusted_diff`` (followed − did
    not, in the measure's units), ``adjusted_ci_low``/``_high``, ``adjusted_p``,
    ``adjusted_n`` (courses used), ``adjusted_clusters`` (patients),
    ``adjusted_favours``, ``covariates_used``, ``covariates_left_out`` (with why) and
    ``adjusted_note``.
    """
    d = values.merge(groups[["course_id", "group"]], on="course_id", how="inner")
    d = d[d["group"].notna()]
    rows = []
    for (measure, inst, rater), sub in d.groupby(["measure", "instrument", "rater"],
                                                 sort=False, observed=True):
        a = sub.loc[sub["group"] == FOLLOWED, "value"].to_numpy(dtype="float64")
        b = sub.loc[sub["group"] == NOT_FOLLOWED, "value"].to_numpy(dtype="float64")
        ins = schema.INSTRUMENTS.get(inst)
        row: dict[str, Any] = {"measure": measure, "instrument": inst,
                               "title": ins.title if ins else inst, "rater": rater}
        for tag, x in (("followed", a), ("not", b)):
            row[f"n_{tag}"] = x.size
            row[f"median_{tag}"] = float(np.median(x)) if x.size else math.nan
            row[f"q1_{tag}"] = float(np.quantile(x, 0.25)) if x.size else math.nan
            row[f"q3_{tag}"] = float(np.quantile(x, 0.75)) if x.size else math.nan
            row[f"mean_{tag}"] = float(x.mean()) if x.size else math.nan
            row[f"sd_{tag}"] = float(x.std(ddof=1)) if x.size > 1 else math.nan
        continuous = measure == CHANGE or _is_continuous(inst)
        if continuous:
            w = welch_t(a, b, level)
            row.update(test="Welch t", statistic=w["t"], df=w["df"], p=w["p"],
                       effect_name="mean difference", effect=w["diff"],
                       effect_ci_low=w["ci_low"], effect_ci_high=w["ci_high"],
                       smd=smd_continuous(row["mean_followed"], row["sd_followed"],
                                          row["mean_not"], row["sd_not"])
                       if a.size > 1 and b.size > 1 else math.nan)
        else:
            mw = mann_whitney(a, b, level)
            row.update(test="Mann–Whitney U", statistic=mw["u"], df=math.nan, p=mw["p"],
                       effect_name="rank-biserial r", effect=mw["r"],
                       effect_ci_low=mw["r_low"], effect_ci_high=mw["r_high"], smd=math.nan)
        sign = 1 if ins is None or ins.higher_is_better else -1  # change: final − baseline
        lo, hi = row["effect_ci_low"] * sign, row["effect_ci_high"] * sign
        lo, hi = min(lo, hi), max(lo, hi)
        row["favours"] = (FOLLOWED if lo > 0 else NOT_FOLLOWED if hi < 0
                          else "no clear difference") if np.isfinite(lo) else "no data"
        if measure == FINAL_SCORE and ins is not None and ins.improved_at is not None:
            ia = _improved(pd.Series([inst] * a.size, dtype="string"), a)
            ib = _improved(pd.Series([inst] * b.size, dtype="string"), b)
            ka, kb = int(np.nansum(ia)), int(np.nansum(ib))
            dlo, dhi = newcombe_diff_ci(ka, a.size, kb, b.size, level)
            row.update(improved_followed=ka / a.size if a.size else math.nan,
                       improved_not=kb / b.size if b.size else math.nan,
                       improved_diff_ci_low=dlo, improved_diff_ci_high=dhi)
        if covariates is not None:
            row["mean_diff"] = row["mean_followed"] - row["mean_not"]
            row.update(_adjusted_row(sub, covariates, sign > 0, level))
        rows.append(row)
    return pd.DataFrame(rows, columns=_COMPARE_COLUMNS
                        + (_ADJUSTED_COLUMNS if covariates is not None else []))


_COMPARE_COLUMNS = [
    "measure", "instrument", "title", "rater",
    *[f"{s}_{g}" for g in ("followed", "not") for s in ("n", "median", "q1", "q3", "mean",
                                                        "sd")],
    "test", "statistic", "df", "p", "effect_name", "effect", "effect_ci_low",
    "effect_ci_high", "smd", "favours", "improved_followed", "improved_not",
    "improved_diff_ci_low", "improved_diff_ci_high"]


# ---------------------------------------------------------------------------------------------
# adjusted comparison: OLS with cluster-robust (patient) standard errors

#: Covariates of the adjusted comparison, in order: column of course_covariates → label.
COVARIATES = {"baseline_hair_density": "baseline hair density", "age_band": "age band",
              "fitzpatrick_type": "Fitzpatrick type", "operator": "clinician"}
#: Lower edges (years) of the age bands after the first: under 30, 30–39, …, 60 and over.
AGE_BANDS = (30, 40, 50, 60)

_ADJUSTED_COLUMNS = ["mean_diff", "adjusted_diff", "adjusted_ci_low", "adjusted_ci_high",
                     "adjusted_p", "adjusted_n", "adjusted_clusters", "adjusted_favours",
                     "covariates_used", "covariates_left_out", "adjusted_note"]


def age_band(age: Any, edges: Sequence[float] = AGE_BANDS) -> pd.Series:
    """Age in years → band label ("under 30", "30–39", …, "60 and over"); missing stays NA."""
    a = np.asarray(pd.to_numeric(pd.Series(age), errors="coerce"), dtype="float64")
    ed = [float(e) for e in edges]
    labels = ([f"under {ed[0]:g}"] + [f"{lo:g}–{hi - 1:g}" for lo, hi in itertools.pairwise(ed)]
              + [f"{ed[-1]:g} and over"])
    code = np.searchsorted(ed, np.nan_to_num(a), side="right")
    code = np.where(np.isnan(a), -1, code)
    return pd.Series(pd.Categorical.from_codes(code, labels), name="age_band")


def course_covariates(audit: Any, windows: pd.DataFrame | None = None,
                      instrument: str = "hair_density") -> pd.DataFrame:
    """One row per course with the covariates of the adjusted comparison.

    Columns: course_id, patient_id (the cluster), baseline_hair_density (the course's
    baseline value of `instrument`, ``is_baseline``; missing without `windows`),
    age_band (age at the first session from date_of_birth, see age_band),
    fitzpatrick_type (first session) and operator (the course's clinician). A column
    the data do not carry is all missing: adjusted_difference then leaves it out.
    """
    c = audit.courses
    ids = c["course_id"].astype("string")
    first = _first_session(audit).reindex(ids)
    out = pd.DataFrame({"course_id": ids.to_numpy(dtype=object),
                        "patient_id": c["patient_id"].astype("string").to_numpy(dtype=object)})
    base = np.full(len(c), np.nan)
    if windows is not None:
        hd = windows[windows["is_baseline"].to_numpy(dtype=bool)
                     & (windows["instrument"].astype("string") == instrument).to_numpy(
                         dtype=bool, na_value=False)]
        hd = hd.drop_duplicates("course_id").set_index("course_id")["score"]
        base = hd.reindex(ids).to_numpy(dtype="float64", na_value=np.nan)
    out["baseline_hair_density"] = base
    if "date_of_birth" in first:
        age = (first["session_date"] - first["date_of_birth"]).dt.days / 365.25
        out["age_band"] = age_band(age.to_numpy(dtype="float64", na_value=np.nan)).to_numpy()
    else:
        out["age_band"] = None
    fitz = (first["fitzpatrick_type"] if "fitzpatrick_type" in first
            else pd.Series(None, index=first.index))
    out["fitzpatrick_type"] = fitz.astype("string").to_numpy(dtype=object, na_value=None)
    out["operator"] = c["operator"].astype("string").to_numpy(dtype=object, na_value=None)
    return out


def adjusted_difference(data: pd.DataFrame, covariates: Sequence[str] = tuple(COVARIATES),
                        outcome: str = "value", group: str = "followed",
                        cluster: str = "patient_id", level: float = 0.95) -> dict[str, Any]:
    """Difference in `outcome` (group 1 − group 0) adjusted for `covariates` by OLS, with
    cluster-robust standard errors by `cluster` (courses of one patient are not independent).

    Model: outcome ~ group + covariates (a numeric covariate enters linearly, any other
    as indicator columns with its first level, in sorted order, as reference); fitted
    with statsmodels ``OLS(...).fit(cov_type="cluster", cov_kwds={"groups": patient},
    use_t=True)``: the CR1 sandwich with the small-sample factor
    G/(G − 1)·(N − 1)/(N − K) and t with G − 1 degrees of freedom (G patients), as
    Stata's ``regress, vce(cluster)``. Rows with a missing outcome, group or cluster
    are left out. A covariate that is not in `data`, is missing on every row, or takes
    one value only is left out (and named, with why, in ``covariates_left_out``); the
    others are used on the courses where all of them are recorded (complete cases;
    ``n`` says how many). When the covariates determine the group (the group
    coefficient is not estimable) the result is nan with a note.

    Returns diff, ci_low, ci_high, p, n, clusters, used (column names), left_out
    (column → reason), note.
    """
    out: dict[str, Any] = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                           "p": math.nan, "n": 0, "clusters": 0, "used": [],
                           "left_out": {}, "note": ""}
    y_all = pd.to_numeric(data[outcome], errors="coerce").astype("float64")
    g_all = pd.to_numeric(pd.Series(data[group]).astype("Float64"), errors="coerce")
    keep = (y_all.notna() & g_all.notna() & data[cluster].notna()).to_numpy(dtype=bool)
    for name in covariates:
        if name not in data:
            out["left_out"][name] = "not in the data"
    used = []
    for c in covariates:
        if c not in data:
            continue
        x = data.loc[keep, c]
        if x.notna().sum() == 0:
            out["left_out"][c] = "not recorded"
        elif x.nunique(dropna=True) <= 1:
            out["left_out"][c] = "one value only"
        else:
            used.append(c)
    while True:  # on the complete cases a covariate may take one value only: leave it out
        rows = keep.copy()
        for c in used:
            rows &= data[c].notna().to_numpy(dtype=bool)
        constant = [c for c in used if data.loc[rows, c].nunique(dropna=True) <= 1]
        if not constant:
            break
        for c in constant:
            out["left_out"][c] = "one value only"
            used.remove(c)
    out["used"] = used
    n = int(rows.sum())
    out["n"] = n
    d = data.loc[rows]
    groups_codes = pd.factorize(d[cluster].astype("string"))[0]
    out["clusters"] = int(np.unique(groups_codes).size)
    g = g_all[rows].to_numpy(dtype="float64")
    if n == 0 or np.unique(g).size < 2:
        out["note"] = "both groups are needed"
        return out
    parts = [pd.Series(1.0, index=d.index, name="const"),
             pd.Series(g, index=d.index, name=group)]
    for c in used:
        x = d[c]
        if pd.api.types.is_numeric_dtype(x) and not isinstance(x.dtype, pd.CategoricalDtype):
            parts.append(x.astype("float64").rename(c))
        else:
            s = x.astype("string")
            levels = sorted(s.unique())
            for lv in levels[1:]:
                parts.append((s == lv).astype("float64").rename(f"{c}[{lv}]"))
    X = pd.concat(parts, axis=1).to_numpy(dtype="float64")
    y = y_all[rows].to_numpy(dtype="float64")
    rank = np.linalg.matrix_rank(X)
    if rank != np.linalg.matrix_rank(np.delete(X, 1, axis=1)) + 1:
        out["note"] = "the covariates determine the group"
        return out
    if out["clusters"] < 2 or n <= rank:
        out["note"] = "too few courses or patients for the model"
        return out
    import statsmodels.api as sm  # imported here: only the adjusted comparison needs it

    fit = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": groups_codes},
                           use_t=True)
    lo, hi = fit.conf_int(alpha=1 - level)[1]
    out.update(diff=float(fit.params[1]), ci_low=float(lo), ci_high=float(hi),
               p=float(fit.pvalues[1]))
    return out


def _adjusted_row(sub: pd.DataFrame, covariates: pd.DataFrame, higher_is_better: bool,
                  level: float) -> dict[str, Any]:
    d = sub.merge(covariates, on="course_id", how="left")
    d["followed"] = (d["group"] == FOLLOWED).astype("float64")
    names = [c for c in COVARIATES if c in covariates]
    res = adjusted_difference(d, names, level=level)
    for c in COVARIATES:  # a covariate the table does not have at all
        if c not in covariates:
            res["left_out"][c] = "not in the data"
    sign = 1 if higher_is_better else -1
    lo, hi = sorted((res["ci_low"] * sign, res["ci_high"] * sign))
    fav = ((FOLLOWED if lo > 0 else NOT_FOLLOWED if hi < 0 else "no clear difference")
           if np.isfinite(lo) else "no data")
    order = [c for c in COVARIATES if c in res["left_out"]]
    order += [c for c in res["left_out"] if c not in order]
    left = "; ".join(f"{COVARIATES.get(c, c)} ({res['left_out'][c]})" for c in order)
    return {"adjusted_diff": res["diff"], "adjusted_ci_low": res["ci_low"],
            "adjusted_ci_high": res["ci_high"], "adjusted_p": res["p"],
            "adjusted_n": res["n"], "adjusted_clusters": res["clusters"],
            "adjusted_favours": fav,
            "covariates_used": ", ".join(COVARIATES.get(c, c) for c in res["used"])
            or "none",
            "covariates_left_out": left, "adjusted_note": res["note"]}


def _fmt(x: Any, digits: int = 2, signed: bool = False) -> str:
    """A number as printed, "–" where there is none (never "nan" or "None")."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    if not np.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _fmt_ci(est: Any, lo: Any, hi: Any, digits: int = 2, signed: bool = False) -> str:
    e = _fmt(est, digits, signed)
    if e == "–" or _fmt(lo) == "–":
        return e
    return f"{e} ({_fmt(lo, digits, signed)} to {_fmt(hi, digits, signed)})"


def format_comparison(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The comparison table as printed, unadjusted and adjusted side by side, as text.

    One row per measure: instrument, measure, rater, n and median per group; the unadjusted test
    with its effect size and 95 % CI and p; the unadjusted difference of means; the
    adjusted difference (followed − did not, in the measure's units) with its 95 % CI
    and p, the courses and patients it used, the covariates used and those left out
    (with why). Missing values print as "–" (or the reason there is no estimate).
    """
    out = pd.DataFrame({
        "instrument": table["title"].astype(str),
        "measure": table["measure"].astype(str),
        "rater": table["rater"].astype(str),
        "n (followed / did not)": [f"{int(a)} / {int(b)}" for a, b in
                                   zip(table["n_followed"], table["n_not"], strict=True)],
        "median (followed / did not)": [
            f"{_fmt(a, 1)} / {_fmt(b, 1)}" for a, b in
            zip(table["median_followed"], table["median_not"], strict=True)],
        "unadjusted test": table["test"].astype(str),
        "unadjusted effect (95 % CI)": [
            f"{name} {_fmt_ci(e, lo, hi, digits, signed=not name.startswith('rank'))}"
            for name, e, lo, hi in zip(table["effect_name"], table["effect"],
                                       table["effect_ci_low"], table["effect_ci_high"],
                                       strict=True)],
        "unadjusted p": format_p(table["p"]),
    })
    out["unadjusted p"] = out["unadjusted p"].replace("", "–")
    if "adjusted_diff" not in table:
        return out
    out["unadjusted mean difference"] = [_fmt(x, digits, True) for x in table["mean_diff"]]
    out["adjusted difference (95 % CI)"] = [
        _fmt_ci(e, lo, hi, digits, True) if np.isfinite(e) else f"– ({note or 'no data'})"
        for e, lo, hi, note in zip(table["adjusted_diff"].astype(float),
                                   table["adjusted_ci_low"], table["adjusted_ci_high"],
                                   table["adjusted_note"], strict=True)]
    p = format_p(table["adjusted_p"])
    out["adjusted p"] = np.where(p == "", "–", p)
    out["adjusted: courses / patients"] = [
        f"{int(n)} / {int(c)}" for n, c in zip(table["adjusted_n"],
                                               table["adjusted_clusters"], strict=True)]
    out["covariates used"] = table["covariates_used"].astype(str)
    out["covariates left out"] = table["covariates_left_out"].astype(str)
    out["adjusted favours"] = table["adjusted_favours"].astype(str)
    return out

def _first_session(audit: Any) -> pd.DataFrame:
    s = audit.sessions
    first = s[s["session_number"].to_numpy(dtype="int64", na_value=1) == 1]
    return first.drop_duplicates("course_id").set_index("course_id")


def table_one(audit: Any, groups: pd.DataFrame, windows: pd.DataFrame | None = None,
              nonnormal: Sequence[str] = (), level: float = 0.95) -> pd.DataFrame:
    """Baseline characteristics by group, printed the way clinical papers print Table 1.

    Why: if the groups differed before treatment (age, skin type, baseline density),
    the outcome difference may not be the protocol's doing. Courses: those with a
    group, and (when `windows` is given) a final assessment, i.e. the courses compared.
    Characteristics come from the course's first session (age at the first session
    from date_of_birth, sex, Fitzpatrick type, area, clinic) and its baseline hair
    density. Continuous: mean (SD) with Welch's t p, or median [IQR] with Mann–Whitney
    p for names in `nonnormal` ("age", "baseline_hair_density"); categorical: n (%) per level with the chi-square p
    (Yates-corrected for 2×2; Fisher's exact when a 2×2 expected count is below 5).
    SMD: Austin (2009) for continuous, Yang & Dalton (2012) for categorical (absolute).
    Columns: characteristic, level, one per group, p, SMD, imbalanced (SMD above
    SMD_IMBALANCED, 0.1, the usual reading of imbalance: Austin 2009), missing (n per
    group).
    """
    g = groups[groups["group"].notna()][["course_id", "group"]]
    if windows is not None:
        with_final = windows.loc[windows["is_final"].to_numpy(dtype=bool), "course_id"]
        g = g[g["course_id"].isin(set(with_final.dropna()))]
    first = _first_session(audit).reindex(g["course_id"].astype("string"))
    data = pd.DataFrame(index=range(len(g)))
    labels: dict[str, str] = {}
    kinds: dict[str, str] = {}
    if "date_of_birth" in first and first["date_of_birth"].notna().any():
        age = (first["session_date"] - first["date_of_birth"]).dt.days / 365.25
        data["age"] = age.to_numpy(dtype="float64", na_value=np.nan)
        labels["age"], kinds["age"] = "Age at first session, years", "continuous"
    for col, label in (("sex", "Sex"), ("fitzpatrick_type", "Fitzpatrick skin type"),
                       ("area", "Treated area"), ("clinic", "Clinic")):
        if col in first and first[col].notna().any():
            data[col] = first[col].astype("string").to_numpy(dtype=object)
            labels[col], kinds[col] = label, "categorical"
    if windows is not None:
        hd = windows[windows["is_baseline"].to_numpy(dtype=bool)
                     & (windows["instrument"].astype("string") == "hair_density")]
        hd = hd.drop_duplicates("course_id").set_index("course_id")["score"]
        if len(hd):
            data["baseline_hair_density"] = hd.reindex(g["course_id"]).to_numpy(
                dtype="float64", na_value=np.nan)
            labels["baseline_hair_density"] = "Baseline hair density, hairs/cm²"
            kinds["baseline_hair_density"] = "continuous"
    grp = g["group"].astype(str).to_numpy()
    in_a, in_b = grp == FOLLOWED, grp == NOT_FOLLOWED
    rows: list[dict[str, Any]] = [{"characteristic": "Courses, n", "level": "",
                                   FOLLOWED: f"{in_a.sum()}", NOT_FOLLOWED: f"{in_b.sum()}",
                                   "p": math.nan, "SMD": math.nan, "missing": ""}]
    for col, label in labels.items():
        x = data[col]
        miss = f"{int(x[in_a].isna().sum())} / {int(x[in_b].isna().sum())}"
        if kinds[col] == "continuous":
            a = x[in_a].to_numpy(dtype="float64")
            b = x[in_b].to_numpy(dtype="float64")
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if col in nonnormal:
                cell = [_median_iqr(a), _median_iqr(b)]
                p = mann_whitney(a, b)["p"]
                lvl = "median [IQR]"
            else:
                cell = [_mean_sd(a), _mean_sd(b)]
                p = welch_t(a, b)["p"]
                lvl = "mean (SD)"
            smd = (abs(smd_continuous(a.mean(), a.std(ddof=1), b.mean(), b.std(ddof=1)))
                   if a.size > 1 and b.size > 1 else math.nan)
            rows.append({"characteristic": label, "level": lvl, FOLLOWED: cell[0],
                         NOT_FOLLOWED: cell[1], "p": p, "SMD": smd, "missing": miss})
            continue
        levels = sorted(x.dropna().unique(), key=str)
        ca = x[in_a].value_counts().reindex(levels, fill_value=0).to_numpy(dtype="float64")
        cb = x[in_b].value_counts().reindex(levels, fill_value=0).to_numpy(dtype="float64")
        pa = ca / ca.sum() if ca.sum() else ca
        pb = cb / cb.sum() if cb.sum() else cb
        rows.append({"characteristic": label, "level": "n (%)", FOLLOWED: "",
                     NOT_FOLLOWED: "", "p": _categorical_p(ca, cb),
                     "SMD": smd_categorical(pa, pb) if ca.sum() and cb.sum() else math.nan,
                     "missing": miss})
        for lv, na_, nb_, qa, qb in zip(levels, ca, cb, pa, pb, strict=True):
            rows.append({"characteristic": "", "level": str(lv),
                         FOLLOWED: f"{int(na_)} ({100 * qa:.1f} %)",
                         NOT_FOLLOWED: f"{int(nb_)} ({100 * qb:.1f} %)",
                         "p": math.nan, "SMD": math.nan, "missing": ""})
    out = pd.DataFrame(rows, columns=["characteristic", "level", FOLLOWED, NOT_FOLLOWED,
                                      "p", "SMD", "missing"])
    smd = out["SMD"].to_numpy(dtype="float64")
    out.insert(6, "imbalanced", np.nan_to_num(smd, nan=0.0) > SMD_IMBALANCED)
    return out


def format_p(p: Any) -> np.ndarray:
    """p-values as printed: 3 decimals, "<0.001" below that, "" where there is none."""
    v = np.asarray(pd.to_numeric(pd.Series(p), errors="coerce"), dtype="float64")
    return np.where(np.isnan(v), "", np.where(v < 0.001, "<0.001",
                                              np.char.mod("%.3f", np.nan_to_num(v))))


def format_table_one(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as printed: p to 3 decimals ("<0.001" below), SMD to 2, blanks for none,
    and "imbalanced" where the SMD exceeds SMD_IMBALANCED (0.1)."""
    out = table.copy()
    smd = out["SMD"].to_numpy(dtype="float64")
    out["p"] = format_p(out["p"])
    out["SMD"] = np.where(np.isnan(smd), "", np.char.mod("%.2f", np.nan_to_num(smd)))
    flag = (np.nan_to_num(smd, nan=0.0) > SMD_IMBALANCED)
    out["imbalanced"] = np.where(flag, "imbalanced", "")
    return out


def imbalance_sentence(table: pd.DataFrame) -> str:
    """One sentence naming the Table 1 characteristics whose SMD exceeds 0.1, or "" if none."""
    smd = table["SMD"].to_numpy(dtype="float64")
    hit = np.nan_to_num(smd, nan=0.0) > SMD_IMBALANCED
    if not hit.any():
        return ""
    names = [f"{_lower_first(c.split(',')[0])} (SMD {v:.2f})"
             for c, v in zip(table["characteristic"][hit], smd[hit], strict=True)]
    return (f"The groups differed before treatment (standardised mean difference above "
            f"{SMD_IMBALANCED:g}) in {_join(names)}, so read the unadjusted comparison "
            "with that in mind; the adjusted one accounts for the covariates it names.")


def _lower_first(text: str) -> str:
    """"Treated area" → "treated area"; a name ("Fitzpatrick skin type") stays as it is."""
    word = text.split(" ")[0]
    return text if word in ("Fitzpatrick",) else text[:1].lower() + text[1:]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _mean_sd(x: np.ndarray) -> str:
    if x.size == 0:
        return "–"
    sd = f"{x.std(ddof=1):.1f}" if x.size > 1 else "–"
    return f"{x.mean():.1f} ({sd})"


def _median_iqr(x: np.ndarray) -> str:
    if x.size == 0:
        return "–"
    q = np.quantile(x, [0.5, 0.25, 0.75])
    return f"{q[0]:.1f} [{q[1]:.1f}, {q[2]:.1f}]"


def _categorical_p(ca: np.ndarray, cb: np.ndarray) -> float:
    table = np.vstack([ca, cb])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return math.nan
    expected = _st.contingency.expected_freq(table)
    if table.shape == (2, 2) and (expected < 5).any():
        return float(_st.fisher_exact(table).pvalue)
    return float(_st.chi2_contingency(table, correction=True).pvalue)


def course_energy(audit: Any, energy: str = "energy_start_mj") -> pd.Series:
    """Mean energy (mJ) over each course's sessions, indexed by course_id (missing ignored)."""
    s = audit.sessions
    e = s[energy].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(e, index=s["course_id"].astype("string").to_numpy()).groupby(
        level=0).mean()


def spearman_energy(values: pd.DataFrame, audit: Any, energy: str = "energy_start_mj",
                    level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman correlation of each course's mean energy with each outcome measure.

    Why: the sheet sets the starting energy (20–30 mJ); if energy matters, outcomes
    should move with it. Returns (one row per measure × instrument × rater with n, rho,
    its Fisher-z interval and p; the per-course data with an ``energy`` column).
    """
    data = values.copy()
    data["energy"] = course_energy(audit, energy).reindex(
        data["course_id"].astype("string")).to_numpy()
    rows = []
    for (measure, inst, rater), sub in data.groupby(["measure", "instrument", "rater"],
                                                    sort=False):
        ins = schema.INSTRUMENTS.get(inst)
        rows.append({"measure": measure, "instrument": inst, "title": ins.title if ins
                     else inst, "rater": rater, "energy": energy,
                     **spearman_ci(sub["energy"], sub["value"], level)})
    cols = ["measure", "instrument", "title", "rater", "energy", "n", "rho", "ci_low",
            "ci_high", "p"]
    return pd.DataFrame(rows, columns=cols), data
