"""What each score in a result means for a reader: its label and which direction is better.

Kept apart from :mod:`wxbench.metrics` (which computes the scores, with torch) so that leaderboards
and plots can read it without importing torch. Every metric :class:`~wxbench.metrics.ScoreAccumulator`
returns has an entry (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: lower, higher, closest to a target value (bias: 0; spread/skill: 1), or no direction (spread alone)
Better = Literal["lower", "higher", "zero", "one", "none"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    better: Better
    #: in the variable's physical units (True) or dimensionless (False)
    physical_units: bool = True

    @property
    def arrow(self) -> str:
        """The marker a table header carries: ↓ lower is better, ↑ higher, → 0 / → 1 a target value."""
        return {"lower": "↓", "higher": "↑", "zero": "→ 0", "one": "→ 1", "none": ""}[self.better]

    def rank_key(self, value: float) -> float:
        """A number that sorts best first (ascending)."""
        if self.better == "none":
            raise ValueError(f"{self.name} has no better direction; it cannot rank models")
        return {"lower": value, "higher": -value, "zero": abs(value), "one": abs(value - 1.0)}[self.better]


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("rmse", "RMSE", "lower"),
    MetricInfo("mae", "MAE", "lower"),
    MetricInfo("bias", "bias", "zero"),
    MetricInfo("acc", "ACC", "higher", physical_units=False),
    MetricInfo("crps", "CRPS (fair)", "lower"),
    MetricInfo("crps_standard", "CRPS (standard)", "lower"),
    MetricInfo("ensemble_mean_rmse", "ensemble-mean RMSE (raw)", "lower"),
    MetricInfo("ensemble_mean_rmse_debiased", "ensemble-mean RMSE (debiased)", "lower"),
    MetricInfo("spread", "spread", "none"),
    # raw: a calibrated M-member ensemble reads sqrt(M / (M + 1)), e.g. 0.94 at M = 8
    MetricInfo("spread_skill", "spread/skill (raw)", "one", physical_units=False),
    MetricInfo("spread_skill_corrected", "spread/skill (×√((M+1)/M))", "one", physical_units=False),
)}
