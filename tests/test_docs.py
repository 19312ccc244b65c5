"""The user documentation in docs/ names what the code defines, so it cannot drift silently.

Each test reads a definition from the code (schema fields and aliases, protocol rules and
keys, mapping keys, the argparse parser) and checks that the matching page names it.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from outcomes import cli, load, protocol, schema
from outcomes.protocol import model

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text → the text under it, up to the next heading of the same or higher level."""
    parts = re.split(rf"^(#{{1,{level}}} .*)$", text, flags=re.MULTILINE)
    return {head.lstrip("#").strip(): body for head, body in zip(parts[1::2], parts[2::2],
                                                                 strict=True)}


def table_rows(text: str) -> dict[str, str]:
    """First cell (a `code` name) → the whole table row, for rows that start with one."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
        if m:
            rows.setdefault(m.group(1), line)
    return rows


# ---------------------------------------------------------------------------------------------
# fields.md


HEADINGS = {"sessions": "sessions — one row per treatment session",
            "outcomes": "outcomes — one row per assessment"}


@pytest.mark.parametrize("table", list(HEADINGS))
def test_every_field_has_a_row_with_its_aliases(table):
    part = sections(read("fields.md"))[HEADINGS[table]]
    rows = table_rows(part)
    for name, f in schema.fields(table).items():
        assert name in rows, f"docs/fields.md: no row for {table}.{name}"
        for alias in f.aliases:
            assert f"`{alias}`" in rows[name], (
                f"docs/fields.md: alias {alias!r} of {table}.{name} is not in its row")


def test_every_field_type_and_range_is_as_the_schema_says():
    rows = table_rows(read("fields.md"))
    for f in schema.SESSIONS:
        cells = [c.strip() for c in rows[f.name].strip("|").split("|")]
        assert cells[1] == f.type, f"docs/fields.md: {f.name} is {f.type}, not {cells[1]}"
        if f.low is not None and f.high is not None and f.role == "clinical":
            assert f"{f.low:g}–{f.high:g}" in rows[f.name], (
                f"docs/fields.md: {f.name} plausible range is {f.low:g}–{f.high:g}")


def test_every_instrument_is_in_the_registry_table():
    rows = table_rows(sections(read("fields.md"))["Instrument registry"])
    for iid, ins in schema.INSTRUMENTS.items():
        assert iid in rows, f"docs/fields.md: instrument {iid} missing from the registry"
        assert ins.rater in rows[iid]
        assert ("higher" if ins.higher_is_better else "lower") in rows[iid]


# ---------------------------------------------------------------------------------------------
# protocol.md


def test_every_rule_is_documented():
    text = read("protocol.md")
    headings = set(sections(text, level=3))
    rows = table_rows(text)
    for rule in protocol.RULES:
        assert f"`{rule}`" in headings or rule in rows, f"docs/protocol.md: rule {rule} missing"


def test_every_rule_lists_its_parameters_and_levels():
    row = table_rows(sections(read("protocol.md"), level=3)["Rules at a glance"])
    for rule, kind in protocol.RULES.items():
        needed = {p.name for p in kind.params if p.required}
        optional = {p.name for p in kind.params if not p.required}
        levels = set(kind.levels)
        assert rule in row, f"docs/protocol.md: rule {rule} not in 'Rules at a glance'"
        for key in needed | optional:
            assert f"`{key}`" in row[rule], f"docs/protocol.md: {rule} parameter {key} missing"
        named = {lv for lv in protocol.LEVELS if re.search(rf"\b{lv}\b", row[rule])}
        assert named == levels, f"docs/protocol.md: {rule} works at {sorted(levels)}"


def test_protocol_keys_levels_and_statistics_are_named():
    text = read("protocol.md")
    for key in sorted(model.COMMON):
        assert f"| `{key}` |" in text, f"docs/protocol.md: criterion key {key} has no row"
    for name in [*protocol.LEVELS, *model.STATISTICS, "new_course_after_days",
                 "final_result_days", "key_criteria", "topic", "response"]:
        assert f"`{name}`" in text or f'"{name}"' in text, f"docs/protocol.md: {name} missing"


def test_protocol_examples_are_valid_protocols():
    """Every TOML block of protocol.md parses as (part of) a protocol the code accepts."""
    text = read("protocol.md")
    head = 'id = "x"\ntitle = "x"\nversion = "1"\nindication = "hair_regrowth"\n'
    for block in re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL):
        doc = tomllib.loads(block if block.startswith("id =") else head + block)
        doc.setdefault("criteria", [{"id": "c", "rule": "range", "field": "passes", "min": 1,
                                     "target": 90}])
        protocol.parse_protocol(doc, "docs/protocol.md")


# ---------------------------------------------------------------------------------------------
# mapping.md


def test_mapping_keys_and_yes_no_words_are_named():
    text = read("mapping.md")
    for key in sorted(load.SOURCE_KEYS):
        assert f"| `{key}` |" in text, f"docs/mapping.md: [source] key {key} has no row"
    for section in ("[source]", "[columns]", "[units]", "[values]"):
        assert f"### {section}" in text
    for word in sorted(load.TRUE_WORDS | load.FALSE_WORDS):
        assert f"`{word}`" in text, f"docs/mapping.md: yes/no word {word!r} missing"
    for unit in load.UNITS:
        assert f'`"{unit}"`' in text


# ---------------------------------------------------------------------------------------------
# cli.md


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"}


def test_every_command_and_option_is_in_its_section():
    parts = sections(read("cli.md"))
    commands = _commands()
    assert {"validate", "audit", "report", "export", "sample"} <= set(commands)
    for name, parser in commands.items():
        assert name in parts, f"docs/cli.md: no section '## {name}'"
        for option in sorted(_long_options(parser)):
            assert re.search(rf"`{re.escape(option)}[ `]", parts[name]), (
                f"docs/cli.md: option {option} of {name} is not in its section")


def test_top_level_options_are_named():
    text = read("cli.md")
    for option in _long_options(cli._parser()):
        assert option in text, f"docs/cli.md: {option} missing"


def test_validate_json_contract_keys_are_named():
    text = sections(read("cli.md"))["validate"]
    for key in ["rows_read", "rows_loaded", "rows_rejected", "warnings", "unknown_columns",
                "rejections", *load.REJECTION_COLUMNS]:
        assert f"`{key}`" in text, f"docs/cli.md: validate --json key {key} missing"


def test_audit_json_keys_are_named():
    text = sections(read("cli.md"))["audit"]
    for key in ["id", "eligible", "compliant", "percent", "ci_low", "ci_high", "target",
                "status", "missing", "design_effect", "ci_low_clustered", "ci_high_clustered"]:
        assert f"`{key}`" in text, f"docs/cli.md: audit --json key {key} missing"


# ---------------------------------------------------------------------------------------------
# the pages together


def test_readme_points_into_docs_not_outside_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../shared" not in readme
    assert "docs/README.md" in readme
    for page in DOCS.glob("*.md"):
        assert "../shared" not in page.read_text(encoding="utf-8"), page.name


def test_relative_links_resolve():
    written_elsewhere = {"modules.md"}  # the module map is another page's job
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target in written_elsewhere:
                continue
            assert (page.parent / target).exists(), f"{page.name}: link to {target} is broken"


def test_docs_index_lists_every_page():
    index = read("README.md")
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not list {page.name}"
