"""The reference baselines, shipped with the core: every leaderboard has them, and every headline
score is normalised by one of them.

- ``persistence``: the last observed state, repeated for every lead time.
- ``climatology``: the training-split time mean at every grid point (WeatherBench 1's
  "climatology"; the embedded Held-Suarez data has no seasonal or diurnal cycle, so a
  calendar-dependent mean would only add noise there).

They are registered through the same hook as any plugin's models (the registry loads this module
as the built-in plugin ``wxbench``), so they are listed by ``wxbench plugins`` and run by
``wxbench run --all`` like every other model. Their scores are also computed beside every run and
stored in its result (``reference_scores``), so a model run on its own gets the same headline score
as in the full table. This module imports no torch at import time: ``wxbench plugins`` stays fast.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .hookspecs import hookimpl
from .interfaces import Budget, FitReport, Forecaster

if TYPE_CHECKING:
    import torch

    from .data.splits import SplitData

#: the reference the headline score divides by, and the one a scorecard compares with by default
HEADLINE_REFERENCE = "climatology"
REFERENCE_MODELS = ("climatology", "persistence")


class Persistence(Forecaster):
    name = "persistence"
    family = "baseline"

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        self.weights = "none (no parameters)"
        return FitReport(seconds=0.0, stopped_because="nothing to train")

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        last = history[:, -1:]
        return last.expand(-1, self.grid.output_steps, -1, -1, -1).clone()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Climatology(Forecaster):
    name = "climatology"
    family = "baseline"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mean: torch.Tensor | None = None

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        self.mean = train.fields.double().mean(dim=0).float()  # (C, H, W), normalised units
        self.weights = "training-split mean"
        return FitReport(seconds=time.perf_counter() - start, stopped_because="closed form")

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        b = history.shape[0]
        return self.mean.to(history.device).expand(b, self.grid.output_steps, -1, -1, -1).clone()

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state["mean"]


@hookimpl
def wxbench_register_forecasters(register) -> None:
    register(Persistence)
    register(Climatology)
