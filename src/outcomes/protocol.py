"""Protocols as data: a TOML file of criteria from a small closed vocabulary of rules.

No code is evaluated from a protocol file. Each mistake in a file is reported as one
sentence naming the criterion and what is wrong with it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from outcomes import schema
from outcomes.load import LoadError

LEVELS = ("session", "first_session", "course")

#: rule → (parameters it needs, parameters it may have, levels it works at)
RULES: dict[str, tuple[set[str], set[str], set[str]]] = {
    "range": ({"field"}, {"min", "max"}, {"session", "first_session"}),
    "at_least_field": ({"field", "other"}, set(), {"session", "first_session"}),
    "required_true": ({"fields"}, set(), {"session", "first_session"}),
    "required_false": ({"fields"}, set(), {"session", "first_session"}),
    "all_of": ({"conditions"}, set(), {"session", "first_session"}),
    "interval_days": ({"min", "max"}, set(), {"session"}),
    "sessions_per_course": ({"min", "max"}, set(), {"course"}),
    "assessment_window": ({"min", "max"}, set(), {"course"}),
}
COMMON = {"id", "title", "sheet", "level", "rule", "target", "applies_when", "note"}
STATISTICS = ("share_true", "median", "mean")


class ProtocolError(LoadError):
    """A protocol file that cannot be used; the message names the mistake."""


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

    @property
    def fields(self) -> list[str]:
        """Session fields this criterion reads."""
        p = self.params
        if "fields" in p:
            return list(p["fields"])
        if "conditions" in p:
            return [c["field"] for c in p["conditions"]]
        return [f for f in (p.get("field"), p.get("other")) if f]


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
    path: str = ""

    def criterion(self, cid: str) -> Criterion:
        return next(c for c in self.criteria if c.id == cid)


def available() -> list[str]:
    """Ids of the protocols that ship with the package."""
    return sorted(p.name.removesuffix(".toml")
                  for p in resources.files("outcomes.protocols").iterdir()
                  if p.name.endswith(".toml"))


def load_protocol(id_or_path: str | Path = "flexsys-hair-regrowth") -> Protocol:
    """A shipped protocol by id, or a protocol file by path; checked on load."""
    text_path = Path(id_or_path)
    if text_path.suffix == ".toml" or text_path.exists():
        if not text_path.is_file():
            raise ProtocolError(f"protocol file {text_path} does not exist")
        text, where = text_path.read_text(encoding="utf-8"), str(text_path)
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
    return parse_protocol(doc, where)


def parse_protocol(doc: dict[str, Any], where: str = "protocol") -> Protocol:
    """Check a protocol document and build the Protocol, one sentence per mistake."""
    def need(key: str, d: dict[str, Any], ctx: str) -> Any:
        if key not in d:
            raise ProtocolError(f"{where}: {ctx} has no {key!r}")
        return d[key]

    for key in ("id", "title", "version", "indication"):
        need(key, doc, "the protocol")
    course = doc.get("course", {})
    gap = course.get("new_course_after_days", 120)
    window = course.get("final_result_days", [90, 183])
    if not isinstance(gap, int) or gap < 1:
        raise ProtocolError(f"{where}: new_course_after_days must be a whole number of days")
    if len(window) != 2 or window[0] > window[1]:
        raise ProtocolError(f"{where}: final_result_days must be [earliest, latest] days")
    session_fields = schema.fields("sessions")
    criteria: list[Criterion] = []
    seen: set[str] = set()
    for raw in doc.get("criteria", []):
        cid = need("id", raw, "a criterion")
        ctx = f"criterion {cid!r}"
        if cid in seen:
            raise ProtocolError(f"{where}: criterion id {cid!r} is used twice")
        seen.add(cid)
        rule = need("rule", raw, ctx)
        if rule not in RULES:
            raise ProtocolError(f"{where}: {ctx} has unknown rule {rule!r} "
                                f"(rules: {', '.join(RULES)})")
        level = raw.get("level", "session")
        needed, optional, levels = RULES[rule]
        if level not in LEVELS:
            raise ProtocolError(f"{where}: {ctx} has unknown level {level!r} "
                                f"(levels: {', '.join(LEVELS)})")
        if level not in levels:
            raise ProtocolError(f"{where}: {ctx}: rule {rule!r} does not work at level {level!r}")
        for key in needed:
            need(key, raw, ctx)
        extra = set(raw) - COMMON - needed - optional
        if extra:
            raise ProtocolError(f"{where}: {ctx} has unknown key {min(extra)!r}")
        params = {k: raw[k] for k in needed | optional if k in raw}
        for fname in _fields_named(params):
            if fname not in session_fields:
                raise ProtocolError(f"{where}: {ctx} names unknown field {fname!r}")
        for cond in [params, *params.get("conditions", []), raw.get("applies_when") or {}]:
            _check_range(cond, where, ctx)
        if rule == "range" and "min" not in params and "max" not in params:
            raise ProtocolError(f"{where}: {ctx} needs min, max or both")
        target = need("target", raw, ctx)
        if not isinstance(target, int | float) or not 0 <= target <= 100:
            raise ProtocolError(f"{where}: {ctx} target must be a percent from 0 to 100")
        criteria.append(Criterion(id=cid, title=raw.get("title", cid), sheet=raw.get("sheet", ""),
                                  level=level, rule=rule, target=float(target), params=params,
                                  applies_when=raw.get("applies_when")))
    if not criteria:
        raise ProtocolError(f"{where}: the protocol has no [[criteria]]")
    indicators = []
    for raw in doc.get("indicators", []):
        iid = need("id", raw, "an indicator")
        fname = need("field", raw, f"indicator {iid!r}")
        if fname not in session_fields:
            raise ProtocolError(f"{where}: indicator {iid!r} names unknown field {fname!r}")
        stat = raw.get("statistic", "share_true")
        if stat not in STATISTICS:
            raise ProtocolError(f"{where}: indicator {iid!r} has unknown statistic {stat!r}")
        indicators.append(Indicator(iid, raw.get("title", iid), raw.get("sheet", ""), fname, stat))
    return Protocol(id=doc["id"], title=doc["title"], version=str(doc["version"]),
                    source=doc.get("source", ""), indication=doc["indication"],
                    new_course_after_days=gap, final_result_days=(window[0], window[1]),
                    criteria=tuple(criteria), indicators=tuple(indicators), path=where)


def _fields_named(params: dict[str, Any]) -> list[str]:
    names = list(params.get("fields", []))
    names += [params[k] for k in ("field", "other") if k in params]
    names += [c.get("field") for c in params.get("conditions", [])]
    return names


def _check_range(cond: dict[str, Any], where: str, ctx: str) -> None:
    lo, hi = cond.get("min"), cond.get("max")
    for v in (lo, hi):
        if v is not None and not isinstance(v, int | float):
            raise ProtocolError(f"{where}: {ctx}: min and max must be numbers")
    if lo is not None and hi is not None and lo > hi:
        raise ProtocolError(f"{where}: {ctx}: range is upside down (min {lo} > max {hi})")
    if "field" in cond and cond["field"] not in schema.fields("sessions"):
        raise ProtocolError(f"{where}: {ctx} names unknown field {cond.get('field')!r}")


def describe(protocol: Protocol) -> list[dict[str, Any]]:
    """Criteria as plain rows (for reports and the workbook's first sheet)."""
    return [{"id": c.id, "title": c.title, "level": c.level, "rule": c.rule,
             "target_pct": c.target, "sheet": c.sheet} for c in protocol.criteria]
