"""The reference baselines, shipped with the core: every leaderboard has them, and every headline
score is normalised by one of them.

- ``persistence``: the last observed state, repeated for every lead time.
- ``climatology``: the benchmark's climatology at each forecast's valid time
  (:mod:`wxbench.data.climatology`): on wb1/wb2 data the day-of-year x hour-of-day climatology of
  the training years (WeatherBench 2's climatology forecast), or a user-given WB2 climatology store;
  on the embedded Held-Suarez data, which has no seasonal or diurnal cycle, the training-split time
  mean at every grid point (WeatherBench 1's "climatology").

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
    import numpy as np
    import torch

    from .data.climatology import Climatology as ClimatologyTable
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
    needs_init_times = True  # the forecast depends on the valid times' day of year and hour

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.climatology: ClimatologyTable | None = None  # normalised units

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        from .data.climatology import Climatology as ClimatologyTable

        start = time.perf_counter()
        benchmark_clim = train.climatology  # physical units; None on a split built without one
        if benchmark_clim is None or benchmark_clim.kind == "invariant":
            # the time mean of the normalised training split itself, as before calendars existed: keeps the
            # embedded data's scores bit for bit (normalising the physical mean would round differently)
            self.climatology = ClimatologyTable.time_mean(train.fields, self.grid.channels,
                                                          origin="the normalised training split")
            self.weights = "training-split mean"
        else:
            self.climatology = benchmark_clim.normalised(train.normaliser)
            self.weights = f"climatology: {benchmark_clim.describe()}"
        return FitReport(seconds=time.perf_counter() - start, stopped_because="closed form")

    def predict(self, history: torch.Tensor, init_times: np.ndarray | None = None) -> torch.Tensor:
        import numpy as np

        b = history.shape[0]
        lead = self.grid.output_steps
        if self.climatology.kind == "invariant":
            return self.climatology.table(history.device).expand(b, lead, *self.climatology.shape).clone()
        if init_times is None or len(init_times) != b:
            raise ValueError(f"climatology.predict: needs the {b} windows' init_times (datetime64), got "
                             f"{None if init_times is None else len(init_times)}")
        leads = np.array(self.grid.lead_hours, dtype="timedelta64[h]")
        valid = np.asarray(init_times, dtype="datetime64[ns]")[:, None] + leads
        return self.climatology.at(valid, device=history.device).clone()

    def state_dict(self) -> dict[str, Any]:
        # the calendar table is (366, hours, C, H, W) float32: 12 MB per channel at 64x32 and 6 h
        return {"climatology": self.climatology.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from .data.climatology import Climatology as ClimatologyTable

        self.climatology = ClimatologyTable.from_state(state["climatology"])


@hookimpl
def wxbench_register_forecasters(register) -> None:
    register(Persistence)
    register(Climatology)
