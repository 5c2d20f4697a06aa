"""Benchmarks: scoring a batch (ScoreAccumulator) and scoring's overhead on convlstm's forward pass.

Everything here is at the leaderboard's settings: the ``cpu`` profile's eval batch size (32) and
ensemble size (8), and convlstm with the ``cpu`` profile's hyperparameters (hidden 16, one layer),
built exactly as ``wxbench run`` builds it.

The overhead check (``test_convlstm_scoring_overhead``) times, round-robin inside one test, what
``wxbench.runner.evaluate`` does per test batch: the forward pass (``model.predict``) against the
scoring of its output (denormalising forecast and truth, and ``ScoreAccumulator.update`` with a
climatology, so RMSE, MAE, bias and ACC), and requires the scoring to add under 5 % to the
forward time. The forecast contract check ``evaluate`` also runs (shape, dtype, all finite) is
timed too and reported with the scoring, but not part of the checked ratio.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from wxbench.benchmarking import (
    GROUP_SCORES,
    GROUP_SCORING_OVERHEAD,
    benchmark_adaptive,
    build_forecaster,
    median_seconds_round_robin,
    record_ratio,
)
from wxbench.metrics import ScoreAccumulator
from wxbench.plugins import get_registry
from wxbench.profiles import get_profile
from wxbench.interfaces import check_forecast
from wxbench.testing import synthetic_split

PROFILE = "cpu"  # the leaderboard's profile
MODEL = "convlstm"
MAX_SCORING_OVERHEAD = 0.05


@pytest.fixture(scope="module")
def budget():
    return get_profile(PROFILE).budget


@pytest.fixture(scope="module")
def split(budget):
    grid_steps = 16
    return synthetic_split("zscore", n_times=budget.eval_batch_size + grid_steps - 1 + 8)


def _accumulator(split) -> ScoreAccumulator:
    grid = split.grid
    climatology = split.normaliser.denormalise(split.fields).mean(dim=0)  # (C, H, W), physical units
    return ScoreAccumulator(torch.tensor(grid.lat), grid.channels, grid.lead_hours, climatology=climatology)


@pytest.fixture(scope="module")
def physical_batch(split, budget):
    """Truth (B, 4, C, H, W) and a deterministic and an ensemble forecast near it, physical units."""
    gen = torch.Generator().manual_seed(0)
    _, target = split.windows(torch.arange(budget.eval_batch_size))
    truth = split.normaliser.denormalise(target)
    noise = 0.1 * truth.std(dim=(0, 1, 3, 4), keepdim=True)
    forecast = truth + noise * torch.randn(truth.shape, generator=gen)
    members = truth[:, None] + noise * torch.randn((truth.shape[0], budget.ensemble_size, *truth.shape[1:]),
                                                   generator=gen)
    return truth, forecast, members


def test_bench_score_update_deterministic(benchmark, split, physical_batch):
    benchmark.group = GROUP_SCORES
    truth, forecast, _ = physical_batch
    acc = _accumulator(split)
    benchmark_adaptive(benchmark, acc.update, forecast, truth)
    assert set(acc.compute()) >= {"rmse", "mae", "bias", "acc", "crps"}


def test_bench_score_update_ensemble(benchmark, split, physical_batch):
    benchmark.group = GROUP_SCORES
    truth, _, members = physical_batch
    acc = _accumulator(split)
    benchmark.extra_info["ensemble_size"] = members.shape[1]
    benchmark_adaptive(benchmark, acc.update, members, truth)
    assert acc.is_ensemble and "crps_standard" in acc.compute()


@pytest.fixture(scope="module")
def convlstm():
    registry = get_registry()
    if MODEL not in registry.forecasters:
        failed = {name: info.error for name, info in registry.plugins.items() if info.error}
        why = f"; plugins that failed to load: {failed}" if failed else ""
        pytest.skip(f"{MODEL!r} is not registered (it comes from the wxbench-spatial plugin, plugins/spatial: "
                    f"pip install -e plugins/spatial){why}")
    reg = registry.forecaster(MODEL)
    model = build_forecaster(MODEL, PROFILE)
    return reg, model


def test_convlstm_scoring_overhead(benchmark, convlstm, split, budget):
    """Scoring a batch adds under 5 % to convlstm's forward pass on it (cpu profile, batch 32)."""
    benchmark.group = GROUP_SCORING_OVERHEAD
    reg, model = convlstm
    history, target = split.windows(torch.arange(budget.eval_batch_size))
    norm = split.normaliser
    acc = _accumulator(split)
    output = model.predict(history)

    def forward():
        return model.predict(history)

    def score():
        # what evaluate() does with each batch's forecast: denormalise both, accumulate the scores
        acc.update(norm.denormalise(output), norm.denormalise(target.float()))

    def contract_check():
        # evaluate() also checks every forecast (shape, dtype, finite) before scoring it
        return check_forecast(output, history, model, f"model {reg.name!r} (plugin {reg.plugin!r})")

    medians, raw = median_seconds_round_robin(
        {"forward": (forward, 1), "scoring": (score, 5), "contract_check": (contract_check, 5)}, repeats=11)
    # the median of per-repeat ratios: each scoring time is paired with the forward pass timed
    # just before it, so a change of machine speed during the test cancels
    overhead = statistics.median(s / f for s, f in zip(raw["scoring"], raw["forward"]))
    with_check = statistics.median((s + c) / f for s, c, f in zip(raw["scoring"], raw["contract_check"],
                                                                    raw["forward"]))
    benchmark.extra_info.update({f"median_s_{name}": seconds for name, seconds in medians.items()})
    benchmark.extra_info.update({"model": MODEL, "profile": PROFILE, "batch_size": budget.eval_batch_size,
                                 "hyperparameters": {k: v for k, v in model.hparams.items()
                                                     if isinstance(v, (int, float, str, bool))},
                                 "torch_threads": torch.get_num_threads()})
    record_ratio(benchmark, "convlstm_scoring_over_forward", overhead, at_most=MAX_SCORING_OVERHEAD)
    record_ratio(benchmark, "convlstm_scoring_and_check_over_forward", with_check)
    print()
    for name, seconds in medians.items():
        print(f"  {name:15s} median {seconds * 1e3:9.2f} ms per batch of {budget.eval_batch_size}  "
              f"over {len(raw[name])} repeats")
    print(f"  scoring / forward = {overhead:.4f} ({100 * overhead:.2f} %); "
          f"with the contract check {with_check:.4f} ({100 * with_check:.2f} %)")

    # record the scoring step itself under this test
    benchmark.pedantic(score, rounds=5, iterations=1, warmup_rounds=1)

    assert overhead < MAX_SCORING_OVERHEAD, medians
