"""WB2-layout exports and external forecasts: wxbench's scores equal WeatherBench 2's formulas on the files.

A tiny WB2-layout benchmark; persistence and a small ensemble are trained and their forecasts saved
(``--save-forecasts``); ``wxbench export`` writes the truth and climatology. The test then scores the files
with its own xarray transcription of WB2's definitions (metrics module: MSE, MAE, Bias, ACC, CRPS,
DebiasedEnsembleMeanMSE, EnsembleVariance; area weights from the latitude cell bounds; ACC's climatology
selected by the valid time's day of year and hour) and compares with wxbench's results at 1e-6, and
``wxbench evaluate`` on the saved file reproduces the trained model's scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from wxbench import Forecaster, hookimpl
from wxbench.cli import main
from wxbench.data.benchmarks import get_benchmark
from wxbench.errors import DataError
from wxbench.external import evaluate_forecast_file
from wxbench.results import load_results
from wxbench.testing_data import TINY_PERIOD, TINY_SPLITS, write_benchmark_toml, write_wb2_layout

CHANNELS = ["z500", "t850", "t2m"]
PERIOD = TINY_PERIOD
SPLITS = {**TINY_SPLITS, "test": ("1979-12-31T00", "1980-01-08T18")}
RTOL = 1e-6


class _NoisyPersistence(Forecaster):
    """Persistence plus fixed, member-dependent perturbations: an ensemble with spread."""

    name = "noisy_persistence"
    family = "test"
    probabilistic = True

    def fit(self, train, val, budget):
        from wxbench import FitReport

        return FitReport(seconds=0.0)

    def predict(self, history):
        last = history[:, -1:].expand(-1, self.grid.output_steps, -1, -1, -1)
        g = torch.Generator().manual_seed(int(history[0, -1, 0, 0, 0].abs().item() * 1e6) % 2**31)
        noise = torch.randn((history.shape[0], self.ensemble_size, *last.shape[1:]), generator=g)
        return last.unsqueeze(1) + 0.2 * noise

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class _Plugin:
    @hookimpl
    def wxbench_register_forecasters(self, register):
        register(_NoisyPersistence)


@pytest.fixture(scope="module")
def bench_toml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb2")
    store = write_wb2_layout(root / "data.zarr", CHANNELS, PERIOD)
    return write_benchmark_toml(root / "bench.toml", name="tiny-ext", source="wb2", data=store, channels=CHANNELS,
                                splits=SPLITS)


@pytest.fixture
def trained(tmp_path, bench_toml, wxbench_registry) -> Path:
    """Results of persistence and the ensemble with saved forecasts, and the exported truth/climatology."""
    wxbench_registry.add_plugin(_Plugin(), name="noisy")
    out = CliRunner().invoke(main, ["run", "--profile", "smoke", "--quiet", "-m", "persistence", "-m",
                                    "noisy_persistence", "--benchmark", str(bench_toml), "--output",
                                    str(tmp_path / "results"), "--save-forecasts", "--no-leaderboard"])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(main, ["export", str(tmp_path / "truth.zarr"), "--benchmark", str(bench_toml),
                                    "--split", "test", "--quiet"])
    assert out.exit_code == 0, out.output
    return tmp_path


# --------------------------------------------------------------------------------- the transcription of WB2

def wb2_weights(latitude: xr.DataArray) -> xr.DataArray:
    lat = np.deg2rad(latitude.values)
    bounds = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    area = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    return xr.DataArray(area / area.mean(), dims="latitude", coords={"latitude": latitude})


def spatial_mean(x: xr.DataArray) -> xr.DataArray:
    return x.weighted(wb2_weights(x["latitude"])).mean(["latitude", "longitude"])


def wb2_scores(forecast: xr.DataArray, truth: xr.DataArray, climatology: xr.DataArray) -> dict[str, np.ndarray]:
    """WB2's definitions, per lead: forecast (time, [number], prediction_timedelta, lon, lat) by init,
    truth (time, lon, lat) by valid time, climatology (dayofyear, [hour], lon, lat)."""
    forecast, truth, climatology = (x.astype(np.float64) for x in (forecast, truth, climatology))  # exact sums
    valid = forecast["time"] + forecast["prediction_timedelta"]  # (time, prediction_timedelta)
    obs = truth.sel(time=valid)  # by-init truth: dims (time, prediction_timedelta, ...)
    selection = {"dayofyear": valid.dt.dayofyear}
    if "hour" in climatology.dims:
        selection["hour"] = valid.dt.hour
    clim = climatology.sel(selection)
    out = {}
    ensemble = "number" in forecast.dims
    mean = forecast.mean("number") if ensemble else forecast
    out["rmse"] = np.sqrt(spatial_mean((mean - obs) ** 2).mean("time"))
    out["mae"] = spatial_mean(abs(mean - obs)).mean("time")
    out["bias"] = spatial_mean(mean - obs).mean("time")
    fa, oa = mean - clim, obs - clim
    out["acc"] = (spatial_mean(fa * oa) / np.sqrt(spatial_mean(fa ** 2) * spatial_mean(oa ** 2))).mean("time")
    if ensemble:
        m = forecast.sizes["number"]
        skill = abs(forecast - obs).mean("number")
        pairs = abs(forecast - forecast.rename(number="other")).sum(["number", "other"])
        out["crps"] = spatial_mean(skill - pairs / (2 * m * (m - 1))).mean("time")
        var = forecast.var("number", ddof=1)
        out["spread"] = np.sqrt(spatial_mean(var).mean("time"))
        out["ensemble_mean_rmse_debiased"] = np.sqrt(spatial_mean((mean - obs) ** 2 - var / m).mean("time"))
        out["spread_skill"] = out["spread"] / out["rmse"]
        out["spread_skill_corrected"] = np.sqrt((m + 1) / m) * out["spread"] / out["rmse"]
    else:
        out["crps"] = out["mae"]
    return {k: np.asarray(v.transpose("prediction_timedelta").values) for k, v in out.items()}


def open_wb2(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, decode_timedelta=True)


def channel_of(ds: xr.Dataset, channel: str) -> xr.DataArray:
    """This test's own lookup of the two level layouts: a ``level`` dim or a suffixed variable."""
    names = {"z500": ("geopotential", 500), "t850": ("temperature", 850), "t2m": ("2m_temperature", None)}
    name, level = names[channel]
    if level is None:
        return ds[name]
    return ds[f"{name}_{level}"] if f"{name}_{level}" in ds else ds[name].sel(level=level)


def test_scores_equal_wb2_formulas_on_the_exported_files(trained):
    truth = open_wb2(trained / "truth.zarr")
    clim = open_wb2(trained / "truth.climatology.zarr")
    assert "dayofyear" in clim.dims and truth["time"].dtype.kind == "M"
    results = {r["model"]: r for r in load_results(trained / "results")}
    for model in ("persistence", "noisy_persistence"):
        forecast = open_wb2(next(trained.rglob(f"{model}/seed0.forecast.zarr")))
        assert ("number" in forecast.dims) == (model == "noisy_persistence")
        for channel in CHANNELS:
            want = wb2_scores(channel_of(forecast, channel), channel_of(truth, channel), channel_of(clim, channel))
            for metric, values in want.items():
                got = results[model]["scores"][metric][channel]
                # the bias is a sum of errors of both signs: its float32 row sums are exact to 1e-6 of the
                # errors' size (the MAE), not of the (much smaller) bias itself
                atol = RTOL * float(want["mae"].min()) if metric == "bias" else 0.0
                np.testing.assert_allclose(got, values, rtol=RTOL, atol=atol, err_msg=f"{model} {metric} {channel}")


def test_evaluate_reproduces_the_trained_models_scores(trained, bench_toml):
    results = {r["model"]: r for r in load_results(trained / "results")}
    for model in ("persistence", "noisy_persistence"):
        path = next(trained.rglob(f"{model}/seed0.forecast.zarr"))
        out = CliRunner().invoke(main, ["evaluate", str(path), "--benchmark", str(bench_toml), "--name",
                                        f"{model}_file", "--profile", "smoke", "--output",
                                        str(trained / "results"), "--quiet"])
        assert out.exit_code == 0, out.output
    after = {r["model"]: r for r in load_results(trained / "results")}
    for model in ("persistence", "noisy_persistence"):
        external, trained_run = after[f"{model}_file"], results[model]
        assert external["external"] is True and external["family"] == "external"
        assert external["test_windows"] == trained_run["test_windows"]
        assert external["reference_scores"] == trained_run["reference_scores"]
        assert set(external["scores"]) == set(trained_run["scores"])
        for metric, by_channel in trained_run["scores"].items():
            for channel, values in by_channel.items():
                np.testing.assert_allclose(external["scores"][metric][channel], values, rtol=RTOL,
                                           err_msg=f"{model} {metric} {channel}")
    board = (trained / "results" / "leaderboards").rglob("leaderboard.md")
    text = next(board).read_text()
    assert "persistence_file (external)" in text and "spread/skill (×√((M+1)/M))" in text


# --------------------------------------------------------------------------------------------- bad files

@pytest.fixture
def forecast_file(trained) -> Path:
    return next(trained.rglob("persistence/seed0.forecast.zarr"))


def _rewrite(src: Path, dst: Path, change) -> Path:
    ds = change(xr.open_zarr(src, decode_timedelta=True).load())
    ds.to_zarr(dst, mode="w", consolidated=True, zarr_format=2)
    return dst


@pytest.mark.parametrize("change,message", [
    (lambda ds: ds.rename(prediction_timedelta="lead_time"), "no 'prediction_timedelta' coordinate"),
    (lambda ds: ds.drop_vars("temperature_850"), "no variable 'temperature' (with level 850) or "
                                                 "'temperature_850' for channel 't850'"),
    (lambda ds: ds.isel(time=slice(1, None)), "coordinate 'time' lacks 1 of the"),
    (lambda ds: ds.isel(prediction_timedelta=slice(0, 3)), "lacks lead time(s) 24 h"),
    (lambda ds: ds.assign_coords(longitude=ds["longitude"] + 1.0), "longitude"),
    (lambda ds: ds.expand_dims(extra=2), "expected dims (time, prediction_timedelta, latitude, longitude)"),
])
def test_bad_forecast_files_are_refused_naming_file_and_field(tmp_path, forecast_file, bench_toml, change,
                                                              message):
    bad = _rewrite(forecast_file, tmp_path / "bad.zarr", change)
    with pytest.raises(DataError) as info:
        evaluate_forecast_file(bad, get_benchmark(str(bench_toml)), output=tmp_path / "out", progress=False)
    assert f"forecast file {bad}" in str(info.value) and message in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()  # nothing scored or written


def test_missing_forecast_file_is_named(tmp_path, bench_toml):
    out = CliRunner().invoke(main, ["evaluate", str(tmp_path / "none.zarr"), "--benchmark", str(bench_toml)])
    assert out.exit_code == 2 and f"forecast file {tmp_path / 'none.zarr'}: does not exist" in out.output
