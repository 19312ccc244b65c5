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


@pytest.mark.parametrize("change,message", [
    (lambda d: d["criteria"][0].update(rule="magic"), "unknown rule 'magic'"),
    (lambda d: d["criteria"][0].update(field="energy"), "unknown field 'energy'"),
    (lambda d: d["criteria"][0].update(min=30, max=20), "range is upside down"),
    (lambda d: d["criteria"][1].update(id="start_energy"), "used twice"),
    (lambda d: d["criteria"][0].update(target=120), "target must be a percent"),
    (lambda d: d["criteria"][0].update(level="clinic"), "unknown level 'clinic'"),
    (lambda d: d["criteria"][13].update(level="session"), "does not work at level"),
    (lambda d: d["criteria"][0].update(expression="__import__('os')"), "unknown key"),
    (lambda d: d.pop("indication"), "has no 'indication'"),
])
def test_mistakes_are_named(change, message):
    doc = base_doc()
    change(doc)
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(doc, "mine.toml")


def test_a_clinic_protocol_from_the_docs_loads(tmp_path):
    example = Path(__file__).resolve().parents[1] / "docs" / "example-protocol.toml"
    p = load_protocol(example)
    assert p.criteria and p.id


def test_unknown_protocol_id_is_a_clear_error():
    with pytest.raises(ProtocolError, match="no protocol 'nope'"):
        load_protocol("nope")
    with pytest.raises(ProtocolError, match="does not exist"):
        load_protocol("missing.toml")
