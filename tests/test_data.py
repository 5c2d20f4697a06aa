"""Benchmarks, splits, windows, initialisation times and normalisation: no leakage into training, inits at the
benchmark's hours over the whole val/test range, exact inverses, clear errors."""

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
        assert bench.init_hours == (0, 12)
    assert EMBEDDED.key == "embedded-v2"  # v1 initialised at 06/18 UTC inside each split
    assert all(b.version == 2 for b in BUILTIN_BENCHMARKS.values())
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


def _states(split, part: slice) -> set:
    """Times of the given part (slice of the 16 steps) of every window of ``split``."""
    out = set()
    for s in split.starts.tolist():
        out.update(split.times[s:s + 16][part])
    return out


def test_no_training_window_touches_a_val_or_test_target(wb2_store):
    bench = _bench(wb2_store)
    data = load_benchmark(bench)
    train, val, test = (data.split(s, "zscore") for s in ("train", "val", "test"))
    train_states = _states(train, slice(None))
    val_targets, test_targets = _states(val, slice(12, None)), _states(test, slice(12, None))
    assert train_states and val_targets and test_targets
    assert not train_states & (val_targets | test_targets)
    # every training state lies inside the training range; no validation target lies in the test range
    lo, hi = bench.split_range("train")
    assert all(lo <= t <= hi for t in train_states)
    assert max(val_targets) < min(test_targets) and max(val_targets) < bench.split_range("test")[0]
    # what is shared, by WeatherBench 2's convention: the history of the first test windows comes from the
    # validation period, that of the first validation windows from the training period (never their targets)
    test_history = _states(test, slice(None, 12))
    assert test_history & _states(val, slice(None)) and _states(val, slice(None, 12)) & train_states


def test_val_and_test_are_ranges_of_initialisation_times(wb2_store):
    bench = _bench(wb2_store)
    data = load_benchmark(bench)
    for name, first, last in (("val", "1979-12-25T00", "1979-12-29T12"),  # 29T12: targets end before the test
                              ("test", "1979-12-31T00", "1980-01-08T12")):  # 08T12: the data end at 09T18
        inits = data.split(name, "zscore").window_times(slice(None))
        assert str(inits[0])[:13] == first and str(inits[-1])[:13] == last
        assert (np.diff(inits) == np.timedelta64(12, "h")).all()
        hours = (inits - inits.astype("datetime64[D]")) // np.timedelta64(1, "h")
        assert set(hours.tolist()) == {0, 12}
    # the history of the first test window starts 66 h before the test range
    test = data.split("test", "zscore")
    assert str(test.times[test.starts[0]])[:13] == "1979-12-28T06"
    # other init hours: every 6 h
    inits = load_benchmark(_bench(wb2_store, init_hours=(0, 6, 12, 18))).split("test", "zscore").window_times(
        slice(None))
    assert (np.diff(inits) == np.timedelta64(6, "h")).all() and len(inits) == 36
    # training keeps every window wholly inside the training range (stride 1)
    assert len(data.split("train", "zscore")) == len(data.times["train"]) - 15


@pytest.mark.parametrize("hours", [(), (12, 0), (3,), (24,), (0, 0)])
def test_bad_init_hours_are_a_clear_error(wb2_store, hours):
    with pytest.raises(ConfigError, match=r"init_hours must be distinct UTC hours"):
        _bench(wb2_store, init_hours=hours).validate()


def test_wb2_test_split_has_732_inits_at_00_and_12_utc(tmp_path):
    """The built-in wb2-64x32 test split on a store of the real calendar (late 2019 .. early 2021): all of 2020 at
    00/12 UTC, history from December 2019, targets into January 2021; where the data end on 31 December, the
    inits whose targets would lie beyond it are dropped."""
    wb2 = BUILTIN_BENCHMARKS["wb2-64x32"]
    store = write_wb2_layout(tmp_path / "wb2.zarr", list(wb2.channels), ("2019-10-01T00", "2021-01-31T18"),
                             time_chunk=256)
    # the built-in test range and init hours; training and validation moved into the store's period
    bench = replace(wb2, train=("2019-10-01T00", "2019-11-30T18"), val=("2019-12-01T00", "2019-12-31T18"),
                    path=str(store))
    test = load_benchmark(bench).split("test", "zscore")
    inits = test.window_times(slice(None))
    assert len(inits) == 732
    assert str(inits[0])[:13] == "2020-01-01T00" and str(inits[-1])[:13] == "2020-12-31T12"
    assert (np.diff(inits) == np.timedelta64(12, "h")).all()
    assert str(test.times[test.starts[0]])[:13] == "2019-12-29T06"  # history from before 1 January
    assert str(test.times[test.starts[-1] + 15])[:13] == "2021-01-01T12"  # targets past 31 December
    short = write_wb2_layout(tmp_path / "short.zarr", list(wb2.channels), ("2019-10-01T00", "2020-12-31T18"),
                             time_chunk=256)
    inits = load_benchmark(replace(bench, path=str(short))).split("test", "zscore").window_times(slice(None))
    assert len(inits) == 730 and str(inits[-1])[:13] == "2020-12-30T12"


def test_embedded_tiny_inits_at_00_and_12_utc(tiny_data):
    val, test = (tiny_data.split(s, "zscore").window_times(slice(None)) for s in ("val", "test"))
    assert str(test[0])[:13] == "2000-01-22T00" and str(test[-1])[:13] == "2000-01-27T12" and len(test) == 12
    assert str(val[0])[:13] == "2000-01-16T00" and str(val[-1])[:13] == "2000-01-20T12" and len(val) == 10


def test_statistics_and_climatology_come_from_the_training_split_only(wb2_store):
    bench = _bench(wb2_store)
    data = load_benchmark(bench)
    train_values = data.fields["train"].double()
    assert data.stats["z500"]["mean"] == pytest.approx(float(train_values[:, 0].mean()))
    # a wb2 source has the calendar climatology of the training days (tests/test_climatology.py checks its values)
    assert data.climatology.kind == "calendar" and "1979-12-01T00 .. 1979-12-24T18" in data.climatology.origin
    # changing only test-period values changes neither the statistics nor the climatology
    from wxbench.testing_data import make_times, make_wb2_dataset, write_wb2_store

    ds = make_wb2_dataset(["z500", "t850"], make_times(("1979-12-01T00", "1980-01-09T18"), 6, default_end=""))
    ds["geopotential"].loc[{"time": slice("1979-12-31", None)}] += 1000.0
    bench = replace(bench, path=str(write_wb2_store(ds, wb2_store.parent / "changed.zarr")))
    changed = load_benchmark(bench)
    assert changed.stats == data.stats
    np.testing.assert_array_equal(changed.climatology.values, data.climatology.values)
    assert changed.data_hash != data.data_hash  # but the data hash notices


def test_split_outside_the_data_is_a_clear_error(wb2_store):
    with pytest.raises(DataError, match=r"split 'test' .* lies outside the data"):
        load_benchmark(_bench(wb2_store, test=("1979-12-31T00", "1980-02-09T18")))


def test_split_without_a_full_window_is_a_clear_error(wb2_store):
    with pytest.raises(DataError, match=r"split 'train' .* holds no complete window of 16"):
        load_benchmark(_bench(wb2_store, train=("1979-12-01T00", "1979-12-04T12")))
    with pytest.raises(DataError, match=r"split 'val' .* holds no window initialised at \[0, 12\] UTC"):
        load_benchmark(_bench(wb2_store, val=("1979-12-25T06", "1979-12-25T06")))


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
    assert bench.key == "mine-v2" and bench.channels == ("z500",) and bench.init_hours == (0, 12)
    assert load_benchmark(bench).grid.channels == ("z500",)
    path.write_text(path.read_text() + "init_hours = [6, 18]\n")
    bench = get_benchmark(str(path))
    assert bench.init_hours == (6, 18)
    assert str(load_benchmark(bench).split("test", "zscore").window_times(slice(None))[0])[:13] == "1979-12-31T06"
    path.write_text(path.read_text() + "test_stride = 2\n")
    with pytest.raises(ConfigError, match="'test_stride' was replaced by 'init_hours'"):
        get_benchmark(str(path))
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
