"""Building blocks shared by the spatial models: grid-aware padding and the residual wrapper.

Padding on the 32 x 64 WeatherBench grid
----------------------------------------
Longitude is periodic: column 63 (354.375 E) neighbours column 0 (0 E). A convolution with zero
padding treats the date line as a wall and sees a spurious edge there; circular padding along the
longitude axis (W) makes every convolution translation-equivariant in longitude, at no extra
parameters and a negligible cost (one pad copy per convolution). Latitude is not periodic (the grid
stops 2.8 deg short of each pole), so the latitude axis (H) is padded with zeros (default) or by
replicating the edge row.

``lon_padding``: ``"circular"`` (default of every model in this plugin) or ``"zero"`` (what the
original design note used). ``lat_padding``: ``"zero"`` (default) or ``"replicate"``.

Residual forecasting
--------------------
``residual=True`` makes a direct model predict the increment over the last observed state,
``forecast = network(history) + history[:, -1:]``. The network's parameters are the same; only the
target it has to produce changes (from a full state to a 6-24 h tendency, which is small and smooth in
z-scored units). The network's output layer is then initialised to zero, so that the untrained model
is exactly persistence (the usual zero-init of a residual branch). Which default each model uses, and why, is in its own module docstring.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from wxbench import TorchForecaster

LON_PADDINGS = ("circular", "zero")
LAT_PADDINGS = ("zero", "replicate")


def check_padding(lon_padding: str, lat_padding: str) -> None:
    from wxbench.errors import ConfigError

    if lon_padding not in LON_PADDINGS:
        raise ConfigError(f"lon_padding must be one of {LON_PADDINGS}, got {lon_padding!r}")
    if lat_padding not in LAT_PADDINGS:
        raise ConfigError(f"lat_padding must be one of {LAT_PADDINGS}, got {lat_padding!r}")


def pad_grid(x: torch.Tensor, pad_h: int, pad_w: int, lon_padding: str, lat_padding: str) -> torch.Tensor:
    """Pad (..., H, W) by ``pad_w`` columns on each side in longitude and ``pad_h`` rows in latitude."""
    if pad_w:
        x = F.pad(x, (pad_w, pad_w, 0, 0), mode="circular" if lon_padding == "circular" else "constant")
    if pad_h:
        x = F.pad(x, (0, 0, pad_h, pad_h), mode="replicate" if lat_padding == "replicate" else "constant")
    return x


class GridConv2d(nn.Conv2d):
    """``nn.Conv2d`` with 'same'-style padding (kernel // 2) that is circular in longitude on request.

    The weights and parameter count are exactly those of ``nn.Conv2d(cin, cout, k, stride, k // 2)``;
    with ``lon_padding="zero"`` and ``lat_padding="zero"`` it *is* that convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int = 1, *, lon_padding: str = "circular", lat_padding: str = "zero",
                 bias: bool = True) -> None:
        check_padding(lon_padding, lat_padding)
        k = _pair(kernel_size)
        self.grid_pad = (k[0] // 2, k[1] // 2)
        self.manual_pad = not (lon_padding == "zero" and lat_padding == "zero")
        super().__init__(in_channels, out_channels, k, stride,
                         padding=0 if self.manual_pad else self.grid_pad, bias=bias)
        self.lon_padding, self.lat_padding = lon_padding, lat_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.manual_pad:
            x = pad_grid(x, *self.grid_pad, self.lon_padding, self.lat_padding)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", lon_padding={self.lon_padding}, lat_padding={self.lat_padding}"


class GridConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d(cin, cout, k, stride, padding)`` whose implicit padding wraps in longitude.

    A transposed convolution with padding ``p`` is equivalent to running it with padding 0 on an
    input extended by ``q`` rows/columns on each side and cropping ``p + stride * q`` outputs at the
    start. Extending the input circularly in longitude (and with zeros or edge rows in latitude)
    therefore gives the periodic version with identical weights. ``q`` is the smallest extension
    that supplies every wrapped-around contribution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 4, stride: int = 2,
                 padding: int = 1, *, lon_padding: str = "circular", lat_padding: str = "zero",
                 bias: bool = True) -> None:
        check_padding(lon_padding, lat_padding)
        self.manual_pad = not (lon_padding == "zero" and lat_padding == "zero")
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding=0 if self.manual_pad else padding, bias=bias)
        k, s, p = self.kernel_size[0], self.stride[0], padding
        self.grid_q = max((k - 1 - p) // s, 0)
        self.grid_crop = p + s * self.grid_q
        self.lon_padding, self.lat_padding = lon_padding, lat_padding
        self._p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.manual_pad:
            return super().forward(x)
        h, w = x.shape[-2:]
        q = self.grid_q
        y = super().forward(pad_grid(x, q, q, self.lon_padding, self.lat_padding))
        # the output size the padded-p transposed convolution would give
        s, k, p = self.stride[0], self.kernel_size[0], self._p
        out_h, out_w = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
        c = self.grid_crop
        return y[..., c:c + out_h, c:c + out_w]


def zero_init_(layer: nn.Module) -> nn.Module:
    """Zero the weight and bias of an output layer (residual models start exactly at persistence)."""
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


class DirectForecastNet(nn.Module):
    """Wraps a core network (B, 12, C, H, W) -> (B, 4, C, H, W), optionally adding the last state.

    With ``residual`` the core's ``output_layer()`` is zero-initialised, so that the untrained
    network forecasts persistence and training starts from there instead of from random noise of
    order one added to it.
    """

    def __init__(self, core: nn.Module, residual: bool) -> None:
        super().__init__()
        self.core = core
        self.residual = bool(residual)
        if self.residual:
            zero_init_(core.output_layer())

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        out = self.core(history)
        if self.residual:
            out = out + history[:, -1:]
        return out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


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
        return {"lon_padding": self.hparams["lon_padding"], "lat_padding": self.hparams["lat_padding"]}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["residual"] = bool(self.hparams.get("residual", False))
        return info
