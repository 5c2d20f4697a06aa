"""From a benchmark definition to in-memory, validated, split and normalised tensors."""

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
from .splits import Kind, Normaliser, SplitData, channel_stats, window_starts


@dataclass
class BenchmarkData:
    """All three splits of a benchmark in physical units, with training-split statistics."""

    benchmark: Benchmark
    fields: dict[str, torch.Tensor]  # split -> (T, C, H, W) float32, physical units
    times: dict[str, np.ndarray]
    grid: GridSpec
    stats: dict[str, dict[str, float]]  # channel -> mean/std/min/max over the training split
    climatology: torch.Tensor  # (C, H, W) training-split time mean, physical units
    data_hash: str
    source: str
    _splits: dict[tuple[str, str], SplitData] = field(default_factory=dict, repr=False)

    def normaliser(self, kind: Kind) -> Normaliser:
        return Normaliser.from_stats(kind, self.stats)

    def split(self, name: str, kind: Kind) -> SplitData:
        """The split normalised for a model that wants ``kind`` (cached)."""
        key = (name, kind)
        if key not in self._splits:
            norm = self.normaliser(kind)
            step = np.timedelta64(self.grid.step_hours, "h")
            stride = self.benchmark.test_stride if name == "test" else 1
            starts = window_starts(self.times[name], self.benchmark.window_steps, step, stride)
            self._splits[key] = SplitData(name, norm.normalise(self.fields[name]).contiguous(), self.times[name],
                                          torch.from_numpy(starts), self.grid, norm)
        return self._splits[key]

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"benchmark": self.benchmark.key, "source": self.source, "data_hash": self.data_hash,
                               "channels": list(self.grid.channels), "grid": f"{len(self.grid.lat)}x{len(self.grid.lon)}",
                               "stats": self.stats, "splits": {}}
        for name in SPLITS:
            t = self.times[name]
            out["splits"][name] = {
                "start": str(t[0]) if len(t) else None, "end": str(t[-1]) if len(t) else None, "states": len(t),
                "windows": len(self.split(name, "zscore")),
                "megabytes": round(self.fields[name].numel() * 4 / 2**20, 1),
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
    path = Path(benchmark.path).expanduser()
    if not path.exists():
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
    """Read, validate and split a benchmark's data; statistics from the training split only."""
    benchmark.validate()
    raw, source = _open_source(benchmark, progress)
    from .layout import validate_fields

    # the embedded data has a deliberate gap between its trajectories; real data must have none
    parts: dict[str, torch.Tensor] = {}
    times: dict[str, np.ndarray] = {}
    digest = hashlib.sha256(benchmark.key.encode())
    data_start, data_end = raw["time"].values[0], raw["time"].values[-1]
    for name in SPLITS:
        start, end = benchmark.split_range(name)
        if start < data_start or end > data_end:
            raise DataError(f"benchmark {benchmark.name!r}: split {name!r} ({start} .. {end}) lies outside the "
                            f"data in {source} ({data_start} .. {data_end})")
        sub = raw.sel(time=slice(start, end)).load()  # read once; validation then works in memory
        if benchmark.source != "embedded":
            validate_fields(sub, source=f"{source} [{name} split]", step_hours=benchmark.step_hours)
        values = np.ascontiguousarray(sub.values, dtype=np.float32)
        if benchmark.source == "embedded" and not np.isfinite(values).all():
            raise DataError(f"{source}: non-finite values in the {name} split")
        parts[name] = torch.from_numpy(values)
        times[name] = sub["time"].values.astype("datetime64[ns]")
        digest.update(times[name].tobytes())
        digest.update(values.tobytes())
        if len(window_starts(times[name], benchmark.window_steps, np.timedelta64(benchmark.step_hours, "h"))) == 0:
            raise DataError(f"benchmark {benchmark.name!r}: split {name!r} ({start} .. {end}) holds no complete "
                            f"window of {benchmark.window_steps} consecutive {benchmark.step_hours} h steps in {source}")
    grid = GridSpec(channels=tuple(benchmark.channels),
                    lat=tuple(float(v) for v in raw["lat"].values), lon=tuple(float(v) for v in raw["lon"].values),
                    input_steps=benchmark.input_steps, output_steps=benchmark.output_steps,
                    step_hours=benchmark.step_hours)
    stats = channel_stats(parts["train"], grid.channels)
    climatology = parts["train"].double().mean(dim=0).float()
    return BenchmarkData(benchmark, parts, times, grid, stats, climatology, "sha256:" + digest.hexdigest(), source)
