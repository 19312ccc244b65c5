"""Protocols: files of criteria (`model`), the closed vocabulary of rules (`rules`) and the
verdicts a rule gives (`verdicts`).

Where a criterion's rule is defined, evaluated, described and charted: `rules.RULES`.
"""

from outcomes.errors import ProtocolError
from outcomes.protocol.model import (
    DEFAULT_PROTOCOL,
    Criterion,
    Indicator,
    Protocol,
    available,
    describe,
    load_protocol,
    parse_protocol,
)
from outcomes.protocol.rules import LEVELS, RULES, Rule, Tables
from outcomes.protocol.verdicts import VERDICTS, Evaluation, Verdict

__all__ = ["DEFAULT_PROTOCOL", "LEVELS", "RULES", "VERDICTS", "Criterion", "Evaluation",
           "Indicator", "Protocol", "ProtocolError", "Rule", "Tables", "Verdict", "available",
           "describe", "load_protocol", "parse_protocol"]
