"""Benchmarks: every registered forecaster's forward pass and training step.

Parametrised over the plugin registry, so a newly installed plugin's models are benchmarked
without new code; a plugin that fails to load shows up as a skipped entry with its error.

All models use the ``smoke`` profile's hyperparameters (tiny networks) and batch sizes, and each
benchmark takes about a second of timed rounds (at least 3; ``benchmark_adaptive``), so that the
group costs minutes rather than hours; the slowest models (diffusion models, whose "training step"
is a whole fit) take most of it. Select models with ``-k``. These numbers track regressions of one
model between runs on one machine; they are not the leaderboard's numbers (the leaderboard runs
the ``cpu`` profile's, larger, networks), but they are measured the same way:

* ``model-forward``: ``model.predict`` under ``no_grad`` (torch networks from their initial
  weights, other models after a fit with the smoke budget) on a batch of the profile's eval batch
  size (8). ``extra_info["samples_per_second"]`` comes from ``wxbench.runtime.measure_throughput``
  called as the leaderboard calls it for this profile (one warm-up, ``throughput_batches`` timed
  calls): the function behind the leaderboard's throughput column.
* ``model-train-step``: for torch models (``TorchForecaster``) one optimiser step as the shared
  training loop takes it (``model.loss`` on a batch of the profile's training batch size (4),
  backward, clipping, AdamW).
* ``model-fit``: the training step of the other models (closed-form baselines, models with their
  own training procedure): ``model.fit`` with the whole smoke budget (3 steps).
"""

from __future__ import annotations

import pytest
import torch

from wxbench.benchmarking import (
    BENCH_PROFILE,
    GROUP_FIT,
    GROUP_FORWARD,
    GROUP_TRAIN_STEP,
    benchmark_adaptive,
    forecaster_params,
    forward_fn,
    make_train_step,
    record_throughput,
)
from wxbench.profiles import get_profile

MODELS = forecaster_params()


@pytest.mark.parametrize("model_name", MODELS)
def test_bench_forward(benchmark, model_factory, window_batch, model_name):
    benchmark.group = GROUP_FORWARD
    model = model_factory(model_name, BENCH_PROFILE, fit="auto")  # smoke-fitted unless a torch network
    history, _ = window_batch(model, BENCH_PROFILE)
    assert history.shape[0] == get_profile(BENCH_PROFILE).budget.eval_batch_size
    samples_per_second = record_throughput(benchmark, model, history, profile=BENCH_PROFILE)  # warms up too
    benchmark.extra_info["profile"] = BENCH_PROFILE
    out = benchmark_adaptive(benchmark, forward_fn(model), history, call_seconds=len(history) / samples_per_second)
    assert isinstance(out, torch.Tensor) and out.shape[0] == history.shape[0]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("model_name", MODELS)
def test_bench_train_step(benchmark, model_factory, model_name):
    model = model_factory(model_name, BENCH_PROFILE)
    step = make_train_step(model, BENCH_PROFILE)
    # a whole fit (a no-op for persistence, a diffusion model's training for others) is not one
    # optimiser step: its own table, so that neither scale hides the other
    benchmark.group = GROUP_TRAIN_STEP if step.kind == "optimiser step" else GROUP_FIT
    benchmark.extra_info["profile"] = BENCH_PROFILE
    benchmark.extra_info["step"] = step.kind
    benchmark.extra_info["batch_size"] = step.batch_size
    result = benchmark_adaptive(benchmark, step)  # after an untimed warm-up call
    if step.kind == "optimiser step":
        assert torch.isfinite(result)
