"""The baselines do exactly what they say: persistence, climatology, and ridge regression equal to
scikit-learn's Ridge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from wxbench.interfaces import GridSpec
from wxbench.testing import DEFAULT_GRID, smoke_budget, synthetic_split
from wxbench.baselines import Climatology, Persistence
from wxbench_baselines.models import LinearRegression, MultiOutputLinearRegression


@pytest.fixture(scope="module")
def splits():
    return synthetic_split(n_times=60, seed=1), synthetic_split(n_times=24, seed=2, name="val")


def test_persistence_repeats_the_last_state(splits):
    train, val = splits
    model = Persistence(DEFAULT_GRID)
    model.fit(train, val, smoke_budget())
    history, _ = train.windows(torch.arange(3))
    out = model.predict(history)
    for lead in range(4):
        assert torch.equal(out[:, lead], history[:, -1])


def test_climatology_is_the_training_mean(splits):
    train, val = splits
    model = Climatology(DEFAULT_GRID)
    model.fit(train, val, smoke_budget())
    out = model.predict(train.windows(torch.arange(2))[0])
    assert torch.allclose(out[1, 3], train.fields.mean(dim=0), atol=1e-6)


# a coarse grid keeps sklearn's primal Ridge (features x targets weights) small enough to compare with
SMALL_GRID = GridSpec(channels=("z500", "t850"), lat=tuple(range(-70, 80, 20)), lon=tuple(range(0, 360, 24)))


@pytest.mark.parametrize("cls", [LinearRegression, MultiOutputLinearRegression])
def test_ridge_models_equal_sklearn_ridge(cls):
    train = synthetic_split(grid=SMALL_GRID, n_times=60, seed=1)
    val = synthetic_split(grid=SMALL_GRID, n_times=24, seed=2, name="val")
    model = cls(SMALL_GRID)
    model.fit(train, val, smoke_budget())
    history, target = train.windows(slice(None))
    x = history.reshape(len(history), -1).double().numpy()
    y = target.double().numpy()
    test_history, _ = val.windows(slice(None))
    x_test = test_history.reshape(len(test_history), -1).double().numpy()
    alpha = model.hparams["alpha"]
    if model.hparams["standardise_features"]:
        scale = np.maximum(x.std(axis=0), 1e-6)
        x, x_test = x / scale, x_test / scale
    if model.hparams["per_variable"]:
        expected = np.stack([Ridge(alpha=alpha).fit(x, y[:, :, c].reshape(len(x), -1)).predict(x_test)
                             .reshape(len(x_test), 4, 8, 15) for c in range(2)], axis=2)
    else:
        expected = Ridge(alpha=alpha).fit(x, y.reshape(len(x), -1)).predict(x_test).reshape(len(x_test), 4, 2, 8, 15)
    got = model.predict(test_history).double().numpy()
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 2e-3 * scale


def test_defaults_follow_models_md():
    assert LinearRegression.hyperparameters["alpha"] == 1.0
    assert MultiOutputLinearRegression.hyperparameters["alpha"] == 10.0
    assert MultiOutputLinearRegression.hyperparameters["per_variable"]
    assert MultiOutputLinearRegression.hyperparameters["standardise_features"]
