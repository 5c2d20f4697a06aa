"""The internal layout every data source is normalised to, its validation, and the checks both readers share.

Internal layout (:func:`validate_fields` enforces it)::

    xarray.DataArray named "fields", dims ("time", "channel", "lat", "lon"), float32, dask-backed
    lat  32 values, ascending, -87.1875 .. 87.1875 (exactly the 5.625 deg cell centres)
    lon  64 values, ascending, 0 .. 354.375
    time datetime64[ns], regular steps of ``step_hours``, at multiples of ``step_hours`` after 00 UTC
    channel  short names from the catalogue (:mod:`wxbench.data.channels`): "z500", "t850", "t2m", ...

Values are checked (NaN/inf) only by ``validate_fields(..., check_values=True)``, channel by channel and block
by block. Every problem raises :class:`wxbench.errors.DataError` naming the file, the variable or channel and
the times or coordinates at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import DataError
from .channels import ChannelSpec

__all__ = ["DIMS", "FIELDS_NAME", "GRID_STEP_DEG", "GRID_TOLERANCE_DEG", "LATITUDES", "LONGITUDES",
           "validate_fields"]

GRID_STEP_DEG = 5.625
LATITUDES = -87.1875 + GRID_STEP_DEG * np.arange(32, dtype=np.float64)   # ascending, cell centres, no poles
LONGITUDES = GRID_STEP_DEG * np.arange(64, dtype=np.float64)             # 0 .. 354.375
GRID_TOLERANCE_DEG = 1e-6
DIMS = ("time", "channel", "lat", "lon")
FIELDS_NAME = "fields"
#: time steps per channel loaded at once by the value check (about 32 MB)
VALUE_CHECK_BLOCK = 4096

_HOUR = np.timedelta64(1, "h")


# --------------------------------------------------------------------------------------------------------------
# formatting, argument checks
# --------------------------------------------------------------------------------------------------------------

def format_time(t: Any) -> str:
    t = np.datetime64(t, "s")
    s = str(t)  # 1980-01-01T06:00:00
    if s.endswith(":00:00"):
        return s[:-6]
    if s.endswith(":00"):
        return s[:-3]
    return s


def format_times(times: Iterable[Any], limit: int = 5) -> str:
    times = list(times)
    shown = ", ".join(format_time(t) for t in times[:limit])
    if len(times) > limit:
        shown += f", … ({len(times) - limit} more)"
    return shown


def format_number(x: float) -> str:
    return f"{x:.6g}"


def check_step_hours(step_hours: int) -> int:
    try:
        step = int(step_hours)
    except (TypeError, ValueError):
        raise DataError(f"step_hours must be a whole number of hours dividing 24, got {step_hours!r}") from None
    if step != step_hours or step <= 0 or 24 % step:
        raise DataError(f"step_hours must be a whole number of hours dividing 24 (1, 2, 3, 4, 6, 8, 12, 24), "
                        f"got {step_hours!r}")
    return step


def check_years(years: Iterable[int], what: str) -> list[int]:
    try:
        ys = sorted({int(y) for y in years})
    except (TypeError, ValueError):
        raise DataError(f"{what}: years must be integers, got {years!r}") from None
    if not ys:
        raise DataError(f"{what}: no years requested")
    missing = sorted(set(range(ys[0], ys[-1] + 1)) - set(ys))
    if missing:
        raise DataError(f"{what}: years must be consecutive (the time axis may have no gaps); "
                        f"{ys[0]}..{ys[-1]} lacks {', '.join(map(str, missing))}")
    return ys


# --------------------------------------------------------------------------------------------------------------
# checks and conversions shared by the readers and validate_fields
# --------------------------------------------------------------------------------------------------------------

def check_axis(values: np.ndarray, expected: np.ndarray, what: str, where: str, *,
                allow_descending: bool) -> bool:
    """Check one grid axis against the canonical values; return True when it is stored descending."""
    n = len(expected)
    desc = f"{n} {what} {format_number(expected[0])}..{format_number(expected[-1])}"
    try:
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"grid mismatch in {where}: expected {desc}, got non-numeric {what} "
                        f"(dtype {np.asarray(values).dtype})") from None
    got = f"{format_number(vals[0])}..{format_number(vals[-1])}" if len(vals) else "none"
    if len(vals) != n:
        raise DataError(f"grid mismatch in {where}: expected {desc}, got {len(vals)} ({got})")
    flipped = False
    if len(vals) > 1 and vals[0] > vals[-1]:
        if not allow_descending:
            raise DataError(f"grid mismatch in {where}: expected {desc} in ascending order, got {got} "
                            f"(descending)")
        vals = vals[::-1]
        flipped = True
    err = np.abs(vals - expected)
    bad = np.nonzero(~(err <= GRID_TOLERANCE_DEG))[0]
    if len(bad):
        i = int(bad[0])
        idx = n - 1 - i if flipped else i
        raise DataError(f"grid mismatch in {where}: expected {desc} (steps of {GRID_STEP_DEG}), got {got} with "
                        f"{len(bad)} value(s) off by more than {GRID_TOLERANCE_DEG} deg (first: {what[:-1]} "
                        f"index {idx} is {format_number(vals[i])}, expected {format_number(expected[i])})")
    return flipped


def check_grid(arr: xr.DataArray, lat: str, lon: str, where: str) -> bool:
    """Check that ``arr`` has the WB 64x32 grid on its ``lat``/``lon`` coordinates (named as its layout
    names them); True when latitudes are descending (the caller flips them to ascending)."""
    for c in (lat, lon):
        if c not in arr.coords:
            raise DataError(f"grid mismatch in {where}: no {c!r} coordinate values")
    flip = check_axis(arr[lat].values, LATITUDES, "latitudes", where, allow_descending=True)
    check_axis(arr[lon].values, LONGITUDES, "longitudes", where, allow_descending=False)
    return flip


def check_time_order(times: np.ndarray, where: str) -> None:
    """No duplicates, strictly increasing, every time on a whole hour."""
    if len(times) == 0:
        raise DataError(f"{where}: time axis is empty")
    if np.isnat(times).any():
        bad = np.nonzero(np.isnat(times))[0]
        raise DataError(f"{where}: {len(bad)} missing (NaT) time value(s) at index {', '.join(map(str, bad[:5]))}")
    uniq, counts = np.unique(times, return_counts=True)
    dup = uniq[counts > 1]
    if len(dup):
        listed = ", ".join(f"{format_time(t)} ({c}x)" for t, c in zip(dup[:5], counts[counts > 1][:5]))
        more = f", … ({len(dup) - 5} more)" if len(dup) > 5 else ""
        raise DataError(f"{where}: duplicated times: {listed}{more}")
    d = np.diff(times)
    back = np.nonzero(d < np.timedelta64(0, "ns"))[0]
    if len(back):
        i = int(back[0])
        raise DataError(f"{where}: time axis is not increasing: {format_time(times[i])} is followed by "
                        f"{format_time(times[i + 1])} ({len(back)} place(s) out of order)")
    off = (times - times.astype("datetime64[h]")) != np.timedelta64(0, "ns")
    if off.any():
        raise DataError(f"{where}: times not on a whole hour: {format_times(times[off])}")


def check_time_steps(times: np.ndarray, step: int, where: str) -> None:
    """Every step exactly ``step`` hours (call after check_time_order)."""
    expected = np.timedelta64(step, "h")
    d = np.diff(times)
    bad = np.nonzero(d != expected)[0]
    if len(bad):
        i = int(bad[0])
        more = f" ({len(bad) - 1} more irregular step(s) after it)" if len(bad) > 1 else ""
        kind = "a gap" if d[i] > expected else "an irregular step"
        raise DataError(f"{where}: time axis has {kind} between {format_time(times[i])} and "
                        f"{format_time(times[i + 1])} (expected {step} h steps){more}")


def _hours_of_day(times: np.ndarray) -> np.ndarray:
    return ((times - times.astype("datetime64[D]")) // _HOUR).astype(np.int64)


def as_index(idx: np.ndarray) -> slice | np.ndarray:
    """An integer index as a slice when it is an arithmetic progression (cheap strided reads)."""
    if len(idx) == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    d = np.diff(idx)
    if (d == d[0]).all() and d[0] > 0:
        return slice(int(idx[0]), int(idx[-1]) + 1, int(d[0]))
    return idx


def subsample_times(times: np.ndarray, step: int, where: str) -> tuple[slice | np.ndarray, np.ndarray]:
    """Keep the times at multiples of ``step`` hours after 00 UTC (00/06/12/18 for 6 h)."""
    keep = np.nonzero(_hours_of_day(times) % step == 0)[0]
    if len(keep) == 0:
        raise DataError(f"{where}: no times at multiples of {step} h after 00 UTC among {len(times)} times "
                        f"({format_time(times[0])}..{format_time(times[-1])})")
    return as_index(keep), times[keep]


def time_values(arr: xr.DataArray, where: str) -> np.ndarray:
    if "time" not in arr.coords:
        raise DataError(f"{where}: no 'time' coordinate")
    t = arr["time"].values
    if not np.issubdtype(t.dtype, np.datetime64):
        cal = arr["time"].encoding.get("calendar") or arr["time"].attrs.get("calendar")
        raise DataError(f"{where}: time coordinate does not decode to datetime64 (dtype {t.dtype}"
                        f"{f', calendar {cal!r}' if cal else ''}); a standard/proleptic_gregorian calendar is "
                        "required")
    return np.asarray(t).astype("datetime64[ns]")


def select_level(arr: xr.DataArray, spec: ChannelSpec, where: str) -> xr.DataArray:
    """Reduce a possible ``level`` dim / scalar coordinate to the channel's level (or drop a trivial one)."""
    has_dim = "level" in arr.dims
    has_coord = "level" in arr.coords
    if spec.level is None:
        if has_dim:
            if arr.sizes["level"] != 1:
                raise DataError(f"{where}: single-level channel {spec.name!r} but the variable has a 'level' "
                                f"dim of size {arr.sizes['level']}")
            arr = arr.isel(level=0)
        return arr.drop_vars("level") if "level" in arr.coords else arr
    if not has_dim and not has_coord:
        # a dedicated-level file without level metadata: the folder/file name carries the level
        return arr
    levels = np.atleast_1d(np.asarray(arr["level"].values)) if has_coord else None
    if has_dim:
        if levels is None:
            if arr.sizes["level"] != 1:
                raise DataError(f"{where}: 'level' dim of size {arr.sizes['level']} has no coordinate values; "
                                f"cannot find level {spec.level} for channel {spec.name!r}")
            return arr.isel(level=0)
        match = np.nonzero(np.isclose(levels.astype(np.float64), spec.level, rtol=0, atol=1e-6))[0]
        if len(match) != 1:
            has = ", ".join(format_number(float(x)) for x in levels)
            what = "not found" if len(match) == 0 else "found more than once"
            raise DataError(f"{where}: level {spec.level} hPa for channel {spec.name!r} {what} (has: {has})")
        arr = arr.isel(level=int(match[0]))
    else:
        val = float(levels.reshape(-1)[0]) if levels is not None and levels.size == 1 else None
        if val is None or abs(val - spec.level) > 1e-6:
            has = ", ".join(format_number(float(x)) for x in levels.reshape(-1)) if levels is not None else "?"
            raise DataError(f"{where}: level coordinate is {has} hPa, expected {spec.level} for channel "
                            f"{spec.name!r}")
    return arr.drop_vars("level") if "level" in arr.coords else arr


def check_dims(arr: xr.DataArray, expected: Sequence[str], where: str) -> None:
    if set(arr.dims) != set(expected) or len(arr.dims) != len(expected):
        raise DataError(f"{where}: expected dims ({', '.join(expected)}) (after selecting the level), got "
                        f"({', '.join(map(str, arr.dims))})")


def to_dask(arr: xr.DataArray, order: Sequence[str], time_chunk: int) -> da.Array:
    """Lazily-indexed backend array -> float32 dask array in ``order`` (reads nothing)."""
    var = arr.variable.chunk({"time": time_chunk})
    var = var.transpose(*order)
    data = var.data
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    return data


def make_fields(data: da.Array, times: np.ndarray, names: list[str], attrs: dict[str, Any]) -> xr.DataArray:
    return xr.DataArray(
        data, dims=DIMS, name=FIELDS_NAME,
        coords={
            "time": np.asarray(times, dtype="datetime64[ns]"),
            "channel": np.asarray(names, dtype=str),
            "lat": xr.Variable("lat", LATITUDES.copy(), {"units": "degrees_north", "long_name": "latitude"}),
            "lon": xr.Variable("lon", LONGITUDES.copy(), {"units": "degrees_east", "long_name": "longitude"}),
        },
        attrs=attrs,
    )


def _decode_times_ns() -> Any:
    coders = getattr(xr, "coders", None)
    if coders is not None and hasattr(coders, "CFDatetimeCoder"):  # xarray >= 2025.01 may decode to s/us otherwise
        return coders.CFDatetimeCoder(time_unit="ns")
    return True  # older xarray always decodes to datetime64[ns]


#: xarray.open_dataset options of both readers: lazy backend arrays (no dask yet), no in-memory cache, ns times
OPEN_KW: dict[str, Any] = {"chunks": None, "cache": False, "decode_times": _decode_times_ns()}


# --------------------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------------------

def _origin_of(fields: xr.DataArray, channel: str, times: np.ndarray, source: str) -> str:
    """Where a channel's values at ``times`` come from: the WB1 files of those years, or the WB2 variable."""
    try:
        info = json.loads(fields.attrs["channel_origin"])[channel]
    except (KeyError, TypeError, ValueError):
        return source
    fmt = fields.attrs.get("source_format", "")
    lev = f" level {info['level']}" if info.get("level") is not None else ""
    if "files" in info and len(times):
        years = sorted({int(y) for y in times.astype("datetime64[Y]").astype(np.int64) + 1970})
        paths = [info["files"].get(str(y)) for y in years]
        paths = [p for p in paths if p]
        if paths:
            noun = "file" if len(paths) == 1 else "files"
            return f"{fmt} {noun} {', '.join(paths)} (variable {info['variable']!r}{lev}) [{source}]"
    if "store" in info:
        return f"{fmt} store {info['store']} (variable {info['variable']!r}{lev}) [{source}]"
    return source


def _check_values(fields: xr.DataArray, source: str, times: np.ndarray) -> None:
    data = fields.data
    n = len(times)
    if isinstance(data, da.Array):
        bounds = np.cumsum((0,) + data.chunks[0])
    else:
        bounds = np.arange(0, n + 1, max(n, 1))
    # group whole time chunks into blocks of about VALUE_CHECK_BLOCK steps
    blocks: list[tuple[int, int]] = []
    start = 0
    for b in bounds[1:]:
        if b - start >= VALUE_CHECK_BLOCK or b == n:
            blocks.append((start, int(b)))
            start = int(b)
    channels = [str(c) for c in fields["channel"].values]
    for c, ch in enumerate(channels):
        nan_t: list[np.ndarray] = []
        inf_t: list[np.ndarray] = []
        n_nan = n_inf = 0
        for a, b in blocks:
            try:
                vals = np.asarray(data[a:b, c])
            except Exception as exc:
                where = _origin_of(fields, ch, times[a:b], source)
                raise DataError(f"{where}: cannot read channel {ch!r} at times {format_time(times[a])}.."
                                f"{format_time(times[b - 1])} (corrupt or truncated data?): "
                                f"{type(exc).__name__}: {exc}") from exc
            isnan = np.isnan(vals)
            isinf = np.isinf(vals)
            if isnan.any():
                per_t = isnan.sum(axis=(1, 2))
                n_nan += int(per_t.sum())
                nan_t.append(times[a:b][per_t > 0])
            if isinf.any():
                per_t = isinf.sum(axis=(1, 2))
                n_inf += int(per_t.sum())
                inf_t.append(times[a:b][per_t > 0])
        if n_nan or n_inf:
            bad_t = np.unique(np.concatenate(nan_t + inf_t))
            what = " and ".join(p for p in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else "")
                                if p)
            where = _origin_of(fields, ch, bad_t, source)
            raise DataError(f"{where}: {what} values in channel {ch!r} at times {format_times(bad_t)}")


def validate_fields(fields: xr.DataArray, *, source: str, step_hours: int = 6, check_values: bool = True) -> None:
    """Check that ``fields`` is in the internal layout; DataError naming ``source`` and the fault otherwise.

    Checks dims, dtype, channel names, the exact grid (within 1e-6 deg, ascending), the time axis (datetime64[ns],
    no duplicates, increasing, every step exactly ``step_hours``, at multiples of ``step_hours`` after 00 UTC),
    and, when ``check_values``, every value for NaN/inf: one channel at a time, a block of time chunks at a time,
    so that a large store is never loaded at once. Values are read but not kept.
    """
    step = check_step_hours(step_hours)
    if not isinstance(fields, xr.DataArray):
        raise DataError(f"{source}: expected an xarray.DataArray, got {type(fields).__name__}")
    if tuple(fields.dims) != DIMS:
        raise DataError(f"{source}: expected dims ({', '.join(DIMS)}), got ({', '.join(map(str, fields.dims))})")
    if fields.dtype != np.float32:
        raise DataError(f"{source}: expected dtype float32, got {fields.dtype}")
    for c in DIMS:
        if c not in fields.coords:
            raise DataError(f"{source}: no {c!r} coordinate values")
    chans = fields["channel"].values
    if not all(isinstance(c, str) for c in chans.tolist()):
        raise DataError(f"{source}: channel coordinate must hold strings, got {chans.dtype}")
    names = [str(c) for c in chans]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DataError(f"{source}: duplicated channels: {', '.join(map(repr, dup))}")
    empty = [i for i, c in enumerate(names) if not c.strip()]
    if empty:
        raise DataError(f"{source}: empty channel name at index {empty[0]}")
    check_axis(fields["lat"].values, LATITUDES, "latitudes", source, allow_descending=False)
    check_axis(fields["lon"].values, LONGITUDES, "longitudes", source, allow_descending=False)
    t = fields["time"].values
    if t.dtype != np.dtype("datetime64[ns]"):
        raise DataError(f"{source}: time coordinate must be datetime64[ns], got {t.dtype}")
    check_time_order(t, source)
    off = _hours_of_day(t) % step != 0
    if off.any():
        raise DataError(f"{source}: times not at multiples of {step} h after 00 UTC: {format_times(t[off])}")
    check_time_steps(t, step, source)
    if check_values:
        _check_values(fields, source, t)
