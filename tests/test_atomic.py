"""The one atomic-write helper: all or nothing, no temporary file left behind."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from wxbench.atomic import atomic_path, write_atomic


def test_write_atomic_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "seed0.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed0.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "seed0.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["seed0.json"]


def test_the_temporary_is_hidden_beside_the_target_and_takes_any_writer(tmp_path):
    path = tmp_path / "forecast.nc"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".forecast.nc.") and tmp.suffix == ".tmp"
        assert not tmp.exists()  # the writer creates it
        xr.Dataset({"x": ("t", np.arange(3.0))}).to_netcdf(tmp, engine="netcdf4")
        assert not path.exists()  # nothing visible before the block ends
    with xr.open_dataset(path) as ds:
        np.testing.assert_array_equal(ds["x"].values, [0.0, 1.0, 2.0])
