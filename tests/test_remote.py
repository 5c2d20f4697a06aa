"""Remote stores through fsspec, tested on filesystems that need no network (memory://, file://)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest
import xarray as xr
from click.testing import CliRunner

from wxbench.cli import main
from wxbench.data import stores
from wxbench.data.benchmarks import get_benchmark
from wxbench.data.loading import load_benchmark
from wxbench.data.wb1 import open_wb1
from wxbench.data.wb2 import open_wb2
from wxbench.errors import DataError
from wxbench.testing_data import write_wb1_layout, write_wb2_layout

CHANNELS = ["z500", "t850", "t2m"]


@pytest.fixture
def memory_root():
    """A fresh folder of fsspec's in-process memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/wxbench-test-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_wb2_store_in_memory_reads_like_the_local_one(tmp_path, memory_root):
    fs, root = memory_root
    local = write_wb2_layout(tmp_path / "era5.zarr", CHANNELS)
    fs.put(str(local), f"{root}/era5.zarr", recursive=True)
    remote = open_wb2(f"memory://{root}/era5.zarr", CHANNELS).load()
    xr.testing.assert_identical(remote.drop_attrs(), open_wb2(local, CHANNELS).load().drop_attrs())
    assert remote.attrs["source"] == f"memory://{root}/era5.zarr"


def test_wb1_folder_in_memory_reads_like_the_local_one(tmp_path, memory_root):
    fs, root = memory_root
    write_wb1_layout(tmp_path / "wb1", CHANNELS)
    fs.put(str(tmp_path / "wb1"), f"{root}/wb1", recursive=True)
    remote = open_wb1(f"memory://{root}/wb1", CHANNELS).load()
    xr.testing.assert_identical(remote.drop_attrs(), open_wb1(tmp_path / "wb1", CHANNELS).load().drop_attrs())
    origin = json.loads(remote.attrs["channel_origin"])
    assert origin["t2m"]["files"]["1980"] == f"memory://{root}/wb1/2m_temperature/2m_temperature_1980_5.625deg.nc"


def test_file_url_is_a_local_path(tmp_path):
    local = write_wb2_layout(tmp_path / "era5.zarr", ["t2m"])
    assert not stores.is_remote(f"file://{local}")
    xr.testing.assert_identical(open_wb2(str(local), ["t2m"]).load(), open_wb2(local, ["t2m"]).load())


def test_benchmark_reads_a_remote_store(tmp_path, memory_root):
    fs, root = memory_root
    local = write_wb2_layout(tmp_path / "era5.zarr", ["z500"], ("1979-12-01T00", "1980-01-09T18"))
    fs.put(str(local), f"{root}/era5.zarr", recursive=True)
    toml = tmp_path / "bench.toml"
    toml.write_text(f'name = "remote"\nversion = 1\nsource = "wb2"\npath = "memory://{root}/era5.zarr"\n'
                    'channels = ["z500"]\ntrain = ["1979-12-01T00", "1979-12-24T18"]\n'
                    'val = ["1979-12-25T00", "1979-12-30T18"]\ntest = ["1979-12-31T00", "1980-01-09T18"]\n')
    bench = get_benchmark(str(toml))
    assert bench.path == f"memory://{root}/era5.zarr"  # a URL is not resolved against the TOML's folder
    data = load_benchmark(bench, progress=False)
    assert data.source == f"memory://{root}/era5.zarr"


def test_missing_remote_store_names_it(memory_root):
    _, root = memory_root
    with pytest.raises(DataError, match=f"memory://{root}/nothing.zarr: does not exist"):
        open_wb2(f"memory://{root}/nothing.zarr", ["t2m"])


@pytest.fixture
def without_cloud_packages(monkeypatch):
    """fsspec as it is without gcsfs / s3fs installed (whether or not this machine has them)."""
    real = fsspec.get_filesystem_class

    def get_filesystem_class(protocol):
        if protocol in ("gs", "gcs", "s3"):
            raise ImportError(f"Install the package for {protocol}")
        return real(protocol)

    monkeypatch.setattr(fsspec, "get_filesystem_class", get_filesystem_class)


@pytest.mark.parametrize("url,package", [("gs://weatherbench2/era5.zarr", "gcsfs"), ("s3://bucket/era5.zarr", "s3fs")])
def test_missing_protocol_package_gives_the_install_hint(without_cloud_packages, url, package):
    protocol = url.split("://")[0]
    with pytest.raises(DataError) as info:
        open_wb2(url, ["t2m"])
    assert f"WB2 store {url}: reading {protocol}:// needs {package}: pip install 'wxbench[cloud]'" in str(info.value)


def test_cli_refuses_a_remote_path_without_the_extra_before_any_work(without_cloud_packages, tmp_path):
    out = CliRunner().invoke(main, ["run", "-m", "persistence", "--benchmark", "wb2-64x32", "--quiet",
                                    "--data-path", "gs://weatherbench2/datasets/era5/x.zarr",
                                    "--output", str(tmp_path / "results")])
    assert out.exit_code == 2, out.output
    assert "reading gs:// needs gcsfs: pip install 'wxbench[cloud]'" in out.output
    assert not (tmp_path / "results").exists()  # refused before any run or result


def test_unknown_protocol_is_named():
    with pytest.raises(DataError, match="unknown protocol nosuchfs://"):
        stores.filesystem("nosuchfs://x/y.zarr", "WB2 store")


def test_local_paths_stay_local(tmp_path):
    fs, path = stores.filesystem(tmp_path / "a")
    assert path == str(tmp_path / "a") and stores.display(fs, path) == str(tmp_path / "a")
    assert stores.zarr_store(Path("~/x.zarr")) == str(Path.home() / "x.zarr")
