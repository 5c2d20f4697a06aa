"""Forecasts in the WeatherBench 2 forecast layout, so the field's own evaluation code can score them.

Dims ``time`` (initialisation), ``prediction_timedelta``, ``latitude``, ``longitude`` (plus ``number``
for ensemble members); variables by WB2 long name with a ``level`` coordinate for pressure levels (each
variable only its own levels) and the ``units`` and ``long_name`` of the channel catalogue
(:mod:`wxbench.data.channels`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr

from .atomic import atomic_path
from .data.channels import ChannelSpec, parse_channel, wb2_location
from .interfaces import GridSpec


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
    by_name: dict[str, list[tuple[ChannelSpec, np.ndarray]]] = {}  # WB2 variable -> its channels, in order
    for i, channel in enumerate(grid.channels):
        name, _ = wb2_location(channel)  # DataError naming an unknown channel
        by_name.setdefault(name, []).append((parse_channel(channel), values[..., i, :, :]))
    data_vars = {}
    for name, parts in by_name.items():
        first = parts[0][0]
        attrs = {"units": first.units, "long_name": first.variable.description}
        if first.level is None:
            data_vars[name] = xr.DataArray(parts[0][1], dims=dims + ["latitude", "longitude"], attrs=attrs)
        else:
            stacked = np.stack([p[1] for p in parts], axis=len(dims))
            data_vars[name] = xr.DataArray(stacked, dims=dims + ["level", "latitude", "longitude"],
                                           coords={"level": [p[0].level for p in parts]}, attrs=attrs)
    return xr.Dataset(data_vars, coords=coords)


def write_wb2_forecasts(path: Path, forecasts: torch.Tensor, init_times: np.ndarray, grid: GridSpec, *,
                        ensemble: bool) -> None:
    """Write atomically (see :mod:`wxbench.atomic`)."""
    ds = forecasts_to_dataset(forecasts, init_times, grid, ensemble=ensemble)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
