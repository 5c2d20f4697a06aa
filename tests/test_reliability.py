"""Fault injection: interrupted runs lose nothing, caches are never mistaken for complete, the same
seed gives the same numbers, and a broken encoder becomes an error row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from wxbench import Encoder, TorchForecaster, hookimpl
from wxbench.cli import main
from wxbench.errors import DataError
from wxbench.results import load_results
from wxbench.testing_data import TINY_PERIOD, write_benchmark_toml, write_wb2_layout

MODELS = ["persistence", "climatology", "lr", "lr_multi"]


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel")
    store = write_wb2_layout(root / "data.zarr", ["z500", "t850"], TINY_PERIOD)
    return write_benchmark_toml(root / "bench.toml", name="rel", source="wb2", data=store, channels=["z500", "t850"])


def _run_args(bench: Path, out: Path) -> list[str]:
    return ["run", *[a for m in MODELS for a in ("-m", m)], "--benchmark", str(bench), "--profile", "smoke",
            "--output", str(out), "--quiet", "--no-leaderboard"]


def _scores(folder: Path) -> dict[str, dict]:
    return {r["model"]: r["scores"] for r in load_results(folder)}


@pytest.fixture(scope="module")
def uninterrupted(bench_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    result = CliRunner().invoke(main, _run_args(bench_file, out))
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_leaves_no_partial_results_and_resume_completes(sig, bench_file, uninterrupted, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "wxbench.cli", *_run_args(bench_file, tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.rglob("seed0.json")):
        time.sleep(0.05)
    assert list(tmp_path.rglob("seed0.json")), "no result appeared"
    proc.send_signal(sig)
    proc.wait(timeout=120)
    finished = list(tmp_path.rglob("seed0.json"))
    assert 0 < len(finished) <= len(MODELS)
    for path in tmp_path.rglob("*.json"):
        json.loads(path.read_text())  # every visible result is complete
    # resume finishes the rest; the result equals the uninterrupted run's
    result = CliRunner().invoke(main, [*_run_args(bench_file, tmp_path), "--resume"])
    assert result.exit_code == 0, result.output
    assert _scores(tmp_path) == _scores(uninterrupted)
    assert all(r["status"] == "ok" for r in load_results(tmp_path))


class _TinyConv(TorchForecaster):
    """A one-layer convolution, for the reproducibility check."""

    name = "tiny_conv"
    family = "test"

    def build(self) -> nn.Module:
        c = self.grid.n_channels

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(12 * c, 4 * c, 3, padding=1)
                self.dropout = nn.Dropout(0.1)  # randomness that the seed must control

            def forward(self, x):
                b, _, _, h, w = x.shape
                return self.conv(self.dropout(x.flatten(1, 2))).view(b, 4, c, h, w)

        return Net()


class _BrokenDecoder(Encoder):
    """An encoder whose decode raises."""

    name = "broken_decoder"

    def encode(self, fields):
        return fields

    def decode(self, latent):
        raise RuntimeError("decoder exploded")

    def latent_shape(self, input_shape):
        return input_shape

    @property
    def trainable(self):
        return {}

    def fit(self, train, val, budget):
        from wxbench import FitReport

        return FitReport(seconds=0.0)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class _LatentPersistence(_TinyConv):
    """Persistence through an encoder: encode the last state, decode it for every lead."""

    name = "latent_persistence"
    normalisation = "minmax"

    def fit(self, train, val, budget):
        self.encoder = _BrokenDecoder(self.grid)
        return self.encoder.fit(train, val, budget)

    def predict(self, history):
        decoded = self.encoder.decode(self.encoder.encode(history[:, -1]))
        return decoded[:, None].expand(-1, 4, -1, -1, -1)


class _Plugin:
    @hookimpl
    def wxbench_register_forecasters(self, register):
        register(_TinyConv)
        register(_LatentPersistence)


def test_same_seed_gives_identical_scores(bench_file, tmp_path, wxbench_registry):
    wxbench_registry.add_plugin(_Plugin(), name="test-plugin")
    for out in ("a", "b"):
        result = CliRunner().invoke(main, ["run", "-m", "tiny_conv", "--benchmark", str(bench_file), "--profile",
                                           "smoke", "--seed", "7", "--output", str(tmp_path / out), "--quiet"])
        assert result.exit_code == 0, result.output
    a, b = _scores(tmp_path / "a"), _scores(tmp_path / "b")
    assert a == b and a["tiny_conv"]["rmse"]["z500"][0] > 0
    result = CliRunner().invoke(main, ["run", "-m", "tiny_conv", "--benchmark", str(bench_file), "--profile", "smoke",
                                       "--seed", "8", "--output", str(tmp_path / "c"), "--quiet"])
    assert _scores(tmp_path / "c") != a  # and the seed matters


def test_broken_encoder_decode_is_an_error_row(bench_file, tmp_path, wxbench_registry):
    wxbench_registry.add_plugin(_Plugin(), name="test-plugin")
    result = CliRunner().invoke(main, ["run", "-m", "latent_persistence", "-m", "persistence", "--benchmark",
                                       str(bench_file), "--profile", "smoke", "--output", str(tmp_path), "--quiet"])
    assert result.exit_code == 1, result.output  # one run failed
    rows = {r["model"]: r for r in load_results(tmp_path)}
    assert rows["persistence"]["status"] == "ok"
    assert rows["latent_persistence"]["status"] == "error"
    assert "decoder exploded" in rows["latent_persistence"]["error"]["message"]
    assert "plugin 'test-plugin'" in rows["latent_persistence"]["error"]["message"]


# -- the embedded cache ------------------------------------------------------------------------

@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WXBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_generation(monkeypatch, calls: list):
    """Replace the simulation by a cheap stand-in with the same output layout."""
    import numpy as np
    import xarray as xr

    from wxbench.data import simulate

    def fake(specs, processes=2, progress=True):
        calls.append(specs)
        parts = []
        for spec in specs:
            n = int(spec["days"] * 4)
            times = np.datetime64(spec["start_time"], "ns") + np.arange(n) * np.timedelta64(6, "h")
            lat = np.arange(-87.1875, 90, 5.625)
            lon = np.arange(0, 360, 5.625)
            data = {v: (("time", "lat", "lon"), np.full((n, 32, 64), 1.0 + i, np.float32))
                    for i, v in enumerate(simulate.VARIABLES)}
            parts.append(xr.Dataset(data, coords={"time": times, "lat": lat, "lon": lon}))
        return parts

    monkeypatch.setattr(simulate, "generate_trajectories", fake)


def test_interrupted_prepare_is_never_taken_for_complete(private_cache, monkeypatch):
    from wxbench.data.benchmarks import EMBEDDED_TINY
    from wxbench.data.embedded import dataset_path, marker_path, open_embedded

    calls: list = []
    _fake_generation(monkeypatch, calls)
    path = dataset_path(EMBEDDED_TINY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a netCDF file")  # what an interrupted prepare could leave: no marker
    fields = open_embedded(EMBEDDED_TINY, progress=False)
    assert len(calls) == 1 and marker_path(path).exists()  # regenerated, then marked complete
    assert fields.sizes["time"] == 28 * 4
    open_embedded(EMBEDDED_TINY, progress=False)
    assert len(calls) == 1  # complete now: not generated again


def test_cache_whose_hash_does_not_match_is_an_error(private_cache, monkeypatch):
    import xarray as xr

    from wxbench.data.benchmarks import EMBEDDED_TINY
    from wxbench.data.embedded import dataset_path, open_embedded

    _fake_generation(monkeypatch, [])
    open_embedded(EMBEDDED_TINY, progress=False)
    path = dataset_path(EMBEDDED_TINY)
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds["z500"][0, 0, 0] = 99.0  # silent corruption
    ds.to_netcdf(path)
    with pytest.raises(DataError, match=r"content hash .* does not match"):
        open_embedded(EMBEDDED_TINY, progress=False)


def test_unreadable_cache_is_a_clear_error(private_cache, monkeypatch):
    from wxbench.data.benchmarks import EMBEDDED_TINY
    from wxbench.data.embedded import dataset_path, open_embedded

    _fake_generation(monkeypatch, [])
    open_embedded(EMBEDDED_TINY, progress=False)
    path = dataset_path(EMBEDDED_TINY)
    path.write_bytes(path.read_bytes()[:1000])  # truncated after it was marked complete
    with pytest.raises(DataError, match=f"{path.name}.*unreadable"):
        open_embedded(EMBEDDED_TINY, progress=False)
