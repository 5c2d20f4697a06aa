"""Small, deterministic WeatherBench data in exactly the real WB1 and WB2 layouts, for tests.

The content of a channel at a given time is a fixed function of (channel, time, seed), independent of which
layout or time range it is written in: the same channel and time written by :func:`write_wb1_layout` (hourly
netCDF) and :func:`write_wb2_layout` (6-hourly zarr) hold the same float32 values, so both readers must return
identical internal arrays. :func:`synthetic_values` gives the expected values directly (internal order: lat
ascending).

    >>> from wxbench.testing_data import write_wb1_layout, write_wb2_layout
    >>> files = write_wb1_layout(tmp / "wb1", ["z500", "t850", "t2m"])          # 1979-12-30 .. 1980-01-02, hourly
    >>> store = write_wb2_layout(tmp / "wb2.zarr", ["z500", "t850", "t2m"])     # same days, 6-hourly
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr

from .data.channels import parse_channel
from .data.layout import LATITUDES, LONGITUDES
from .data.wb1 import wb1_file_path

__all__ = ["DEFAULT_END_WB1", "DEFAULT_END_WB2", "DEFAULT_START", "TINY_PERIOD", "TINY_SPLITS", "make_times",
           "make_wb1_dataset", "make_wb2_dataset", "synthetic_values", "write_benchmark_toml", "write_wb1_file",
           "write_wb1_layout", "write_wb2_layout", "write_wb2_store"]

#: a small benchmark for end-to-end tests: 40 days of 6-hourly data, split 24 / 6 / 10 days
TINY_PERIOD = ("1979-12-01T00", "1980-01-09T18")
TINY_SPLITS = {"train": ("1979-12-01T00", "1979-12-24T18"), "val": ("1979-12-25T00", "1979-12-30T18"),
               "test": ("1979-12-31T00", "1980-01-09T18")}

#: default test period: four days across a year boundary (two yearly WB1 files)
DEFAULT_START = "1979-12-30T00"
DEFAULT_END_WB1 = "1980-01-02T23"   # hourly, inclusive
DEFAULT_END_WB2 = "1980-01-02T18"   # 6-hourly, inclusive

# rough climatological mean and amplitude per variable (only to look plausible)
_SCALE: dict[str, tuple[float, float]] = {
    "z": (54000.0, 3000.0), "t": (270.0, 15.0), "u": (5.0, 10.0), "v": (0.0, 8.0), "q": (0.004, 0.003),
    "r": (60.0, 30.0), "w": (0.0, 0.3), "vo": (0.0, 5e-5), "pv": (1e-6, 1e-6), "t2m": (278.0, 20.0),
    "u10": (1.0, 6.0), "v10": (0.0, 5.0), "msl": (101000.0, 1500.0), "tcc": (0.5, 0.4), "tisr": (1.2e6, 1.2e6),
    "tp": (0.001, 0.001),
}

Times = Sequence[Any] | np.ndarray | tuple[Any, Any]


def write_benchmark_toml(path: str | Path, *, name: str, source: str, data: str | Path, channels: Sequence[str],
                         splits: dict[str, tuple[str, str]] = TINY_SPLITS, version: int = 1) -> Path:
    """A user benchmark file (the TOML format of ``Benchmark.from_toml``) for data written by this module."""
    import json

    lines = [f'name = "{name}"', f"version = {version}", f'source = "{source}"', f'path = "{data}"',
             f"channels = {json.dumps(list(channels))}"]
    lines += [f"{split} = {json.dumps(list(bounds))}" for split, bounds in splits.items()]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def make_times(times: Times | None, freq_hours: int, *, default_end: str) -> np.ndarray:
    """Time axis (datetime64[ns]) from one of:

    * None: ``DEFAULT_START .. default_end`` every ``freq_hours``;
    * a 2-tuple ``(start, end)``: inclusive range every ``freq_hours``;
    * a sequence of ints (years): those full years every ``freq_hours``;
    * any other sequence / array of datetimes: used as given (gaps, duplicates and disorder are kept, so tests can
      write bad time axes).
    """
    step = np.timedelta64(freq_hours, "h")
    if times is None:
        times = (DEFAULT_START, default_end)
    if isinstance(times, tuple) and len(times) == 2 and not isinstance(times[0], (int, np.integer)):
        start, end = (np.datetime64(t, "ns") for t in times)
        return np.arange(start, end + np.timedelta64(1, "ns"), step).astype("datetime64[ns]")
    seq = list(times)
    if seq and all(isinstance(t, (int, np.integer)) for t in seq):
        return np.concatenate([np.arange(np.datetime64(f"{y}-01-01", "ns"), np.datetime64(f"{y + 1}-01-01", "ns"),
                                         step) for y in seq]).astype("datetime64[ns]")
    return np.asarray([np.datetime64(t, "ns") for t in seq], dtype="datetime64[ns]")


def synthetic_values(channel: str, times: Any, *, seed: int = 0) -> np.ndarray:
    """Deterministic float32 values (time, lat ascending, lon) of ``channel`` at ``times``.

    A smooth latitude profile, a diurnal wave travelling in longitude and a pseudo-random but deterministic term;
    each time's field depends only on (channel, time, seed).
    """
    spec = parse_channel(channel)
    mean, amp = _SCALE.get(spec.variable.short, (0.0, 1.0))
    if spec.level is not None:
        mean *= 1.0 + 0.1 * np.log(spec.level / 500.0)
    phase = (zlib.crc32(f"{spec.name}:{seed}".encode()) % 10_000) / 10_000 * 2 * np.pi
    t = np.asarray(times, dtype="datetime64[ns]")
    hours = (t - np.datetime64("1970-01-01T00", "ns")) / np.timedelta64(1, "h")
    h = hours[:, None, None]
    lat = np.deg2rad(LATITUDES)[None, :, None]
    lon = np.deg2rad(LONGITUDES)[None, None, :]
    i = np.arange(len(LATITUDES))[None, :, None]
    j = np.arange(len(LONGITUDES))[None, None, :]
    vals = (0.5 * np.cos(lat) + 0.3 * np.sin(2 * np.pi * h / 24.0 + lon + phase)
            + 0.2 * np.sin(0.7311 * h + 1.37 * i + 2.11 * j + phase) * np.cos(0.0137 * h * (i + 1)))
    return (mean + amp * vals).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- WB1

def make_wb1_dataset(channels: str | Sequence[str], times: np.ndarray, *, seed: int = 0, lat_descending: bool = False,
                     level_style: Literal["scalar", "dim", "none", "all"] = "scalar") -> xr.Dataset:
    """One WB1 file's dataset.

    ``channels``: one channel, or several channels of one pressure-level variable for an all-levels file
    (``level_style="all"``: dims ``time, level, lat, lon`` like ``geopotential/geopotential_1979_5.625deg.nc``).
    Dedicated-level files: ``"scalar"`` (scalar ``level`` coordinate, like the real z500/t850 files),
    ``"dim"`` (a length-1 ``level`` dim) or ``"none"`` (no level metadata). Single-level variables have no level.
    """
    chans = [channels] if isinstance(channels, str) else list(channels)
    specs = [parse_channel(c) for c in chans]
    var = specs[0].variable
    if var.wb1_var is None:
        raise ValueError(f"channel {specs[0].name!r} has no WB1 file: {var.wb1_note}")
    if any(s.variable != var for s in specs):
        raise ValueError(f"one WB1 file holds one variable, got {chans}")
    t = np.asarray(times, dtype="datetime64[ns]")
    lat = LATITUDES[::-1] if lat_descending else LATITUDES
    coords: dict[str, Any] = {
        "time": t,
        "lat": xr.Variable("lat", lat.copy(), {"units": "degrees_north", "long_name": "latitude"}),
        "lon": xr.Variable("lon", LONGITUDES.copy(), {"units": "degrees_east", "long_name": "longitude"}),
    }
    attrs = {"units": var.units, "long_name": var.description}

    def field(spec: Any) -> np.ndarray:
        v = synthetic_values(spec.name, t, seed=seed)
        return v[:, ::-1, :] if lat_descending else v

    if level_style == "all" and var.pressure_level:
        levels = sorted(s.level for s in specs)
        data = np.stack([field(next(s for s in specs if s.level == lev)) for lev in levels], axis=1)
        coords["level"] = xr.Variable("level", np.asarray(levels, dtype=np.int32), {"units": "millibars"})
        return xr.Dataset({var.wb1_var: (("time", "level", "lat", "lon"), data, attrs)}, coords=coords)
    if len(specs) != 1:
        raise ValueError("a dedicated-level or single-level WB1 file holds one channel")
    spec = specs[0]
    data = field(spec)
    if spec.level is not None and level_style == "scalar":
        coords["level"] = xr.Variable((), np.int32(spec.level), {"units": "millibars"})
    elif spec.level is not None and level_style == "dim":
        coords["level"] = xr.Variable("level", np.asarray([spec.level], dtype=np.int32), {"units": "millibars"})
        return xr.Dataset({var.wb1_var: (("time", "level", "lat", "lon"), data[:, None], attrs)}, coords=coords)
    return xr.Dataset({var.wb1_var: (("time", "lat", "lon"), data, attrs)}, coords=coords)


def write_wb1_file(ds: xr.Dataset, path: str | Path) -> Path:
    """Write one WB1-style netCDF4 file (time as ``hours since 1979-01-01``, float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    enc: dict[str, Any] = {name: {"dtype": "float32", "zlib": False} for name in ds.data_vars}
    if "time" in ds.coords:
        enc["time"] = {"units": "hours since 1979-01-01 00:00:00", "calendar": "proleptic_gregorian",
                       "dtype": "int64"}
    ds.to_netcdf(path, format="NETCDF4", engine="netcdf4", encoding=enc)
    return path


def write_wb1_layout(root: str | Path, channels: Sequence[str], times: Times | None = None, *, seed: int = 0,
                     freq_hours: int = 1, lat_descending: bool = False,
                     level_style: Literal["scalar", "dim", "none"] = "scalar",
                     all_levels: bool = False) -> dict[str, list[Path]]:
    """Write ``channels`` in the WB1 layout under ``root``: one folder per variable, one file per year.

    Pressure-level channels go to the dedicated folder (``geopotential_500/geopotential_500hPa_<year>_5.625deg.nc``)
    or, with ``all_levels``, to the all-levels folder (``geopotential/geopotential_<year>_5.625deg.nc``, one file
    per variable holding every requested level). ``times``: see :func:`make_times` (default 1979-12-30T00 ..
    1980-01-02T23 hourly). Returns channel -> written files (sorted by year).
    """
    root = Path(root)
    t = make_times(times, freq_hours, default_end=DEFAULT_END_WB1)
    years = t.astype("datetime64[Y]").astype(np.int64) + 1970
    specs = [parse_channel(c) for c in channels]
    out: dict[str, list[Path]] = {s.name: [] for s in specs}
    groups: dict[str, list[Any]] = {}
    for s in specs:
        key = s.variable.short if (all_levels and s.level is not None) else s.name
        groups.setdefault(key, []).append(s)
    for group in groups.values():
        for year in sorted(set(years.tolist()), key=lambda y: years.tolist().index(y)):
            tt = t[years == year]
            if all_levels and group[0].level is not None:
                ds = make_wb1_dataset([s.name for s in group], tt, seed=seed, lat_descending=lat_descending,
                                      level_style="all")
            else:
                ds = make_wb1_dataset(group[0].name, tt, seed=seed, lat_descending=lat_descending,
                                      level_style=level_style)
            path, _ = wb1_file_path(root, group[0].name, int(year), all_levels=all_levels)
            write_wb1_file(ds, path)
            for s in group:
                out[s.name].append(path)
    for files in out.values():
        files.sort()
    return out


# ----------------------------------------------------------------------------------------------------- WB2

def make_wb2_dataset(channels: Sequence[str], times: np.ndarray, *, seed: int = 0,
                     lat_descending: bool = False) -> xr.Dataset:
    """A WB2-style dataset: long names, dims ``time, level, longitude, latitude`` (one shared ``level`` dim holding
    every requested level; pressure-level variables are filled at all of them)."""
    t = np.asarray(times, dtype="datetime64[ns]")
    specs = [parse_channel(c) for c in channels]
    levels = sorted({s.level for s in specs if s.level is not None})
    lat = LATITUDES[::-1] if lat_descending else LATITUDES
    coords: dict[str, Any] = {
        "time": t,
        "longitude": xr.Variable("longitude", LONGITUDES.copy(), {"units": "degrees_east", "long_name": "longitude"}),
        "latitude": xr.Variable("latitude", lat.copy(), {"units": "degrees_north", "long_name": "latitude"}),
    }
    if levels:
        coords["level"] = xr.Variable("level", np.asarray(levels, dtype=np.int64), {"units": "hPa"})

    def field(name: str) -> np.ndarray:  # (time, longitude, latitude)
        v = synthetic_values(name, t, seed=seed)
        if lat_descending:
            v = v[:, ::-1, :]
        return np.ascontiguousarray(v.transpose(0, 2, 1))

    data_vars: dict[str, Any] = {}
    for s in specs:
        var = s.variable
        if var.wb2_name is None:
            raise ValueError(f"channel {s.name!r} has no WB2 variable")
        if var.wb2_name in data_vars:
            continue
        attrs = {"units": var.units, "long_name": var.description}
        if var.pressure_level:
            data = np.stack([field(f"{var.short}{lev}") for lev in levels], axis=1)
            data_vars[var.wb2_name] = (("time", "level", "longitude", "latitude"), data, attrs)
        else:
            data_vars[var.wb2_name] = (("time", "longitude", "latitude"), field(s.name), attrs)
    return xr.Dataset(data_vars, coords=coords)


def write_wb2_store(ds: xr.Dataset, path: str | Path, *, zarr_format: int = 2, time_chunk: int | None = None) -> Path:
    """Write a WB2-style zarr store (zarr v2 with consolidated metadata by default, like the public stores)."""
    path = Path(path)
    enc: dict[str, Any] = {"time": {"units": "hours since 1959-01-01", "calendar": "proleptic_gregorian",
                                    "dtype": "int64"}}
    if time_chunk:
        for name, v in ds.data_vars.items():
            enc[name] = {"chunks": (time_chunk,) + tuple(v.shape[1:])}
    kw: dict[str, Any] = {}
    if int(zarr.__version__.split(".")[0]) >= 3:
        kw["zarr_format"] = zarr_format
    elif zarr_format != 2:
        raise ValueError(f"zarr {zarr.__version__} writes zarr format 2 only")
    ds.to_zarr(path, mode="w", consolidated=zarr_format == 2, encoding=enc, **kw)
    return path


def write_wb2_layout(path: str | Path, channels: Sequence[str], times: Times | None = None, *, seed: int = 0,
                     freq_hours: int = 6, lat_descending: bool = False, zarr_format: int = 2,
                     time_chunk: int | None = 4) -> Path:
    """Write ``channels`` as a WB2-style zarr store at ``path`` (default 1979-12-30T00 .. 1980-01-02T18, 6-hourly).

    ``times``: see :func:`make_times`. ``lat_descending`` stores latitude north to south.
    """
    t = make_times(times, freq_hours, default_end=DEFAULT_END_WB2)
    ds = make_wb2_dataset(channels, t, seed=seed, lat_descending=lat_descending)
    return write_wb2_store(ds, path, zarr_format=zarr_format, time_chunk=time_chunk)

