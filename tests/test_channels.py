"""The channel catalogue: one record per variable, used by readers, forecast export, leaderboard and simulator."""

from __future__ import annotations

import numpy as np
import pytest

from wxbench.data.channels import VARIABLES, parse_channel, parse_channels, units_label, wb2_location
from wxbench.errors import DataError

LAT = tuple(-87.1875 + 5.625 * i for i in range(32))
LON = tuple(5.625 * i for i in range(64))


def test_each_variable_has_unique_names_in_both_layouts():
    for key, var in VARIABLES.items():
        assert key == var.short and var.units and var.description
        assert (var.wb1_name is None) == (var.wb1_var is None)
        assert var.wb1_name is not None or var.wb1_note  # a variable missing from WB1 says why
    wb2 = [v.wb2_name for v in VARIABLES.values() if v.wb2_name]
    wb1 = [v.wb1_name for v in VARIABLES.values() if v.wb1_name]
    assert len(set(wb2)) == len(wb2) and len(set(wb1)) == len(wb1)


def test_parse_splits_variable_and_level():
    z500 = parse_channel("z500")
    assert (z500.name, z500.variable.short, z500.level) == ("z500", "z", 500)
    assert z500.units == "m**2 s**-2" and z500.description == "geopotential at 500 hPa"
    t2m = parse_channel("2m_temperature")
    assert (t2m.name, t2m.level, t2m.description) == ("t2m", None, "2 metre temperature")
    assert parse_channel("total_precipitation_6hr").name == "tp"
    assert [s.name for s in parse_channels(["Z500", "t850"])] == ["z500", "t850"]
    with pytest.raises(DataError, match="'geopotential_500' requested twice"):
        parse_channels(["z500", "geopotential_500"])
    with pytest.raises(DataError, match="no channels requested"):
        parse_channels([])


def test_wb2_names_follow_weatherbench2():
    assert wb2_location("z500") == ("geopotential", 500)
    assert wb2_location("u850") == ("u_component_of_wind", 850)
    assert wb2_location("t2m") == ("2m_temperature", None)
    assert wb2_location("tp") == ("total_precipitation_6hr", None)  # the 6-hour accumulation, as WB2 stores it


def test_units_labels():
    assert units_label("z500") == "m²/s²"
    assert units_label("t850") == units_label("t2m") == "K"
    assert units_label("u850") == units_label("v10") == "m/s"
    assert units_label("q700") == "kg/kg"
    assert units_label("msl") == "Pa"
    assert units_label("tisr") == "J/m²"
    assert units_label("vo500") == "1/s"
    assert units_label("pv500") == "K m²/(kg s)"
    assert units_label("tcc") == "(0 - 1)"  # not a product of powers: as written


@pytest.mark.parametrize("lookup", [parse_channel, wb2_location, units_label])
def test_unknown_channel_is_an_error_naming_it(lookup):
    with pytest.raises(DataError, match="unknown channel 'foo1'"):
        lookup("foo1")


def test_forecast_export_uses_the_catalogue():
    from wxbench.forecast_io import to_wb2_dataset

    inits = np.datetime64("2020-01-01T00", "ns") + np.arange(3) * np.timedelta64(12, "h")
    leading = {"time": inits, "prediction_timedelta": np.array([6, 12], dtype="timedelta64[h]")}
    forecasts = np.arange(3 * 2 * 5 * 32 * 64, dtype=np.float32).reshape(3, 2, 5, 32, 64)
    # levels differ between variables (z at 500 and 850, t at 850): one variable per level, no NaN-filled union
    ds = to_wb2_dataset(forecasts, ("z500", "z850", "t850", "t2m", "tp"), LAT, LON, leading)
    assert set(ds.data_vars) == {"geopotential_500", "geopotential_850", "temperature_850", "2m_temperature",
                                 "total_precipitation_6hr"}
    # WB2's stores are (time, ..., longitude, latitude)
    np.testing.assert_array_equal(ds["geopotential_850"].values, np.swapaxes(forecasts[:, :, 1], -1, -2))
    np.testing.assert_array_equal(ds["total_precipitation_6hr"].values, np.swapaxes(forecasts[:, :, 4], -1, -2))
    assert ds["2m_temperature"].attrs["units"] == "K" and ds["total_precipitation_6hr"].attrs["units"] == "m"
    # the same levels for every variable: one shared level dim, as in the published stores
    same = to_wb2_dataset(forecasts[:, :, :2], ("z500", "t500"), LAT, LON, leading)
    assert set(same.data_vars) == {"geopotential", "temperature"} and list(same["level"].values) == [500]
    assert same["geopotential"].attrs == {"units": "m**2 s**-2", "long_name": "geopotential"}
    with pytest.raises(DataError, match="unknown channel 'foo1'"):
        to_wb2_dataset(forecasts[:, :, :1], ("foo1",), LAT, LON, leading)


def test_simulator_channels_are_in_the_catalogue():
    from wxbench.data import simulate

    assert simulate._LEVELS_HPA == (500.0, 850.0, 850.0, 850.0)
    assert all(parse_channel(c).name == c for c in simulate.VARIABLES)
