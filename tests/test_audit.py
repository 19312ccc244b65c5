"""The audit: verdicts on hand-built cases, hand counts on the sample, outputs, re-audit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from outcomes.audit import VERDICTS, compare, run_audit, status_of, summarise
from outcomes.load import load
from outcomes.protocol import load_protocol

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
PROTOCOL = load_protocol()


def session(**kw) -> dict:
    """A session that follows the protocol in every respect, with overrides."""
    base = {"patient_id": "A", "session_date": "2025-01-01", "clinic": "North", "operator": "Dr. A",
                "indication": "hair_regrowth", "area": "vertex", "energy_start_mj": 25.0,
                "energy_final_mj": 30.0, "coverage_pct": 8.0, "passes": 2, "pass_wait_min": 7.0,
                "test_spot": True, "test_spot_wait_min": 5.0, "edema": True, "erythema": True,
                "endpoint_onset_min": 7.0, "pain_nrs": 3, "cooling_during": True, "post_cooling_min": 10.0,
                "cosmetics_removed": True, "herpes_prophylaxis": True, "eye_protection": True,
                "anesthetic_removed_skin_dry": True, "sun_advice_given": True, "ci_isotretinoin": False,
                "ci_keloid": False, "ci_post_surgical_skin_changes": False, "ci_systemic_steroids": False,
                "adverse_event": "none", "notes": None}
    base.update(kw)
    return base


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["session_date"] = pd.to_datetime(df["session_date"]).astype("datetime64[s]")
    for c in df.columns:
        if df[c].dtype == object and c not in ("patient_id", "operator", "clinic", "indication",
                                                 "area", "adverse_event", "notes"):
            df[c] = df[c].astype("boolean") if c not in ("energy_start_mj",) else df[c]
    df["session_id"] = [f"s{i}" for i in range(len(df))]
    df["source_file"] = "x.csv"
    df["source_row"] = np.arange(2, len(df) + 2)
    return df


def verdict(audit, cid: str) -> list[str]:
    v = audit.verdicts
    return v[v["criterion"] == cid].sort_values("unit")["verdict"].astype(str).tolist()


def test_verdicts_on_hand_built_sessions():
    rows = [
        session(),  # all fine
        session(session_date="2025-02-05", energy_start_mj=35.0, energy_final_mj=30.0),
        session(session_date="2025-04-10", energy_start_mj=None, test_spot=False,
                test_spot_wait_min=None, passes=1, pass_wait_min=None),
        session(session_date="2025-05-10", edema=None, eye_protection=False, ci_keloid=True,
                coverage_pct=30.0),
    ]
    a = run_audit(frame(rows), PROTOCOL, as_of=pd.Timestamp("2026-01-01"))
    assert verdict(a, "start_energy") == ["compliant", "deviation", "not documented",
                                          "compliant"]
    assert verdict(a, "energy_titration") == ["compliant", "deviation", "not documented",
                                              "compliant"]
    # passes = 1: waiting between passes does not apply
    assert verdict(a, "pass_wait") == ["compliant", "compliant", "not applicable", "compliant"]
    assert verdict(a, "passes") == ["compliant", "compliant", "deviation", "compliant"]
    # test spot not done is a deviation even though the wait is (naturally) missing
    assert verdict(a, "test_spot") == ["compliant", "compliant", "deviation", "compliant"]
    assert verdict(a, "endpoint") == ["compliant", "compliant", "compliant", "not documented"]
    assert verdict(a, "pre_checklist")[3] == "deviation"
    assert verdict(a, "no_contraindication")[3] == "deviation"
    assert verdict(a, "coverage")[3] == "deviation"
    # intervals: 35 days, 64 days, 30 days; the first session has none
    assert verdict(a, "interval") == ["not applicable", "compliant", "deviation", "compliant"]
    assert verdict(a, "course_length") == ["compliant"]  # 4 sessions, completed
    # no outcomes given: not evaluated
    assert verdict(a, "final_assessment") == ["not applicable"]
    f = a.flagged()
    row = f[(f["criterion"] == "start_energy") & (f["verdict"] == "deviation")].iloc[0]
    assert (row["source_file"], row["source_row"], row["observed"]) == ("x.csv", 3, 35.0)
    assert "above 20–30 mJ" in row["reason"]


def test_final_assessment_window():
    rows = [session(patient_id=p, session_date=d) for p in ("A", "B", "C", "D", "E")
            for d in ("2025-01-01", "2025-02-01", "2025-03-01")]
    out = pd.DataFrame({
        "patient_id": ["A", "B", "C", "E"],
        # A: 100 days after 2025-03-01 (inside 90–183); B: 60 (too early); C: 200 (too late)
        # D: none; E: like A
        "assessment_date": pd.to_datetime(["2025-06-09", "2025-04-30", "2025-09-17",
                                           "2025-06-09"]).astype("datetime64[s]"),
        "instrument": "satisfaction", "score": 5.0, "rater": "patient"})
    a = run_audit(frame(rows), PROTOCOL, outcomes=out, as_of=pd.Timestamp("2026-01-01"))
    v = a.verdicts[a.verdicts["criterion"] == "final_assessment"]
    by_patient = dict(zip(a.courses["patient_id"].to_numpy()[v["unit"]], v["verdict"].astype(str),
                          strict=True))
    assert by_patient == {"A": "compliant", "B": "deviation", "C": "deviation",
                          "D": "not documented", "E": "compliant"}
    # window still open (data end 130 days after the last session): not yet assessable,
    # even where already assessed inside it (counting those alone would inflate the rate)
    a2 = run_audit(frame(rows), PROTOCOL, outcomes=out, as_of=pd.Timestamp("2025-07-09"))
    v2 = a2.verdicts[a2.verdicts["criterion"] == "final_assessment"]
    assert set(v2["verdict"].astype(str)) == {"not applicable"}


def test_other_indications_are_not_audited():
    rows = [session(), session(patient_id="B", indication="acne_scars")]
    a = run_audit(frame(rows), PROTOCOL)
    assert a.info["sessions_audited"] == 1 and a.info["sessions_excluded"] == 1


def test_status_rules():
    # 100 % target: met only with no miss; otherwise the interval decides
    st = status_of(np.array([10, 9, 95, 80, 0]), np.array([10, 10, 100, 100, 0]),
                   np.array([0.72, 0.6, 0.89, 0.71, 0]), np.array([1, 0.98, 0.98, 0.87, 0]),
                   np.array([100, 100, 80, 90, 90]))
    assert st.tolist() == ["met", "not met", "met", "not met", "no data"]
    assert status_of(np.array([85]), np.array([100]), np.array([0.77]), np.array([0.91]),
                     np.array([90])).tolist() == ["inconclusive"]


# --- the sample: hand counts with plain pandas ---------------------------------------------


@pytest.fixture(scope="module")
def sample_audit():
    s = load(SAMPLE / "sessions.csv").data
    o = load(SAMPLE / "outcomes.csv").data
    return s, o, run_audit(s, PROTOCOL, o)


def test_counts_agree_with_a_hand_count(sample_audit):
    s, _o, a = sample_audit
    summary = a.summary().set_index("criterion")
    hair = s[s["indication"].isna() | (s["indication"] == "hair_regrowth")]
    e = hair["energy_start_mj"]
    assert summary.loc["start_energy", "eligible"] == len(hair)
    assert summary.loc["start_energy", "compliant"] == int(((e >= 20) & (e <= 30)).sum())
    assert summary.loc["start_energy", "missing"] == int(e.isna().sum())
    ts = hair["test_spot"].astype("boolean")
    w = hair["test_spot_wait_min"]
    ok = (ts == True) & (w >= 5) & (w <= 10)
    assert summary.loc["test_spot", "compliant"] == int(ok.fillna(False).sum())
    # intervals by hand: sort, diff within patient/area, gaps over 120 days start a course
    h = hair.sort_values(["patient_id", "area", "session_date"])
    gap = h.groupby(["patient_id", "area"])["session_date"].diff().dt.days
    within = gap[gap <= 120]
    assert summary.loc["interval", "eligible"] == len(within)
    assert summary.loc["interval", "compliant"] == int(within.between(28, 42).sum())
    pct = summary.loc["start_energy", "percent"]
    assert pct == pytest.approx(100 * summary.loc["start_energy", "compliant"] / len(hair))


def test_planted_habits_show_as_the_clinicians_that_fall_short(sample_audit):
    _s, _o, a = sample_audit
    by = a.summary("operator").set_index(["criterion", "operator"])["percent"]
    worst = {cid: by.loc[cid].idxmin() for cid in ("start_energy", "interval", "test_spot")}
    assert worst == {"start_energy": "Dr. Brandt", "interval": "Dr. Vogt",
                     "test_spot": "Dr. Lehmann"}
    assert by.loc[("start_energy", "Dr. Brandt")] < 50
    assert a.summary().set_index("criterion").loc["start_energy", "status"] == "not met"


def test_re_audit_compare_uses_newcombe():
    before = pd.DataFrame({"criterion": ["x"], "title": ["X"], "eligible": [80],
                           "compliant": [48], "percent": [60.0], "target": [90.0]})
    after = pd.DataFrame({"criterion": ["x"], "title": ["X"], "eligible": [70],
                          "compliant": [56], "percent": [80.0], "target": [90.0]})
    c = compare(before, after).iloc[0]
    # Newcombe (1998) Table II example (a): 56/70 − 48/80, method 10: 0.0524 to 0.3339
    assert c["diff_ci_low"] == pytest.approx(5.24, abs=0.01)
    assert c["diff_ci_high"] == pytest.approx(33.39, abs=0.01)
    assert c["change"] == "improved"


def test_summaries_by_group_add_up(sample_audit):
    _s, _o, a = sample_audit
    total = a.summary().set_index("criterion")
    for by in ("operator", "clinic", "month"):
        g = summarise(a.verdicts, PROTOCOL, by=by).groupby("criterion")[
            ["eligible", "compliant", "missing"]].sum()
        pd.testing.assert_frame_equal(g.loc[total.index], total[["eligible", "compliant",
                                                                 "missing"]],
                                      check_names=False)


# --- command line and outputs --------------------------------------------------------------


def test_audit_cli_json_and_outputs(tmp_path):
    out = tmp_path / "audit"
    res = subprocess.run([sys.executable, "-m", "outcomes.cli", "audit",
                          str(SAMPLE / "sessions.csv"), "--outcomes", str(SAMPLE / "outcomes.csv"),
                          "--json", "--out", str(out)], capture_output=True, text=True,
                         check=False, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    ids = [c["id"] for c in doc["criteria"]]
    assert ids == [c.id for c in PROTOCOL.criteria]
    for c in doc["criteria"]:
        assert {"id", "eligible", "compliant", "percent", "ci_low", "ci_high", "target",
                "status", "missing"} <= set(c)
        if c["eligible"]:
            assert c["ci_low"] <= c["percent"] <= c["ci_high"]
    for name in ("compliance.csv", "verdicts.csv", "flagged_sessions.csv", "audit.xlsx"):
        assert (out / name).is_file()
    flagged = pd.read_csv(out / "flagged_sessions.csv")
    assert {"source_file", "source_row", "reason", "verdict"} <= set(flagged.columns)
    wb = openpyxl.load_workbook(out / "audit.xlsx")
    assert wb.sheetnames[0] == "About"
    about = {r[0]: r[1] for r in wb["About"].iter_rows(values_only=True)}
    assert "flexsys-hair-regrowth" in about["Protocol"]
    assert any("SHA-256" in str(v) for v in about.values())
    ws = wb["Compliance"]
    assert ws.freeze_panes == "A2"
    header = [c.value for c in ws[1]]
    pct = ws.cell(2, header.index("% compliant") + 1)
    assert pct.number_format == "0.0%" and 0 <= pct.value <= 1
    status = ws.cell(2, header.index("Status") + 1)
    assert status.fill.start_color.rgb.endswith(("C6EFCE", "FFC7CE", "FFEB9C"))
    assert ws.column_dimensions["B"].width > 10


def test_audit_cli_split_and_bad_protocol(tmp_path):
    res = subprocess.run([sys.executable, "-m", "outcomes.cli", "audit",
                          str(SAMPLE / "sessions.csv"), "--split", "2025-11-01", "--json"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    comp = json.loads(res.stdout)["comparison"]
    assert {"criterion", "before_percent", "after_percent", "diff_ci_low", "diff_ci_high",
            "change"} <= set(comp[0])
    bad = tmp_path / "p.toml"
    bad.write_text('id = "x"\ntitle = "x"\nversion = "1"\nindication = "h"\n'
                   '[[criteria]]\nid = "a"\nrule = "magic"\ntarget = 90\n')
    res = subprocess.run([sys.executable, "-m", "outcomes.cli", "audit",
                          str(SAMPLE / "sessions.csv"), "--protocol", str(bad)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1 and "unknown rule 'magic'" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "outcomes.cli", "audit",
                          str(SAMPLE / "sessions.csv"), "--since", "01.02.2025"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "YYYY-MM-DD" in res.stderr


def test_a_field_the_export_lacks_is_not_recorded_not_not_met():
    rows = [session(patient_id=p, coverage_pct=None) for p in ("A", "B", "C")]
    a = run_audit(frame(rows), PROTOCOL)
    s = a.summary().set_index("criterion")
    assert s.loc["coverage", "status"] == "not recorded"
    assert s.loc["coverage", "missing"] == s.loc["coverage", "eligible"] == 3
    assert s.loc["start_energy", "compliant"] == 3  # three of three: interval decides
    assert s.loc["start_energy", "status"] == "inconclusive"


def test_audit_says_what_was_rejected_and_writes_the_log(tmp_path):
    p = tmp_path / "sessions.csv"
    p.write_text("patient_id,session_date,energy_start_mj\nP1,2025-01-02,25\n"
                 "P1,2025-02-31,25\nP2,2025-01-03,25\n", encoding="utf-8")
    out = tmp_path / "a"
    res = subprocess.run([sys.executable, "-m", "outcomes.cli", "audit", str(p), "--out",
                          f"{out}/"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "3 rows read, 2 loaded, 1 rejected and not audited" in res.stdout
    # --out was given: the text names where the log is, once with one slash
    assert f"listed in {out}/rejected_rows.csv" in res.stdout
    assert f"tables written to {out}/" in res.stdout
    assert "with --out" not in res.stdout and "//" not in res.stdout
    log = pd.read_csv(out / "rejected_rows.csv")
    assert log[["row", "reason"]].values.tolist() == [[3, "impossible date"]]
    assert "Rejected rows" in openpyxl.load_workbook(out / "audit.xlsx").sheetnames


def test_course_records_name_the_latest_session_in_any_row_order():
    """The audit keeps the export's row order; a course's record (course_length, final
    assessment) still names its latest session, also for an Audit copied by hand, whose
    remembered rows are not trusted, and when the export lists sessions newest first."""
    import dataclasses

    from outcomes.audit import verdict_records

    s = load(SAMPLE / "sessions.csv", progress=False).data
    o = load(SAMPLE / "outcomes.csv", progress=False).data
    shuffled = s.sample(frac=1, random_state=1).reset_index(drop=True)
    audit = run_audit(shuffled, PROTOCOL, o)
    assert audit.sessions["source_row"].tolist() == \
        shuffled.loc[shuffled["indication"] == "hair_regrowth", "source_row"].tolist()
    records = verdict_records(audit)
    course = records[records["criterion"] == "course_length"]
    latest = audit.sessions.groupby("course_id")["session_date"].max()
    assert (course["date"].to_numpy() == latest.loc[course["course_id"]].to_numpy()).all()
    rows = audit.sessions.set_index("session_id")["course_id"]
    assert (rows.loc[course["session_id"]].to_numpy() == course["course_id"].to_numpy()).all()
    copied = dataclasses.replace(audit)
    pd.testing.assert_frame_equal(verdict_records(copied), records)


@pytest.mark.parametrize("rows", [1, 7, 1000, 1_000_000])
def test_verdicts_written_in_slices_are_the_whole_table_written_at_once(tmp_path, rows):
    """verdicts.csv is written a slice at a time; the bytes are those of the whole table
    neutralised and written in one go (a formula-like session id included)."""
    from outcomes.audit import verdict_records
    from outcomes.audit.records import verdict_record_slices
    from outcomes.audit.write import _csv_in_slices
    from outcomes.safe import neutralise

    s = load(SAMPLE / "sessions.csv", progress=False).data.head(60)
    s["session_id"] = s["session_id"].astype("string")
    s.loc[3, "session_id"] = "=HYPERLINK(1)"
    audit = run_audit(s, PROTOCOL)
    whole = tmp_path / "whole.csv"
    neutralise(verdict_records(audit)).to_csv(whole, index=False)
    sliced = tmp_path / "sliced.csv"
    _csv_in_slices(verdict_record_slices(audit, rows), sliced)
    assert sliced.read_bytes() == whole.read_bytes()
    assert "'=HYPERLINK(1)" in sliced.read_text(encoding="utf-8")
    empty = run_audit(s.iloc[:0], PROTOCOL)  # no verdicts: the header alone
    _csv_in_slices(verdict_record_slices(empty, rows), sliced)
    neutralise(verdict_records(empty)).to_csv(whole, index=False)
    assert sliced.read_bytes() == whole.read_bytes()


def test_design_effect_in_json_is_a_recount_of_verdicts_csv(tmp_path):
    """Patients as clusters, recounted from the written verdicts with stats.design_effect."""
    import json
    import subprocess
    import sys

    from outcomes import stats

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    res = subprocess.run([sys.executable, "-m", "outcomes", "audit",
                          str(sample / "sessions.csv"), "--outcomes",
                          str(sample / "outcomes.csv"), "--out", str(tmp_path), "--json"],
                         check=False, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    criteria = {c["id"]: c for c in json.loads(res.stdout)["criteria"]}
    v = pd.read_csv(tmp_path / "verdicts.csv", dtype={"patient_id": str})
    v = v[v["verdict"] != "not applicable"]
    for cid, rows in v.groupby("criterion"):
        per = rows.groupby("patient_id")["verdict"].agg(
            n="size", x=lambda s: (s == "compliant").sum())
        want = stats.design_effect(per["x"].to_numpy(), per["n"].to_numpy())
        got = criteria[cid]
        assert got["design_effect"] == pytest.approx(want, rel=1e-9), cid
        assert got["ci_low_clustered"] <= got["ci_low"] + 1e-9
        assert got["ci_high_clustered"] >= got["ci_high"] - 1e-9
        lo, hi = stats.wilson_ci_clustered(got["compliant"], got["eligible"], max(want, 1))
        assert (got["ci_low_clustered"], got["ci_high_clustered"]) == pytest.approx(
            (100 * lo, 100 * hi), rel=1e-9)


def test_status_follows_the_clustered_interval():
    """Two patients, ten sessions each, all or nothing: the plain interval would call the
    target met; a design effect of ~10 makes it inconclusive."""
    verdicts = pd.DataFrame({
        "criterion": pd.Categorical(["c"] * 40),
        "verdict": pd.Categorical(["compliant"] * 36 + ["deviation"] * 4,
                                  categories=VERDICTS),
    })
    patients = np.repeat(np.arange(4), 10)
    from outcomes.protocol import parse_protocol

    proto = parse_protocol({"id": "p", "title": "p", "version": "1", "indication": "x",
                            "criteria": [{"id": "c", "rule": "range", "field": "passes",
                                          "min": 1, "target": 60}]}, "p.toml")
    plain = summarise(verdicts, proto).iloc[0]
    clustered = summarise(verdicts, proto, patients=patients).iloc[0]
    assert plain["status"] == "met" and plain["ci_low"] > 60
    assert clustered["design_effect"] > 3
    assert clustered["ci_low_clustered"] < 60 and clustered["status"] == "inconclusive"


def test_reaudit_p_and_q_values():
    """Pearson's chi-square without correction (scipy) per criterion; BH q (statsmodels);
    'improved'/'worse' only where q < 0.05."""
    from scipy.stats import chi2_contingency
    from statsmodels.stats.multitest import multipletests

    def summary(rows):
        return pd.DataFrame(rows, columns=["criterion", "title", "eligible", "compliant",
                                           "percent", "target"])

    before = summary([("a", "A", 100, 60, 60.0, 90), ("b", "B", 100, 80, 80.0, 90),
                      ("c", "C", 50, 45, 90.0, 90)])
    after = summary([("a", "A", 100, 80, 80.0, 90), ("b", "B", 100, 78, 78.0, 90),
                     ("c", "C", 50, 35, 70.0, 90)])
    out = compare(before, after).set_index("criterion")
    for cid in "abc":
        b, a = before.set_index("criterion").loc[cid], after.set_index("criterion").loc[cid]
        table = [[a["compliant"], a["eligible"] - a["compliant"]],
                 [b["compliant"], b["eligible"] - b["compliant"]]]
        assert out.loc[cid, "p_value"] == pytest.approx(
            chi2_contingency(table, correction=False)[1], rel=1e-10)
    q = multipletests(out["p_value"], method="fdr_bh")[1]
    np.testing.assert_allclose(out["q_value"], q)
    assert out.loc["a", "change"] == "improved" and out.loc["b", "change"] == "no clear change"
    assert out.loc["c", "change"] == ("worse" if out.loc["c", "q_value"] < 0.05
                                      else "no clear change")


def test_compare_to_an_export_contained_in_the_new_one(tmp_path):
    """Sessions in both exports are one session: 'after' is only what the earlier export
    did not have, and the table names files, periods and n."""
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    full = pd.read_csv(sample / "sessions.csv", dtype=str, keep_default_na=False)
    old = full[full["session_date"] < "2026-01-01"]
    old.to_csv(tmp_path / "sessions-2025.csv", index=False)
    res = subprocess.run([sys.executable, "-m", "outcomes", "audit",
                          str(sample / "sessions.csv"), "--compare-to",
                          str(tmp_path / "sessions-2025.csv"), "--json"],
                         check=False, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = {r["criterion"]: r for r in json.loads(res.stdout)["comparison"]}
    before = subprocess.run([sys.executable, "-m", "outcomes", "audit",
                             str(tmp_path / "sessions-2025.csv"), "--json"],
                            check=False, capture_output=True, text=True, timeout=300)
    assert before.returncode == 0, before.stderr
    whole = {c["id"]: c for c in json.loads(before.stdout)["criteria"]}
    r = rows["start_energy"]
    assert r["before_eligible"] == whole["start_energy"]["eligible"]
    assert r["before_file"] == "sessions-2025.csv" and r["after_file"] == "sessions.csv"
    new = full[full["session_date"] >= "2026-01-01"]
    # every new session that is audited counts once, none of the old ones again
    assert r["after_eligible"] <= len(new) and r["after_sessions"] == r["after_eligible"]
    assert r["shared_sessions"] + r["after_sessions"] >= r["before_sessions"]
    assert r["after_period"] >= "2026-01-01"
