"""Deterministic Held-Suarez simulation that generates wxbench's embedded default dataset.

No reanalysis can be downloaded where wxbench must run, so the default dataset is produced by a
small but physically meaningful general-circulation model: the dry hydrostatic primitive
equations of ``dinosaur`` (NeuralGCM's spectral dynamical core) forced as in

    Held, I. M. and M. J. Suarez, 1994: A proposal for the intercomparison of the dynamical
    cores of atmospheric general circulation models. BAMS 75, 1825-1830.

The statistically steady state has mid-latitude jets, baroclinic eddies and storm tracks, so
the data have weather-like predictability (error growth over days) without any observations.

Everything the model does (all values are recorded in each Dataset's ``attrs``):

* Grid: spectral truncation T21 with an equiangular 64 x 32 (lon x lat) nodal grid, which is
  exactly the WeatherBench 5.625 deg grid (lat -87.1875..87.1875, no poles; lon 0..354.375).
  Flat planet (no orography), Earth radius 6,371,220 m, rotation rate 7.292e-5 s-1,
  g = 9.80616 m s-2, cp = 1004 J kg-1 K-1, kappa = R/cp = 2/7 (so R = 286.86 J kg-1 K-1):
  dinosaur's SI constants.
* Vertical: 8 equidistant sigma layers (centres 0.0625 .. 0.9375).
* Time stepping: IMEX RK SIL3 (gravity waves semi-implicit, the rest explicit) with a 60-minute
  step (DT_MINUTES), float32 on CPU, with dinosaur's default exponential step filter (order 18)
  that damps only the top few total wavenumbers to absorb the enstrophy cascade. A 60-minute
  step gave the same climate as 30 and 45 minutes over 250 days (jet latitude, eddy variance,
  means) at about half the cost of 30 minutes. Semi-implicit reference temperature 288 K
  (isothermal, which avoids the Simmons-Hoskins-Burridge instability).
* Forcing (Held & Suarez 1994, standard values): Rayleigh drag k_f = 1/day below sigma_b = 0.7;
  Newtonian relaxation k_a = 1/40 day, k_s = 1/4 day towards T_eq with T_max = 315 K,
  T_min = 200 K, dT_y = 60 K, dtheta_z = 10 K, p0 = 1000 hPa.
* There is NO seasonal cycle and NO diurnal cycle (the forcing is time independent and
  zonally symmetric); the two hemispheres are statistically identical. Calendar times attached
  to the output are labels only; a climatology by day-of-year or hour-of-day is therefore flat.
* Output: z500 (geopotential, m2 s-2, not metres), t850 (K), u850, v850 (m s-1), interpolated
  from sigma to pressure levels linearly in log(pressure) with dinosaur's vertical
  interpolation, every 6 hours. ``time[0]`` is the (perturbed) initial state at ``start_time``;
  ``time[k] = start_time + 6h * k``.

Initial states: the isothermal rest state (288 K, 1000 hPa) is exactly symmetric, so a seeded
white-noise temperature perturbation breaks the symmetry; after SPINUP_DAYS the state is
statistically steady. Two spun-up states are shipped in ``held_suarez_spinup.npz`` (spectral
coefficients, float32): "spunup-0" after SPINUP_DAYS and "spunup-1" after SPINUP_EXTRA_DAYS more,
so two trajectories start decorrelated. Regenerate them with ``python -m wxbench.data.simulate``
(which calls :func:`write_spinup_states`). A trajectory adds a small seeded perturbation
(PERTURBATION_K, white noise in temperature) to the shipped state, so different seeds give
different, chaotically diverging trajectories from the same start.

Determinism: the model has no randomness except numpy's seeded generator, and XLA on CPU is
deterministic, so the same arguments give bit-identical output on the same machine (and same
jax/dinosaur versions). Bump GENERATOR_VERSION whenever the output would change.

Cost: JAX uses one core per process, so independent trajectories run in separate processes
(``generate_trajectories``, multiprocessing "spawn" context, since jax and fork do not mix).
jax and dinosaur are imported lazily so that importing this module is cheap.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .channels import parse_channel

GENERATOR_VERSION = "held-suarez-1"
#: output channels; their levels, units and descriptions come from the channel catalogue
VARIABLES = ("z500", "t850", "u850", "v850")
_CHANNELS = tuple(parse_channel(v) for v in VARIABLES)
# Pressure (hPa) of each output variable, in VARIABLES order.
_LEVELS_HPA = tuple(float(c.level) for c in _CHANNELS)

# Numerical parameters. Changing any of them changes the output: bump GENERATOR_VERSION and
# regenerate the spin-up file (its stored parameters are checked on load).
TRUNCATION = "T21"
LAYERS = 8
DT_MINUTES = 60.0
SAVE_EVERY_HOURS = 6.0
# dinosaur's default exponential step filter: damps each spectral mode by
# exp(-(dt / FILTER_TAU) * (k / k_max) ** (2 * FILTER_ORDER)) per step, i.e. only the top few total
# wavenumbers. FILTER_TAU is in dinosaur's nondimensional time unit 1/(2*Omega) = 6857 s (75 s).
# (A del^4 hyperdiffusion with an 8 h e-folding time damped the baroclinic scales of T21 too much:
# eddies set in only after ~80 days and the jets sat at ~50 deg.)
FILTER_ORDER = 18
FILTER_TAU = 0.010938
REFERENCE_TEMPERATURE_K = 288.0
SURFACE_PRESSURE_PA = 1e5
# Held & Suarez (1994) forcing parameters, the paper's standard values.
HELD_SUAREZ = dict(sigma_b=0.7, kf_per_day=1.0, ka_per_day=1 / 40, ks_per_day=1 / 4,
                   min_t_k=200.0, max_t_k=315.0, dt_y_k=60.0, dtheta_z_k=10.0, p0_pa=1e5)

# Initial conditions.
SPINUP_DAYS = 200.0
SPINUP_EXTRA_DAYS = 100.0
SPINUP_PERTURBATION_K = 1.0  # breaks the symmetry of the rest state
PERTURBATION_K = 0.1  # per-trajectory seeded perturbation, small next to t850 variability (~5 K)
SPINUP_FILE = Path(__file__).with_name("held_suarez_spinup.npz")
STARTS = ("spunup-0", "spunup-1")
_STATE_FIELDS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")


def _state_parameters() -> dict[str, Any]:
    """The numbers that determine the model states (stored with the spun-up states, checked on load)."""
    p = dict(
        truncation=TRUNCATION, layers=LAYERS, dt_minutes=DT_MINUTES, save_every_hours=SAVE_EVERY_HOURS,
        filter_order=FILTER_ORDER, filter_tau_seconds=FILTER_TAU / 2 / 7.292e-5,
        reference_temperature_k=REFERENCE_TEMPERATURE_K, surface_pressure_pa=SURFACE_PRESSURE_PA,
        radius_m=6.37122e6, angular_velocity_per_s=7.292e-5, gravity_m_per_s2=9.80616,
        kappa=2 / 7, cp_j_per_kg_k=1004.0, spinup_days=SPINUP_DAYS,
        spinup_extra_days=SPINUP_EXTRA_DAYS, spinup_perturbation_k=SPINUP_PERTURBATION_K,
    )
    p.update({f"held_suarez_{k}": v for k, v in HELD_SUAREZ.items()})
    return p


def _parameters() -> dict[str, Any]:
    """All physical/numerical parameters, as netCDF-safe attrs (str/int/float)."""
    return dict(
        generator_version=GENERATOR_VERSION,
        model="dinosaur primitive equations (sigma coordinates) + Held-Suarez 1994 forcing",
        grid="T21, equiangular 64x32 (WeatherBench 5.625 deg)", sigma_levels="equidistant",
        integrator="imex_rk_sil3", precision="float32", step_filter="exponential",
        orography="none (flat)", seasonal_cycle="none", diurnal_cycle="none",
        vertical_interpolation="linear in log(pressure)", perturbation_k=PERTURBATION_K,
        **_state_parameters())


@functools.lru_cache(maxsize=None)
def _model() -> SimpleNamespace:
    """Build the model and its jitted functions once per process (imports jax lazily)."""
    import jax
    import jax.numpy as jnp
    from dinosaur import (coordinate_systems, held_suarez, primitive_equations, scales,
                          sigma_coordinates, spherical_harmonic, time_integration, units,
                          vertical_interpolation)

    u = scales.units
    specs = units.SimUnits.from_si()
    grid = spherical_harmonic.Grid.T21(latitude_spacing="equiangular", radius=specs.radius)
    sigma = sigma_coordinates.SigmaCoordinates.equidistant(LAYERS)
    coords = coordinate_systems.CoordinateSystem(grid, sigma)
    tref = np.full((LAYERS,), specs.nondimensionalize(REFERENCE_TEMPERATURE_K * u.degK))
    orography = np.zeros(grid.modal_shape)  # flat planet
    hs = HELD_SUAREZ
    forcing = held_suarez.HeldSuarezForcingSigma(
        coords, specs, tref, p0=hs["p0_pa"] * u.pascal, sigma_b=hs["sigma_b"],
        kf=hs["kf_per_day"] / u.day, ka=hs["ka_per_day"] / u.day, ks=hs["ks_per_day"] / u.day,
        minT=hs["min_t_k"] * u.degK, maxT=hs["max_t_k"] * u.degK,
        dTy=hs["dt_y_k"] * u.degK, dThz=hs["dtheta_z_k"] * u.degK)
    dynamics = primitive_equations.PrimitiveEquationsSigma(tref, orography, coords, specs)
    equation = time_integration.compose_equations([dynamics, forcing])
    dt = specs.nondimensionalize(DT_MINUTES * u.minute)
    step = time_integration.step_with_filters(
        time_integration.imex_rk_sil3(equation, dt),
        [time_integration.exponential_step_filter(grid, dt, tau=FILTER_TAU, order=FILTER_ORDER)])
    inner_steps = round(SAVE_EVERY_HOURS * 60 / DT_MINUTES)
    assert abs(inner_steps * DT_MINUTES - SAVE_EVERY_HOURS * 60) < 1e-9
    segment = time_integration.repeated(step, inner_steps)  # one 6-hour segment (lax.scan)

    # Factors that turn nondimensional model values into SI units.
    to_si = lambda unit: float(specs.dimensionalize(1.0, unit).m)
    geopotential_si, speed_si = to_si(u.m ** 2 / u.s ** 2), to_si(u.m / u.s)
    log_sigma = np.log(sigma.centers)
    target_p = np.array([specs.nondimensionalize(p * u.hPa) for p in _LEVELS_HPA])
    interp = vertical_interpolation.vectorize_vertical_interpolation(
        vertical_interpolation.linear_interp_with_linear_extrap)

    def observe(state):
        """Modal sigma-level state -> (len(VARIABLES), lat, lon) float32 array in SI units."""
        temperature = tref[:, None, None] + grid.to_nodal(state.temperature_variation)
        surface_pressure = jnp.exp(grid.to_nodal(state.log_surface_pressure))  # (1, lon, lat)
        geopotential = primitive_equations.get_geopotential_on_sigma(
            temperature, nodal_orography=np.zeros(grid.nodal_shape), sigma=sigma,
            gravity_acceleration=specs.g, ideal_gas_constant=specs.R)
        uu, vv = spherical_harmonic.vor_div_to_uv_nodal(grid, state.vorticity, state.divergence)
        # Interpolate linearly in log(p) = log(sigma) + log(ps): exact for geopotential in an
        # isothermal layer, and the usual choice for T and winds.
        x = jnp.log(target_p[:, None, None] / surface_pressure)  # (4, lon, lat)
        fields = [geopotential * geopotential_si, temperature, uu * speed_si, vv * speed_si]
        out = jnp.stack([interp(x[i:i + 1], log_sigma, f)[0] for i, f in enumerate(fields)])
        return jnp.swapaxes(out, -1, -2).astype(jnp.float32)  # (var, lon, lat) -> (var, lat, lon)

    def to_modal(nodal):
        return np.asarray(grid.to_modal(jnp.asarray(nodal, jnp.float32)))

    def make_state(arrays):
        return primitive_equations.State(**{k: jnp.asarray(arrays[k]) for k in _STATE_FIELDS})

    def observe_and_advance(state):
        # One jitted program serves spin-up and trajectories: a single compile per process.
        return segment(state), observe(state)

    # Exact WeatherBench coordinates (the model's nodes agree to rounding error).
    lon, lat = np.arange(64) * 5.625, -87.1875 + np.arange(32) * 5.625
    node_lon, node_sin_lat = grid.nodal_axes
    assert np.allclose(np.rad2deg(node_lon), lon) and np.allclose(np.sin(np.deg2rad(lat)), node_sin_lat)
    return SimpleNamespace(grid=grid, specs=specs, run=jax.jit(observe_and_advance),
                           to_modal=to_modal, make_state=make_state, lon=lon, lat=lat,
                           log_p0=float(np.log(specs.nondimensionalize(SURFACE_PRESSURE_PA * u.pascal))))


def _as_numpy(state) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(state, k)) for k in _STATE_FIELDS}


def _perturb(arrays: dict[str, np.ndarray], seed: int, amplitude_k: float) -> dict[str, np.ndarray]:
    """Add seeded white noise (std amplitude_k, in K) to the temperature, via spectral space."""
    m = _model()
    noise = np.random.default_rng(seed).standard_normal((LAYERS, *m.grid.nodal_shape)) * amplitude_k
    out = dict(arrays)
    # Temperature is in K in the model's units (the default scale keeps kelvin).
    out["temperature_variation"] = (arrays["temperature_variation"] + m.to_modal(noise)).astype(np.float32)
    return out


def _rest_state() -> dict[str, np.ndarray]:
    """Isothermal (288 K) atmosphere at rest with uniform 1000 hPa surface pressure."""
    m = _model()
    zeros = np.zeros((LAYERS, *m.grid.modal_shape), np.float32)
    log_ps = m.to_modal(np.full((1, *m.grid.nodal_shape), m.log_p0))
    return dict(vorticity=zeros, divergence=zeros, temperature_variation=zeros,
                log_surface_pressure=log_ps.astype(np.float32))


def _integrate(arrays: dict[str, np.ndarray], days: float, progress: bool = False,
               desc: str = "") -> dict[str, np.ndarray]:
    """Advance a state by `days` (whole 6-hour segments) without saving output."""
    from tqdm.auto import tqdm

    m = _model()
    state = m.make_state(arrays)
    for _ in tqdm(range(round(days * 24 / SAVE_EVERY_HOURS)), desc=desc, disable=not progress):
        state, _ = m.run(state)
    out = _as_numpy(state)
    if not all(np.isfinite(v).all() for v in out.values()):
        raise FloatingPointError("Held-Suarez spin-up blew up (non-finite state)")
    return out


def spin_up(days: float = SPINUP_DAYS, seed: int = 0, progress: bool = False) -> dict[str, np.ndarray]:
    """Spin up from the perturbed rest state; returns the modal state arrays (float32)."""
    start = _perturb(_rest_state(), seed, SPINUP_PERTURBATION_K)
    return _integrate(start, days, progress, desc="spin-up")


def write_spinup_states(path: str | os.PathLike = SPINUP_FILE, progress: bool = True) -> Path:
    """Regenerate the shipped spun-up states ("spunup-0", "spunup-1") into a compressed .npz."""
    s0 = spin_up(SPINUP_DAYS, seed=0, progress=progress)
    s1 = _integrate(s0, SPINUP_EXTRA_DAYS, progress, desc="spin-up (extra)")
    arrays = {f"{name}/{k}": v for name, s in zip(STARTS, (s0, s1)) for k, v in s.items()}
    path = Path(path)
    np.savez_compressed(path, **arrays, _meta=np.array(repr(sorted(_state_parameters().items()))))
    return path


@functools.lru_cache(maxsize=None)
def _load_start(start: str) -> dict[str, np.ndarray]:
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; expected one of {STARTS}")
    with np.load(SPINUP_FILE) as f:
        if str(f["_meta"]) != repr(sorted(_state_parameters().items())):
            raise RuntimeError(f"{SPINUP_FILE.name} was made with other model parameters; "
                               "regenerate it with `python -m wxbench.data.simulate`")
        return {k: f[f"{start}/{k}"] for k in _STATE_FIELDS}


def simulate_trajectory(days: float, *, start: str = "spunup-0", seed: int = 0,
                        start_time: str = "2000-01-01T00:00", progress: bool = False,
                        position: int = 0):
    """Run one trajectory from a shipped spun-up state plus a small seeded perturbation.

    Returns an ``xarray.Dataset`` with one float32 DataArray per name in VARIABLES, dims
    ("time", "lat", "lon"), lat ascending -87.1875..87.1875 (32), lon 0..354.375 (64),
    ``len(time) == round(days * 4)``, 6-hourly, and ``time[0] == start_time`` holds the
    perturbed initial state itself (so the last state is at start_time + 6h * (n - 1)).
    """
    import xarray as xr
    from tqdm.auto import tqdm

    n = round(days * 24 / SAVE_EVERY_HOURS)
    if n < 1:
        raise ValueError(f"days={days} gives no 6-hourly state")
    m = _model()
    state = m.make_state(_perturb(_load_start(start), seed, PERTURBATION_K))
    frames = np.empty((n, len(VARIABLES), len(m.lat), len(m.lon)), np.float32)
    with tqdm(total=n, desc=f"{start} seed={seed}", position=position, disable=not progress,
              leave=True, unit="state") as bar:
        for i in range(n):
            # frames[i] is the state at start_time + 6h * i; the segment run after the last
            # frame is wasted (1/n of the cost) but keeps a single compiled program.
            state, obs = m.run(state)
            frames[i] = obs  # the copy to numpy syncs; negligible next to a 6-hour segment
            bar.update()
    if not np.isfinite(frames).all():
        raise FloatingPointError(f"Held-Suarez trajectory ({start}, seed {seed}) went non-finite")

    time = np.datetime64(start_time, "ns") + np.arange(n) * np.timedelta64(int(SAVE_EVERY_HOURS), "h")
    coords = dict(time=time, lat=("lat", m.lat, {"units": "degrees_north"}),
                  lon=("lon", m.lon, {"units": "degrees_east"}))
    data = {c.name: (("time", "lat", "lon"), frames[:, i], {"units": c.units, "long_name": c.description})
            for i, c in enumerate(_CHANNELS)}
    attrs = dict(_parameters(), start=start, seed=seed, start_time=str(start_time),
                 first_time="initial state (time[0] == start_time)")
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _run_spec(args: tuple[int, dict, bool]):
    position, spec, progress = args
    spec = dict(spec)
    spec.setdefault("progress", progress)
    spec.setdefault("position", position)
    return simulate_trajectory(**spec)


def generate_trajectories(specs: list[dict], *, processes: int = 2, progress: bool = True) -> list:
    """Run ``simulate_trajectory(**spec)`` for each spec in parallel "spawn" processes, in order.

    Each spec may set ``progress``/``position``; by default every run shows its own bar on its
    own line. With ``processes <= 1`` (or a single spec) the work runs in this process instead.
    The children compile the same XLA program as this process would, so results are
    bit-identical either way (checked by the tests).
    """
    jobs = [(i, spec, progress) for i, spec in enumerate(specs)]
    processes = min(processes, len(specs))
    if processes <= 1:
        return [_run_spec(j) for j in jobs]
    # jax is not fork-safe; "spawn" starts clean interpreters (each pays its own jax import and
    # compile, ~10 s, which overlaps across processes).
    from tqdm.auto import tqdm

    context = multiprocessing.get_context("spawn")
    # one lock shared by the children's progress bars (tqdm's pattern for processes)
    with context.Pool(processes, initializer=tqdm.set_lock, initargs=(context.RLock(),)) as pool:
        results = pool.map(_run_spec, jobs, chunksize=1)
        # let the workers exit on their own: the context manager's terminate() kills them before
        # their semaphores are released ("leaked semaphore objects" warning at shutdown)
        pool.close()
        pool.join()
    return results


if __name__ == "__main__":
    print(f"wrote {write_spinup_states()}")
