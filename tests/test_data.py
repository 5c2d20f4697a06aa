"""Benchmarks, splits, windows and normalisation: no leakage, no straddling, exact inverses, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wxbench.data.benchmarks import BUILTIN_BENCHMARKS, EMBEDDED, Benchmark, get_benchmark
from wxbench.data.loading import load_benchmark
from wxbench.data.splits import Normaliser, channel_stats, window_starts
from wxbench.errors import ConfigError, DataError
from wxbench.testing_data import write_wb2_layout

STEP = np.timedelta64(6, "h")


def _times(n: int, gaps: list[int] = ()) -> np.ndarray:
    """n 6-hourly times with an extra day inserted before each index in ``gaps``."""
    offsets = np.arange(n) * STEP
    for g in gaps:
        offsets[g:] += np.timedelta64(24, "h")
    return np.datetime64("2000-01-01T00", "ns") + offsets


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 80), gaps=st.lists(st.integers(1, 79), max_size=3, unique=True),
       stride=st.integers(1, 4))
def test_every_window_covers_consecutive_steps(n, gaps, stride):
    times = _times(n, [g for g in gaps if g < n])
    starts = window_starts(times, 16, STEP, stride)
    for s in starts:
        window = times[s:s + 16]
        assert len(window) == 16
        assert (np.diff(window) == STEP).all()
    # and no valid window is missed (stride 1 finds all of them)
    if stride == 1:
        all_valid = [s for s in range(max(0, n - 15)) if (np.diff(times[s:s + 16]) == STEP).all()]
        assert list(starts) == all_valid


def test_builtin_benchmarks_are_valid_and_frozen():
    for bench in BUILTIN_BENCHMARKS.values():
        bench.validate()
        assert (bench.input_steps, bench.output_steps, bench.step_hours) == (12, 4, 6)
    assert EMBEDDED.key == "embedded-v1"
    with pytest.raises(Exception):
        EMBEDDED.name = "x"  # frozen


def test_wb_splits_follow_the_field():
    wb1 = BUILTIN_BENCHMARKS["wb1-5.625"]
    assert wb1.train == ("1979-01-01T00", "2015-12-31T18") and wb1.test == ("2017-01-01T00", "2018-12-31T18")
    assert BUILTIN_BENCHMARKS["wb2-64x32"].test[0].startswith("2020-01-01")


@pytest.mark.parametrize("kind", ["zscore", "minmax"])
def test_normaliser_inverts_exactly(kind):
    x = torch.randn(5, 3, 32, 64, dtype=torch.float64) * torch.tensor([1e4, 10.0, 3.0]).view(1, 3, 1, 1) + 5
    stats = channel_stats(x, ("a", "b", "c"))
    norm = Normaliser.from_stats(kind, stats)
    y = norm.normalise(x)
    assert torch.allclose(norm.denormalise(y), x, rtol=1e-12)
    if kind == "minmax":
        assert y.min() >= -1 - 1e-9 and y.max() <= 1 + 1e-9
    else:
        assert abs(float(y.mean())) < 1e-9


@pytest.fixture
def wb2_store(tmp_path):
    return write_wb2_layout(tmp_path / "wb2.zarr", ["z500", "t850"], ("1979-12-01T00", "1980-01-09T18"))


def _bench(path, **changes) -> Benchmark:
    base = Benchmark(name="t", version=1, description="test", source="wb2", channels=("z500", "t850"),
                     train=("1979-12-01T00", "1979-12-24T18"), val=("1979-12-25T00", "1979-12-30T18"),
                     test=("1979-12-31T00", "1980-01-09T18"), path=str(path))
    return replace(base, **changes)


def test_no_test_state_is_ever_seen_in_training(wb2_store):
    data = load_benchmark(_bench(wb2_store))
    train, val, test = (data.split(s, "zscore") for s in ("train", "val", "test"))
    seen_in_fit = set()
    for split in (train, val):
        for s in split.starts.tolist():
            seen_in_fit.update(split.times[s:s + 16].tolist())
    test_states = set()
    for s in test.starts.tolist():
        test_states.update(test.times[s:s + 16].tolist())
    assert test_states and not (seen_in_fit & test_states)
    assert max(train.times) < min(val.times) <= max(val.times) < min(test.times)


def test_statistics_and_climatology_come_from_the_training_split_only(wb2_store):
    bench = _bench(wb2_store)
    data = load_benchmark(bench)
    train_values = data.fields["train"].double()
    assert data.stats["z500"]["mean"] == pytest.approx(float(train_values[:, 0].mean()))
    assert torch.allclose(data.climatology, train_values.mean(0).float())
    # changing only test-period values changes neither the statistics nor the climatology
    from wxbench.testing_data import make_times, make_wb2_dataset, write_wb2_store

    ds = make_wb2_dataset(["z500", "t850"], make_times(("1979-12-01T00", "1980-01-09T18"), 6, default_end=""))
    ds["geopotential"].loc[{"time": slice("1979-12-31", None)}] += 1000.0
    bench = replace(bench, path=str(write_wb2_store(ds, wb2_store.parent / "changed.zarr")))
    changed = load_benchmark(bench)
    assert changed.stats == data.stats and torch.equal(changed.climatology, data.climatology)
    assert changed.data_hash != data.data_hash  # but the data hash notices


def test_test_windows_use_the_benchmark_stride(wb2_store):
    data = load_benchmark(_bench(wb2_store, test_stride=2))
    test = data.split("test", "zscore")
    assert (np.diff(test.starts.numpy()) == 2).all()
    assert len(data.split("train", "zscore")) == len(data.times["train"]) - 15


def test_split_outside_the_data_is_a_clear_error(wb2_store):
    with pytest.raises(DataError, match=r"split 'test' .* lies outside the data"):
        load_benchmark(_bench(wb2_store, test=("1979-12-31T00", "1980-02-09T18")))


def test_split_without_a_full_window_is_a_clear_error(wb2_store):
    with pytest.raises(DataError, match=r"split 'val' .* holds no complete window of 16"):
        load_benchmark(_bench(wb2_store, val=("1979-12-25T00", "1979-12-26T18")))


def test_missing_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark(_bench(tmp_path / "nowhere.zarr"))
    with pytest.raises(DataError, match="--data-path"):
        load_benchmark(replace(_bench(tmp_path), path=None))


def test_overlapping_splits_are_rejected(wb2_store):
    with pytest.raises(ConfigError, match="overlap"):
        _bench(wb2_store, val=("1979-12-20T00", "1979-12-30T18")).validate()


def test_benchmark_from_toml(tmp_path, wb2_store):
    path = tmp_path / "b.toml"
    path.write_text(f'name = "mine"\nversion = 2\nsource = "wb2"\npath = "{wb2_store}"\n'
                    'channels = ["z500"]\ntrain = ["1979-12-01T00", "1979-12-24T18"]\n'
                    'val = ["1979-12-25T00", "1979-12-30T18"]\ntest = ["1979-12-31T00", "1980-01-09T18"]\n')
    bench = get_benchmark(str(path))
    assert bench.key == "mine-v2" and bench.channels == ("z500",)
    assert load_benchmark(bench).grid.channels == ("z500",)
    path.write_text('name = "x"\nversion = 1\nsource = "wb2"\nchanels = []\n')
    with pytest.raises(ConfigError, match="unknown keys.*chanels"):
        get_benchmark(str(path))


def test_window_gathering_matches_per_sample_slicing(wb2_store):
    data = load_benchmark(_bench(wb2_store))
    train = data.split("train", "minmax")
    idx = torch.tensor([0, 5, 17])
    history, target = train.windows(idx)
    for row, i in enumerate(idx.tolist()):
        s = int(train.starts[i])
        assert torch.equal(history[row], train.fields[s:s + 12])
        assert torch.equal(target[row], train.fields[s + 12:s + 16])
    assert json.dumps(data.info())  # serialisable summary for `wxbench data info`
