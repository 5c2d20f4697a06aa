"""The spherical plugin: SFNO (direct) and SFNO-AR (autoregressive) on torch-harmonics.

Pins: the spherical harmonic transforms on the data's cell-centre latitudes (exact round trip of
band-limited fields, orientation, agreement with torch-harmonics where their grids coincide), the
spectral truncation, the parameter count formula, persistence at initialisation, longitude-shift
equivariance, the autoregressive rollout equations, the conformance checks and a learning check.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

pytest.importorskip("torch_harmonics")

from torch_harmonics import InverseRealSHT, RealSHT  # noqa: E402
from torch_harmonics.quadrature import precompute_latitudes  # noqa: E402

from wxbench.testing import DEFAULT_GRID, WB_LAT, check_forecaster, check_learns  # noqa: E402
from wxbench_spherical.models import SFNO, SFNOAutoregressive  # noqa: E402
from wxbench_spherical.sht import (DataGridInverseRealSHT, DataGridRealSHT, band_limited_coefficients,  # noqa: E402
                                   compare_grids, fejer1_weights, interpolatory_weights)

NLON = 64


# one torch thread (wxbench.testing.one_torch_thread): fast and unaffected on a shared machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(cls, **hp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return cls(DEFAULT_GRID, **{**cls.profile_hyperparameters["smoke"], **hp})


# -- spherical harmonic transforms on the data grid --------------------------------------------

@pytest.mark.parametrize("lmax", [16, 22, 32])
def test_sht_round_trip_of_band_limited_field_on_data_grid(lmax):
    coeffs = band_limited_coefficients(lmax, seed=3, batch=2)
    inv = DataGridInverseRealSHT(WB_LAT, NLON, lmax, lmax, dtype=torch.float64)
    fwd = DataGridRealSHT(WB_LAT, NLON, lmax, lmax, dtype=torch.float64)
    field = inv(coeffs)
    assert field.shape == (2, 32, NLON)
    assert torch.allclose(fwd(field), coeffs, atol=1e-12), "analysis does not recover the coefficients"
    assert torch.allclose(inv(fwd(field)), field, atol=1e-12)
    # float32 tables, as used inside the model
    f32 = DataGridInverseRealSHT(WB_LAT, NLON, lmax, lmax)(DataGridRealSHT(WB_LAT, NLON, lmax, lmax)(field.float()))
    assert (f32 - field).abs().max() / field.abs().max() < 1e-5


def test_builtin_torch_harmonics_grids_would_misplace_the_data_rows():
    """Why the custom tables exist: torch-harmonics' grids assume other latitudes."""
    errors = compare_grids(WB_LAT, NLON, 16)
    round_trip, coefficients = errors["data grid (this module)"]
    assert round_trip < 1e-13 and coefficients < 1e-13
    assert errors["torch-harmonics 'legendre-gauss'"][1] > 1e-2
    assert errors["torch-harmonics 'equiangular'"][1] > 1e-2
    # and the data grid is not any of theirs (equiangular includes the poles)
    colat = torch.deg2rad(90 - torch.tensor(WB_LAT[::-1], dtype=torch.float64))
    for grid in ("equiangular", "legendre-gauss", "lobatto", "equiangular-trapezoidal"):
        nodes, _ = precompute_latitudes(32, grid=grid)
        assert (nodes - colat).abs().max() > 1e-3, grid


def test_cell_centre_quadrature_is_fejer_first_rule():
    x, w = fejer1_weights(32)
    assert torch.allclose(interpolatory_weights(x), w, atol=1e-13)
    # the Fejer nodes are exactly the WeatherBench latitudes
    lat = torch.rad2deg(torch.arcsin(x))
    assert torch.allclose(lat.sort().values, torch.tensor(WB_LAT, dtype=torch.float64), atol=1e-10)
    assert abs(float(w.sum()) - 2.0) < 1e-13


def test_data_grid_tables_reproduce_torch_harmonics_on_its_own_grid():
    """Given Gauss-Legendre latitudes, the construction equals torch-harmonics' legendre-gauss SHT."""
    colat, _ = precompute_latitudes(32, grid="legendre-gauss")
    lat = (90 - torch.rad2deg(colat)).tolist()
    ours_f, ours_i = DataGridRealSHT(lat, NLON, 16, 16), DataGridInverseRealSHT(lat, NLON, 16, 16)
    theirs_f = RealSHT(32, NLON, lmax=16, mmax=16, grid="legendre-gauss")
    theirs_i = InverseRealSHT(32, NLON, lmax=16, mmax=16, grid="legendre-gauss")
    assert torch.allclose(ours_f.weights, theirs_f.weights.float(), atol=1e-6)
    assert torch.allclose(ours_i.pct, theirs_i.pct.float(), atol=1e-6)


def test_data_grid_orientation_rows_are_south_to_north():
    """Y_1^0 = sqrt(3 / 4 pi) sin(lat) on the ascending data latitudes has coefficient (1, 0) = 1."""
    lat = torch.deg2rad(torch.tensor(WB_LAT, dtype=torch.float64))
    field = (math.sqrt(3 / (4 * math.pi)) * torch.sin(lat))[:, None].expand(32, NLON)
    coeffs = DataGridRealSHT(WB_LAT, NLON, 16, 16, dtype=torch.float64)(field)
    expected = torch.zeros(16, 16, dtype=torch.complex128)
    expected[1, 0] = 1.0
    assert torch.allclose(coeffs, expected, atol=1e-12)


# -- architecture -------------------------------------------------------------------------------

def _expected_parameters(embed, layers, n_in, n_out, c=4, h=32, lmax=22, ratio=2):
    hidden = int(embed * ratio)
    block = 2 * embed * embed * lmax + (embed * hidden + hidden) + hidden * embed  # complex spectral = 2 reals
    return n_in * c * embed + embed * h + layers * block + embed * n_out * c


def test_architecture_at_defaults_and_cpu_profile():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        direct = SFNO(DEFAULT_GRID)
        cpu = SFNO(DEFAULT_GRID, **SFNO.profile_hyperparameters["cpu"])
        ar = SFNOAutoregressive(DEFAULT_GRID)
    info = direct.describe()
    assert info["parameters"] == _expected_parameters(256, 4, 12, 4) == 12_609_536
    assert SFNO.profile_hyperparameters["cpu"] == SFNOAutoregressive.profile_hyperparameters["cpu"] == {
        "embed_dim": 32, "num_layers": 2, "learning_rate": 2e-2, "torch_threads": 1}
    assert cpu.describe()["parameters"] == _expected_parameters(32, 2, 12, 4) == 101_504
    assert ar.describe()["parameters"] == _expected_parameters(256, 4, SFNOAutoregressive.hyperparameters["input_steps"], 1)
    # truncation T21 (lmax = mmax = 22), internal 32 x 64 Gauss grid
    assert (info["lmax"], info["mmax"], info["internal_grid"]) == (22, 22, [32, 64])
    assert direct.module.core.sfno.blocks[1].global_conv.weight.shape == (256, 256, 22)
    net = direct.module.core
    assert isinstance(net.sfno.trans_down, DataGridRealSHT) and isinstance(net.sfno.itrans_up, DataGridInverseRealSHT)
    assert net.sfno.blocks[0].global_conv.forward_transform is net.sfno.trans_down
    assert net.sfno.blocks[-1].global_conv.inverse_transform is net.sfno.itrans_up
    assert net.sfno.trans.grid == net.sfno.itrans.grid == "legendre-gauss"
    # the skip connections that cross grids (data -> Gauss in the first block, back in the last) are
    # resampled, although both grids are 32 x 64
    assert [b.global_conv.scale_residual for b in net.sfno.blocks] == [True, False, False, True]
    # torch-harmonics' default scale factor 3 would keep only 10 modes at 32 x 64, factor 2 16
    for factor, modes, internal in ((3, 10, [11, 21]), (2, 16, [16, 32]), (1, 32, [32, 64])):
        small = _model(SFNO, scale_factor=factor, lmax=None).describe()
        assert (small["lmax"], small["internal_grid"]) == (modes, internal)
    with pytest.raises(ValueError, match="lmax"):
        _model(SFNO, scale_factor=2, lmax=22)


def test_skip_connection_into_the_gauss_grid_is_resampled():
    """The first block maps the data grid (south to north, cell centres) to the internal Gauss grid
    (north to south): with its filters and MLP zeroed, the block must return the input field
    evaluated at the Gauss latitudes, not the data rows relabelled (which would even flip the
    hemispheres)."""
    model = _model(SFNO)
    block = model.module.core.sfno.blocks[0]
    with torch.no_grad():
        block.global_conv.weight.zero_()
        block.mlp.fwd[-1].weight.zero_()
    lat = torch.deg2rad(torch.tensor(WB_LAT))
    x = (torch.sin(lat) + 0.5 * torch.cos(lat) ** 2)[:, None].expand(32, 64)  # degrees 1 and 2
    out = block(x.expand(1, 8, 32, 64).contiguous())
    colat, _ = precompute_latitudes(32, grid="legendre-gauss")
    gauss_lat = (math.pi / 2 - colat).float()
    expected = (torch.sin(gauss_lat) + 0.5 * torch.cos(gauss_lat) ** 2)[:, None].expand(32, 64)
    assert torch.allclose(out[0, 0], expected, atol=1e-5)


def test_untrained_residual_model_is_persistence_and_uses_only_its_input_window():
    history = torch.randn(2, 12, 4, 32, 64)
    model = _model(SFNO, input_steps=3)
    out = model.predict(history)
    assert torch.equal(out, history[:, -1:].expand(-1, 4, -1, -1, -1))
    # perturb the weights: only the last 3 states may matter
    with torch.no_grad():
        for p in model.module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    changed = history.clone()
    changed[:, :9] = torch.randn_like(changed[:, :9])
    assert torch.allclose(model.predict(changed), model.predict(history))
    changed[:, 9] += 1.0
    assert not torch.allclose(model.predict(changed), model.predict(history))


def _randomise(model):
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.module.parameters():
            p.copy_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("cls, shift, hp", [(SFNO, 1, {}), (SFNO, 13, {}), (SFNOAutoregressive, 5, {}),
                                         (SFNO, 2, {"scale_factor": 2, "lmax": 16})])
def test_longitude_shift_equivariance(cls, shift, hp):
    """Rolling the input in longitude rolls the forecast the same way: exactly (up to float error)
    for shifts by whole cells of the internal grid (``scale_factor`` data cells; every shift at the
    default factor 1), since the spectral filters depend only on the degree l and everything else
    acts pointwise."""
    model = _model(cls, **hp)
    _randomise(model)  # also the zero-initialised output layer and the latitude embedding
    history = torch.randn(2, 12, 4, 32, 64)
    out = model.predict(history)
    shifted = model.predict(history.roll(shift, dims=-1))
    scale = out.abs().max()
    assert (shifted - out.roll(shift, dims=-1)).abs().max() < 1e-4 * scale
    # not trivially equivariant: the forecast depends on the input's structure, not only on its mean
    assert (out - history[:, -1:]).abs().max() > 1e-2 * scale
    # a latitude flip is not a symmetry of the model (latitude embedding): the check can fail
    flipped = model.predict(history.flip(-2)).flip(-2)
    assert (flipped - out).abs().max() > 1e-3 * scale


def test_half_internal_cell_shift_is_equivariant_only_up_to_aliasing():
    """With scale_factor 2 the MLPs of the inner blocks act on a grid of 32 longitudes, so a shift by
    one data cell (half an internal cell) samples their nonlinearity elsewhere: approximate only."""
    model = _model(SFNO, scale_factor=2, lmax=16)
    _randomise(model)
    history = torch.randn(2, 12, 4, 32, 64)
    out = model.predict(history)
    error = (model.predict(history.roll(1, dims=-1)) - out.roll(1, dims=-1)).abs().max() / out.abs().max()
    assert 1e-4 < error < 0.5


def test_autoregressive_rollout_equations():
    model = _model(SFNOAutoregressive)
    _randomise(model)
    net = model.module.net
    assert model.module.input_steps == SFNOAutoregressive.hyperparameters["input_steps"] == 12
    history = torch.randn(2, 12, 4, 32, 64)
    with torch.no_grad():
        out = model.predict(history)
        x1 = net(history)
        x2 = net(torch.cat([history[:, 1:], x1], dim=1))
        x3 = net(torch.cat([history[:, 2:], x1, x2], dim=1))
    assert out.shape == (2, 4, 4, 32, 64)
    assert torch.allclose(out[:, 0:1], x1, atol=1e-6)
    assert torch.allclose(out[:, 1:2], x2, atol=1e-6)
    assert torch.allclose(out[:, 2:3], x3, atol=1e-6)
    # a shorter window: the rollout keeps only the last input_steps states
    short = _model(SFNOAutoregressive, input_steps=2)
    _randomise(short)
    with torch.no_grad():
        y1 = short.module.net(history[:, -2:])
        y2 = short.module.net(torch.cat([history[:, -1:], y1], dim=1))
        assert torch.allclose(short.predict(history)[:, :2], torch.cat([y1, y2], dim=1), atol=1e-6)
    # one-step training (rollout_steps=1) ignores the targets beyond 6 h; validation scores all 4
    one = _model(SFNOAutoregressive, rollout_steps=1)
    _randomise(one)
    target = torch.randn(2, 4, 4, 32, 64)
    other = target.clone()
    other[:, 1:] += 5.0
    with torch.no_grad():
        assert torch.equal(one.loss(history, target), one.loss(history, other))
        assert one.val_loss(history, target) < one.val_loss(history, other)
        two = _model(SFNOAutoregressive, rollout_steps=2)
        _randomise(two)
        assert two.loss(history, target) < two.loss(history, other)


def test_invalid_configurations_are_rejected():
    with pytest.raises(ValueError, match="pos_embed"):
        _model(SFNO, pos_embed="spectral")
    with pytest.raises(ValueError, match="input_steps"):
        _model(SFNO, input_steps=13)
    with pytest.raises(ValueError, match="rollout_steps"):
        _model(SFNOAutoregressive, rollout_steps=5)


def test_fit_keeps_the_untrained_persistence_state_when_training_does_not_help():
    from wxbench.testing import smoke_budget, synthetic_split

    train, val = synthetic_split(seed=1), synthetic_split(n_times=24, seed=2, name="val")
    history, _ = val.windows(torch.arange(2))
    bad = _model(SFNO, learning_rate=3.0)  # steps far too large: every check is worse than the start
    report = bad.fit(train, val, smoke_budget())
    assert report.extra["kept_initial_weights"] and "untrained" in bad.weights
    assert report.best_val_loss == report.extra["initial_val_loss"] < min(report.val_history)
    assert torch.equal(bad.predict(history), history[:, -1:].expand(-1, 4, -1, -1, -1))
    good = _model(SFNO)
    report = good.fit(train, val, smoke_budget())
    assert "kept_initial_weights" not in report.extra and good.weights == "trained from scratch"
    assert report.best_val_loss < report.extra["initial_val_loss"]


def test_torch_threads_apply_during_fit_and_are_restored():
    from wxbench.testing import smoke_budget, synthetic_split

    seen = []
    model = _model(SFNO, torch_threads=1)
    loss = model.loss
    model.loss = lambda h, t: (seen.append(torch.get_num_threads()), loss(h, t))[1]
    torch.set_num_threads(2)
    try:
        model.fit(synthetic_split(seed=1), synthetic_split(n_times=24, seed=2, name="val"), smoke_budget())
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


# -- conformance and learning -------------------------------------------------------------------

@pytest.mark.parametrize("cls", [SFNO, SFNOAutoregressive])
def test_conformance(cls):
    check_forecaster(cls)


@pytest.mark.parametrize("cls", [SFNO, SFNOAutoregressive])
def test_short_training_reduces_validation_error(cls):
    check_learns(cls)


def test_plugin_registers_both_models():
    from wxbench.plugins import Registry

    registry = Registry()
    registry.load_entry_points()
    for name, cls in (("sfno", SFNO), ("sfno_ar", SFNOAutoregressive)):
        reg = registry.forecaster(name)
        assert reg.cls is cls and reg.plugin == "spherical" and reg.distribution == "wxbench-spherical"
