"""Two example models, the whole plugin contract: a closed-form baseline and a small neural network.

``damped_persistence``: the last state relaxes towards the training mean, per channel.
forecast(k) = mean + r_c^k * (last - mean), k = 1..4 lead steps, with r_c in [0, 1] fitted per
channel by least squares on the training windows (closed form). A one-parameter-per-channel model
that usually beats plain persistence at long leads; it implements ``Forecaster`` directly.

``tendency_cnn``: a three-layer CNN built from ``wxbench.nn``, trained by wxbench's one loop
(``TorchForecaster``). The 12 input states are folded into channels, ``(B, 12, C, H, W) ->
(B, 12*C, H, W)``; three 3x3 ``GridConv2d`` (padded circularly in longitude, so the date line is
no wall, and with zeros in latitude) with ReLUs map them to ``4*C`` channels, the 4 lead times.
``TendencyWrapper`` adds the last observed state, so the network predicts the 6-24 h change; its
output convolution starts at zero, so the untrained model is exactly persistence. The loss is the
latitude-weighted MSE on normalised fields (``wxbench.nn.latitude_weighted_mse``). Defaults:
``hidden`` 32 channels (27,728 parameters for 4 channels); ``smoke``: 8.
"""

from __future__ import annotations

import time

from typing import Any

import torch
from torch import nn

from wxbench import Budget, FitReport, Forecaster, SplitData, TorchForecaster, hookimpl
from wxbench.nn import GridConv2d, TendencyWrapper, latitude_weighted_mse


class DampedPersistence(Forecaster):
    """Damped persistence towards the training mean (closed-form fit); see the module docstring."""

    name = "damped_persistence"
    family = "baseline"
    hyperparameters = {"max_windows": 2048}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mean = torch.zeros(self.grid.n_channels, *self.grid.shape)
        self.rate = torch.ones(self.grid.n_channels)

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        self.mean = train.fields.mean(dim=0)
        history, target = train.windows(train.evenly_spaced(self.hparams["max_windows"]))
        anomaly = (history[:, -1] - self.mean).transpose(0, 1).flatten(1)  # (C, N*H*W)
        future = (target[:, 0] - self.mean).transpose(0, 1).flatten(1)
        # one-step regression of the next anomaly on the last one, per channel
        self.rate = ((anomaly * future).sum(1) / (anomaly * anomaly).sum(1)).clamp(0.0, 1.0)
        self.weights = "closed-form fit on the training split"
        return FitReport(seconds=time.perf_counter() - start, stopped_because="closed form")

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(1, self.grid.output_steps + 1, dtype=history.dtype, device=history.device)
        damping = self.rate.to(history.device)[None, :] ** steps[:, None]  # (4, C)
        mean = self.mean.to(history.device)
        anomaly = history[:, -1] - mean  # (B, C, H, W)
        return mean + damping[None, :, :, None, None] * anomaly[:, None]

    def state_dict(self):
        return {"mean": self.mean, "rate": self.rate}

    def load_state_dict(self, state):
        self.mean, self.rate = state["mean"], state["rate"]

    def describe(self):
        return {"parameters": self.mean.numel() + self.rate.numel()}


class FoldedCNN(nn.Module):
    """(B, T, C, H, W) -> (B, S, C, H, W): time folded into channels, three grid convolutions."""

    def __init__(self, n_channels: int, input_steps: int, output_steps: int, hidden: int,
                 lon_padding: str) -> None:
        super().__init__()
        self.output_steps = output_steps
        padding = {"lon_padding": lon_padding}
        self.layers = nn.Sequential(
            GridConv2d(input_steps * n_channels, hidden, 3, **padding), nn.ReLU(),
            GridConv2d(hidden, hidden, 3, **padding), nn.ReLU(),
            GridConv2d(hidden, output_steps * n_channels, 3, **padding),
        )

    @property
    def output_layer(self) -> nn.Module:
        return self.layers[-1]

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = history.shape
        out = self.layers(history.reshape(b, t * c, h, w))
        return out.view(b, self.output_steps, c, h, w)


class TendencyCNN(TorchForecaster):
    """A small CNN that forecasts the change from the last state; see the module docstring."""

    name = "tendency_cnn"
    family = "cnn"
    normalisation = "zscore"
    # every key is an option (``-H tendency_cnn.hidden=64``); learning_rate and weight_decay are
    # read by TorchForecaster.fit
    hyperparameters = {**TorchForecaster.hyperparameters, "hidden": 32, "lon_padding": "circular",
                       "residual": True}
    profile_hyperparameters = {"smoke": {"hidden": 8}}

    def build(self) -> nn.Module:
        g = self.grid
        core = FoldedCNN(g.n_channels, g.input_steps, g.output_steps, self.hparams["hidden"],
                         self.hparams["lon_padding"])
        return TendencyWrapper(core, residual=self.hparams["residual"], output_layer=core.output_layer)

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # TorchForecaster's default loss, written out: this is where a model changes its objective
        return latitude_weighted_mse(self.module(history), target, self.lat_weights)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "residual": bool(self.hparams["residual"])}


@hookimpl
def wxbench_register_forecasters(register):
    register(DampedPersistence)
    register(TendencyCNN)
