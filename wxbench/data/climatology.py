"""The climatology ACC and the ``climatology`` baseline are scored against: "the expected state at this valid time".

Two kinds, chosen per benchmark source (:func:`benchmark_climatology`):

* **time-invariant** (``embedded``): the training split's time mean at every grid point, ``(C, H, W)``. The embedded
  Held-Suarez simulation has no seasonal or diurnal cycle (its dates are labels), so a calendar climatology would
  only add sampling noise.
* **calendar** (``wb1``, ``wb2``): a day-of-year x hour-of-day climatology from the training years, smoothed over
  day of year as WeatherBench 2 computes its climatologies (Rasp et al. 2024; weatherbench2's
  ``compute_climatology`` script, its default "explicit" method): per hour of day, every training state is
  assigned to its ordinal day of year (1..366, so 1 March is day 60 in common years and day 61 in leap years,
  as xarray's ``time.dt.dayofyear``); a common year's 31 December (day 365) also stands in for its missing
  day 366; the climatology of day ``d`` is the weighted mean over all training years and the days ``d + k``,
  ``|k| <= 30``, with triangular weights ``1 - |k| / 30`` (a 61-day window whose outermost days weigh 0),
  running circularly over the 366 days. A (day, hour) without any training state within the window is
  missing, and scoring a valid time there is an error. Or it is read from a user-given WB2 climatology store
  (``--climatology PATH``: zarr with dims ``dayofyear`` (1..366), ``hour``, ``latitude``, ``longitude`` and,
  for pressure-level variables, ``level``; variables by WB2 long name from the channel catalogue).

Values are in physical units, float32. A climatology computed from the training split is cached in
``$WXBENCH_CACHE/climatology/``, keyed by the data's content hash (written atomically). A valid time is looked up
by its own day of year and hour (:meth:`Climatology.at`), as WB2's evaluation does.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import xarray as xr

from ..atomic import atomic_path
from ..errors import DataError
from .channels import parse_channels
from .layout import OPEN_KW, check_grid, format_time

if TYPE_CHECKING:
    from .benchmarks import Benchmark
    from .splits import Normaliser

__all__ = ["DAYS", "WINDOW_DAYS", "Climatology", "benchmark_climatology", "calendar_climatology",
           "check_wb2_climatology", "day_of_year", "hour_of_day", "read_wb2_climatology", "window_weights"]

#: days of the calendar climatology's year (day 366 exists in leap years only)
DAYS = 366
#: WeatherBench 2's smoothing window over day of year (``compute_climatology --window_size``), in days
WINDOW_DAYS = 61
#: bump when the computation changes: old cache files are then recomputed
_CACHE_VERSION = 1
# time steps summed at once while accumulating the calendar sums (bounded memory for on-disk fields)
_TIME_CHUNK = 1024

Kind = Literal["invariant", "calendar"]


def day_of_year(times: np.ndarray) -> np.ndarray:
    """Ordinal day of year, 1..366 (``time.dt.dayofyear``: 1 March is day 60, or 61 in a leap year)."""
    t = np.asarray(times, dtype="datetime64[ns]")
    return (t.astype("datetime64[D]") - t.astype("datetime64[Y]")).astype(np.int64) + 1


def hour_of_day(times: np.ndarray) -> np.ndarray:
    t = np.asarray(times, dtype="datetime64[ns]")
    return ((t - t.astype("datetime64[D]")) // np.timedelta64(1, "h")).astype(np.int64)


def _is_leap(years: np.ndarray) -> np.ndarray:
    return (years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))


def window_weights(window_days: int = WINDOW_DAYS) -> np.ndarray:
    """Triangular weights ``1 - |k| / h`` for day offsets ``k = -h .. h``, ``h = window_days // 2`` (WB2's)."""
    if window_days < 3 or window_days % 2 == 0:
        raise DataError(f"climatology smoothing window must be an odd number of days >= 3, got {window_days}")
    half = window_days // 2
    return 1.0 - np.abs(np.arange(-half, half + 1)) / half


def _circular_smoother(window_days: int) -> torch.Tensor:
    """(DAYS, DAYS) float64 matrix whose row d holds the window weights of the days around d, wrapping."""
    weights = window_weights(window_days)
    half = window_days // 2
    matrix = np.zeros((DAYS, DAYS))
    rows = np.arange(DAYS)
    for k, w in zip(range(-half, half + 1), weights):
        matrix[rows, (rows + k) % DAYS] += w
    return torch.from_numpy(matrix)


class Climatology:
    """A climatology in physical units, looked up at valid times with :meth:`at`.

    ``values``: ``(C, H, W)`` for the time-invariant kind, ``(366, K, C, H, W)`` (day of year 1..366, the ``K``
    hours of day in ``hours``) for the calendar kind; float32, NaN where a (day, hour) has no data.
    ``origin`` says where it came from (for messages and results). Picklable (without its device copies).
    """

    def __init__(self, values: np.ndarray, channels: Sequence[str], *, hours: Sequence[int] = (),
                 window_days: int | None = None, origin: str = "") -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)
        self.channels = tuple(channels)
        self.hours = tuple(int(h) for h in hours)
        self.window_days = window_days
        self.origin = origin
        expected_ndim = 5 if self.hours else 3
        if values.ndim != expected_ndim or values.shape[-3] != len(self.channels) or (
                self.hours and values.shape[:2] != (DAYS, len(self.hours))):
            layout = f"({DAYS}, {len(self.hours)}, C, H, W)" if self.hours else "(C, H, W)"
            raise ValueError(f"Climatology from {origin or '?'}: values of shape {values.shape}, expected {layout} "
                             f"with C = {len(self.channels)}")
        self.values = values
        self._on_device: dict[str, torch.Tensor] = {}

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def time_mean(cls, fields: torch.Tensor | np.ndarray, channels: Sequence[str], *, origin: str = "") -> Climatology:
        """The time-invariant kind: the mean over the time axis of ``(T, C, H, W)`` fields, summed in float64."""
        mean = torch.as_tensor(fields).double().mean(dim=0).float()
        return cls(mean.numpy(), channels, origin=origin)

    @property
    def kind(self) -> Kind:
        return "calendar" if self.hours else "invariant"

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one state."""
        return tuple(self.values.shape[-3:])  # type: ignore[return-value]

    def describe(self) -> str:
        if self.kind == "invariant":
            return f"time-invariant mean of {self.origin}"
        window = f", smoothed over {self.window_days} days" if self.window_days else ""
        return f"day of year x hour of day ({', '.join(f'{h:02d}' for h in self.hours)} UTC) from {self.origin}{window}"

    @property
    def content_hash(self) -> str:
        """sha256 of the kind, hours, channels and values: tells two climatologies of the same data apart."""
        if "hash" not in self.__dict__:
            digest = hashlib.sha256(json.dumps([self.channels, self.hours]).encode())
            digest.update(self.values.tobytes())
            self.__dict__["hash"] = "sha256:" + digest.hexdigest()
        return self.__dict__["hash"]

    def normalised(self, normaliser: Normaliser) -> Climatology:
        """The same climatology in a model's normalised units (computed in float64)."""
        values = normaliser.normalise(torch.from_numpy(self.values).double()).float().numpy()
        return Climatology(values, self.channels, hours=self.hours, window_days=self.window_days,
                           origin=f"{self.origin} ({normaliser.kind}-normalised)")

    # -- lookup ---------------------------------------------------------------------------------------------

    def rows(self, valid_times: np.ndarray) -> np.ndarray:
        """Calendar kind: the flat (day, hour) row of each valid time in ``values.reshape(-1, C, H, W)``.

        DataError naming the climatology when a valid time falls on an hour it lacks or a day without data.
        """
        t = np.asarray(valid_times, dtype="datetime64[ns]").reshape(-1)
        hour_index = np.full(24, -1, dtype=np.int64)
        hour_index[list(self.hours)] = np.arange(len(self.hours))
        index = hour_index[hour_of_day(t)]
        if (index < 0).any():
            bad = t[index < 0]
            raise DataError(f"climatology ({self.describe()}) has no value for hour {hour_of_day(bad[:1])[0]:02d} "
                            f"UTC, needed at {format_time(bad[0])} ({len(bad)} valid time(s))")
        rows = (day_of_year(t) - 1) * len(self.hours) + index
        missing = self._missing_rows()[rows]
        if missing.any():
            bad = t[missing]
            raise DataError(f"climatology ({self.describe()}) has no data for day of year {day_of_year(bad[:1])[0]} "
                            f"at {hour_of_day(bad[:1])[0]:02d} UTC, needed at {format_time(bad[0])} ({len(bad)} "
                            "valid time(s)): the training split covers too little of the year for a day-of-year "
                            "climatology")
        return rows

    def _missing_rows(self) -> np.ndarray:
        if "missing" not in self.__dict__:
            flat = self.values.reshape(-1, int(np.prod(self.shape)))
            self.__dict__["missing"] = np.isnan(flat).any(axis=1)
        return self.__dict__["missing"]

    def check_covers(self, valid_times: np.ndarray, what: str) -> None:
        """Warn at once when ``valid_times`` (e.g. every state of the test windows) are not all covered: scoring
        them (ACC, the climatology baseline) will be a DataError, while the data stay usable otherwise."""
        if self.kind == "calendar" and len(valid_times):
            try:
                self.rows(valid_times)
            except DataError as exc:
                warnings.warn(f"{what}: {exc}", RuntimeWarning, stacklevel=2)

    def table(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """``values`` as a torch tensor on ``device`` (copied there once)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = torch.from_numpy(self.values).to(device)
        return self._on_device[key]

    def at(self, valid_times: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        """The climatology at ``valid_times`` (datetime64, any shape S): float32 tensor ``(*S, C, H, W)``.

        For the time-invariant kind a broadcast view of the one mean (no copy); for the calendar kind the
        (day of year, hour of day) of each valid time.
        """
        shape = np.shape(valid_times)
        table = self.table(device)
        if self.kind == "invariant":
            return table.expand(*shape, *self.shape)
        rows = torch.from_numpy(self.rows(valid_times)).to(table.device)
        return table.view(-1, *self.shape).index_select(0, rows).view(*shape, *self.shape)

    # -- persistence ----------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A plain, torch.save-able dict (see :meth:`from_state`)."""
        return {"values": torch.from_numpy(self.values), "channels": list(self.channels), "hours": list(self.hours),
                "window_days": self.window_days, "origin": self.origin}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Climatology:
        values = state["values"]
        values = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        return cls(values, state["channels"], hours=state["hours"], window_days=state["window_days"],
                   origin=state["origin"])

    def __getstate__(self) -> dict[str, Any]:
        return {"values": self.values, "channels": self.channels, "hours": self.hours,
                "window_days": self.window_days, "origin": self.origin}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["values"], state["channels"], hours=state["hours"], window_days=state["window_days"],
                      origin=state["origin"])

    def __repr__(self) -> str:
        return f"Climatology({self.kind}, channels={list(self.channels)}, {self.describe()})"


# -- calendar climatology from training data ----------------------------------------------------------------

def calendar_climatology(fields: torch.Tensor | np.ndarray, times: np.ndarray, channels: Sequence[str], *,
                         window_days: int = WINDOW_DAYS, origin: str = "") -> Climatology:
    """Day-of-year x hour-of-day climatology of ``(T, C, H, W)`` fields at ``times``, smoothed as WB2 does.

    With ``S[d, h]`` the sum of the states on day of year ``d`` at hour ``h`` (a common year's day 365 counted
    again for its day 366) and ``N[d, h]`` their number, the climatology is
    ``sum_k w_k S[d + k, h] / sum_k w_k N[d + k, h]`` (days wrapping around the 366), which is WB2's weighted
    mean over years and window with missing days left out. Summed in float64, one channel at a time and
    ``_TIME_CHUNK`` states at a time, so ``fields`` may be a memory-mapped array larger than memory.
    """
    times = np.asarray(times, dtype="datetime64[ns]")
    if len(times) != len(fields):
        raise ValueError(f"calendar_climatology: {len(fields)} fields but {len(times)} times")
    hours = tuple(int(h) for h in np.unique(hour_of_day(times)))
    n_hours = len(hours)
    hour_index = np.full(24, -1, dtype=np.int64)
    hour_index[list(hours)] = np.arange(n_hours)
    days = day_of_year(times)
    rows = (days - 1) * n_hours + hour_index[hour_of_day(times)]
    # a common year's 31 December also fills its (missing) day 366, as WB2 fills day 366 from day 365
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    stand_in = np.nonzero((days == 365) & ~_is_leap(years))[0]
    extra_rows = rows[stand_in] + n_hours
    counts = np.bincount(np.concatenate([rows, extra_rows]), minlength=DAYS * n_hours).astype(np.float64)
    smoother = _circular_smoother(window_days)
    weight_sums = smoother @ torch.from_numpy(counts.reshape(DAYS, n_hours))  # (DAYS, K)
    _, n_chan, n_lat, n_lon = fields.shape
    out = np.empty((DAYS, n_hours, n_chan, n_lat, n_lon), dtype=np.float32)
    rows_t, extra_t = torch.from_numpy(rows), torch.from_numpy(extra_rows)
    for c in range(n_chan):
        sums = torch.zeros(DAYS * n_hours, n_lat, n_lon, dtype=torch.float64)
        for start in range(0, len(times), _TIME_CHUNK):
            sums.index_add_(0, rows_t[start:start + _TIME_CHUNK], _float64(fields[start:start + _TIME_CHUNK, c]))
        sums.index_add_(0, extra_t, _float64(fields[stand_in, c]).reshape(-1, n_lat, n_lon))
        smoothed = torch.einsum("de,ekx->dkx", smoother, sums.view(DAYS, n_hours, -1))
        # 0 / 0 -> NaN: no training state within the window of that (day, hour)
        out[:, :, c] = (smoothed / weight_sums[:, :, None]).view(DAYS, n_hours, n_lat, n_lon).float().numpy()
    return Climatology(out, channels, hours=hours, window_days=window_days, origin=origin)


def _float64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    # a float64 copy of a slice of a tensor or (read-only, memory-mapped) array
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def _cache_path(data_hash: str, window_days: int) -> Path:
    from .embedded import cache_dir

    digest = data_hash.split(":", 1)[-1]
    return cache_dir() / "climatology" / f"{digest[:40]}-calendar-w{window_days}-v{_CACHE_VERSION}.npz"


def _cached_calendar_climatology(fields: torch.Tensor | np.ndarray, times: np.ndarray, channels: Sequence[str], *,
                                 data_hash: str, origin: str, window_days: int = WINDOW_DAYS) -> Climatology:
    """:func:`calendar_climatology`, computed once per data content hash and kept in the wxbench cache."""
    path = _cache_path(data_hash, window_days)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as cached:
                meta = json.loads(str(cached["meta"]))
                if meta["data_hash"] == data_hash and meta["channels"] == list(channels):
                    return Climatology(cached["values"], channels, hours=meta["hours"], window_days=window_days,
                                       origin=origin)
        except (OSError, ValueError, KeyError):  # unreadable or foreign: recomputed and replaced below
            pass
    clim = calendar_climatology(fields, times, channels, window_days=window_days, origin=origin)
    meta = {"data_hash": data_hash, "channels": list(channels), "hours": list(clim.hours), "origin": origin,
            "window_days": window_days, "version": _CACHE_VERSION}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, values=clim.values, meta=np.array(json.dumps(meta)))
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
    except OSError as exc:  # a read-only or full cache costs a recomputation next time, not the run
        warnings.warn(f"climatology cache {path} not written: {exc}", RuntimeWarning, stacklevel=2)
    return clim


# -- WB2 climatology stores ---------------------------------------------------------------------------------

def _open_wb2_climatology(path: str | Path, channels: Sequence[str], hours: Sequence[int]) -> list[xr.DataArray]:
    """Each channel's ``(dayofyear, hour, latitude, longitude)`` array of a WB2 climatology store at ``hours``,
    lazily, after every check that needs no values: variables, levels, dims, grid, the 366 days, the hours.

    A store without an ``hour`` dim (a daily climatology; WB2's ACC then selects by day of year only) gives
    the same field at every hour. Channels are read as WB2's evaluation reads them
    (:func:`wxbench.forecast_io.read_channel`: a shared ``level`` dim or level-suffixed variables).
    """
    from ..forecast_io import read_channel
    from .stores import location_exists, zarr_store

    where = f"climatology store {path}"
    if not location_exists(path, "climatology store"):  # a remote path without its package: the install hint
        raise DataError(f"{where}: does not exist")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
            ds = xr.open_dataset(zarr_store(path, "climatology store"), engine="zarr",
                                 **{**OPEN_KW, "decode_times": False})
    except Exception as exc:  # zarr raises many kinds: GroupNotFoundError, JSONDecodeError, ValueError, ...
        raise DataError(f"{where}: cannot open as zarr (corrupt, incomplete or not a zarr store?): "
                        f"{type(exc).__name__}: {exc}") from exc
    if "dayofyear" not in ds.coords:
        raise DataError(f"{where}: no 'dayofyear' coordinate; a WB2 climatology has dims dayofyear (1..366), "
                        f"[hour,] latitude, longitude [, level] (dims: {', '.join(map(str, ds.dims)) or 'none'})")
    doy = np.asarray(ds["dayofyear"].values).reshape(-1)
    if sorted(doy.tolist()) != list(range(1, DAYS + 1)):
        have = f"{len(doy)} values ({doy.min()}..{doy.max()})" if len(doy) else "no values"
        raise DataError(f"{where}: field 'dayofyear' has {have}, expected the {DAYS} days 1..{DAYS} of a WB2 "
                        "climatology (another calendar?)")
    if "hour" in ds.coords:
        store_hours = np.asarray(ds["hour"].values).reshape(-1).tolist()
        missing_hours = [h for h in hours if h not in store_hours]
        if missing_hours:
            raise DataError(f"{where}: field 'hour' has {', '.join(f'{h:g}' for h in store_hours)}; the "
                            f"benchmark's valid times also need hour(s) "
                            f"{', '.join(f'{h:02d}' for h in missing_hours)} UTC")
    arrays = []
    for spec in parse_channels(channels):
        arr = read_channel(ds, spec.name, where)
        vwhere = f"{where}, variable {arr.name!r} (channel {spec.name!r})"
        expected = {"dayofyear", "latitude", "longitude"} | ({"hour"} if "hour" in ds.coords else set())
        if set(arr.dims) != expected:
            raise DataError(f"{vwhere}: expected dims ({', '.join(sorted(expected))}), got "
                            f"({', '.join(map(str, arr.dims))})")
        if check_grid(arr, "latitude", "longitude", vwhere):
            arr = arr.isel(latitude=slice(None, None, -1))
        arr = arr.sortby("dayofyear")
        if "hour" in arr.dims:
            arr = arr.sel(hour=list(hours))
        else:
            arr = arr.expand_dims(hour=list(hours), axis=1)
        arrays.append(arr.transpose("dayofyear", "hour", "latitude", "longitude"))
    return arrays


def check_wb2_climatology(path: str | Path, channels: Sequence[str], step_hours: int) -> None:
    """Everything about a WB2 climatology store that can be checked without reading its values (the command
    line calls it before any work): DataError naming the store and field."""
    _open_wb2_climatology(path, channels, tuple(range(0, 24, step_hours)))


def read_wb2_climatology(path: str | Path, channels: Sequence[str], *, step_hours: int = 6) -> Climatology:
    """A WB2 climatology store (``dayofyear`` [x ``hour``] x grid, long names) as a calendar
    :class:`Climatology` at the hours ``0, step_hours, ...``; DataError naming the store and field on bad input."""
    hours = tuple(range(0, 24, step_hours))
    arrays = _open_wb2_climatology(path, channels, hours)
    values = np.stack([np.asarray(a.values, dtype=np.float32) for a in arrays], axis=2)  # (day, hour, C, H, W)
    specs = parse_channels(channels)
    for c, (spec, arr) in enumerate(zip(specs, arrays)):
        bad = ~np.isfinite(values[:, :, c])
        if bad.any():
            d, h = np.argwhere(bad)[0][:2]
            raise DataError(f"climatology store {path}, variable {arr.name!r} (channel {spec.name!r}): "
                            f"{int(bad.sum())} non-finite value(s) (first at dayofyear {d + 1}, hour {hours[h]:02d})")
    return Climatology(values, [s.name for s in specs], hours=hours, origin=f"WB2 store {path}")


# -- the benchmark's climatology -----------------------------------------------------------------------------

def benchmark_climatology(benchmark: Benchmark, train_frames: torch.Tensor | np.ndarray,
                          times: Mapping[str, np.ndarray], *, data_hash: str,
                          time_mean: np.ndarray | None = None) -> Climatology:
    """The climatology a benchmark is scored against, in physical units.

    ``train_frames`` ``(T, C, H, W)`` at ``times["train"]`` (may be memory-mapped); ``times``: split -> the
    times of its windows' states; ``time_mean``: the training frames' float64 time mean when already known
    (the data cache computes it while it is built). A user-given store (``benchmark.climatology``) wins;
    otherwise the embedded source has the time-invariant training mean and wb1/wb2 the calendar
    climatology of the training years (cached by ``data_hash``). Warns at load when it does not cover every
    state of the test windows (a training split shorter than the year), which scoring then refuses.
    """
    train = times["train"]
    origin = f"the training split {format_time(train[0])} .. {format_time(train[-1])}"
    channels = tuple(benchmark.channels)
    if benchmark.climatology is not None:
        clim = read_wb2_climatology(benchmark.climatology, channels, step_hours=benchmark.step_hours)
    elif benchmark.source == "embedded":
        if time_mean is None:
            clim = Climatology.time_mean(train_frames, channels, origin=origin)
        else:
            clim = Climatology(np.asarray(time_mean).astype(np.float32), channels, origin=origin)
    else:
        clim = _cached_calendar_climatology(train_frames, train, channels, data_hash=data_hash, origin=origin)
    clim.check_covers(times["test"], f"benchmark {benchmark.name!r}, test split")
    return clim
