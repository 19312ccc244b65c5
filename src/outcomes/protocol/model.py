"""Protocols as data: a TOML file of criteria, read and type-checked into a Protocol.

No code is evaluated from a protocol file. Every key and value is checked; a mistake is
refused with one sentence naming the file, the criterion and the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from outcomes import schema
from outcomes.errors import ProtocolError
from outcomes.protocol.rules import LEVELS, RULES, Rule, check_condition, check_params

COMMON = {"id", "title", "sheet", "level", "rule", "target", "applies_when", "note", "topic",
          "response"}
TOP_LEVEL = {"id", "title", "version", "source", "indication", "course", "criteria",
             "indicators", "analysis"}
STATISTICS = ("share_true", "median", "mean")
DEFAULT_PROTOCOL = "flexsys-hair-regrowth"


@dataclass(frozen=True)
class Criterion:
    """One checkable line of the protocol sheet."""

    id: str
    title: str
    sheet: str
    level: str
    rule: str
    target: float  # percent
    params: dict[str, Any] = field(default_factory=dict)
    applies_when: dict[str, Any] | None = None
    topic: str = ""
    response: bool = False
    note: str = ""

    @property
    def kind(self) -> Rule:
        """The rule object that evaluates, describes and charts this criterion."""
        return RULES[self.rule]

    @property
    def fields(self) -> list[str]:
        """Session fields this criterion reads."""
        return self.kind.fields(self.params)

    @property
    def unit(self) -> str:
        """'session' or 'course': what one verdict is about."""
        return self.kind.unit

    def describe(self) -> str:
        """The rule in words: 'Starting energy 20–30 mJ'."""
        return self.kind.describe(self.params)

    def range(self, name: str | None = None) -> tuple[float | None, float | None]:
        """(min, max) the criterion allows: its own, or that of its condition on `name`."""
        p = self.params
        for cond in p.get("conditions", []):
            if ("min" in cond or "max" in cond) and name in (None, cond["field"]):
                return cond.get("min"), cond.get("max")
        return p.get("min"), p.get("max")


@dataclass(frozen=True)
class Indicator:
    """An advisory line of the sheet: monitored, without a pass/fail target."""

    id: str
    title: str
    sheet: str
    field: str
    statistic: str


@dataclass(frozen=True)
class Protocol:
    """A treatment protocol: course rules, criteria and monitored indicators."""

    id: str
    title: str
    version: str
    source: str
    indication: str
    new_course_after_days: int
    final_result_days: tuple[int, int]
    criteria: tuple[Criterion, ...]
    indicators: tuple[Indicator, ...] = ()
    key_criteria: tuple[str, ...] = ()
    path: str = ""

    def criterion(self, cid: str) -> Criterion:
        """The criterion with this id; a clear error when the protocol has none."""
        for c in self.criteria:
            if c.id == cid:
                return c
        raise KeyError(f"protocol {self.id} has no criterion {cid!r} "
                       f"(it has: {', '.join(c.id for c in self.criteria)})")

    def topics(self) -> list[tuple[str, list[Criterion]]]:
        """Criteria grouped by topic, topics and criteria in the order of the file."""
        groups: dict[str, list[Criterion]] = {}
        for c in self.criteria:
            groups.setdefault(c.topic, []).append(c)
        return list(groups.items())

    def range_of(self, name: str) -> tuple[float | None, float | None] | None:
        """The band the first range criterion on a session field sets, or None."""
        for c in self.criteria:
            if c.rule == "range" and c.params["field"] == name:
                return c.range()
            for cond in c.params.get("conditions", []):
                if cond["field"] == name and ("min" in cond or "max" in cond):
                    return cond.get("min"), cond.get("max")
        return None


def available() -> list[str]:
    """Ids of the protocols that ship with the package."""
    return sorted(p.name.removesuffix(".toml")
                  for p in resources.files("outcomes.protocols").iterdir()
                  if p.name.endswith(".toml"))


def load_protocol(id_or_path: str | Path = DEFAULT_PROTOCOL) -> Protocol:
    """A shipped protocol by id, or a protocol file by path; checked on load."""
    text_path = Path(id_or_path)
    if text_path.suffix == ".toml" or text_path.exists():
        if not text_path.is_file():
            raise ProtocolError(f"protocol file {text_path} does not exist")
        try:
            text = text_path.read_text(encoding="utf-8-sig")
        except (UnicodeDecodeError, OSError) as exc:
            raise ProtocolError(f"protocol file {text_path} cannot be read as UTF-8 text "
                                f"({exc.__class__.__name__})") from None
        where = str(text_path)
    else:
        if str(id_or_path) not in available():
            raise ProtocolError(f"no protocol {str(id_or_path)!r}; shipped protocols: "
                                f"{', '.join(available())}, or give a .toml file")
        res = resources.files("outcomes.protocols") / f"{id_or_path}.toml"
        text, where = res.read_text(encoding="utf-8"), f"{id_or_path}.toml"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"protocol {where} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"protocol {where} is nested too deeply to be a protocol") from None
    return parse_protocol(doc, where)


def _text(d: dict[str, Any], key: str, ctx: str, required: bool = False,
          default: str = "") -> str:
    if key not in d:
        if required:
            raise ProtocolError(f"{ctx} has no {key!r}")
        return default
    v = d[key]
    if not isinstance(v, str) or (required and not v.strip()):
        raise ProtocolError(f"{ctx}: {key!r} must be {'non-empty ' if required else ''}text "
                            "in quotes")
    return v


def _table(d: dict[str, Any], key: str, ctx: str) -> dict[str, Any]:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise ProtocolError(f"{ctx}: {key!r} must be a table ([{key}])")
    return v


def _list_of_tables(d: dict[str, Any], key: str, ctx: str) -> list[dict[str, Any]]:
    v = d.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise ProtocolError(f"{ctx}: {key!r} must be a list of tables ([[{key}]])")
    return v


def _unknown(d: dict[str, Any], allowed: set[str], ctx: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise ProtocolError(f"{ctx} has unknown key {min(extra)!r} "
                            f"(keys: {', '.join(sorted(allowed))})")


def parse_protocol(doc: dict[str, Any], where: str = "protocol") -> Protocol:
    """Check a protocol document and build the Protocol, one sentence per mistake."""
    top = f"protocol {where}"
    if not isinstance(doc, dict):
        raise ProtocolError(f"{top} must be a TOML document of keys and tables")
    _unknown(doc, TOP_LEVEL, top)
    pid = _text(doc, "id", top, required=True)
    title = _text(doc, "title", top, required=True)
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, str | int | float):
        raise ProtocolError(f"{top}: 'version' must be text such as \"1.0\""
                            if "version" in doc else f"{top} has no 'version'")
    indication = _text(doc, "indication", top, required=True)
    course = _table(doc, "course", top)
    _unknown(course, {"new_course_after_days", "final_result_days"}, f"{top}: [course]")
    gap = course.get("new_course_after_days", 120)
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
        raise ProtocolError(f"{top}: [course] new_course_after_days must be a whole number of "
                            "days, 1 or more")
    window = course.get("final_result_days", [90, 183])
    if (not isinstance(window, list) or len(window) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in window)
            or window[0] < 0 or window[0] > window[1]):
        raise ProtocolError(f"{top}: [course] final_result_days must be [earliest, latest] "
                            "whole days after the last session, 0 ≤ earliest ≤ latest")
    criteria: list[Criterion] = []
    for i, raw in enumerate(_list_of_tables(doc, "criteria", top), start=1):
        criterion = _criterion(raw, i, top)
        if any(c.id == criterion.id for c in criteria):
            raise ProtocolError(f"{top}: criterion id {criterion.id!r} is used twice")
        criteria.append(criterion)
    if not criteria:
        raise ProtocolError(f"{top} has no [[criteria]]")
    indicators = [_indicator(raw, top) for raw in _list_of_tables(doc, "indicators", top)]
    key = _key_criteria(_table(doc, "analysis", top), criteria, top)
    return Protocol(id=pid, title=title, version=str(version),
                    source=_text(doc, "source", top), indication=indication,
                    new_course_after_days=gap, final_result_days=(window[0], window[1]),
                    criteria=tuple(criteria), indicators=tuple(indicators),
                    key_criteria=key, path=where)


def _criterion(raw: dict[str, Any], number: int, top: str) -> Criterion:
    cid = raw.get("id")
    if not isinstance(cid, str) or not cid.strip():
        raise ProtocolError(f"{top}: criterion number {number} needs an 'id' in quotes")
    ctx = f"{top}: criterion {cid!r}"
    rule_name = raw.get("rule")
    if rule_name not in RULES:
        got = "no 'rule'" if rule_name is None else f"unknown rule {rule_name!r}"
        raise ProtocolError(f"{ctx} has {got} (rules: {', '.join(RULES)})")
    rule = RULES[rule_name]
    _unknown(raw, COMMON | {p.name for p in rule.params}, ctx)
    level = raw.get("level", "session")
    if level not in LEVELS:
        raise ProtocolError(f"{ctx} has unknown level {level!r} (levels: {', '.join(LEVELS)})")
    if level not in rule.levels:
        raise ProtocolError(f"{ctx}: rule {rule_name!r} works at level "
                            f"{' or '.join(sorted(rule.levels))}, not {level!r}")
    params = check_params(rule, raw, ctx)
    if "target" not in raw:
        raise ProtocolError(f"{ctx} has no 'target' (percent of eligible records, 0–100)")
    target = raw["target"]
    if (isinstance(target, bool) or not isinstance(target, int | float)
            or not math.isfinite(target) or not 0 <= target <= 100):
        raise ProtocolError(f"{ctx}: 'target' must be a percent from 0 to 100")
    applies = raw.get("applies_when")
    if applies is not None:
        if rule.unit != "session":
            raise ProtocolError(f"{ctx}: 'applies_when' works on session-level rules only")
        err = check_condition(applies, allow_equals=False)
        if err:
            raise ProtocolError(f"{ctx}: 'applies_when' {err}")
    response = raw.get("response", False)
    if not isinstance(response, bool):
        raise ProtocolError(f"{ctx}: 'response' must be true or false")
    return Criterion(id=cid, title=_text(raw, "title", ctx, default=cid),
                     sheet=_text(raw, "sheet", ctx), level=level, rule=rule_name,
                     target=float(target), params=params, applies_when=applies,
                     topic=_text(raw, "topic", ctx, default=rule.topic) or rule.topic,
                     response=response, note=_text(raw, "note", ctx))


def _indicator(raw: dict[str, Any], top: str) -> Indicator:
    iid = raw.get("id")
    if not isinstance(iid, str) or not iid.strip():
        raise ProtocolError(f"{top}: an indicator needs an 'id' in quotes")
    ctx = f"{top}: indicator {iid!r}"
    _unknown(raw, {"id", "title", "sheet", "field", "statistic"}, ctx)
    name = _text(raw, "field", ctx, required=True)
    f = schema.fields("sessions").get(name)
    if f is None:
        raise ProtocolError(f"{ctx} names unknown field {name!r}")
    stat = raw.get("statistic", "share_true")
    if stat not in STATISTICS:
        raise ProtocolError(f"{ctx} has unknown statistic {stat!r} "
                            f"(statistics: {', '.join(STATISTICS)})")
    wanted = ("bool",) if stat == "share_true" else ("float", "int")
    if f.type not in wanted:
        raise ProtocolError(f"{ctx}: statistic {stat!r} needs a "
                            f"{'yes/no' if stat == 'share_true' else 'number'} field, "
                            f"and {name!r} is {f.type}")
    return Indicator(iid, _text(raw, "title", ctx, default=iid), _text(raw, "sheet", ctx),
                     name, stat)


def _key_criteria(analysis: dict[str, Any], criteria: list[Criterion],
                  top: str) -> tuple[str, ...]:
    """The criteria whose all-compliant courses 'followed the protocol' in outcome comparisons.

    Default: every session-level criterion that is not a response: course-level criteria
    depend on the course's length or completion, and a response is an outcome itself.
    """
    _unknown(analysis, {"key_criteria"}, f"{top}: [analysis]")
    if "key_criteria" not in analysis:
        return tuple(c.id for c in criteria if c.unit == "session" and not c.response)
    ids = analysis["key_criteria"]
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise ProtocolError(f"{top}: [analysis] key_criteria must be a list of criterion ids")
    known = {c.id for c in criteria}
    unknown = [x for x in ids if x not in known]
    if unknown:
        raise ProtocolError(f"{top}: [analysis] key_criteria names unknown criterion "
                            f"{unknown[0]!r}")
    return tuple(ids)


def describe(protocol: Protocol) -> list[dict[str, Any]]:
    """Criteria as plain rows (for reports and the workbook's protocol sheet)."""
    return [{"id": c.id, "title": c.title, "level": c.level, "rule": c.rule,
             "target_pct": c.target, "sheet": c.sheet} for c in protocol.criteria]
