"""Data larger than memory: the WB2 reader opens a store lazily and reads only what is selected.

The proof does not count calls: every zarr chunk that must not be read (other variables, other
pressure levels, times outside the selection) is overwritten with garbage, so reading any of them
fails; the selection still loads, with the right values.

Granularity: the reader's dask blocks are ``wb2.TIME_CHUNK`` (1460) steps of one channel, and a
block is read whole, so a time subset reads the blocks that overlap it (about 12 MB per channel and
block at 5.625 deg). The tests shrink ``TIME_CHUNK`` to the store's own chunk length (8) to show that
with a small store; the mechanism is the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from wxbench.data.benchmarks import Benchmark
from wxbench.data.loading import load_benchmark
from wxbench.data.wb2 import open_wb2
from wxbench.testing_data import make_times, make_wb2_dataset, synthetic_values, write_wb2_store

LEVELS = (250, 500, 700, 850, 1000)
CHANNELS = [f"{v}{lev}" for v in ("z", "t", "u") for lev in LEVELS] + ["t2m"]
STORE_PERIOD = ("1979-11-20T00", "1980-01-20T18")
TIME_CHUNK = 8
SELECTED = ["z500", "t850"]
BENCH_SPLITS = {"train": ("1979-12-01T00", "1979-12-24T18"), "val": ("1979-12-25T00", "1979-12-30T18"),
                "test": ("1979-12-31T00", "1980-01-09T18")}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A multi-variable, multi-level WB2 store chunked by (8 time steps, 1 level), like the big public stores."""
    times = make_times(STORE_PERIOD, 6, default_end="")
    ds = make_wb2_dataset(CHANNELS, times).chunk({"time": TIME_CHUNK, "level": 1})
    return write_wb2_store(ds, tmp_path_factory.mktemp("lazy") / "big.zarr", time_chunk=None)


def _chunks(store: Path):
    """(variable, chunk file, chunk index) of every data chunk of the store's data variables (zarr v2)."""
    for var in sorted(p for p in store.iterdir() if p.is_dir()):
        meta = json.loads((var / ".zattrs").read_text())
        if "_ARRAY_DIMENSIONS" not in meta or meta["_ARRAY_DIMENSIONS"][0] != "time" or var.name == "time":
            continue
        dims = meta["_ARRAY_DIMENSIONS"]
        for f in var.iterdir():
            if not f.name.startswith("."):
                yield var.name, f, dict(zip(dims, map(int, f.name.split("."))))


def _corrupt_all_but(store: Path, keep: dict[str, set[int]], times: np.ndarray, start: str, end: str) -> int:
    """Garbage into every chunk except those of the kept (variable -> level indices) overlapping start..end."""
    t0, t1 = np.datetime64(start, "ns"), np.datetime64(end, "ns")
    first, last = np.searchsorted(times, t0) // TIME_CHUNK, np.searchsorted(times, t1) // TIME_CHUNK
    corrupted = 0
    for var, path, idx in _chunks(store):
        wanted = var in keep and idx.get("level", 0) in keep[var] and first <= idx["time"] <= last
        if not wanted:
            path.write_bytes(b"not a zarr chunk")
            corrupted += 1
    return corrupted


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    from wxbench.data import wb2

    monkeypatch.setattr(wb2, "TIME_CHUNK", TIME_CHUNK)


def _store_copy(store: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(store, tmp_path / store.name))


def _level_index(level: int) -> int:
    return LEVELS.index(level)


def test_open_wb2_is_lazy_and_reads_only_the_selected_chunks(store, tmp_path):
    store = _store_copy(store, tmp_path)
    times = make_times(STORE_PERIOD, 6, default_end="")
    start, end = "1979-12-10T00", "1979-12-20T18"
    fields = open_wb2(store, SELECTED)
    assert isinstance(fields.data, da.Array)  # dask-backed: nothing read yet
    assert fields.sizes == {"time": len(times), "channel": 2, "lat": 32, "lon": 64}
    corrupted = _corrupt_all_but(store, {"geopotential": {_level_index(500)}, "temperature": {_level_index(850)}},
                                 times, start, end)
    n_chunks = sum(1 for _ in _chunks(store))
    assert corrupted > 0.9 * n_chunks  # far more of the store is unreadable than is read

    subset = fields.sel(time=slice(start, end))
    assert isinstance(subset.data, da.Array)
    values = subset.load().values
    t = subset["time"].values
    for i, channel in enumerate(SELECTED):
        np.testing.assert_array_equal(values[:, i], synthetic_values(channel, t))
    # the garbage would have been noticed: an unselected level and an unselected time range fail to load
    with pytest.raises(Exception):
        open_wb2(store, ["z850"]).sel(time=slice(start, end)).load()
    with pytest.raises(Exception):
        fields.sel(time=slice("1979-11-20T00", "1979-11-25T18")).load()


def test_load_benchmark_reads_only_its_channels_and_split_periods(store, tmp_path):
    store = _store_copy(store, tmp_path)
    times = make_times(STORE_PERIOD, 6, default_end="")
    # the last test windows' targets run 24 h past the test range (WB2's convention), so that day is read too
    _corrupt_all_but(store, {"geopotential": {_level_index(500)}, "temperature": {_level_index(850)}}, times,
                     BENCH_SPLITS["train"][0], "1980-01-10T18")
    bench = Benchmark(name="lazy", version=1, description="lazy", source="wb2", channels=tuple(SELECTED),
                      path=str(store), **BENCH_SPLITS)
    data = load_benchmark(bench, progress=False)
    assert set(data.fields) == {"train", "val", "test"}
    spans = {"train": BENCH_SPLITS["train"], "val": ("1979-12-22T06", "1979-12-30T12"),  # history from train
             "test": ("1979-12-28T06", "1980-01-10T12")}  # history from val, targets past the range
    for split, (a, b) in spans.items():
        t = data.times[split]
        assert str(t[0])[:13] == a and str(t[-1])[:13] == b
        np.testing.assert_array_equal(data.fields[split][:, 1].numpy(), synthetic_values("t850", t))
