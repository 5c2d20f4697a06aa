"""CNN family: time folded into channels, ``(B, 12, C, H, W) -> (B, 12*C, H, W) -> (B, 4*C, H, W)``.

``cnn`` (the original design, exactly: docs/models.md, Spatial models; widths as multiples of
``hidden`` = 64 by default)::

    encoder  Conv(12C -> h,  k3) BN ReLU        32x64
             Conv(h   -> 2h, k3) BN ReLU        32x64
             Conv(2h  -> 2h, k3, stride 2) BN ReLU   -> 16x32
             Conv(2h  -> 4h, k3) BN ReLU        16x32
    decoder  ConvTranspose(4h -> 2h, k4, s2, p1) BN ReLU  -> 32x64
             Conv(2h -> h, k3) BN ReLU
             Conv(h  -> 4C, k3)                 -> reshape (B, 4, C, H, W)

``deep_cnn``: the original design gives only "input projection -> ``n_residual_blocks`` residual blocks
(default 3) -> output projection". Chosen: input projection Conv(12C -> h, k3) BN ReLU; each block
Conv(h -> h, k3) BN ReLU Conv(h -> h, k3) BN, added to its input, ReLU (the ResNet basic block);
output projection Conv(h -> 4C, k1). Full resolution throughout, ``hidden`` = 64 (the CNN's width).
Receptive field 3 + 4 * n_blocks grid points (15 = 84 deg of longitude at the defaults).

Choices the original design left open (all hyperparameters):

- ``lon_padding="circular"`` by default: longitude is periodic and WeatherBench's own CNN baseline
  used periodic padding; with zero padding the date line is an artificial wall, and at 32x64 the
  12 boundary columns (of 64) that a 3-layer stack of 3x3 kernels sees are a large fraction of the
  globe. Circular padding also applies to the stride-2 convolution and to the transposed convolution
  (see ``wxbench.nn.GridConvTranspose2d``), so the whole network is equivariant under a rotation of the
  globe by an even number of grid columns (tested). ``lon_padding="zero"`` restores the original.
  Latitude is zero-padded (``lat_padding``; ``"replicate"`` is the alternative).
- ``residual=True`` by default: the network predicts the 6-24 h increment over the last observed
  state. Persistence is a strong forecast at these leads; predicting the increment means an
  untrained network starts at persistence instead of at zero (climatology) and short trainings
  spend their steps on the dynamics. Measured on the embedded data (``cpu`` profile), see the plugin
  README. ``residual=False`` is the original formulation.
- BatchNorm as written in the original design (batch statistics in training, running statistics at
  evaluation).

Cost at the defaults (C = 4, 32x64): ``cnn`` 1.15 M parameters, ~1.7 GFLOP per sample forward;
``deep_cnn`` 0.25 M parameters, ~1.0 GFLOP per sample forward (full-resolution 64-channel blocks).
The ``cpu`` profile uses ``hidden`` 16 (16x fewer FLOPs; 79 k and 21 k parameters) and learning
rate 3e-3 so that the
50 s budget allows one to two hundred optimiser steps on 2 cores; see ``profile_hyperparameters``
and the README for the measured step times and scores.
"""

from __future__ import annotations

import torch
from torch import nn

from wxbench.nn import GridConv2d, GridConvTranspose2d, TendencyWrapper

from .common import SpatialForecaster


def conv_bn_relu(cin: int, cout: int, stride: int = 1, **padding: str) -> nn.Sequential:
    return nn.Sequential(GridConv2d(cin, cout, 3, stride, **padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CNNCore(nn.Module):
    """The original design's encoder/decoder CNN on (B, 12, C, H, W), time folded into channels."""

    def __init__(self, n_channels: int, input_steps: int, output_steps: int, hidden: int = 64,
                 **padding: str) -> None:
        super().__init__()
        self.n_channels, self.output_steps = n_channels, output_steps
        h = hidden
        self.encoder = nn.Sequential(
            conv_bn_relu(input_steps * n_channels, h, **padding),
            conv_bn_relu(h, 2 * h, **padding),
            conv_bn_relu(2 * h, 2 * h, stride=2, **padding),
            conv_bn_relu(2 * h, 4 * h, **padding),
        )
        self.decoder = nn.Sequential(
            GridConvTranspose2d(4 * h, 2 * h, 4, 2, 1, **padding), nn.BatchNorm2d(2 * h), nn.ReLU(inplace=True),
            conv_bn_relu(2 * h, h, **padding),
            GridConv2d(h, output_steps * n_channels, 3, **padding),
        )

    def output_layer(self) -> nn.Module:
        return self.decoder[-1]

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, hh, ww = history.shape
        out = self.decoder(self.encoder(history.reshape(b, t * c, hh, ww)))
        return out.view(b, self.output_steps, c, hh, ww)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, **padding: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            GridConv2d(width, width, 3, **padding), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            GridConv2d(width, width, 3, **padding), nn.BatchNorm2d(width),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class DeepCNNCore(nn.Module):
    def __init__(self, n_channels: int, input_steps: int, output_steps: int, hidden: int = 64,
                 n_residual_blocks: int = 3, **padding: str) -> None:
        super().__init__()
        self.output_steps = output_steps
        self.input_projection = conv_bn_relu(input_steps * n_channels, hidden, **padding)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, **padding) for _ in range(n_residual_blocks)])
        self.output_projection = nn.Conv2d(hidden, output_steps * n_channels, 1)

    def output_layer(self) -> nn.Module:
        return self.output_projection

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, hh, ww = history.shape
        x = self.input_projection(history.reshape(b, t * c, hh, ww))
        return self.output_projection(self.blocks(x)).view(b, self.output_steps, c, hh, ww)


class CNN(SpatialForecaster):
    name = "cnn"
    family = "cnn"
    hyperparameters = {**SpatialForecaster.common_hyperparameters, "hidden": 64}
    profile_hyperparameters = {
        "smoke": {"hidden": 4},
        # 16x fewer FLOPs than hidden 64: ~0.3 CPU-seconds per training step of 16 samples, so that
        # the 50 s budget buys one to two hundred steps on 2 idle cores; lr 3e-3 beat 1e-3 there
        # (see the README)
        "cpu": {"hidden": 16, "learning_rate": 3e-3},
    }

    def build(self) -> nn.Module:
        g = self.grid
        core = CNNCore(g.n_channels, g.input_steps, g.output_steps, self.hparams["hidden"], **self.padding())
        return TendencyWrapper(core, residual=self.hparams["residual"], output_layer=core.output_layer())


class DeepCNN(SpatialForecaster):
    name = "deep_cnn"
    family = "cnn"
    hyperparameters = {**SpatialForecaster.common_hyperparameters, "hidden": 64, "n_residual_blocks": 3}
    profile_hyperparameters = {
        "smoke": {"hidden": 4, "n_residual_blocks": 1},
        "cpu": {"hidden": 16, "n_residual_blocks": 3, "learning_rate": 3e-3},
    }

    def build(self) -> nn.Module:
        g = self.grid
        core = DeepCNNCore(g.n_channels, g.input_steps, g.output_steps, self.hparams["hidden"],
                           self.hparams["n_residual_blocks"], **self.padding())
        return TendencyWrapper(core, residual=self.hparams["residual"], output_layer=core.output_layer())
