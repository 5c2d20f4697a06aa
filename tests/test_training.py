"""The shared training loop's learning-rate schedules (wxbench.training.train_module)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wxbench import Budget
from wxbench.testing import synthetic_split
from wxbench.training import train_module

LEARNING_RATE = 1e-2
STEPS = 40  # warm-up: the first 5 %, i.e. 2 steps


def _learning_rates(monkeypatch, schedule: str) -> list[float]:
    """The learning rate of every optimiser step of a 40-step (step-bound) train_module run."""
    recorded: list[float] = []

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            recorded.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    split = synthetic_split("zscore", n_times=48)
    module = nn.Linear(1, 1)

    def loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((module(history.mean().reshape(1, 1)) - target.mean()) ** 2).sum()

    budget = Budget(max_epochs=1000, max_steps=STEPS, max_seconds=600, batch_size=4, eval_batch_size=8,
                    ensemble_size=1, patience=1000, val_windows=4)
    report = train_module(module, loss, split, split, budget, device="cpu", seed=0, learning_rate=LEARNING_RATE,
                          weight_decay=0.0, schedule=schedule)
    assert report.steps == STEPS and report.stopped_because == "budget: steps"
    return recorded


def test_cosine_schedule_warms_up_then_decays_to_near_zero(monkeypatch):
    rates = _learning_rates(monkeypatch, "cosine")
    assert len(rates) == STEPS
    assert rates[0] < 0.05 * LEARNING_RATE and rates[1] < LEARNING_RATE  # warm-up
    assert max(rates) == pytest.approx(LEARNING_RATE, rel=1e-2)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))  # decays monotonically after the warm-up
    assert rates[-1] < 0.01 * LEARNING_RATE


def test_constant_schedule_keeps_the_learning_rate_after_warmup(monkeypatch):
    rates = _learning_rates(monkeypatch, "constant")
    assert len(rates) == STEPS
    assert rates[0] < 0.05 * LEARNING_RATE  # the same warm-up
    assert rates[2:] == [LEARNING_RATE] * (STEPS - 2)


def test_unknown_schedule_is_a_clear_error():
    split = synthetic_split("zscore", n_times=48)
    module = nn.Linear(1, 1)
    budget = Budget(max_epochs=1, max_steps=1, max_seconds=60, batch_size=4, eval_batch_size=8, ensemble_size=1)
    with pytest.raises(ValueError, match="'linear'.*cosine, constant"):
        train_module(module, lambda h, t: module.weight.sum(), split, split, budget, device="cpu", seed=0,
                     learning_rate=1e-3, weight_decay=0.0, schedule="linear")
