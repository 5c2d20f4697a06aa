"""WB1 / WB2 readers: both real layouts -> one internal layout, lazily, with strict validation."""

from __future__ import annotations

import re
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from wxbench.data import layout
from wxbench.data.channels import CHANNEL_ALIASES, canonical_channel, parse_channel, wb2_location
from wxbench.data.layout import LATITUDES, LONGITUDES, validate_fields
from wxbench.data.wb1 import open_wb1, wb1_file_path
from wxbench.data.wb2 import open_wb2
from wxbench.errors import DataError
from wxbench.testing_data import (make_times, make_wb1_dataset, make_wb2_dataset, synthetic_values, write_wb1_file,
                                  write_wb1_layout, write_wb2_layout, write_wb2_store)

CHANNELS = ["z500", "t850", "t2m", "u850"]


def _t(s: str) -> np.datetime64:
    return np.datetime64(s, "ns")


def _hourly(start: str, end: str) -> np.ndarray:
    return make_times((start, end), 1, default_end="")


def _expected(channels, times) -> np.ndarray:
    return np.stack([synthetic_values(c, times) for c in channels], axis=1)


@pytest.fixture(scope="module")
def wb1_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb1")
    write_wb1_layout(root, CHANNELS)
    return root


@pytest.fixture(scope="module")
def wb2_store(tmp_path_factory) -> Path:
    return write_wb2_layout(tmp_path_factory.mktemp("wb2") / "era5.zarr", CHANNELS)


def _raises(match_all: list[str], fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for part in match_all:
        assert part in msg, f"{part!r} not in message: {msg}"
    return msg


# ------------------------------------------------------------------------------------------------ layout & content

def test_writers_use_the_real_layouts(tmp_path, wb1_root, wb2_store):
    assert (wb1_root / "geopotential_500" / "geopotential_500hPa_1979_5.625deg.nc").is_file()
    assert (wb1_root / "geopotential_500" / "geopotential_500hPa_1980_5.625deg.nc").is_file()
    assert (wb1_root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc").is_file()
    assert (wb1_root / "2m_temperature" / "2m_temperature_1979_5.625deg.nc").is_file()
    ds = xr.open_dataset(wb1_root / "geopotential_500" / "geopotential_500hPa_1980_5.625deg.nc")
    assert ds["z"].dims == ("time", "lat", "lon") and int(ds["level"]) == 500
    assert ds.sizes["time"] == 48 and ds["time"].values[0] == _t("1980-01-01T00")
    ds.close()
    z = xr.open_zarr(wb2_store)
    assert z["geopotential"].dims == ("time", "level", "longitude", "latitude")
    assert z["2m_temperature"].dims == ("time", "longitude", "latitude")
    assert list(z["level"].values) == [500, 850]
    assert (z["latitude"].values == LATITUDES).all()


def test_wb1_and_wb2_read_back_identically(wb1_root, wb2_store):
    a = open_wb1(wb1_root, CHANNELS)
    b = open_wb2(wb2_store, CHANNELS)
    for f in (a, b):
        assert f.name == "fields"
        assert f.dims == ("time", "channel", "lat", "lon")
        assert f.dtype == np.float32
        assert f["time"].dtype == np.dtype("datetime64[ns]")
        assert list(f["channel"].values) == CHANNELS
        np.testing.assert_array_equal(f["lat"].values, LATITUDES)
        np.testing.assert_array_equal(f["lon"].values, LONGITUDES)
        assert f.shape == (16, 4, 32, 64)
    a, b = a.load(), b.load()
    xr.testing.assert_equal(a, b)
    np.testing.assert_array_equal(a.values, _expected(CHANNELS, a["time"].values))
    assert a.attrs["source_format"] == "WB1" and b.attrs["source_format"] == "WB2"
    validate_fields(a, source="wb1")
    validate_fields(b, source="wb2")


def test_readers_are_lazy(wb1_root, wb2_store, monkeypatch):
    from xarray.backends import netCDF4_, zarr as xzarr

    reads: list[tuple] = []
    nc_get = netCDF4_.NetCDF4ArrayWrapper.__getitem__
    zarr_get = xzarr.ZarrArrayWrapper.__getitem__

    def nc_spy(self, key):
        if len(self.shape) >= 3:
            reads.append(("nc", self.variable_name))
        return nc_get(self, key)

    def zarr_spy(self, key):
        if len(self.shape) >= 3:
            reads.append(("zarr", self.shape))
        return zarr_get(self, key)

    monkeypatch.setattr(netCDF4_.NetCDF4ArrayWrapper, "__getitem__", nc_spy)
    monkeypatch.setattr(xzarr.ZarrArrayWrapper, "__getitem__", zarr_spy)
    a = open_wb1(wb1_root, CHANNELS)
    b = open_wb2(wb2_store, CHANNELS)
    assert isinstance(a.data, da.Array) and isinstance(b.data, da.Array)
    assert reads == [], reads
    assert a.chunks is not None and a.chunks[1] == (1, 1, 1, 1)
    a.isel(channel=0).values  # now it reads
    assert any(r[0] == "nc" for r in reads)


def test_hourly_is_subsampled_to_6h(wb1_root):
    f = open_wb1(wb1_root, ["t850"])
    t = f["time"].values
    expected = make_times(("1979-12-30T00", "1980-01-02T18"), 6, default_end="")
    np.testing.assert_array_equal(t, expected)
    assert set(((t - t.astype("datetime64[D]")) // np.timedelta64(1, "h")).tolist()) == {0, 6, 12, 18}
    f12 = open_wb1(wb1_root, ["t850"], step_hours=12)
    np.testing.assert_array_equal(f12["time"].values, expected[::2])
    np.testing.assert_array_equal(f12.values, f.values[::2])
    f1 = open_wb1(wb1_root, ["t850"], step_hours=1)
    assert len(f1["time"]) == 96


def test_years_argument(wb1_root):
    f = open_wb1(wb1_root, ["z500"], years=range(1980, 1981))
    assert f["time"].values[0] == _t("1980-01-01T00") and len(f["time"]) == 8
    f = open_wb1(wb1_root, ["z500"], years=[1979])
    assert f["time"].values[-1] == _t("1979-12-31T18")


def test_wb2_years_and_step(wb2_store):
    f = open_wb2(wb2_store, ["t2m"], years=[1980])
    assert f["time"].values[0] == _t("1980-01-01T00") and len(f["time"]) == 8
    f12 = open_wb2(wb2_store, ["t2m"], step_hours=12)
    assert len(f12["time"]) == 8
    _raises(["WB2 store", "gap between 1979-12-30T00 and 1979-12-30T06", "expected 3 h steps"],
            open_wb2, wb2_store, ["t2m"], step_hours=3)
    _raises(["no times in year 1981"], open_wb2, wb2_store, ["t2m"], years=[1980, 1981])


def test_descending_latitudes_are_flipped(tmp_path, wb1_root, wb2_store):
    write_wb1_layout(tmp_path / "wb1", ["z500", "t2m"], lat_descending=True)
    write_wb2_layout(tmp_path / "wb2.zarr", ["z500", "t2m"], lat_descending=True)
    ds = xr.open_dataset(tmp_path / "wb1" / "2m_temperature" / "2m_temperature_1980_5.625deg.nc")
    assert ds["lat"].values[0] > 0
    ds.close()
    ref = open_wb1(wb1_root, ["z500", "t2m"]).load()
    a = open_wb1(tmp_path / "wb1", ["z500", "t2m"]).load()
    b = open_wb2(tmp_path / "wb2.zarr", ["z500", "t2m"]).load()
    xr.testing.assert_equal(a, ref)
    xr.testing.assert_equal(b, ref)


def test_level_variants_and_all_levels_folder(tmp_path, wb1_root):
    ref = open_wb1(wb1_root, ["z500", "t850"]).load()
    write_wb1_layout(tmp_path / "dim", ["z500", "t850"], level_style="dim")
    write_wb1_layout(tmp_path / "none", ["z500", "t850"], level_style="none")
    files = write_wb1_layout(tmp_path / "all", ["z500", "z850", "t850"], all_levels=True)
    assert files["z500"][0] == tmp_path / "all" / "geopotential" / "geopotential_1979_5.625deg.nc"
    for sub in ("dim", "none", "all"):
        xr.testing.assert_equal(open_wb1(tmp_path / sub, ["z500", "t850"]).load(), ref)
    _raises(["geopotential_1979_5.625deg.nc", "level 700 hPa", "not found", "has: 500, 850"],
            open_wb1, tmp_path / "all", ["z700"])


def test_channel_names_and_tables():
    assert parse_channel("z500").variable.wb1_var == "z"
    assert parse_channel("t2m").level is None and parse_channel("u10").level is None
    assert canonical_channel("Z500") == "z500"
    assert canonical_channel("geopotential_500") == "z500"
    assert canonical_channel("2m_temperature") == "t2m"
    assert CHANNEL_ALIASES["temperature_850"] == "t850"
    path, var = wb1_file_path("/r", "t850", 1980)
    assert path == Path("/r/temperature_850/temperature_850hPa_1980_5.625deg.nc") and var == "t"
    path, var = wb1_file_path("/r", "t2m", 1979)
    assert path == Path("/r/2m_temperature/2m_temperature_1979_5.625deg.nc") and var == "t2m"
    assert wb1_file_path("/r", "u850", 1979)[0].parent.name == "u_component_of_wind_850"
    assert wb2_location("q700") == ("specific_humidity", 700)
    assert wb2_location("t2m") == ("2m_temperature", None)
    assert wb2_location("tp") == ("total_precipitation_6hr", None)
    _raises(["unknown channel 'foo1'"], parse_channel, "foo1")
    _raises(["'z'", "level"], parse_channel, "z")
    _raises(["'tp'", "WB1", "hourly"], wb1_file_path, "/r", "tp", 1979)


# ------------------------------------------------------------------------------------------------ WB1 errors

def _wb1(tmp_path, channels=("t850",), **kw) -> Path:
    root = tmp_path / "wb1"
    write_wb1_layout(root, list(channels), **kw)
    return root


def test_wb1_variable_not_found(tmp_path):
    root = _wb1(tmp_path)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    ds = make_wb1_dataset("t850", _hourly("1980-01-01T00", "1980-01-02T23")).rename({"t": "z"})
    write_wb1_file(ds, path)
    _raises([f"WB1 file {path}: variable 't' not found (has: 'z')"], open_wb1, root, ["t850"])


def test_wb1_gap_inside_a_file(tmp_path):
    t = _hourly("1979-12-30T00", "1980-01-02T23")
    t = t[(t < _t("1980-01-01T07")) | (t > _t("1980-01-01T23"))]  # drops 07..23 of Jan 1 (12 and 18 needed)
    root = _wb1(tmp_path, times=t)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    _raises([str(path), "'t'", "gap between 1980-01-01T06 and 1980-01-02T00", "expected 6 h steps"],
            open_wb1, root, ["t850"])


def test_wb1_hourly_gap_off_the_6h_times_is_harmless(tmp_path):
    t = _hourly("1979-12-30T00", "1980-01-02T23")
    t = t[t != _t("1980-01-01T03")]
    root = _wb1(tmp_path, times=t)
    assert len(open_wb1(root, ["t850"])["time"]) == 16


def test_wb1_gap_across_the_year_boundary(tmp_path):
    t = _hourly("1979-12-30T00", "1980-01-02T23")
    t = t[(t < _t("1980-01-01T00")) | (t > _t("1980-01-01T05"))]
    root = _wb1(tmp_path, times=t)
    f79 = root / "temperature_850" / "temperature_850hPa_1979_5.625deg.nc"
    f80 = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    _raises(["'t850'", "gap between 1979-12-31T18", "1980-01-01T06", str(f79), str(f80)], open_wb1, root, ["t850"])


def test_wb1_duplicated_times(tmp_path):
    t = _hourly("1980-01-01T00", "1980-01-02T23")
    t = np.sort(np.concatenate([t, [_t("1980-01-01T06")]]))
    root = _wb1(tmp_path, times=t)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    _raises([str(path), "duplicated times: 1980-01-01T06 (2x)"], open_wb1, root, ["t850"])


def test_wb1_non_monotonic_times(tmp_path):
    t = _hourly("1980-01-01T00", "1980-01-02T23")
    t[[6, 12]] = t[[12, 6]]
    root = _wb1(tmp_path, times=t)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    _raises([str(path), "not increasing", "1980-01-01T12 is followed by 1980-01-01T07"], open_wb1, root, ["t850"])


def test_wb1_file_holding_another_year(tmp_path):
    root = _wb1(tmp_path)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    write_wb1_file(make_wb1_dataset("t850", _hourly("1979-12-31T00", "1980-01-02T23")), path)
    _raises([str(path), "year 1980", "outside 1980", "1979-12-31T00"], open_wb1, root, ["t850"])


def test_wb1_nan_and_inf_values(tmp_path):
    root = _wb1(tmp_path)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    ds = make_wb1_dataset("t850", _hourly("1980-01-01T00", "1980-01-02T23"))
    ds["t"][6, 0, 0] = np.nan    # 1980-01-01T06: kept by the 6 h subsampling
    ds["t"][6, 3, 5] = np.nan
    ds["t"][18, 1, 1] = np.nan   # 1980-01-01T18
    ds["t"][7, 1, 1] = np.nan    # 1980-01-01T07: dropped by the subsampling, never read
    write_wb1_file(ds, path)
    fields = open_wb1(root, ["t850"])  # lazy: values not checked
    msg = _raises([str(path), "3 NaN values in channel 't850' at times 1980-01-01T06, 1980-01-01T18"],
                  validate_fields, fields, source="test")
    assert "1979" not in msg.split(" at times ")[1]
    _raises(["3 NaN values"], open_wb1, root, ["t850"], check_values=True)


def test_wb1_inf_values(tmp_path):
    root = _wb1(tmp_path)
    path = root / "temperature_850" / "temperature_850hPa_1979_5.625deg.nc"
    ds = make_wb1_dataset("t850", _hourly("1979-12-30T00", "1979-12-31T23"))
    ds["t"][12, 2, 2] = np.inf
    ds["t"][13, 2, 2] = -np.inf  # 1979-12-30T13: not kept
    ds["t"][18, 2, 2] = np.nan
    write_wb1_file(ds, path)
    _raises([str(path), "1 NaN and 1 infinite values in channel 't850' at times 1979-12-30T12, 1979-12-30T18"],
            open_wb1, root, ["t850"], check_values=True)


def test_wb1_grid_mismatch(tmp_path):
    root = _wb1(tmp_path)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    t = _hourly("1980-01-01T00", "1980-01-02T23")
    bad = xr.Dataset({"t": (("time", "lat", "lon"), np.zeros((len(t), 33, 64), np.float32))},
                     coords={"time": t, "lat": np.linspace(-90, 90, 33), "lon": LONGITUDES})
    write_wb1_file(bad, path)
    _raises([f"grid mismatch in WB1 file {path}", "expected 32 latitudes -87.1875..87.1875, got 33 (-90..90)"],
            open_wb1, root, ["t850"])
    ds = make_wb1_dataset("t850", t)
    ds = ds.assign_coords(lon=LONGITUDES + np.where(np.arange(64) == 10, 0.01, 0.0))
    write_wb1_file(ds, path)
    _raises([f"grid mismatch in WB1 file {path}", "longitude index 10 is 56.26, expected 56.25"],
            open_wb1, root, ["t850"])
    ds = make_wb1_dataset("t850", t).assign_coords(lon=LONGITUDES - 180.0)
    write_wb1_file(ds, path)
    _raises([str(path), "expected 64 longitudes 0..354.375"], open_wb1, root, ["t850"])


def test_wb1_missing_folder_and_file(tmp_path):
    root = _wb1(tmp_path)
    _raises(["no folder for channel 'z500'", str(root / "geopotential_500"), str(root / "geopotential")],
            open_wb1, root, ["t850", "z500"])
    _raises(["missing file for year 1981", str(root / "temperature_850" / "temperature_850hPa_1981_5.625deg.nc")],
            open_wb1, root, ["t850"], years=[1979, 1980, 1981])
    _raises(["years must be consecutive", "1980"], open_wb1, root, ["t850"], years=[1979, 1981])
    (root / "temperature_850" / "temperature_850hPa_1979_5.625deg.nc").unlink()
    f = open_wb1(root, ["t850"])  # years found: 1980 only
    assert f["time"].values[0] == _t("1980-01-01T00")
    _raises(["not a directory"], open_wb1, tmp_path / "nowhere", ["t850"])


def test_wb1_channels_with_different_times(tmp_path):
    root = tmp_path / "wb1"
    write_wb1_layout(root, ["t850"])
    write_wb1_layout(root, ["z500"], times=("1979-12-30T00", "1980-01-02T11"))
    _raises(["channels cover different times", "'t850'", "'z500'", "1980-01-02T18", "1980-01-02T06"],
            open_wb1, root, ["t850", "z500"])


def test_wb1_wrong_level_in_dedicated_file(tmp_path):
    root = _wb1(tmp_path)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    ds = make_wb1_dataset("t850", _hourly("1980-01-01T00", "1980-01-02T23")).assign_coords(level=np.int32(500))
    write_wb1_file(ds, path)
    _raises([str(path), "level coordinate is 500 hPa, expected 850"], open_wb1, root, ["t850"])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_wb1_corrupt_file(tmp_path, damage):
    root = _wb1(tmp_path)
    path = root / "temperature_850" / "temperature_850hPa_1980_5.625deg.nc"
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"not a netcdf file" * 100, "empty": b""}[damage])
    _raises([f"WB1 file {path}: cannot open", "'t850'"], open_wb1, root, ["t850"])


def test_wb1_tp_is_refused(tmp_path):
    (tmp_path / "total_precipitation").mkdir()
    _raises(["'tp'", "not available in the WB1 layout", "total_precipitation_6hr"], open_wb1, tmp_path, ["tp"])


# ------------------------------------------------------------------------------------------------ WB2 errors

def test_wb2_missing_variable_and_level(tmp_path, wb2_store):
    _raises([f"WB2 store {wb2_store}", "variable 'specific_humidity' for channel 'q700' not found",
             "'geopotential'"], open_wb2, wb2_store, ["q700"])
    _raises([f"WB2 store {wb2_store}", "'temperature'", "level 700 hPa", "has: 500, 850"],
            open_wb2, wb2_store, ["t700"])
    _raises(["does not exist"], open_wb2, tmp_path / "nothing.zarr", ["t850"])


def test_wb2_time_axis_errors(tmp_path):
    t = make_times(("1980-01-01T00", "1980-01-03T18"), 6, default_end="")
    gap = write_wb2_layout(tmp_path / "gap.zarr", ["t850"], times=np.delete(t, [3, 4]))
    _raises([f"WB2 store {gap}", "gap between 1980-01-01T12 and 1980-01-02T06", "expected 6 h steps"],
            open_wb2, gap, ["t850"])
    dup = write_wb2_layout(tmp_path / "dup.zarr", ["t850"], times=np.sort(np.append(t, t[5])))
    _raises([f"WB2 store {dup}", "duplicated times: 1980-01-02T06 (2x)"], open_wb2, dup, ["t850"])
    t2 = t.copy()
    t2[[2, 3]] = t2[[3, 2]]
    back = write_wb2_layout(tmp_path / "back.zarr", ["t850"], times=t2)
    _raises([f"WB2 store {back}", "not increasing", "1980-01-01T18 is followed by 1980-01-01T12"],
            open_wb2, back, ["t850"])


def test_wb2_grid_mismatch(tmp_path):
    ds = make_wb2_dataset(["t850"], make_times(None, 6, default_end="1980-01-02T18"))
    ds = ds.assign_coords(latitude=LATITUDES + 0.1)
    store = write_wb2_store(ds, tmp_path / "grid.zarr")
    _raises([f"grid mismatch in WB2 store {store}", "'temperature'", "expected 32 latitudes -87.1875..87.1875",
             "latitude index 0"], open_wb2, store, ["t850"])


def test_wb2_nan_values(tmp_path):
    ds = make_wb2_dataset(["t850", "z500"], make_times(None, 6, default_end="1980-01-02T18"))
    ds["temperature"][4, 1, 3, 7] = np.nan  # 1979-12-31T00, level 850
    ds["temperature"][9, 1, 0, 0] = np.nan  # 1980-01-01T06
    ds["temperature"][9, 0, 0, 0] = np.nan  # level 500: not requested
    store = write_wb2_store(ds, tmp_path / "nan.zarr", time_chunk=4)
    fields = open_wb2(store, ["t850"])
    _raises([f"WB2 store {store}", "'temperature' level 850", "2 NaN values in channel 't850'",
             "1979-12-31T00, 1980-01-01T06"], validate_fields, fields, source="x")
    _raises(["2 NaN values"], open_wb2, store, ["t850"], check_values=True)
    validate_fields(open_wb2(store, ["z500"]).isel(time=slice(10, None)), source="x")


def test_wb2_corrupt_store(tmp_path):
    store = write_wb2_layout(tmp_path / "meta.zarr", ["t850"])
    for name in (".zmetadata", ".zgroup", ".zattrs"):
        p = store / name
        if p.exists():
            p.write_text("{ this is not json")
    _raises([f"WB2 store {store}: cannot open"], open_wb2, store, ["t850"])
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    _raises([f"WB2 store {empty}: cannot open"], open_wb2, empty, ["t850"])
    # a truncated chunk opens fine (lazy) and fails when values are read: named with store, variable and times
    store = write_wb2_layout(tmp_path / "chunk.zarr", ["t850"], time_chunk=4)
    chunk = next(p for p in (store / "temperature").rglob("*") if p.is_file() and not p.name.startswith(".")
                 and re.fullmatch(r"[\d.]+", p.name) and p.name.startswith("1."))
    chunk.write_bytes(chunk.read_bytes()[:7])
    fields = open_wb2(store, ["t850"])
    _raises([f"WB2 store {store}", "'temperature'", "cannot read channel 't850'"],
            validate_fields, fields, source="x")


def test_wb2_zarr_v3_store(tmp_path, wb2_store):
    store = write_wb2_layout(tmp_path / "v3.zarr", CHANNELS, zarr_format=3)
    xr.testing.assert_equal(open_wb2(store, CHANNELS).load(), open_wb2(wb2_store, CHANNELS).load())


# ------------------------------------------------------------------------------------------------ validate_fields

def test_validate_fields_rejects_bad_layouts(wb2_store):
    good = open_wb2(wb2_store, ["t850", "t2m"]).load()
    validate_fields(good, source="src")
    _raises(["src: expected dims (time, channel, lat, lon)"], validate_fields,
            good.transpose("time", "lat", "lon", "channel"), source="src")
    _raises(["src: expected dtype float32, got float64"], validate_fields, good.astype(np.float64), source="src")
    _raises(["grid mismatch in src", "ascending"], validate_fields, good.isel(lat=slice(None, None, -1)),
            source="src")
    _raises(["grid mismatch in src", "expected 64 longitudes", "got 63"], validate_fields,
            good.isel(lon=slice(1, None)), source="src")
    _raises(["src: time axis has a gap between 1979-12-30T06 and 1979-12-30T18"], validate_fields,
            good.isel(time=[0, 1, 3, 4]), source="src")
    _raises(["src: duplicated times"], validate_fields, good.isel(time=[0, 1, 1, 2]), source="src")
    _raises(["src: time axis is not increasing"], validate_fields, good.isel(time=[0, 2, 1]), source="src")
    _raises(["src: duplicated channels: 't850'"], validate_fields,
            good.assign_coords(channel=["t850", "t850"]), source="src")
    _raises(["time coordinate must be datetime64[ns]"], validate_fields,
            good.assign_coords(time=good["time"].values.astype("datetime64[s]")), source="src")
    _raises(["not at multiples of 6 h"], validate_fields,
            good.assign_coords(time=good["time"].values + np.timedelta64(3, "h")), source="src")
    _raises(["time axis is empty"], validate_fields, good.isel(time=slice(0, 0)), source="src")
    _raises(["step_hours"], validate_fields, good, source="src", step_hours=5)
    nan = good.copy(deep=True)
    nan[2, 1, 0, 0] = np.nan
    nan.attrs = {}  # no origin: the message names the source given
    msg = _raises(["src: 1 NaN values in channel 't2m' at times 1979-12-30T12"], validate_fields, nan,
                  source="src")
    assert msg.startswith("src: ")
    validate_fields(nan, source="src", check_values=False)


def test_value_check_goes_block_by_block(wb2_store, monkeypatch):
    monkeypatch.setattr(layout, "VALUE_CHECK_BLOCK", 4)
    fields = open_wb2(wb2_store, ["t850", "t2m"])
    assert fields.chunks[0] == (16,)
    fields = fields.chunk({"time": 4})
    from dask.callbacks import Callback

    computes: list[int] = []
    with Callback(start=lambda dsk: computes.append(len(dsk))):
        validate_fields(fields, source="x")
    assert len(computes) == 2 * 4  # 2 channels x 4 blocks of 4 time steps, one compute each
