"""The base class of the spatial models: z-scored fields, the shared hyperparameters, the padding options.

The layers come from ``wxbench.nn``: ``GridConv2d`` / ``GridConvTranspose2d`` (grid-aware padding)
and ``TendencyWrapper`` (the residual-to-persistence form).

Padding on the 32 x 64 WeatherBench grid
----------------------------------------
``lon_padding``: ``"circular"`` (default of every convolutional model in this plugin) or ``"zero"``
(what the original design used). ``lat_padding``: ``"zero"`` (default) or ``"replicate"``. Why
longitude is padded periodically and latitude not: see ``wxbench.nn``.

Residual forecasting
--------------------
``residual=True`` makes a direct model predict the increment over the last observed state,
``forecast = network(history) + history[:, -1:]``. The network's parameters are the same; only the
target it has to produce changes (from a full state to a 6-24 h tendency, which is small and smooth in
z-scored units). The network's output layer is then initialised to zero, so that the untrained model
is exactly persistence (the usual zero-init of a residual branch). Which default each model uses, and
why, is in its own module docstring.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from wxbench import TorchForecaster
from wxbench.nn import check_padding


class SpatialForecaster(TorchForecaster):
    """Base of this plugin's forecasters: z-score inputs, latitude-weighted MSE, the shared loop."""

    normalisation = "zscore"
    probabilistic = False
    #: hyperparameters every model of this plugin has
    common_hyperparameters: ClassVar[Mapping[str, Any]] = {
        "learning_rate": 1e-3, "weight_decay": 1e-4, "residual": True,
        "lon_padding": "circular", "lat_padding": "zero",
    }

    @property
    def n_channels(self) -> int:
        return self.grid.n_channels

    def padding(self) -> dict[str, str]:
        """The ``lon_padding`` / ``lat_padding`` keywords of this model's grid convolutions."""
        lon, lat = self.hparams["lon_padding"], self.hparams["lat_padding"]
        check_padding(lon, lat, model=self.name)
        return {"lon_padding": lon, "lat_padding": lat}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["residual"] = bool(self.hparams.get("residual", False))
        return info
