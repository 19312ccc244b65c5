"""Patient outcomes: 3–6 month results, change from baseline, recurrence, adverse events.

The protocol sheet promises "Time of the final result: 3-6 months after #" and says
"Expect recurrence? yes". This module shows whether patients got that result, how it
held up, what adverse events the sessions carried, and whether courses that followed
the protocol did better.

Flow (every step takes and returns DataFrames, vectorised over rows)::

    windows = attach_windows(audit, outcomes)        # each assessment → course and window
    final = final_summary(windows)                   # per instrument × rater at 3–6 months
    paired, change = change_from_baseline(windows)   # hair density: final − baseline
    groups = compliance_groups(audit)                # followed the key criteria or not
    values = course_outcomes(windows, paired)        # one value per course × measure
    covariates = course_covariates(audit, windows)   # baseline density, age band, skin, clinician
    comparison = compare_groups(values, groups, covariates=covariates)
                                                     # Mann–Whitney / Welch with effect sizes,
                                                     # and OLS adjusted, clustered by patient
    table1 = table_one(audit, groups, windows)       # baseline characteristics by group
    rho, energy = spearman_energy(values, audit)     # energy against outcome
    km, rec = recurrence(audit, windows)             # Kaplan–Meier time to recurrence
    cif, crec = recurrence_cif(audit, windows)       # a new course as competing event
    ae = adverse_events(audit, by="operator")        # rates with Wilson intervals
    outcomes_json(audit, outcomes)                   # the `outcomes` object of audit --json

The small statistics helpers below (median CI, paired t, Welch from summary
statistics, rank-biserial with CI, SMD, Spearman CI, log-rank) each cite the method
they implement; ``tests/test_results.py`` checks them against published values or
scipy on the same data.
"""

from outcomes.analysis.adverse import adverse_events, energy_bands
from outcomes.analysis.baseline import change_from_baseline
from outcomes.analysis.common import (
    CHANGE,
    FINAL_SCORE,
    FOLLOWED,
    GROUPS,
    NO_EVENT,
    NOT_FOLLOWED,
    SMD_IMBALANCED,
    WINDOWS,
)
from outcomes.analysis.final import final_summary
from outcomes.analysis.groups import (
    AGE_BANDS,
    COVARIATES,
    adjusted_difference,
    age_band,
    compare_groups,
    compliance_groups,
    course_covariates,
    course_energy,
    course_outcomes,
    format_comparison,
    format_p,
    format_table_one,
    imbalance_sentence,
    spearman_energy,
    table_one,
)
from outcomes.analysis.methods import (
    logrank_test,
    mann_whitney,
    median_ci,
    paired_t,
    rank_biserial,
    rank_biserial_paired,
    smd_binary,
    smd_categorical,
    smd_continuous,
    spearman_ci,
    welch_t,
    welch_t_from_stats,
    wilcoxon_signed_rank,
)
from outcomes.analysis.recurrence import (
    COMPETING_WHY,
    at_risk_at,
    format_recurrence_cif,
    next_course_days,
    recurrence,
    recurrence_cif,
    recurrence_competing_data,
    recurrence_data,
    recurrence_followup_text,
)
from outcomes.analysis.summary_json import outcomes_json
from outcomes.analysis.windows import attach_windows

__all__ = [
    "AGE_BANDS",
    "CHANGE",
    "COMPETING_WHY",
    "COVARIATES",
    "FINAL_SCORE",
    "FOLLOWED",
    "GROUPS",
    "NOT_FOLLOWED",
    "NO_EVENT",
    "SMD_IMBALANCED",
    "WINDOWS",
    "adjusted_difference",
    "adverse_events",
    "age_band",
    "at_risk_at",
    "attach_windows",
    "change_from_baseline",
    "compare_groups",
    "compliance_groups",
    "course_covariates",
    "course_energy",
    "course_outcomes",
    "energy_bands",
    "final_summary",
    "format_comparison",
    "format_p",
    "format_recurrence_cif",
    "format_table_one",
    "imbalance_sentence",
    "logrank_test",
    "mann_whitney",
    "median_ci",
    "next_course_days",
    "outcomes_json",
    "paired_t",
    "rank_biserial",
    "rank_biserial_paired",
    "recurrence",
    "recurrence_cif",
    "recurrence_competing_data",
    "recurrence_data",
    "recurrence_followup_text",
    "smd_binary",
    "smd_categorical",
    "smd_continuous",
    "spearman_ci",
    "spearman_energy",
    "table_one",
    "welch_t",
    "welch_t_from_stats",
    "wilcoxon_signed_rank",
]
