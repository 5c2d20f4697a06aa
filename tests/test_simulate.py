"""Fast tests for the Held-Suarez data generator (one JAX compile, shared via the module cache)."""

import numpy as np
import pytest

pytest.importorskip("dinosaur")
from wxbench.data import simulate as sim  # noqa: E402
from wxbench.data.channels import parse_channel  # noqa: E402

LAT = -87.1875 + 5.625 * np.arange(32)
LON = 5.625 * np.arange(64)


@pytest.fixture(scope="module")
def traj():
    return sim.simulate_trajectory(2, start="spunup-0", seed=0, start_time="2001-03-01T00:00")


def test_spinup_file_shipped_and_loadable():
    assert sim.SPINUP_FILE.exists()
    assert sim.SPINUP_FILE.stat().st_size < 1_000_000
    for start in sim.STARTS:
        state = sim._load_start(start)
        assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in state.values())
    with pytest.raises(ValueError):
        sim._load_start("spunup-9")


def test_dims_coords_dtype(traj):
    assert tuple(traj.data_vars) == sim.VARIABLES
    assert traj.sizes == {"time": 8, "lat": 32, "lon": 64}
    np.testing.assert_array_equal(traj.lat.values, LAT)  # exact WeatherBench coordinates
    np.testing.assert_array_equal(traj.lon.values, LON)
    times = traj.time.values
    assert times[0] == np.datetime64("2001-03-01T00:00")  # time[0] is the initial state
    assert (np.diff(times) == np.timedelta64(6, "h")).all()
    for name in sim.VARIABLES:
        da = traj[name]
        assert da.dims == ("time", "lat", "lon") and da.dtype == np.float32
        assert np.isfinite(da.values).all()
        assert da.attrs["units"] == parse_channel(name).units
    assert traj.attrs["generator_version"] == sim.GENERATOR_VERSION
    assert traj.attrs["seasonal_cycle"] == "none"
    assert len(sim.simulate_trajectory(0.3).time) == 1  # round(days * 4)


def test_physically_plausible(traj):
    w = np.cos(np.deg2rad(traj.lat))
    z500 = float(traj.z500.weighted(w).mean())
    t850 = float(traj.t850.weighted(w).mean())
    assert 50_000 < z500 < 58_000  # geopotential, m2/s2
    assert 240 < t850 < 300
    assert float(np.abs(traj.u850).max()) < 80
    # Mid-latitude weather: z500 varies far more along 45N than at the equator.
    eddy = traj.z500 - traj.z500.mean("lon")
    assert float(eddy.sel(lat=47.8125).std()) > 3 * float(eddy.sel(lat=2.8125).std())
    # Persistence error grows with lead time (6 h .. 24 h).
    z = traj.z500.values
    rmse = [np.sqrt(((z[k:] - z[:-k]) ** 2).mean()) for k in (1, 2, 3, 4)]
    assert np.all(np.diff(rmse) > 0)


def test_deterministic_and_seeded(traj):
    again = sim.simulate_trajectory(2, start="spunup-0", seed=0, start_time="2001-03-01T00:00")
    for name in sim.VARIABLES:
        np.testing.assert_array_equal(traj[name].values, again[name].values)
    other_seed = sim.simulate_trajectory(2, start="spunup-0", seed=1)
    assert not np.array_equal(traj.t850.values, other_seed.t850.values)
    # ... but only slightly (a small perturbation of the same state).
    assert float(np.abs(traj.t850 - other_seed.t850.values).isel(time=0).max()) < 2.0
    other_start = sim.simulate_trajectory(0.25, start="spunup-1")
    assert float(np.abs(traj.z500[0] - other_start.z500[0].values).max()) > 1000


def test_generate_trajectories_in_process(traj):
    (ds,) = sim.generate_trajectories([dict(days=2, seed=0, start_time="2001-03-01T00:00")],
                                      processes=1, progress=False)
    np.testing.assert_array_equal(ds.z500.values, traj.z500.values)


@pytest.mark.slow  # two fresh interpreters each import jax and compile (~10-15 s on an idle machine)
def test_generate_trajectories_spawn_matches_in_process():
    specs = [dict(days=0.5, seed=3), dict(days=0.5, start="spunup-1", seed=4)]
    parallel = sim.generate_trajectories(specs, processes=2, progress=False)
    for spec, ds in zip(specs, parallel):
        local = sim.simulate_trajectory(**spec)
        for name in sim.VARIABLES:
            np.testing.assert_array_equal(ds[name].values, local[name].values)
