"""The climatology ACC and the climatology baseline are scored against (wxbench.data.climatology): the calendar
climatology equals an independent transcription of WeatherBench 2's computation and recovers a known cycle,
its smoothing has the documented window, a flat climatology inflates ACC, WB2 stores round trip, and bad
stores fail before any work, naming the store and the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from wxbench.cli import main
from wxbench.data.benchmarks import Benchmark
from wxbench.data.climatology import (DAYS, Climatology, benchmark_climatology, calendar_climatology,
                                      check_wb2_climatology, day_of_year, read_wb2_climatology, window_weights)
from wxbench.data.layout import LATITUDES, LONGITUDES
from wxbench.errors import DataError
from wxbench.forecast_io import write_wb2_climatology
from wxbench.metrics import ScoreAccumulator, latitude_weights
from wxbench.testing_data import TINY_PERIOD, TINY_SPLITS, make_times, write_benchmark_toml, write_wb2_layout

SMALL_LAT = (-60.0, -20.0, 20.0, 60.0)
N_LON = 8


def six_hourly(first_year: int, last_year: int) -> np.ndarray:
    return make_times(list(range(first_year, last_year + 1)), 6, default_end="")


def cycle_fields(times: np.ndarray, *, seasonal: float = 10.0, diurnal: float = 3.0, noise: float = 0.0,
                 seed: int = 0) -> np.ndarray:
    """(T, 2, 4, 8) float32: a seasonal cosine of the day of year (period 366 days), a diurnal wave travelling
    in longitude, optional white noise."""
    doy = day_of_year(times).astype(np.float64)
    hour = ((times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")).astype(np.float64)
    lon = np.deg2rad(np.arange(N_LON) * 45.0)
    season = seasonal * np.cos(2 * np.pi * (doy - 1) / DAYS)[:, None, None, None]
    day = diurnal * np.cos(2 * np.pi * hour[:, None, None, None] / 24 + lon)
    rng = np.random.default_rng(seed)
    values = season + day + np.zeros((len(times), 2, len(SMALL_LAT), N_LON))
    values[:, 1] *= -0.5  # a second channel with another amplitude
    return (values + noise * rng.standard_normal(values.shape)).astype(np.float32)


def wb2_transcription(values: np.ndarray, times: np.ndarray, window: int = 61) -> np.ndarray:
    """WB2's explicit climatology method (weatherbench2 utils.compute_hourly_stat / compute_rolling_stat),
    transcribed independently with xarray: per hour of day, the years stacked by day of year (day 366 of a
    common year filled from its day 365), padded circularly, a centred rolling window of triangular weights,
    weighted mean over window and years. Returns (366, hours, C, H, W)."""
    da = xr.DataArray(values.astype(np.float64), dims=("time", "c", "y", "x"), coords={"time": times})
    half = window // 2
    weights = xr.DataArray(np.concatenate([np.linspace(0, 1, half + 1), np.linspace(1, 0, half + 1)[1:]]),
                           dims="window")
    out = []
    for hour in np.unique(da.time.dt.hour.values):
        at_hour = da.isel(time=da.time.dt.hour.values == hour)
        years = []
        for year in np.unique(at_hour.time.dt.year.values):
            one = at_hour.sel(time=str(year))
            years.append(one.assign_coords(time=one.time.dt.dayofyear.values).rename(time="dayofyear"))
        stacked = xr.concat(years, dim="year", join="outer")  #: a common year has no day 366
        stacked = stacked.fillna(stacked.sel(dayofyear=365))
        padded = stacked.pad(dayofyear=half, mode="wrap")
        rolled = padded.rolling(dayofyear=window, center=True).construct("window")
        mean = rolled.weighted(weights).mean(("window", "year"))
        out.append(mean.isel(dayofyear=slice(half, -half)).transpose("dayofyear", "c", "y", "x").values)
    return np.stack(out, axis=1)


# -- the calendar climatology --------------------------------------------------------------------------------

def test_day_of_year_is_the_ordinal_day_as_xarray_counts_it():
    t = np.array(["2019-03-01T06", "2020-02-29T00", "2020-03-01T00", "2020-12-31T18", "2019-12-31T00"],
                 dtype="datetime64[ns]")
    assert day_of_year(t).tolist() == [60, 60, 61, 366, 365]
    assert day_of_year(t).tolist() == xr.DataArray(t).dt.dayofyear.values.tolist()


def test_calendar_climatology_equals_a_transcription_of_wb2s_method():
    times = six_hourly(1979, 1982)  # 1980 is a leap year
    values = cycle_fields(times, noise=2.0)
    clim = calendar_climatology(values, times, ("a", "b"))
    expected = wb2_transcription(values, times)
    assert clim.kind == "calendar" and clim.hours == (0, 6, 12, 18) and clim.window_days == 61
    assert clim.values.shape == (DAYS, 4, 2, len(SMALL_LAT), N_LON)
    np.testing.assert_allclose(clim.values, expected, rtol=0, atol=2e-5)


def test_calendar_climatology_recovers_a_seasonal_and_diurnal_cycle():
    """The diurnal wave is recovered exactly; the seasonal cosine with the damping of the documented window,
    ``sum_k w_k cos(2 pi k / 366) / sum_k w_k`` for the triangular weights of +-30 days."""
    times = six_hourly(1979, 1986)
    values = cycle_fields(times)
    clim = calendar_climatology(values, times, ("a", "b"))
    half = 30
    k = np.arange(-half, half + 1)
    w = 1 - np.abs(k) / half
    damping = (w * np.cos(2 * np.pi * k / DAYS)).sum() / w.sum()
    assert 0.9 < damping < 0.99  # the window visibly smooths the seasonal cycle
    days = np.arange(1, DAYS + 1)[:, None, None]
    hours = np.array([0, 6, 12, 18])[None, :, None]
    lon = np.deg2rad(np.arange(N_LON) * 45.0)
    expected = damping * 10.0 * np.cos(2 * np.pi * (days - 1) / DAYS) + 3.0 * np.cos(2 * np.pi * hours / 24 + lon)
    # (day 366 of the common years is their 31 December, one day's phase off: a small, documented difference)
    np.testing.assert_allclose(clim.values[:, :, 0, 0], expected, atol=0.02)
    np.testing.assert_allclose(clim.values[:, :, 1], -0.5 * clim.values[:, :, 0], atol=1e-5)


def test_smoothing_window_is_61_days_of_triangular_weights():
    """One day of the year set to 1: the climatology around it is the normalised window, zero beyond 30 days."""
    times = six_hourly(1979, 1982)
    values = np.zeros((len(times), 2, 1, 1), dtype=np.float32)
    values[day_of_year(times) == 100] = 1.0
    clim = calendar_climatology(values, times, ("a", "b")).values[:, 0, 0, 0, 0]
    weights = window_weights(61)
    assert len(weights) == 61 and weights[0] == weights[-1] == 0 and weights[30] == 1
    np.testing.assert_allclose(weights[29:32], [29 / 30, 1, 29 / 30])
    expected = np.zeros(DAYS)
    expected[np.arange(100 - 30, 100 + 31) - 1] = weights / weights.sum()
    np.testing.assert_allclose(clim, expected, atol=1e-7)
    with pytest.raises(DataError, match="odd number of days"):
        window_weights(60)


def test_lookup_is_by_each_valid_times_day_of_year_and_hour():
    times = six_hourly(1979, 1980)
    clim = calendar_climatology(cycle_fields(times, noise=1.0), times, ("a", "b"))
    valid = np.array([["2020-03-01T06", "2020-03-01T12"], ["2019-12-31T18", "2021-01-01T00"]],
                     dtype="datetime64[ns]")
    got = clim.at(valid)
    assert got.shape == (2, 2, 2, len(SMALL_LAT), N_LON) and got.dtype == torch.float32
    for (i, j), (day, hour) in {(0, 0): (61, 1), (0, 1): (61, 2), (1, 0): (365, 3), (1, 1): (1, 0)}.items():
        assert torch.equal(got[i, j], torch.from_numpy(clim.values[day - 1, hour]))
    with pytest.raises(DataError, match="no value for hour 03 UTC"):
        clim.at(np.array(["2020-01-01T03"], dtype="datetime64[ns]"))


def test_time_invariant_climatology_is_the_same_at_every_time():
    fields = torch.randn(20, 2, 4, 8, dtype=torch.float64).float()
    clim = Climatology.time_mean(fields, ("a", "b"))
    assert clim.kind == "invariant"
    got = clim.at(np.array(["2000-01-01T00", "2000-07-01T06", "2001-02-03T18"], dtype="datetime64[ns]"))
    assert got.shape == (3, 2, 4, 8)
    for g in got:
        assert torch.equal(g, fields.double().mean(0).float())


def test_a_training_split_too_short_for_a_day_of_year_is_flagged_at_load_and_refused_in_scoring(tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setenv("WXBENCH_CACHE", str(tmp_path))
    times = make_times(("1979-12-01T00", "1979-12-24T18"), 6, default_end="")
    clim = calendar_climatology(cycle_fields(times), times, ("a", "b"))
    clim.at(np.array(["1980-01-05T00"], dtype="datetime64[ns]"))  # within 30 days of the training days
    bench = Benchmark(name="short", version=1, description="", source="wb2", channels=("z500", "t850"),
                      train=("1979-12-01T00", "1979-12-24T18"), val=("1980-01-01T00", "1980-01-31T18"),
                      test=("1980-06-01T00", "1980-06-30T18"))
    test_times = make_times(("1980-06-01T00", "1980-06-30T18"), 6, default_end="")
    with pytest.warns(RuntimeWarning, match=r"benchmark 'short', test split: .*no data for day of year 153"):
        short = benchmark_climatology(bench, cycle_fields(times), {"train": times, "test": test_times},
                                      data_hash="sha256:test-short")
    with pytest.raises(DataError, match=r"no data for day of year 153 at 00 UTC, needed at 1980-06-01T00 .*"
                                        r"the training split covers too little of the year"):
        short.at(test_times)


# -- ACC with a calendar climatology --------------------------------------------------------------------------

def test_a_flat_climatology_inflates_acc_on_data_with_cycles():
    """Truth = cycle + anomaly; the forecast gets the cycle right and half the anomaly plus noise. Against the
    calendar climatology ACC measures the anomaly forecast; against the time mean the shared cycle inflates it."""
    train_times = six_hourly(1979, 1982)
    train = cycle_fields(train_times, noise=1.0, seed=1)
    calendar = calendar_climatology(train, train_times, ("a", "b"))
    flat = Climatology.time_mean(train, ("a", "b"))
    rng = np.random.default_rng(2)
    inits = make_times(("1983-01-01T00", "1983-12-31T12"), 12, default_end="")
    valid = inits[:, None] + np.array([6, 12], dtype="timedelta64[h]")
    cycle = cycle_fields(valid.reshape(-1)).reshape(len(inits), 2, 2, len(SMALL_LAT), N_LON)
    anomaly = rng.standard_normal(cycle.shape).astype(np.float32)
    truth = torch.from_numpy(cycle + anomaly)
    forecast = torch.from_numpy(cycle + 0.5 * anomaly + 0.5 * rng.standard_normal(cycle.shape).astype(np.float32))
    scores = {}
    for name, clim in (("calendar", calendar), ("flat", flat)):
        acc = ScoreAccumulator(SMALL_LAT, ("a", "b"), (6, 12))
        for start in range(0, len(inits), 64):
            batch = slice(start, start + 64)
            acc.update(forecast[batch], truth[batch], climatology=clim.at(valid[batch]))
        scores[name] = np.array(acc.compute()["acc"]["a"])
    # the anomaly forecast's correlation is 0.5 / sqrt(0.5) = 0.71; the cycle pushes the flat one near 1
    assert np.all(np.abs(scores["calendar"] - 0.707) < 0.05), scores
    assert np.all(scores["flat"] > scores["calendar"] + 0.15), scores


def test_per_sample_climatology_acc_equals_a_direct_transcription():
    rng = np.random.default_rng(3)
    b, lead, c, h, w = 5, 2, 2, len(SMALL_LAT), N_LON
    truth, forecast, clim = (torch.from_numpy(rng.standard_normal((b, lead, c, h, w)) * s + m).float()
                             for s, m in ((3.0, 280.0), (3.0, 280.0), (2.0, 279.0)))
    acc = ScoreAccumulator(SMALL_LAT, ("a", "b"), (6, 12))
    acc.update(forecast, truth, climatology=clim)
    weights = latitude_weights(SMALL_LAT).numpy()[:, None]
    fa, oa = (forecast - clim).double().numpy(), (truth - clim).double().numpy()
    per_sample = (weights * fa * oa).sum((-2, -1)) / np.sqrt((weights * fa ** 2).sum((-2, -1))
                                                             * (weights * oa ** 2).sum((-2, -1)))
    expected = per_sample.mean(0)  # (L, C)
    got = acc.compute()["acc"]
    for ci, name in enumerate(("a", "b")):
        np.testing.assert_allclose(got[name], expected[:, ci], rtol=1e-6)


# -- WB2 climatology stores -----------------------------------------------------------------------------------

def wb2_climatology_dataset(values: np.ndarray, *, hours=(0, 6, 12, 18), levels=(500, 850), days=DAYS,
                            lat_descending: bool = True) -> xr.Dataset:
    """A store as WB2 publishes them: dims (hour, dayofyear, level, longitude, latitude), long names, every
    pressure-level variable at every level. ``values`` (366, K, 2, 32, 64) hold z500 and t850; the other
    level of each variable holds them + 10."""
    lat = LATITUDES[::-1] if lat_descending else LATITUDES

    def field(c: int, own_level: int) -> np.ndarray:  # (hour, dayofyear, level, longitude, latitude)
        v = values[:days, :, c].transpose(1, 0, 3, 2)  # (K, days, lon, lat)
        if lat_descending:
            v = v[..., ::-1]
        return np.stack([v + (0.0 if lev == own_level else 10.0) for lev in levels], axis=2)

    coords = {"hour": np.asarray(hours), "dayofyear": np.arange(1, days + 1), "level": np.asarray(levels),
              "longitude": LONGITUDES, "latitude": lat}
    dims = ("hour", "dayofyear", "level", "longitude", "latitude")
    return xr.Dataset({"geopotential": (dims, field(0, 500), {"units": "m**2 s**-2"}),
                       "temperature": (dims, field(1, 850), {"units": "K"})}, coords=coords)


def write_store(ds: xr.Dataset, path: Path) -> Path:
    ds.to_zarr(path, zarr_format=2, consolidated=True)  # as the published stores
    return path


@pytest.fixture(scope="module")
def full_grid_climatology() -> Climatology:
    rng = np.random.default_rng(4)
    values = (rng.standard_normal((DAYS, 4, 2, 32, 64)) + np.array([54000.0, 270.0])[:, None, None]).astype(np.float32)
    return Climatology(values, ("z500", "t850"), hours=(0, 6, 12, 18), origin="test")


def test_a_wb2_climatology_store_round_trips(tmp_path, full_grid_climatology):
    path = write_store(wb2_climatology_dataset(full_grid_climatology.values), tmp_path / "clim.zarr")
    check_wb2_climatology(path, ("z500", "t850"), 6)
    read = read_wb2_climatology(path, ("z500", "t850"), step_hours=6)
    assert read.kind == "calendar" and read.hours == (0, 6, 12, 18) and read.channels == ("z500", "t850")
    np.testing.assert_array_equal(read.values, full_grid_climatology.values)
    # the other level of the store is another field (+10)
    other = read_wb2_climatology(path, ("z850",), step_hours=6)
    np.testing.assert_array_equal(other.values[:, :, 0], full_grid_climatology.values[:, :, 0] + 10.0)


def test_what_wxbench_export_writes_reads_back(tmp_path, full_grid_climatology):
    """The WB2 layout wxbench export writes (level-suffixed variables for z500 + t850) is a valid --climatology."""
    path = write_wb2_climatology(tmp_path / "export.zarr", full_grid_climatology.values, ("z500", "t850"),
                                 LATITUDES, LONGITUDES, hours=full_grid_climatology.hours)
    read = read_wb2_climatology(path, ("z500", "t850"))
    np.testing.assert_array_equal(read.values, full_grid_climatology.values)


def test_a_daily_climatology_store_serves_every_hour(tmp_path, full_grid_climatology):
    daily = wb2_climatology_dataset(full_grid_climatology.values[:, :1], hours=(0,)).isel(hour=0, drop=True)
    write_store(daily, tmp_path / "daily.zarr")
    read = read_wb2_climatology(tmp_path / "daily.zarr", ("z500", "t850"))
    for k in range(4):
        np.testing.assert_array_equal(read.values[:, k], full_grid_climatology.values[:, 0])


@pytest.mark.parametrize("change, message", [
    (lambda ds: ds.isel(latitude=slice(0, 31)), r"grid mismatch in climatology store .*variable 'geopotential'"),
    (lambda ds: ds.isel(dayofyear=slice(0, 365)), r"field 'dayofyear' has 365 values \(1..365\), expected the 366"),
    (lambda ds: ds.isel(hour=[0, 2]), r"field 'hour' has 0, 12; the benchmark's valid times also need hour\(s\) "
                                      r"06, 18 UTC"),
    (lambda ds: ds.drop_vars("temperature"), r"no variable 'temperature'.* for channel 't850'"),
    (lambda ds: ds.sel(level=[500]), r"variable 'temperature' has no level 850 hPa for channel 't850'"),
    (lambda ds: ds.rename(dayofyear="doy"), r"no 'dayofyear' coordinate"),
])
def test_a_bad_climatology_store_is_a_clear_error(tmp_path, full_grid_climatology, change, message):
    path = tmp_path / "bad.zarr"
    write_store(change(wb2_climatology_dataset(full_grid_climatology.values)), path)
    with pytest.raises(DataError, match=r"climatology store .*bad\.zarr") as info:
        check_wb2_climatology(path, ("z500", "t850"), 6)
    assert info.match(message)


def test_a_missing_or_unreadable_store_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"climatology store .*nothing\.zarr: does not exist"):
        read_wb2_climatology(tmp_path / "nothing.zarr", ("z500",))
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(DataError, match=r"climatology store .*junk\.zarr: cannot open as zarr"):
        read_wb2_climatology(tmp_path / "junk.zarr", ("z500",))
    try:
        import gcsfs  # noqa: F401
    except ImportError:  # without the cloud extra, a gs:// store is refused with the install hint
        with pytest.raises(DataError, match=r"climatology store gs://bucket/clim\.zarr: reading gs:// needs gcsfs"):
            check_wb2_climatology("gs://bucket/clim.zarr", ("z500",), 6)


# -- the benchmark's climatology, end to end --------------------------------------------------------------------

CHANNELS = ["z500", "t850"]
SPLITS = {**TINY_SPLITS, "test": ("1979-12-31T00", "1980-01-06T18")}


@pytest.fixture(scope="module")
def wb2_toml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clim-wb2")
    store = write_wb2_layout(root / "data.zarr", CHANNELS, TINY_PERIOD)
    return write_benchmark_toml(root / "bench.toml", name="clim-wb2", source="wb2", data=store, channels=CHANNELS,
                                splits=SPLITS)


def test_wb2_benchmarks_get_a_cached_calendar_climatology(tmp_path, wb2_toml, monkeypatch):
    from wxbench.data import climatology as module
    from wxbench.data.loading import load_benchmark

    monkeypatch.setenv("WXBENCH_CACHE", str(tmp_path / "cache"))
    bench = Benchmark.from_toml(wb2_toml)
    data = load_benchmark(bench, progress=False)
    assert data.climatology.kind == "calendar" and data.climatology.window_days == 61
    assert data.split("train", "zscore").climatology is data.climatology
    cached = list((tmp_path / "cache" / "climatology").glob("*.npz"))
    assert len(cached) == 1 and data.data_hash.split(":")[1][:40] in cached[0].name

    def recomputed(*args, **kwargs):
        raise AssertionError("the cached climatology was recomputed")

    monkeypatch.setattr(module, "calendar_climatology", recomputed)
    again = load_benchmark(bench, progress=False)
    np.testing.assert_array_equal(again.climatology.values, data.climatology.values)


def run_cli(*args: str):
    return CliRunner().invoke(main, ["run", "--profile", "smoke", "--quiet", "--no-checkpoint", *args])


def test_a_user_climatology_store_scores_the_climatology_baseline(tmp_path, wb2_toml, full_grid_climatology,
                                                                  monkeypatch):
    """With --climatology, the climatology baseline forecasts the store's values at each valid time, and its
    RMSE is that of those values against the truth."""
    from wxbench.data.loading import load_benchmark
    from wxbench.results import load_results

    monkeypatch.setenv("WXBENCH_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "clim.zarr"
    write_store(wb2_climatology_dataset(full_grid_climatology.values), store)
    out = run_cli("-m", "climatology", "--benchmark", str(wb2_toml), "--climatology", str(store),
                  "--output", str(tmp_path / "results"), "--no-leaderboard")
    assert out.exit_code == 0, out.output
    (result,) = load_results(tmp_path / "results")
    assert result["status"] == "ok" and result["benchmark"]["climatology"] == str(store.resolve())

    data = load_benchmark(Benchmark.from_toml(wb2_toml), progress=False)
    test = data.split("test", "zscore")
    _, target = test.windows(slice(None))
    truth = test.normaliser.denormalise(target).double().numpy()
    valid = test.window_times(slice(None))[:, None] + np.array(data.grid.lead_hours, dtype="timedelta64[h]")
    clim = full_grid_climatology.at(valid).double().numpy()
    weights = latitude_weights(data.grid.lat).numpy()[:, None]
    expected = np.sqrt((weights * (clim - truth) ** 2).mean((-2, -1)).mean(0))  # (L, C)
    for ci, channel in enumerate(CHANNELS):
        np.testing.assert_allclose(result["scores"]["rmse"][channel], expected[:, ci], rtol=1e-5)


def test_a_bad_climatology_option_fails_before_any_work(tmp_path, wb2_toml, full_grid_climatology):
    store = tmp_path / "other-grid.zarr"
    write_store(wb2_climatology_dataset(full_grid_climatology.values).isel(longitude=slice(0, 32)), store)
    out = run_cli("-m", "persistence", "--benchmark", str(wb2_toml), "--climatology", str(store),
                  "--output", str(tmp_path / "results"))
    assert out.exit_code == 2
    assert "grid mismatch in climatology store" in out.output and "other-grid.zarr" in out.output
    assert "variable 'geopotential'" in out.output and "longitudes" in out.output
    assert not (tmp_path / "results").exists()


def test_a_remote_climatology_store_reads_through_fsspec(full_grid_climatology):
    import fsspec

    ds = wb2_climatology_dataset(full_grid_climatology.values)
    ds.to_zarr(fsspec.get_mapper("memory://wxbench-test/clim.zarr"), zarr_format=2, consolidated=True)
    try:
        read = read_wb2_climatology("memory://wxbench-test/clim.zarr", ("z500", "t850"))
        np.testing.assert_array_equal(read.values, full_grid_climatology.values)
    finally:
        fsspec.filesystem("memory").rm("/wxbench-test", recursive=True)
