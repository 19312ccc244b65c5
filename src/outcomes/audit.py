"""Audit sessions and courses against a protocol: verdicts, compliance summaries, flags.

Each criterion gives every eligible session (or course) one verdict: compliant,
deviation, or not documented (a value the rule needs is missing: eligible and not
compliant, counted apart so documentation gaps are seen apart from deviations).
Sessions or courses the criterion does not apply to are `not applicable`.

Everything is vectorised over sessions: a criterion is evaluated on whole columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from outcomes import schema
from outcomes.courses import NOT_RECORDED, assign_courses, course_table
from outcomes.protocol import Criterion, Protocol, describe
from outcomes.stats import newcombe_diff_ci, wilson_ci

VERDICTS = ["compliant", "deviation", "not documented", "not applicable"]
NA, OK, DEV, MISS = 0, 1, 2, 3  # internal verdict codes
CODE_TO_VERDICT = {OK: "compliant", DEV: "deviation", MISS: "not documented",
                   NA: "not applicable"}
STATUS_TEXT = {
    "met": "target met",
    "not met": "target not met",
    "inconclusive": "inconclusive: the interval spans the target",
    "no data": "no eligible records",
}


@dataclass
class Evaluation:
    """One criterion's verdict code, reason and observed value per unit (session or course)."""

    code: np.ndarray
    reason: np.ndarray  # object array of short texts ("" where compliant)
    observed: np.ndarray  # float


def _num(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _bool(df: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, known) arrays of a nullable boolean column."""
    col = df[name].astype("boolean")
    known = col.notna().to_numpy()
    return col.fillna(False).to_numpy(dtype=bool), known


def _unit(name: str) -> str:
    f = schema.fields("sessions").get(name)
    return f" {f.unit}" if f is not None and f.unit else ""


def _range_text(lo: float | None, hi: float | None, unit: str) -> str:
    if lo is not None and hi is not None:
        return f"{lo:g}–{hi:g}{unit}"
    return f"≥ {lo:g}{unit}" if lo is not None else f"≤ {hi:g}{unit}"


def _eval_range(v: np.ndarray, lo: float | None, hi: float | None, name: str) -> Evaluation:
    missing = np.isnan(v)
    below = ~missing & (v < lo) if lo is not None else np.zeros(len(v), bool)
    above = ~missing & (v > hi) if hi is not None else np.zeros(len(v), bool)
    code = np.where(missing, MISS, np.where(below | above, DEV, OK)).astype(np.int8)
    rng = _range_text(lo, hi, _unit(name))
    reason = np.select([missing, below, above],
                       [f"{name} not documented", f"{name} below {rng}",
                        f"{name} above {rng}"], "").astype(object)
    return Evaluation(code, reason, v)


def _eval_flags(df: pd.DataFrame, names: list[str], want: bool) -> Evaluation:
    """All named yes/no fields equal `want`; the first failing one names the reason."""
    n = len(df)
    code = np.full(n, OK, dtype=np.int8)
    reason = np.full(n, "", dtype=object)
    count = np.zeros(n)
    missing_any = np.zeros(n, dtype=bool)
    miss_reason = np.full(n, "", dtype=object)
    failed = np.zeros(n, dtype=bool)
    for name in names:
        val, known = _bool(df, name)
        bad = known & (val != want)
        count += bad if not want else (known & val)
        new_fail = bad & ~failed
        reason[new_fail] = f"{name} present" if not want else f"{name} not done"
        failed |= bad
        new_miss = ~known & ~missing_any
        miss_reason[new_miss] = f"{name} not documented"
        missing_any |= ~known
    code[failed] = DEV
    code[~failed & missing_any] = MISS
    reason[~failed & missing_any] = miss_reason[~failed & missing_any]
    return Evaluation(code, reason, count)


def _eval_condition(df: pd.DataFrame, cond: dict[str, Any]) -> Evaluation:
    name = cond["field"]
    f = schema.fields("sessions")[name]
    if "equals" in cond:
        if f.type == "bool":
            return _eval_flags(df, [name], bool(cond["equals"]))
        col = df[name].astype("string")
        known = col.notna().to_numpy()
        eq = (col == str(cond["equals"])).fillna(False).to_numpy(dtype=bool)
        code = np.where(~known, MISS, np.where(eq, OK, DEV)).astype(np.int8)
        reason = np.select([~known, ~eq], [f"{name} not documented",
                                           f"{name} is not {cond['equals']}"], "").astype(object)
        return Evaluation(code, reason, np.full(len(df), np.nan))
    return _eval_range(_num(df, name), cond.get("min"), cond.get("max"), name)


def _combine_all(parts: list[Evaluation]) -> Evaluation:
    """All conditions must hold: the first deviation wins, then the first gap."""
    n = len(parts[0].code)
    code = np.full(n, OK, dtype=np.int8)
    reason = np.full(n, "", dtype=object)
    for want in (DEV, MISS):
        for p in parts:
            hit = (p.code == want) & (code == OK)
            code[hit] = want
            reason[hit] = p.reason[hit]
    return Evaluation(code, reason, parts[-1].observed)


def evaluate_session_criterion(c: Criterion, s: pd.DataFrame) -> Evaluation:
    """Verdicts of one session-level criterion for every session."""
    p = c.params
    if c.rule == "range":
        ev = _eval_range(_num(s, p["field"]), p.get("min"), p.get("max"), p["field"])
    elif c.rule == "at_least_field":
        a, b = _num(s, p["field"]), _num(s, p["other"])
        missing = np.isnan(a) | np.isnan(b)
        low = ~missing & (a < b)
        code = np.where(missing, MISS, np.where(low, DEV, OK)).astype(np.int8)
        reason = np.select([np.isnan(a), np.isnan(b), low],
                           [f"{p['field']} not documented", f"{p['other']} not documented",
                            f"{p['field']} below {p['other']}"], "").astype(object)
        ev = Evaluation(code, reason, a)
    elif c.rule in ("required_true", "required_false"):
        ev = _eval_flags(s, list(p["fields"]), c.rule == "required_true")
    elif c.rule == "all_of":
        ev = _combine_all([_eval_condition(s, cond) for cond in p["conditions"]])
    elif c.rule == "interval_days":
        v = _num(s, "days_since_previous")
        ev = _eval_range(v, p["min"], p["max"], "days_since_previous")
        first = np.isnan(v)
        ev.code[first] = NA
        ev.reason[first] = ""
        rng = f"{p['min']:g}–{p['max']:g} days"
        ev.reason[ev.code == DEV] = np.where(v[ev.code == DEV] < p["min"],
                                             f"interval shorter than {rng}",
                                             f"interval longer than {rng}")
    else:
        raise ValueError(f"rule {c.rule!r} is not a session rule")
    if c.level == "first_session":
        later = s["session_number"].to_numpy(dtype="int64", na_value=1) > 1
        ev.code[later] = NA
        ev.reason[later] = ""
    if c.applies_when:
        cond = c.applies_when
        v = _num(s, cond["field"])
        lo, hi = cond.get("min", -np.inf), cond.get("max", np.inf)
        outside = ~np.isnan(v) & ((v < lo) | (v > hi))  # unknown: the rule still applies
        ev.code[outside] = NA
        ev.reason[outside] = ""
    return ev


def evaluate_course_criterion(c: Criterion, courses: pd.DataFrame,
                              outcomes: pd.DataFrame | None) -> Evaluation:
    """Verdicts of one course-level criterion for every course (ongoing: not applicable)."""
    p = c.params
    done = courses["completed"].fillna(False).to_numpy(dtype=bool)
    n = len(courses)
    if c.rule == "sessions_per_course":
        v = courses["sessions"].to_numpy(dtype="float64")
        ev = _eval_range(v, p["min"], p["max"], "sessions")
        ev.reason[(ev.code == DEV) & (v < p["min"])] = f"fewer than {p['min']} sessions"
        ev.reason[(ev.code == DEV) & (v > p["max"])] = f"more than {p['max']} sessions"
    elif c.rule == "assessment_window":
        ev = _eval_assessment_window(courses, outcomes, p["min"], p["max"])
    else:
        raise ValueError(f"rule {c.rule!r} is not a course rule")
    ev.code[~done] = NA
    ev.reason[~done] = ""
    if n == 0:
        return Evaluation(np.zeros(0, np.int8), np.zeros(0, object), np.zeros(0))
    return ev


def _eval_assessment_window(courses: pd.DataFrame, outcomes: pd.DataFrame | None, lo: int,
                            hi: int) -> Evaluation:
    """An outcome assessment lo–hi days after the course's last session."""
    n = len(courses)
    if outcomes is None:
        return Evaluation(np.full(n, NA, np.int8), np.full(n, "", object), np.full(n, np.nan))
    a = outcomes[["patient_id", "assessment_date"]].drop_duplicates()
    c = courses[["patient_id", "first_date", "last_date"]].copy()
    c["row"] = np.arange(n)
    # an assessment belongs to the latest course of the patient that ended before it
    m = c.merge(a, on="patient_id", how="inner")
    days = (m["assessment_date"] - m["last_date"]).dt.days
    m = m[days > 0].assign(days=days[days > 0])
    next_start = c.sort_values("first_date").groupby("patient_id")["first_date"].shift(-1)
    c["next_start"] = next_start.reindex(c.index)
    m = m.merge(c[["row", "next_start"]], on="row")
    m = m[m["next_start"].isna() | (m["assessment_date"] < m["next_start"])]
    m["inside"] = m["days"].between(lo, hi)
    m["dist"] = np.where(m["inside"], 0, np.minimum((m["days"] - lo).abs(), (m["days"] - hi).abs()))
    best = m.sort_values(["row", "dist", "days"]).drop_duplicates("row")
    observed = np.full(n, np.nan)
    observed[best["row"].to_numpy()] = best["days"].to_numpy(dtype="float64")
    inside = np.zeros(n, dtype=bool)
    inside[best["row"].to_numpy()] = best["inside"].to_numpy(dtype=bool)
    any_after = ~np.isnan(observed)
    code = np.where(inside, OK, np.where(any_after, DEV, MISS)).astype(np.int8)
    # the window is still open: not yet assessable unless already assessed inside it
    open_window = courses["days_observed_after"].to_numpy(dtype="float64", na_value=0) < hi
    code[open_window & ~inside] = NA
    early = any_after & ~inside & (observed < lo)
    reason = np.select([code == NA, ~any_after, early, any_after & ~inside],
                       ["", "no outcome assessment after the course",
                        f"assessed too early (before {lo} days)",
                        f"assessed too late (after {hi} days)"], "").astype(object)
    return Evaluation(code, reason, observed)


# ---------------------------------------------------------------------------------------------


@dataclass
class Audit:
    """The result of auditing sessions against a protocol."""

    protocol: Protocol
    sessions: pd.DataFrame  # audited sessions, with course columns
    courses: pd.DataFrame
    verdicts: pd.DataFrame  # long: one row per criterion × session (or course)
    excluded: pd.DataFrame  # sessions for other indications, not audited
    has_outcomes: bool
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self, by: str | list[str] | None = None) -> pd.DataFrame:
        """Compliance per criterion (and per group): counts, percent, Wilson 95 % CI, status."""
        return summarise(self.verdicts, self.protocol, by=by)

    def flagged(self) -> pd.DataFrame:
        """Every deviation and documentation gap, with the file and row it came from."""
        return flagged_records(self)

    def indicators(self) -> pd.DataFrame:
        """Advisory lines of the sheet: monitored values without a target."""
        return indicator_table(self)

    def period(self, since: str | None = None, until: str | None = None) -> pd.DataFrame:
        """Verdicts whose session (or course end) date falls in [since, until]."""
        d = self.verdicts["date"]
        mask = pd.Series(True, index=self.verdicts.index)
        if since:
            mask &= d >= pd.Timestamp(since)
        if until:
            mask &= d <= pd.Timestamp(until)
        return self.verdicts[mask]


def run_audit(sessions: pd.DataFrame, protocol: Protocol, outcomes: pd.DataFrame | None = None,
              as_of: pd.Timestamp | None = None) -> Audit:
    """Group sessions into courses and give every criterion its verdicts."""
    ind = sessions["indication"].astype("string")
    in_scope = (ind.isna() | (ind.str.strip().str.lower() == protocol.indication.lower()))
    in_scope = in_scope.to_numpy(dtype=bool)
    excluded = sessions[~in_scope]
    if as_of is None and len(sessions):
        as_of = sessions["session_date"].max()
    s = assign_courses(sessions[in_scope], protocol.new_course_after_days, as_of=as_of)
    courses = course_table(s)
    parts = []
    month = s["session_date"].dt.to_period("M")
    for c in protocol.criteria:
        if c.level == "course":
            ev = evaluate_course_criterion(c, courses, outcomes)
            units = courses
            date = courses["last_date"]
            unit_month = date.dt.to_period("M")
        else:
            ev = evaluate_session_criterion(c, s)
            units = s
            date = s["session_date"]
            unit_month = month
        parts.append(pd.DataFrame({
            "criterion": c.id, "level": c.level, "unit": np.arange(len(units)),
            "code": ev.code, "reason": ev.reason, "observed": ev.observed,
            "operator": units["operator"].to_numpy(), "clinic": units["clinic"].to_numpy(),
            "date": date.to_numpy(), "month": unit_month.to_numpy(),
        }))
    v = pd.concat(parts, ignore_index=True)
    v["criterion"] = pd.Categorical(v["criterion"], categories=[c.id for c in protocol.criteria])
    v["level"] = pd.Categorical(v["level"], categories=["session", "first_session", "course"])
    v["verdict"] = pd.Categorical.from_codes(
        pd.Series(v["code"]).map({OK: 0, DEV: 1, MISS: 2, NA: 3}).to_numpy(), VERDICTS)
    v["reason"] = pd.Categorical(v["reason"])
    for col in ("operator", "clinic"):
        v[col] = v[col].astype("string").fillna(NOT_RECORDED).astype("category")
    info = {"sessions_audited": len(s), "sessions_excluded": len(excluded),
            "courses": len(courses), "courses_completed": int(courses["completed"].sum()),
            "as_of": None if as_of is None else pd.Timestamp(as_of).date().isoformat()}
    return Audit(protocol, s, courses, v.drop(columns="code"), excluded,
                 has_outcomes=outcomes is not None, info=info)


def status_of(compliant: np.ndarray, eligible: np.ndarray, ci_low: np.ndarray,
              ci_high: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Target met, not met, or inconclusive when the interval spans the target.

    A 100 % target (safety items) is met only when every eligible record complies:
    its interval never reaches 100 %, so the interval rule would never say "met".
    """
    full = target >= 100
    met = np.where(full, compliant == eligible, ci_low * 100 >= target)
    not_met = np.where(full, compliant < eligible, ci_high * 100 < target)
    return np.select([eligible == 0, met, not_met], ["no data", "met", "not met"],
                     "inconclusive").astype(object)


def summarise(verdicts: pd.DataFrame, protocol: Protocol,
              by: str | list[str] | None = None) -> pd.DataFrame:
    """Per criterion (× group): eligible, compliant, deviations, missing, percent, CI, status."""
    keys = ["criterion"] + ([by] if isinstance(by, str) else list(by or []))
    counts = (verdicts.groupby(keys, observed=True)["verdict"].value_counts()
              .unstack("verdict", fill_value=0))
    for v in VERDICTS:
        if v not in counts.columns:
            counts[v] = 0
    counts = counts.reset_index()
    counts = counts[counts[["compliant", "deviation", "not documented"]].sum(axis=1) > 0] \
        if by else counts
    out = pd.DataFrame({k: counts[k] for k in keys})
    out["criterion"] = out["criterion"].astype(str)
    titles = {c.id: c.title for c in protocol.criteria}
    targets = {c.id: c.target for c in protocol.criteria}
    out.insert(1, "title", out["criterion"].map(titles))
    out["eligible"] = (counts["compliant"] + counts["deviation"]
                       + counts["not documented"]).to_numpy()
    out["compliant"] = counts["compliant"].to_numpy()
    out["deviations"] = counts["deviation"].to_numpy()
    out["missing"] = counts["not documented"].to_numpy()
    out["not_applicable"] = counts["not applicable"].to_numpy()
    e = out["eligible"].to_numpy(dtype="float64")
    k = out["compliant"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        out["percent"] = np.where(e > 0, 100 * k / np.where(e > 0, e, 1), np.nan)
    lo, hi = wilson_ci(k, e)
    out["ci_low"] = np.asarray(lo, dtype="float64") * 100
    out["ci_high"] = np.asarray(hi, dtype="float64") * 100
    out["target"] = out["criterion"].map(targets).astype("float64")
    out["status"] = status_of(k, e, np.nan_to_num(out["ci_low"].to_numpy() / 100),
                              np.nan_to_num(out["ci_high"].to_numpy() / 100),
                              out["target"].to_numpy())
    return out.reset_index(drop=True)


RECORD_COLUMNS = ["session_id", "course_id", "patient_id", "date", "operator", "clinic",
                  "criterion", "title", "verdict", "reason", "observed", "source_file",
                  "source_row"]


def flagged_records(audit: Audit) -> pd.DataFrame:
    """Deviations and documentation gaps with the session, its source file and row."""
    v = audit.verdicts
    return verdict_records(audit, v[v["verdict"].isin(["deviation", "not documented"])])


def verdict_records(audit: Audit, verdicts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Verdicts with the session (or, for a course, its last session) they are about.

    Each row names the source file and row, so a reviewer can open the record.
    """
    v = audit.verdicts if verdicts is None else verdicts
    s, c = audit.sessions, audit.courses
    titles = {cr.id: cr.title for cr in audit.protocol.criteria}
    is_course = (v["level"] == "course").to_numpy()
    u = v["unit"].to_numpy()
    # a course's record is its last session: the row a reviewer opens
    last_of_course = s.groupby("course_id", sort=False).cumcount(ascending=False).to_numpy() == 0
    last_row = pd.Series(np.flatnonzero(last_of_course),
                         index=s["course_id"].to_numpy()[last_of_course])
    row = u.copy()
    if is_course.any():
        row[is_course] = last_row.reindex(c["course_id"].to_numpy()[u[is_course]]).to_numpy()
    date = s["session_date"].to_numpy()[row]
    if is_course.any():
        date[is_course] = c["last_date"].to_numpy()[u[is_course]]
    out = pd.DataFrame({
        "session_id": s["session_id"].to_numpy()[row],
        "course_id": s["course_id"].to_numpy()[row],
        "patient_id": s["patient_id"].to_numpy()[row],
        "date": date,
        "operator": v["operator"].to_numpy(), "clinic": v["clinic"].to_numpy(),
        "criterion": v["criterion"].to_numpy(),
        "title": v["criterion"].map(titles).to_numpy(),
        "verdict": v["verdict"].to_numpy(), "reason": v["reason"].to_numpy(),
        "observed": v["observed"].to_numpy(),
        "source_file": s["source_file"].to_numpy()[row] if "source_file" in s else None,
        "source_row": s["source_row"].to_numpy()[row] if "source_row" in s else None,
    }, columns=RECORD_COLUMNS)
    return out.sort_values(["date", "session_id"], kind="stable", ignore_index=True)


def indicator_table(audit: Audit) -> pd.DataFrame:
    """Monitored indicators overall: documented n and the indicator's statistic."""
    rows = []
    s = audit.sessions
    for ind in audit.protocol.indicators:
        col = s[ind.field]
        n = int(col.notna().sum())
        row: dict[str, Any] = {"id": ind.id, "title": ind.title, "sheet": ind.sheet,
                               "documented": n, "not_documented": int(col.isna().sum())}
        if ind.statistic == "share_true":
            k = int(col.astype("boolean").sum())
            lo, hi = wilson_ci(k, n)
            row.update(statistic="percent yes", value=100 * k / n if n else np.nan,
                       ci_low=100 * lo, ci_high=100 * hi)
        else:
            x = col.astype("Float64").dropna().astype("float64")
            row.update(statistic=ind.statistic,
                       value=float(x.median() if ind.statistic == "median" else x.mean())
                       if n else np.nan,
                       ci_low=float(x.quantile(0.25)) if n else np.nan,
                       ci_high=float(x.quantile(0.75)) if n else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def compare(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Re-audit: two compliance summaries side by side with the Newcombe 95 % CI of the change.

    `change` says "improved" or "worse" only when the interval excludes zero.
    """
    a = before.set_index("criterion")
    b = after.set_index("criterion")
    ids = [i for i in b.index if i in a.index]
    a, b = a.loc[ids], b.loc[ids]
    lo, hi = newcombe_diff_ci(b["compliant"].to_numpy(), b["eligible"].to_numpy(),
                              a["compliant"].to_numpy(), a["eligible"].to_numpy())
    out = pd.DataFrame({
        "criterion": ids, "title": b["title"].to_numpy(),
        "before_eligible": a["eligible"].to_numpy(), "before_percent": a["percent"].to_numpy(),
        "after_eligible": b["eligible"].to_numpy(), "after_percent": b["percent"].to_numpy(),
        "difference": (b["percent"] - a["percent"]).to_numpy(),
        "diff_ci_low": np.asarray(lo, dtype="float64") * 100,
        "diff_ci_high": np.asarray(hi, dtype="float64") * 100,
        "target": b["target"].to_numpy(),
    })
    out["change"] = np.select([out["diff_ci_low"] > 0, out["diff_ci_high"] < 0],
                              ["improved", "worse"], "no clear change")
    out.loc[out["diff_ci_low"].isna(), "change"] = "no data"
    return out


HOW_TO_READ = (
    "Compliant = the record follows the protocol line; deviation = it does not; not "
    "documented = a value the rule needs is missing (counted against compliance, shown "
    "apart). Percent with a Wilson 95 % interval. Status: met when the whole interval is at "
    "or above the target, not met when it is below, inconclusive when it spans the target; "
    "a 100 % target is met only with no miss.")


def about_rows(audit: Audit, files: pd.DataFrame | None = None) -> list[tuple[str, Any]]:
    """What data and protocol produced an audit: the first sheet of its workbook."""
    from outcomes import __version__

    p = audit.protocol
    rows: list[tuple[str, Any]] = [
        ("What this is", f"Protocol compliance audit: {p.title}"),
        ("Protocol", f"{p.id} version {p.version} ({p.source})"),
        ("Data run to", audit.info.get("as_of")),
        ("Sessions audited", audit.info.get("sessions_audited")),
        ("Sessions not audited", (f"{audit.info.get('sessions_excluded')} (indication other "
                                  f"than {p.indication})")),
        ("Courses", (f"{audit.info.get('courses')} ({audit.info.get('courses_completed')} "
                     "completed)")),
        ("Outcome data", ("yes" if audit.has_outcomes else
                          "none given: final_assessment is not evaluated")),
        ("Software", f"outcomes {__version__}"),
        ("Generated", pd.Timestamp.now().strftime("%Y-%m-%d %H:%M")),
        ("How to read", HOW_TO_READ),
    ]
    if files is not None:
        for f in files.itertuples():
            rows.append((f"Input: {f.table}", (f"{f.file}: {f.rows_read} rows read, "
                                               f"{f.rows_loaded} loaded, {f.rows_rejected} "
                                               f"rejected; SHA-256 {f.sha256}")))
    return rows


def write_audit(audit: Audit, out_dir: str | Path, files: pd.DataFrame | None = None,
                comparison: pd.DataFrame | None = None, csv: bool = True) -> dict[str, Path]:
    """audit.xlsx in out_dir, and (with csv) compliance.csv, verdicts.csv, flagged_sessions.csv.

    The full verdict table goes to CSV only: it can outgrow what Excel opens.
    """
    from outcomes.files import write_atomic
    from outcomes.workbook import write_workbook

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = audit.summary()
    flagged = audit.flagged()
    paths: dict[str, Path] = {}
    if csv:
        paths["compliance"] = write_atomic(out / "compliance.csv",
                                           lambda t: summary.to_csv(t, index=False))
        paths["verdicts"] = write_atomic(out / "verdicts.csv",
                                         lambda t: verdict_records(audit).to_csv(t, index=False))
        paths["flagged_sessions"] = write_atomic(out / "flagged_sessions.csv",
                                                 lambda t: flagged.to_csv(t, index=False))
    sheets = {"Compliance": summary, "By clinician": audit.summary("operator"),
              "By clinic": audit.summary("clinic"),
              "By month": audit.summary("month").assign(month=lambda d: d["month"].astype(str)),
              "Flagged sessions": flagged, "Indicators": audit.indicators(),
              "Protocol": pd.DataFrame(describe(audit.protocol))}
    if comparison is not None:
        sheets = {"Re-audit": comparison, **sheets}
    paths["workbook"] = write_workbook(out / "audit.xlsx", about_rows(audit, files), sheets)
    return paths

