"""Tests for outcomes.charts.outcomes: what is drawn, not only that a figure exists.

Band edges come from the protocol and the instrument registry, point counts from the
tables the charts are given, at-risk numbers from the Kaplan–Meier table.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from outcomes import analysis as R
from outcomes import schema
from outcomes.audit import run_audit
from outcomes.charts import outcomes as C
from outcomes.charts.style import PALETTE
from outcomes.dataset import load_data_dir
from outcomes.protocol import load_protocol

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def t():
    ds = load_data_dir(SAMPLE, progress=False)
    protocol = load_protocol()
    audit = run_audit(ds.sessions.data, protocol, ds.outcomes_data)
    w = R.attach_windows(audit, ds.outcomes_data)
    paired, change = R.change_from_baseline(w)
    groups = R.compliance_groups(audit)
    values = R.course_outcomes(w, paired)
    rho, energy = R.spearman_energy(values, audit)
    return {"protocol": protocol, "audit": audit, "w": w, "final": R.final_summary(w),
            "paired": paired, "change": change, "groups": groups, "values": values,
            "cmp": R.compare_groups(values, groups), "rho": rho, "energy": energy}


def _spans(ax) -> list[tuple[float, float]]:
    """x extents of the full-height shaded bands (axvspan) of an axes."""
    band = ax.get_xaxis_transform(which="grid")  # x in data, y in axes units: axvspan
    return [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches
            if isinstance(p, Rectangle) and p.get_data_transform() is band]


def _points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_final_results_chart(t):
    fig = C.final_results_chart(t["w"], t["final"], t["protocol"].final_result_days)
    assert isinstance(fig, Figure)
    lo, hi = t["protocol"].final_result_days
    title = fig.get_suptitle()
    assert "3–6 months" in title and f"{lo}–{hi} days" in title
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(axes) == len(t["final"])
    for ax, row in zip(axes, t["final"].itertuples(), strict=True):
        ins = schema.INSTRUMENTS[row.instrument]
        assert ax.get_title(loc="left").startswith(ins.title)
        assert f"n = {row.n}" in ax.get_title(loc="left")
        if ins.high is None:  # hair density: histogram with its median
            assert ax.get_xlabel() == "Hair density (hairs/cm²)"
            assert any(np.allclose(ln.get_xdata(), row.median) for ln in ax.lines)
            continue
        bars = ax.containers[0]
        levels = np.arange(ins.low, ins.high + 1)
        assert [b.get_x() + b.get_width() / 2 for b in bars] == pytest.approx(levels)
        heights = np.array([b.get_height() for b in bars])
        assert heights.sum() == pytest.approx(100)
        # the shaded "improved" band covers exactly the registry's improved scores
        improved = levels[levels >= ins.improved_at] if ins.higher_is_better \
            else levels[levels <= ins.improved_at]
        assert _spans(ax) == [pytest.approx((improved.min() - 0.45, improved.max() + 0.45))]
        share = heights[np.isin(levels, improved)].sum() / 100
        assert share == pytest.approx(row.improved)
        better = "higher" if ins.higher_is_better else "lower"
        assert f"{better} is better" in ax.get_xlabel()
        assert ax.get_ylabel() == "courses (%)"


def test_assessment_timing_band_is_the_protocol_window(t):
    fig = C.assessment_timing_chart(t["w"], t["protocol"].final_result_days)
    ax = fig.axes[0]
    assert _spans(ax) == [pytest.approx(t["protocol"].final_result_days)]
    assert ax.get_xlabel() == "days after the course's last treatment"
    counted = sum(b.get_height() for b in ax.containers[0])
    after = t["w"][t["w"]["window"].isin(["early", "final", "followup"])]
    assert counted == len(after.drop_duplicates(["course_id", "assessment_date"]))


def test_density_change_chart(t):
    fig = C.density_change_chart(t["paired"], t["change"])
    ax1, ax2 = fig.axes[:2]
    # one grey line per course plus the median line
    assert len(ax1.lines) == len(t["paired"]) + 1
    assert list(ax1.lines[-1].get_ydata()) == pytest.approx(
        [t["paired"]["baseline"].median(), t["paired"]["final"].median()])
    # the shaded band is the median change's interval, the line the median, dashed zero
    assert _spans(ax2) == [pytest.approx((t["change"]["median_ci_low"],
                                          t["change"]["median_ci_high"]))]
    xs = [ln.get_xdata()[0] for ln in ax2.lines]
    assert t["change"]["median_change"] in xs and 0 in xs
    assert ax2.get_xlabel() == "change, final − baseline (hairs/cm²)"
    assert "Wilcoxon" in ax2.get_title(loc="left")


def test_density_change_chart_draws_at_most_max_lines(t):
    big = pd.concat([t["paired"]] * 10, ignore_index=True)
    fig = C.density_change_chart(big, {**t["change"], "n": len(big)})
    assert len(fig.axes[0].lines) == C.MAX_DRAWN + 1
    assert f"{C.MAX_DRAWN} of {len(big)} drawn" in fig.axes[0].get_title(loc="left")


def test_group_comparison_chart(t):
    key = t["protocol"].key_criteria
    fig = C.group_comparison_chart(t["values"], t["cmp"], t["groups"], key)
    assert f"key criteria: {', '.join(key)}" in fig.get_suptitle()
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == len(t["cmp"])
    for ax, row in zip(axes, t["cmp"].itertuples(), strict=True):
        assert _points(ax) == row.n_followed + row.n_not
        labels = [tl.get_text() for tl in ax.get_xticklabels()]
        assert labels == [f"{R.FOLLOWED}\n(n = {row.n_followed})",
                          f"{R.NOT_FOLLOWED}\n(n = {row.n_not})"]
        colours = [mpl.colors.to_hex(c.get_facecolor()[0]) for c in ax.collections
                   if isinstance(c, PathCollection)]
        assert colours == [PALETTE["blue"].lower(), PALETTE["orange"].lower()]
        title = ax.get_title(loc="left")
        assert row.test in title
        assert (f"r = {row.effect:.2f}" in title) or (f"difference {row.effect:+.1f}" in title)


def test_energy_outcome_chart_band_is_the_protocol_range(t):
    fig = C.energy_outcome_chart(t["energy"], t["rho"], t["protocol"])
    crit = t["protocol"].criterion("start_energy").params
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == len(t["rho"])
    for ax, row in zip(axes, t["rho"].itertuples(), strict=True):
        assert _spans(ax) == [pytest.approx((crit["min"], crit["max"]))]
        assert _points(ax) == row.n
        assert ax.get_xlabel() == "course mean starting energy (mJ)"
        assert f"rho = {row.rho:.2f}" in ax.get_title(loc="left")


def test_recurrence_chart(t):
    km, summary = R.recurrence(t["audit"], t["w"], by="group", groups=t["groups"])
    ticks = [0, 90, 180, 270, 360, 450, 540]
    fig = C.recurrence_chart(km, summary, ticks=ticks)
    ax, ax_r = fig.axes[:2]
    assert "Kaplan–Meier" in fig.get_suptitle()
    assert ax.get_ylabel() == "recurrence-free (share of courses)"
    assert ax_r.get_xlabel() == "days since the last treatment of the course"
    groups = list(summary["group"])
    steps = [ln for ln in ax.lines if ln.get_drawstyle() == "steps-post"]
    assert len(steps) == len(groups)
    for ln, g in zip(steps, groups, strict=True):
        k = km[km["group"] == g]
        assert list(ln.get_ydata()) == pytest.approx([1.0, *k["survival"]])
        med = summary.set_index("group").loc[g, "median_days"]
        text = f"median {med:g} days" if pd.notna(med) else "median not reached"
        assert text in ln.get_label()
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(groups)
    assert any(np.allclose(ln.get_ydata(), 0.5) for ln in ax.lines)  # the 50 % line
    # numbers at risk: one row of texts per group at the ticks, from the KM table
    texts = {(round(tx.get_position()[0]), round(tx.get_position()[1])): tx.get_text()
             for tx in ax_r.texts}
    for i, g in enumerate(groups[::-1]):
        expected = R.at_risk_at(km[km["group"] == g], ticks)
        assert [texts[(tk, i)] for tk in ticks] == [str(n) for n in expected]
    assert [tl.get_text() for tl in ax_r.get_yticklabels()] == groups[::-1]


def test_adverse_event_chart(t):
    by_op = R.adverse_events(t["audit"], by="operator")
    by_band = R.adverse_events(t["audit"], by="energy_band")
    fig = C.adverse_event_chart(by_op, by_band)
    ax1, ax2 = fig.axes[:2]
    for ax, table in ((ax1, by_op), (ax2, by_band)):
        bars = ax.containers[0]
        x = bars.lines[0].get_xdata()
        assert list(x) == pytest.approx(list(100 * table["rate"]))
        segments = bars.lines[2][0].get_segments()  # one (low, high) segment per row
        low = [seg[0][0] for seg in segments]
        high = [seg[1][0] for seg in segments]
        assert list(low) == pytest.approx(list(100 * table["ci_low"]))
        assert list(high) == pytest.approx(list(100 * table["ci_high"]))
        labels = [tl.get_text().split("\n")[0] for tl in ax.get_yticklabels()]
        assert labels == list(table["group"])  # first row at the top
        assert list(ax.get_yticks()) == list(range(len(table)))[::-1]
        assert ax.get_xlabel() == "adverse events per 100 sessions (95 % Wilson CI)"
        overall = 100 * table["events"].sum() / table["sessions"].sum()
        assert any(np.allclose(ln.get_xdata(), overall) for ln in ax.lines[1:])
    lo, hi = (t["protocol"].criterion("start_energy").params[k] for k in ("min", "max"))
    assert f"{lo:g}–{hi:g} mJ (protocol)" in [tl.get_text().split("\n")[0]
                                              for tl in ax2.get_yticklabels()]


def test_empty_inputs_still_give_a_figure(t):
    empty_w = R.attach_windows(t["audit"], None)
    fig = C.final_results_chart(empty_w, R.final_summary(empty_w), (90, 183))
    assert "no final assessments" in fig.axes[0].texts[0].get_text()
    km, summary = R.recurrence(t["audit"], empty_w)
    fig = C.recurrence_chart(km, summary)
    assert "no follow-up" in fig.axes[0].texts[0].get_text()
    paired, change = R.change_from_baseline(empty_w)
    assert isinstance(C.density_change_chart(paired, change), Figure)


def test_cumulative_incidence_chart(t):
    cif, summary = R.recurrence_cif(t["audit"], t["w"], by="group", groups=t["groups"])
    km, _ = R.recurrence(t["audit"], t["w"], by="group", groups=t["groups"])
    fig = C.cumulative_incidence_chart(cif, summary, km)
    ax = fig.axes[0]
    assert "competing event" in fig.get_suptitle()
    assert ax.get_xlabel() == "days since the last treatment of the course"
    steps = [ln for ln in ax.lines if ln.get_drawstyle() == "steps-post"]
    groups = list(summary["group"])
    assert len(steps) == 3 * len(groups)  # recurrence, new course, 1 - KM per group
    by_label = {ln.get_label(): ln for ln in steps}
    for g in groups:
        k = cif[cif["group"] == g]
        v = summary.set_index("group").loc[g, "cif"]
        solid = by_label[f"{g}: recurrence, {100 * v:.0f} % by 1 year"]
        assert list(solid.get_ydata()) == pytest.approx([0.0, *k["cif"]])
        dotted = by_label[f"{g}: new course first"]
        assert list(dotted.get_ydata()) == pytest.approx([0.0, *k["new_course_cif"]])
        dashed = by_label[f"{g}: 1 − Kaplan–Meier"]
        kk = km[km["group"] == g]
        assert list(dashed.get_ydata()) == pytest.approx([0.0, *(1 - kk["survival"])])
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(groups)
    assert any(np.allclose(ln.get_xdata(), 365) for ln in ax.lines)  # the 1-year mark
    empty_w = R.attach_windows(t["audit"], None)
    cif0, s0 = R.recurrence_cif(t["audit"], empty_w)
    fig0 = C.cumulative_incidence_chart(cif0, s0)
    assert "no follow-up" in fig0.axes[0].texts[0].get_text()
