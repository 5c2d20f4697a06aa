"""Linear (ridge) regression baselines. (The reference baselines, persistence and climatology, ship
with the core: :mod:`wxbench.baselines`.)

- ``lr``: flatten the history to one vector, the 4 target frames to another, one ridge regression
  for all outputs, on z-scored fields.
- ``lr_multi``: features standardised per feature, one ridge regression per variable, each seeing
  every variable's history and predicting its own variable's 4 lead times.

The tendency form (default, ``residual=True``)
----------------------------------------------
The regression fits the change from the last input state, ``target - history[:, -1]`` for each lead
time, and adds the last state back at prediction. ``alpha`` is chosen on the validation split: the
value of ``alpha_grid`` whose forecast of the validation windows has the lowest latitude-weighted
MSE (the training analogue of the scored RMSE; for ``lr_multi`` one alpha per variable, on that
variable's MSE). The chosen value is in ``describe()`` (the result's ``model_info``) and in the fit
report, with the validation MSE of every grid value.

``alpha_grid`` is the half-decades ``10^0 ... 10^7``. The scale of a useful alpha is set by the
eigenvalues of the linear kernel, whose trace is (windows x features) in z-scored units: on
``embedded`` (2,522 training windows) they reach 2e5 per input frame. Measured on the validation
split (mean over variables of 24 h RMSE / persistence's, decade grid, one frame): alpha 1e3 0.89,
1e4 0.78, 1e5 0.85; with 2 and 4 frames the optimum moves to 1e4-1e5. The grid reaches three decades
beyond both optima; half-decades because the error changes by about 10 % per decade near them.

What 98,304 inputs and ~2,500 windows allow
-------------------------------------------
The primal coefficient matrix (98,304 x 32,768 for 12 frames) does not fit in memory, so the ridge
problem is solved in its dual (kernel) form: after centring features and targets (what
``sklearn.linear_model.Ridge(fit_intercept=True)`` does), ``K = X X^T`` over the n training windows,
one symmetric eigendecomposition ``K = U diag(lam) U^T``, and for each alpha the dual coefficients
``U diag(1 / (lam + alpha)) U^T Y``: one decomposition serves the whole grid and every target
group. Predictions are ``(x - mean) X^T @ dual`` and equal ``Ridge``'s up to rounding (tested).
With n ~ 2,500 every forecast increment is a combination of the n training increments: the model
has at most n degrees of freedom whatever the number of inputs, so more input frames mostly add
noise. ``input_frames`` (default 1, the last state) uses only the last k of the 12 frames: measured
as above at the best alpha, 1 frame 0.78, 2 frames 0.79, 4 frames 0.79, so one frame is the default,
which also divides the kernel's cost by 12.

The checkpoint holds the raw training features (float32, as the z-scored inputs are; the centring is
redone in float64 when used, so nothing is rounded) and the float64 dual coefficients (n x targets):
with the defaults on ``embedded`` 2,522 x 8,192 x 4 B = 83 MB plus 2,522 x 32,768 x 8 B = 661 MB,
about 0.74 GB (was 2.6 GB: all 12 frames in float64). ``describe()`` reports it.

The original formulation
------------------------
``residual=False`` is the original design: the full target is regressed, all 12 frames, the fixed
``alpha`` 1.0 (``lr``) / 10.0 (``lr_multi``). ``alpha`` and ``input_frames`` default to ``None``,
which resolves to the values above for each formulation; an explicit value always wins (an explicit
``alpha`` skips the selection).
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np
import torch

from wxbench import Budget, FitReport, Forecaster, SplitData
from wxbench.errors import ConfigError

#: alpha candidates of the validation selection: half-decades 10^0 .. 10^7 (see the module docstring)
ALPHA_GRID = tuple(float(10 ** (k / 2)) for k in range(15))
#: windows per block when filling feature matrices, and feature columns per block of the kernel
_WINDOW_BLOCK, _FEATURE_BLOCK = 256, 8192


def ridge_dual_coefficients(eigenvalues: np.ndarray, eigenvectors: np.ndarray, y: np.ndarray,
                            alpha: float) -> np.ndarray:
    """Dual coefficients ``(K + alpha I)^-1 y`` of ridge regression, from ``K``'s eigendecomposition."""
    return eigenvectors @ ((eigenvectors.T @ y) / (eigenvalues + alpha)[:, None])


class LinearRegression(Forecaster):
    name = "lr"
    family = "linear"
    hyperparameters = {"residual": True, "alpha": None, "alpha_grid": list(ALPHA_GRID), "input_frames": None,
                       "standardise_features": False, "per_variable": False}
    #: the original design's fixed alpha, used by ``residual=False`` when ``alpha`` is not given
    original_alpha: ClassVar[float] = 1.0
    #: input frames of the tendency form when ``input_frames`` is not given (see the module docstring)
    tendency_input_frames: ClassVar[int] = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: dict[str, Any] = {}
        self.residual = bool(self.hparams["residual"])
        frames = self.hparams["input_frames"]
        if frames is None:
            frames = self.tendency_input_frames if self.residual else self.grid.input_steps
        if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= self.grid.input_steps:
            raise ConfigError(f"{self.name}: input_frames must be an integer from 1 to {self.grid.input_steps} "
                              f"(the last k input frames), got {frames!r}")
        self.input_frames = frames
        alpha = self.hparams["alpha"]
        if alpha is None and not self.residual:
            alpha = self.original_alpha
        if alpha is not None:
            self.alphas = (self._positive(alpha, "alpha"),)
        else:
            grid = self.hparams["alpha_grid"]
            if not isinstance(grid, (list, tuple)) or not grid:
                raise ConfigError(f"{self.name}: alpha_grid must be a non-empty list of positive numbers, got {grid!r}")
            self.alphas = tuple(self._positive(a, "alpha_grid") for a in grid)

    def _positive(self, value: Any, option: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not number > 0 or not math.isfinite(number):
            raise ConfigError(f"{self.name}: {option} must hold positive numbers, got {value!r}")
        return number

    # -- features --------------------------------------------------------------------------------

    def _features(self, history: torch.Tensor) -> torch.Tensor:
        """(B, 12, C, H, W) -> (B, input_frames * C * H * W), the last ``input_frames`` frames."""
        return history[:, -self.input_frames:].reshape(history.shape[0], -1)

    def _centred(self, x: np.ndarray, columns: slice) -> np.ndarray:
        """Feature columns of raw features ``x``, centred (and scaled) in float64."""
        s = self.state
        out = x[:, columns].astype(np.float64) - s["x_mean"][columns]
        if s["feature_scale"] is not None:
            out /= s["feature_scale"][columns]
        return out

    def _kernel(self, x: np.ndarray) -> np.ndarray:
        """Linear kernel between raw features ``x`` and the training features, centred: (B, n)."""
        x_fit = self.state["x_fit"]
        kernel = np.zeros((len(x), len(x_fit)))
        for start in range(0, x_fit.shape[1], _FEATURE_BLOCK):
            columns = slice(start, start + _FEATURE_BLOCK)
            kernel += self._centred(x, columns) @ self._centred(x_fit, columns).T
        return kernel

    def _groups(self, y: np.ndarray) -> list[np.ndarray]:
        """(B, 4, C, H, W) -> the regressions' targets: one (B, 4*C*H*W) or one (B, 4*H*W) per variable."""
        b = len(y)
        if self.hparams["per_variable"]:
            return [y[:, :, i].reshape(b, -1) for i in range(y.shape[2])]
        return [y.reshape(b, -1)]

    def _targets(self, split: SplitData, index: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Raw features (float32) and regression targets (float64: the increment under residual)."""
        x = np.empty((len(index), self.input_frames * split.fields[0].numel()), dtype=np.float32)
        y = np.empty((len(index), self.grid.output_steps, *split.fields.shape[1:]))
        for i, block in zip(range(0, len(index), _WINDOW_BLOCK), index.split(_WINDOW_BLOCK)):
            history, target = split.windows(block)
            rows = slice(i, i + len(block))
            x[rows] = self._features(history).numpy()
            y[rows] = (target - history[:, -1:]).numpy() if self.residual else target.numpy()
        return x, y

    # -- fit and predict -------------------------------------------------------------------------

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        n = len(train)
        x, y = self._targets(train, torch.arange(n))
        scale = None
        if self.hparams["standardise_features"]:
            # dividing by the std is enough: the ridge's centring removes the mean
            scale = np.maximum(x.std(axis=0, dtype=np.float64), 1e-6)
        self.state = {"feature_scale": scale, "x_mean": x.mean(axis=0, dtype=np.float64), "x_fit": x}
        # float64 kernel: with a small alpha its condition number reaches ~1e8, beyond float32
        eigenvalues, eigenvectors = np.linalg.eigh(self._kernel(x))
        eigenvalues = np.clip(eigenvalues, 0.0, None)  # K is positive semi-definite; rounding gives -1e-12
        groups = self._groups(y)
        y_means = [g.mean(axis=0) for g in groups]
        centred = [g - m for g, m in zip(groups, y_means)]
        chosen, val_mse = self._select_alphas(eigenvalues, eigenvectors, centred, y_means, val, budget)
        duals = [ridge_dual_coefficients(eigenvalues, eigenvectors, g, a) for g, a in zip(centred, chosen)]
        self.state.update({"y_mean": y_means, "dual": duals,
                           "alpha": torch.tensor(chosen, dtype=torch.float64)})
        self.weights = "closed-form ridge fit on the training split"
        extra = {"training_windows": n, "features": x.shape[1], "input_frames": self.input_frames,
                 "residual": self.residual, "alpha": self._alpha_info()}
        if val_mse is not None:
            extra["val_mse_by_alpha"] = val_mse
            extra["alpha_at_grid_edge"] = any(a in (min(self.alphas), max(self.alphas)) for a in chosen)
        return FitReport(seconds=time.perf_counter() - start, stopped_because="closed form", extra=extra)

    def _select_alphas(self, eigenvalues: np.ndarray, eigenvectors: np.ndarray, centred: list[np.ndarray],
                       y_means: list[np.ndarray], val: SplitData, budget: Budget
                       ) -> tuple[list[float], dict[str, list[float]] | None]:
        """Per regression, the alpha of ``self.alphas`` with the lowest latitude-weighted validation MSE."""
        if len(self.alphas) == 1:
            return [self.alphas[0]] * len(centred), None
        if len(val) == 0:
            raise ConfigError(f"{self.name}: alpha is chosen on the validation split, which has no windows; "
                              f"set it with -H {self.name}.alpha=VALUE")
        from wxbench.metrics import latitude_weights

        x_val, y_val = self._targets(val, val.evenly_spaced(budget.val_windows))
        # validation kernel in the eigenbasis: predictions for alpha are (a / (lam + alpha)) @ (U^T Y)
        projected = self._kernel(x_val) @ eigenvectors
        h, w = self.grid.shape
        lat = latitude_weights(torch.tensor(self.grid.lat)).double().numpy()
        chosen, table = [], {}
        for i, (g, m, truth) in enumerate(zip(centred, y_means, self._groups(y_val))):
            coefficients = eigenvectors.T @ g
            weights = np.broadcast_to(lat[:, None], (h, w)).ravel()
            weights = np.tile(weights, truth.shape[1] // weights.size)
            errors = [float((((projected / (eigenvalues + a)) @ coefficients + m - truth) ** 2 * weights).mean())
                      for a in self.alphas]
            chosen.append(self.alphas[int(np.argmin(errors))])
            table[self.grid.channels[i] if self.hparams["per_variable"] else "all"] = errors
        return chosen, table

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        s = self.state
        features = self._features(history).cpu().numpy()
        kernel = self._kernel(features)
        b, (h, w) = history.shape[0], self.grid.shape
        parts = [(kernel @ dual + y_mean).reshape(b, self.grid.output_steps, -1, h, w)
                 for dual, y_mean in zip(s["dual"], s["y_mean"])]
        out = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=2), dtype=np.float32))
        if self.residual:
            out = out + history[:, -1:].cpu().float()
        return out.to(history.device)

    # -- checkpoint and description --------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # tensors (zero-copy views) rather than numpy arrays: torch.save writes tensor storages
        # directly, whereas pickling gigabyte-sized numpy arrays makes extra in-memory copies
        def as_tensor(v):
            if isinstance(v, list):
                return [torch.from_numpy(a) for a in v]
            return v if v is None or isinstance(v, torch.Tensor) else torch.from_numpy(v)

        return {k: as_tensor(v) for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def as_array(v):
            if isinstance(v, list):
                return [a.numpy() for a in v]
            return None if v is None else v.numpy()

        self.state = {k: (v if k == "alpha" else as_array(v)) for k, v in state.items()}

    def _alpha_info(self) -> float | dict[str, float]:
        alphas = [float(a) for a in self.state["alpha"]]
        if self.hparams["per_variable"]:
            return dict(zip(self.grid.channels, alphas))
        return alphas[0]

    def describe(self) -> dict[str, Any]:
        if not self.state:
            return {}
        s = self.state
        features = s["x_fit"].shape[1]
        targets = sum(d.shape[1] for d in s["dual"])
        stored = sum(a.nbytes for k, v in s.items() if k != "alpha" and v is not None
                     for a in (v if isinstance(v, list) else [v]))
        return {"parameters": features * targets + targets, "solver": "dual ridge (eigendecomposition of the linear kernel)",
                "residual": self.residual, "input_frames": self.input_frames, "alpha": self._alpha_info(),
                "alpha_selected_on": "val" if len(self.alphas) > 1 else "fixed", "checkpoint_bytes": int(stored)}


class MultiOutputLinearRegression(LinearRegression):
    name = "lr_multi"
    hyperparameters = {**LinearRegression.hyperparameters, "standardise_features": True, "per_variable": True}
    original_alpha = 10.0
