"""Finite-ensemble scores: raw and corrected spread/skill, raw and debiased ensemble-mean RMSE.

References: Fortin et al. (2014) for the spread/skill correction; WeatherBench 2's
``DebiasedEnsembleMeanMSE`` (metrics module) for the debiased ensemble-mean MSE, transcribed here
with xarray independently of wxbench.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

from wxbench.metric_info import METRICS
from wxbench.metrics import ScoreAccumulator

WB_LAT = np.linspace(-87.1875, 87.1875, 32)  # WeatherBench 5.625 deg cell centres
WB_LON = np.arange(64) * 5.625


def reliable_ensemble(rng, members: int, samples: int, h: int = 8, w: int = 16):
    """Members and truth drawn from the same distribution at every point: a calibrated ensemble."""
    centre = 300.0 + 10.0 * rng.normal(size=(samples, 1, 1, h, w))
    sigma = 1.0 + rng.uniform(size=(1, 1, 1, h, w))  # spread varies in space, the ratio does not
    members_ = centre[:, None] + sigma[:, None] * rng.normal(size=(samples, members, 1, 1, h, w))
    truth = centre + sigma * rng.normal(size=(samples, 1, 1, h, w))
    return torch.from_numpy(members_), torch.from_numpy(truth)


def scores(forecast, truth, lat):
    acc = ScoreAccumulator(torch.as_tensor(lat), ["t850"], [6])
    acc.update(forecast, truth)
    return {k: v["t850"][0] for k, v in acc.compute().items()}


@pytest.mark.parametrize("members", [3, 8])
def test_reliable_ensemble_has_corrected_spread_skill_one(members):
    rng = np.random.default_rng(members)
    forecast, truth = reliable_ensemble(rng, members, samples=400)
    res = scores(forecast, truth, np.linspace(-80, 80, 8))
    # 400 x 128 points: the ratios are known to well under 1 %
    assert res["spread_skill_corrected"] == pytest.approx(1.0, abs=0.015)
    assert res["spread_skill"] == pytest.approx(math.sqrt(members / (members + 1)), abs=0.015)
    assert res["spread_skill_corrected"] == pytest.approx(
        res["spread_skill"] * math.sqrt((members + 1) / members), rel=1e-12)
    # the debiased ensemble-mean RMSE estimates the infinite-ensemble error: sigma, not
    # sigma * sqrt(1 + 1/M); so it equals the spread of a calibrated ensemble
    assert res["ensemble_mean_rmse_debiased"] == pytest.approx(res["spread"], rel=0.015)
    assert res["ensemble_mean_rmse"] == pytest.approx(
        res["spread"] * math.sqrt((members + 1) / members), rel=0.015)


def wb2_debiased_ensemble_mean_mse(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """WB2's DebiasedEnsembleMeanMSE, written from its definition: per time, the area-weighted
    mean over the grid of ``(mean_n X - Y)^2 - var_n(X, ddof=1) / n``, then the time mean; area
    weights from the latitude cell bounds (``sin(upper) - sin(lower)``), normalised to mean 1."""
    n = forecast.sizes["number"]
    pointwise = (truth - forecast.mean("number")) ** 2 - forecast.var("number", ddof=1) / n
    lat = np.deg2rad(forecast["latitude"].values)
    bounds = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    area = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    weights = xr.DataArray(area / area.mean(), dims="latitude", coords={"latitude": forecast["latitude"]})
    return pointwise.weighted(weights).mean(["latitude", "longitude"]).mean("time")


def test_debiased_ensemble_mean_mse_matches_wb2_transcription():
    rng = np.random.default_rng(0)
    b, m = 6, 5
    truth = 5.4e4 + 300 * rng.normal(size=(b, 2, 1, 32, 64))
    members = truth[:, None] + 200 * rng.normal(size=(b, m, 2, 1, 32, 64)) + 50
    res = ScoreAccumulator(torch.tensor(WB_LAT), ["z500"], [6, 12])
    res.update(torch.from_numpy(members), torch.from_numpy(truth))
    got = np.array(res.compute()["ensemble_mean_rmse_debiased"]["z500"]) ** 2

    coords = {"time": np.arange(b), "prediction_timedelta": [6, 12], "latitude": WB_LAT, "longitude": WB_LON}
    fc = xr.DataArray(members[:, :, :, 0], dims=("time", "number", "prediction_timedelta", "latitude",
                                                 "longitude"), coords=coords)
    ob = xr.DataArray(truth[:, :, 0], dims=("time", "prediction_timedelta", "latitude", "longitude"),
                      coords=coords)
    want = wb2_debiased_ensemble_mean_mse(fc, ob).values
    np.testing.assert_allclose(got, want, rtol=1e-6)
    raw = np.array(res.compute()["ensemble_mean_rmse"]["z500"]) ** 2
    assert (got < raw).all()  # the raw MSE carries the finite-ensemble variance on top


def test_identical_members_have_equal_raw_and_debiased_rmse():
    rng = np.random.default_rng(1)
    truth = torch.from_numpy(rng.normal(size=(4, 1, 1, 8, 16)))
    forecast = (truth + 0.3).unsqueeze(1).expand(4, 3, 1, 1, 8, 16).contiguous()
    res = scores(forecast, truth, np.linspace(-80, 80, 8))
    assert res["ensemble_mean_rmse_debiased"] == pytest.approx(res["ensemble_mean_rmse"], rel=1e-12)
    assert res["spread"] == 0.0 and res["spread_skill_corrected"] == 0.0


def test_negative_debiased_estimate_is_nan_not_zero():
    """An ensemble mean equal to the truth: the debiased MSE is -var/M < 0, which has no root."""
    rng = np.random.default_rng(2)
    members = torch.from_numpy(rng.normal(size=(3, 4, 1, 1, 8, 16)))
    truth = members.mean(dim=1)
    res = scores(members, truth, np.linspace(-80, 80, 8))
    assert math.isnan(res["ensemble_mean_rmse_debiased"])


def test_labels_say_which_spread_skill():
    assert "raw" in METRICS["spread_skill"].label
    assert "M+1" in METRICS["spread_skill_corrected"].label
    assert METRICS["spread_skill_corrected"].better == "one"
    assert "debiased" in METRICS["ensemble_mean_rmse_debiased"].label
