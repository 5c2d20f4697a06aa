"""The on-disk benchmark cache: built once, memory-mapped, verified; windows gathered and normalised per batch
give the same bits as the whole split normalised in memory; no split is held in memory."""

from __future__ import annotations

import pickle
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from wxbench.data import loading
from wxbench.data.benchmarks import Benchmark
from wxbench.data.cache import open_cache
from wxbench.data.loading import load_benchmark, open_cached_benchmark
from wxbench.data.splits import channel_stats
from wxbench.errors import DataError
from wxbench.testing_data import make_times, make_wb2_dataset, write_wb2_layout, write_wb2_store

PERIOD = ("1979-12-01T00", "1980-01-09T18")
MATERIALISE = False


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WXBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def bench(tmp_path) -> Benchmark:
    store = write_wb2_layout(tmp_path / "wb2.zarr", ["z500", "t850"], PERIOD)
    return Benchmark(name="c", version=1, description="cache test", source="wb2", channels=("z500", "t850"),
                     train=("1979-12-01T00", "1979-12-24T18"), val=("1979-12-25T00", "1979-12-30T18"),
                     test=("1979-12-31T00", "1980-01-09T18"), path=str(store))


@pytest.mark.parametrize("kind", ["zscore", "minmax"])
def test_windows_from_the_cache_equal_the_split_normalised_in_memory(tiny_data, kind):
    for name in ("train", "val", "test"):
        split = tiny_data.split(name, kind)
        in_memory = split.normaliser.normalise(tiny_data.fields[name].clone())  # what wxbench did before
        rows = (split.starts[:, None] + torch.arange(16)).reshape(-1)
        expected = in_memory[rows].view(len(split), 16, *in_memory.shape[1:])
        history, target = split.windows(torch.arange(len(split)))
        assert split._fields is None  # gathering normalised per batch, the split is never materialised
        assert torch.equal(history, expected[:, :12]) and torch.equal(target, expected[:, 12:])
        assert torch.equal(split.fields, in_memory)  # the lazily materialised property, for plugins
        batches = list(tiny_data.split(name, kind).batches(5))  # in order: batch k = windows 5k .. 5k + 4
        assert torch.equal(batches[1][0], expected[5:10, :12])


def test_statistics_and_climatology_equal_those_of_the_training_split_in_memory(tiny_data):
    train = tiny_data.fields["train"]
    direct = channel_stats(train, tiny_data.grid.channels)
    for channel, stats in tiny_data.stats.items():
        for key, value in stats.items():
            assert value == pytest.approx(direct[channel][key], rel=1e-12, abs=1e-12), (channel, key)
    # the time mean the cache accumulates while it is built (the embedded benchmark's climatology)
    assert torch.equal(torch.from_numpy(tiny_data.cache.train_mean).float(), train.double().mean(dim=0).float())


def test_the_cache_is_built_once_and_reused(bench, cache_home, monkeypatch):
    first = load_benchmark(bench, progress=False)
    folders = [p for p in (cache_home / "benchmarks").iterdir() if p.is_dir()]
    assert folders == [first.cache.folder]
    assert isinstance(first.cache.frames, np.memmap)

    def no_source(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(loading, "_open_source", no_source)
    again = load_benchmark(bench, progress=False)
    assert again.data_hash == first.data_hash and again.cache.folder == first.cache.folder
    for name in ("train", "val", "test"):
        assert torch.equal(again.split(name, "zscore").windows(slice(None))[1],
                           first.split(name, "zscore").windows(slice(None))[1])
    # a benchmark with other splits over the same store gets its own cache
    other = load_benchmark(replace(bench, name="c2"), progress=False)  # same content: same cache folder
    assert other.cache.folder == first.cache.folder and other.data_hash != first.data_hash  # key differs


def test_a_changed_store_is_cached_again(bench, cache_home):
    first = load_benchmark(bench, progress=False)
    ds = make_wb2_dataset(["z500", "t850"], make_times(PERIOD, 6, default_end=""))
    ds["temperature"] += 1.0
    write_wb2_store(ds, bench.path)  # rewritten in place
    changed = load_benchmark(bench, progress=False)
    assert changed.cache.folder != first.cache.folder and changed.data_hash != first.data_hash
    assert changed.stats["t850"]["mean"] == pytest.approx(first.stats["t850"]["mean"] + 1.0)


def test_a_modified_or_truncated_cache_is_a_clear_error(bench, cache_home):
    folder = load_benchmark(bench, progress=False).cache.folder
    frames = folder / "frames.npy"
    raw = bytearray(frames.read_bytes())
    raw[-5] ^= 0xFF
    frames.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"benchmark cache .* content hash does not match"):
        load_benchmark(bench, progress=False)
    frames.write_bytes(bytes(raw[:-100]))
    with pytest.raises(DataError, match=r"benchmark cache .* frames.npy is \d+ bytes .*\(truncated\?\)"):
        open_cache(folder)
    (folder / "meta.json").unlink()  # an incomplete folder is never opened
    with pytest.raises(DataError, match="incomplete or unreadable"):
        open_cache(folder)


def test_bad_values_stop_the_build_naming_file_channel_and_time_and_leave_nothing(bench, cache_home):
    ds = make_wb2_dataset(["z500", "t850"], make_times(PERIOD, 6, default_end=""))
    ds["temperature"].loc[{"time": "1980-01-03T06"}] = np.nan
    write_wb2_store(ds, bench.path)
    with pytest.raises(DataError, match=r"variable 'temperature'.*NaN values in channel 't850' at times 1980-01-03T06"):
        load_benchmark(bench, progress=False)
    assert not [p for p in (cache_home / "benchmarks").iterdir() if p.is_dir()]


def test_a_worker_opens_the_drivers_cache_without_the_source(bench, cache_home):
    from wxbench.executors.ray_executor import _payload

    data = load_benchmark(bench, progress=False)
    payload = _payload(data)
    assert len(pickle.dumps(payload)) < 10_000  # what goes through Ray's object store: no arrays
    Path(bench.path).rename(Path(bench.path).with_name("gone.zarr"))
    opened = open_cached_benchmark(bench, payload["cache_folder"])
    assert opened.data_hash == data.data_hash
    assert torch.equal(opened.split("test", "minmax").windows(slice(None))[0],
                       data.split("test", "minmax").windows(slice(None))[0])


@pytest.mark.slow  # ~7 s on 2 shared cores, half of it computing and caching the calendar climatology
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_training_on_the_cache_holds_no_split_in_memory(tmp_path, cache_home):
    """Batches from a benchmark of 52 MB: the process's anonymous memory grows by far less than one split
    (holding the training split, or a normalised copy of it, would add 46 MB)."""
    def anon_mb() -> float:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssAnon"))) / 1024

    channels = ("z500", "t850", "u850", "t2m")
    store = write_wb2_layout(tmp_path / "big.zarr", channels, ("1979-01-01T00", "1980-01-31T18"), time_chunk=256)
    # a whole training year, for the day-of-year climatology
    bench = Benchmark(name="m", version=1, description="memory", source="wb2", channels=channels,
                      train=("1979-01-01T00", "1979-12-31T18"), val=("1980-01-01T00", "1980-01-15T18"),
                      test=("1980-01-16T00", "1980-01-29T18"), path=str(store))
    load_benchmark(bench, progress=False)  # builds the cache (streamed; not what is measured)
    data = load_benchmark(bench, progress=False)
    train = data.split("train", "zscore")
    train_mb = train.n_frames * data.cache.frames[0].nbytes / 2**20
    assert train_mb > 38
    before = anon_mb()
    if MATERIALISE:  # True shows that the bound fails when the split is held in memory
        train.fields
    generator = torch.Generator().manual_seed(0)
    for i, (history, target) in enumerate(train.batches(16, shuffle=True, generator=generator)):
        if i == 20:
            break
    for history, target in data.split("test", "zscore").batches(32):
        pass
    grown = anon_mb() - before
    assert grown < train_mb / 3, (grown, train_mb)
