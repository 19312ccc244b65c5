"""The closed vocabulary of protocol rules: one object per rule, registered in `RULES`.

Each rule holds everything about itself: the parameters it takes and their types, the
levels it works at, how it evaluates a criterion, how it says the criterion in words,
which chart shows it and the report topic it falls under by default. Adding a rule
means adding one class here and listing it in `RULES`.

Evaluation is vectorised: a criterion is evaluated on whole columns and gives every
session (or course) a verdict, a reason and the value observed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from outcomes import schema
from outcomes.errors import ProtocolError
from outcomes.protocol.assessments import assessment_window
from outcomes.protocol.verdicts import Evaluation, Verdict, reasons

OK, DEV, MISS, NA = (Verdict.COMPLIANT, Verdict.DEVIATION, Verdict.NOT_DOCUMENTED,
                     Verdict.NOT_APPLICABLE)
LEVELS = ("session", "first_session", "course")
SESSION_LEVELS = frozenset({"session", "first_session"})


@dataclass(frozen=True)
class Tables:
    """What a rule evaluates on: audited sessions (with course columns), courses, outcomes.

    `as_of` is the sessions' last date (courses are completed by it); `data_end` the
    last date of any record, sessions or assessments: a course's assessment window that
    has not ended by then cannot be judged yet.
    """

    sessions: pd.DataFrame
    courses: pd.DataFrame
    outcomes: pd.DataFrame | None
    as_of: pd.Timestamp | None
    data_end: pd.Timestamp | None = None


# --------------------------------------------------------------------------- parameters


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _field_of_type(name: Any, types: tuple[str, ...]) -> str | None:
    """None when `name` is a sessions field of one of `types`, else what is wrong."""
    if not isinstance(name, str):
        return "must be a field name in quotes"
    f = schema.fields("sessions").get(name)
    if f is None:
        return f"names unknown field {name!r}"
    if f.type not in types:
        kind = "a number" if "float" in types else "a yes/no"
        return f"names field {name!r}, which is not {kind} field (it is {f.type})"
    return None


NUMERIC = ("float", "int")


@dataclass(frozen=True)
class Param:
    """One parameter of a rule: its name, kind and whether it must be given.

    Kinds: `number` (finite), `days` and `count` (whole numbers ≥ 0), `numeric_field`
    (a number field of sessions), `bool_fields` (a list of yes/no fields), `conditions`
    (a list of `{ field, min, max }` or `{ field, equals }` tables).
    """

    name: str
    kind: str
    required: bool = True

    def check(self, value: Any) -> str | None:
        """None when the value fits, else the end of a sentence saying what is wrong."""
        k = self.kind
        if k == "number":
            return None if _number(value) else "must be a finite number"
        if k in ("days", "count"):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            return None if ok else f"must be a whole number of {k if k == 'days' else 'sessions'} (0 or more)"
        if k == "numeric_field":
            return _field_of_type(value, NUMERIC)
        if k == "bool_fields":
            if not isinstance(value, list) or not value:
                return "must be a non-empty list of yes/no field names"
            return next((e for e in (_field_of_type(v, ("bool",)) for v in value) if e), None)
        if k == "conditions":
            if not isinstance(value, list) or not value:
                return "must be a non-empty list of { field, min, max } or { field, equals } tables"
            return next((e for e in map(check_condition, value) if e), None)
        raise ValueError(f"unknown parameter kind {k!r}")


def check_range(lo: Any, hi: Any) -> str | None:
    """What is wrong with a min/max pair, or None."""
    for key, v in (("min", lo), ("max", hi)):
        if v is not None and not _number(v):
            return f"{key} must be a finite number"
    if lo is None and hi is None:
        return "needs min, max or both"
    if lo is not None and hi is not None and lo > hi:
        return f"range is upside down (min {lo:g} > max {hi:g})"
    return None


def check_condition(cond: Any, allow_equals: bool = True) -> str | None:
    """What is wrong with a `{ field, min, max }` / `{ field, equals }` table, or None."""
    if not isinstance(cond, dict):
        return "each condition must be a table such as { field = \"passes\", min = 2 }"
    extra = set(cond) - {"field", "min", "max", "equals"}
    if extra:
        return f"a condition has unknown key {min(extra)!r}"
    if "field" not in cond:
        return "a condition has no 'field'"
    if "equals" in cond:
        if not allow_equals:
            return "takes min and max, not equals"
        if "min" in cond or "max" in cond:
            return "a condition takes either equals or min/max, not both"
        err = _field_of_type(cond["field"], ("bool",))
        if err:
            return f"condition on {cond['field']!r}: equals works on yes/no fields only"
        if not isinstance(cond["equals"], bool):
            return f"condition on {cond['field']!r}: equals must be true or false"
        return None
    err = _field_of_type(cond["field"], NUMERIC)
    if err:
        return f"condition {err}"
    err = check_range(cond.get("min"), cond.get("max"))
    return f"condition on {cond['field']!r}: {err}" if err else None


# --------------------------------------------------------------------------- evaluation helpers


def _num(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _bool(df: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, known) arrays of a nullable boolean column."""
    col = df[name].astype("boolean")
    known = col.notna().to_numpy()
    return col.fillna(False).to_numpy(dtype=bool), known


def unit_of(name: str) -> str:
    """The unit of a sessions field ('' for none)."""
    f = schema.fields("sessions").get(name)
    return f.unit if f is not None and f.unit else ""


def range_text(lo: float | None, hi: float | None, unit: str = "") -> str:
    """'20–30 mJ', '≥ 2', '≤ 10 min' ('' when neither end is given)."""
    u = f" {unit}" if unit else ""
    if lo is None and hi is None:
        return ""
    if lo is not None and hi is not None:
        return f"{lo:g}–{hi:g}{u}"
    return f"≥ {lo:g}{u}" if lo is not None else f"≤ {hi:g}{u}"


def eval_range(v: np.ndarray, lo: float | None, hi: float | None, name: str) -> Evaluation:
    """Within lo–hi (either may be None); NaN is not documented."""
    missing = np.isnan(v)
    below = ~missing & (v < lo) if lo is not None else np.zeros(len(v), bool)
    above = ~missing & (v > hi) if hi is not None else np.zeros(len(v), bool)
    code = np.where(missing, MISS, np.where(below | above, DEV, OK)).astype(np.int8)
    rng = range_text(lo, hi, unit_of(name))
    why, texts = reasons([missing, below, above], [f"{name} not documented",
                                                   f"{name} below {rng}",
                                                   f"{name} above {rng}"])
    return Evaluation(code, why, texts, v)


def eval_flags(df: pd.DataFrame, names: list[str], want: bool) -> Evaluation:
    """All named yes/no fields equal `want`; the first failing one names the reason.

    The observed value is how many items are as the rule does not want (present
    contraindications) or, for required-true items, how many are done.
    """
    n = len(df)
    k = len(names)
    code = np.full(n, OK, dtype=np.int8)
    why = np.zeros(n, dtype=np.int16)
    count = np.zeros(n)
    missing_any = np.zeros(n, dtype=bool)
    miss_why = np.zeros(n, dtype=np.int16)
    failed = np.zeros(n, dtype=bool)
    texts = [""] + [f"{name} present" if not want else f"{name} not done" for name in names] \
        + [f"{name} not documented" for name in names]
    for i, name in enumerate(names):
        val, known = _bool(df, name)
        bad = known & (val != want)
        count += bad if not want else (known & val)
        why[bad & ~failed] = 1 + i
        failed |= bad
        miss_why[~known & ~missing_any] = 1 + k + i
        missing_any |= ~known
    code[failed] = DEV
    gap = ~failed & missing_any
    code[gap] = MISS
    why[gap] = miss_why[gap]
    return Evaluation(code, why, texts, count)


def eval_condition(df: pd.DataFrame, cond: dict[str, Any]) -> Evaluation:
    """One `{ field, equals }` or `{ field, min, max }` condition."""
    if "equals" in cond:
        return eval_flags(df, [cond["field"]], bool(cond["equals"]))
    return eval_range(_num(df, cond["field"]), cond.get("min"), cond.get("max"), cond["field"])


def combine_all(parts: list[Evaluation]) -> Evaluation:
    """All conditions must hold: the first deviation wins, then the first gap."""
    n = len(parts[0].code)
    code = np.full(n, OK, dtype=np.int8)
    why = np.zeros(n, dtype=np.int16)
    texts = [""]
    recode = []
    for p in parts:  # each part's reason numbers in the combined list of texts
        r = np.arange(len(p.texts)) + len(texts) - 1
        r[0] = 0
        recode.append(r)
        texts += p.texts[1:]
    for want in (DEV, MISS):
        for p, r in zip(parts, recode, strict=True):
            hit = (p.code == want) & (code == OK)
            code[hit] = want
            why[hit] = r[p.why[hit]]
    return Evaluation(code, why, texts, parts[-1].observed)


# --------------------------------------------------------------------------- the rules


class Rule:
    """A rule of the vocabulary. Subclasses set the class attributes and `evaluate`."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    levels: ClassVar[frozenset[str]] = SESSION_LEVELS
    #: the chart that shows a criterion of this rule (see outcomes.charts.criteria)
    chart: ClassVar[str]
    #: the report section a criterion falls under when its file gives no topic
    topic: ClassVar[str]
    #: what the rule judges: every session, or every completed course
    unit: ClassVar[str] = "session"
    #: what one line of the rule says, for the docs and the protocol files' comments
    summary: ClassVar[str]

    def check(self, params: dict[str, Any]) -> str | None:
        """Checks across parameters (each parameter's type is checked already)."""
        if "min" in params or "max" in params:
            return check_range(params.get("min"), params.get("max"))
        return None

    def evaluate(self, params: dict[str, Any], t: Tables) -> Evaluation:
        raise NotImplementedError

    def describe(self, params: dict[str, Any]) -> str:
        """The criterion in words, from its parameters."""
        raise NotImplementedError

    def fields(self, params: dict[str, Any]) -> list[str]:
        """Session fields the criterion reads."""
        out = list(params.get("fields", []))
        out += [params[k] for k in ("field", "other") if k in params]
        out += [c["field"] for c in params.get("conditions", [])]
        return out


class Range(Rule):
    name = "range"
    params = (Param("field", "numeric_field"), Param("min", "number", False),
              Param("max", "number", False))
    chart = "distribution"
    topic = "Treatment settings"
    summary = "field within min..max (either may be left out)"

    def check(self, p: dict[str, Any]) -> str | None:
        return check_range(p.get("min"), p.get("max"))

    def evaluate(self, p: dict[str, Any], t: Tables) -> Evaluation:
        return eval_range(_num(t.sessions, p["field"]), p.get("min"), p.get("max"), p["field"])

    def describe(self, p: dict[str, Any]) -> str:
        return (f"{schema.label(p['field'])} "
                f"{range_text(p.get('min'), p.get('max'), unit_of(p['field']))}")


class AtLeastField(Rule):
    name = "at_least_field"
    params = (Param("field", "numeric_field"), Param("other", "numeric_field"))
    chart = "pair"
    topic = "Treatment settings"
    summary = "field ≥ other field (e.g. final energy ≥ start energy)"

    def check(self, p: dict[str, Any]) -> str | None:
        return "field and other must differ" if p["field"] == p["other"] else None

    def evaluate(self, p: dict[str, Any], t: Tables) -> Evaluation:
        a, b = _num(t.sessions, p["field"]), _num(t.sessions, p["other"])
        missing = np.isnan(a) | np.isnan(b)
        low = ~missing & (a < b)
        code = np.where(missing, MISS, np.where(low, DEV, OK)).astype(np.int8)
        fa, fb = p["field"], p["other"]
        why, texts = reasons([np.isnan(a), np.isnan(b), low],
                             [f"{fa} not documented", f"{fb} not documented",
                              f"{fa} below {fb}"])
        return Evaluation(code, why, texts, a)

    def describe(self, p: dict[str, Any]) -> str:
        return f"{schema.label(p['field'])} at least {schema.label(p['other']).lower()}"


class RequiredTrue(Rule):
    name = "required_true"
    params = (Param("fields", "bool_fields"),)
    chart = "items"
    topic = "Checklists"
    summary = "every listed yes/no field is yes"
    #: the answer every listed field must have, and how the criterion says it
    want: ClassVar[bool] = True
    words: ClassVar[str] = "yes"

    def evaluate(self, p: dict[str, Any], t: Tables) -> Evaluation:
        return eval_flags(t.sessions, list(p["fields"]), self.want)

    def describe(self, p: dict[str, Any]) -> str:
        return f"{self.words}: " + "; ".join(schema.label(f) for f in p["fields"])


class RequiredFalse(RequiredTrue):
    name = "required_false"
    topic = "Screening"
    summary = "every listed yes/no field is no (e.g. contraindications)"
    want = False
    words = "none present"


class AllOf(Rule):
    name = "all_of"
    params = (Param("conditions", "conditions"),)
    chart = "conditions"
    topic = "Treatment settings"
    summary = "every condition holds: { field, min, max } or { field, equals }"

    def check(self, p: dict[str, Any]) -> str | None:
        return None

    def evaluate(self, p: dict[str, Any], t: Tables) -> Evaluation:
        return combine_all([eval_condition(t.sessions, c) for c in p["conditions"]])

    def describe(self, p: dict[str, Any]) -> str:
        return " and ".join(condition_text(c) for c in p["conditions"])


def condition_text(c: dict[str, Any]) -> str:
    """One condition in words: 'Test spot done: yes', 'Wait after the test spot 5–10 min'."""
    if "equals" in c:
        return f"{schema.label(c['field'])}: {'yes' if c['equals'] else 'no'}"
    return f"{schema.label(c['field'])} {range_text(c.get('min'), c.get('max'), unit_of(c['field']))}"


class IntervalDays(Rule):
    name = "interval_days"
    params = (Param("min", "days"), Param("max", "days"))
    levels = frozenset({"session"})
    chart = "intervals"
    topic = "Schedule"
    summary = "days since the previous session of the course within min..max"

    def evaluate(self, p: dict[str, Any], t: Tables) -> Evaluation:
        v = _num(t.sessions, "days_since_previous")
        ev = eval_range(v, p["min"], p["max"], "days_since_previous")
        ev.clear(np.isnan(v), NA)  # a course's first session has no interval
        rng = range_text(p["min"], p["max"], "days")
        dev = ev.code == DEV
        ev.explain(dev & (v < p["min"]), f"interval shorter than {rng}")
        ev.explain(dev & ~(v < p["min"]), f"interval longer than {rng}")
        return ev

    def describe(self, p: dict[str, Any]) -> str:
        return f"{range_text(p['min'], p['max'], 'days')} since the previous session of the course"

    def fields(self, p: dict[str, Any]) -> list[str]:
        return ["session_date"]


class SessionsPerCourse(Rule):
    name = "sessions_per_course"
    params = (Param("min", "count"), Param("max", "count"))
    levels = frozenset({"course"})
    chart = "course_sizes"
    topic = "Schedule"
    unit = "course"
    summary = "completed courses have min..max sessions (level = \"course\")"

    def evaluate(self, p: dict[str, Any], t: Tables) -> Evaluation:
        v = t.courses["sessions"].to_numpy(dtype="float64")
        ev = eval_range(v, p["min"], p["max"], "sessions")
        ev.explain((ev.code == DEV) & (v < p["min"]), f"fewer than {p['min']} sessions")
        ev.explain((ev.code == DEV) & (v > p["max"]), f"more than {p['max']} sessions")
        return ev

    def describe(self, p: dict[str, Any]) -> str:
        return f"{range_text(p['min'], p['max'])} sessions in a completed course"

    def fields(self, p: dict[str, Any]) -> list[str]:
        return []


class AssessmentWindow(Rule):
    name = "assessment_window"
    params = (Param("min", "days"), Param("max", "days"))
    levels = frozenset({"course"})
    chart = "assessment"
    topic = "Follow-up"
    unit = "course"
    summary = "an outcome assessment min..max days after the course's last session"

    def evaluate(self, p: dict[str, Any], t: Tables) -> Evaluation:
        return assessment_window(t.courses, t.outcomes, p["min"], p["max"],
                                 t.data_end if t.data_end is not None else t.as_of)

    def describe(self, p: dict[str, Any]) -> str:
        return (f"an outcome assessment {range_text(p['min'], p['max'], 'days')} after the "
                "course's last session")

    def fields(self, p: dict[str, Any]) -> list[str]:
        return []


#: The registry: rule name → rule.
RULES: dict[str, Rule] = {r.name: r for r in (Range(), AtLeastField(), RequiredTrue(),
                                               RequiredFalse(), AllOf(), IntervalDays(),
                                               SessionsPerCourse(), AssessmentWindow())}


def evaluate(rule: Rule, params: dict[str, Any], level: str,
             applies_when: dict[str, Any] | None, t: Tables) -> Evaluation:
    """Verdicts of one criterion for every unit: the rule's own, then what its level and
    `applies_when` leave out (a first-session criterion skips later sessions; a course
    criterion skips courses still running)."""
    if rule.unit == "course":
        if len(t.courses) == 0:
            return Evaluation.empty(0)
        ev = rule.evaluate(params, t)
        ev.clear(~t.courses["completed"].fillna(False).to_numpy(dtype=bool), NA)
        return ev
    ev = rule.evaluate(params, t)
    if level == "first_session":
        ev.clear(t.sessions["session_number"].to_numpy(dtype="int64", na_value=1) > 1, NA)
    if applies_when:
        v = _num(t.sessions, applies_when["field"])
        lo, hi = applies_when.get("min", -np.inf), applies_when.get("max", np.inf)
        ev.clear(~np.isnan(v) & ((v < lo) | (v > hi)), NA)  # unknown: the rule still applies
    return ev


def check_params(rule: Rule, raw: dict[str, Any], ctx: str) -> dict[str, Any]:
    """The rule's parameters from a criterion's table, each type-checked."""
    params: dict[str, Any] = {}
    for p in rule.params:
        if p.name not in raw:
            if p.required:
                raise ProtocolError(f"{ctx} has no {p.name!r} (rule {rule.name!r} needs it)")
            continue
        err = p.check(raw[p.name])
        if err:
            raise ProtocolError(f"{ctx}: {p.name!r} {err}")
        params[p.name] = raw[p.name]
    err = rule.check(params)
    if err:
        raise ProtocolError(f"{ctx}: {err}")
    return params
