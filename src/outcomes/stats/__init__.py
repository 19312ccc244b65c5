"""Statistics for the protocol audit and the outcome analysis (public contract).

Every function here is called by other tools, so names, arguments and the
returned columns / keys are fixed (see DESIGN.md, "Statistics"). Each one
implements a published method, cited in its docstring, and is tested against
published or independently computed values in ``tests/test_stats.py``.

Conventions
-----------
* Proportion functions accept scalars or array-likes (numpy arrays, pandas
  Series, including nullable ``Int64`` columns). Scalar inputs give Python
  floats; any array input gives numpy arrays, so a whole summary table can be
  processed in one call.
* A denominator of 0, or a missing count, gives ``nan`` rather than an error:
  "no eligible sessions" is a normal state of an audit, not a bug.
* Impossible input (negative counts, more successes than trials, levels
  outside (0, 1)) raises ``ValueError``.
"""

from outcomes.stats.funnels import funnel_limits, overdispersion
from outcomes.stats.proportions import (
    bh_qvalues,
    design_effect,
    newcombe_diff_ci,
    wilson_ci,
    wilson_ci_clustered,
)
from outcomes.stats.spc import p_chart, runs_analysis
from outcomes.stats.survival import cumulative_incidence, kaplan_meier, km_median

__all__ = [
    "bh_qvalues",
    "cumulative_incidence",
    "design_effect",
    "funnel_limits",
    "kaplan_meier",
    "km_median",
    "newcombe_diff_ci",
    "overdispersion",
    "p_chart",
    "runs_analysis",
    "wilson_ci",
    "wilson_ci_clustered",
]
