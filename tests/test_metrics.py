"""Tests for wxbench.metrics against independent numpy references, properscoring and scores."""

from __future__ import annotations

import math

import numpy as np
import properscoring
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scores.probability import crps_for_ensemble

from wxbench import metrics
from wxbench.metrics import ScoreAccumulator, fair_crps, latitude_weights, standard_crps

RTOL = 1e-6
WB_LAT = np.linspace(-87.1875, 87.1875, 32)  # WeatherBench 5.625 deg cell centres
HYP = settings(deadline=None, max_examples=30)


# ---------------------------------------------------------------------------------------------
# Independent numpy references (xarray-free transcriptions of the published formulas)
# ---------------------------------------------------------------------------------------------


def ref_weights(lat):
    w = np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64)))
    return w / w.mean()


def ref_deterministic(fc, obs, lat, clim=None):
    """WeatherBench scores per (lead, channel) of fc/obs (T, L, C, H, W).

    RMSE/MAE/bias: mean over (time, lat, lon) of the lat-weighted error, root after the mean.
    ACC: per time, sum(w fa a) / sqrt(sum(w fa^2) sum(w a^2)), then the mean over time.
    """
    w = ref_weights(lat)[:, None]
    T, L, C = fc.shape[:3]
    out = {k: np.zeros((L, C)) for k in ("rmse", "mae", "bias", "acc")}
    for li in range(L):
        for ci in range(C):
            error = fc[:, li, ci].astype(np.float64) - obs[:, li, ci].astype(np.float64)
            out["rmse"][li, ci] = np.sqrt((error**2 * w).mean())
            out["mae"][li, ci] = (np.abs(error) * w).mean()
            out["bias"][li, ci] = (error * w).mean()
            if clim is not None:
                c = clim[li, ci] if clim.ndim == 4 else clim[ci]
                accs = []
                for t in range(T):
                    fa = fc[t, li, ci] - c
                    a = obs[t, li, ci] - c
                    accs.append(np.sum(w * fa * a) / np.sqrt(np.sum(w * fa**2) * np.sum(w * a**2)))
                out["acc"][li, ci] = np.mean(accs)
    return out


def ref_crps_pairwise(ens, obs, fair):
    """O(M^2) definition; ens (..., M), obs (...)."""
    m = ens.shape[-1]
    skill = np.abs(ens - obs[..., None]).mean(-1)
    pair = np.abs(ens[..., :, None] - ens[..., None, :]).sum((-2, -1))
    k = 2 * m * (m - 1) if fair else 2 * m * m
    return skill - pair / k


def gaussian_crps(mu, sigma, y):
    """Analytic CRPS of N(mu, sigma^2) at y (Gneiting et al. 2005)."""
    z = (y - mu) / sigma
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def assert_close_t(got, want, rtol=1e-7, atol=1e-12):
    """Tensor closeness via numpy (torch.testing's first call costs seconds of lazy imports)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got.detach().cpu().numpy(), want.detach().cpu().numpy(), rtol, atol)


def as_table(result, metric, channels):
    """compute() output -> (L, C) array."""
    return np.array([result[metric][ch] for ch in channels]).T


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# Latitude weights
# ---------------------------------------------------------------------------------------------


def test_latitude_weights_match_formula():
    w = latitude_weights(torch.tensor(WB_LAT))
    assert w.dtype == torch.float64 and w.shape == (32,)
    np.testing.assert_allclose(w.numpy(), ref_weights(WB_LAT), rtol=1e-15)
    assert abs(float(w.mean()) - 1.0) < 1e-14
    # numpy and list inputs, any order
    np.testing.assert_allclose(latitude_weights(WB_LAT[::-1]).numpy(), ref_weights(WB_LAT)[::-1])
    np.testing.assert_allclose(latitude_weights(list(WB_LAT)).numpy(), ref_weights(WB_LAT))


@pytest.mark.parametrize("bad", [np.zeros((2, 2)), np.array([]), np.array([0.0, 95.0])])
def test_latitude_weights_reject_bad_input(bad):
    with pytest.raises(ValueError, match="latitude"):
        latitude_weights(bad)


# ---------------------------------------------------------------------------------------------
# Per-point CRPS
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 7, 20])
def test_fair_crps_matches_pairwise_definition(rng, m):
    ens = rng.normal(size=(3, m, 4, 5)) * 2.0 + 0.3
    obs = rng.normal(size=(3, 4, 5))
    got = fair_crps(torch.from_numpy(ens), torch.from_numpy(obs), member_dim=1)
    want = ref_crps_pairwise(np.moveaxis(ens, 1, -1), obs, fair=True)
    assert got.shape == obs.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("m", [1, 2, 5, 50])
def test_standard_crps_matches_properscoring(rng, m):
    ens = rng.normal(size=(2, m, 3, 4, 6))
    obs = rng.normal(size=(2, 3, 4, 6))
    got = standard_crps(torch.from_numpy(ens), torch.from_numpy(obs), member_dim=1)
    want = properscoring.crps_ensemble(obs, ens, axis=1)
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(
        got.numpy(), ref_crps_pairwise(np.moveaxis(ens, 1, -1), obs, fair=False), rtol=RTOL
    )


def test_fair_crps_matches_scores_package(rng):
    ens = rng.normal(size=(2, 9, 3, 4, 5))
    obs = rng.normal(size=(2, 3, 4, 5))
    fx = xr.DataArray(ens, dims=("b", "member", "l", "lat", "lon"))
    ox = xr.DataArray(obs, dims=("b", "l", "lat", "lon"))
    want = crps_for_ensemble(fx, ox, "member", method="fair", preserve_dims="all")
    want = want.transpose("b", "l", "lat", "lon").values
    got = fair_crps(torch.from_numpy(ens), torch.from_numpy(obs))
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=1e-12)
    want_ecdf = crps_for_ensemble(fx, ox, "member", method="ecdf", preserve_dims="all")
    np.testing.assert_allclose(
        standard_crps(torch.from_numpy(ens), torch.from_numpy(obs)).numpy(),
        want_ecdf.transpose("b", "l", "lat", "lon").values,
        rtol=RTOL,
    )


@pytest.mark.parametrize("member_dim", [0, 1, 2, -1, -3])
def test_crps_member_dim(rng, member_dim):
    base = rng.normal(size=(4, 6, 5))  # members on axis 1
    obs = rng.normal(size=(4, 5))  # the ensemble's shape without the member axis, any layout
    want_f = ref_crps_pairwise(np.moveaxis(base, 1, -1), obs, fair=True)
    want_s = ref_crps_pairwise(np.moveaxis(base, 1, -1), obs, fair=False)
    ens = torch.from_numpy(np.moveaxis(base, 1, member_dim).copy())
    np.testing.assert_allclose(
        fair_crps(ens, torch.from_numpy(obs), member_dim).numpy(), want_f, rtol=RTOL
    )
    np.testing.assert_allclose(
        standard_crps(ens, torch.from_numpy(obs), member_dim).numpy(), want_s, rtol=RTOL
    )


def test_fair_crps_single_member_raises():
    ens = torch.randn(2, 1, 3)
    with pytest.raises(ValueError, match="undefined for a single ensemble member"):
        fair_crps(ens, torch.randn(2, 3))


def test_standard_crps_single_member_is_absolute_error():
    ens = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    obs = torch.randn(2, 3, 4, dtype=torch.float64)
    assert_close_t(standard_crps(ens, obs), (ens[:, 0] - obs).abs())


def test_crps_shape_errors():
    with pytest.raises(ValueError, match="target"):
        fair_crps(torch.randn(2, 5, 3), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="member_dim"):
        standard_crps(torch.randn(2, 5, 3), torch.randn(2, 3), member_dim=3)
    with pytest.raises(ValueError, match="does not match"):
        fair_crps(torch.randn(2, 5, 3), torch.randn(4, 3))


def test_crps_float32_with_large_offset_stays_accurate(rng):
    """Geopotential-like values (~5e4) with spread ~100: float32 must not lose the spread term."""
    ens = 5.4e4 + 100.0 * rng.normal(size=(8, 20, 300))
    obs = 5.4e4 + 100.0 * rng.normal(size=(8, 300))
    ens32, obs32 = ens.astype(np.float32), obs.astype(np.float32)
    ens64, obs64 = ens32.astype(np.float64), obs32.astype(np.float64)
    want = ref_crps_pairwise(np.moveaxis(ens64, 1, -1), obs64, fair=True)
    got = fair_crps(torch.from_numpy(ens32), torch.from_numpy(obs32))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-3)


def test_crps_autograd_path_matches_and_has_gradient(rng):
    ens = torch.from_numpy(rng.normal(size=(3, 6, 4))).requires_grad_(True)
    obs = torch.from_numpy(rng.normal(size=(3, 4)))
    loss = fair_crps(ens, obs)
    with torch.no_grad():
        fast = fair_crps(ens, obs)  # CPU fast path (numpy sort)
    assert_close_t(loss.detach(), fast, rtol=1e-12, atol=1e-12)
    loss.sum().backward()
    assert ens.grad is not None and torch.isfinite(ens.grad).all()


def test_crps_inputs_are_not_modified(rng):
    ens = torch.from_numpy(rng.normal(size=(3, 6, 4)))
    obs = torch.from_numpy(rng.normal(size=(3, 4)))
    ens0, obs0 = ens.clone(), obs.clone()
    fair_crps(ens, obs)
    standard_crps(ens.movedim(1, -1), obs, member_dim=-1)
    assert torch.equal(ens, ens0) and torch.equal(obs, obs0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crps_cuda_matches_cpu(rng):
    ens = torch.from_numpy(rng.normal(size=(2, 10, 3, 8, 16)))
    obs = torch.from_numpy(rng.normal(size=(2, 3, 8, 16)))
    got = fair_crps(ens.cuda(), obs.cuda())
    assert got.device.type == "cuda"
    assert_close_t(got.cpu(), fair_crps(ens, obs))


@HYP
@given(
    data=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
        elements=st.floats(-1e3, 1e3, allow_nan=False),
    ),
    obs_shift=st.floats(-50, 50),
    m=st.integers(2, 8),
)
def test_identical_members_give_absolute_error(data, obs_shift, m):
    """An ensemble of identical members has no spread: fair = standard = |x - y|."""
    x = torch.from_numpy(data)
    y = x + obs_shift
    ens = x.unsqueeze(0).expand(m, *x.shape)
    mae = (x - y).abs()
    assert_close_t(fair_crps(ens, y, member_dim=0), mae, rtol=1e-12, atol=1e-9)
    assert_close_t(standard_crps(ens, y, member_dim=0), mae, rtol=1e-12, atol=1e-9)


@HYP
@given(
    ens=hnp.arrays(
        np.float64,
        st.tuples(st.integers(2, 10), st.integers(1, 6)),
        elements=st.floats(-1e4, 1e4, allow_nan=False),
    ),
    obs=st.floats(-1e4, 1e4),
)
def test_crps_properties_hypothesis(ens, obs):
    """fair <= standard, both >= 0 up to rounding, match the O(M^2) definition."""
    e = torch.from_numpy(ens)
    y = torch.full((ens.shape[1],), obs, dtype=torch.float64)
    f, s = fair_crps(e, y, member_dim=0), standard_crps(e, y, member_dim=0)
    scale = 1e-9 * (1.0 + np.abs(ens).max() + abs(obs))
    assert (s >= -scale).all() and (f <= s + scale).all()
    want_f = ref_crps_pairwise(ens.T, y.numpy(), fair=True)
    want_s = ref_crps_pairwise(ens.T, y.numpy(), fair=False)
    np.testing.assert_allclose(f.numpy(), want_f, rtol=RTOL, atol=scale)
    np.testing.assert_allclose(s.numpy(), want_s, rtol=RTOL, atol=scale)


@pytest.mark.parametrize("m", [2, 4])
def test_fair_crps_unbiased_standard_biased_for_gaussian(m):
    """E[fair CRPS of M draws from N(0,1)] = CRPS(N(0,1), y); the standard estimator is biased
    high by E|X - X'| / (2M) = 1 / (M sqrt(pi))."""
    gen = torch.Generator().manual_seed(20240601)
    n_draws = 200_000
    for y in (-2.0, -0.3, 0.0, 1.1, 3.0):
        ens = torch.randn(m, n_draws, generator=gen, dtype=torch.float64)
        obs = torch.full((n_draws,), y, dtype=torch.float64)
        exact = gaussian_crps(0.0, 1.0, y)
        bias = 1.0 / (m * math.sqrt(math.pi))
        f = fair_crps(ens, obs, member_dim=0)
        s = standard_crps(ens, obs, member_dim=0)
        se_f = float(f.std()) / math.sqrt(n_draws)
        se_s = float(s.std()) / math.sqrt(n_draws)
        assert abs(float(f.mean()) - exact) < 4 * se_f, (y, float(f.mean()), exact)
        assert abs(float(s.mean()) - (exact + bias)) < 4 * se_s, (y, float(s.mean()), exact)
        assert float(s.mean()) - exact > 10 * se_s  # the standard estimator is clearly biased


# ---------------------------------------------------------------------------------------------
# ScoreAccumulator
# ---------------------------------------------------------------------------------------------

CHANNELS = ["z500", "t850", "t2m"]
LEADS = [6, 24]


def make_data(rng, b=7, e=None, h=8, w=16, dtype=np.float64):
    L, C = len(LEADS), len(CHANNELS)
    offsets = np.array([5.4e4, 270.0, 285.0])[None, None, :, None, None]
    scales = np.array([300.0, 3.0, 4.0])[None, None, :, None, None]
    obs = offsets + scales * rng.normal(size=(b, L, C, h, w))
    clim = offsets[0] + scales[0] * 0.5 * rng.normal(size=(L, C, h, w))
    if e is None:
        fc = obs + scales * (0.3 * rng.normal(size=obs.shape) + 0.1)
    else:
        fc = obs[:, None] + scales[:, None] * (0.4 * rng.normal(size=(b, e, L, C, h, w)) + 0.1)
    lat = np.linspace(-80, 80, h)
    return fc.astype(dtype), obs.astype(dtype), clim, lat


def run_acc(fc, obs, lat, clim=None, splits=None):
    acc = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS, climatology=clim)
    splits = splits or [fc.shape[0]]
    start = 0
    for n in splits:
        batch = slice(start, start + n)
        acc.update(torch.from_numpy(fc[batch]), torch.from_numpy(obs[batch]))
        start += n
    assert start == fc.shape[0]
    return acc


@pytest.mark.parametrize("clim_kind", ["per_lead", "shared"])
def test_deterministic_scores_match_weatherbench_reference(rng, clim_kind):
    fc, obs, clim, lat = make_data(rng)
    clim_in = clim if clim_kind == "per_lead" else clim[0]
    acc = run_acc(fc, obs, lat, clim=torch.from_numpy(clim_in))
    res = acc.compute()
    ref = ref_deterministic(fc, obs, lat, clim_in)
    assert acc.is_ensemble is False and acc.ensemble_size == 1 and acc.n_samples == 7
    assert set(res) == {"rmse", "mae", "bias", "acc", "crps"}
    for metric in ("rmse", "mae", "bias", "acc"):
        np.testing.assert_allclose(as_table(res, metric, CHANNELS), ref[metric], rtol=RTOL)
    # deterministic CRPS is the MAE
    assert res["crps"] == res["mae"]


def test_compute_output_structure(rng):
    fc, obs, _, lat = make_data(rng, b=2)
    res = run_acc(fc, obs, lat).compute()
    assert "acc" not in res  # no climatology
    for metric, per_channel in res.items():
        assert list(per_channel) == CHANNELS
        for values in per_channel.values():
            assert len(values) == len(LEADS)
            assert all(type(v) is float for v in values)


def test_ensemble_scores_match_references(rng):
    e = 6
    fc, obs, clim, lat = make_data(rng, b=5, e=e)
    acc = run_acc(fc, obs, lat, clim=clim)
    res = acc.compute()
    assert acc.is_ensemble is True and acc.ensemble_size == e
    assert set(res) == {
        "rmse", "mae", "bias", "acc", "crps", "crps_standard",
        "ensemble_mean_rmse", "ensemble_mean_rmse_debiased", "spread", "spread_skill",
        "spread_skill_corrected",
    }  # fmt: skip
    ens_mean = fc.mean(axis=1)
    ref = ref_deterministic(ens_mean, obs, lat, clim)
    for metric in ("rmse", "mae", "bias", "acc"):
        np.testing.assert_allclose(as_table(res, metric, CHANNELS), ref[metric], rtol=RTOL)
    assert res["ensemble_mean_rmse"] == res["rmse"]

    w = ref_weights(lat)[:, None]
    members_last = np.moveaxis(fc, 1, -1)  # (B, L, C, H, W, E)
    fair = ref_crps_pairwise(members_last, obs, fair=True)
    std = properscoring.crps_ensemble(obs, fc, axis=1)
    var = fc.var(axis=1, ddof=1)
    L, C = len(LEADS), len(CHANNELS)
    want = {k: np.zeros((L, C)) for k in ("crps", "crps_standard", "spread")}
    for li in range(L):
        for ci in range(C):
            want["crps"][li, ci] = (fair[:, li, ci] * w).mean()
            want["crps_standard"][li, ci] = (std[:, li, ci] * w).mean()
            want["spread"][li, ci] = np.sqrt((var[:, li, ci] * w).mean())
    for metric, table in want.items():
        np.testing.assert_allclose(as_table(res, metric, CHANNELS), table, rtol=RTOL)
    np.testing.assert_allclose(
        as_table(res, "spread_skill", CHANNELS), want["spread"] / ref["rmse"], rtol=RTOL
    )
    assert (as_table(res, "crps", CHANNELS) < as_table(res, "crps_standard", CHANNELS)).all()


@pytest.mark.parametrize("ensemble", [False, True])
def test_streaming_uneven_batches_equal_one_batch(rng, ensemble):
    fc, obs, clim, lat = make_data(rng, b=11, e=4 if ensemble else None)
    whole = run_acc(fc, obs, lat, clim=clim).compute()
    parts = run_acc(fc, obs, lat, clim=clim, splits=[4, 1, 3, 3]).compute()
    for metric in whole:
        for ch in CHANNELS:
            np.testing.assert_allclose(parts[metric][ch], whole[metric][ch], rtol=1e-12)


@pytest.mark.parametrize("ensemble", [False, True])
def test_cpu_chunking_does_not_change_scores(rng, monkeypatch, ensemble):
    # on CPU update() scores a batch in cache-sized chunks of samples; here 2 samples per chunk
    fc, obs, clim, lat = make_data(rng, b=9, e=3 if ensemble else None)
    whole = run_acc(fc, obs, lat, clim=clim)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 2 * fc[0].size)
    chunked = run_acc(fc, obs, lat, clim=clim)
    assert chunked.n_samples == whole.n_samples == 9
    whole, chunked = whole.compute(), chunked.compute()
    for metric in whole:
        for ch in CHANNELS:
            np.testing.assert_allclose(chunked[metric][ch], whole[metric][ch], rtol=1e-12)


def test_acc_of_near_climatology_forecasts_matches_reference(rng):
    # a forecast anomaly 1e-5 of the observed one: the summed-terms shortcut would cancel here
    _, obs, clim, lat = make_data(rng, b=3)
    fc = clim[None] + 1e-5 * (obs - clim[None]) + 1e-6 * rng.normal(size=obs.shape)
    res = run_acc(fc, obs, lat, clim=clim).compute()
    ref = ref_deterministic(fc, obs, lat, clim)
    np.testing.assert_allclose(as_table(res, "acc", CHANNELS), ref["acc"], rtol=1e-6)
    # exactly the climatology: a zero forecast anomaly has no correlation (NaN, as documented)
    res = run_acc(np.broadcast_to(clim, obs.shape).copy(), obs, lat, clim=clim).compute()
    assert np.isnan(as_table(res, "acc", CHANNELS)).all()


def test_half_precision_inputs_score_at_float32_or_better(rng):
    # the error of two bfloat16 fields is computed after promotion, not rounded to bfloat16
    fc, obs, clim, lat = make_data(rng, b=3)
    fc16, obs16 = torch.from_numpy(fc).to(torch.bfloat16), torch.from_numpy(obs).to(torch.bfloat16)
    acc = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS, climatology=clim)
    acc.update(fc16, obs16)
    ref = ref_deterministic(fc16.double().numpy(), obs16.double().numpy(), lat, clim)
    np.testing.assert_allclose(as_table(acc.compute(), "rmse", CHANNELS), ref["rmse"], rtol=1e-6)


def test_float32_inputs_accumulate_in_float64(rng):
    fc, obs, clim, lat = make_data(rng, b=4, e=3, dtype=np.float32)
    res = run_acc(fc, obs, lat, clim=clim).compute()
    ref = ref_deterministic(fc.astype(np.float64).mean(axis=1), obs.astype(np.float64), lat, clim)
    np.testing.assert_allclose(as_table(res, "rmse", CHANNELS), ref["rmse"], rtol=1e-6)
    np.testing.assert_allclose(as_table(res, "acc", CHANNELS), ref["acc"], rtol=1e-6)


def test_accumulator_errors(rng):
    fc, obs, clim, lat = make_data(rng, b=2)
    acc = ScoreAccumulator(lat, CHANNELS, LEADS)
    with pytest.raises(ValueError, match="no samples"):
        acc.compute()
    acc.update(torch.from_numpy(fc), torch.from_numpy(obs))
    ens = torch.from_numpy(np.stack([fc, fc], axis=1))
    with pytest.raises(ValueError, match="ensemble forecast after deterministic"):
        acc.update(ens, torch.from_numpy(obs))
    with pytest.raises(ValueError, match=r"\(B, L, C, H, W\)"):
        acc.update(torch.from_numpy(fc[0]), torch.from_numpy(obs[0]))
    with pytest.raises(ValueError, match="does not match"):
        acc.update(torch.from_numpy(fc[:, :1]), torch.from_numpy(obs))
    with pytest.raises(ValueError, match="longitudes"):
        acc.update(torch.from_numpy(fc[..., :4]), torch.from_numpy(obs[..., :4]))
    acc.reset()
    assert acc.is_ensemble is None and acc.n_samples == 0
    with pytest.raises(ValueError, match="at least 2 members"):
        acc.update(torch.from_numpy(fc[:, None]), torch.from_numpy(obs))
    acc.update(ens, torch.from_numpy(obs))
    with pytest.raises(ValueError, match="members"):
        acc.update(torch.from_numpy(np.stack([fc] * 3, axis=1)), torch.from_numpy(obs))
    with pytest.raises(ValueError, match="climatology"):
        ScoreAccumulator(lat, CHANNELS, LEADS, climatology=np.zeros((5, 3, 8, 16)))
    with pytest.raises(ValueError, match="duplicate"):
        ScoreAccumulator(lat, ["a", "a"], LEADS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accumulator_on_cuda_matches_cpu(rng):
    fc, obs, clim, lat = make_data(rng, b=3, e=4)
    cpu = run_acc(fc, obs, lat, clim=clim).compute()
    acc = ScoreAccumulator(lat, CHANNELS, LEADS, climatology=clim)
    acc.update(torch.from_numpy(fc).cuda(), torch.from_numpy(obs).cuda())
    gpu = acc.compute()
    for metric in cpu:
        for ch in CHANNELS:
            np.testing.assert_allclose(gpu[metric][ch], cpu[metric][ch], rtol=1e-10)


field_shapes = st.tuples(st.integers(1, 3), st.integers(2, 5), st.integers(2, 6))  # B, H, W


@HYP
@given(shape=field_shapes, seed=st.integers(0, 2**32 - 1), ensemble=st.booleans())
def test_perfect_forecast_scores(shape, seed, ensemble):
    b, h, w = shape
    gen = np.random.default_rng(seed)
    L, C = len(LEADS), len(CHANNELS)
    obs = gen.normal(size=(b, L, C, h, w)) * 10.0 + 100.0
    # climatology differs from the observation everywhere -> non-zero anomalies
    clim = obs.mean(axis=0) - 1.0 - gen.uniform(0.5, 2.0, size=(L, C, h, w))
    fc = np.stack([obs] * 3, axis=1) if ensemble else obs.copy()
    lat = np.sort(gen.uniform(-89, 89, size=h))
    res = run_acc(fc, obs, lat, clim=clim).compute()
    for metric in ("rmse", "mae", "bias", "crps"):
        np.testing.assert_allclose(as_table(res, metric, CHANNELS), 0.0, atol=1e-9)
    np.testing.assert_allclose(as_table(res, "acc", CHANNELS), 1.0, rtol=1e-12)
    if ensemble:
        np.testing.assert_allclose(as_table(res, "crps_standard", CHANNELS), 0.0, atol=1e-9)
        np.testing.assert_allclose(as_table(res, "spread", CHANNELS), 0.0, atol=1e-9)


@HYP
@given(shape=field_shapes, seed=st.integers(0, 2**32 - 1), m=st.integers(2, 5))
def test_identical_member_ensemble_scores_like_deterministic(shape, seed, m):
    b, h, w = shape
    gen = np.random.default_rng(seed)
    L, C = len(LEADS), len(CHANNELS)
    obs = gen.normal(size=(b, L, C, h, w))
    fc = obs + gen.normal(size=obs.shape)
    lat = np.linspace(-60, 60, h)
    det = run_acc(fc, obs, lat).compute()
    ens = run_acc(np.stack([fc] * m, axis=1), obs, lat).compute()
    for metric in ("rmse", "mae", "bias"):
        np.testing.assert_allclose(
            as_table(ens, metric, CHANNELS), as_table(det, metric, CHANNELS), rtol=1e-12
        )
    # no spread: fair and standard CRPS both reduce to the MAE
    np.testing.assert_allclose(
        as_table(ens, "crps", CHANNELS), as_table(det, "mae", CHANNELS), rtol=1e-12
    )
    np.testing.assert_allclose(
        as_table(ens, "crps_standard", CHANNELS), as_table(det, "mae", CHANNELS), rtol=1e-12
    )


def test_crps_under_inference_mode_and_vmap(rng):
    ens = torch.from_numpy(rng.normal(size=(3, 5, 4)))
    obs = torch.from_numpy(rng.normal(size=(3, 4)))
    want = fair_crps(ens, obs)
    with torch.inference_mode():
        assert_close_t(fair_crps(ens, obs), want)
    batched = torch.func.vmap(lambda e, o: fair_crps(e, o, member_dim=0))
    assert_close_t(batched(ens, obs), want)


# -- a climatology per sample (the runner passes each batch's, at its windows' valid times) -------------------


def ref_acc_per_sample(fc, obs, lat, clim):
    """ACC per (lead, channel) with a climatology per sample, clim (T, L, C, H, W)."""
    w = ref_weights(lat)[:, None]
    fa, a = fc.astype(np.float64) - clim, obs.astype(np.float64) - clim
    per_sample = (w * fa * a).sum((-2, -1)) / np.sqrt((w * fa**2).sum((-2, -1)) * (w * a**2).sum((-2, -1)))
    return per_sample.mean(0)


@pytest.mark.parametrize("ensemble", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_per_sample_climatology_matches_reference(rng, ensemble, dtype, monkeypatch):
    fc, obs, _, lat = make_data(rng, b=9, e=3 if ensemble else None, dtype=dtype)
    offsets = np.array([5.4e4, 270.0, 285.0])[None, None, :, None, None]
    clim = (offsets + np.array([300.0, 3.0, 4.0])[None, None, :, None, None]
            * 0.5 * rng.normal(size=obs.shape)).astype(dtype)  # a different climatology for every sample
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 2 * fc[0].size)  # chunks of 2 samples slice it too
    acc = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS)
    for batch in (slice(0, 4), slice(4, 9)):
        acc.update(torch.from_numpy(fc[batch]), torch.from_numpy(obs[batch]),
                   climatology=torch.from_numpy(clim[batch]))
    mean_fc = fc.mean(axis=1) if ensemble else fc
    np.testing.assert_allclose(as_table(acc.compute(), "acc", CHANNELS),
                               ref_acc_per_sample(mean_fc, obs, lat, clim.astype(np.float64)), rtol=RTOL)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_broadcast_climatology_per_batch_scores_as_the_fixed_one_bit_for_bit(rng, ensemble):
    """The runner's time-invariant case: the float32 mean expanded over (B, L) gives exactly the numbers of the
    fixed (C, H, W) climatology, near-climatology forecasts included."""
    fc, obs, clim, lat = make_data(rng, b=6, e=3 if ensemble else None, dtype=np.float32)
    mean = torch.from_numpy(clim[0]).float()  # (C, H, W)
    fc[0] = mean.numpy() + 1e-4 * (fc[0] - mean.numpy())  # one sample near the climatology (direct sums)
    fixed = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS, climatology=mean)
    per_batch = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS)
    for batch in (slice(0, 4), slice(4, 6)):
        f, o = torch.from_numpy(fc[batch]), torch.from_numpy(obs[batch])
        fixed.update(f, o)
        per_batch.update(f, o, climatology=mean.expand(len(o), len(LEADS), *mean.shape))
    assert fixed.compute() == per_batch.compute()


def test_per_sample_climatology_errors(rng):
    fc, obs, clim, lat = make_data(rng, b=3)
    f, o = torch.from_numpy(fc), torch.from_numpy(obs)
    per_sample = torch.from_numpy(np.broadcast_to(clim, obs.shape).copy())
    acc = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS, climatology=torch.from_numpy(clim))
    with pytest.raises(ValueError, match="a climatology per batch and one fixed at construction"):
        acc.update(f, o, climatology=per_sample)
    acc = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS)
    with pytest.raises(ValueError, match=r"climatology must be \(B, L, C, H, W\) = \(3, 2, 3, 8, 16\)"):
        acc.update(f, o, climatology=per_sample[:, :, :2])
    acc.update(f, o, climatology=per_sample)
    with pytest.raises(ValueError, match="earlier batches came with a climatology, this one without"):
        acc.update(f, o)
    acc = ScoreAccumulator(torch.tensor(lat), CHANNELS, LEADS)
    acc.update(f, o)
    with pytest.raises(ValueError, match="this batch comes with a climatology, earlier ones without"):
        acc.update(f, o, climatology=per_sample)
    assert "acc" not in acc.compute()
