"""The four verdicts a criterion gives a session or course, and one criterion's result.

Compliant, deviation, not documented (a value the rule needs is missing: eligible and
not compliant, counted apart) and not applicable (the criterion does not apply).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Verdict(IntEnum):
    """A verdict, stored as a small number; `label` is how tables and reports say it."""

    NOT_APPLICABLE = 0
    COMPLIANT = 1
    DEVIATION = 2
    NOT_DOCUMENTED = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


#: Labels in the order of the verdict table's categories.
VERDICTS = [Verdict.COMPLIANT.label, Verdict.DEVIATION.label, Verdict.NOT_DOCUMENTED.label,
            Verdict.NOT_APPLICABLE.label]


@dataclass
class Evaluation:
    """One criterion's verdict, reason and observed value per unit (session or course).

    The reason of unit i is `texts[why[i]]` (texts[0] is "", no reason): a handful of
    texts and a small number per unit instead of a million strings.
    """

    code: np.ndarray  # Verdict values, int8
    why: np.ndarray  # index into texts, per unit
    texts: list[str]
    observed: np.ndarray  # float

    @classmethod
    def empty(cls, n: int, code: Verdict = Verdict.NOT_APPLICABLE) -> Evaluation:
        return cls(np.full(n, code, np.int8), np.zeros(n, np.int16), [""], np.full(n, np.nan))

    @property
    def reason(self) -> np.ndarray:
        """The reason of each unit as text ("" where compliant or not applicable)."""
        return np.asarray(self.texts, dtype=object)[self.why]

    def clear(self, mask: np.ndarray, code: Verdict | None = None) -> None:
        """Set the units in mask to `code` (if given) with no reason."""
        if code is not None:
            self.code[mask] = code
        self.why[mask] = 0

    def explain(self, mask: np.ndarray, text: str) -> None:
        """Give the units in mask this reason."""
        if mask.any():
            self.texts.append(text)
            self.why[mask] = len(self.texts) - 1


def reasons(conditions: list[np.ndarray], texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """np.select over reason texts, as numbers: the first condition that holds, else ""."""
    n = len(conditions[0]) if conditions else 0
    why = np.zeros(n, dtype=np.int16)
    for k in range(len(conditions) - 1, -1, -1):  # the first true condition wins
        why[conditions[k]] = k + 1
    return why, ["", *texts]
