"""Lazy readers for the two real WeatherBench layouts, normalised to one internal layout.

Internal layout (every reader returns it, :func:`validate_fields` enforces it)::

    xarray.DataArray named "fields", dims ("time", "channel", "lat", "lon"), float32, dask-backed
    lat  32 values, ascending, -87.1875 .. 87.1875 (exactly the 5.625 deg cell centres)
    lon  64 values, ascending, 0 .. 354.375
    time datetime64[ns], regular steps of ``step_hours``, at multiples of ``step_hours`` after 00 UTC
    channel  short names: "z500", "t850", "u850", "q700", ... (variable + pressure level in hPa) or
             single-level names "t2m", "u10", "v10", "msl", "tp", "tisr", "tcc"

Source layouts
--------------
WB1 (pangeo-data/WeatherBench, netCDF, hourly): one folder per variable, one file per year::

    <root>/geopotential_500/geopotential_500hPa_1979_5.625deg.nc        variable "z" (dedicated level)
    <root>/geopotential/geopotential_1979_5.625deg.nc                   variable "z", all levels (`level` dim)
    <root>/2m_temperature/2m_temperature_1979_5.625deg.nc               variable "t2m"

dims ``time, lat, lon``; dedicated-level files carry a scalar ``level`` coordinate (or a length-1 ``level``
dim). For a pressure-level channel the dedicated folder ``<long>_<level>`` is used when it exists, otherwise
the all-levels folder ``<long>``.

WB2 (google-research/weatherbench2, zarr, 6-hourly): one store, long variable names, dims
``time, level, longitude, latitude`` (latitude ascending or descending), e.g.
``1959-2023_01_10-6h-64x32_equiangular_conservative.zarr``.

Nothing is loaded by the readers except coordinates; values are checked (NaN/inf) only by
``validate_fields(..., check_values=True)`` (or ``check_values=True`` on the readers), channel by channel and
block by block. Every problem raises :class:`wxbench.errors.DataError` naming the file, the variable or channel
and the times or coordinates at fault. Nothing is dropped, filled or interpolated silently; the only
transformations are: hourly -> ``step_hours`` subsampling (keeping times at multiples of ``step_hours``),
flipping a descending latitude axis, transposing to the internal dim order and casting to float32.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import DataError

__all__ = [
    "CHANNEL_ALIASES", "DIMS", "GRID_TOLERANCE_DEG", "LATITUDES", "LONGITUDES", "PRESSURE_LEVELS", "RESOLUTION",
    "VARIABLES", "ChannelSpec", "Variable", "canonical_channel", "open_wb1", "open_wb2", "parse_channel",
    "validate_fields", "wb1_candidates", "wb1_file_path", "wb2_location",
]

# --------------------------------------------------------------------------------------------------------------
# grid and internal layout
# --------------------------------------------------------------------------------------------------------------

RESOLUTION = "5.625deg"
GRID_STEP_DEG = 5.625
LATITUDES = -87.1875 + GRID_STEP_DEG * np.arange(32, dtype=np.float64)   # ascending, cell centres, no poles
LONGITUDES = GRID_STEP_DEG * np.arange(64, dtype=np.float64)             # 0 .. 354.375
GRID_TOLERANCE_DEG = 1e-6
DIMS = ("time", "channel", "lat", "lon")
FIELDS_NAME = "fields"
#: the 13 WB1/WB2 pressure levels (hPa); other levels are accepted if a file has them
PRESSURE_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
#: dask chunk length along time of WB2 arrays (about 12 MB per channel chunk); WB1 has one chunk per yearly file
TIME_CHUNK = 1460
#: time steps per channel loaded at once by the value check (about 32 MB)
VALUE_CHECK_BLOCK = 4096

_HOUR = np.timedelta64(1, "h")


# --------------------------------------------------------------------------------------------------------------
# variable / channel tables
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variable:
    """One physical variable and its names in both layouts."""

    short: str                 # internal short name ("z", "t2m")
    wb1_name: str | None       # WB1 folder / file stem ("geopotential", "2m_temperature"); None: not in WB1
    wb1_var: str | None        # netCDF variable in the WB1 files ("z", "t2m")
    wb2_name: str | None       # WB2 zarr variable ("geopotential", "total_precipitation_6hr")
    pressure_level: bool
    units: str
    long_name: str
    wb1_note: str = ""         # why the variable cannot be read from WB1 (when wb1_name is None)


def _v(short: str, wb1: str | None, wb1_var: str | None, wb2: str | None, pl: bool, units: str, long: str,
       note: str = "") -> Variable:
    return Variable(short, wb1, wb1_var, wb2, pl, units, long, note)


#: short variable name -> names in WB1 and WB2
VARIABLES: dict[str, Variable] = {v.short: v for v in [
    # pressure-level variables (channel = short + level in hPa)
    _v("z", "geopotential", "z", "geopotential", True, "m**2 s**-2", "geopotential"),
    _v("t", "temperature", "t", "temperature", True, "K", "temperature"),
    _v("u", "u_component_of_wind", "u", "u_component_of_wind", True, "m s**-1", "u component of wind"),
    _v("v", "v_component_of_wind", "v", "v_component_of_wind", True, "m s**-1", "v component of wind"),
    _v("q", "specific_humidity", "q", "specific_humidity", True, "kg kg**-1", "specific humidity"),
    _v("r", "relative_humidity", "r", "relative_humidity", True, "%", "relative humidity"),
    _v("w", None, None, "vertical_velocity", True, "Pa s**-1", "vertical velocity",
       "WB1 has no vertical velocity"),
    _v("vo", "vorticity", "vo", "vorticity", True, "s**-1", "vorticity"),
    _v("pv", "potential_vorticity", "pv", "potential_vorticity", True, "K m**2 kg**-1 s**-1",
       "potential vorticity"),
    # single-level variables (channel = short)
    _v("t2m", "2m_temperature", "t2m", "2m_temperature", False, "K", "2 metre temperature"),
    _v("u10", "10m_u_component_of_wind", "u10", "10m_u_component_of_wind", False, "m s**-1",
       "10 metre u wind component"),
    _v("v10", "10m_v_component_of_wind", "v10", "10m_v_component_of_wind", False, "m s**-1",
       "10 metre v wind component"),
    _v("msl", "mean_sea_level_pressure", "msl", "mean_sea_level_pressure", False, "Pa", "mean sea level pressure"),
    _v("tcc", "total_cloud_cover", "tcc", "total_cloud_cover", False, "(0 - 1)", "total cloud cover"),
    _v("tisr", "toa_incident_solar_radiation", "tisr", "toa_incident_solar_radiation", False, "J m**-2",
       "TOA incident solar radiation (1 h accumulation)"),
    _v("tp", None, None, "total_precipitation_6hr", False, "m", "total precipitation (6 h accumulation)",
       "WB1 stores hourly precipitation (total_precipitation/…, variable 'tp'); the internal 'tp' is the 6-hour "
       "accumulation (WB2 'total_precipitation_6hr'), which this reader does not derive from hourly data"),
]}


@dataclass(frozen=True)
class ChannelSpec:
    """A parsed channel: internal name, variable and pressure level (None for single-level variables)."""

    name: str
    variable: Variable
    level: int | None


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for v in VARIABLES.values():
        if v.pressure_level:
            for lev in PRESSURE_LEVELS:
                ch = f"{v.short}{lev}"
                for long in {v.wb1_name, v.wb2_name} - {None}:
                    aliases[f"{long}_{lev}"] = ch            # "geopotential_500" (the WB1 folder name)
                    aliases[f"{long}_{lev}hpa"] = ch         # "geopotential_500hPa" (the WB1 file stem)
        else:
            for long in {v.wb1_name, v.wb2_name} - {None}:
                aliases[long] = v.short                       # "2m_temperature"
    aliases["2t"] = "t2m"                                    # ECMWF paramId short names
    aliases["10u"] = "u10"
    aliases["10v"] = "v10"
    aliases["total_precipitation_6hr"] = "tp"
    return aliases


#: long spellings -> internal channel name ("geopotential_500" -> "z500", "2m_temperature" -> "t2m");
#: matched case-insensitively by :func:`canonical_channel`
CHANNEL_ALIASES: dict[str, str] = _build_aliases()

_PL_RE = re.compile(r"^([a-z]+)(\d+)$")


def canonical_channel(name: str) -> str:
    """The internal name of a channel given in any accepted spelling ("Z500", "geopotential_500" -> "z500")."""
    return parse_channel(name).name


def parse_channel(name: str) -> ChannelSpec:
    """Parse an internal channel name (or an alias) into variable and level; DataError when unknown."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"channel {name!r}: expected a non-empty string such as 'z500' or 't2m'")
    key = name.strip().lower()
    key = CHANNEL_ALIASES.get(key, key)
    var = VARIABLES.get(key)
    if var is not None:
        if var.pressure_level:
            raise DataError(f"channel {name!r}: {var.long_name} is a pressure-level variable; name the level in "
                            f"hPa, e.g. '{var.short}500'")
        return ChannelSpec(key, var, None)
    m = _PL_RE.match(key)
    if m and m.group(1) in VARIABLES and VARIABLES[m.group(1)].pressure_level:
        level = int(m.group(2))
        if level <= 0 or m.group(2).startswith("0"):
            raise DataError(f"channel {name!r}: bad pressure level {m.group(2)!r}")
        return ChannelSpec(f"{m.group(1)}{level}", VARIABLES[m.group(1)], level)
    pl = ", ".join(v.short for v in VARIABLES.values() if v.pressure_level)
    sl = ", ".join(v.short for v in VARIABLES.values() if not v.pressure_level)
    raise DataError(f"unknown channel {name!r}: expected a pressure-level variable ({pl}) followed by a level in "
                    f"hPa (e.g. 'z500', 't850'), or a single-level variable ({sl})")


def _parse_channels(channels: Sequence[str] | str) -> list[ChannelSpec]:
    if isinstance(channels, str):
        channels = [channels]
    specs = [parse_channel(c) for c in channels]
    if not specs:
        raise DataError("no channels requested")
    seen: dict[str, str] = {}
    for given, spec in zip(channels, specs):
        if spec.name in seen:
            raise DataError(f"channel {given!r} requested twice (as {seen[spec.name]!r} and {given!r})")
        seen[spec.name] = given
    return specs


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


def wb2_location(channel: str) -> tuple[str, int | None]:
    """WB2 zarr variable and level of ``channel`` ("z500" -> ("geopotential", 500))."""
    spec = parse_channel(channel)
    if spec.variable.wb2_name is None:
        raise DataError(f"channel {spec.name!r} is not available in the WB2 layout")
    return spec.variable.wb2_name, spec.level


# --------------------------------------------------------------------------------------------------------------
# small helpers: formatting, argument checks
# --------------------------------------------------------------------------------------------------------------

def _fmt_time(t: Any) -> str:
    t = np.datetime64(t, "s")
    s = str(t)  # 1980-01-01T06:00:00
    if s.endswith(":00:00"):
        return s[:-6]
    if s.endswith(":00"):
        return s[:-3]
    return s


def _fmt_times(times: Iterable[Any], limit: int = 5) -> str:
    times = list(times)
    shown = ", ".join(_fmt_time(t) for t in times[:limit])
    if len(times) > limit:
        shown += f", … ({len(times) - limit} more)"
    return shown


def _fmt_num(x: float) -> str:
    return f"{x:.6g}"


def _check_step(step_hours: int) -> int:
    try:
        step = int(step_hours)
    except (TypeError, ValueError):
        raise DataError(f"step_hours must be a whole number of hours dividing 24, got {step_hours!r}") from None
    if step != step_hours or step <= 0 or 24 % step:
        raise DataError(f"step_hours must be a whole number of hours dividing 24 (1, 2, 3, 4, 6, 8, 12, 24), "
                        f"got {step_hours!r}")
    return step


def _check_years(years: Iterable[int], what: str) -> list[int]:
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
# checks shared by readers and validate_fields
# --------------------------------------------------------------------------------------------------------------

def _check_axis(values: np.ndarray, expected: np.ndarray, what: str, where: str, *,
                allow_descending: bool) -> bool:
    """Check one grid axis against the canonical values; return True when it is stored descending."""
    n = len(expected)
    desc = f"{n} {what} {_fmt_num(expected[0])}..{_fmt_num(expected[-1])}"
    try:
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"grid mismatch in {where}: expected {desc}, got non-numeric {what} "
                        f"(dtype {np.asarray(values).dtype})") from None
    got = f"{_fmt_num(vals[0])}..{_fmt_num(vals[-1])}" if len(vals) else "none"
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
                        f"index {idx} is {_fmt_num(vals[i])}, expected {_fmt_num(expected[i])})")
    return flipped


def _check_time_order(times: np.ndarray, where: str) -> None:
    """No duplicates, strictly increasing, every time on a whole hour."""
    if len(times) == 0:
        raise DataError(f"{where}: time axis is empty")
    if np.isnat(times).any():
        bad = np.nonzero(np.isnat(times))[0]
        raise DataError(f"{where}: {len(bad)} missing (NaT) time value(s) at index {', '.join(map(str, bad[:5]))}")
    uniq, counts = np.unique(times, return_counts=True)
    dup = uniq[counts > 1]
    if len(dup):
        listed = ", ".join(f"{_fmt_time(t)} ({c}x)" for t, c in zip(dup[:5], counts[counts > 1][:5]))
        more = f", … ({len(dup) - 5} more)" if len(dup) > 5 else ""
        raise DataError(f"{where}: duplicated times: {listed}{more}")
    d = np.diff(times)
    back = np.nonzero(d < np.timedelta64(0, "ns"))[0]
    if len(back):
        i = int(back[0])
        raise DataError(f"{where}: time axis is not increasing: {_fmt_time(times[i])} is followed by "
                        f"{_fmt_time(times[i + 1])} ({len(back)} place(s) out of order)")
    off = (times - times.astype("datetime64[h]")) != np.timedelta64(0, "ns")
    if off.any():
        raise DataError(f"{where}: times not on a whole hour: {_fmt_times(times[off])}")


def _check_time_steps(times: np.ndarray, step: int, where: str) -> None:
    """Every step exactly ``step`` hours (call after _check_time_order)."""
    expected = np.timedelta64(step, "h")
    d = np.diff(times)
    bad = np.nonzero(d != expected)[0]
    if len(bad):
        i = int(bad[0])
        more = f" ({len(bad) - 1} more irregular step(s) after it)" if len(bad) > 1 else ""
        kind = "a gap" if d[i] > expected else "an irregular step"
        raise DataError(f"{where}: time axis has {kind} between {_fmt_time(times[i])} and "
                        f"{_fmt_time(times[i + 1])} (expected {step} h steps){more}")


def _hours_of_day(times: np.ndarray) -> np.ndarray:
    return ((times - times.astype("datetime64[D]")) // _HOUR).astype(np.int64)


def _as_index(idx: np.ndarray) -> slice | np.ndarray:
    """An integer index as a slice when it is an arithmetic progression (cheap strided reads)."""
    if len(idx) == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    d = np.diff(idx)
    if (d == d[0]).all() and d[0] > 0:
        return slice(int(idx[0]), int(idx[-1]) + 1, int(d[0]))
    return idx


def _subsample(times: np.ndarray, step: int, where: str) -> tuple[slice | np.ndarray, np.ndarray]:
    """Keep the times at multiples of ``step`` hours after 00 UTC (00/06/12/18 for 6 h)."""
    keep = np.nonzero(_hours_of_day(times) % step == 0)[0]
    if len(keep) == 0:
        raise DataError(f"{where}: no times at multiples of {step} h after 00 UTC among {len(times)} times "
                        f"({_fmt_time(times[0])}..{_fmt_time(times[-1])})")
    return _as_index(keep), times[keep]


def _time_values(arr: xr.DataArray, where: str) -> np.ndarray:
    if "time" not in arr.coords:
        raise DataError(f"{where}: no 'time' coordinate")
    t = arr["time"].values
    if not np.issubdtype(t.dtype, np.datetime64):
        cal = arr["time"].encoding.get("calendar") or arr["time"].attrs.get("calendar")
        raise DataError(f"{where}: time coordinate does not decode to datetime64 (dtype {t.dtype}"
                        f"{f', calendar {cal!r}' if cal else ''}); a standard/proleptic_gregorian calendar is "
                        "required")
    return np.asarray(t).astype("datetime64[ns]")


def _select_level(arr: xr.DataArray, spec: ChannelSpec, where: str) -> xr.DataArray:
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
            has = ", ".join(_fmt_num(float(x)) for x in levels)
            what = "not found" if len(match) == 0 else "found more than once"
            raise DataError(f"{where}: level {spec.level} hPa for channel {spec.name!r} {what} (has: {has})")
        arr = arr.isel(level=int(match[0]))
    else:
        val = float(levels.reshape(-1)[0]) if levels is not None and levels.size == 1 else None
        if val is None or abs(val - spec.level) > 1e-6:
            has = ", ".join(_fmt_num(float(x)) for x in levels.reshape(-1)) if levels is not None else "?"
            raise DataError(f"{where}: level coordinate is {has} hPa, expected {spec.level} for channel "
                            f"{spec.name!r}")
    return arr.drop_vars("level") if "level" in arr.coords else arr


def _check_dims(arr: xr.DataArray, expected: Sequence[str], where: str) -> None:
    if set(arr.dims) != set(expected) or len(arr.dims) != len(expected):
        raise DataError(f"{where}: expected dims ({', '.join(expected)}) (after selecting the level), got "
                        f"({', '.join(map(str, arr.dims))})")


def _to_dask(arr: xr.DataArray, order: Sequence[str], time_chunk: int) -> da.Array:
    """Lazily-indexed backend array -> float32 dask array in ``order`` (reads nothing)."""
    var = arr.variable.chunk({"time": time_chunk})
    var = var.transpose(*order)
    data = var.data
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    return data


def _make_fields(data: da.Array, times: np.ndarray, names: list[str], attrs: dict[str, Any]) -> xr.DataArray:
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


# --------------------------------------------------------------------------------------------------------------
# WB1
# --------------------------------------------------------------------------------------------------------------

def _decode_times_ns() -> Any:
    coders = getattr(xr, "coders", None)
    if coders is not None and hasattr(coders, "CFDatetimeCoder"):  # xarray >= 2025.01 may decode to s/us otherwise
        return coders.CFDatetimeCoder(time_unit="ns")
    return True  # older xarray always decodes to datetime64[ns]


_OPEN_KW: dict[str, Any] = {"chunks": None, "cache": False, "decode_times": _decode_times_ns()}


def _wb1_layout(root: Path, spec: ChannelSpec) -> tuple[Path, str, bool]:
    cands = [(root / f, s, all_levels) for f, s, all_levels in wb1_candidates(spec.name)]
    for folder, stem, all_levels in cands:
        if folder.is_dir():
            return folder, stem, all_levels
    tried = " or ".join(str(c[0]) for c in cands)
    raise DataError(f"WB1 root {root}: no folder for channel {spec.name!r} (variable "
                    f"{spec.variable.wb1_var!r}): expected {tried}")


def _wb1_years(folder: Path, stem: str) -> list[int]:
    pat = re.compile(rf"^{re.escape(stem)}_(\d{{4}})_{re.escape(RESOLUTION)}\.nc$")
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pat.match(p.name)))


def _read_wb1_file(path: Path, spec: ChannelSpec, year: int, step: int,
                   all_levels: bool) -> tuple[da.Array, np.ndarray]:
    where = f"WB1 file {path}"
    try:
        ds = xr.open_dataset(path, **_OPEN_KW)
    except Exception as exc:  # netCDF4/h5netcdf/HDF5 raise OSError, ValueError, RuntimeError, KeyError, ...
        raise DataError(f"{where}: cannot open for channel {spec.name!r} (corrupt, truncated or not netCDF?): "
                        f"{type(exc).__name__}: {exc}") from exc
    try:
        return _wb1_file_fields(ds, path, spec, year, step, all_levels)
    except BaseException:
        ds.close()  # release the handle (HDF5 locks the file) when the file is rejected
        raise


def _wb1_file_fields(ds: xr.Dataset, path: Path, spec: ChannelSpec, year: int, step: int,
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
    arr = _select_level(ds[var], spec, where)
    _check_dims(arr, ("time", "lat", "lon"), where)
    for c in ("lat", "lon"):
        if c not in arr.coords:
            raise DataError(f"grid mismatch in {where}: no {c!r} coordinate values")
    flip = _check_axis(arr["lat"].values, LATITUDES, "latitudes", where, allow_descending=True)
    _check_axis(arr["lon"].values, LONGITUDES, "longitudes", where, allow_descending=False)
    times = _time_values(arr, where)
    _check_time_order(times, where)
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    if (years != year).any():
        other = times[years != year]
        raise DataError(f"{where}: file for year {year} holds {len(other)} time(s) outside {year}: "
                        f"{_fmt_times(other)}")
    sel, kept = _subsample(times, step, where)
    _check_time_steps(kept, step, where)
    arr = arr.isel(time=sel)
    if flip:
        arr = arr.isel(lat=slice(None, None, -1))
    return _to_dask(arr, ("time", "lat", "lon"), -1), kept  # one chunk per yearly file


def open_wb1(root: str | Path, channels: Sequence[str], years: Sequence[int] | None = None, *,
             step_hours: int = 6, check_values: bool = False) -> xr.DataArray:
    """Open WB1 netCDF data (one folder per variable, one file per year, hourly) lazily.

    ``years``: consecutive years to read (None: every year found; all channels must have all of them).
    Hourly data is subsampled to the times at multiples of ``step_hours`` after 00 UTC. ``check_values`` also
    scans every value for NaN/inf (loads the data block by block; default off, the readers stay lazy).
    """
    root = Path(root).expanduser()
    step = _check_step(step_hours)
    specs = _parse_channels(channels)
    if not root.is_dir():
        raise DataError(f"WB1 root {root}: not a directory")
    layouts = {s.name: _wb1_layout(root, s) for s in specs}
    if years is None:
        found = sorted({y for folder, stem, _ in layouts.values() for y in _wb1_years(folder, stem)})
        if not found:
            pats = ", ".join(f"{f / stem}_<year>_{RESOLUTION}.nc" for f, stem, _ in layouts.values())
            raise DataError(f"WB1 root {root}: no yearly files found ({pats})")
        years_l = list(range(found[0], found[-1] + 1))
    else:
        years_l = _check_years(years, f"WB1 root {root}")

    pieces: list[da.Array] = []
    axis: np.ndarray | None = None
    axis_from = ""
    origin: dict[str, Any] = {}
    for spec in specs:
        folder, stem, all_levels = layouts[spec.name]
        parts: list[da.Array] = []
        tparts: list[np.ndarray] = []
        files: dict[str, str] = {}
        prev: Path | None = None
        for year in years_l:
            path = folder / f"{stem}_{year}_{RESOLUTION}.nc"
            if not path.is_file():
                raise DataError(f"WB1 channel {spec.name!r}: missing file for year {year}: {path}")
            data, t = _read_wb1_file(path, spec, year, step, all_levels)
            if tparts:
                last, first = tparts[-1][-1], t[0]
                if first - last != np.timedelta64(step, "h"):
                    raise DataError(f"WB1 channel {spec.name!r}: time axis has a gap between {_fmt_time(last)} "
                                    f"(end of {prev}) and {_fmt_time(first)} (start of {path}) "
                                    f"(expected {step} h steps)")
            parts.append(data)
            tparts.append(t)
            files[str(year)] = str(path)
            prev = path
        t_all = np.concatenate(tparts)
        if axis is None:
            axis, axis_from = t_all, spec.name
        elif len(t_all) != len(axis) or (t_all != axis).any():
            raise DataError(
                f"WB1 root {root}: channels cover different times: {axis_from!r} "
                f"{_fmt_time(axis[0])}..{_fmt_time(axis[-1])} ({len(axis)} steps) but {spec.name!r} "
                f"{_fmt_time(t_all[0])}..{_fmt_time(t_all[-1])} ({len(t_all)} steps) in {folder}")
        pieces.append(da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0])
        origin[spec.name] = {"variable": spec.variable.wb1_var, "level": spec.level, "files": files}
    assert axis is not None
    data = da.stack(pieces, axis=1)
    attrs = {"source": str(root), "source_format": "WB1", "step_hours": step,
             "channel_origin": json.dumps(origin)}
    fields = _make_fields(data, axis, [s.name for s in specs], attrs)
    validate_fields(fields, source=f"WB1 root {root}", step_hours=step, check_values=check_values)
    return fields


# --------------------------------------------------------------------------------------------------------------
# WB2
# --------------------------------------------------------------------------------------------------------------

def open_wb2(path: str | Path, channels: Sequence[str], *, step_hours: int = 6,
             years: Sequence[int] | None = None, check_values: bool = False) -> xr.DataArray:
    """Open a WB2 zarr store (6-hourly, long names, ``level`` dim, latitude either order) lazily.

    ``years``: optional consecutive years to keep (None: the whole store). Native steps finer than
    ``step_hours`` are subsampled to multiples of ``step_hours`` after 00 UTC; coarser ones are a gap error.
    """
    remote = isinstance(path, str) and "://" in path
    loc: str | Path = path if remote else Path(path).expanduser()
    where = f"WB2 store {loc}"
    step = _check_step(step_hours)
    specs = _parse_channels(channels)
    if not remote and not Path(loc).exists():
        raise DataError(f"{where}: does not exist")
    try:
        with warnings.catch_warnings():  # a store without consolidated metadata (zarr v3) is fine, only slower
            warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
            ds = xr.open_dataset(loc, engine="zarr", **_OPEN_KW)
    except Exception as exc:  # zarr raises FileNotFoundError, GroupNotFoundError, JSONDecodeError, ValueError, ...
        raise DataError(f"{where}: cannot open as zarr (corrupt, incomplete or not a zarr store?): "
                        f"{type(exc).__name__}: {exc}") from exc
    if "time" not in ds.coords:
        raise DataError(f"{where}: no 'time' coordinate")
    times = _time_values(ds["time"], where)
    _check_time_order(times, where)
    if years is not None:
        ys = _check_years(years, where)
        yr = times.astype("datetime64[Y]").astype(np.int64) + 1970
        for y in ys:
            if not (yr == y).any():
                raise DataError(f"{where}: no times in year {y} (store covers {_fmt_time(times[0])}.."
                                f"{_fmt_time(times[-1])})")
        inyear = np.nonzero((yr >= ys[0]) & (yr <= ys[-1]))[0]
        tsel0: slice | np.ndarray = _as_index(inyear)
        times = times[inyear]
    else:
        tsel0 = slice(None)
    sel, kept = _subsample(times, step, where)
    _check_time_steps(kept, step, where)

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
        arr = _select_level(arr, spec, vwhere)
        _check_dims(arr, ("time", "longitude", "latitude"), vwhere)
        for c in ("latitude", "longitude"):
            if c not in arr.coords:
                raise DataError(f"grid mismatch in {vwhere}: no {c!r} coordinate values")
        flip = _check_axis(arr["latitude"].values, LATITUDES, "latitudes", vwhere, allow_descending=True)
        _check_axis(arr["longitude"].values, LONGITUDES, "longitudes", vwhere, allow_descending=False)
        arr = arr.isel(time=tsel0).isel(time=sel)
        if flip:
            arr = arr.isel(latitude=slice(None, None, -1))
        pieces.append(_to_dask(arr, ("time", "latitude", "longitude"), TIME_CHUNK))
        origin[spec.name] = {"variable": name, "level": level, "store": str(loc)}
    data = da.stack(pieces, axis=1)
    attrs = {"source": str(loc), "source_format": "WB2", "step_hours": step,
             "channel_origin": json.dumps(origin)}
    fields = _make_fields(data, kept, [s.name for s in specs], attrs)
    validate_fields(fields, source=where, step_hours=step, check_values=check_values)
    return fields


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
                raise DataError(f"{where}: cannot read channel {ch!r} at times {_fmt_time(times[a])}.."
                                f"{_fmt_time(times[b - 1])} (corrupt or truncated data?): "
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
            raise DataError(f"{where}: {what} values in channel {ch!r} at times {_fmt_times(bad_t)}")


def validate_fields(fields: xr.DataArray, *, source: str, step_hours: int = 6, check_values: bool = True) -> None:
    """Check that ``fields`` is in the internal layout; DataError naming ``source`` and the fault otherwise.

    Checks dims, dtype, channel names, the exact grid (within 1e-6 deg, ascending), the time axis (datetime64[ns],
    no duplicates, increasing, every step exactly ``step_hours``, at multiples of ``step_hours`` after 00 UTC),
    and, when ``check_values``, every value for NaN/inf: one channel at a time, a block of time chunks at a time,
    so that a large store is never loaded at once. Values are read but not kept.
    """
    step = _check_step(step_hours)
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
    _check_axis(fields["lat"].values, LATITUDES, "latitudes", source, allow_descending=False)
    _check_axis(fields["lon"].values, LONGITUDES, "longitudes", source, allow_descending=False)
    t = fields["time"].values
    if t.dtype != np.dtype("datetime64[ns]"):
        raise DataError(f"{source}: time coordinate must be datetime64[ns], got {t.dtype}")
    _check_time_order(t, source)
    off = _hours_of_day(t) % step != 0
    if off.any():
        raise DataError(f"{source}: times not at multiples of {step} h after 00 UTC: {_fmt_times(t[off])}")
    _check_time_steps(t, step, source)
    if check_values:
        _check_values(fields, source, t)
