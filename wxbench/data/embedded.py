"""The embedded default dataset: generated locally (no download), cached, verified by hash.

``prepare(benchmark)`` runs the benchmark's trajectories of the Held-Suarez simulation
(:mod:`wxbench.data.simulate`) in parallel processes, writes one netCDF file to the cache, and only
then writes a completion marker holding the content hash. A file without a marker (an interrupted
prepare) is never used; a file whose hash disagrees with its marker is an error, not a fallback.

Cache directory: ``$WXBENCH_CACHE`` if set, else ``~/.cache/wxbench``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

from ..atomic import atomic_path, write_atomic
from ..errors import DataError
from .benchmarks import Benchmark


def cache_dir() -> Path:
    return Path(os.environ.get("WXBENCH_CACHE", Path.home() / ".cache" / "wxbench"))


def dataset_path(benchmark: Benchmark) -> Path:
    from .simulate import GENERATOR_VERSION

    # named by the data, not the benchmark version: a version that changes only the splits reuses the file
    return cache_dir() / "data" / f"{benchmark.data_key or benchmark.key}-{GENERATOR_VERSION}.nc"


def marker_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".complete.json")


def content_hash(fields: xr.DataArray) -> str:
    """sha256 of the channel names, times and float32 values of a (time, channel, lat, lon) array."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(",".join(map(str, fields["channel"].values)).encode())
    digest.update(np.ascontiguousarray(fields["time"].values.astype("datetime64[ns]")).tobytes())
    values = np.ascontiguousarray(fields.values, dtype=np.float32)
    digest.update(values.tobytes())
    return "sha256:" + digest.hexdigest()


def to_fields(ds: xr.Dataset, channels: tuple[str, ...]) -> xr.DataArray:
    """(time, lat, lon) variables -> the internal (time, channel, lat, lon) float32 array."""
    missing = [c for c in channels if c not in ds]
    if missing:
        raise DataError(f"embedded dataset: variables {missing} missing (has {sorted(ds.data_vars)})")
    fields = xr.concat([ds[c].astype(np.float32) for c in channels], dim="channel")
    fields = fields.assign_coords(channel=list(channels)).transpose("time", "channel", "lat", "lon")
    return fields.rename("fields")


def prepare(benchmark: Benchmark, *, force: bool = False, progress: bool = True, processes: int = 2) -> Path:
    """Generate and cache the benchmark's data if it is not complete already; return its path."""
    from .simulate import GENERATOR_VERSION, generate_trajectories

    path = dataset_path(benchmark)
    if not force and marker_path(path).exists() and path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    marker_path(path).unlink(missing_ok=True)  # whatever was there is incomplete from now on
    started = time.perf_counter()
    parts = generate_trajectories([dict(t) for t in benchmark.trajectories], processes=processes, progress=progress)
    ds = xr.concat(parts, dim="time")
    fields = to_fields(ds, benchmark.channels)
    digest = content_hash(fields)
    seconds = time.perf_counter() - started
    ds.attrs.update({
        "title": benchmark.description,
        "benchmark": benchmark.key,
        "generator_version": GENERATOR_VERSION,
        "trajectories": json.dumps(list(benchmark.trajectories)),
        "content_hash": digest,
        "generation_seconds": round(seconds, 1),
    })
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    # the marker is written last: its presence means the file above is complete
    marker = {"content_hash": digest, "generator_version": GENERATOR_VERSION,
              "generation_seconds": round(seconds, 1), "benchmark": benchmark.key}
    write_atomic(marker_path(path), json.dumps(marker, indent=2).encode())
    return path


def open_embedded(benchmark: Benchmark, *, progress: bool = True, verify: bool = True) -> xr.DataArray:
    """The cached (time, channel, lat, lon) array, generated first when missing or incomplete."""
    path = dataset_path(benchmark)
    if not (path.exists() and marker_path(path).exists()):
        prepare(benchmark, progress=progress)
    try:
        marker = json.loads(marker_path(path).read_text())
        with xr.open_dataset(path, engine="netcdf4") as ds:
            fields = to_fields(ds, benchmark.channels).load()
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"embedded dataset cache {path} is unreadable ({type(exc).__name__}: {exc}); "
                        "delete it or run `wxbench data prepare --force`") from exc
    if verify:
        digest = content_hash(fields)
        if digest != marker.get("content_hash"):
            raise DataError(f"embedded dataset cache {path}: content hash {digest} does not match the one "
                            f"recorded when it was generated ({marker.get('content_hash')}); the file is corrupt "
                            "or was modified. Delete it or run `wxbench data prepare --force`.")
    fields.attrs["content_hash"] = marker["content_hash"]
    fields.attrs["source"] = str(path)
    return fields
