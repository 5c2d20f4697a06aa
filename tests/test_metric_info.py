"""Every score the accumulator returns has a label and a direction, and directions rank correctly."""

from __future__ import annotations

import pytest
import torch

from wxbench.metric_info import METRICS
from wxbench.metrics import ScoreAccumulator


def _scores(ensemble: bool) -> dict:
    lat = torch.linspace(-80, 80, 8)
    acc = ScoreAccumulator(lat, ["z500"], [6, 12], climatology=torch.zeros(1, 8, 16))
    target = torch.randn(3, 2, 1, 8, 16, generator=torch.Generator().manual_seed(0))
    forecast = target[:, None] + torch.randn(3, 4, 2, 1, 8, 16) if ensemble else target + 0.5
    acc.update(forecast, target)
    return acc.compute()


@pytest.mark.parametrize("ensemble", [False, True])
def test_every_metric_has_an_entry(ensemble):
    missing = set(_scores(ensemble)) - set(METRICS)
    assert not missing, f"metrics without a METRICS entry (label, direction): {sorted(missing)}"


def test_rank_keys_put_the_better_value_first():
    assert METRICS["rmse"].rank_key(1.0) < METRICS["rmse"].rank_key(2.0)
    assert METRICS["acc"].rank_key(0.9) < METRICS["acc"].rank_key(0.5)
    assert METRICS["bias"].rank_key(-0.1) < METRICS["bias"].rank_key(0.3)
    assert METRICS["spread_skill"].rank_key(1.1) < METRICS["spread_skill"].rank_key(0.7)
    with pytest.raises(ValueError, match="spread has no better direction"):
        METRICS["spread"].rank_key(1.0)


def test_arrows():
    assert METRICS["rmse"].arrow == "↓" and METRICS["acc"].arrow == "↑" and METRICS["spread_skill"].arrow == "→ 1"
