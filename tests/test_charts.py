"""Charts and notebooks: what is drawn, not only that a figure exists.

Bands must sit at the protocol's numbers, one mark per clinician / criterion / course,
axis labels carry units, the p-chart marks exactly the months `p_chart` flags, the funnel
curves are `funnel_limits`. The notebooks run end to end on the sample and on a small
generated data set, through a real kernel.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle, StepPatch

from outcomes import stats
from outcomes.audit import run_audit
from outcomes.charts import compliance as cc
from outcomes.charts import quality as cq
from outcomes.dataset import load_data_dir
from outcomes.protocol import load_protocol
from outcomes.sample import HABITS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
NOTEBOOKS = ROOT / "notebooks"
UNIT = re.compile(r"\([^)]*\)")  # an axis label names its unit in brackets


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("flexsys-hair-regrowth")


@pytest.fixture(scope="module")
def ds():
    return load_data_dir(SAMPLE)


@pytest.fixture(scope="module")
def audit(ds, protocol):
    return run_audit(ds.sessions.data, protocol, ds.outcomes_data)


@pytest.fixture(scope="module")
def tables(audit):
    return {"summary": audit.summary(), "by_operator": audit.summary("operator"),
            "monthly": audit.summary("month")}


def clinicians(sessions: pd.DataFrame) -> set[str]:
    return set(sessions["operator"].astype("string").fillna("(not recorded)"))


def band(ax) -> tuple[float, float]:
    """Edges of the protocol band (the shaded span labelled 'protocol …') on an axes."""
    spans = [p for p in ax.patches if isinstance(p, Rectangle)
             and str(p.get_label()).startswith(("protocol", "start energy protocol"))]
    assert len(spans) == 1, [p.get_label() for p in ax.patches][:5]
    r = spans[0]
    return r.get_x(), r.get_x() + r.get_width()


def bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)
            and not str(p.get_label()).startswith(("protocol", "start energy protocol"))
            and p.get_height() > 0 and p.get_width() > 0]


def texts(fig: Figure) -> str:
    parts = [fig.get_suptitle(), flat(fig.get_supxlabel())]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_title("left"), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts]
    return "\n".join(parts)


def flat(text: str) -> str:
    """Text with line breaks and runs of spaces made single spaces (notes are wrapped)."""
    return " ".join(text.split())


def has_unit(label: str) -> bool:
    return bool(UNIT.search(label))


# --------------------------------------------------------------------------- summary


def test_compliance_summary_one_row_per_criterion(tables, protocol):
    summary = tables["summary"]
    fig = cc.compliance_summary(summary, protocol)
    ax = fig.axes[0]
    eligible = summary[summary["eligible"] > 0]
    assert len(ax.get_yticklabels()) == len(eligible)
    first = ax.get_yticklabels()[0].get_text().split("\n")[0]
    assert first == eligible.sort_values("percent")["title"].iloc[0]
    targets = next(c for c in ax.collections if c.get_label() == "target")
    ordered = eligible.sort_values("percent", kind="stable")
    np.testing.assert_allclose(targets.get_offsets()[:, 0], ordered["target"])
    assert "%" in ax.get_xlabel()


# --------------------------------------------------------------------------- p-chart


def _monthly(counts: list[tuple[int, int]], criterion: str = "start_energy") -> pd.DataFrame:
    months = pd.period_range("2025-01", periods=len(counts), freq="M")
    return pd.DataFrame({"criterion": criterion, "month": months,
                         "eligible": [n for n, _ in counts], "compliant": [k for _, k in counts]})


def test_p_chart_marks_exactly_the_flagged_months(protocol):
    counts = [(50, 42), (50, 44), (50, 43), (50, 20), (50, 45), (50, 41), (50, 49), (50, 42),
              (60, 51), (40, 34), (50, 44), (50, 43)]
    monthly = _monthly(counts)
    pc = stats.p_chart(pd.Series([k for _, k in counts]), pd.Series([n for n, _ in counts]))
    assert pc["signal"].sum() >= 1
    fig = cc.compliance_over_time(monthly, protocol, "start_energy")
    ax = fig.axes[0]
    sig = next(c for c in ax.collections if c.get_gid() == "p-chart-signal")
    marked = sig.get_offsets()
    flagged = np.flatnonzero(pc["signal"].to_numpy())
    np.testing.assert_array_equal(marked[:, 0], flagged)
    np.testing.assert_allclose(marked[:, 1], 100 * pc["p"].to_numpy()[flagged])
    steps = {p.get_gid(): p for p in ax.patches if isinstance(p, StepPatch)}
    np.testing.assert_allclose(steps["p-chart-ucl"].get_data().values, 100 * pc["ucl"])
    np.testing.assert_allclose(steps["p-chart-lcl"].get_data().values, 100 * pc["lcl"])
    assert "Anhøj" in flat(fig.get_supxlabel())
    assert "%" in ax.get_ylabel()
    assert ("SIGNAL" in flat(fig.get_supxlabel())) == bool(pc["runs_signal"].iloc[0])
    # target line from the protocol
    targets = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("target")]
    assert targets[0].get_ydata()[0] == protocol.criterion("start_energy").target


def test_p_chart_on_audit_fills_empty_months(tables, protocol):
    monthly = tables["monthly"]
    pc = cc.monthly_p_chart(monthly, "start_energy")
    months = pd.PeriodIndex(monthly["month"].astype(str), freq="M")
    assert len(pc) == (months.max() - months.min()).n + 1
    fig = cc.compliance_over_time(monthly, protocol, "start_energy")
    sig = next(c for c in fig.axes[0].collections if c.get_gid() == "p-chart-signal")
    assert len(sig.get_offsets()) == int(pc["signal"].sum())


def test_over_time_overview_small_multiples(tables, protocol):
    fig = cc.compliance_over_time_overview(tables["monthly"], protocol)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(protocol.criteria)
    for ax, c in zip(visible, protocol.criteria):
        assert ax.get_title("left").startswith(c.title[:20])


# --------------------------------------------------------------------------- clinicians


def test_funnel_curves_points_and_labels(tables, protocol):
    """The curves are funnel_limits with the table's tau2; every point is labelled by the
    curves drawn at its n."""
    by = tables["by_operator"]
    fig = cc.clinician_funnel(by, protocol, "start_energy")
    ax = fig.axes[0]
    t = cc.funnel_table(by, "start_energy")
    p0 = t["compliant"].sum() / t["eligible"].sum()
    tau2 = stats.overdispersion(t["compliant"], t["eligible"])["tau2"]
    assert tau2 > 0 and t["tau2"].iloc[0] == pytest.approx(tau2)
    lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
    for level, tag in ((0.95, "95"), (0.998, "998")):
        low, high = lines[f"funnel-{tag}-low"], lines[f"funnel-{tag}-high"]
        n = low.get_xdata()
        lo, hi = stats.funnel_limits(p0, n, level, tau2=tau2)
        np.testing.assert_allclose(low.get_ydata(), 100 * lo)
        np.testing.assert_allclose(high.get_ydata(), 100 * hi)
        # the table's limits are the curve's at each clinician's n
        lo_t, hi_t = stats.funnel_limits(p0, t["eligible"].to_numpy(float), level, tau2=tau2)
        np.testing.assert_allclose(t[f"low{tag}"], 100 * lo_t)
        np.testing.assert_allclose(t[f"high{tag}"], 100 * hi_t)
    plain = stats.funnel_limits(p0, lines["funnel-998-plain-low"].get_xdata(), 0.998)[0]
    np.testing.assert_allclose(lines["funnel-998-plain-low"].get_ydata(), 100 * plain)
    for r in t.itertuples():
        below_drawn = r.percent < r.low95
        assert (r.position.startswith("below")) == below_drawn, r.operator
    pts = [c for c in ax.collections if str(c.get_gid()).startswith("funnel-points")]
    assert sum(len(c.get_offsets()) for c in pts) == len(t) == len(clinicians_of(by))
    names = " ".join(a.get_text() for a in ax.texts)
    for name in clinicians_of(by):
        assert name in names
    assert "overdispersion" in " ".join(fig.get_supxlabel().split())
    brandt = t[t["operator"] == HABITS["high_start_energy"]].iloc[0]
    assert brandt["position_unadjusted"] == "below the 99.8 % limit"
    assert "(n)" in ax.get_xlabel() and "%" in ax.get_ylabel()


def test_funnel_p_and_q_values_are_the_formulas():
    """Exact binomial p without overdispersion; the random-effects z with it; BH q over
    every criterion × clinician (statsmodels)."""
    from scipy.stats import binom, norm
    from statsmodels.stats.multitest import multipletests

    by = pd.DataFrame({"criterion": ["a"] * 4 + ["b"] * 4,
                       "operator": ["A", "B", "C", "D"] * 2,
                       "eligible": [50, 60, 70, 80, 40, 50, 60, 70],
                       "compliant": [45, 50, 66, 40, 39, 47, 58, 66]})
    t = cc.funnel_tables(by)
    for cid, rows in t.groupby("criterion"):
        x, n = rows["compliant"].to_numpy(float), rows["eligible"].to_numpy(float)
        p0 = x.sum() / n.sum()
        tau2 = stats.overdispersion(x, n)["tau2"]
        if tau2 > 0:
            z = (np.arcsin(np.sqrt(x / n)) - np.arcsin(np.sqrt(p0))) / np.sqrt(1 / (4 * n) + tau2)
            want = 2 * norm.sf(abs(z))
        else:
            want = np.minimum(1, 2 * np.minimum(binom.cdf(x, n, p0), binom.sf(x - 1, n, p0)))
        np.testing.assert_allclose(rows["p_value"], want, rtol=1e-10)
    assert t.groupby("criterion")["tau2"].first().gt(0).any()
    q = multipletests(t["p_value"], method="fdr_bh")[1]
    np.testing.assert_allclose(t["q_value"], q, rtol=1e-10)
    assert (t["beyond_chance"] == (t["q_value"] < 0.05)).all()


def test_funnel_centre_options():
    by = pd.DataFrame({"criterion": "a", "operator": ["A", "B", "C"],
                       "eligible": [50, 60, 70], "compliant": [45, 50, 66]})
    out = cc.funnel_table(by, "a", leave_out=True).set_index("operator")
    assert out.loc["A", "p0"] == pytest.approx(100 * (50 + 66) / (60 + 70))
    out = cc.funnel_table(by, "a", targets={"a": 90}, adjust=False)
    assert (out["p0"] == 90).all() and (out["tau2"] == 0).all()


def test_funnel_full_marks_are_not_outliers():
    """17 of 17 when everyone is near 100 %: the interpolated limit is a hair below 100 %,
    but nothing lies above a full mark, so it is not flagged."""
    by = pd.DataFrame({"criterion": "x", "operator": ["A", "B", "C", "D"],
                       "eligible": [17, 30, 200, 40], "compliant": [17, 29, 193, 10]})
    t = cc.funnel_table(by, "x", adjust=False).set_index("operator")
    assert t.loc["A", "percent"] > t.loc["A", "high998"]  # beyond the drawn curve …
    assert t.loc["A", "position"] == "within the limits"  # … but not an outlier
    assert t.loc["D", "position"] == "below the 99.8 % limit"


def clinicians_of(by: pd.DataFrame) -> set[str]:
    return set(by["operator"].astype(str))


def test_funnel_criteria_picks_the_habits(tables):
    picked = cc.funnel_criteria(tables["by_operator"], k=3)
    assert len(picked) == 3 and ("start_energy" in picked or "test_spot" in picked)


def test_heatmap_rows_columns_and_order(tables, protocol):
    by, summary = tables["by_operator"], tables["summary"]
    fig = cc.clinician_heatmap(by, summary, protocol)
    ax = fig.axes[0]
    img = ax.get_images()[0]
    eligible = summary[summary["eligible"] > 0].sort_values("percent", kind="stable")
    ops = sorted(clinicians_of(by))
    assert img.get_array().shape == (len(eligible), len(ops) + 1)
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[0].startswith(eligible["title"].iloc[0])
    # the numbers are written in the cells
    numbers = [t for t in ax.texts if re.fullmatch(r"\d+|–", t.get_text())]
    assert len(numbers) == len(eligible) * (len(ops) + 1)
    row = rows.index(next(r for r in rows if r.startswith("Starting energy")))
    col = ops.index(HABITS["high_start_energy"])
    value = float(img.get_array()[row, col])
    expect = by[(by["criterion"] == "start_energy")
                & (by["operator"].astype(str) == HABITS["high_start_energy"])]["percent"]
    assert value == pytest.approx(float(expect.iloc[0]))


# --------------------------------------------------------------------------- data quality


def test_quality_charts(ds):
    files = ds.files()
    fig = cq.row_accounting(files)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == len(files)
    loaded = [b for b in bars(ax) if b.get_label() == "loaded" or not b.get_hatch()]
    assert sorted(b.get_width() for b in loaded) == sorted(files["rows_loaded"])
    assert "(count)" in ax.get_xlabel()

    rej = ds.rejections()
    fig = cq.rejections_by_reason(rej)
    ax = fig.axes[0]
    table = cq.reason_table(rej)
    assert len(bars(ax)) == len(table)
    assert sum(b.get_width() for b in bars(ax)) == rej["row"].groupby(rej["file"]).nunique().sum()

    data = ds.sessions.data
    fig = cq.missing_by_field(data, "sessions")
    ax = fig.axes[0]
    table = cq.missing_table(data, "sessions")
    assert len(ax.get_yticklabels()) == len(table)
    assert "(%" in ax.get_xlabel()
    worst = table.iloc[0]
    assert worst["Missing"] == data[worst["Field"]].isna().sum()

    fig = cq.missing_by_clinician(data)
    names = [t.get_text().split("\n")[0] for t in fig.axes[0].get_yticklabels()]
    assert names[0] == HABITS["poor_documentation"]


def test_quality_chart_without_rejections():
    empty = pd.DataFrame(columns=["file", "row", "field", "value", "reason"])
    fig = cq.rejections_by_reason(empty)
    assert "No row was rejected" in texts(fig)


# --------------------------------------------------------------------------- words


def test_headlines_name_the_habits(audit):
    from outcomes.report.text import headlines, step_findings

    lines = headlines(audit)
    text = "\n".join(lines)
    assert any(ln.startswith("Followed least:") for ln in lines)
    for habit in ("high_start_energy", "long_intervals", "skips_test_spot",
                  "poor_documentation"):
        assert HABITS[habit] in text
    energy = next(ln for ln in lines if ln.startswith("Starting energy"))
    assert HABITS["high_start_energy"] in energy and HABITS["compliant"] not in energy
    f = step_findings(audit)
    assert HABITS["long_intervals"] in f.set_index("criterion").loc["interval", "below_chance"]


def test_no_pyplot():
    for name in ("common.py", "compliance.py", "criteria.py", "quality.py"):
        src = (ROOT / "src" / "outcomes" / "charts" / name).read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import matplotlib\.pyplot|from matplotlib import pyplot"
                             r"|from matplotlib\.pyplot)", src, re.MULTILINE)


# --------------------------------------------------------------------------- notebooks

HEADINGS = {
    "01_data_quality": ["Input files", "Several exports combined", "Rejected rows", "Warnings",
                        "Unknown columns", "Missing values per field"],
    "02_protocol_compliance": ["Compliance summary", "Each step of the protocol",
                               "Monitored indicators", "Compliance over time", "Clinicians",
                               "Flagged sessions"],
}
#: sections the compliance notebook builds from the default protocol's topics
TOPICS = ["Energy", "Technique", "Test spot", "Endpoint", "Checklists", "Contraindications",
          "Schedule", "Follow-up"]


def test_notebooks_stored_clean():
    for name, headings in HEADINGS.items():  # plain JSON: nbformat's validator is slow to load
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
        assert nb["nbformat"] == 4
        cells = [{**c, "source": "".join(c["source"])} for c in nb["cells"]]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code)
        tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) == 1
        assert tagged[0]["source"].splitlines()[:3] == ['DATA_DIR = "../data/sample"',
                                                        'PROTOCOL = "flexsys-hair-regrowth"',
                                                        'OUT_DIR = "../report"']
        assert tagged[0]["source"].splitlines()[3].startswith("SAVED = None")
        assert cells[0]["cell_type"] == "markdown" and cells[0]["source"].startswith("# ")
        assert "%matplotlib inline" in code[1]["source"]
        assert "outcomes.open(DATA_DIR, protocol=PROTOCOL, saved=SAVED)" in code[1]["source"]
        heads = [ln[3:] for c in cells if c["cell_type"] == "markdown"
                 for ln in c["source"].splitlines() if ln.startswith("## ")]
        assert heads == headings
        # every section opens with a lead of its own, not just a heading
        for c in cells:
            if c["cell_type"] == "markdown" and c["source"].startswith("## "):
                assert len(c["source"].split("\n", 1)[-1].split()) >= 15


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Both notebooks on the sample and on a small generated data set, run side by side."""
    from outcomes.report.notebooks import execute_notebook
    from outcomes.sample import write_sample

    base = tmp_path_factory.mktemp("notebooks")
    small = base / "d"
    write_sample(small, patients=40, seed=3)
    jobs = []
    for label, data in (("sample", SAMPLE), ("small", small)):
        for name in HEADINGS:
            out = base / f"{label}-{name}"
            out.mkdir()
            jobs.append((label, name, data, out))

    def run(job):
        label, name, data, out = job
        params = {"DATA_DIR": str(Path(data).resolve()), "PROTOCOL": "flexsys-hair-regrowth",
                  "OUT_DIR": str(out), "SAVED": None}
        return (label, name), (execute_notebook(NOTEBOOKS / f"{name}.ipynb", params, cwd=out),
                               out)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return dict(pool.map(run, jobs))


@pytest.mark.parametrize("label", ["sample", "small"])
@pytest.mark.parametrize("name", list(HEADINGS))
def test_notebook_runs(executed, label, name):
    nb, out = executed[(label, name)]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    heads = [ln[3:] for c in nb.cells if c.cell_type == "markdown"
             for ln in c.source.splitlines() if ln.startswith("## ")]
    assert heads == HEADINGS[name]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    if name.startswith("01"):
        assert len(images) == 4
    else:  # the summary, one or more per criterion and indicator, over time, clinicians
        protocol = load_protocol("flexsys-hair-regrowth")
        assert len(images) >= 1 + len(protocol.criteria) + len(protocol.indicators) + 2
        topics = [o["data"]["text/markdown"][3:] for o in outputs
                  if o.get("data", {}).get("text/markdown", "").startswith("## ")]
        assert topics == TOPICS
    # a notebook writes no file: run in JupyterLab it must not overwrite the report's lists
    assert list(out.iterdir()) == []
    # tables are shown for reading: no row-number index, escaped, "—" for missing
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert tables and all('class="data"' in t for t in tables)
    for t in tables:
        assert "NaN" not in t and ">None<" not in t and "NaT" not in t
    alts = [o["data"]["text/plain"] for o in outputs if "image/png" in o.get("data", {})]
    assert all(a.startswith("Chart: ") and "Figure size" not in a for a in alts)
