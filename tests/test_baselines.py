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


def _calendar_split(kind: str = "zscore"):
    """A synthetic training split whose benchmark climatology is a calendar one (random values: the baseline
    must return exactly them at each valid time, normalised)."""
    from wxbench.data.climatology import DAYS, Climatology

    train = synthetic_split(kind, n_times=60, seed=1)
    rng = np.random.default_rng(0)
    stats_scale = np.array(train.normaliser.scale, dtype=np.float32)[:, None, None]
    values = (rng.standard_normal((DAYS, 4, 4, 32, 64)).astype(np.float32) * stats_scale
              + np.array(train.normaliser.offset, dtype=np.float32)[:, None, None])
    train.climatology = Climatology(values, DEFAULT_GRID.channels, hours=(0, 6, 12, 18), window_days=61,
                                    origin="test")
    return train


def test_climatology_forecasts_the_calendar_climatology_at_each_valid_time():
    train = _calendar_split()
    model = Climatology(DEFAULT_GRID)
    assert model.needs_init_times
    model.fit(train, train, smoke_budget())
    assert "day of year x hour of day" in model.weights
    history, _ = train.windows(torch.arange(3))
    inits = np.array(["2020-02-28T12", "2020-02-29T00", "2021-12-31T18"], dtype="datetime64[ns]")
    out = model.predict(history, init_times=inits)
    assert out.shape == (3, 4, 4, 32, 64)
    expected = train.normaliser.normalise(train.climatology.at(inits[:, None] + np.array(
        [6, 12, 18, 24], dtype="timedelta64[h]")).double()).float()
    assert torch.allclose(out, expected, atol=1e-6)
    # 2020-02-29T00 + 24 h is 1 March of a leap year: day 61 at 00 UTC
    assert torch.equal(out[1, 3], torch.from_numpy(model.climatology.values[60, 0]))
    with pytest.raises(ValueError, match="needs the 3 windows' init_times"):
        model.predict(history)


def test_climatology_passes_the_contract_checks_with_a_calendar_climatology():
    from wxbench.testing import check_forecaster

    train = _calendar_split()
    val = synthetic_split(n_times=24, seed=2, name="val")
    check_forecaster(Climatology, train=train, val=val)


def test_climatology_state_dict_holds_only_the_table():
    import io

    model = Climatology(DEFAULT_GRID)
    model.fit(_calendar_split(), None, smoke_budget())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    table_bytes = model.climatology.values.nbytes  # 366 days x 4 hours x C x H x W float32
    assert table_bytes == 366 * 4 * 4 * 32 * 64 * 4
    assert buffer.getbuffer().nbytes < table_bytes + 10_000


# a coarse grid keeps sklearn's primal Ridge (features x targets weights) small enough to compare with
SMALL_GRID = GridSpec(channels=("z500", "t850"), lat=tuple(range(-70, 80, 20)), lon=tuple(range(0, 360, 24)))


def _sklearn_ridge(model, train, test_history):
    """The forecast of sklearn's Ridge for ``model``'s formulation (features, target, alpha, groups)."""
    history, target = train.windows(slice(None))
    k = model.input_frames
    x = history[:, -k:].reshape(len(history), -1).double().numpy()
    x_test = test_history[:, -k:].reshape(len(test_history), -1).double().numpy()
    y = (target - history[:, -1:] if model.residual else target).double().numpy()
    if model.hparams["standardise_features"]:
        scale = np.maximum(x.std(axis=0), 1e-6)
        x, x_test = x / scale, x_test / scale
    alpha = model.describe()["alpha"]
    b, c = len(x_test), y.shape[2]
    if model.hparams["per_variable"]:
        expected = np.stack([Ridge(alpha=alpha[name]).fit(x, y[:, :, i].reshape(len(x), -1)).predict(x_test)
                             .reshape(b, 4, 8, 15) for i, name in enumerate(SMALL_GRID.channels)], axis=2)
    else:
        expected = Ridge(alpha=alpha).fit(x, y.reshape(len(x), -1)).predict(x_test).reshape(b, 4, c, 8, 15)
    if model.residual:
        expected = expected + test_history[:, -1:].double().numpy()
    return expected


@pytest.mark.parametrize("formulation", [{}, {"residual": False}, {"input_frames": 3, "alpha": 5.0}],
                         ids=["tendency", "original", "three-frames"])
@pytest.mark.parametrize("cls", [LinearRegression, MultiOutputLinearRegression])
def test_ridge_models_equal_sklearn_ridge(cls, formulation):
    train = synthetic_split(grid=SMALL_GRID, n_times=60, seed=1)
    val = synthetic_split(grid=SMALL_GRID, n_times=24, seed=2, name="val")
    model = cls(SMALL_GRID, **formulation)
    model.fit(train, val, smoke_budget())
    test_history, _ = val.windows(slice(None))
    expected = _sklearn_ridge(model, train, test_history)
    got = model.predict(test_history).double().numpy()
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 2e-3 * scale


def test_original_formulation_is_one_option_away():
    for cls, alpha in ((LinearRegression, 1.0), (MultiOutputLinearRegression, 10.0)):
        assert cls.hyperparameters["residual"] is True and cls.hyperparameters["alpha"] is None
        original = cls(DEFAULT_GRID, residual=False)
        assert original.alphas == (alpha,) and original.input_frames == 12 and not original.residual
        tendency = cls(DEFAULT_GRID)
        assert tendency.residual and tendency.input_frames == 1 and len(tendency.alphas) == 15
    assert MultiOutputLinearRegression.hyperparameters["per_variable"]
    assert MultiOutputLinearRegression.hyperparameters["standardise_features"]
    assert not LinearRegression.hyperparameters["per_variable"]


def test_alpha_is_chosen_on_the_validation_split():
    """On a synthetic case where the best alpha is known, the selection picks the validation-best
    grid value, and each variable of lr_multi gets its own."""
    grid = SMALL_GRID
    train = synthetic_split(grid=grid, n_times=60, seed=1)
    val = synthetic_split(grid=grid, n_times=40, seed=2, name="val")
    alphas = [0.01, 1.0, 100.0, 1e4, 1e6]
    model = LinearRegression(grid, alpha_grid=alphas)
    report = model.fit(train, val, smoke_budget())
    errors = report.extra["val_mse_by_alpha"]["all"]
    assert len(errors) == len(alphas)
    # a direct computation of each alpha's validation MSE with the fixed-alpha model agrees
    from wxbench.metrics import latitude_weights

    lat = latitude_weights(torch.tensor(grid.lat)).double()[:, None]
    history, target = val.windows(val.evenly_spaced(smoke_budget().val_windows))  # the windows fit uses
    direct = []
    for a in alphas:
        fixed = LinearRegression(grid, alpha=a)
        fixed.fit(train, val, smoke_budget())
        direct.append(float(((fixed.predict(history).double() - target.double()) ** 2 * lat).mean()))
    assert np.allclose(errors, direct, rtol=1e-4)
    best = alphas[int(np.argmin(direct))]
    assert model.describe()["alpha"] == best == report.extra["alpha"]
    assert model.describe()["alpha_selected_on"] == "val"
    # one alpha per variable for lr_multi, each its own variable's val-best
    multi = MultiOutputLinearRegression(grid, alpha_grid=alphas)
    report = multi.fit(train, val, smoke_budget())
    for name, errs in report.extra["val_mse_by_alpha"].items():
        assert multi.describe()["alpha"][name] == alphas[int(np.argmin(errs))]


def test_alpha_selection_bad_input():
    from wxbench.errors import ConfigError

    with pytest.raises(ConfigError, match="lr: alpha_grid"):
        LinearRegression(DEFAULT_GRID, alpha_grid=[])
    with pytest.raises(ConfigError, match="lr: alpha must"):
        LinearRegression(DEFAULT_GRID, alpha=-1)
    with pytest.raises(ConfigError, match="lr_multi: input_frames"):
        MultiOutputLinearRegression(DEFAULT_GRID, input_frames=13)
    train = synthetic_split(grid=SMALL_GRID, n_times=60, seed=1)
    empty = synthetic_split(grid=SMALL_GRID, n_times=8, seed=2, name="val")  # shorter than one window
    with pytest.raises(ConfigError, match="no windows"):
        LinearRegression(SMALL_GRID).fit(train, empty, smoke_budget())
