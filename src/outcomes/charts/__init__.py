"""Charts: functions that take canonical or audit tables and return a matplotlib Figure."""

from outcomes.charts.style import MEANING, PALETTE, new_figure, target_band, target_line

__all__ = ["MEANING", "PALETTE", "new_figure", "target_band", "target_line"]
