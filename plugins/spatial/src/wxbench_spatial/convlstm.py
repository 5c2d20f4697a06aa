"""ConvLSTM family: recurrent over the 12 input steps, convolutional in space.

Cell (Shi et al. 2015, without peepholes, as the original design in docs/models.md, Spatial models,
states it): the input ``x`` and the hidden state ``h`` are concatenated and ONE convolution
``W * [x, h] + b`` gives the ``4 * hidden`` gate pre-activations, split in the order i, f, g, o::

    i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
    c' = f * c + i * g
    h' = o * tanh(c')

``convlstm``: ``num_layers`` stacked cells (hidden 64, 2 layers, kernel 3 by default), zero initial
state, run over the 12 history frames; the last layer's last hidden state goes through the head
Conv(hidden -> hidden/2, k3) ReLU Conv(hidden/2 -> 4C, k1) and is reshaped to (B, 4, C, H, W).

``convlstm_seq2seq``: an encoder stack of cells reads the history; its final (h, c) per layer
initialise a decoder stack (its own weights) that rolls out the 4 lead times autoregressively: its
input is the last observed frame, then its own previous prediction; Conv(hidden -> C, k3) maps the
top hidden state to a frame at every step. With ``teacher_forcing_ratio`` r > 0, during training
each decoder step after the first is fed the true previous frame instead of the prediction with
probability r (drawn once per step and batch from a generator seeded by the model's seed, so runs
are reproducible; ``wxbench.nn.TeacherForcing``, shared with ``lstm_seq2seq``); validation and
prediction never use it.

Choices the original design left open (all hyperparameters):

- Head: 3x3 then 1x1 convolution with a ReLU between (the original design: Conv(64->32) -> Conv(32->4C));
  its width ``head_hidden`` defaults to hidden / 2 (None), i.e. the original design's 32 at the defaults.
- Forget-gate bias initialised to 1 (Jozefowicz et al. 2015), the usual LSTM practice that keeps
  the cell state alive early in training; everything else uses PyTorch's default initialisation.
- ``lon_padding="circular"`` (periodic longitude, see ``wxbench.nn``) in every convolution, gates
  included; ``lat_padding="zero"``.
- ``residual=True`` by default for ``convlstm``: the head predicts the increment over the last
  observed frame (forecast = head(h) + history[:, -1]). For ``convlstm_seq2seq`` ``residual=True``
  makes each decoder step predict the increment over its input frame (frame_t = frame_{t-1} +
  Conv(h_t)), the natural autoregressive form. See the README for the measured effect.
- ``teacher_forcing_ratio=0.0`` by default: with only 4 decoder steps, free-running training is
  cheap, trains exactly what is evaluated (no exposure bias), and teacher forcing is left as the
  option the original offered.

Cost: a cell costs (in + hidden) * 4 * hidden * k^2 multiply-adds per grid point and step. At the
defaults (C = 4, hidden 64, 2 layers, 32x64, 12 steps) that is ~11 G multiply-adds (~22 GFLOP)
forward per sample, 0.47 M parameters; a training step of 16 samples takes many seconds on 2 CPU
cores. The ``cpu`` profile therefore uses hidden 8 with one layer and learning rate 5e-3 (and for
``convlstm`` a head of width 32: at hidden 8 the default hidden / 2 = 4 channels starve the 16
outputs), see ``profile_hyperparameters`` and the README for the measured step times and scores:
a ~60x cheaper network of the same form.
"""

from __future__ import annotations

import torch
from torch import nn

from wxbench.nn import GridConv2d, TendencyWrapper, zero_init_
from wxbench.training import TeacherForcedForecaster

from .common import SpatialForecaster


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: the four gates i, f, g, o from one convolution of [x, h]."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3, forget_bias: float = 1.0,
                 **padding: str) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = GridConv2d(in_channels + hidden, 4 * hidden, kernel_size, **padding)
        with torch.no_grad():
            self.conv.bias[hidden:2 * hidden].add_(forget_bias)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        zeros = x.new_zeros(b, self.hidden, h, w)
        return zeros, zeros.clone()

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gates = self.conv(torch.cat([x, h.to(x.dtype)], dim=1))
        a_i, a_f, a_g, a_o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c


class ConvLSTMStack(nn.Module):
    """``num_layers`` cells; layer l > 0 reads layer l - 1's hidden state."""

    def __init__(self, in_channels: int, hidden: int, num_layers: int, kernel_size: int, **padding: str) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            ConvLSTMCell(in_channels if i == 0 else hidden, hidden, kernel_size, **padding) for i in range(num_layers))

    def step(self, x: torch.Tensor, states: list[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        new = []
        for cell, state in zip(self.cells, states):
            x, c = cell(x, state)
            new.append((x, c))
        return x, new

    def run(self, frames: torch.Tensor, states: list | None = None):
        """frames (B, T, C, H, W) -> top hidden state after the last step and all (h, c)."""
        if states is None:
            states = [cell.init_state(frames[:, 0]) for cell in self.cells]
        top = None
        for t in range(frames.shape[1]):
            top, states = self.step(frames[:, t], states)
        return top, states


class ConvLSTMCore(nn.Module):
    def __init__(self, n_channels: int, output_steps: int, hidden: int = 64, num_layers: int = 2,
                 kernel_size: int = 3, head_hidden: int | None = None, **padding: str) -> None:
        super().__init__()
        self.output_steps = output_steps
        self.stack = ConvLSTMStack(n_channels, hidden, num_layers, kernel_size, **padding)
        head_hidden = head_hidden or max(hidden // 2, 1)
        self.head = nn.Sequential(GridConv2d(hidden, head_hidden, 3, **padding), nn.ReLU(inplace=True),
                                  nn.Conv2d(head_hidden, output_steps * n_channels, 1))

    def output_layer(self) -> nn.Module:
        return self.head[-1]

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, _, c, h, w = history.shape
        top, _ = self.stack.run(history)
        return self.head(top).view(b, self.output_steps, c, h, w)


class ConvLSTMSeq2SeqNet(nn.Module):
    def __init__(self, n_channels: int, output_steps: int, hidden: int = 64, num_layers: int = 2,
                 kernel_size: int = 3, residual: bool = True, **padding: str) -> None:
        super().__init__()
        self.output_steps, self.residual = output_steps, bool(residual)
        self.encoder = ConvLSTMStack(n_channels, hidden, num_layers, kernel_size, **padding)
        self.decoder = ConvLSTMStack(n_channels, hidden, num_layers, kernel_size, **padding)
        self.to_frame = GridConv2d(hidden, n_channels, 3, **padding)
        if self.residual:
            zero_init_(self.to_frame)  # the untrained decoder forecasts persistence

    def forward(self, history: torch.Tensor, target: torch.Tensor | None = None,
                teacher_forcing: list[bool] | None = None) -> torch.Tensor:
        """``teacher_forcing[t]``: feed ``target[:, t - 1]`` (instead of the prediction) at step t >= 1."""
        _, states = self.encoder.run(history)
        x = history[:, -1]
        frames = []
        for t in range(self.output_steps):
            if t > 0 and teacher_forcing is not None and teacher_forcing[t]:
                x = target[:, t - 1].to(x.dtype)
            top, states = self.decoder.step(x, states)
            frame = self.to_frame(top)
            if self.residual:
                frame = frame + x
            frames.append(frame)
            x = frame
        return torch.stack(frames, dim=1)

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class ConvLSTM(SpatialForecaster):
    name = "convlstm"
    family = "convlstm"
    hyperparameters = {**SpatialForecaster.common_hyperparameters, "hidden": 64, "num_layers": 2, "kernel_size": 3,
                       "head_hidden": None}
    profile_hyperparameters = {
        "smoke": {"hidden": 4, "num_layers": 1},
        # ~60x fewer FLOPs than the defaults; a recurrent net without normalisation learns slowly at
        # lr 1e-3 in a couple of hundred steps, 5e-3 is what the measurements favoured, and a head
        # of hidden / 2 = 4 channels for 16 outputs was the bottleneck (z500 24 h RMSE 431 -> 338
        # with head_hidden 32, for < 3 % more FLOPs); see the README
        "cpu": {"hidden": 8, "num_layers": 1, "learning_rate": 5e-3, "head_hidden": 32},
    }

    def build(self) -> nn.Module:
        g, hp = self.grid, self.hparams
        core = ConvLSTMCore(g.n_channels, g.output_steps, hp["hidden"], hp["num_layers"], hp["kernel_size"],
                            hp["head_hidden"], **self.padding())
        return TendencyWrapper(core, residual=hp["residual"], output_layer=core.output_layer())


class ConvLSTMSeq2Seq(TeacherForcedForecaster, SpatialForecaster):
    name = "convlstm_seq2seq"
    family = "convlstm"
    hyperparameters = {**SpatialForecaster.common_hyperparameters, "hidden": 64, "num_layers": 2,
                       "kernel_size": 3, "teacher_forcing_ratio": 0.0}
    profile_hyperparameters = {
        "smoke": {"hidden": 4, "num_layers": 1},
        "cpu": {"hidden": 8, "num_layers": 1, "learning_rate": 5e-3},
    }

    def build(self) -> nn.Module:
        g, hp = self.grid, self.hparams
        return ConvLSTMSeq2SeqNet(g.n_channels, g.output_steps, hp["hidden"], hp["num_layers"], hp["kernel_size"],
                                  hp["residual"], **self.padding())
