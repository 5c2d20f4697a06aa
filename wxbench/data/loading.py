"""From a benchmark definition to its memory-mapped frames, splits, windows and training statistics.

The data are read once from the source into the on-disk cache (:mod:`wxbench.data.cache`); every later load,
and every Ray worker on the node, maps that file. A split is then a range of cached frames plus its window
starts; no split is held in memory, windows are gathered and normalised per batch (:class:`SplitData`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..errors import DataError
from ..interfaces import GridSpec
from .benchmarks import SPLITS, Benchmark
from .cache import FrameCache, benchmark_cache, needed_ranges, open_cache
from .climatology import Climatology, benchmark_climatology
from .splits import Kind, Normaliser, SplitData, init_window_starts, window_starts


@dataclass
class BenchmarkData:
    """A benchmark's cached frames in physical units, its splits' windows and the training-split statistics."""

    benchmark: Benchmark
    cache: FrameCache
    spans: dict[str, tuple[int, int]]  # split -> [first, last + 1) of the cached frames its windows use
    starts: dict[str, np.ndarray]  # split -> window start indices, relative to its span
    grid: GridSpec
    stats: dict[str, dict[str, float]]  # channel -> mean/std/min/max over the training split
    climatology: Climatology  # physical units: time-invariant (embedded) or day of year x hour of day (wb1/wb2)
    data_hash: str
    source: str
    _splits: dict[tuple[str, str], SplitData] = field(default_factory=dict, repr=False)

    @property
    def frames(self) -> torch.Tensor:
        """All cached frames ``(T, C, H, W)``, a zero-copy view of the memory map (pages are read on use)."""
        return torch.from_numpy(self.cache.frames)

    @property
    def times(self) -> dict[str, np.ndarray]:
        """split -> times of the frames its windows use (for val/test: history and targets included)."""
        return {name: self.cache.times[a:b] for name, (a, b) in self.spans.items()}

    @property
    def fields(self) -> dict[str, torch.Tensor]:
        """split -> its frames in physical units, zero-copy views of the memory map."""
        frames = self.frames
        return {name: frames[a:b] for name, (a, b) in self.spans.items()}

    def normaliser(self, kind: Kind) -> Normaliser:
        return Normaliser.from_stats(kind, self.stats)

    def split(self, name: str, kind: Kind) -> SplitData:
        """The split for a model that wants ``kind`` (cached; it holds no copy of the frames)."""
        key = (name, kind)
        if key not in self._splits:
            a, b = self.spans[name]
            self._splits[key] = SplitData.from_frames(name, self.frames[a:b], self.cache.times[a:b],
                                                      torch.from_numpy(self.starts[name]), self.grid,
                                                      self.normaliser(kind), climatology=self.climatology)
        return self._splits[key]

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"benchmark": self.benchmark.key, "source": self.source, "data_hash": self.data_hash,
                               "channels": list(self.grid.channels), "grid": f"{len(self.grid.lat)}x{len(self.grid.lon)}",
                               "cache": str(self.cache.folder), "stats": self.stats, "splits": {}}
        frame_mb = self.cache.frames[0].nbytes / 2**20 if len(self.cache.frames) else 0.0
        for name in SPLITS:
            a, b = self.spans[name]
            t = self.cache.times[a:b]
            inits = self.split(name, "zscore").window_times(slice(None))
            out["splits"][name] = {
                "start": str(t[0]) if len(t) else None, "end": str(t[-1]) if len(t) else None, "states": b - a,
                "windows": len(inits), "first_init": str(inits[0]) if len(inits) else None,
                "last_init": str(inits[-1]) if len(inits) else None, "megabytes": round((b - a) * frame_mb, 1),
            }
        return out


def _open_source(benchmark: Benchmark, progress: bool) -> tuple[xr.DataArray, str]:
    if benchmark.source == "embedded":
        from .embedded import open_embedded

        fields = open_embedded(benchmark, progress=progress)
        return fields, fields.attrs["source"]
    if benchmark.path is None:
        raise DataError(f"benchmark {benchmark.name!r} reads {benchmark.source.upper()} data: give its location "
                        "with --data-path (or `path` in the benchmark's TOML file)")
    from .stores import is_remote, location_exists

    # a URL (gs://, s3://, https://, ...) stays a string for fsspec; a missing protocol package is a DataError
    path = benchmark.path if is_remote(benchmark.path) else Path(benchmark.path).expanduser()
    if not location_exists(path, f"benchmark {benchmark.name!r}: data path"):
        raise DataError(f"benchmark {benchmark.name!r}: data path {path} does not exist")
    if benchmark.source == "wb1":
        first = int(benchmark.train[0][:4])
        last = int(benchmark.test[1][:4])
        from .wb1 import open_wb1

        fields = open_wb1(path, benchmark.channels, years=range(first, last + 1), step_hours=benchmark.step_hours)
    else:
        from .wb2 import open_wb2

        fields = open_wb2(path, benchmark.channels, step_hours=benchmark.step_hours)
    return fields, str(path)


def load_benchmark(benchmark: Benchmark, *, progress: bool = True) -> BenchmarkData:
    """The benchmark's data from its cache, built first from the source when missing (:mod:`wxbench.data.cache`);
    statistics from the training split only."""
    benchmark.validate()
    cache = benchmark_cache(benchmark, lambda: _open_source(benchmark, progress), progress=progress)
    return from_cache(benchmark, cache)


def open_cached_benchmark(benchmark: Benchmark, folder: str | Path) -> BenchmarkData:
    """The benchmark's data from a cache folder already built (by another process: a Ray worker uses the
    driver's); DataError if the folder is missing or incomplete."""
    return from_cache(benchmark, open_cache(Path(folder)))


def from_cache(benchmark: Benchmark, cache: FrameCache) -> BenchmarkData:
    """Spans and window starts of every split over the cached frames (see docs/protocol.md, "Windows and
    initialisation times")."""
    times = cache.times
    step = np.timedelta64(benchmark.step_hours, "h")
    spans: dict[str, tuple[int, int]] = {}
    starts: dict[str, np.ndarray] = {}
    for name, (lo, hi) in needed_ranges(benchmark).items():
        a, b = int(np.searchsorted(times, lo, "left")), int(np.searchsorted(times, hi, "right"))
        span_times = times[a:b]
        if name == "train":  # every window wholly inside the training range
            found = window_starts(span_times, benchmark.window_steps, step)
        else:  # initialised in the range at init_hours, history and targets from around it (needed_ranges)
            first, last = benchmark.split_range(name)
            found = init_window_starts(span_times, benchmark.input_steps, benchmark.output_steps, step, first, last,
                                       benchmark.init_hours)
        if len(found) == 0:
            start, end = benchmark.split_range(name)
            what = "complete window" if name == "train" else f"window initialised at {list(benchmark.init_hours)} UTC"
            raise DataError(f"benchmark {benchmark.name!r}: split {name!r} ({start} .. {end}) holds no {what} of "
                            f"{benchmark.window_steps} consecutive {benchmark.step_hours} h steps in "
                            f"{cache.meta['source']}")
        # trim the span to the frames the windows use
        first_frame, end_frame = int(found[0]), int(found[-1]) + benchmark.window_steps
        spans[name] = (a + first_frame, a + end_frame)
        starts[name] = (found - first_frame).astype(np.int64)
    grid = GridSpec(channels=tuple(benchmark.channels), lat=tuple(cache.meta["lat"]),
                    lon=tuple(cache.meta["lon"]), input_steps=benchmark.input_steps,
                    output_steps=benchmark.output_steps, step_hours=benchmark.step_hours)
    data_hash = "sha256:" + hashlib.sha256(f"{benchmark.key}|{cache.content_hash}".encode()).hexdigest()
    climatology = benchmark_climatology(benchmark, cache.frames[slice(*spans["train"])],
                                        {name: times[a:b] for name, (a, b) in spans.items()}, data_hash=data_hash,
                                        time_mean=cache.train_mean)
    return BenchmarkData(benchmark, cache, spans, starts, grid, cache.stats, climatology, data_hash,
                         cache.meta["source"])
