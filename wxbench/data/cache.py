"""The on-disk cache of a benchmark's frames: built once from the readers, then memory-mapped.

Every process that needs a benchmark's data (a local run, each Ray worker on a node) maps the same file
instead of holding the splits in memory; the kernel's page cache is the only copy in RAM, shared by all
processes of a node, and pages that are not in use can be dropped again. Layout, in
``$WXBENCH_CACHE/benchmarks/<key>/`` (default ``~/.cache/wxbench``)::

    frames.npy   (T, C, H, W) float32, physical units: every state a window of any split uses, in time order
    times.npy    (T,) datetime64[ns]
    stats.npz    training statistics: per channel mean/std/min/max, and the time mean per grid point
    meta.json    written last, its presence means the folder is complete: channels, content hash, source

``<key>`` hashes what determines the content: the source (kind, location and a fingerprint of it: the embedded
data's own content hash, or the sizes and modification times of a local store's top-level entries), the
channels, the step and the time ranges read. The content hash is sha256 of the channel names, the times and the
float32 values (as the embedded cache's, :func:`wxbench.data.embedded.content_hash`); it is verified on every
open of a cache up to :data:`VERIFY_MAX_BYTES`, larger caches are checked for completeness and size only (a full
check would read the whole file at every start).

Building streams the source one time block at a time (the reader's dask chunk, 1460 steps; a block of all
channels is in memory at once, 1460 x C x 8 KB: 47 MB for 4 channels, 575 MB for 48, read :data:`GROUP_BYTES`
of channels at a time), checks each block for NaN/inf, writes it, and accumulates the hash, the training
statistics and the training time mean, so nothing of size T is ever in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..atomic import write_atomic
from ..errors import DataError
from .benchmarks import Benchmark
from .embedded import cache_dir
from .splits import StatsAccumulator

__all__ = ["CACHE_FORMAT", "FrameCache", "VERIFY_MAX_BYTES", "benchmark_cache", "needed_ranges", "open_cache"]

#: bump when the layout of a cache folder changes (old folders are then ignored, never misread)
CACHE_FORMAT = 1
#: caches up to this size are hash-verified on every open
VERIFY_MAX_BYTES = 2 * 2**30
#: time steps per block when the source is not dask-backed (the WB2 reader's chunk length)
BLOCK_STEPS = 1460
#: channels of one block read from the source at once, at most this many bytes (besides the block itself)
GROUP_BYTES = 128 * 2**20
_READ_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FrameCache:
    """An opened cache folder: the memory-mapped frames and what was computed while building them."""

    folder: Path
    frames: np.ndarray  # (T, C, H, W) float32, copy-on-write memory map (writes stay private, never reach disk)
    times: np.ndarray  # (T,) datetime64[ns]
    channels: tuple[str, ...]
    content_hash: str
    stats: dict[str, dict[str, float]]  # training split, per channel
    train_mean: np.ndarray  # (C, H, W) float64 time mean of the training split
    meta: dict[str, Any]


def needed_ranges(benchmark: Benchmark) -> dict[str, tuple[np.datetime64, np.datetime64]]:
    """Per split, the states its windows may use: the train range itself; for val and test, the initialisation
    range widened by the history before it and the targets after it (val's targets stop before the test range)."""
    step = np.timedelta64(benchmark.step_hours, "h")
    history = (benchmark.input_steps - 1) * step
    targets = benchmark.output_steps * step
    out = {"train": benchmark.split_range("train")}
    test_start = benchmark.split_range("test")[0]
    for name in ("val", "test"):
        start, end = benchmark.split_range(name)
        last = end + targets
        if name == "val":
            last = min(last, test_start - np.timedelta64(1, "ns"))
        out[name] = (start - history, last)
    return out


def _fingerprint(benchmark: Benchmark) -> dict[str, Any]:
    """What identifies the source's content without reading it."""
    if benchmark.source == "embedded":
        from .embedded import dataset_path, marker_path, prepare

        path = dataset_path(benchmark)
        if not (path.exists() and marker_path(path).exists()):
            prepare(benchmark)
        return {"embedded": json.loads(marker_path(path).read_text())["content_hash"]}
    location = str(benchmark.path)
    if "://" in location:
        return {"location": location}  # remote stores are immutable releases; nothing cheap to stat
    root = Path(location).expanduser().resolve()
    if not root.exists():
        return {"location": str(root)}  # opening the source reports it
    entries = [root, *sorted(root.iterdir())] if root.is_dir() else [root]
    return {"location": str(root),
            "entries": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in entries]}


def _cache_key(benchmark: Benchmark, fingerprint: dict[str, Any]) -> str:
    ranges = {k: [str(a), str(b)] for k, (a, b) in needed_ranges(benchmark).items()}
    what = {"format": CACHE_FORMAT, "source": benchmark.source, "fingerprint": fingerprint,
            "channels": list(benchmark.channels), "step_hours": benchmark.step_hours, "ranges": ranges}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def _header(f) -> tuple[tuple[int, ...], int]:
    """Shape and data offset of an open .npy file."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran or dtype != np.float32:
        raise DataError(f"{f.name}: not a C-ordered float32 array")
    return shape, f.tell()


def _digest_start(channels: tuple[str, ...], times: np.ndarray) -> Any:
    digest = hashlib.sha256()
    digest.update(",".join(channels).encode())
    digest.update(np.ascontiguousarray(times.astype("datetime64[ns]")).tobytes())
    return digest


def open_cache(folder: Path, *, verify: bool | None = None) -> FrameCache:
    """Open a complete cache folder (DataError if it is incomplete, truncated or, when verified, modified).

    ``verify``: check the content hash (default: when the frames are at most :data:`VERIFY_MAX_BYTES`).
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        times = np.load(folder / "times.npy")
        with np.load(folder / "stats.npz") as z:
            stats_arr, train_mean = z["stats"], z["train_mean"]
        with open(folder / "frames.npy", "rb") as f:
            shape, offset = _header(f)
        size = (folder / "frames.npy").stat().st_size
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"benchmark cache {folder} is incomplete or unreadable ({type(exc).__name__}: {exc}); "
                        "delete the folder, it is rebuilt from the data") from exc
    channels = tuple(meta["channels"])
    n_bytes = int(np.prod(shape)) * 4
    if size != offset + n_bytes or shape[0] != len(times) or shape[1] != len(channels):
        raise DataError(f"benchmark cache {folder}: frames.npy is {size} bytes for shape {shape} and {len(times)} "
                        "times (truncated?); delete the folder, it is rebuilt from the data")
    if verify if verify is not None else n_bytes <= VERIFY_MAX_BYTES:
        digest = _digest_start(channels, times)
        with open(folder / "frames.npy", "rb") as f:
            f.seek(offset)
            while chunk := f.read(_READ_BYTES):
                digest.update(chunk)
        if "sha256:" + digest.hexdigest() != meta["content_hash"]:
            raise DataError(f"benchmark cache {folder}: content hash does not match the one recorded when it was "
                            "built (the file is corrupt or was modified); delete the folder, it is rebuilt")
    frames = np.load(folder / "frames.npy", mmap_mode="c")
    stats = {c: dict(zip(("mean", "std", "min", "max"), map(float, stats_arr[i]))) for i, c in enumerate(channels)}
    return FrameCache(folder, frames, times, channels, meta["content_hash"], stats, train_mean, meta)


@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One builder per cache folder on a node (e.g. several Ray workers starting at once)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def benchmark_cache(benchmark: Benchmark, open_source: Callable[[], tuple[xr.DataArray, str]], *,
                    progress: bool = True) -> FrameCache:
    """The benchmark's cache, built first from ``open_source()`` (the reader's lazy array and a description of
    its location for messages) when it is missing."""
    folder = cache_dir() / "benchmarks" / _cache_key(benchmark, _fingerprint(benchmark))
    if (folder / "meta.json").exists():
        return open_cache(folder)
    with _lock(folder):
        if not (folder / "meta.json").exists():  # another process may have built it while we waited
            raw, source = open_source()
            _build(folder, benchmark, raw, source, progress=progress)
    return open_cache(folder, verify=False)  # just built and hashed


def _selection(benchmark: Benchmark, raw: xr.DataArray, source: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Indices into ``raw``'s time axis of the states to cache, and the range of them that are training states."""
    from .layout import validate_fields

    times = raw["time"].values.astype("datetime64[ns]")
    data_start, data_end = times[0], times[-1]
    keep = np.zeros(len(times), dtype=bool)
    for name, (lo, hi) in needed_ranges(benchmark).items():
        start, end = benchmark.split_range(name)
        if start < data_start or end > data_end:
            raise DataError(f"benchmark {benchmark.name!r}: split {name!r} ({start} .. {end}) lies outside the "
                            f"data in {source} ({data_start} .. {data_end})")
        inside = (times >= lo) & (times <= hi)
        if benchmark.source != "embedded":  # the embedded data has a deliberate gap between its trajectories
            validate_fields(raw.isel(time=np.nonzero(inside)[0]), source=f"{source} [{name} split]",
                            step_hours=benchmark.step_hours, check_values=False)
        keep |= inside
    train_start, train_end = benchmark.split_range("train")
    index = np.nonzero(keep)[0]
    kept = times[index]
    return index, (int(np.searchsorted(kept, train_start, "left")), int(np.searchsorted(kept, train_end, "right")))


def _blocks(n: int, raw: xr.DataArray) -> list[tuple[int, int]]:
    """Time blocks along the source's own chunks (a dask chunk is read whole, so a block never splits one)."""
    chunks = getattr(raw.data, "chunks", None)
    if chunks:
        bounds = np.cumsum((0, *chunks[0])).tolist()
        return list(zip(bounds[:-1], bounds[1:]))
    return [(a, min(a + BLOCK_STEPS, n)) for a in range(0, n, BLOCK_STEPS)]


def _build(folder: Path, benchmark: Benchmark, raw: xr.DataArray, source: str, *, progress: bool) -> None:
    from ..progress import progress_bar
    from .layout import validate_fields

    index, (train_lo, train_hi) = _selection(benchmark, raw, source)
    if len(index) and (np.diff(index) == 1).all():
        sel = raw.isel(time=slice(int(index[0]), int(index[-1]) + 1))  # contiguous: cheap slices of dask chunks
    else:
        sel = raw.isel(time=index)
    times = sel["time"].values.astype("datetime64[ns]")
    channels = tuple(str(c) for c in sel["channel"].values)
    shape = (len(times), *sel.shape[1:])
    step = np.timedelta64(benchmark.step_hours, "h")
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    digest = _digest_start(channels, times)
    stats = StatsAccumulator(channels)
    train_sum = np.zeros(shape[1:], dtype=np.float64)
    blocks = _blocks(len(times), sel)
    bar = progress_bar(total=len(times), desc=f"caching {benchmark.name}", unit="step") if progress else None
    try:
        with open(tmp / "frames.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
            block_len = max(b - a for a, b in blocks)
            buffer = np.empty((block_len, *shape[1:]), dtype=np.float32)
            # channels read together: one dask computation per group amortises its overhead (~0.1 s a call)
            group = max(1, GROUP_BYTES // (block_len * int(np.prod(shape[2:])) * 4))
            for a, b in blocks:
                block = buffer[:b - a]
                for c in range(0, shape[1], group):
                    block[:, c:c + group] = np.asarray(sel.data[a:b, c:c + group])
                if benchmark.source == "embedded":
                    if not np.isfinite(block).all():
                        raise DataError(f"{source}: non-finite values at times {times[a]} .. {times[b - 1]}")
                else:  # names the file, channel and times of any NaN/inf; per run of regular steps, since the
                    # ranges of two splits may leave a gap between them (their own steps were checked above)
                    part = sel.isel(time=slice(a, b)).copy(data=block)
                    breaks = np.nonzero(np.diff(times[a:b]) != step)[0] + 1
                    for lo, hi in zip([0, *breaks], [*breaks, b - a]):
                        validate_fields(part.isel(time=slice(lo, hi)), source=source,
                                        step_hours=benchmark.step_hours)
                f.write(block.data)
                digest.update(block.data)
                train_rows = block[max(train_lo, a) - a:max(min(train_hi, b) - a, 0)]
                if len(train_rows):
                    stats.update(train_rows)
                    train_sum += train_rows.sum(axis=0, dtype=np.float64)
                if bar is not None:
                    bar.update(b - a)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing behind
        raise
    finally:
        if bar is not None:
            bar.close()
    n_train = train_hi - train_lo
    stats_arr = np.array([[s["mean"], s["std"], s["min"], s["max"]] for s in stats.result().values()])
    np.save(tmp / "times.npy", times)
    np.savez(tmp / "stats.npz", stats=stats_arr, train_mean=train_sum / max(n_train, 1))
    meta = {"format": CACHE_FORMAT, "content_hash": "sha256:" + digest.hexdigest(), "channels": list(channels),
            "shape": list(shape), "lat": [float(v) for v in sel["lat"].values],
            "lon": [float(v) for v in sel["lon"].values], "source": source, "benchmark": benchmark.key, "train_states": n_train,
            "fingerprint": _fingerprint(benchmark)}
    write_atomic(tmp / "meta.json", json.dumps(meta, indent=2).encode())  # last: the folder is complete
    try:
        os.replace(tmp, folder)
    except OSError:  # a complete folder appeared meanwhile (another node sharing $WXBENCH_CACHE)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "meta.json").exists():
            raise
