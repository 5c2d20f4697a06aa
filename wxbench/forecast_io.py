"""Forecasts in the WeatherBench 2 forecast layout, so the field's own evaluation code can score them.

Dims ``time`` (initialisation), ``prediction_timedelta``, ``latitude``, ``longitude`` (plus ``number``
for ensemble members); variables by WB2 long name with a ``level`` coordinate for pressure levels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from .interfaces import GridSpec

#: short channel prefix -> WB2 long variable name
LONG_NAMES = {"z": "geopotential", "t": "temperature", "u": "u_component_of_wind", "v": "v_component_of_wind",
              "q": "specific_humidity", "r": "relative_humidity", "t2m": "2m_temperature",
              "u10": "10m_u_component_of_wind", "v10": "10m_v_component_of_wind", "msl": "mean_sea_level_pressure",
              "tp": "total_precipitation"}


def split_channel(channel: str) -> tuple[str, int | None]:
    """'z500' -> ('geopotential', 500); 't2m' -> ('2m_temperature', None)."""
    if channel in LONG_NAMES:
        return LONG_NAMES[channel], None
    match = re.fullmatch(r"([a-z]+)(\d+)", channel)
    if match and match.group(1) in LONG_NAMES:
        return LONG_NAMES[match.group(1)], int(match.group(2))
    return channel, None


def forecasts_to_dataset(forecasts: torch.Tensor, init_times: np.ndarray, grid: GridSpec, *,
                         ensemble: bool) -> xr.Dataset:
    """(N, [E,] L, C, H, W) physical-unit forecasts -> a WB2-layout Dataset."""
    values = forecasts.numpy()
    dims = ["time", "number", "prediction_timedelta"] if ensemble else ["time", "prediction_timedelta"]
    coords = {
        "time": np.asarray(init_times, dtype="datetime64[ns]"),
        "prediction_timedelta": np.array([np.timedelta64(h, "h") for h in grid.lead_hours], dtype="timedelta64[ns]"),
        "latitude": np.array(grid.lat), "longitude": np.array(grid.lon),
    }
    if ensemble:
        coords["number"] = np.arange(values.shape[1])
    by_name: dict[str, list[tuple[int | None, np.ndarray]]] = {}
    for i, channel in enumerate(grid.channels):
        name, level = split_channel(channel)
        by_name.setdefault(name, []).append((level, values[..., i, :, :]))
    data_vars = {}
    for name, parts in by_name.items():
        if parts[0][0] is None:
            data_vars[name] = xr.DataArray(parts[0][1], dims=dims + ["latitude", "longitude"])
        else:
            stacked = np.stack([p[1] for p in parts], axis=len(dims))
            data_vars[name] = xr.DataArray(stacked, dims=dims + ["level", "latitude", "longitude"],
                                           coords={"level": [p[0] for p in parts]})
    return xr.Dataset(data_vars, coords=coords)


def write_wb2_forecasts(path: Path, forecasts: torch.Tensor, init_times: np.ndarray, grid: GridSpec, *,
                        ensemble: bool) -> None:
    """Write atomically (temporary file, then rename)."""
    ds = forecasts_to_dataset(forecasts, init_times, grid, ensemble=ensemble)
    path = Path(path)
    tmp = path.with_suffix(".tmp.nc")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(tmp, engine="netcdf4")
    tmp.replace(path)
