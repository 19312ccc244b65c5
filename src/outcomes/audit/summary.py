"""Compliance summaries: counts per criterion (and clinician, clinic or month), the
percent with its Wilson 95 % interval, and the status against the target.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from outcomes.parallel import map_threads
from outcomes.protocol import VERDICTS, Protocol
from outcomes.stats import bh_qvalues, newcombe_diff_ci, wilson_ci, wilson_ci_clustered

if TYPE_CHECKING:
    from outcomes.audit.evaluate import Audit

STATUS_TEXT = {
    "met": "target met",
    "not met": "target not met",
    "inconclusive": "inconclusive: the interval spans the target",
    "no data": "no eligible records",
    "not recorded": "not recorded: no eligible record documents the value",
}


def status_of(compliant: np.ndarray, eligible: np.ndarray, ci_low: np.ndarray,
              ci_high: np.ndarray, target: np.ndarray,
              missing: np.ndarray | None = None) -> np.ndarray:
    """Target met, not met, or inconclusive when the interval spans the target.

    A 100 % target (safety items) is met only when every eligible record complies:
    its interval never reaches 100 %, so the interval rule would never say "met".
    "not recorded" when no eligible record documents the value at all (typically a
    column the export does not have): a documentation question, not a practice one.
    """
    full = target >= 100
    met = np.where(full, compliant == eligible, ci_low * 100 >= target)
    not_met = np.where(full, compliant < eligible, ci_high * 100 < target)
    unrecorded = (eligible > 0) & (missing == eligible) if missing is not None \
        else np.zeros(len(eligible), dtype=bool)
    return np.select([eligible == 0, unrecorded, met, not_met],
                     ["no data", "not recorded", "met", "not met"],
                     "inconclusive").astype(object)


def summarise(verdicts: pd.DataFrame, protocol: Protocol,
              by: str | list[str] | None = None, cube: VerdictCube | None = None,
              patients: np.ndarray | None = None) -> pd.DataFrame:
    """Per criterion (× group): eligible, compliant, deviations, missing, percent, CI, status.

    With `patients` (each verdict's patient, as codes) the records of one patient are
    clusters: `design_effect` and the Wilson interval at the effective size
    (`ci_low_clustered`, `ci_high_clustered`), which the status then uses. `cube` (the
    audit's VerdictCube of these verdicts) saves counting them again.
    """
    keys = ["criterion"] + ([by] if isinstance(by, str) else list(by or []))
    if cube is None or not cube.covers(keys):
        cube = VerdictCube(verdicts, keys)
    counts = cube.counts(keys)
    if counts is None:  # keys of another kind: let pandas group them
        counts = (verdicts.groupby(keys, observed=True)["verdict"].value_counts()
                  .unstack("verdict", fill_value=0))
        for v in VERDICTS:
            if v not in counts.columns:
                counts[v] = 0
        counts = counts.reset_index()
    counts = counts[counts[["compliant", "deviation", "not documented"]].sum(axis=1) > 0] \
        if by else counts
    out = pd.DataFrame({k: counts[k] for k in keys})
    out["criterion"] = out["criterion"].astype(str)
    titles = {c.id: c.title for c in protocol.criteria}
    targets = {c.id: c.target for c in protocol.criteria}
    out.insert(1, "title", out["criterion"].map(titles))
    out["eligible"] = (counts["compliant"] + counts["deviation"]
                       + counts["not documented"]).to_numpy()
    out["compliant"] = counts["compliant"].to_numpy()
    out["deviations"] = counts["deviation"].to_numpy()
    out["missing"] = counts["not documented"].to_numpy()
    out["not_applicable"] = counts["not applicable"].to_numpy()
    e = out["eligible"].to_numpy(dtype="float64")
    k = out["compliant"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        out["percent"] = np.where(e > 0, 100 * k / np.where(e > 0, e, 1), np.nan)
    lo, hi = wilson_ci(k, e)
    out["ci_low"] = np.asarray(lo, dtype="float64") * 100
    out["ci_high"] = np.asarray(hi, dtype="float64") * 100
    out["target"] = out["criterion"].map(targets).astype("float64")
    low, high = out["ci_low"], out["ci_high"]
    if patients is not None:
        deff = clustered_deff(verdicts, keys, patients, out)
        out["design_effect"] = deff
        # one patient's records cannot show their clustering: counted as independent
        lo_c, hi_c = wilson_ci_clustered(k, e, np.where(np.isnan(deff), 1.0, deff))
        out["ci_low_clustered"] = low = np.asarray(lo_c, dtype="float64") * 100
        out["ci_high_clustered"] = high = np.asarray(hi_c, dtype="float64") * 100
    out["status"] = status_of(k, e, np.nan_to_num(np.asarray(low) / 100),
                              np.nan_to_num(np.asarray(high) / 100),
                              out["target"].to_numpy(), out["missing"].to_numpy())
    return out.reset_index(drop=True)


#: (group, patient, compliant) is one int64 below this; beyond, groups are numbered first
NUMBERS_UP_TO = 2 ** 62


def clustered_deff(verdicts: pd.DataFrame, keys: list[str], patients: np.ndarray,
                   out: pd.DataFrame) -> np.ndarray:
    """Design effect of each row of `out` (its keys), patients as clusters.

    `stats.design_effect` for every group at once, from per-patient sums:
    Σ(x − p·n)² = Σx² − 2pΣxn + p²Σn², so one pass over the eligible verdicts serves
    every group. NaN where a group has fewer than two patients; 1 where p is 0 or 1.

    A million-session audit has some fifteen million verdicts, so each eligible verdict
    becomes one number, (group, patient, compliant), sorted in place: runs of equal
    numbers are then counted without a groupby's copies.
    """
    codes = verdicts["verdict"].cat.codes.to_numpy()
    eligible = (codes >= 0) & (codes != VERDICTS.index("not applicable"))
    coded = [_coded(verdicts[k]) for k in keys]
    for key_codes, _ in coded:
        eligible &= key_codes >= 0  # a missing key: dropped, as groupby drops it
    rows = np.flatnonzero(eligible)
    patient = np.asarray(patients)[rows]
    if patient.dtype.kind not in "iu":
        patient, _ = pd.factorize(patient)  # missing: -1, one cluster as for codes
    patient = patient.astype(np.int64, copy=False)
    patient -= patient.min() if len(patient) else 0
    clusters = int(patient.max()) + 1 if len(patient) else 1
    dims = [max(len(labels), 1) for _, labels in coded]
    group = np.ravel_multi_index([key_codes[rows] for key_codes, _ in coded], dims)
    group_of = None
    if math.prod(dims) * clusters * 2 >= NUMBERS_UP_TO:  # too many: number the groups seen
        group, group_of = pd.factorize(group)
    number = group.astype(np.int64, copy=False)
    del group
    number *= clusters
    number += patient
    del patient
    number *= 2
    number += codes[rows] == VERDICTS.index("compliant")
    del rows
    number.sort()
    # runs of one (group, patient, compliant), then of one (group, patient), then one group;
    # each step frees what the next does not need (these arrays hold millions of values)
    starts = _run_starts(number)
    count = np.diff(starts, append=len(number))
    unit = number[starts]
    del number, starts
    compliant = (unit & 1).astype(bool)
    unit >>= 1
    unit_starts = _run_starts(unit)
    n = np.add.reduceat(count, unit_starts).astype("float64")
    count[~compliant] = 0
    x = np.add.reduceat(count, unit_starts).astype("float64")
    del count, compliant
    group_number = unit[unit_starts]
    group_number //= clusters
    del unit, unit_starts
    group_starts = _run_starts(group_number)
    k = np.diff(group_starts, append=len(group_number)).astype("float64")
    n_sum, x_sum = np.add.reduceat(n, group_starts), np.add.reduceat(x, group_starts)
    xx, xn, nn = (np.add.reduceat(w, group_starts) for w in (x * x, x * n, n * n))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x_sum / n_sum
        var = k / (k - 1) * (xx - 2 * p * xn + p ** 2 * nn) / n_sum ** 2
        deff = var / (p * (1 - p) / n_sum)
    deff = np.where(k < 2, np.nan, np.where((p <= 0) | (p >= 1), 1.0, deff))
    groups = group_number[group_starts]
    if group_of is not None:
        groups = group_of[groups]
    levels = [labels.take(c) for (_, labels), c in
              zip(coded, np.unravel_index(groups, dims), strict=True)]
    index = pd.MultiIndex.from_arrays(levels) if len(keys) > 1 else levels[0]
    found = pd.Series(deff, index=_key_index(index, len(keys)))
    return found.reindex(_key_index(out[keys], len(keys))).to_numpy(dtype="float64")


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts."""
    if not len(sorted_values):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]]))


def _coded(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """A key column as integer codes (-1 where missing) and the values they stand for:
    categories by their codes, anything else (months too, by their ordinals) factorized."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(), col.cat.categories
    found, uniques = pd.factorize(col)
    return found, pd.Index(uniques)


def _key_index(keys: Any, width: int) -> pd.Index:
    """Group keys as text tuples, so keys of categoricals, periods and text match."""
    if isinstance(keys, pd.DataFrame):
        cols = [keys[c].astype(str).to_numpy() for c in keys.columns]
    else:
        cols = [keys.get_level_values(i).astype(str) for i in range(width)] if width > 1 \
            else [keys.astype(str)]
    return pd.MultiIndex.from_arrays(cols) if width > 1 else pd.Index(cols[0])


class VerdictCube:
    """Verdict counts by every combination of some keys, from one pass over the verdicts.

    Keys are categorical (categories in order) or monthly periods; each has one more
    slot for a missing key. `counts(keys)` gives for any of them what
    `groupby(keys, observed=True)["verdict"].value_counts().unstack().reset_index()`
    gives: groups in the same order (categories, then months), missing keys dropped.
    """

    KEYS = ("criterion", "operator", "clinic", "month")

    def __init__(self, verdicts: pd.DataFrame, keys: list[str] | tuple[str, ...] = KEYS,
                 max_cells: int = 20_000_000) -> None:
        self.keys: list[str] = []
        self.sizes: list[int] = []
        self.labels: list[Any] = []
        self.table: np.ndarray | None = None
        verdict = verdicts.get("verdict")
        if verdict is None or not (isinstance(verdict.dtype, pd.CategoricalDtype)
                                   and list(verdict.cat.categories) == VERDICTS):
            return
        codes = []
        for k in dict.fromkeys(keys):
            if k not in verdicts:
                continue
            found = self._codes(verdicts[k])
            if found is None:
                continue
            c, n, label = found
            self.keys.append(k)
            self.sizes.append(n)
            self.labels.append(label)
            codes.append(c)
        cells = int(np.prod([n + 1 for n in self.sizes], dtype=float)) * 4
        if cells > max_cells:
            self.keys, self.sizes, self.labels = [], [], []
            return
        v = verdict.cat.codes.to_numpy()
        step = 1 << 18  # in pieces that stay in cache

        def count(i: int) -> np.ndarray:
            g = np.zeros(min(step, len(v) - i), dtype=np.int64)
            for c, n in zip(codes, self.sizes, strict=True):
                part = c(i, i + step)  # -1 for a missing key: it gets slot n
                g *= n + 1
                g += part
                g[part < 0] += n + 1
            g *= 4
            g += v[i:i + step]
            return np.bincount(g, minlength=cells)

        # pieces on one thread per core (numpy frees the GIL), when the counts of every
        # piece fit in memory at once (a small cube: clinicians, clinics and months)
        pieces = range(0, len(v), step)
        table = np.zeros(cells, dtype=np.int64)
        if len(v) >= 4 * step and cells * len(pieces) <= 50_000_000:
            for block in map_threads(count, pieces):
                table += block
        else:
            for i in pieces:
                table += count(i)
        self.table = table.reshape([n + 1 for n in self.sizes] + [4])

    @staticmethod
    def _codes(col: pd.Series) -> tuple[Any, int, Any] | None:
        """(codes of rows i:j, number of values, labels of codes) of a key column."""
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy()
            return (lambda i, j: codes[i:j], len(col.cat.categories),
                    lambda c, dt=col.dtype: pd.Categorical.from_codes(c, dtype=dt))
        if isinstance(col.dtype, pd.PeriodDtype):
            ordinal = col.array.asi8
            nat = np.iinfo(np.int64).min  # NaT: the smallest ordinal
            high = int(ordinal.max(initial=nat))
            low = int(np.min(ordinal, where=ordinal != nat, initial=np.iinfo(np.int64).max))
            if high == nat:
                low, high = 0, -1
            if high - low > 100_000:
                return None

            def codes_of(i: int, j: int) -> np.ndarray:
                part = ordinal[i:j]
                return np.where(part == nat, -1, part - low)

            return (codes_of, high - low + 1,
                    lambda c, dt=col.dtype, low=low: pd.arrays.PeriodArray(
                        np.asarray(c, dtype=np.int64) + low, dtype=dt))
        return None

    def covers(self, keys: list[str]) -> bool:
        return self.table is not None and all(k in self.keys for k in keys)

    def counts(self, keys: list[str]) -> pd.DataFrame | None:
        """The counts per group of `keys` (None when some key is not in the cube)."""
        if not self.covers(keys) or len(set(keys)) != len(keys):
            return None
        assert self.table is not None
        dims = [self.keys.index(k) for k in keys]
        rest = tuple(i for i in range(len(self.keys)) if i not in dims)
        t = self.table.sum(axis=rest) if rest else self.table
        # axes now in cube order of `dims`; put them in the order of keys, drop missing
        kept = sorted(dims)
        t = np.moveaxis(t, list(range(len(kept))), [kept.index(d) for d in kept])
        t = t.transpose([kept.index(d) for d in dims] + [len(dims)])
        t = t[tuple(slice(0, self.sizes[d]) for d in dims)]
        sizes = [self.sizes[d] for d in dims]
        flat = t.reshape(-1, 4)
        present = np.flatnonzero(flat.sum(axis=1) > 0)
        out: dict[str, Any] = {}
        where = np.unravel_index(present, sizes) if sizes else ()
        for k, d, c in zip(keys, dims, where, strict=True):
            out[k] = self.labels[d](c)
        for i, v in enumerate(VERDICTS):
            out[v] = flat[present, i]
        return pd.DataFrame(out)


def indicator_table(audit: Audit) -> pd.DataFrame:
    """Monitored indicators overall: documented n and the indicator's statistic."""
    rows = []
    s = audit.sessions
    for ind in audit.protocol.indicators:
        col = s[ind.field]
        n = int(col.notna().sum())
        row: dict[str, Any] = {"id": ind.id, "title": ind.title, "sheet": ind.sheet,
                               "documented": n, "not_documented": int(col.isna().sum())}
        if ind.statistic == "share_true":
            k = int(col.astype("boolean").sum())
            lo, hi = wilson_ci(k, n)
            row.update(statistic="percent yes", value=100 * k / n if n else np.nan,
                       ci_low=100 * lo, ci_high=100 * hi)
        else:
            x = col.astype("Float64").dropna().astype("float64")
            row.update(statistic=ind.statistic,
                       value=float(x.median() if ind.statistic == "median" else x.mean())
                       if n else np.nan,
                       ci_low=float(x.quantile(0.25)) if n else np.nan,
                       ci_high=float(x.quantile(0.75)) if n else np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=INDICATOR_COLUMNS)


#: The columns of the indicator table (also when a protocol lists no indicator).
INDICATOR_COLUMNS = ["id", "title", "sheet", "documented", "not_documented", "statistic",
                     "value", "ci_low", "ci_high"]


def compare(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Re-audit: two compliance summaries side by side with the Newcombe 95 % CI of the change.

    `p_value` is the two-sided test of equal proportions (pooled score z, Pearson's
    chi-square without continuity correction); `q_value` its Benjamini–Hochberg
    adjustment over the criteria compared. `change` says "improved" or "worse" only when
    q < 0.05 (beyond chance, allowing for the number of criteria).
    """
    a = before.set_index("criterion")
    b = after.set_index("criterion")
    ids = [i for i in b.index if i in a.index]
    a, b = a.loc[ids], b.loc[ids]
    lo, hi = newcombe_diff_ci(b["compliant"].to_numpy(), b["eligible"].to_numpy(),
                              a["compliant"].to_numpy(), a["eligible"].to_numpy())
    out = pd.DataFrame({
        "criterion": ids, "title": b["title"].to_numpy(),
        "before_eligible": a["eligible"].to_numpy(), "before_percent": a["percent"].to_numpy(),
        "after_eligible": b["eligible"].to_numpy(), "after_percent": b["percent"].to_numpy(),
        "difference": (b["percent"] - a["percent"]).to_numpy(),
        "diff_ci_low": np.asarray(lo, dtype="float64") * 100,
        "diff_ci_high": np.asarray(hi, dtype="float64") * 100,
        "target": b["target"].to_numpy(),
    })
    out["p_value"] = _two_proportion_p(b["compliant"].to_numpy(), b["eligible"].to_numpy(),
                                       a["compliant"].to_numpy(), a["eligible"].to_numpy())
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy(dtype="float64"))
    beyond = (out["q_value"] < 0.05).to_numpy()
    out["change"] = np.select([beyond & (out["difference"] > 0),
                               beyond & (out["difference"] < 0)],
                              ["improved", "worse"], "no clear change")
    out.loc[out["diff_ci_low"].isna(), "change"] = "no data"
    return out


def _two_proportion_p(k1: np.ndarray, n1: np.ndarray, k2: np.ndarray,
                      n2: np.ndarray) -> np.ndarray:
    """Two-sided p of the pooled score test of p1 = p2 (NaN where a side has no records,
    1 where both proportions are 0 or 1 alike)."""
    k1, n1, k2, n2 = (np.asarray(x, dtype="float64") for x in (k1, n1, k2, n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (k1 + k2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (k1 / n1 - k2 / n2) / se
        p = 2 * norm.sf(np.abs(z))
    p = np.where(se == 0, 1.0, p)
    return np.where((n1 > 0) & (n2 > 0), p, np.nan)


