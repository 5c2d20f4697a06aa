"""wxbench: a plugin-based benchmark harness for data-driven weather forecasting.

Plugin authors need only this namespace::

    from wxbench import hookimpl, Forecaster, TorchForecaster, Encoder, Budget, FitReport, SplitData, GridSpec
"""

from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl
from .interfaces import Budget, Encoder, FitReport, Forecaster, GridSpec

__version__ = "0.1.0"

__all__ = ["hookimpl", "Budget", "Encoder", "FitReport", "Forecaster", "GridSpec", "SplitData", "TorchForecaster",
           "train_module", "__version__"]


def __getattr__(name: str) -> Any:
    # torch-heavy names load on first use, so `wxbench plugins` and `--help` stay fast
    if name == "SplitData":
        from .data.splits import SplitData

        return SplitData
    if name in ("TorchForecaster", "train_module"):
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module 'wxbench' has no attribute {name!r}")
