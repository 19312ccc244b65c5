"""Protocol files: the shipped protocol encodes the sheet; mistakes are one clear sentence."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from outcomes.protocol import ProtocolError, available, load_protocol, parse_protocol

SHEET = Path(__file__).resolve().parents[2] / "shared" / "protocol-sheets" / \
    "flexsys-hair-regrowth.txt"
CONTRACT_IDS = ["start_energy", "energy_titration", "coverage", "passes", "pass_wait",
                "test_spot", "endpoint", "endpoint_onset", "post_cooling", "pre_checklist",
                "sun_advice", "no_contraindication", "interval", "course_length",
                "final_assessment"]


def test_default_protocol_has_the_contract_criteria():
    p = load_protocol()
    assert p.id == "flexsys-hair-regrowth" and "flexsys-hair-regrowth" in available()
    assert [c.id for c in p.criteria] == CONTRACT_IDS
    assert p.new_course_after_days == 120 and p.final_result_days == (90, 183)
    assert p.indication == "hair_regrowth"


@pytest.mark.parametrize("cid,field,lo,hi", [
    ("start_energy", "energy_start_mj", 20, 30), ("coverage", "coverage_pct", 7.5, 8.5),
    ("passes", "passes", 2, 3), ("pass_wait", "pass_wait_min", 5, 10),
    ("endpoint_onset", "endpoint_onset_min", 5, 10), ("post_cooling", "post_cooling_min", 5, 15),
])
def test_ranges_as_in_the_design(cid, field, lo, hi):
    c = load_protocol().criterion(cid)
    assert (c.rule, c.params["field"], c.params["min"], c.params["max"]) == ("range", field, lo, hi)


def test_safety_items_target_100_and_every_criterion_quotes_the_sheet():
    p = load_protocol()
    for cid in ("test_spot", "pre_checklist", "no_contraindication", "sun_advice"):
        assert p.criterion(cid).target == 100
    sheet = SHEET.read_text(encoding="utf-8") if SHEET.exists() else ""
    for c in p.criteria:
        assert c.sheet, c.id
    if sheet:  # the quoted sentences come from the sheet (first words at least)
        flat = " ".join(sheet.split()).lower()
        for cid in ("start_energy", "test_spot", "post_cooling", "interval", "pass_wait"):
            words = " ".join(p.criterion(cid).sheet.split()[:4]).lower()
            assert words.split(":")[0] in flat, (cid, words)
    assert {i.id for i in p.indicators} == {"cooling_during", "pain"}


def base_doc() -> dict:
    text = (Path(__file__).resolve().parents[1] / "src" / "outcomes" / "protocols" /
            "flexsys-hair-regrowth.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _crit(d: dict, cid: str) -> dict:
    return next(c for c in d["criteria"] if c["id"] == cid)


#: Every typed mistake: (change to the default protocol, words the one sentence must have)
MISTAKES = [
    (lambda d: _crit(d, "start_energy").update(rule="magic"), "'start_energy' has unknown rule 'magic'"),
    (lambda d: _crit(d, "start_energy").pop("rule"), "'start_energy' has no 'rule'"),
    (lambda d: _crit(d, "start_energy").update(field="energy"), "unknown field 'energy'"),
    (lambda d: _crit(d, "start_energy").update(min=30, max=20), "range is upside down"),
    (lambda d: _crit(d, "start_energy").update(min=float("nan")), "'min' must be a finite number"),
    (lambda d: _crit(d, "start_energy").update(max=float("inf")), "'max' must be a finite number"),
    (lambda d: _crit(d, "start_energy").update(min="20"), "'min' must be a finite number"),
    (lambda d: _crit(d, "start_energy").update(min=True), "'min' must be a finite number"),
    (lambda d: [_crit(d, "start_energy").pop(k) for k in ("min", "max")], "needs min, max or both"),
    (lambda d: _crit(d, "energy_titration").update(id="start_energy"), "used twice"),
    (lambda d: _crit(d, "start_energy").update(target=120), "'target' must be a percent"),
    (lambda d: _crit(d, "start_energy").update(target=-1), "'target' must be a percent"),
    (lambda d: _crit(d, "start_energy").update(target=True), "'target' must be a percent"),
    (lambda d: _crit(d, "start_energy").update(target="90"), "'target' must be a percent"),
    (lambda d: _crit(d, "start_energy").update(target=float("nan")), "'target' must be a percent"),
    (lambda d: _crit(d, "start_energy").pop("target"), "'start_energy' has no 'target'"),
    (lambda d: _crit(d, "start_energy").update(level="clinic"), "unknown level 'clinic'"),
    (lambda d: _crit(d, "start_energy").update(level=3), "unknown level 3"),
    (lambda d: _crit(d, "course_length").update(level="session"), "works at level course"),
    (lambda d: _crit(d, "interval").update(level="course"), "works at level session"),
    (lambda d: _crit(d, "start_energy").update(expression="__import__('os')"),
     "unknown key 'expression'"),
    (lambda d: _crit(d, "start_energy").update(field="session_date"),
     "'session_date', which is not a number field (it is date)"),
    (lambda d: _crit(d, "start_energy").update(field="operator"), "which is not a number field"),
    (lambda d: _crit(d, "start_energy").update(field=5), "'field' must be a field name"),
    (lambda d: _crit(d, "sun_advice").update(fields="sun_advice_given"),
     "'fields' must be a non-empty list"),
    (lambda d: _crit(d, "sun_advice").update(fields=[]), "'fields' must be a non-empty list"),
    (lambda d: _crit(d, "sun_advice").update(fields=["passes"]), "not a yes/no field"),
    (lambda d: _crit(d, "test_spot").update(conditions=[1]), "each condition must be a table"),
    (lambda d: _crit(d, "test_spot").update(conditions=[{"field": "test_spot", "equals": "yes"}]),
     "equals must be true or false"),
    (lambda d: _crit(d, "test_spot").update(conditions=[{"field": "coverage_pct", "equals": True}]),
     "equals works on yes/no fields only"),
    (lambda d: _crit(d, "test_spot").update(conditions=[{"field": "passes", "min": 3, "max": 1}]),
     "range is upside down"),
    (lambda d: _crit(d, "test_spot").update(conditions=[{"field": "passes", "minimum": 3}]),
     "unknown key 'minimum'"),
    (lambda d: _crit(d, "interval").update(min=-7), "'min' must be a whole number of days"),
    (lambda d: _crit(d, "interval").update(min=42, max=28), "range is upside down"),
    (lambda d: _crit(d, "interval").update(max=4.5), "'max' must be a whole number of days"),
    (lambda d: _crit(d, "course_length").update(min=-1), "'min' must be a whole number of sessions"),
    (lambda d: _crit(d, "final_assessment").update(min=200), "range is upside down"),
    (lambda d: _crit(d, "pass_wait").update(applies_when={"field": "passes", "min": "2"}),
     "'applies_when' condition on 'passes': min must be a finite number"),
    (lambda d: _crit(d, "pass_wait").update(applies_when="passes >= 2"),
     "'applies_when' each condition must be a table"),
    (lambda d: _crit(d, "start_energy").update(title=5), "'title' must be text"),
    (lambda d: _crit(d, "start_energy").update(topic=["a"]), "'topic' must be text"),
    (lambda d: _crit(d, "start_energy").update(response="yes"), "'response' must be true or false"),
    (lambda d: _crit(d, "start_energy").update(id=""), "criterion number 1 needs an 'id'"),
    (lambda d: d.pop("indication"), "has no 'indication'"),
    (lambda d: d.update(id=5), "'id' must be non-empty text"),
    (lambda d: d.update(version=True), "'version' must be text"),
    (lambda d: d.update(course="x"), "'course' must be a table"),
    (lambda d: d["course"].update(new_course_after_days="120"), "new_course_after_days must be"),
    (lambda d: d["course"].update(new_course_after_days=0), "new_course_after_days must be"),
    (lambda d: d["course"].update(final_result_days=[183, 90]), "final_result_days must be"),
    (lambda d: d["course"].update(final_result_days=[-5, 90]), "final_result_days must be"),
    (lambda d: d["course"].update(final_result_days=[]), "final_result_days must be"),
    (lambda d: d["course"].update(gap=3), "[course] has unknown key 'gap'"),
    (lambda d: d.update(criteria=[1]), "'criteria' must be a list of tables"),
    (lambda d: d.update(criteria="x"), "'criteria' must be a list of tables"),
    (lambda d: d.update(criteria=[]), "has no [[criteria]]"),
    (lambda d: d.update(indicators=[{"id": "x", "field": "passes", "statistic": "share_true"}]),
     "needs a yes/no field"),
    (lambda d: d.update(indicators=[{"id": "x", "field": "nope"}]), "unknown field 'nope'"),
    (lambda d: d.update(analysis={"key_criteria": ["nope"]}), "unknown criterion 'nope'"),
    (lambda d: d.update(analysis={"key_criteria": "start_energy"}),
     "key_criteria must be a list"),
    (lambda d: d.update(analysis=[1]), "'analysis' must be a table"),
    (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
]


@pytest.mark.parametrize("change,message", MISTAKES)
def test_every_typed_mistake_is_one_sentence(change, message):
    doc = base_doc()
    change(doc)
    with pytest.raises(ProtocolError) as err:
        parse_protocol(doc, "mine.toml")
    text = str(err.value)
    assert message in text
    assert text.startswith("protocol mine.toml") and "\n" not in text


@pytest.mark.parametrize("body,message", [
    ('course = "x"', "'course' must be a table"),
    ("criteria = [1]", "'criteria' must be a list of tables"),
    ("[[criteria]]\nid = \"a\"\nrule = \"range\"\nfield = \"passes\"\nmin = nan\ntarget = 90",
     "'min' must be a finite number"),
    ("[[criteria]]\nid = \"a\"\nrule = \"range\"\nfield = \"passes\"\nmin = 1\ntarget = true",
     "'target' must be a percent"),
    ("x = " + "[" * 5000 + "]" * 5000, "nested too deeply"),
])
def test_command_line_refuses_a_bad_protocol_with_one_sentence(tmp_path, body, message):
    import subprocess
    import sys

    head = 'id = "p"\ntitle = "P"\nversion = "1"\nindication = "hair_regrowth"\n'
    path = tmp_path / "bad.toml"
    path.write_text(head + body + "\n", encoding="utf-8")
    sample = Path(__file__).resolve().parents[1] / "data" / "sample" / "sessions.csv"
    res = subprocess.run([sys.executable, "-m", "outcomes", "audit", str(sample), "--protocol",
                          str(path)], check=False, capture_output=True, text=True, timeout=120)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert len(err) == 1 and message in err[0] and "unexpected error" not in err[0]


def test_rules_say_themselves_in_words():
    p = load_protocol()
    assert p.criterion("start_energy").describe() == "Starting energy 20–30 mJ"
    assert p.criterion("interval").describe().startswith("28–42 days")
    assert "Test spot done: yes" in p.criterion("test_spot").describe()


def test_topics_group_criteria_in_file_order():
    p = load_protocol()
    topics = p.topics()
    flat = [c.id for _, cs in topics for c in cs]
    assert sorted(flat) == sorted(c.id for c in p.criteria)
    assert all(t for t, _ in topics)


def test_key_criteria_default_leaves_out_course_level_and_responses():
    doc = base_doc()
    doc.pop("analysis", None)
    p = parse_protocol(doc, "mine.toml")
    ids = set(p.key_criteria)
    assert "course_length" not in ids and "final_assessment" not in ids
    assert all(not p.criterion(i).response for i in ids)
    assert ids == {c.id for c in p.criteria if c.level != "course" and not c.response}


def test_a_clinic_protocol_from_the_docs_loads(tmp_path):
    example = Path(__file__).resolve().parents[1] / "docs" / "example-protocol.toml"
    p = load_protocol(example)
    assert p.criteria and p.id


def test_unknown_protocol_id_is_a_clear_error():
    with pytest.raises(ProtocolError, match="no protocol 'nope'"):
        load_protocol("nope")
    with pytest.raises(ProtocolError, match="does not exist"):
        load_protocol("missing.toml")


def test_no_default_criterion_id_in_the_code():
    """Charts, analysis and reports follow the protocol file, never the default's ids
    (ids that are also canonical field names, such as passes, name the field)."""
    import re

    from outcomes import schema

    src = Path(__file__).resolve().parents[1] / "src" / "outcomes"
    fields = set(schema.fields("sessions"))
    ids = [c.id for c in load_protocol().criteria if c.id not in fields]
    pattern = re.compile(r"[\"'](" + "|".join(map(re.escape, ids)) + r")[\"']")
    found = [f"{p.relative_to(src)}: {m.group(0)}" for p in sorted(src.rglob("*.py"))
             for m in pattern.finditer(p.read_text(encoding="utf-8"))]
    assert found == []
