"""Spherical Fourier Neural Operators (Bonev et al. 2023, the model family of FourCastNet v2), built on
torch-harmonics' ``SphericalFourierNeuralOperator`` (``torch_harmonics.examples.models.sfno``).

Models
------
- ``sfno`` (direct): the last ``input_steps`` (default all 12) states are stacked as input channels,
  ``(B, 12, C, H, W) -> (B, 12*C, H, W)``; one SFNO maps them to ``4*C`` channels, reshaped to the 4
  lead times, all predicted at once. With ``residual`` (default) the network predicts the increments
  from the last observed state: ``y_k = x_last + f_k(history)``.
- ``sfno_ar`` (autoregressive): the same network with ``C`` output channels predicts the next 6 h
  state from the last ``input_steps`` states (``x_{t+1} = x_t + f(x_{t-n+1..t})``); the forecast rolls
  out 4 steps, each prediction appended to the input window and the oldest state dropped. Trained on
  one-step targets (``target[:, :1]``) by default; ``rollout_steps > 1`` trains on a short rollout
  (mean loss over the first ``rollout_steps`` lead times, gradients through the rollout). Early
  stopping and best-weights selection use the full 4-step rollout error on validation, i.e. the task
  that is scored. It shows the direct-vs-iterative trade-off WeatherBench (Rasp et al. 2020)
  documented for CNNs: one model for all leads and physically consistent steps vs error accumulation
  through feeding back its own (smoothed) predictions.

Architecture (torch-harmonics' SFNO, "linear" variant): 1x1 conv encoder to ``embed_dim`` channels,
an optional learnable per-latitude position embedding, ``num_layers`` SFNO blocks, 1x1 conv decoder.
A block is ``x -> MLP(ISHT(W_l * SHT(x))) + x`` (spectral convolution with Driscoll-Healy weights, one
complex ``embed_dim x embed_dim`` matrix per degree ``l``, so it is a rotation-equivariant filter on
the sphere; MLP = 1x1 conv, GELU, 1x1 conv with ``mlp_ratio``). The first block's SHT runs on the data
grid and its inverse on an internal Gauss-Legendre grid of ``(H-1)//scale_factor + 1`` by
``W//scale_factor`` points; the last block maps back to the data grid; blocks in between stay on the
internal grid.

What had to be decided (the original design has no spherical models; the issue that added them fixed
the rest; docs/models.md, Spherical models)
------------------------------------------------------------------------------------------------------
- Grid. The data's latitudes are cell centres without poles; no torch-harmonics grid has these nodes
  (``equiangular`` includes the poles, rows up to 2.8 deg off; ``legendre-gauss`` nodes are up to
  1.4 deg off). The data-grid
  transforms are therefore torch-harmonics' ``RealSHT``/``InverseRealSHT`` with Legendre tables
  evaluated at the true latitudes and an exact analysis (weighted least squares with the nodes' Fejer
  quadrature weights); see :mod:`wxbench_spherical.sht` for the measured errors (round trip of a
  band-limited field: 3e-16 vs 1e-1 .. 2e-1 when the rows are fed to the built-in grids). They are
  swapped into the torch-harmonics model after construction (``trans_down`` / ``itrans_up``, which
  the first and last blocks share by reference). Internal grid: Gauss-Legendre, exact. The skip
  connections of the first and last blocks, which go from one grid to the other, are resampled
  through the transforms (torch-harmonics does this only when the grids differ in size, and would
  otherwise add data-grid rows to Gauss-grid rows 0.04-1.4 deg apart at scale factor 1).
- Spectral truncation: triangular T21 (``lmax = mmax = 22``) with ``scale_factor = 1``, i.e. an
  internal 32 x 64 Gauss-Legendre grid: the classic T21 transform grid, and the embedded data are a
  T21 simulation (dinosaur, T21 on this equiangular grid). Measured on the embedded data (first 450
  days): degrees >= 22 hold < 0.25 % of the variance of every variable and of its 6 h and 24 h
  increments, while degrees 16..21 hold 5-13 % of the anomaly variance and 13-21 %
  of the increments the model has to predict. torch-harmonics' default factor 3 keeps only 10 modes
  (T9) at 32 x 64, and factor 2 keeps 16 (T15), discarding those degrees from every spectral
  filter; factor 1 alone would keep 32 modes (T31), whose extra degrees carry nothing but noise here
  and cost spectral weights. ``lmax`` sets the truncation (through torch-harmonics'
  ``hard_thresholding_fraction``). At T21 the data-grid analysis is the least-squares fit of
  :mod:`wxbench_spherical.sht` (the 32 cell-centre latitudes' Fejer quadrature alone is exact only up
  to lmax 17; the fit is exact for T21 fields, condition number 1.04). Factor 1 also keeps the
  inner blocks' pointwise MLPs on the data's 64 longitudes, so the model is exactly equivariant to
  every whole-cell shift in longitude (with factor 2 only to even shifts; tested).
- Residual connection to the last state (default on; ``wxbench.nn.TendencyWrapper``) and a
  zero-initialised output layer, so an
  untrained model is persistence and the short ``cpu`` budget is spent learning the increments.
- Position embedding: torch-harmonics' learnable per-latitude embedding (the Held-Suarez forcing
  depends on latitude; the spectral filters alone are rotation equivariant), which keeps the model
  exactly equivariant to shifts in longitude (tested). Longitude-dependent embeddings would break it.
- ``sfno_ar`` input window: the same 12 states as the direct model (measured better than 2 states;
  see ``SFNOAutoregressive``).
- Training: wxbench's ``train_module`` on the latitude-weighted MSE of normalised fields (the
  direct model: all 4 leads; ``sfno_ar``: the first ``rollout_steps`` leads of its rollout), with
  validation on the 4-lead forecast for both. The untrained model (= persistence) is validated
  first and kept as a checkpoint, so a run that a busy machine cuts to a few steps cannot end
  worse than persistence on validation; ``weights`` then says so.
- ``torch_threads``: 1 in the ``cpu`` profile (see ``_CPU``); None (torch's setting) otherwise.

Cost: at the defaults (``embed_dim`` 256, 4 layers) ``sfno`` has 12.6 M real parameters (a complex
spectral weight counts twice), 91 % of them in the spectral weights (4 x 256 x 256 x 22 complex).
The ``cpu`` configuration (``_CPU``: embed 32, 2 layers) has 101,504 (``sfno``) / 101,120 (``sfno_ar``).

Measured (``wxbench run --profile cpu``, embedded data, seed 0, 1 thread; 148 / 123 training steps
in the 50 s budget), latitude-weighted RMSE at 24 h for z500 (m2/s2), t850 (K), u850, v850 (m/s):
``sfno`` 255, 1.43, 1.94, 1.82; ``sfno_ar`` 280, 1.57, 2.27, 2.15; persistence 446, 2.28, 4.04, 5.22.
At 6 h ``sfno_ar`` is level with or better than ``sfno`` on the winds (u 0.488 vs 0.491, v 0.486 vs
0.506 m/s) and worse on z500 and t850; from 12 h on it is behind on every variable, and the gap grows
with lead time (error accumulation through the rollout).
The same configuration with torch's default 2 threads on the then heavily loaded machine managed 6
and 5 steps and ended worse than persistence, which is why ``torch_threads`` is 1 there.
"""

from __future__ import annotations

import copy
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar, Iterator, Mapping

import torch
from torch import nn

from wxbench import Budget, FitReport, GridSpec, SplitData, TorchForecaster
from wxbench.nn import TendencyWrapper, latitude_weighted_mse
from wxbench.training import autocast, train_module

from .sht import DataGridInverseRealSHT, DataGridRealSHT

POS_EMBEDDINGS = ("none", "learnable lat")
NORMALISATIONS = ("none", "layer_norm", "instance_norm")


def real_parameter_count(module: nn.Module) -> int:
    """Trainable real numbers: a complex parameter (the spectral weights) counts twice."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())


def _grid_key(transform: nn.Module) -> tuple[str, int, int]:
    return transform.grid, transform.nlat, transform.nlon


def _check_grid(grid: GridSpec) -> None:
    lon = torch.tensor(grid.lon, dtype=torch.float64)
    step = 360.0 / len(lon)
    expected = lon[0] + step * torch.arange(len(lon), dtype=torch.float64)
    if not torch.allclose(lon, expected, atol=1e-6):
        raise ValueError("SFNO needs equispaced longitudes covering the globe (periodic in longitude)")


class SFNONet(nn.Module):
    """(B, T, C, H, W) history -> (B, n_out, C, H, W): torch-harmonics' SFNO on the data grid.

    Uses the last ``input_steps`` states, stacked as channels. The residual connection to the last
    state is ``wxbench.nn.TendencyWrapper`` around this network (see ``_SFNOMixin._net``).
    """

    def __init__(self, grid: GridSpec, *, input_steps: int, output_steps: int, embed_dim: int,
                 num_layers: int, scale_factor: int, lmax: int | None, mlp_ratio: float,
                 normalization_layer: str, pos_embed: str, drop_rate: float = 0.0) -> None:
        super().__init__()
        from torch_harmonics.examples.models.sfno import SphericalFourierNeuralOperator

        _check_grid(grid)
        if pos_embed not in POS_EMBEDDINGS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDDINGS} (grid-agnostic and longitude "
                             f"equivariant), got {pos_embed!r}")
        if normalization_layer not in NORMALISATIONS:
            raise ValueError(f"normalization_layer must be one of {NORMALISATIONS}, got {normalization_layer!r}")
        self.input_steps, self.output_steps = input_steps, output_steps
        self.n_channels = grid.n_channels
        h, w = grid.shape
        # torch-harmonics keeps min(internal nlat, internal nlon // 2) modes times this fraction
        full = min((h - 1) // scale_factor + 1, w // scale_factor // 2)
        lmax = full if lmax is None else lmax
        if not 1 <= lmax <= full:
            raise ValueError(f"lmax must be in 1..{full} for scale_factor {scale_factor} on {h} x {w}, got {lmax}")
        with warnings.catch_warnings():
            # the placeholder data-grid transforms are replaced below
            warnings.simplefilter("ignore", UserWarning)
            self.sfno = SphericalFourierNeuralOperator(
                img_size=(h, w), grid="equiangular", grid_internal="legendre-gauss",
                scale_factor=scale_factor, in_chans=input_steps * self.n_channels,
                out_chans=output_steps * self.n_channels, embed_dim=embed_dim, num_layers=num_layers,
                mlp_ratio=mlp_ratio, drop_rate=drop_rate, normalization_layer=normalization_layer,
                pos_embed=pos_embed, residual_prediction=False, bias=False,
                hard_thresholding_fraction=(lmax + 0.5) / full)
        assert (self.sfno.trans_down.lmax, self.sfno.trans_down.mmax) == (lmax, lmax), "truncation"
        self._install_data_grid_transforms(grid)

    def _install_data_grid_transforms(self, grid: GridSpec) -> None:
        """Replace the data-grid SHTs (built for torch-harmonics' ``equiangular`` nodes, which
        include the poles) by transforms at the data's latitudes, wherever the model refers to them."""
        old_fwd, old_inv = self.sfno.trans_down, self.sfno.itrans_up
        lmax, mmax = old_fwd.lmax, old_fwd.mmax
        fwd = DataGridRealSHT(grid.lat, len(grid.lon), lmax, mmax)
        inv = DataGridInverseRealSHT(grid.lat, len(grid.lon), lmax, mmax)
        self.sfno.trans_down, self.sfno.itrans_up = fwd, inv
        for block in self.sfno.blocks:
            conv = block.global_conv
            if conv.forward_transform is old_fwd:
                conv.forward_transform = fwd
            if conv.inverse_transform is old_inv:
                conv.inverse_transform = inv
            # torch-harmonics resamples a block's skip connection (through its own transforms) only
            # when the two grids differ in size; at scale factor 1 the data grid and the internal
            # Gauss grid are both 32 x 64 but have different latitudes, so resample there too
            conv.scale_residual = _grid_key(conv.forward_transform) != _grid_key(conv.inverse_transform)
        remaining = [m for m in self.modules() if m is old_fwd or m is old_inv]
        assert not remaining, "a data-grid transform of the torch-harmonics model was not replaced"

    @property
    def output_layer(self) -> nn.Module:
        """The decoder's last 1x1 convolution (zero-initialised under ``residual``)."""
        return self.sfno.decoder[-1]

    @property
    def modes(self) -> tuple[int, int]:
        return self.sfno.trans_down.lmax, self.sfno.trans_down.mmax

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        x = history[:, -self.input_steps:]
        b, t, c, h, w = x.shape
        return self.sfno(x.reshape(b, t * c, h, w)).reshape(b, self.output_steps, c, h, w)


class _SFNOMixin:
    """Shared construction, fit (with the untrained state as a checkpoint), threads and description."""

    family = "sfno"
    hparams: dict[str, Any]
    grid: GridSpec
    module: nn.Module
    device: str
    seed: int
    name: str

    @contextmanager
    def _threads(self) -> Iterator[None]:
        """Run with ``torch_threads`` intra-op threads on CPU (restored afterwards); None: leave as is."""
        n = self.hparams["torch_threads"]
        if n is None or not self.device.startswith("cpu"):
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def val_loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Validation loss (early stopping, best weights): the scored 4-lead forecast error."""
        return latitude_weighted_mse(self.module(history), target, self.lat_weights)

    def _validate(self, val: SplitData, budget: Budget) -> float:
        """``val_loss`` on the validation windows ``train_module`` uses, in eval mode."""
        index = val.evenly_spaced(budget.val_windows)
        self.module.eval()
        total = 0.0
        with torch.no_grad(), autocast(self.device):
            for i in range(0, len(index), budget.eval_batch_size):
                history, target = val.windows(index[i:i + budget.eval_batch_size])
                total += float(self.val_loss(history.to(self.device), target.to(self.device))) * len(history)
        return total / max(len(index), 1)

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        """``train_module`` with the untrained model (persistence, with ``residual``) as one more
        checkpoint: if no validation check beats it (a run cut to a handful of steps by a busy
        machine), the initial weights are kept and ``weights`` says so. The initial validation's time
        comes out of the budget's wall clock."""
        with self._threads():
            start = time.perf_counter()
            initial_loss = self._validate(val, budget)
            initial_state = copy.deepcopy(self.module.state_dict())
            initial_seconds = time.perf_counter() - start
            # the extra validation is paid from the same wall-clock budget
            budget = replace(budget, max_seconds=max(budget.max_seconds - initial_seconds, 1e-3))
            report = train_module(self.module, self.loss, train, val, budget, device=self.device, seed=self.seed,
                                  learning_rate=self.hparams["learning_rate"],
                                  weight_decay=self.hparams["weight_decay"], val_loss_fn=self.val_loss,
                                  desc=self.name)
        report.seconds += initial_seconds
        report.extra["initial_val_loss"] = initial_loss
        if report.best_val_loss is None or not report.best_val_loss < initial_loss:
            self.module.load_state_dict(initial_state)
            report.best_val_loss = initial_loss
            report.extra["kept_initial_weights"] = True
            self.weights = ("untrained initial weights (persistence): training did not lower the "
                            "validation loss within the budget")
        return report

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        with self._threads():
            return super().predict(history)  # type: ignore[misc]

    def _net(self, output_steps: int) -> TendencyWrapper:
        """The SFNO, with ``residual`` its increments added to the last state (the untrained model is
        then persistence: the output layer starts at zero)."""
        hp = self.hparams
        if not 1 <= hp["input_steps"] <= self.grid.input_steps:
            raise ValueError(f"input_steps must be in 1..{self.grid.input_steps}, got {hp['input_steps']}")
        net = SFNONet(self.grid, input_steps=hp["input_steps"], output_steps=output_steps,
                      embed_dim=hp["embed_dim"], num_layers=hp["num_layers"], scale_factor=hp["scale_factor"],
                      lmax=hp["lmax"],
                      mlp_ratio=hp["mlp_ratio"], normalization_layer=hp["normalization_layer"],
                      pos_embed=hp["pos_embed"], drop_rate=hp["drop_rate"])
        return TendencyWrapper(net, residual=hp["residual"], output_layer=net.output_layer)

    def _net_of(self) -> SFNONet:
        step = self.module.net if isinstance(self.module, RolloutNet) else self.module
        return step.core

    def describe(self) -> dict[str, Any]:
        net = self._net_of()
        lmax, mmax = net.modes
        spectral = sum(b.global_conv.weight.numel() * 2 for b in net.sfno.blocks)
        return {"parameters": real_parameter_count(self.module), "spectral_parameters": spectral,
                "lmax": lmax, "mmax": mmax, "internal_grid": [net.sfno.h, net.sfno.w],
                "data_grid_sht": net.sfno.trans_down.grid}


_COMMON: dict[str, Any] = {
    "embed_dim": 256,  # torch-harmonics' default; the gpu profile
    "num_layers": 4,
    "scale_factor": 1,  # internal grid 32 x 64 Gauss-Legendre (the classic T21 transform grid)
    "lmax": 22,  # triangular truncation T21 (lmax = mmax = 22), the data's own; see the module doc
    "mlp_ratio": 2.0,
    "normalization_layer": "none",
    "pos_embed": "learnable lat",
    "residual": True,
    "drop_rate": 0.0,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "torch_threads": None,  # CPU intra-op threads during fit/predict; None: torch's setting
}

_SMOKE: dict[str, Any] = {"embed_dim": 8, "num_layers": 2}

#: ``cpu`` profile (50 s of training on 2 shared CPU cores, batch 16). A batch-16 step of the T21
#: model costs ~0.4 s of one core at embed 32 / 2 layers (~0.6-0.8 s at 4 layers; embed 256 would be
#: several seconds), so the budget buys on the order of 100-200 steps, under one epoch of the 2,522
#: training windows. Measured at a fixed number of steps on the embedded data (validation loss,
#: latitude-weighted MSE of normalised fields; one seed each): learning rate 2e-3 / 5e-3 / 1e-2 /
#: 2e-2 at 4 layers, 110 steps: 0.0646 / 0.0481 / 0.0379 / 0.0326; 2 layers, 180 steps (less CPU
#: time than 4 layers, 110 steps): 0.0312 at 1e-2, 0.0263 at 2e-2. So: a small, shallow model with a
#: high learning rate (the loop's warm-up and gradient clipping at norm 1 keep it stable). T15
#: (scale factor 2) instead of T21 at equal CPU time was worse (0.0543 vs 0.0481 at 5e-3).
#: One intra-op thread: on the shared 2-core machine two OpenMP threads spin-wait on each other;
#: a ``wxbench run`` of this config with torch's default 2 threads managed 6 steps in 50 s (0.4 s of
#: CPU per step when single-threaded), ending worse than persistence. wxbench's Ray executor also
#: runs its workers with OMP_NUM_THREADS=1.
_CPU: dict[str, Any] = {"embed_dim": 32, "num_layers": 2, "learning_rate": 2e-2, "torch_threads": 1}


class SFNO(_SFNOMixin, TorchForecaster):
    """Direct SFNO: 12 stacked states in, the 4 lead times out at once."""

    name = "sfno"
    hyperparameters: ClassVar[Mapping[str, Any]] = {**_COMMON, "input_steps": 12}
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": _SMOKE,
        "cpu": _CPU,
    }

    def build(self) -> nn.Module:
        return self._net(self.grid.output_steps)


class RolloutNet(nn.Module):
    """Autoregressive wrapper: ``net`` maps a window of ``input_steps`` states to the next one;
    ``forward`` rolls out."""

    def __init__(self, net: nn.Module, input_steps: int, output_steps: int) -> None:
        super().__init__()
        self.net = net
        self.input_steps, self.output_steps = input_steps, output_steps

    def rollout(self, history: torch.Tensor, steps: int) -> torch.Tensor:
        window = history[:, -self.input_steps:]
        outputs = []
        for _ in range(steps):
            nxt = self.net(window)  # (B, 1, C, H, W)
            outputs.append(nxt)
            window = torch.cat([window[:, 1:], nxt.to(window.dtype)], dim=1)
        return torch.cat(outputs, dim=1)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.rollout(history, self.output_steps)


class SFNOAutoregressive(_SFNOMixin, TorchForecaster):
    """Autoregressive SFNO: predicts 6 h ahead, rolled out 4 times for the 6..24 h forecast.

    Input window: all 12 states by default, the direct model's window, so that the direct vs
    iterative comparison differs only in the target. Measured alternative: a 2-state window (the
    state and its 6 h tendency) gave a higher validation loss (4-step rollout) in two paired runs at
    equal steps (0.0381 vs 0.0332 and 0.0548 vs 0.0500) and a higher 24 h RMSE in every variable in
    the second: the 500/850 hPa fields are a partial view of the simulated state, and a longer
    history lets the network infer part of what it does not see. At rollout step k the window holds
    12 - k + 1 observed states and the k - 1 predictions.
    """

    name = "sfno_ar"
    hyperparameters: ClassVar[Mapping[str, Any]] = {**_COMMON, "input_steps": 12, "rollout_steps": 1}
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {**_SMOKE, "rollout_steps": 2},
        "cpu": _CPU,
    }

    def build(self) -> nn.Module:
        if not 1 <= self.hparams["rollout_steps"] <= self.grid.output_steps:
            raise ValueError(f"rollout_steps must be in 1..{self.grid.output_steps}")
        return RolloutNet(self._net(1), self.hparams["input_steps"], self.grid.output_steps)

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        steps = self.hparams["rollout_steps"]
        return latitude_weighted_mse(self.module.rollout(history, steps), target[:, :steps], self.lat_weights)

    def val_loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scored task: the full 4-step rollout (validation, early stopping, best weights)."""
        return latitude_weighted_mse(self.module(history), target, self.lat_weights)
