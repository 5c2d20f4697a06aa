"""Lazy reader for the WeatherBench 1 layout (pangeo-data/WeatherBench: netCDF, hourly), to the internal layout.

One folder per variable, one file per year::

    <root>/geopotential_500/geopotential_500hPa_1979_5.625deg.nc        variable "z" (dedicated level)
    <root>/geopotential/geopotential_1979_5.625deg.nc                   variable "z", all levels (`level` dim)
    <root>/2m_temperature/2m_temperature_1979_5.625deg.nc               variable "t2m"

dims ``time, lat, lon``; dedicated-level files carry a scalar ``level`` coordinate (or a length-1 ``level``
dim). For a pressure-level channel the dedicated folder ``<long>_<level>`` is used when it exists, otherwise
the all-levels folder ``<long>``. Folder and variable names come from the channel catalogue
(:mod:`wxbench.data.channels`).

Nothing is loaded but coordinates (see :mod:`wxbench.data.layout` for the checks). Nothing is dropped, filled
or interpolated silently; the only transformations are: hourly -> ``step_hours`` subsampling (keeping times at
multiples of ``step_hours``), flipping a descending latitude axis, transposing to the internal dim order and
casting to float32.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from fsspec import AbstractFileSystem

from ..errors import DataError
from .channels import ChannelSpec, parse_channel, parse_channels
from .stores import display, filesystem, join, local_file
from .layout import (OPEN_KW, check_dims, check_grid, check_step_hours, check_time_order,
                     check_time_steps, check_years, format_time, format_times, make_fields, select_level,
                     subsample_times, time_values, to_dask, validate_fields)

__all__ = ["RESOLUTION", "open_wb1", "wb1_candidates", "wb1_file_path"]

#: the resolution part of every WB1 file name
RESOLUTION = "5.625deg"


def wb1_file_path(root: str | Path, channel: str, year: int, *, all_levels: bool = False) -> tuple[Path, str]:
    """WB1 file and netCDF variable of ``channel`` for ``year``.

    ``all_levels`` selects the all-levels folder (``geopotential/geopotential_1979_5.625deg.nc``) instead of the
    dedicated one (``geopotential_500/geopotential_500hPa_1979_5.625deg.nc``) for a pressure-level channel.
    """
    spec = parse_channel(channel)
    folder, stem = _wb1_folder_stem(spec, all_levels)
    var = spec.variable.wb1_var
    assert var is not None  # _wb1_folder_stem raised otherwise
    return Path(root) / folder / f"{stem}_{int(year)}_{RESOLUTION}.nc", var


def wb1_candidates(channel: str) -> list[tuple[str, str, bool]]:
    """(folder, file stem, all_levels) in the order :func:`open_wb1` looks for them."""
    spec = parse_channel(channel)
    out = []
    if spec.level is not None:
        out.append((*_wb1_folder_stem(spec, False), False))
    out.append((*_wb1_folder_stem(spec, True), True))
    return out


def _wb1_folder_stem(spec: ChannelSpec, all_levels: bool) -> tuple[str, str]:
    v = spec.variable
    if v.wb1_name is None:
        raise DataError(f"channel {spec.name!r} is not available in the WB1 layout: {v.wb1_note}")
    if spec.level is None or all_levels:
        return v.wb1_name, v.wb1_name
    return f"{v.wb1_name}_{spec.level}", f"{v.wb1_name}_{spec.level}hPa"


def _wb1_layout(fs: AbstractFileSystem, root: str, spec: ChannelSpec) -> tuple[str, str, bool]:
    cands = [(join(root, f), s, all_levels) for f, s, all_levels in wb1_candidates(spec.name)]
    for folder, stem, all_levels in cands:
        if fs.isdir(folder):
            return folder, stem, all_levels
    tried = " or ".join(display(fs, c[0]) for c in cands)
    raise DataError(f"WB1 root {display(fs, root)}: no folder for channel {spec.name!r} (variable "
                    f"{spec.variable.wb1_var!r}): expected {tried}")


def _wb1_years(fs: AbstractFileSystem, folder: str, stem: str) -> list[int]:
    pat = re.compile(rf"^{re.escape(stem)}_(\d{{4}})_{re.escape(RESOLUTION)}\.nc$")
    names = (posixpath.basename(p.rstrip("/")) for p in fs.ls(folder, detail=False))
    return sorted(int(m.group(1)) for name in names if (m := pat.match(name)))


def _read_wb1_file(fs: AbstractFileSystem, path: str, spec: ChannelSpec, year: int, step: int,
                   all_levels: bool) -> tuple[da.Array, np.ndarray]:
    where = f"WB1 file {display(fs, path)}"
    try:
        ds = xr.open_dataset(local_file(fs, path), **OPEN_KW)
    except Exception as exc:  # netCDF4/h5netcdf/HDF5 raise OSError, ValueError, RuntimeError, KeyError, ...
        raise DataError(f"{where}: cannot open for channel {spec.name!r} (corrupt, truncated or not netCDF?): "
                        f"{type(exc).__name__}: {exc}") from exc
    try:
        return _wb1_file_fields(ds, display(fs, path), spec, year, step, all_levels)
    except BaseException:
        ds.close()  # release the handle (HDF5 locks the file) when the file is rejected
        raise


def _wb1_file_fields(ds: xr.Dataset, path: str, spec: ChannelSpec, year: int, step: int,
                     all_levels: bool) -> tuple[da.Array, np.ndarray]:
    where = f"WB1 file {path}"
    var = spec.variable.wb1_var
    assert var is not None
    if var not in ds.data_vars:
        has = ", ".join(repr(str(k)) for k in ds.data_vars) or "no data variables"
        raise DataError(f"{where}: variable {var!r} not found (has: {has}) [channel {spec.name!r}]")
    where = f"{where}, variable {var!r} (channel {spec.name!r})"
    if all_levels and spec.level is not None and "level" not in ds[var].dims:
        raise DataError(f"{where}: all-levels file without a 'level' dim (dims: "
                        f"{', '.join(map(str, ds[var].dims))}); cannot select {spec.level} hPa")
    arr = select_level(ds[var], spec, where)
    check_dims(arr, ("time", "lat", "lon"), where)
    flip = check_grid(arr, "lat", "lon", where)
    times = time_values(arr, where)
    check_time_order(times, where)
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    if (years != year).any():
        other = times[years != year]
        raise DataError(f"{where}: file for year {year} holds {len(other)} time(s) outside {year}: "
                        f"{format_times(other)}")
    sel, kept = subsample_times(times, step, where)
    check_time_steps(kept, step, where)
    arr = arr.isel(time=sel)
    if flip:
        arr = arr.isel(lat=slice(None, None, -1))
    return to_dask(arr, ("time", "lat", "lon"), -1), kept  # one chunk per yearly file


def open_wb1(root: str | Path, channels: Sequence[str], years: Sequence[int] | None = None, *,
             step_hours: int = 6, check_values: bool = False) -> xr.DataArray:
    """Open WB1 netCDF data (one folder per variable, one file per year, hourly) lazily.

    ``years``: consecutive years to read (None: every year found; all channels must have all of them).
    Hourly data is subsampled to the times at multiples of ``step_hours`` after 00 UTC. ``check_values`` also
    scans every value for NaN/inf (loads the data block by block; default off, the readers stay lazy).
    ``root`` is a local folder or any fsspec URL (:mod:`wxbench.data.stores`; remote files are read from a
    temporary local copy).
    """
    fs, root_path = filesystem(root, "WB1 root")
    root = display(fs, root_path)
    step = check_step_hours(step_hours)
    specs = parse_channels(channels)
    if not fs.isdir(root_path):
        raise DataError(f"WB1 root {root}: not a directory")
    layouts = {s.name: _wb1_layout(fs, root_path, s) for s in specs}
    if years is None:
        found = sorted({y for folder, stem, _ in layouts.values() for y in _wb1_years(fs, folder, stem)})
        if not found:
            pats = ", ".join(f"{display(fs, join(f, stem))}_<year>_{RESOLUTION}.nc" for f, stem, _ in layouts.values())
            raise DataError(f"WB1 root {root}: no yearly files found ({pats})")
        years_l = list(range(found[0], found[-1] + 1))
    else:
        years_l = check_years(years, f"WB1 root {root}")

    pieces: list[da.Array] = []
    axis: np.ndarray | None = None
    axis_from = ""
    origin: dict[str, Any] = {}
    for spec in specs:
        folder, stem, all_levels = layouts[spec.name]
        parts: list[da.Array] = []
        tparts: list[np.ndarray] = []
        files: dict[str, str] = {}
        prev: str | None = None
        for year in years_l:
            path = join(folder, f"{stem}_{year}_{RESOLUTION}.nc")
            if not fs.isfile(path):
                raise DataError(f"WB1 channel {spec.name!r}: missing file for year {year}: {display(fs, path)}")
            data, t = _read_wb1_file(fs, path, spec, year, step, all_levels)
            if tparts:
                last, first = tparts[-1][-1], t[0]
                if first - last != np.timedelta64(step, "h"):
                    raise DataError(f"WB1 channel {spec.name!r}: time axis has a gap between {format_time(last)} "
                                    f"(end of {display(fs, prev)}) and {format_time(first)} (start of "
                                    f"{display(fs, path)}) "
                                    f"(expected {step} h steps)")
            parts.append(data)
            tparts.append(t)
            files[str(year)] = display(fs, path)
            prev = path
        t_all = np.concatenate(tparts)
        if axis is None:
            axis, axis_from = t_all, spec.name
        elif len(t_all) != len(axis) or (t_all != axis).any():
            raise DataError(
                f"WB1 root {root}: channels cover different times: {axis_from!r} "
                f"{format_time(axis[0])}..{format_time(axis[-1])} ({len(axis)} steps) but {spec.name!r} "
                f"{format_time(t_all[0])}..{format_time(t_all[-1])} ({len(t_all)} steps) in {display(fs, folder)}")
        pieces.append(da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0])
        origin[spec.name] = {"variable": spec.variable.wb1_var, "level": spec.level, "files": files}
    assert axis is not None
    data = da.stack(pieces, axis=1)
    attrs = {"source": str(root), "source_format": "WB1", "step_hours": step,
             "channel_origin": json.dumps(origin)}
    fields = make_fields(data, axis, [s.name for s in specs], attrs)
    validate_fields(fields, source=f"WB1 root {root}", step_hours=step, check_values=check_values)
    return fields
