"""Several exports of one table made one data set (DESIGN: "Several exports of one table").

Clinics export by period and by site, and the device's treatment log is often a
different export from the clinical notes. Here the loaded files of one table become
one table:

- a session is identified by its `session_id` where an export gives one, else by
  patient, day, area (blank is a value; left out when an export has no area column)
  and its order within that day in its file;
  an outcome assessment by patient, day, instrument and rater, and its order;
- records of one session are combined field by field, files in the order given;
- a later record that gives a field differently is rejected
  (`conflicts with FILE row N on FIELD`) and the first value kept;
- a later record that adds nothing is a repeat (`duplicate of FILE row N`).

Each record is loaded or rejected, so the row accounting holds per file and in total.
Every merged row names the records it came from (`sources`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from outcomes import schema
from outcomes.arrowtext import arrow_strings
from outcomes.load import REJECTION_COLUMNS, LoadResult

#: The fields that identify a record when no session_id is given.
KEYS = {"sessions": ("patient_id", "session_date", "area"),
        "outcomes": ("patient_id", "assessment_date", "instrument", "rater")}
#: Key fields an export may lack altogether (a device log that does not know the
#: area): when one export has no such column, the field identifies no record.
OPTIONAL_KEYS = ("area",)
#: Columns about where a row came from, not about the session.
BOOKKEEPING = ("source_file", "source_row", "sources")
#: Per-file counts of the combination (`Combined.overlap`).
OVERLAP_COLUMNS = ["file", "shared", "duplicates", "conflicts"]
#: Working columns of the records table.
INTERNAL = ("_file", "_given")


@dataclass(frozen=True)
class Combined:
    """The combined table, each file's own accounting, and how the files overlapped.

    `files` are the files' own results with the combination's rejections added and
    their data dropped (the rows live on in `result.data`); `overlap` has one row per
    file: records it shared with another file's session, its duplicates and conflicts.
    """

    result: LoadResult
    files: list[LoadResult]
    overlap: pd.DataFrame


def combine(results: list[LoadResult]) -> Combined:
    """One table from the loads of several exports of it, in the order given."""
    table = results[0].table
    if len(results) == 1:
        only = results[0]
        return Combined(only, [only], pd.DataFrame(
            [[only.file, 0, 0, 0]], columns=OVERLAP_COLUMNS))
    records = _records(results)
    keys = [k for k in KEYS[table] if k not in OPTIONAL_KEYS
            or all(k in r.columns_used for r in results)]
    group, codes = _groups(records, keys)
    merge = _merge(records, group, table)
    data = _assemble(records, merge)
    rejected = merge.rejections
    if table == "sessions":
        data, more = _session_ids(records, merge, data, codes)
        rejected = pd.concat([rejected, more], ignore_index=True)
    files = [_with_rejections(r, rejected[rejected["file"] == r.file]) for r in results]
    result = LoadResult(
        table=table, file=", ".join(r.file for r in results), data=data,
        rejections=pd.concat([f.rejections for f in files], ignore_index=True),
        warnings=pd.concat([r.warnings for r in results], ignore_index=True),
        rows_read=sum(r.rows_read for r in results),
        unknown_columns=list(dict.fromkeys(c for r in results for c in r.unknown_columns)),
        absent_fields=[f for f in results[0].absent_fields
                       if all(f in r.absent_fields for r in results)],
        columns_used={k: v for r in reversed(results) for k, v in r.columns_used.items()})
    return Combined(result, files, _overlap(results, records, merge, rejected))


# ---------------------------------------------------------------------------------------
# records and their sessions


def _records(results: list[LoadResult]) -> pd.DataFrame:
    """Every loaded record of every file, in file order, with `_file` (its position in
    the list) and `_given` (the export gave its session_id)."""
    frames = []
    for i, r in enumerate(results):
        given = r.session_id_given if r.session_id_given is not None \
            else np.zeros(len(r.data), dtype=bool)
        frames.append(r.data.assign(_file=i, _given=given))
    return pd.concat(frames, ignore_index=True)


def _codes(s: pd.Series) -> np.ndarray:
    """Equal values, equal numbers; a blank is a value of its own."""
    return pd.factorize(s, use_na_sentinel=False)[0].astype(np.int64)


def one_key(columns: list[np.ndarray]) -> np.ndarray:
    """One int64 per row, equal exactly when every column (non-negative codes) is."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for c in columns:
        width = int(c.max(initial=0)) + 1
        if (int(key.max(initial=0)) + 1) * width >= 2**62:
            key = pd.factorize(key)[0].astype(np.int64)
        key = key * width + c
    return key


def order_within(key: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows have its key (0 for the first)."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    pos = np.arange(len(k))
    start = np.maximum.accumulate(np.where(np.r_[True, k[1:] != k[:-1]], pos, 0))
    out = np.empty(len(k), dtype=np.int64)
    out[order] = pos - start
    return out


def _groups(records: pd.DataFrame, keys: list[str]
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The session (or assessment) of each record, numbered in order of first
    appearance, and the key fields' codes."""
    codes = {k: _codes(records[k]) for k in keys}
    key = one_key(list(codes.values()))
    n = order_within(one_key([key, records["_file"].to_numpy().astype(np.int64)]))
    natural = pd.factorize(one_key([key, n]))[0].astype(np.int64)
    if "session_id" not in records or not records["_given"].any():
        return natural, codes
    given = records["_given"].to_numpy()
    sid = np.full(len(records), -1, dtype=np.int64)
    sid[given] = pd.factorize(records["session_id"].to_numpy()[given])[0]
    # a record without an id joins the session whose id-bearing record has its natural key
    by_natural = pd.Series(sid[given]).groupby(natural[given]).first()
    found = pd.Series(natural[~given]).map(by_natural)
    sid[~given] = found.fillna(-1).to_numpy(dtype=np.int64)
    label = np.where(sid >= 0, sid, int(sid.max(initial=-1)) + 1 + natural)
    return pd.factorize(label)[0].astype(np.int64), codes


@dataclass(frozen=True)
class Merge:
    """Which record gives each field of each session, and what was rejected.

    `group[r]`: the session of record r; `first[g]`: the first record of session g;
    `several`: the sessions with more than one record, and `source[i, j]` the record
    giving field `fields[j]` of session `several[i]` (its first record when none
    does); `contributing[r]`: record r was used (not a conflict or a repeat);
    `shared[r]`: r's session has records from another file too.
    """

    group: np.ndarray
    first: np.ndarray
    fields: list[str]
    several: np.ndarray
    source: np.ndarray
    contributing: np.ndarray
    rejections: pd.DataFrame
    shared: np.ndarray

    def giver(self, j: int) -> np.ndarray:
        """For every session, the record giving field `fields[j]`."""
        at = self.first.copy()
        at[self.several] = self.source[:, j]
        return at


def _merge(records: pd.DataFrame, group: np.ndarray, table: str) -> Merge:
    """Combine the records of each session field by field, in file order: round k takes
    every session's k-th record at once. Only sessions with several records take part."""
    canonical = [f.name for f in schema.TABLES[table]
                 if f.name not in BOOKKEEPING and f.name != "session_id"]
    canonical += [i for i in schema.INSTRUMENTS if table == "outcomes" and i in records]
    extra = [c for c in records.columns if c not in canonical and c not in INTERNAL
             and c not in BOOKKEEPING and c != "session_id"]
    fields = canonical + extra
    n_groups = int(group.max(initial=-1)) + 1
    sizes = np.bincount(group, minlength=n_groups)
    first = np.unique(group, return_index=True)[1]
    several = np.flatnonzero(sizes > 1)
    contributing = np.ones(len(group), dtype=bool)
    shared = np.zeros(len(group), dtype=bool)
    source = np.repeat(first[several][:, None], len(fields), axis=1)
    rejections: list[pd.DataFrame] = []
    if len(several):
        slot = np.full(n_groups, -1, dtype=np.int64)
        slot[several] = np.arange(len(several))
        members = np.flatnonzero(sizes[group] > 1)
        rank = order_within(group[members])
        files = records["_file"].to_numpy()[members]
        pairs = pd.DataFrame({"g": group[members], "f": files}).drop_duplicates()
        n_files = np.bincount(pairs["g"].to_numpy(), minlength=n_groups)
        shared[members] = n_files[group[members]] > 1
        given = {f: records[f].notna().to_numpy() for f in fields}
        for k in range(1, int(rank.max()) + 1):
            rec = members[rank == k]
            g = slot[group[rec]]
            conflict = np.zeros(len(rec), dtype=bool)
            clashes: list[tuple[str, np.ndarray, np.ndarray]] = []
            for j, f in enumerate(canonical):
                kept = source[g, j]
                differ = given[f][rec] & given[f][kept] & _differ(records[f], rec, kept)
                if differ.any():
                    clashes.append((f, rec[differ], kept[differ]))
                    conflict |= differ
            ok = ~conflict
            adds = np.zeros(len(rec), dtype=bool)
            for j, f in enumerate(fields):
                fill = ok & given[f][rec] & ~given[f][source[g, j]]
                source[g[fill], j] = rec[fill]
                adds |= fill
            dup = ok & ~adds
            contributing[rec[conflict | dup]] = False
            for f, at, kept in clashes:
                rejections.append(_rejection_frame(
                    records, at, f, _value_text(records[f], at),
                    _refs("conflicts with", records, kept, f" on {f}")))
            if dup.any():
                at = rec[dup]
                rejections.append(_rejection_frame(
                    records, at, "(whole row)", np.full(len(at), "", dtype=object),
                    _refs("duplicate of", records, _likeliest_source(
                        source[g[dup]], at, given, fields, canonical))))
    rej = pd.concat(rejections, ignore_index=True) if rejections else \
        pd.DataFrame(columns=REJECTION_COLUMNS)
    return Merge(group, first, fields, several, source, contributing, rej, shared)


def _differ(col: pd.Series, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether the values at a and b differ (both given); numbers to 12 digits, so the
    same energy read as 0,03 J and as 30 mJ agrees."""
    x, y = col.take(a).reset_index(drop=True), col.take(b).reset_index(drop=True)
    if pd.api.types.is_float_dtype(col.dtype):
        xv, yv = x.to_numpy(dtype=float, na_value=np.nan), y.to_numpy(dtype=float, na_value=np.nan)
        return ~np.isclose(xv, yv, rtol=1e-12, atol=0.0, equal_nan=True)
    out = (x != y)
    return out.fillna(False).to_numpy(dtype=bool) if hasattr(out, "fillna") else \
        np.asarray(out, dtype=bool)


def _likeliest_source(source: np.ndarray, at: np.ndarray, given: dict[str, np.ndarray],
                      fields: list[str], canonical: list[str]) -> np.ndarray:
    """For each repeated record `at` (its session's row of `source`), the earlier record
    giving most of its fields."""
    cols = [j for j, f in enumerate(fields) if f in canonical]
    src = source[:, cols]
    has = np.column_stack([given[fields[j]][at] for j in cols])
    rows = np.repeat(np.arange(len(at)), len(cols))[has.ravel()]
    pairs = pd.DataFrame({"r": rows, "s": src.ravel()[has.ravel()]})
    counts = pairs.groupby(["r", "s"], sort=True).size().reset_index(name="n")
    best = counts.sort_values(["r", "n", "s"], ascending=[True, False, True],
                              kind="stable").drop_duplicates("r")
    out = source[:, 0].copy()
    out[best["r"].to_numpy()] = best["s"].to_numpy()
    return out


def _refs(prefix: str, records: pd.DataFrame, at: np.ndarray, suffix: str = "") -> np.ndarray:
    names = np.array([Path(str(f)).name for f in records["source_file"].to_numpy()[at]],
                     dtype=object)
    rows = records["source_row"].to_numpy()[at]
    return np.array([f"{prefix} {f} row {r}{suffix}" for f, r in zip(names, rows,
                                                                     strict=True)], dtype=object)


def _value_text(col: pd.Series, at: np.ndarray) -> np.ndarray:
    values = col.take(at)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.strftime("%Y-%m-%d").fillna("").to_numpy(dtype=object)
    return np.array(["" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else
                                            str(v).lower() if isinstance(v, bool | np.bool_)
                                            else str(v)) for v in values], dtype=object)


def _text(s: pd.Series) -> pa.Array:
    """A text column as one arrow array (without a copy when it is arrow already)."""
    strings = arrow_strings(s)
    if strings is None:
        strings = pa.chunked_array([pa.array(s.astype(object).to_numpy(), pa.large_string())])
    return strings.combine_chunks()


def _rejection_frame(records: pd.DataFrame, at: np.ndarray, field: str, values: np.ndarray,
                     reasons: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"file": records["source_file"].to_numpy()[at].astype(object),
                         "row": records["source_row"].to_numpy()[at], "field": field,
                         "value": values, "reason": reasons}, columns=REJECTION_COLUMNS)


# ---------------------------------------------------------------------------------------
# the combined table


def _assemble(records: pd.DataFrame, merge: Merge) -> pd.DataFrame:
    """One row per session, each field taken from the record that gave it, then
    source_file and source_row of its first record and `sources`: every record used."""
    cols: dict[str, pd.Series] = {}
    index = {f: j for j, f in enumerate(merge.fields)}
    names = [c for c in records.columns if c not in INTERNAL and c not in BOOKKEEPING]
    alone = len(merge.first) == len(records)  # no session has two records: as read
    for c in [*names, "source_file", "source_row"]:
        if alone:
            cols[c] = records[c]
            continue
        at = merge.giver(index[c]) if c in index else merge.first
        cols[c] = records[c].take(at).reset_index(drop=True)
    cols["sources"] = _sources(records, merge)
    return pd.DataFrame(cols, copy=False)


def _sources(records: pd.DataFrame, merge: Merge) -> pd.Series:
    """'FILE row N; FILE row M' per session: every record that was used."""
    files = _text(records["source_file"]).dictionary_encode()
    names = pa.array([Path(str(c)).name for c in files.dictionary.to_pylist()],
                     pa.large_string())
    label = pc.binary_join_element_wise(
        names.take(files.indices),
        pa.array(records["source_row"].to_numpy()).cast(pa.large_string()),
        pa.scalar(" row ", pa.large_string()))
    out = pd.Series(pd.array(label.take(pa.array(merge.first)), dtype="string"))
    used = merge.contributing
    several = np.bincount(merge.group[used], minlength=len(merge.first)) > 1
    if several.any():
        at = np.flatnonzero(used & several[merge.group])
        frame = pd.DataFrame({"g": merge.group[at], "label": label.take(at).to_pylist()})
        joined = frame.groupby("g", sort=True)["label"].agg("; ".join)
        out.iloc[joined.index.to_numpy()] = joined.to_numpy()
    return out


def _session_ids(records: pd.DataFrame, merge: Merge, data: pd.DataFrame,
                 codes: dict[str, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A session_id an export gave is kept; otherwise it is patient_id:session_date:n,
    n counting the patient's sessions that day in order, as the loader derives it for
    one file. The loader's id of a session's first record is already that when the
    patient has no other session that day and it ends in ':1'; the others are derived
    again over the combined table. A session whose id another session was given is
    rejected, record by record."""
    given = records["_given"].to_numpy()
    named = np.flatnonzero(given & merge.contributing)
    first_named = pd.Series(named).groupby(merge.group[named], sort=False).min()
    has_id = np.zeros(len(merge.first), dtype=bool)
    has_id[first_named.index.to_numpy()] = True
    sid = data["session_id"].copy()
    late = first_named[~given[merge.first[first_named.index.to_numpy()]]]
    if len(late):  # an id given by a session's later record (the first had none)
        sid.iloc[late.index.to_numpy()] = records["session_id"].take(late.to_numpy()).to_numpy()
    day = one_key([codes["patient_id"][merge.first], codes["session_date"][merge.first]])
    same_day = pd.Series(day).duplicated(keep=False).to_numpy()
    first_of_day = pc.ends_with(_text(sid), ":1").to_numpy(zero_copy_only=False)
    again = np.flatnonzero(~has_id & (same_day | ~first_of_day))
    if len(again):
        n = order_within(day)[again] + 1  # every session of the day counts, as in the loader
        pid = data["patient_id"].take(again).astype(object).to_numpy()
        days = data["session_date"].take(again).dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
        sid.iloc[again] = [f"{p}:{d}:{k}" for p, d, k in zip(pid, days, n, strict=True)]
    data = data.assign(session_id=sid)
    if not has_id.any() or has_id.all():
        return data, pd.DataFrame(columns=REJECTION_COLUMNS)
    # derived ids never repeat each other, nor given ids each other: only a derived id
    # can equal a given one
    taken = pc.is_in(_text(sid), value_set=_text(sid[has_id])).to_numpy(zero_copy_only=False)
    repeat = taken & ~has_id
    if not repeat.any():
        return data, pd.DataFrame(columns=REJECTION_COLUMNS)
    owner = pd.Series(np.flatnonzero(has_id), index=sid[has_id].to_numpy())
    frames = []
    for g in np.flatnonzero(repeat):
        at = np.flatnonzero((merge.group == g) & merge.contributing)
        ref = merge.first[owner[sid.iat[g]]]
        frames.append(_rejection_frame(
            records, at, "session_id", np.full(len(at), sid.iat[g], dtype=object),
            _refs("session_id already used on", records, np.full(len(at), ref))))
    return data[~repeat].reset_index(drop=True), pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------
# accounting


def _with_rejections(r: LoadResult, more: pd.DataFrame) -> LoadResult:
    """The file's result with the combination's rejections, its rows in the data set."""
    rej = pd.concat([r.rejections, more], ignore_index=True) if len(more) else r.rejections
    rej = rej.sort_values("row", kind="stable").reset_index(drop=True)
    return replace(r, rejections=rej, data=r.data.iloc[:0], session_id_given=None)


def _overlap(results: list[LoadResult], records: pd.DataFrame, merge: Merge,
             rejected: pd.DataFrame) -> pd.DataFrame:
    """Per file: records in a session another file also has, duplicates, conflicts."""
    file = records["_file"].to_numpy()
    rows = []
    for i, r in enumerate(results):
        mine = rejected[rejected["file"] == r.file]
        reasons = mine["reason"].astype(str)
        rows.append([r.file, int((merge.shared & (file == i)).sum()),
                     int(mine.loc[reasons.str.startswith("duplicate of"), "row"].nunique()),
                     int(mine.loc[reasons.str.startswith("conflicts with"), "row"].nunique())])
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)
