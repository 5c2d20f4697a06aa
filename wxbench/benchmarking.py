"""pytest fixtures and helpers for speed benchmarks of wxbench and of plugin models (pytest-benchmark).

wxbench's own speed suite (``tests/benchmarks``, run by ``wxbench bench`` or ``tox -e bench``) is
built on this module, and a plugin author can benchmark their own model with the same fixtures,
so that their numbers mean what wxbench's mean. In the plugin's ``conftest.py``::

    pytest_plugins = ["wxbench.benchmarking"]

and in a test module (run with ``pytest --benchmark-enable``)::

    from wxbench.benchmarking import benchmark_adaptive, forward_fn, make_train_step, record_throughput

    def test_bench_my_model_forward(benchmark, model_factory, window_batch):
        model = model_factory("my_model", fit="auto")  # registered name (or the class), smoke profile
        history, _ = window_batch(model)               # the smoke profile's eval batch size
        benchmark.group = "model-forward"
        sps = record_throughput(benchmark, model, history)  # samples/s as the leaderboard measures it
        benchmark_adaptive(benchmark, forward_fn(model), history, call_seconds=len(history) / sps)

    def test_bench_my_model_train_step(benchmark, model_factory):
        step = make_train_step(model_factory("my_model"))   # step.kind: "optimiser step" or a whole fit
        benchmark.group = "model-train-step"
        benchmark_adaptive(benchmark, step)

Fixtures
    ``registered_forecasters``  sorted names of every registered forecaster (session)
    ``model_factory``           ``model_factory(name_or_cls, profile="smoke", *, grid=..., device="cpu",
                                seed=0, ensemble_size=None, overrides=None, fit=False)``: a model built
                                exactly as ``wxbench run`` builds it (``wxbench.runner.build_model``: class
                                defaults < registered variant < the profile's hyperparameters <
                                ``overrides``); ``fit=True`` (or ``"auto"``: unless it is a torch
                                network) fits it with the profile's budget on a small synthetic split
    ``window_batch``            ``window_batch(model_or_kind="zscore", profile="smoke", batch_size=None)``:
                                ``(history, target)`` from a synthetic split, at the profile's eval batch size
    ``bench_split``             ``bench_split(kind="zscore", n_times=48)``: a cached synthetic ``SplitData``

Helpers (importable): :func:`forecaster_params` (parametrise a test over the registry, with a
skipped entry per plugin that failed to load), :func:`forward_fn`, :func:`record_throughput`,
:func:`make_train_step`, :func:`benchmark_adaptive`, :func:`median_seconds_round_robin`,
:func:`record_ratio`.

Everything uses the ``smoke`` profile's hyperparameters by default (tiny networks), so that a
benchmark of every registered model costs minutes rather than hours; absolute times are only
comparable between runs with the same profile on the same machine. The comparisons that matter
are measured inside one run as ratios (:func:`median_seconds_round_robin`), because machines are
noisy; the ratios recorded with :func:`record_ratio` are listed at the end of the run.

Importing the module as a pytest plugin also adds two hooks: the end-of-run list of ratios and
samples/s, and a clean failure (exit status 1, no traceback) when ``--benchmark-compare-fail``
finds a regression.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any, Callable, Iterable, Mapping

import pytest
import torch

from .data.splits import SplitData
from .interfaces import Forecaster, GridSpec
from .plugins import Registry, get_registry, registration_of
from .profiles import Profile, get_profile
from .runtime import measure_throughput
from .testing import DEFAULT_GRID, synthetic_split

#: the profile whose hyperparameters and batch sizes the suite uses unless a test says otherwise
BENCH_PROFILE = "smoke"
#: benchmark groups of wxbench's suite (``--benchmark-group-by=group`` prints one table per group)
GROUP_DATA = "data-windows"
GROUP_FORWARD = "model-forward"
GROUP_TRAIN_STEP = "model-train-step"
#: the "training step" of models without a torch optimiser step: a whole fit with the smoke budget
GROUP_FIT = "model-fit"
GROUP_SCORES = "metrics-scores"
GROUP_SCORING_OVERHEAD = "scoring-overhead"

#: calls shorter than this are timed by pytest-benchmark's calibration (many iterations per round)
FAST_CALL_SECONDS = 0.005
#: ``benchmark.extra_info`` key prefixes that the end-of-run summary lists
RATIO_PREFIX = "ratio_"
TARGET_PREFIX = "target_"


# -- the registry ----------------------------------------------------------------------------------------------

def forecaster_params(registry: Registry | None = None) -> list[Any]:
    """``pytest.param`` per registered forecaster (id: its name), for ``@pytest.mark.parametrize``.

    A plugin that failed to load adds one skipped entry (id ``plugin-NAME``) whose reason is the
    load error, so that a broken plugin shows up in the run instead of silently missing.
    """
    registry = registry or get_registry()
    params: list[Any] = [pytest.param(name, id=name) for name in sorted(registry.forecasters)]
    for info in sorted(registry.plugins.values(), key=lambda p: p.name):
        if info.error:
            params.append(pytest.param(f"plugin:{info.name}", id=f"plugin-{info.name}",
                                       marks=pytest.mark.skip(reason=f"plugin {info.name!r} failed to load: "
                                                                     f"{info.error}")))
    if not params:
        params.append(pytest.param(None, id="no-forecaster",
                                   marks=pytest.mark.skip(reason="no forecaster is registered (no wxbench plugin "
                                                                 "installed?)")))
    return params


def build_forecaster(name_or_cls: str | type[Forecaster], profile: str = BENCH_PROFILE, *,
                     grid: GridSpec = DEFAULT_GRID, device: str = "cpu", seed: int = 0,
                     ensemble_size: int | None = None, overrides: Mapping[str, Any] | None = None,
                     fit: bool | str = False) -> Forecaster:
    """A forecaster built as ``wxbench run --profile PROFILE`` builds it (same code path, same precedence).

    ``fit=True`` also fits it on a small synthetic split with the profile's budget (keep that to
    the smoke profile); ``fit="auto"`` does so only for models that are not a
    :class:`~wxbench.training.TorchForecaster` (closed-form baselines and models with their own
    training procedure may need a fit before ``predict``; a torch network predicts, equally fast,
    from its initial weights).
    """
    from .runner import build_model

    reg = registration_of(name_or_cls)
    prof = get_profile(profile)
    ensemble = ensemble_size if ensemble_size is not None else prof.budget.ensemble_size
    model = build_model(reg, grid, profile, device=device, seed=seed,
                        ensemble_size=ensemble, overrides=dict(overrides or {}))
    if fit == "auto":
        from .training import TorchForecaster

        fit = not isinstance(model, TorchForecaster)
    elif not isinstance(fit, bool):
        raise ValueError(f"fit={fit!r}: expected True, False or 'auto'")
    if fit:
        train, val = synthetic_train_val(model.normalisation)
        model.fit(train, val, prof.budget)
    return model


# -- data ------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def cached_split(kind: str = "zscore", n_times: int = 48, seed: int = 0, name: str = "train") -> SplitData:
    """A synthetic split (smooth travelling waves, the WeatherBench 64x32 grid, 4 channels), cached."""
    return synthetic_split(kind, n_times=n_times, seed=seed, name=name)


def synthetic_train_val(kind: str = "zscore") -> tuple[SplitData, SplitData]:
    """The small synthetic training and validation splits :func:`wxbench.testing.check_forecaster` uses."""
    return cached_split(kind, 48, 1, "train"), cached_split(kind, 24, 2, "val")


def batch_of_windows(kind: str = "zscore", batch_size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(history, target)`` of ``batch_size`` consecutive windows of a cached synthetic split."""
    grid = DEFAULT_GRID
    n_times = max(48, batch_size + grid.input_steps + grid.output_steps - 1)
    split = cached_split(kind, n_times, seed)
    return split.windows(torch.arange(batch_size))


def _kind_of(model_or_kind: Forecaster | str) -> str:
    return model_or_kind if isinstance(model_or_kind, str) else model_or_kind.normalisation


# -- measuring -------------------------------------------------------------------------------------------------

def forward_fn(model: Forecaster) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.predict`` under ``torch.no_grad()``: what :func:`wxbench.runtime.measure_throughput` times."""
    def forward(history: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.predict(history)

    forward.__name__ = f"{getattr(model, 'name', type(model).__name__)}_predict"
    return forward


def record_throughput(benchmark: Any, model: Forecaster, history: torch.Tensor, *, profile: str = BENCH_PROFILE,
                      repeats: int | None = None) -> float:
    """Inference samples/s by :func:`wxbench.runtime.measure_throughput`, called as the leaderboard
    calls it (one warm-up call, then the profile's ``throughput_batches`` timed calls unless
    ``repeats`` says otherwise), stored in ``benchmark.extra_info`` with the batch size."""
    repeats = repeats or get_profile(profile).throughput_batches
    sps = measure_throughput(model.predict, history, device=model.device, repeats=repeats)
    benchmark.extra_info["samples_per_second"] = sps
    benchmark.extra_info["batch_size"] = int(history.shape[0])
    benchmark.extra_info["throughput_repeats"] = repeats
    return sps


class TrainStep:
    """One training step of a model, callable without arguments.

    For a :class:`~wxbench.training.TorchForecaster`: one optimiser step exactly as the shared
    training loop (``wxbench.training.train_module``) takes it: ``model.loss`` on a batch of the
    profile's training batch size (autocast as in training), backward, gradient clipping at 1,
    an AdamW step. For any other forecaster: ``model.fit`` with the profile's whole budget.
    """

    def __init__(self, model: Forecaster, profile: str = BENCH_PROFILE, batch_size: int | None = None) -> None:
        from .training import TorchForecaster

        self.model = model
        self.profile: Profile = get_profile(profile)
        budget = self.profile.budget
        kind = model.normalisation
        params = ([p for p in model.module.parameters() if p.requires_grad]
                  if isinstance(model, TorchForecaster) else [])
        if params:
            self.kind = "optimiser step"
            self.batch_size = batch_size or budget.batch_size
            history, target = batch_of_windows(kind, self.batch_size)
            self.history, self.target = history.to(model.device), target.to(model.device)
            self.params = params
            self.optimiser = torch.optim.AdamW(params, lr=model.hparams.get("learning_rate", 1e-3),
                                               weight_decay=model.hparams.get("weight_decay", 0.0))
        else:
            self.kind = f"fit ({self.profile.name} budget)"
            self.batch_size = budget.batch_size
            self.train, self.val = synthetic_train_val(kind)

    def __call__(self) -> Any:
        if self.kind != "optimiser step":
            return self.model.fit(self.train, self.val, self.profile.budget)
        from .training import autocast

        module = self.model.module
        module.train()
        with autocast(self.model.device):
            loss = self.model.loss(self.history, self.target)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, max_norm=1.0)
        self.optimiser.step()
        return loss.detach()


def make_train_step(model: Forecaster, profile: str = BENCH_PROFILE, batch_size: int | None = None) -> TrainStep:
    """See :class:`TrainStep`; ``step.kind`` says which of the two it is."""
    return TrainStep(model, profile, batch_size)


def benchmark_adaptive(benchmark: Any, fn: Callable[..., Any], *args: Any, target_seconds: float = 1.0,
                       min_rounds: int = 3, max_rounds: int = 15, call_seconds: float | None = None) -> Any:
    """``benchmark.pedantic`` with as many rounds as fit in about ``target_seconds`` (at least
    ``min_rounds``, at most ``max_rounds``), judged from one untimed warm-up call, or from
    ``call_seconds`` when the caller has just timed a warmed-up call (no warm-up call then).

    pytest-benchmark's own calibration runs at least 5 rounds of however long a call takes; this
    keeps slow models (a diffusion model's fit, seconds per call) to ``min_rounds`` so that a suite
    over every registered model stays within minutes. Calls shorter than ``FAST_CALL_SECONDS`` go to
    pytest-benchmark's own calibration instead (many iterations per round).
    """
    if call_seconds is None:
        start = time.perf_counter()
        fn(*args)
        call_seconds = time.perf_counter() - start
    if call_seconds < FAST_CALL_SECONDS:
        # too short for one call per round to rise above the timer's and the scheduler's noise:
        # pytest-benchmark's calibration times many iterations per round
        return benchmark(fn, *args)
    rounds = max(min_rounds, min(max_rounds, int(target_seconds / max(call_seconds, 1e-9))))
    return benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1)


def median_seconds_round_robin(impls: Mapping[str, tuple[Callable[[], Any], int]], *, repeats: int = 5,
                               warmup: int = 1) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median seconds per call of each implementation, timed round-robin after warm-up.

    ``impls`` maps a name to ``(function, calls)``: one measurement times ``calls`` consecutive
    calls (fast functions need several to rise above the timer's noise). Round-robin, so that a
    load change on a shared machine hits every implementation alike. Returns the medians and the
    raw per-call times.
    """
    for fn, _ in impls.values():
        for _ in range(warmup):
            fn()
    raw: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeats):
        for name, (fn, calls) in impls.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            raw[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(ts) for name, ts in raw.items()}, raw


def record_ratio(benchmark: Any, name: str, value: float, *, at_least: float | None = None,
                 at_most: float | None = None) -> None:
    """Store a within-run ratio (and its target) in ``benchmark.extra_info`` for the saved run and the
    end-of-run summary; the test still asserts the target itself."""
    benchmark.extra_info[f"{RATIO_PREFIX}{name}"] = value
    if at_least is not None:
        benchmark.extra_info[f"{TARGET_PREFIX}{name}"] = f">= {at_least:g}"
    if at_most is not None:
        benchmark.extra_info[f"{TARGET_PREFIX}{name}"] = f"<= {at_most:g}"


# -- fixtures --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def registered_forecasters() -> list[str]:
    """Sorted names of every registered forecaster."""
    return sorted(get_registry().forecasters)


@pytest.fixture
def model_factory() -> Callable[..., Forecaster]:
    """``model_factory(name_or_cls, profile="smoke", **kw)``: see :func:`build_forecaster`."""
    return build_forecaster


@pytest.fixture
def window_batch() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``window_batch(model_or_kind="zscore", profile="smoke", batch_size=None)``: ``(history, target)``
    on the model's device, ``batch_size`` defaulting to the profile's eval batch size."""
    def make(model_or_kind: Forecaster | str = "zscore", profile: str = BENCH_PROFILE,
             batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        size = batch_size or get_profile(profile).budget.eval_batch_size
        history, target = batch_of_windows(_kind_of(model_or_kind), size)
        device = "cpu" if isinstance(model_or_kind, str) else model_or_kind.device
        return history.to(device), target.to(device)

    return make


@pytest.fixture
def bench_split() -> Callable[..., SplitData]:
    """``bench_split(kind="zscore", n_times=48, seed=0)``: a cached synthetic split."""
    return cached_split


# -- the end-of-run summary ------------------------------------------------------------------------------------

def _ratio_lines(benchmarks: Iterable[Any]) -> list[str]:
    lines = []
    for bench in benchmarks:
        extra = getattr(bench, "extra_info", None) or {}
        ratios = {k[len(RATIO_PREFIX):]: v for k, v in extra.items() if k.startswith(RATIO_PREFIX)}
        for name, value in ratios.items():
            target = extra.get(f"{TARGET_PREFIX}{name}", "")
            try:
                shown = f"{float(value):10.3f}"
            except (TypeError, ValueError):
                shown = f"{value!s:>10}"
            lines.append(f"  {name:44s} {shown}   {target:10s} ({bench.name})")
    return lines


def _throughput_lines(benchmarks: Iterable[Any]) -> list[str]:
    lines = []
    for bench in benchmarks:
        extra = getattr(bench, "extra_info", None) or {}
        if "samples_per_second" in extra:
            lines.append(f"  {bench.name:52s} {extra['samples_per_second']:12.1f} samples/s "
                         f"(batch {extra.get('batch_size', '?')})")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the within-run ratios and the measure_throughput samples/s recorded in extra_info."""
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    benchmarks = [b for b in getattr(session, "benchmarks", None) or [] if b]
    ratios, throughput = _ratio_lines(benchmarks), _throughput_lines(benchmarks)
    if ratios:
        terminalreporter.section("wxbench speed ratios (measured within this run)", sep="-")
        for line in ratios:
            terminalreporter.write_line(line)
    if throughput:
        terminalreporter.section("inference throughput (wxbench.runtime.measure_throughput)", sep="-")
        for line in throughput:
            terminalreporter.write_line(line)


_REGRESSED = pytest.StashKey[bool]()


def _is_regression(exc: BaseException) -> bool:
    return type(exc).__name__ == "PerformanceRegression"  # pytest_benchmark.session.PerformanceRegression


@pytest.hookimpl(wrapper=True, tryfirst=True, specname="pytest_terminal_summary")
def pytest_terminal_summary_regressions(terminalreporter: Any) -> Any:
    """A ``--benchmark-compare-fail`` regression fails the session after pytest-benchmark's list of
    the regressed benchmarks, instead of ending the run with a traceback from inside pytest's
    terminal summary (which would also lose the rest of the summary)."""
    try:
        return (yield)
    except Exception as exc:
        if not _is_regression(exc):
            raise
        terminalreporter.config.stash[_REGRESSED] = True
        terminalreporter.write_line("FAILED: slower than the saved run it was compared with (the benchmarks listed "
                                    "under 'Performance has regressed' above)", red=True, bold=True)
        return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Any:
    """Exit status 1 (tests failed) after a speed regression."""
    try:
        result = yield
    except Exception as exc:
        if not _is_regression(exc):
            raise
        session.config.stash[_REGRESSED] = True
        result = None
    if session.config.stash.get(_REGRESSED, False):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result
