"""Files in the WeatherBench 2 layouts, so the field's own evaluation code can score wxbench's forecasts
(and wxbench can score anyone's): zarr format 2 with consolidated metadata, as the published stores.

* Forecasts (``--save-forecasts``): dims ``time`` (initialisation), ``prediction_timedelta``, ``number``
  (ensemble members, WB2's default ensemble dim), ``longitude``, ``latitude``.
* Truth (``wxbench export``): the observation layout, dims ``time``, ``longitude``, ``latitude``.
* Climatology (``wxbench export``): dims ``dayofyear`` (1..366) and, for a climatology that has them,
  ``hour``; WB2's ACC selects it by the valid time's day of year (and hour).

Variables are named by their WB2 long name and carry the ``units`` and ``long_name`` of the channel
catalogue (:mod:`wxbench.data.channels`); latitudes ascend. Pressure levels follow WB2 without inventing
values: when every pressure-level variable has the same levels, they share one ``level`` dim, as in the
published stores; otherwise (e.g. ``z500`` and ``t850``) each channel is its own 2-D variable named with
the level as a suffix (``geopotential_500``, ``temperature_850``), which WB2's evaluation reads with
``--pressure_level_suffixes``. A union ``level`` axis would fill the levels a variable does not have
with NaN. The attribute ``pressure_levels`` of each file says which layout it uses.
:func:`read_channel` reads one channel back from either layout.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .data.channels import ChannelSpec, parse_channel, wb2_location
from .errors import DataError

__all__ = ["ENSEMBLE_DIMS", "LEVEL_LAYOUTS", "read_channel", "to_wb2_dataset", "write_wb2_climatology",
           "write_wb2_forecasts", "write_wb2_truth", "write_zarr"]

#: ensemble member dims a forecast file may use: WB2's evaluation script defaults to "number", its
#: metrics module to "realization"; wxbench writes "number"
ENSEMBLE_DIMS = ("number", "realization")
#: the two level layouts (the files' ``pressure_levels`` attribute)
LEVEL_LAYOUTS = ("level dim", "suffix")
# forecasts: one initialisation per chunk (WB2's advice: whole fields, small time chunks)
_FORECAST_TIME_CHUNK = 1
_TRUTH_TIME_CHUNK = 64


def _suffix_name(spec: ChannelSpec) -> str:
    name, level = wb2_location(spec.name)
    return name if level is None else f"{name}_{level}"


def _groups(channels: Sequence[str]) -> dict[str, list[tuple[int, ChannelSpec]]]:
    """WB2 variable -> (channel index, spec) of its channels, in channel order."""
    out: dict[str, list[tuple[int, ChannelSpec]]] = {}
    for i, channel in enumerate(channels):
        name, _ = wb2_location(channel)  # DataError naming a channel WB2 does not have
        out.setdefault(name, []).append((i, parse_channel(channel)))
    return out


def level_layout(channels: Sequence[str]) -> str:
    """"level dim" when every pressure-level variable has the same levels, else "suffix"."""
    level_sets = {tuple(sorted(s.level for _, s in group)) for group in _groups(channels).values()
                  if group[0][1].level is not None}
    return "level dim" if len(level_sets) <= 1 else "suffix"


def to_wb2_dataset(values: np.ndarray, channels: Sequence[str], lat: Sequence[float], lon: Sequence[float],
                   leading: Mapping[str, Any]) -> xr.Dataset:
    """``values`` ``(*leading, C, H, W)`` in physical units, latitude ascending -> a WB2-layout Dataset.

    ``leading``: the leading dims in order, each with its coordinate values (e.g. ``{"time": inits,
    "prediction_timedelta": leads}``).
    """
    values = np.asarray(values)
    dims = list(leading)
    if values.ndim != len(dims) + 3 or values.shape[len(dims)] != len(channels):
        raise ValueError(f"to_wb2_dataset: values of shape {values.shape} do not match dims {dims} + "
                         f"(channel={len(channels)}, latitude, longitude)")
    layout = level_layout(channels)
    grid_dims = ["longitude", "latitude"]

    def field(i: int) -> np.ndarray:  # (*leading, longitude, latitude), as the published stores
        return np.swapaxes(values[..., i, :, :], -1, -2)

    data_vars: dict[str, xr.DataArray] = {}
    for name, group in _groups(channels).items():
        first = group[0][1]
        if first.level is None or layout == "suffix":
            for i, spec in group:
                attrs = {"units": spec.units, "long_name": spec.description}
                data_vars[_suffix_name(spec)] = xr.DataArray(field(i), dims=dims + grid_dims, attrs=attrs)
        else:
            ordered = sorted(group, key=lambda item: item[1].level)
            stacked = np.stack([field(i) for i, _ in ordered], axis=len(dims))
            data_vars[name] = xr.DataArray(stacked, dims=dims + ["level"] + grid_dims,
                                           attrs={"units": first.units, "long_name": first.variable.description})
    coords: dict[str, Any] = {key: np.asarray(value) for key, value in leading.items()}
    coords["latitude"] = xr.Variable("latitude", np.asarray(lat, dtype=np.float64),
                                     {"units": "degrees_north", "long_name": "latitude"})
    coords["longitude"] = xr.Variable("longitude", np.asarray(lon, dtype=np.float64),
                                      {"units": "degrees_east", "long_name": "longitude"})
    levels = sorted({s.level for group in _groups(channels).values() for _, s in group if s.level is not None})
    if layout == "level dim" and levels:
        coords["level"] = xr.Variable("level", np.asarray(levels, dtype=np.int64), {"units": "hPa"})
    attrs = {"pressure_levels": layout, "channels": ",".join(parse_channel(c).name for c in channels),
             "conventions": "WeatherBench 2 (written by wxbench)"}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def write_zarr(ds: xr.Dataset, path: str | Path, *, chunks: Mapping[str, int] | None = None) -> Path:
    """Write ``ds`` as a zarr format 2 store with consolidated metadata, replacing ``path`` only when
    complete: the store is written to a hidden folder beside it, then renamed onto it."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding: dict[str, Any] = {}
    for name, var in ds.data_vars.items():
        encoding[name] = {"chunks": tuple(min((chunks or {}).get(d, n), n) for d, n in zip(var.dims, var.shape))}
    for name in ("time",):
        if name in ds.coords and np.issubdtype(ds[name].dtype, np.datetime64):
            encoding[name] = {"units": "hours since 1959-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"}
    if "prediction_timedelta" in ds.coords:
        encoding["prediction_timedelta"] = {"units": "hours", "dtype": "int64"}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    kw = {"zarr_format": 2} if int(_zarr_major()) >= 3 else {}
    try:
        ds.to_zarr(tmp, mode="w", consolidated=True, encoding=encoding, **kw)
        if path.exists():  # a rerun: swap the old store out, the new one in, then delete the old
            old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _zarr_major() -> str:
    import zarr

    return zarr.__version__.split(".")[0]


def _lead_coords(lead_hours: Sequence[int]) -> np.ndarray:
    return np.array([np.timedelta64(int(h), "h") for h in lead_hours], dtype="timedelta64[ns]")


def write_wb2_forecasts(path: str | Path, forecasts: Any, init_times: np.ndarray, grid: Any, *,
                        ensemble: bool) -> Path:
    """Write ``(N, [E,] L, C, H, W)`` physical-unit forecasts (tensor or array) in the WB2 forecast layout."""
    values = forecasts.numpy() if hasattr(forecasts, "numpy") else np.asarray(forecasts)
    leading: dict[str, Any] = {"time": np.asarray(init_times, dtype="datetime64[ns]")}
    if ensemble:
        leading["number"] = np.arange(values.shape[1])
    leading["prediction_timedelta"] = _lead_coords(grid.lead_hours)
    ds = to_wb2_dataset(values, grid.channels, grid.lat, grid.lon, leading)
    return write_zarr(ds, path, chunks={"time": _FORECAST_TIME_CHUNK})


def write_wb2_truth(path: str | Path, values: np.ndarray, times: np.ndarray, channels: Sequence[str],
                    lat: Sequence[float], lon: Sequence[float]) -> Path:
    """Write ``(T, C, H, W)`` physical-unit states in the WB2 observation layout."""
    ds = to_wb2_dataset(values, channels, lat, lon, {"time": np.asarray(times, dtype="datetime64[ns]")})
    return write_zarr(ds, path, chunks={"time": _TRUTH_TIME_CHUNK})


def write_wb2_climatology(path: str | Path, values: np.ndarray, channels: Sequence[str], lat: Sequence[float],
                          lon: Sequence[float], *, hours: Sequence[int] | None = None) -> Path:
    """Write a climatology in WB2's layout: ``values`` ``(366, [len(hours),] C, H, W)`` by day of year
    (1..366) and, when ``hours`` is given, hour of day; or ``(C, H, W)`` for a time-invariant climatology,
    which is written as the same field on every day of the year (WB2's ACC needs a ``dayofyear`` dim)."""
    values = np.asarray(values)
    if values.ndim == 3:
        values = np.broadcast_to(values, (366, *values.shape))
    leading: dict[str, Any] = {"dayofyear": np.arange(1, 367)}
    if hours is not None:
        leading["hour"] = np.asarray(hours, dtype=np.int64)
    ds = to_wb2_dataset(values, channels, lat, lon, leading)
    return write_zarr(ds, path)


def read_channel(ds: xr.Dataset, channel: str, where: str) -> xr.DataArray:
    """One channel of a WB2-layout dataset, from a ``level`` dim or a suffixed variable; its dims are the
    file's minus ``level``. DataError naming ``where`` (the file) and the variable or level missing."""
    spec = parse_channel(channel)
    name, level = wb2_location(spec.name)
    if level is not None and f"{name}_{level}" in ds.data_vars:
        return ds[f"{name}_{level}"]
    if name not in ds.data_vars:
        wanted = repr(name) if level is None else f"{name!r} (with level {level}) or {f'{name}_{level}'!r}"
        has = ", ".join(sorted(map(repr, map(str, ds.data_vars)))) or "none"
        raise DataError(f"{where}: no variable {wanted} for channel {spec.name!r} (has: {has})")
    arr = ds[name]
    if level is None:
        if "level" in arr.dims:
            raise DataError(f"{where}: variable {name!r} (channel {spec.name!r}) is single-level but has a "
                            f"'level' dim")
        return arr
    if "level" not in arr.dims:
        raise DataError(f"{where}: variable {name!r} has no 'level' dim to take {level} hPa from "
                        f"(channel {spec.name!r}; dims {', '.join(map(str, arr.dims))})")
    levels = arr["level"].values
    if not (levels == level).any():
        raise DataError(f"{where}: variable {name!r} has no level {level} hPa for channel {spec.name!r} "
                        f"(levels: {', '.join(str(int(v)) for v in levels)})")
    return arr.sel(level=level, drop=True)
