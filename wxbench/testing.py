"""Conformance checks any plugin author can run on a Forecaster or Encoder, and pytest fixtures.

In a plugin's tests::

    from wxbench.testing import check_forecaster
    def test_my_model():
        check_forecaster(MyModel)            # a class, or a registered name: check_forecaster("my_model")

The checks train with the ``smoke`` profile's budget (and the class's ``smoke`` hyperparameters) on
a small smooth synthetic split unless real data is passed, and verify: output shape and dtype,
finite values (the same :func:`wxbench.interfaces.check_forecast` the runner applies), determinism
under a seed, the state_dict round trip, and the ensemble shape. A registered name (or
:class:`~wxbench.plugins.Registration`) is built exactly as the runner builds it: class defaults <
the registered variant < the ``smoke`` profile's overrides < ``hyperparameters``.

To use the fixtures, add ``pytest_plugins = ["wxbench.testing"]`` to a conftest.py. The fixtures need
pytest: ``pip install 'wxbench[testing]'``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import numpy as np
import torch

from .data.splits import Normaliser, SplitData, channel_stats, window_starts
from .errors import ContractViolation
from .interfaces import Budget, Encoder, FitReport, Forecaster, GridSpec, check_forecast, predict_batch
from .plugins import Registration, registration_of
from .profiles import get_profile
from .results import read_checkpoint

try:
    import pytest
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("wxbench.testing needs pytest: pip install 'wxbench[testing]'") from exc

CHECK_PROFILE = "smoke"

WB_LAT = tuple(-87.1875 + 5.625 * i for i in range(32))
WB_LON = tuple(5.625 * i for i in range(64))
DEFAULT_GRID = GridSpec(channels=("z500", "t850", "u850", "v850"), lat=WB_LAT, lon=WB_LON)


def synthetic_fields(grid: GridSpec = DEFAULT_GRID, n_times: int = 48, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Smooth travelling waves on the sphere plus a little noise, in physical-looking magnitudes.

    For contract checks only; real evaluation uses the benchmark data.
    """
    rng = np.random.default_rng(seed)
    lat = np.deg2rad(np.array(grid.lat))[:, None]
    lon = np.deg2rad(np.array(grid.lon))[None, :]
    t = np.arange(n_times)[:, None, None]
    fields = []
    for i in range(grid.n_channels):
        k, speed, phase = 2 + i, 0.15 + 0.05 * i, rng.uniform(0, 2 * np.pi)
        wave = np.cos(lat) ** 2 * np.sin(k * lon - speed * t + phase)
        base = 10.0 * (i + 1) * np.cos(lat) + 3.0 * wave + 0.1 * rng.standard_normal((n_times, *grid.shape))
        fields.append(base)
    values = torch.tensor(np.stack(fields, axis=1), dtype=torch.float32)
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(n_times) * np.timedelta64(grid.step_hours, "h")
    return values, times


def synthetic_split(kind: str = "zscore", grid: GridSpec = DEFAULT_GRID, n_times: int = 48, seed: int = 0,
                    name: str = "train", stats: dict | None = None) -> SplitData:
    values, times = synthetic_fields(grid, n_times, seed)
    # like real splits, every split is normalised with "training" statistics (those of seed 1)
    stats = stats or channel_stats(synthetic_fields(grid, 96, seed=1)[0], grid.channels)
    norm = Normaliser.from_stats(kind, stats)
    starts = window_starts(times, grid.input_steps + grid.output_steps, np.timedelta64(grid.step_hours, "h"))
    return SplitData(name, norm.normalise(values).contiguous(), times, torch.from_numpy(starts), grid, norm)


def smoke_budget() -> Budget:
    return get_profile("smoke").budget


def _build(reg: Registration, grid: GridSpec, seed: int, ensemble_size: int, hyperparameters: dict[str, Any]):
    from .runner import build_model, resolve_hyperparameters
    from .runtime import seed_everything

    if issubclass(reg.cls, Forecaster):
        return build_model(reg, grid, CHECK_PROFILE, device="cpu", seed=seed, ensemble_size=ensemble_size,
                           overrides=hyperparameters)
    params = resolve_hyperparameters(reg, CHECK_PROFILE, hyperparameters)
    seed_everything(seed)
    return reg.cls(grid, device="cpu", seed=seed, **params)


def check_forecaster(target: str | type[Forecaster] | Registration, *, hyperparameters: dict[str, Any] | None = None,
                     train: SplitData | None = None, val: SplitData | None = None,
                     budget: Budget | None = None, ensemble_size: int = 3, seed: int = 0) -> dict[str, Any]:
    """Run the Forecaster contract checks; raises AssertionError naming the failed check."""
    hyperparameters = hyperparameters or {}
    reg = registration_of(target)
    cls = reg.cls
    kind = cls.normalisation
    train = train or synthetic_split(kind, seed=1)
    val = val or synthetic_split(kind, n_times=24, seed=2, name="val")
    grid = train.grid
    budget = budget or smoke_budget()
    who = f"forecaster {cls.__name__} ({reg.name})"
    assert kind in ("zscore", "minmax"), f"{who}: normalisation must be 'zscore' or 'minmax', got {kind!r}"
    for key in cls.profile_hyperparameters.get(CHECK_PROFILE, {}):
        assert key in cls.hyperparameters, f"{who}: smoke hyperparameter {key!r} is not a declared hyperparameter"

    model = _build(reg, grid, seed, ensemble_size, hyperparameters)
    report = model.fit(train, val, budget)
    assert isinstance(report, FitReport), f"{who}: fit must return a FitReport, got {type(report).__name__}"
    windows = torch.arange(min(3, len(train)))
    history, _ = train.windows(windows)
    init_times = train.window_times(windows)
    out = predict_batch(model, history, init_times)
    try:
        check_forecast(out, history, model, who)
    except ContractViolation as exc:
        raise AssertionError(str(exc)) from None
    assert isinstance(model.weights, str) and model.weights, f"{who}: weights must say which weights were used"

    # determinism: the same seed gives the same trained model and forecast
    again = _build(reg, grid, seed, ensemble_size, hyperparameters)
    again.fit(train, val, budget)
    out_again = predict_batch(again, history, init_times)
    assert torch.allclose(out, out_again, atol=1e-5, rtol=1e-4), \
        f"{who}: not deterministic under a fixed seed (max diff {(out - out_again).abs().max():.3g})"

    # save/load round trip: a fresh instance with the saved state predicts the same
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = _build(reg, grid, seed + 1, ensemble_size, hyperparameters)
    restored.load_state_dict(read_checkpoint(buffer))
    if cls.probabilistic:
        torch.manual_seed(123)
        a = predict_batch(model, history, init_times)
        torch.manual_seed(123)
        r = predict_batch(restored, history, init_times)
    else:
        a, r = out, predict_batch(restored, history, init_times)
    assert torch.allclose(a, r, atol=1e-5, rtol=1e-4), \
        f"{who}: state_dict round trip changes the forecast (max diff {(a - r).abs().max():.3g})"
    return {"fit": report, "output_shape": tuple(out.shape)}


def check_encoder(target: str | type[Encoder] | Registration, *, hyperparameters: dict[str, Any] | None = None,
                  train: SplitData | None = None, val: SplitData | None = None,
                  budget: Budget | None = None, seed: int = 0) -> dict[str, Any]:
    """Run the Encoder contract checks; raises AssertionError naming the failed check."""
    hyperparameters = hyperparameters or {}
    reg = registration_of(target)
    cls = reg.cls
    train = train or synthetic_split("minmax", seed=1)
    val = val or synthetic_split("minmax", n_times=24, seed=2, name="val")
    grid = train.grid
    budget = budget or smoke_budget()
    who = f"encoder {cls.__name__} ({reg.name})"
    enc = _build(reg, grid, seed, 1, hyperparameters)
    trainable = enc.trainable
    assert isinstance(trainable, dict) and all(isinstance(v, bool) for v in trainable.values()), \
        f"{who}: trainable must be a dict of booleans"
    report = enc.fit(train, val, budget)
    assert isinstance(report, FitReport), f"{who}: fit must return a FitReport"
    fields = train.fields[:2]
    with torch.no_grad():
        latent = enc.encode(fields)
        expected = (2, *enc.latent_shape(tuple(fields.shape[1:])))
        assert tuple(latent.shape) == expected, f"{who}: latent shape {tuple(latent.shape)}, latent_shape says {expected}"
        decoded = enc.decode(latent)
    assert tuple(decoded.shape) == tuple(fields.shape), f"{who}: decode shape {tuple(decoded.shape)} != {tuple(fields.shape)}"
    assert torch.isfinite(latent).all() and torch.isfinite(decoded).all(), f"{who}: non-finite latent or reconstruction"
    assert isinstance(enc.weights, str) and enc.weights, f"{who}: weights must say which weights were used"
    import io

    buffer = io.BytesIO()
    torch.save(enc.state_dict(), buffer)
    buffer.seek(0)
    restored = _build(reg, grid, seed + 1, 1, hyperparameters)
    restored.load_state_dict(read_checkpoint(buffer))
    with torch.no_grad():
        again = restored.decode(restored.encode(fields))
    assert torch.allclose(decoded, again, atol=1e-5, rtol=1e-4), f"{who}: state_dict round trip changes the reconstruction"
    return {"fit": report, "latent_shape": tuple(latent.shape[1:])}


def forecast_mse(model: Forecaster, split: SplitData, limit: int = 16) -> float:
    """Latitude-weighted MSE of ``model``'s forecasts (ensemble mean) on up to ``limit`` windows."""
    from .metrics import latitude_weights

    windows = split.evenly_spaced(limit)
    history, target = split.windows(windows)
    out = predict_batch(model, history, split.window_times(windows))
    if model.probabilistic:
        out = out.mean(dim=1)
    weights = latitude_weights(torch.tensor(split.grid.lat)).float()
    return float((((out.cpu() - target) ** 2) * weights[:, None]).mean())


def check_learns(target: str | type[Forecaster] | Registration, *, hyperparameters: dict[str, Any] | None = None,
                 train: SplitData | None = None, val: SplitData | None = None, budget: Budget | None = None,
                 seed: int = 0, min_improvement: float = 0.05) -> tuple[float, float]:
    """A short training run must lower the validation forecast error by ``min_improvement`` (relative)."""
    reg = registration_of(target)
    cls = reg.cls
    kind = cls.normalisation
    train = train or synthetic_split(kind, n_times=96, seed=1)
    val = val or synthetic_split(kind, n_times=32, seed=2, name="val", stats=None)
    budget = budget or replace(smoke_budget(), max_steps=30, max_epochs=30, max_seconds=60, patience=30)
    model = _build(reg, train.grid, seed, 2, hyperparameters or {})
    before = forecast_mse(model, val)
    model.fit(train, val, budget)
    after = forecast_mse(model, val)
    assert after < (1 - min_improvement) * before, (
        f"forecaster {cls.__name__}: validation error {before:.4g} -> {after:.4g} after a short training run")
    return before, after


# -- pytest fixtures -----------------------------------------------------------------------------

@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test with one intra-op torch thread (restored afterwards).

    On a small machine shared with other jobs, two OpenMP threads spin-wait on each other and small
    models get 10-20x slower; results do not depend on the thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def wxbench_registry(monkeypatch) -> Iterator[Any]:
    """A registry with the installed plugins, into which a test can add in-process plugins.

    ``wxbench_registry.add_plugin(module_or_object, name="myplugin")`` registers hooks defined on any
    object; the harness (``get_registry``) sees it for the duration of the test.
    """
    from . import plugins

    registry = plugins.Registry()
    registry.load_entry_points()
    monkeypatch.setattr(plugins, "_REGISTRY", registry)
    yield registry


