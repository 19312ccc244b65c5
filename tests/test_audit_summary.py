"""The verdict counts of every summary: the one-pass VerdictCube against pandas' groupby."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from outcomes.audit import VERDICTS, VerdictCube


def reference(verdicts: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The plain way: group, count each verdict, one row per group that has any."""
    counts = (verdicts.groupby(keys, observed=True)["verdict"].value_counts()
              .unstack("verdict", fill_value=0))
    for v in VERDICTS:
        if v not in counts.columns:
            counts[v] = 0
    return counts.reset_index()[[*keys, *VERDICTS]]


@st.composite
def verdict_tables(draw):
    n = draw(st.integers(0, 60))
    crit = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    ops = draw(st.lists(st.one_of(st.none(), st.sampled_from(["X", "Y", "Z"])),
                        min_size=n, max_size=n))
    months = draw(st.lists(st.one_of(st.none(), st.integers(0, 30)), min_size=n, max_size=n))
    verdict = draw(st.lists(st.sampled_from(VERDICTS), min_size=n, max_size=n))
    return pd.DataFrame({
        "criterion": pd.Categorical(crit, categories=["a", "b", "c"]),
        "operator": pd.Categorical(ops, categories=["X", "Y", "Z"]),
        "month": pd.PeriodIndex([None if m is None else pd.Period("2024-01", "M") + m
                                 for m in months], freq="M"),
        "verdict": pd.Categorical(verdict, categories=VERDICTS),
    })


@settings(max_examples=150, deadline=None)
@given(verdict_tables(), st.sampled_from([["criterion"], ["criterion", "operator"],
                                          ["criterion", "month"], ["operator", "criterion"],
                                          ["criterion", "operator", "month"]]),
       st.booleans())
def test_cube_counts_are_what_groupby_counts(verdicts, keys, tiny):
    """Also when the cube gives up (too many cells): then `counts` says None."""
    cube = VerdictCube(verdicts, max_cells=8 if tiny else 20_000_000)
    got = cube.counts(keys)
    if got is None:
        assert tiny
        return
    # the same groups with the same counts (pandas' own group order is not chronological
    # for a period key among categoricals; the cube's is)
    def rows(t: pd.DataFrame) -> list[tuple]:
        return sorted(zip(*(t[k].astype(str) for k in keys),
                          *(t[v].astype(int) for v in VERDICTS), strict=True))

    assert rows(got[[*keys, *VERDICTS]]) == rows(reference(verdicts, keys))


def test_cube_without_categorical_verdicts_counts_nothing():
    v = pd.DataFrame({"criterion": ["a"], "verdict": ["compliant"]})
    assert VerdictCube(v).counts(["criterion"]) is None


def test_a_key_the_cube_cannot_code_is_left_to_pandas():
    v = pd.DataFrame({"criterion": pd.Categorical(["a", "a"]),
                      "clinic": np.array(["x", "y"], dtype=object),
                      "verdict": pd.Categorical(["compliant", "deviation"],
                                                categories=VERDICTS)})
    cube = VerdictCube(v, ["criterion", "clinic"])
    assert not cube.covers(["criterion", "clinic"])
    assert cube.counts(["criterion"])["compliant"].tolist() == [1]


def test_summaries_by_month_match_a_plain_recount_and_are_kept_once():
    """The design effect per criterion and month (months grouped as numbers) equals
    stats.design_effect recounted with pandas over Period months; a summary is
    counted once and handed out as a copy."""
    import outcomes
    from outcomes.stats import design_effect

    audit = outcomes.open().audit
    got = audit.summary("month")
    v = audit.verdicts.assign(patient=audit.patients)
    v = v[v["verdict"].isin(["compliant", "deviation", "not documented"])]
    for (crit, month), grp in v.groupby(["criterion", "month"], observed=True):
        per = grp.groupby("patient")["verdict"].agg(
            n="size", x=lambda s: int((s == "compliant").sum()))
        row = got[(got["criterion"] == crit) & (got["month"] == month)]
        want = design_effect(per["x"].to_numpy(), per["n"].to_numpy()) \
            if len(per) >= 2 else np.nan
        assert np.isclose(row["design_effect"].iloc[0], want, equal_nan=True), (crit, month)
    again = audit.summary("month")
    pd.testing.assert_frame_equal(got, again)
    again.loc[0, "eligible"] = -1
    assert audit.summary("month").loc[0, "eligible"] != -1


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                               st.sampled_from(["Dr X", "Dr Y", None]),
                               st.sampled_from(["North", "South", None]),
                               st.sampled_from(["2025-01", "2025-02", None]),
                               st.integers(-1, 5), st.sampled_from(VERDICTS)),
                     min_size=1, max_size=60),
       keys=st.sampled_from([["criterion"], ["criterion", "operator"],
                             ["criterion", "clinic"], ["criterion", "month"],
                             ["criterion", "operator", "clinic", "month"]]),
       numbered=st.sampled_from([2 ** 62, 1]))
def test_design_effect_by_any_keys_matches_a_plain_recount(rows, keys, numbered):
    """Keys of every kind (categories, with an unused one; text; months), a missing key
    dropped and a missing patient (-1) one cluster: each group's design effect equals
    stats.design_effect recounted plainly (also when groups are numbered first)."""
    from outcomes.audit import summary
    from outcomes.stats import design_effect

    crit, op, clinic, month, patient, verdict = zip(*rows, strict=True)
    v = pd.DataFrame({"criterion": pd.Categorical(crit, categories=["c", "a", "b", "unused"]),
                      "operator": pd.Categorical(op, categories=["Dr Y", "Dr X"]),
                      "clinic": pd.Series(clinic, dtype="string"),
                      "month": pd.PeriodIndex(list(month), freq="M"),
                      "verdict": pd.Categorical(verdict, categories=VERDICTS)})
    patients = np.array(patient)
    out = v[keys].drop_duplicates().dropna().reset_index(drop=True)
    limit, summary.NUMBERS_UP_TO = summary.NUMBERS_UP_TO, numbered
    try:
        got = summary.clustered_deff(v, keys, patients, out)
    finally:
        summary.NUMBERS_UP_TO = limit
    counted = v["verdict"].isin(["compliant", "deviation", "not documented"])
    for i, row in enumerate(out.itertuples(index=False)):
        mask = counted.copy()
        for key, value in zip(keys, row, strict=True):
            mask &= (v[key] == value).fillna(False)
        per = pd.DataFrame({"p": patients[mask.to_numpy()],
                            "x": (v["verdict"][mask] == "compliant").to_numpy()})
        per = per.groupby("p")["x"].agg(n="size", x="sum")
        want = design_effect(per["x"].to_numpy(), per["n"].to_numpy()) \
            if len(per) >= 2 else np.nan
        assert np.isclose(got[i], want, equal_nan=True), row
