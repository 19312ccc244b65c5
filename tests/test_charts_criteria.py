"""Each criterion's charts: chosen by rule, bands at the criterion's numbers, counts that
are the audit's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from outcomes.audit import run_audit
from outcomes.charts import criteria as cr
from outcomes.dataset import load_data_dir
from outcomes.protocol import RULES, load_protocol
from outcomes.sample import HABITS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="module")
def ds():
    return load_data_dir(SAMPLE)


@pytest.fixture(scope="module")
def audit(ds):
    return run_audit(ds.sessions.data, load_protocol(), ds.outcomes_data)


def band(ax) -> tuple[float, float]:
    spans = [p for p in ax.patches if isinstance(p, Rectangle)
             and "protocol" in str(p.get_label())]
    assert len(spans) == 1, [p.get_label() for p in ax.patches][:5]
    return spans[0].get_x(), spans[0].get_x() + spans[0].get_width()


def bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)
            and "protocol" not in str(p.get_label()) and p.get_height() > 0
            and p.get_width() > 0]


def points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def rows(ax) -> list[str]:
    return [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]


def eligible(audit, cid: str) -> pd.DataFrame:
    v = audit.verdicts
    units = v.loc[(v["criterion"] == cid) & (v["verdict"] != "not applicable"), "unit"]
    return audit.sessions.iloc[units.to_numpy()]


def test_every_rule_has_a_chart_and_every_chart_a_rule():
    assert {r.chart for r in RULES.values()} == set(cr.CHARTS)


def test_every_criterion_of_every_protocol_gets_figures(audit, ds):
    others = [load_protocol(p) for p in (ROOT / "docs" / "example-protocol.toml",
                                         *sorted((ROOT / "tests" / "protocols").glob("*.toml")))]
    for protocol in [audit.protocol, *others]:
        a = audit if protocol is audit.protocol else run_audit(ds.sessions.data, protocol,
                                                               ds.outcomes_data)
        for c in protocol.criteria:
            figs = cr.criterion_figures(a, c)
            assert figs and all(isinstance(f, Figure) for f in figs), c.id


def test_range_by_clinician_band_rows_and_points(audit):
    c = audit.protocol.criterion("start_energy")
    (fig,) = cr.criterion_figures(audit, c)
    ax = fig.axes[0]
    assert band(ax) == c.range() == (20, 30)
    s = eligible(audit, "start_energy")
    assert set(rows(ax)) == set(s["operator"].astype("string").fillna("(not recorded)"))
    assert rows(ax)[0] == HABITS["high_start_energy"]  # fewest inside the band on top
    assert points(ax) == s["energy_start_mj"].notna().sum()
    assert "(mJ)" in ax.get_xlabel() and c.title in fig.get_suptitle()


def test_range_of_a_whole_number_is_counted_in_bars(audit):
    c = audit.protocol.criterion("passes")
    (fig,) = cr.criterion_figures(audit, c)
    ax = fig.axes[0]
    assert band(ax) == (c.params["min"] - 0.5, c.params["max"] + 0.5)
    assert sum(b.get_height() for b in bars(ax)) == audit.sessions["passes"].notna().sum()


def test_applies_when_leaves_the_other_sessions_out(audit):
    c = audit.protocol.criterion("pass_wait")
    (fig,) = cr.criterion_figures(audit, c)
    s = audit.sessions
    passes = s["passes"].astype("Float64")
    expected = s.loc[(passes.isna() | (passes >= 2)).to_numpy(dtype=bool), "pass_wait_min"]
    assert points(fig.axes[0]) == expected.notna().sum()


def test_pair_counts_the_audits_deviations(audit):
    c = audit.protocol.criterion("energy_titration")
    (fig,) = cr.criterion_figures(audit, c)
    ax, ax2 = fig.axes[:2]
    assert band(ax) == audit.protocol.range_of("energy_start_mj")
    lower = [b for b in bars(ax2) if b.get_hatch()]
    deviations = audit.summary().set_index("criterion").loc["energy_titration", "deviations"]
    assert sum(b.get_height() for b in lower) == deviations


@pytest.mark.parametrize("cid,items", [("pre_checklist", 4), ("no_contraindication", 4),
                                       ("sun_advice", 1), ("test_spot", 2)])
def test_yes_no_items_and_conditions(audit, cid, items):
    c = audit.protocol.criterion(cid)
    (fig,) = cr.criterion_figures(audit, c)
    ax, ax2 = fig.axes[:2]
    assert len(ax.get_yticklabels()) == items
    img = next(a for a in ax2.get_images() if isinstance(a, AxesImage))
    n_ops = audit.sessions["operator"].astype("string").fillna("?").nunique()
    assert img.get_array().shape == (items, n_ops)
    targets = [ln.get_xdata()[0] for ln in ax.get_lines() if "target" in str(ln.get_label())]
    assert targets == [c.target]


def test_check_table_counts():
    ok = np.array([True, False, False, True])
    known = np.array([True, True, False, True])
    t = cr.check_table({"x": (ok, known)}).iloc[0]
    assert (t["as_protocol"], t["against"], t["not_documented"]) == (2, 1, 1)
    assert t["percent"] == 50


def test_interval_charts(audit):
    c = audit.protocol.criterion("interval")
    dist, by, timeline = cr.criterion_figures(audit, c)
    assert band(dist.axes[0]) == (28, 42)
    days = audit.sessions["days_since_previous"].dropna()
    assert sum(b.get_height() for b in bars(dist.axes[0])) == len(days)
    assert rows(by.axes[0])[0] == HABITS["long_intervals"]
    labels = timeline.axes[0].get_yticklabels()
    assert len(labels) == min(cr.MAX_COURSES, audit.sessions["course_id"].nunique())


def test_course_timeline_picks_longest_gaps(audit):
    s = audit.sessions
    c = audit.protocol.criterion("interval")
    fig = cr.course_timeline(s, c, 120, max_courses=12)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == 12
    per = pd.DataFrame({"gap": s.groupby("course_id")["days_since_previous"].max()
                        .astype(float).fillna(-1), "n": s.groupby("course_id").size()})
    top = per.reset_index().sort_values(["gap", "n", "course_id"],
                                        ascending=[False, False, True]).head(12)
    assert top["gap"].min() >= per["gap"].drop(top["course_id"]).max()
    dots = next(ln for ln in ax.get_lines() if ln.get_label() == "session")
    assert len(dots.get_xdata()) == top["n"].sum()


def test_course_length_counts_completed_courses(audit):
    c = audit.protocol.criterion("course_length")
    (fig,) = cr.criterion_figures(audit, c)
    ax = fig.axes[0]
    assert band(ax) == (2.5, 4.5)
    done = audit.courses["completed"].fillna(False).astype(bool)
    assert sum(b.get_height() for b in bars(ax)) == done.sum()


def test_assessment_window_draws_the_assessed_courses(audit):
    c = audit.protocol.criterion("final_assessment")
    (fig,) = cr.criterion_figures(audit, c)
    ax = fig.axes[0]
    assert band(ax) == (90, 183)
    row = audit.summary().set_index("criterion").loc["final_assessment"]
    drawn = sum(b.get_height() for b in bars(ax))
    assert drawn == row["eligible"] - row["missing"]  # every assessed course, once


def test_first_session_criteria_draw_one_session_per_course(ds):
    protocol = load_protocol(ROOT / "tests" / "protocols" / "course-focus.toml")
    a = run_audit(ds.sessions.data, protocol, ds.outcomes_data)
    c = protocol.criterion("first_visit_energy")
    (fig,) = cr.criterion_figures(a, c)
    documented = eligible(a, c.id)["energy_start_mj"].notna().sum()
    assert points(fig.axes[0]) == documented <= len(a.courses)
    lines = [ln for ln in fig.axes[0].get_lines() if "protocol" in str(ln.get_label())]
    assert [ln.get_xdata()[0] for ln in lines] == [25]  # a one-sided band: a line


def test_indicator_figures(audit):
    for ind in audit.protocol.indicators:
        assert isinstance(cr.indicator_figure(audit, ind), Figure)


def test_large_data_is_sampled_and_quick(ds):
    import time

    s = ds.sessions.data
    big = pd.concat([s] * 100, ignore_index=True)  # about 120,000 sessions
    copy = np.repeat(np.arange(100), len(s)).astype(str)
    big["patient_id"] = big["patient_id"].astype("string") + ":" + copy
    big["session_id"] = big["session_id"].astype("string") + ":" + copy
    a = run_audit(big, load_protocol(), ds.outcomes_data)
    start = time.perf_counter()
    (fig,) = cr.criterion_figures(a, a.protocol.criterion("start_energy"))
    assert points(fig.axes[0]) == cr.MAX_POINTS
    assert "random sample of 5,000" in " ".join(fig.get_supxlabel().split())
    timeline = cr.criterion_figures(a, a.protocol.criterion("interval"))[2]
    assert len(timeline.axes[0].get_yticklabels()) == cr.MAX_COURSES
    for c in a.protocol.criteria:
        cr.criterion_figures(a, c)
    assert time.perf_counter() - start < 60
