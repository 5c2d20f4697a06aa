"""Layers for neural forecasters on the wxbench grid, shared by the bundled plugins and open to any other.

A plugin's ``TorchForecaster.build()`` composes these with plain ``torch.nn``::

    from wxbench.nn import GridConv2d, TendencyWrapper

    class FoldedCNN(nn.Module):  # (B, 12, C, H, W) -> (B, 4, C, H, W), time folded into channels
        def __init__(self, c: int) -> None:
            super().__init__()
            self.layers = nn.Sequential(GridConv2d(12 * c, 32, 3), nn.ReLU(), GridConv2d(32, 4 * c, 3))

        def forward(self, history):
            b, t, c, h, w = history.shape
            return self.layers(history.reshape(b, t * c, h, w)).view(b, 4, c, h, w)

    core = FoldedCNN(grid.n_channels)
    module = TendencyWrapper(core, output_layer=core.layers[-1])  # the untrained module is persistence

Grid-aware padding and convolution
----------------------------------
Tensors are laid out (..., H, W): latitudes ascending along H, longitudes along W (see
``wxbench.interfaces``). Longitude is periodic, so a convolution that zero-pads W sees a wall at the
date line; padding W circularly (``lon_padding="circular"``) makes it translation-equivariant in
longitude at no extra parameters. Latitude is not periodic (the 32 x 64 grid stops 2.8 deg short of
each pole), so H is padded with zeros (``lat_padding="zero"``) or by repeating the edge row
(``"replicate"``). ``lon_padding="zero"`` with ``lat_padding="zero"`` is PyTorch's own zero padding.

The tendency (residual-to-persistence) wrapper
----------------------------------------------
:class:`TendencyWrapper` turns a network that maps a history (B, T, C, H, W) to (B, S, C, H, W) into
one that predicts the change from the last input state: ``forecast = core(history) + history[:, -1:]``.
Its ``output_layer`` is zero-initialised, so the untrained model is exactly persistence and training
starts from a strong forecast rather than from noise added to it.

Loss and teacher forcing
------------------------
:func:`latitude_weighted_mse` is the training analogue of the latitude-weighted RMSE the harness scores
(weights from ``wxbench.metrics.latitude_weights``; ``TorchForecaster`` keeps them as ``lat_weights``).
:class:`TeacherForcing` draws, for an autoregressive decoder, which training steps are fed the true
previous frame (the ``teacher_forcing_ratio`` hyperparameter) from its own seeded generator.

The formulas these layers serve are in docs/protocol.md; how a plugin uses them, in
docs/writing-a-plugin.md.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from .errors import ConfigError

__all__ = ["LAT_PADDINGS", "LON_PADDINGS", "GridConv2d", "GridConvTranspose2d", "TeacherForcing",
           "TendencyWrapper", "check_padding", "latitude_weighted_mse", "pad_grid", "zero_init_"]

#: values of ``lon_padding``: periodic in longitude, or zeros beyond the first and last column
LON_PADDINGS = ("circular", "zero")
#: values of ``lat_padding``: zeros beyond the edge rows, or the edge rows repeated
LAT_PADDINGS = ("zero", "replicate")


def check_padding(lon_padding: str, lat_padding: str = "zero", *, model: str | None = None) -> None:
    """Raise ``ConfigError`` naming the option (and ``model``, if given) for an unknown padding value."""
    where = f"{model}: " if model else ""
    if lon_padding not in LON_PADDINGS:
        raise ConfigError(f"{where}lon_padding must be one of {LON_PADDINGS}, got {lon_padding!r}")
    if lat_padding not in LAT_PADDINGS:
        raise ConfigError(f"{where}lat_padding must be one of {LAT_PADDINGS}, got {lat_padding!r}")


def pad_grid(x: torch.Tensor, pad_lat: int, pad_lon: int, lon_padding: str = "circular",
             lat_padding: str = "zero") -> torch.Tensor:
    """Pad (N, C, H, W) by ``pad_lon`` columns on each side of W and ``pad_lat`` rows on each side of H."""
    check_padding(lon_padding, lat_padding)
    if pad_lon:
        x = F.pad(x, (pad_lon, pad_lon, 0, 0), mode="circular" if lon_padding == "circular" else "constant")
    if pad_lat:
        x = F.pad(x, (0, 0, pad_lat, pad_lat), mode="replicate" if lat_padding == "replicate" else "constant")
    return x


class GridConv2d(nn.Conv2d):
    """``nn.Conv2d`` with 'same' padding (``kernel_size // 2``), circular in longitude by default.

    The weights, their initialisation and the parameter count are exactly those of
    ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)``; with
    ``lon_padding="zero"`` and ``lat_padding="zero"`` it *is* that convolution. With circular
    longitude padding and stride 1 it commutes with ``torch.roll`` along W.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, *, lon_padding: str = "circular", lat_padding: str = "zero",
                 bias: bool = True) -> None:
        check_padding(lon_padding, lat_padding)
        k = _pair(kernel_size)
        self.grid_pad = (k[0] // 2, k[1] // 2)
        # PyTorch's built-in padding is zero padding; anything else is padded by hand in forward
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
    """``nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding)`` whose implicit
    padding wraps in longitude (by default).

    A transposed convolution with padding ``p`` equals one with padding 0 on an input extended by
    ``q`` rows/columns on each side, cropped by ``p + stride * q`` outputs at the start. Extending
    the input circularly in longitude (and with zeros or edge rows in latitude) therefore gives the
    periodic version with identical weights; ``q`` is the smallest extension that supplies every
    wrapped-around contribution. Square kernels and strides only.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 4, stride: int = 2,
                 padding: int = 1, *, lon_padding: str = "circular", lat_padding: str = "zero",
                 bias: bool = True) -> None:
        check_padding(lon_padding, lat_padding)
        self.manual_pad = not (lon_padding == "zero" and lat_padding == "zero")
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding=0 if self.manual_pad else padding, bias=bias)
        k, s = self.kernel_size[0], self.stride[0]
        self.grid_padding = padding
        self.grid_extension = max((k - 1 - padding) // s, 0)
        self.grid_crop = padding + s * self.grid_extension
        self.lon_padding, self.lat_padding = lon_padding, lat_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.manual_pad:
            return super().forward(x)
        h, w = x.shape[-2:]
        q = self.grid_extension
        y = super().forward(pad_grid(x, q, q, self.lon_padding, self.lat_padding))
        # crop to the output size the padded transposed convolution would give
        s, k, p = self.stride[0], self.kernel_size[0], self.grid_padding
        out_h, out_w = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
        c = self.grid_crop
        return y[..., c:c + out_h, c:c + out_w]

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", grid_padding={self.grid_padding}, lon_padding={self.lon_padding}, "
                f"lat_padding={self.lat_padding}")


def zero_init_(layer: nn.Module) -> nn.Module:
    """Zero ``layer.weight`` and ``layer.bias`` (if any) in place; returns ``layer``.

    The usual initialisation of the last layer of a residual branch: the branch starts as the identity.
    """
    with torch.no_grad():
        layer.weight.zero_()
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()
    return layer


class TendencyWrapper(nn.Module):
    """Forecast the change from the last input state: ``core(history) + history[:, -1:]``.

    ``core`` maps a history (B, T, C, H, W) to a forecast (B, S, C, H, W); the last state is added
    to every lead time. ``output_layer`` (a submodule of ``core`` that produces its output, e.g. the
    final convolution) is zero-initialised, so that the untrained wrapper forecasts exactly
    persistence. With ``residual=False`` the wrapper is a pass-through and ``output_layer`` is left
    as initialised: a model can then keep one module layout (and ``state_dict`` keys) for both values
    of its ``residual`` hyperparameter.
    """

    def __init__(self, core: nn.Module, *, residual: bool = True, output_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.core = core
        self.residual = bool(residual)
        if self.residual and output_layer is not None:
            zero_init_(output_layer)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        out = self.core(history)
        if self.residual:
            out = out + history[:, -1:]
        return out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


def latitude_weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error weighted by latitude: ``mean((prediction - target)^2 * weights[h])``.

    ``prediction`` and ``target`` are (..., H, W); ``weights`` (H,) are the normalised cosine-latitude
    weights of ``wxbench.metrics.latitude_weights`` (mean 1), broadcast over W. Computed in float32.
    """
    return ((prediction.float() - target.float()) ** 2 * weights[:, None]).mean()


class TeacherForcing:
    """Which decoder steps of a training batch are fed the true previous frame (teacher forcing).

    ``ratio`` is the ``teacher_forcing_ratio`` hyperparameter, the probability that a decoder step
    after the first is fed the truth instead of the model's own prediction. The draws come from a
    generator seeded with ``seed`` (one uniform draw per decoder step and batch), not from torch's
    global one, so the model's other randomness and its reproducibility are unaffected. ``model``
    names the model in the error for a bad ratio.
    """

    def __init__(self, ratio: Any, seed: int, *, model: str) -> None:
        try:
            self.ratio = float(ratio)
        except (TypeError, ValueError):
            raise ConfigError(f"{model}: teacher_forcing_ratio must be a number in [0, 1], got {ratio!r}") from None
        if not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"{model}: teacher_forcing_ratio must be in [0, 1], got {ratio!r}")
        self.generator = torch.Generator().manual_seed(seed)

    def schedule(self, steps: int, training: bool) -> list[bool] | None:
        """``steps`` booleans (entry t: feed the truth at step t; entry 0 is drawn but unused), or
        None when nothing is teacher-forced: outside training, or with ratio 0 (nothing is drawn)."""
        if not training or self.ratio <= 0.0:
            return None
        draws = torch.rand(steps, generator=self.generator)
        return [bool(d < self.ratio) for d in draws]

    def get_state(self) -> torch.Tensor:
        """The generator's state, for a forecaster's ``state_dict``."""
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
