"""Lazy reader for the WeatherBench 2 layout (google-research/weatherbench2: zarr, 6-hourly), to the internal layout.

One store, variables by WB2 long name (from the channel catalogue, :mod:`wxbench.data.channels`), dims
``time, level, longitude, latitude`` (latitude ascending or descending), e.g.
``1959-2023_01_10-6h-64x32_equiangular_conservative.zarr``, local or remote (``gs://``, ``s3://``, ``https://``:
any fsspec URL, :mod:`wxbench.data.stores`).

Nothing is loaded but coordinates (see :mod:`wxbench.data.layout` for the checks). The only transformations
are: subsampling finer steps to ``step_hours``, flipping a descending latitude axis, transposing to the
internal dim order and casting to float32.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import DataError
from .channels import parse_channels, wb2_location
from .stores import is_remote, location_exists, zarr_store
from .layout import (OPEN_KW, as_index, check_dims, check_grid, check_step_hours,
                     check_time_order, check_time_steps, check_years, format_time, make_fields, select_level,
                     subsample_times, time_values, to_dask, validate_fields)

__all__ = ["TIME_CHUNK", "open_wb2"]

#: dask chunk length along time of WB2 arrays (about 12 MB per channel chunk); WB1 has one chunk per yearly file
TIME_CHUNK = 1460


def open_wb2(path: str | Path, channels: Sequence[str], *, step_hours: int = 6,
             years: Sequence[int] | None = None, check_values: bool = False) -> xr.DataArray:
    """Open a WB2 zarr store (6-hourly, long names, ``level`` dim, latitude either order) lazily.

    ``years``: optional consecutive years to keep (None: the whole store). Native steps finer than
    ``step_hours`` are subsampled to multiples of ``step_hours`` after 00 UTC; coarser ones are a gap error.
    """
    loc: str | Path = path if is_remote(path) else Path(path).expanduser()
    where = f"WB2 store {loc}"
    step = check_step_hours(step_hours)
    specs = parse_channels(channels)
    if not location_exists(loc, "WB2 store"):  # a missing package for the protocol: DataError with the hint
        raise DataError(f"{where}: does not exist")
    try:
        with warnings.catch_warnings():  # a store without consolidated metadata (zarr v3) is fine, only slower
            warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
            ds = xr.open_dataset(zarr_store(loc, "WB2 store"), engine="zarr", **OPEN_KW)
    except Exception as exc:  # zarr raises FileNotFoundError, GroupNotFoundError, JSONDecodeError, ValueError, ...
        raise DataError(f"{where}: cannot open as zarr (corrupt, incomplete or not a zarr store?): "
                        f"{type(exc).__name__}: {exc}") from exc
    if "time" not in ds.coords:
        raise DataError(f"{where}: no 'time' coordinate")
    times = time_values(ds["time"], where)
    check_time_order(times, where)
    if years is not None:
        ys = check_years(years, where)
        yr = times.astype("datetime64[Y]").astype(np.int64) + 1970
        for y in ys:
            if not (yr == y).any():
                raise DataError(f"{where}: no times in year {y} (store covers {format_time(times[0])}.."
                                f"{format_time(times[-1])})")
        inyear = np.nonzero((yr >= ys[0]) & (yr <= ys[-1]))[0]
        tsel0: slice | np.ndarray = as_index(inyear)
        times = times[inyear]
    else:
        tsel0 = slice(None)
    sel, kept = subsample_times(times, step, where)
    check_time_steps(kept, step, where)

    pieces: list[da.Array] = []
    origin: dict[str, Any] = {}
    for spec in specs:
        name, level = wb2_location(spec.name)
        if name not in ds.data_vars:
            avail = sorted(map(str, ds.data_vars))
            has = ", ".join(repr(a) for a in avail[:40]) + (f", … ({len(avail) - 40} more)" if len(avail) > 40
                                                             else "")
            raise DataError(f"{where}: variable {name!r} for channel {spec.name!r} not found (has: {has or 'none'})")
        vwhere = f"{where}, variable {name!r} (channel {spec.name!r})"
        arr = ds[name]
        if spec.level is not None and "level" not in arr.dims:
            raise DataError(f"{vwhere}: no 'level' dim to select {level} hPa from (dims: "
                            f"{', '.join(map(str, arr.dims))})")
        arr = select_level(arr, spec, vwhere)
        check_dims(arr, ("time", "longitude", "latitude"), vwhere)
        flip = check_grid(arr, "latitude", "longitude", vwhere)
        arr = arr.isel(time=tsel0).isel(time=sel)
        if flip:
            arr = arr.isel(latitude=slice(None, None, -1))
        pieces.append(to_dask(arr, ("time", "latitude", "longitude"), TIME_CHUNK))
        origin[spec.name] = {"variable": name, "level": level, "store": str(loc)}
    data = da.stack(pieces, axis=1)
    attrs = {"source": str(loc), "source_format": "WB2", "step_hours": step,
             "channel_origin": json.dumps(origin)}
    fields = make_fields(data, kept, [s.name for s in specs], attrs)
    validate_fields(fields, source=where, step_hours=step, check_values=check_values)
    return fields
