"""Forecasts made elsewhere, and the data they are scored against, in the WeatherBench 2 layouts.

* :func:`evaluate_forecast_file` (``wxbench evaluate FORECAST.zarr --benchmark B``) scores a WB2-layout
  forecast file (a published model's, your own) on a benchmark's test split with the runner's metrics
  (:class:`~wxbench.metrics.ScoreAccumulator`, the same latitude weights, climatology, initialisations and
  lead times) and writes a result in the runner's layout, marked ``external: true``, so it is ranked on the
  leaderboard beside the trained models.
* :func:`export_split` (``wxbench export``) writes a split's scored truth and the benchmark's climatology in
  WB2's observation and climatology layouts, so WB2's own evaluation can score any wxbench forecast.

The file layouts are those of :mod:`wxbench.forecast_io`. Every check of a forecast file (dims, variables,
levels, grid, initialisations, lead times) happens before any scoring, each error naming the file and field.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .data.benchmarks import SPLITS, Benchmark
from .data.layout import OPEN_KW, check_grid, format_time, format_times
from .data.stores import location_exists, zarr_store
from .errors import DataError
from .forecast_io import ENSEMBLE_DIMS, read_channel, write_wb2_climatology, write_wb2_truth
from .results import Result, result_path, write_result

__all__ = ["evaluate_forecast_file", "export_split", "open_forecast_file"]

#: initialisations read from a forecast file and scored at once
_BATCH = 16


def open_forecast_file(path: str | Path) -> xr.Dataset:
    """Open a WB2-layout forecast zarr (local or any fsspec URL) lazily; DataError naming the file."""
    where = f"forecast file {path}"
    if not location_exists(path, "forecast file"):
        raise DataError(f"{where}: does not exist")
    try:
        return xr.open_dataset(zarr_store(path, "forecast file"), engine="zarr", **OPEN_KW)
    except Exception as exc:  # zarr raises many kinds for a store it cannot read
        raise DataError(f"{where}: cannot open as zarr: {type(exc).__name__}: {exc}") from exc


def _forecast_fields(ds: xr.Dataset, channels: tuple[str, ...], where: str) -> tuple[list[xr.DataArray], str | None]:
    """Each channel's array with dims (time, [member,] prediction_timedelta, latitude, longitude), latitude
    ascending, and the member dim (None for a deterministic file). Checks dims, names and the grid."""
    for coord in ("time", "prediction_timedelta"):
        if coord not in ds.coords:
            raise DataError(f"{where}: no {coord!r} coordinate (the WB2 forecast layout has dims time = "
                            f"initialisation, prediction_timedelta, latitude, longitude; has: "
                            f"{', '.join(map(str, ds.dims)) or 'none'})")
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise DataError(f"{where}: coordinate 'time' is not datetimes (dtype {ds['time'].dtype})")
    if not np.issubdtype(ds["prediction_timedelta"].dtype, np.timedelta64):
        raise DataError(f"{where}: coordinate 'prediction_timedelta' is not timedeltas "
                        f"(dtype {ds['prediction_timedelta'].dtype})")
    members = [d for d in ENSEMBLE_DIMS if d in ds.dims]
    if len(members) > 1:
        raise DataError(f"{where}: two ensemble dims {members}; expected one of {list(ENSEMBLE_DIMS)}")
    member = members[0] if members else None
    order = ["time"] + ([member] if member else []) + ["prediction_timedelta", "latitude", "longitude"]
    fields = []
    for channel in channels:
        arr = read_channel(ds, channel, where)
        vwhere = f"{where}, variable {arr.name!r} (channel {channel!r})"
        if set(arr.dims) != set(order):
            raise DataError(f"{vwhere}: expected dims ({', '.join(order)}), got ({', '.join(map(str, arr.dims))})")
        if check_grid(arr, "latitude", "longitude", vwhere):
            arr = arr.isel(latitude=slice(None, None, -1))
        fields.append(arr.transpose(*order))
    return fields, member


def _check_coverage(ds: xr.Dataset, inits: np.ndarray, lead_hours: tuple[int, ...], where: str,
                    benchmark: Benchmark) -> None:
    file_inits = ds["time"].values.astype("datetime64[ns]")
    missing = np.setdiff1d(inits, file_inits)
    if len(missing):
        raise DataError(f"{where}: coordinate 'time' lacks {len(missing)} of the {len(inits)} test initialisations "
                        f"of benchmark {benchmark.key} ({format_time(inits[0])} .. {format_time(inits[-1])}): "
                        f"{format_times(missing)}")
    if len(np.unique(file_inits)) != len(file_inits):
        raise DataError(f"{where}: coordinate 'time' has duplicated initialisations")
    leads = ds["prediction_timedelta"].values.astype("timedelta64[ns]")
    need = np.array([np.timedelta64(h, "h") for h in lead_hours], dtype="timedelta64[ns]")
    absent = [h for h, lead in zip(lead_hours, need) if lead not in leads]
    if absent:
        have = ", ".join(f"{int(v // np.timedelta64(1, 'h'))} h" for v in leads[:12])
        raise DataError(f"{where}: coordinate 'prediction_timedelta' lacks lead time(s) "
                        f"{', '.join(f'{h} h' for h in absent)} (has: {have or 'none'})")


def _gather(fields: list[xr.DataArray], inits: np.ndarray, lead_hours: tuple[int, ...], where: str) -> np.ndarray:
    """(B, [E,] L, C, H, W) float32 forecasts at ``inits`` and the benchmark's lead times."""
    leads = np.array([np.timedelta64(h, "h") for h in lead_hours], dtype="timedelta64[ns]")
    parts = [arr.sel(time=inits, prediction_timedelta=leads).values.astype(np.float32) for arr in fields]
    values = np.stack(parts, axis=-3)
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        raise DataError(f"{where}: non-finite forecast values, e.g. variable {fields[bad[-3]].name!r} at "
                        f"initialisation {format_time(inits[bad[0]])}")
    return values


def evaluate_forecast_file(path: str | Path, benchmark: Benchmark, *, name: str | None = None,
                           profile: str | None = None, output: str | Path | None = None,
                           progress: bool = True) -> Result:
    """Score a WB2-layout forecast file on ``benchmark``'s test split and write its result file.

    ``name``: the leaderboard's model name (default: the file's stem); ``profile``: the leaderboard it joins
    (the reference scores are computed under it; default: the default profile). Returns the result.
    """
    from .metrics import ScoreAccumulator
    from .profiles import DEFAULT_PROFILE, get_profile
    from .results import DEFAULT_OUTPUT
    from .runner import RunTask, cached_benchmark_data, provenance, reference_scores, result_header

    started = dt.datetime.now(dt.timezone.utc)
    where = f"forecast file {path}"
    name = name or Path(str(path).rstrip("/")).stem
    profile_ = get_profile(profile or DEFAULT_PROFILE)
    output = output if output is not None else DEFAULT_OUTPUT
    ds = open_forecast_file(path)
    channels = tuple(benchmark.channels)
    fields, member = _forecast_fields(ds, channels, where)  # names, dims and grid: before loading any data
    data = cached_benchmark_data(benchmark, progress)
    test = data.split("test", "zscore")
    inits = test.window_times(slice(None)).astype("datetime64[ns]")
    _check_coverage(ds, inits, data.grid.lead_hours, where, benchmark)

    start = time.perf_counter()
    # as runner.evaluate scores a model: the same accumulator, truth and climatology at each valid time
    acc = ScoreAccumulator(torch.tensor(data.grid.lat), data.grid.channels, data.grid.lead_hours)
    leads = np.array(data.grid.lead_hours, dtype="timedelta64[h]")
    for a in range(0, len(test), _BATCH):
        index = torch.arange(a, min(a + _BATCH, len(test)))
        batch_inits = inits[index.numpy()]
        _, target = test.windows(index)
        truth = test.normaliser.denormalise(target.float())
        forecast = torch.from_numpy(_gather(fields, batch_inits, data.grid.lead_hours, where))
        acc.update(forecast, truth, climatology=data.climatology.at(batch_inits[:, None] + leads))
    eval_seconds = time.perf_counter() - start

    task = RunTask(model=name, benchmark=benchmark, profile=profile_.name, output=str(output))
    ensemble_size = int(ds.sizes[member]) if member else 1
    now = dt.datetime.now(dt.timezone.utc)
    # the runner's header (schema version, model, benchmark, profile, seed; no budget), then this file's facts
    result: Result = {
        **result_header(task, None, started), "status": "ok", "end_time": now.isoformat(),
        "wall_seconds": (now - started).total_seconds(), "family": "external", "external": True,
        "forecast_source": str(path), "hyperparameters": {}, "probabilistic": member is not None,
        "ensemble_size": ensemble_size, "weights": f"external forecast {path}", "model_info": {},
        "scores": acc.compute(), "reference_scores": reference_scores(data, profile_),
        "lead_hours": list(data.grid.lead_hours), "channels": list(channels), "data_stats": data.stats,
        "is_ensemble": bool(acc.is_ensemble), "crps_is_mae": not acc.is_ensemble, "test_windows": len(test),
        "throughput": {"samples_per_second": None, "train_seconds": None, "eval_seconds": eval_seconds},
        "provenance": provenance(task, None, data, "cpu"),
    }
    write_result(result_path(output, benchmark.key, profile_.name, name, 0), result)
    return result


def _truth_states(data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(valid times, (T, C, H, W) float32 states) of every target of ``split``'s scored windows, each state
    once, the truth exactly as the runner scores it (gathered as targets, then denormalised)."""
    part = data.split(split, "zscore")
    n_in, n_out = data.grid.input_steps, data.grid.output_steps
    target_rows = (part.starts[:, None] + torch.arange(n_in, n_in + n_out)).numpy()  # (N, L) frame indices
    rows = np.unique(target_rows)
    states = np.empty((len(rows), *_state_shape(data)), dtype=np.float32)
    for a in range(0, len(part), _BATCH):
        index = torch.arange(a, min(a + _BATCH, len(part)))
        _, target = part.windows(index)
        # a state that is a target of several windows gets the same value from each
        states[np.searchsorted(rows, target_rows[a:a + len(index)])] = \
            part.normaliser.denormalise(target.float()).numpy()
    return part.times[rows], states


def _state_shape(data: Any) -> tuple[int, int, int]:
    return len(data.grid.channels), len(data.grid.lat), len(data.grid.lon)


def export_split(benchmark: Benchmark, split: str, out: str | Path, *, progress: bool = True) -> dict[str, Path]:
    """Write ``split``'s scored truth (``OUT``, WB2 observation layout) and the benchmark's climatology
    (``OUT`` with ``.climatology.zarr`` for its suffix, WB2 climatology layout). Returns both paths."""
    from .runner import cached_benchmark_data

    if split not in SPLITS:
        raise DataError(f"export: unknown split {split!r}; one of {', '.join(SPLITS)}")
    data = cached_benchmark_data(benchmark, progress)
    out = Path(out).expanduser()
    times, states = _truth_states(data, split)
    truth = write_wb2_truth(out, states, times, data.grid.channels, data.grid.lat, data.grid.lon)
    clim = data.climatology  # wxbench.data.climatology.Climatology, in physical units
    clim_path = write_wb2_climatology(out.with_name(out.stem + ".climatology.zarr"), clim.values,
                                      data.grid.channels, data.grid.lat, data.grid.lon, hours=clim.hours or None)
    return {"truth": truth, "climatology": clim_path}
