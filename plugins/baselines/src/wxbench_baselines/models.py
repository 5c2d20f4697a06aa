"""Linear (ridge) regression baselines. (The reference baselines, persistence and climatology, ship
with the core: :mod:`wxbench.baselines`.)

- ``lr``: the original design's linear regression (docs/models.md, Baselines): flatten the
  (12, C, H, W) history to one vector, the (4, C, H, W) target to another, one ridge regression with
  alpha 1.0 on z-scored fields.
- ``lr_multi``: features standardised per feature, one ridge regression with alpha 10.0 per variable,
  each seeing every variable's history and predicting its own variable's 4 lead times.

Both ridge models have 12*C*H*W features (98,304 for 4 variables) and up to 4*C*H*W targets; the
primal coefficient matrix would not fit in memory (98,304 x 32,768), so the same ridge problem is
solved in its dual (kernel) form with scikit-learn's KernelRidge on a precomputed linear kernel,
after centring features and targets (which is what Ridge's ``fit_intercept`` does). Predictions
equal ``sklearn.linear_model.Ridge`` up to floating point (tested).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from wxbench import Budget, FitReport, Forecaster, SplitData


def ridge_dual_coefficients(kernel: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Dual coefficients of ridge regression on a precomputed linear kernel of centred features
    (scikit-learn's KernelRidge solves it); predictions are ``test_kernel @ coefficients``."""
    from sklearn.kernel_ridge import KernelRidge

    return KernelRidge(alpha=alpha, kernel="precomputed").fit(kernel, y).dual_coef_


class LinearRegression(Forecaster):
    name = "lr"
    family = "linear"
    hyperparameters = {"alpha": 1.0, "standardise_features": False, "per_variable": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: dict[str, Any] = {}

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        n, c = len(train), self.grid.n_channels
        # float64: with alpha = 1 the kernel's condition number reaches ~1e8, beyond float32.
        # Filled window by window block, so no float32 copy of all windows is held at once.
        x = np.empty((n, self.grid.input_steps * train.fields[0].numel()))
        y = np.empty((n, self.grid.output_steps, *train.fields.shape[1:]))
        for block in torch.arange(n).split(256):
            history, target = train.windows(block)
            x[block.numpy()] = history.reshape(len(block), -1).numpy()
            y[block.numpy()] = target.numpy()
        scale = None
        if self.hparams["standardise_features"]:
            # dividing by the std is enough: the ridge's centring removes the mean
            scale = np.maximum(x.std(axis=0), 1e-6)
            x /= scale
        # centring features and targets is what Ridge(fit_intercept=True) does
        x_mean = x.mean(axis=0)
        x -= x_mean
        kernel = x @ x.T  # one kernel serves every target group: they share the features
        groups = [y[:, :, [i]].reshape(n, -1) for i in range(c)] if self.hparams["per_variable"] else [y.reshape(n, -1)]
        y_means = [g.mean(axis=0) for g in groups]
        duals = [ridge_dual_coefficients(kernel, g - m, self.hparams["alpha"]) for g, m in zip(groups, y_means)]
        self.state = {"feature_scale": scale, "x_mean": x_mean, "x_fit": x, "y_mean": y_means, "dual": duals}
        self.weights = "closed-form ridge fit on the training split"
        return FitReport(seconds=time.perf_counter() - start, stopped_because="closed form",
                         extra={"training_windows": n, "features": x.shape[1]})

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        s = self.state
        x = history.reshape(history.shape[0], -1).cpu().numpy().astype(np.float64)
        if s["feature_scale"] is not None:
            x = x / s["feature_scale"]
        kernel = (x - s["x_mean"]) @ s["x_fit"].T
        b, (h, w) = history.shape[0], self.grid.shape
        parts = [(kernel @ dual + y_mean).reshape(b, self.grid.output_steps, -1, h, w)
                 for dual, y_mean in zip(s["dual"], s["y_mean"])]
        out = np.concatenate(parts, axis=2)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(history.device)

    def state_dict(self) -> dict[str, Any]:
        # tensors (zero-copy views) rather than numpy arrays: torch.save writes tensor storages
        # directly, whereas pickling gigabyte-sized numpy arrays makes extra in-memory copies
        def as_tensor(v):
            if isinstance(v, list):
                return [torch.from_numpy(a) for a in v]
            return None if v is None else torch.from_numpy(v)

        return {k: as_tensor(v) for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def as_array(v):
            if isinstance(v, list):
                return [a.numpy() for a in v]
            return None if v is None else v.numpy()

        self.state = {k: as_array(v) for k, v in state.items()}

    def describe(self) -> dict[str, Any]:
        if not self.state:
            return {}
        features = self.state["x_fit"].shape[1]
        targets = sum(d.shape[1] for d in self.state["dual"])
        return {"parameters": features * targets + targets, "solver": "dual ridge (KernelRidge, linear kernel)"}


class MultiOutputLinearRegression(LinearRegression):
    name = "lr_multi"
    hyperparameters = {"alpha": 10.0, "standardise_features": True, "per_variable": True}
