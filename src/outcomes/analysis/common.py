"""Names the analysis shares: outcome windows, the groups compared, what counts as no event."""

from __future__ import annotations

WINDOWS = ("baseline", "during", "early", "final", "followup", "unmatched")
#: The protocol lines that decide whether a course "followed the protocol".
FOLLOWED = "followed protocol"
NOT_FOLLOWED = "did not"
GROUPS = (FOLLOWED, NOT_FOLLOWED)
FINAL_SCORE = "final score"
CHANGE = "change from baseline"
#: A standardised mean difference above this reads as imbalance between groups.
SMD_IMBALANCED = 0.1
#: Adverse-event field values that mean "no adverse event" (case-insensitive).
NO_EVENT = ("none", "no", "nein", "keine", "yok", "0", "-")

_OUTCOME_COLUMNS = ["course_id", "window", "days_from_last_session",
                    "days_from_first_session", "is_baseline", "is_final", "unmatched_reason"]
