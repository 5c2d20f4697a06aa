"""Running models: fit on train, early-stop on val, score on test, one isolated run per model.

Whatever goes wrong inside one model (an exception, a wrong shape, NaNs, a timeout) becomes an
error row naming the model, its plugin and the stage; the other models' results are untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import platform
import signal
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from . import __version__
from .data.benchmarks import Benchmark
from .data.loading import BenchmarkData, load_benchmark
from .errors import ConfigError
from .interfaces import Forecaster, GridSpec, check_forecast, predict_batch
from .plugins import Registration, get_registry
from .profiles import Profile, get_profile
from .progress import progress_bar
from .atomic import write_atomic
from .results import SCHEMA_VERSION, Result, result_path, write_checkpoint, write_result
from .runtime import device_name, peak_memory_bytes, resolve_device, seed_everything
from .runtime import measure_throughput as samples_per_second


@dataclass(frozen=True)
class RunTask:
    """One (model, benchmark, profile, seed) run; picklable so any executor can ship it."""

    model: str
    benchmark: Benchmark
    profile: str
    seed: int = 0
    device: str = "cpu"
    output: str = "wxbench-results"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    ensemble_size: int | None = None
    save_forecasts: bool = False
    save_checkpoint: bool = True

    @property
    def path(self) -> Path:
        return result_path(self.output, self.benchmark.key, self.profile, self.model, self.seed)


class ModelTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise ModelTimeout in the main thread after ``seconds`` (SIGALRM; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):  # noqa: ARG001
        raise ModelTimeout(f"{what} ran past its time limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=2)
def cached_benchmark_data(benchmark: Benchmark, progress: bool = True) -> BenchmarkData:
    """Benchmark data is read once per process, whatever the number of models run on it."""
    return load_benchmark(benchmark, progress=progress)


def resolve_hyperparameters(reg: Registration, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Class defaults < the registration's variant < the profile's overrides < the user's overrides."""
    cls = reg.cls
    return {**cls.hyperparameters, **reg.variant, **cls.profile_hyperparameters.get(profile, {}), **overrides}


def build_model(reg: Registration, grid: GridSpec, profile: str, *, device: str, seed: int,
                ensemble_size: int, overrides: dict[str, Any] | None = None) -> Forecaster:
    """The registered model with its resolved hyperparameters, built under ``seed``."""
    hparams = resolve_hyperparameters(reg, profile, overrides or {})
    seed_everything(seed)
    model = reg.cls(grid, device=device, seed=seed, ensemble_size=ensemble_size, **hparams)
    model.name = reg.name  # a registered variant keeps its own name
    return model


def evaluate(model: Forecaster, reg: Registration, data: BenchmarkData, profile: Profile, *,
             collect_forecasts: bool = False, measure_throughput: bool = True) -> dict[str, Any]:
    """Score ``model`` on the test split in physical units; returns scores, timings and an example."""
    from .metrics import ScoreAccumulator

    who = f"model {reg.name!r} (plugin {reg.plugin!r})"
    test = data.split("test", model.normalisation)
    norm = test.normaliser
    device = model.device
    acc = ScoreAccumulator(torch.tensor(data.grid.lat), data.grid.channels, data.grid.lead_hours)
    leads = np.array(data.grid.lead_hours, dtype="timedelta64[h]")
    example = None
    forecasts = []
    load_seconds = predict_seconds = 0.0
    start = time.perf_counter()
    batches = iter(test.batches(profile.budget.eval_batch_size, device=device))
    bar = progress_bar(total=len(test), desc=f"{reg.name} test", unit="window")
    done = 0
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            load_seconds += time.perf_counter() - t0
            break
        history, target = batch
        # batches come in order: these are windows done .. done + B - 1
        init_times = test.window_times(slice(done, done + len(history)))
        climatology = data.climatology.at(init_times[:, None] + leads, device=device)  # (B, L, C, H, W)
        done += len(history)
        t1 = time.perf_counter()
        load_seconds += t1 - t0
        output = check_forecast(predict_batch(model, history, init_times), history, model, who)
        predict_seconds += time.perf_counter() - t1
        bar.update(len(history))
        forecast = norm.denormalise(output)
        truth = norm.denormalise(target.float())
        acc.update(forecast, truth, climatology=climatology)
        if example is None:
            example = {"forecast": forecast[0].cpu().numpy(), "truth": truth[0].cpu().numpy(),
                       "time": str(test.window_times(slice(0, 1))[0])}
        if collect_forecasts:
            forecasts.append(forecast.cpu())
    bar.close()
    throughput = None
    if measure_throughput:
        history, _ = next(test.batches(profile.budget.eval_batch_size, device=device))
        init_times = test.window_times(slice(0, len(history)))
        throughput = samples_per_second(lambda h: predict_batch(model, h, init_times), history, device=device,
                                        repeats=profile.throughput_batches)
    return {
        "scores": acc.compute(),
        "is_ensemble": acc.is_ensemble,
        "test_windows": len(test),
        "eval_seconds": time.perf_counter() - start,
        "predict_seconds": predict_seconds,
        "eval_load_seconds": load_seconds,
        "samples_per_second": throughput,
        "eval_batch_size": profile.budget.eval_batch_size,
        "example": example,
        "forecasts": torch.cat(forecasts) if collect_forecasts else None,
        "init_times": test.window_times(slice(None)) if collect_forecasts else None,
    }


_REFERENCE_SCORES: dict[tuple[str, str, str], dict[str, dict[str, list[float]]]] = {}


def reference_scores(data: BenchmarkData, profile: Profile) -> dict[str, dict[str, dict[str, list[float]]]]:
    """RMSE per channel and lead of the core's reference baselines on ``data``'s test split,
    ``{"climatology": {"rmse": {channel: [per lead]}}, "persistence": ...}``.

    Stored in every result, so that a model's headline score (normalised by the climatology's
    RMSE) is the same whether or not the folder holds a climatology row. Computed with the same
    :func:`evaluate` as any model's scores, once per process, data and climatology.
    """
    from .baselines import REFERENCE_MODELS

    key = (data.data_hash, data.climatology.content_hash, profile.name)  # a user's climatology store counts
    if key not in _REFERENCE_SCORES:
        registry = get_registry()
        scores = {}
        for name in REFERENCE_MODELS:
            reg = registry.forecaster(name)
            model = build_model(reg, data.grid, profile.name, device="cpu", seed=0, ensemble_size=1)
            model.fit(data.split("train", model.normalisation), data.split("val", model.normalisation),
                      profile.budget)
            scores[name] = {"rmse": evaluate(model, reg, data, profile, measure_throughput=False)["scores"]["rmse"]}
        _REFERENCE_SCORES[key] = scores
    return _REFERENCE_SCORES[key]


def git_state(folder: Path) -> tuple[str | None, bool | None]:
    """(commit, whether tracked files have uncommitted changes) of the git checkout at ``folder``.

    ``(None, None)`` outside a checkout or without git.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=folder)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or None
    if commit is None:
        return None, None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return commit, (bool(changes) if changes is not None else None)


@functools.lru_cache(maxsize=1)
def _code_git_state() -> tuple[str | None, bool | None]:
    # read once per process, at the first result: a run executes the code it imported when it
    # started, so later commits or edits must not be attributed to it
    return git_state(Path(__file__).resolve().parent)


def provenance(task: RunTask, reg: Registration | None, data: BenchmarkData | None, device: str) -> dict[str, Any]:
    return {
        "wxbench_version": __version__,
        "plugin": reg.plugin if reg else None,
        "plugin_distribution": reg.distribution if reg else None,
        "plugin_version": reg.version if reg else None,
        "git_commit": _code_git_state()[0],
        "git_dirty": _code_git_state()[1],
        "data_hash": data.data_hash if data else None,
        "data_source": data.source if data else None,
        "device": device,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "seed": task.seed,
        "dtype": "bfloat16 autocast" if device.startswith("cuda") else "float32",
    }


def result_header(task: RunTask, profile: Profile | None, started: dt.datetime) -> Result:
    """The keys every result starts with: run_task's, error_result's and an external forecast's."""
    return {
        "schema_version": SCHEMA_VERSION, "model": task.model, "benchmark": task.benchmark.as_dict(),
        "benchmark_key": task.benchmark.key, "profile": task.profile, "seed": task.seed, "status": "running",
        "budget": profile.budget.as_dict() if profile else None, "start_time": started.isoformat(),
    }


def _error_record(task: RunTask, reg: Registration | None, stage: str, exc: BaseException,
                  tb: str | None = None) -> dict[str, Any]:
    plugin = f" (plugin {reg.plugin!r})" if reg else ""
    return {"stage": stage, "type": type(exc).__name__,
            "message": f"model {task.model!r}{plugin} failed in {stage}: {exc}",
            "traceback": traceback.format_exc(limit=8) if tb is None else tb}


def error_result(task: RunTask, stage: str, exc: BaseException, *, started: dt.datetime | None = None,
                 tb: str | None = None) -> dict[str, Any]:
    """The error row of a run that failed outside :func:`run_task` (e.g. its worker died), in
    run_task's layout; the caller writes it with ``write_result(task.path, ...)``."""
    now = dt.datetime.now(dt.timezone.utc)
    started = started or now
    try:
        reg = get_registry().forecaster(task.model)
    except Exception:  # noqa: BLE001 - the row is written whatever the registry says
        reg = None
    try:
        profile = get_profile(task.profile)
    except ConfigError:
        profile = None
    result = result_header(task, profile, started)
    if reg is not None:
        result["family"] = reg.cls.family
    result["status"] = "error"
    result["error"] = _error_record(task, reg, stage, exc, tb if tb is not None else "".join(
        traceback.format_exception(exc, limit=8)))
    result["end_time"] = now.isoformat()
    result["wall_seconds"] = (now - started).total_seconds()
    result["provenance"] = provenance(task, reg, None, task.device)
    return result


def save_checkpoint(path: Path, state: Any) -> str | None:
    """Write a model's state to ``path``; None, or what went wrong (the file, the error, the space
    left on its disk) when it could not be written, e.g. on a full disk. (A model whose
    ``state_dict`` fails is a plugin fault and an error row; a disk that refuses the file is not.)"""
    import shutil

    try:
        write_checkpoint(path, state)
    except Exception as exc:  # noqa: BLE001 - reported in the result, the run goes on
        existing = next((p for p in path.parents if p.exists()), path.parent)
        try:
            free = f"{shutil.disk_usage(existing).free / 1e9:.1f} GB free on its disk"
        except OSError:
            free = "free space unknown"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"checkpoint {path} not written ({free}): {type(exc).__name__}: {message}"
    return None


def run_task(task: RunTask, *, progress: bool = True, data: BenchmarkData | None = None) -> dict[str, Any]:
    """Run one model end to end and write its result file; never raises for a model's fault.

    ``data``: the benchmark's data already loaded (an executor that shares it between processes);
    None reads it (once per process, :func:`cached_benchmark_data`).
    """
    profile = get_profile(task.profile)
    started = dt.datetime.now(dt.timezone.utc)
    result: Result = result_header(task, profile, started)
    stage = "load plugin"
    reg = None
    preloaded, data = data, None
    device = task.device
    try:
        reg = get_registry().forecaster(task.model)
        result["family"] = reg.cls.family
        stage = "load data"
        data = preloaded if preloaded is not None else cached_benchmark_data(task.benchmark, progress)
        device = resolve_device(task.device)
        ensemble = task.ensemble_size or profile.budget.ensemble_size
        with time_limit(profile.timeout_seconds, f"model {task.model!r}"):
            stage = "build"
            model = build_model(reg, data.grid, task.profile, device=device, seed=task.seed, ensemble_size=ensemble,
                                overrides=task.hyperparameters)
            result["hyperparameters"] = dict(model.hparams)
            result["probabilistic"] = model.probabilistic
            result["normalisation"] = model.normalisation
            result["ensemble_size"] = model.ensemble_size
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(torch.device(device))
            stage = "fit"
            fit = model.fit(data.split("train", model.normalisation), data.split("val", model.normalisation),
                            profile.budget)
            result["fit"] = fit.as_dict()
            result["weights"] = model.weights
            result["model_info"] = model.describe()
            if task.save_checkpoint:
                stage = "save checkpoint"
                checkpoint_error = save_checkpoint(task.path.with_suffix(".pt"), model.state_dict())
                if checkpoint_error:  # the trained model is still scored: only the weights file is lost
                    result["checkpoint_error"] = checkpoint_error
            stage = "predict"
            evaluation = evaluate(model, reg, data, profile, collect_forecasts=task.save_forecasts)
        stage = "score references"
        result["reference_scores"] = reference_scores(data, profile)
        _record_evaluation(result, evaluation, fit, data, task)
        result["peak_memory_bytes"] = peak_memory_bytes(device)
        result["status"] = "ok"
    except (Exception, ModelTimeout) as exc:  # noqa: BLE001 - every failure becomes an error row
        result["status"] = "error"
        result["error"] = _error_record(task, reg, stage, exc)
    result["end_time"] = dt.datetime.now(dt.timezone.utc).isoformat()
    result["wall_seconds"] = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    result["provenance"] = provenance(task, reg, data, device)
    write_result(task.path, result)
    return result


def _record_evaluation(result: dict[str, Any], evaluation: dict[str, Any], fit, data: BenchmarkData,
                       task: RunTask) -> None:
    result["scores"] = evaluation["scores"]
    result["lead_hours"] = list(data.grid.lead_hours)
    result["channels"] = list(data.grid.channels)
    result["data_stats"] = data.stats
    result["is_ensemble"] = evaluation["is_ensemble"]
    result["crps_is_mae"] = not evaluation["is_ensemble"]
    result["test_windows"] = evaluation["test_windows"]
    predict_s, load_s = evaluation["predict_seconds"], evaluation["eval_load_seconds"]
    result["throughput"] = {
        "samples_per_second": evaluation["samples_per_second"],
        "batch_size": evaluation["eval_batch_size"],
        "train_seconds": fit.seconds,
        "eval_seconds": evaluation["eval_seconds"],
        # fraction of training and evaluation time spent gathering batches and moving them
        "train_load_fraction": fit.data_seconds / fit.seconds if fit.seconds else 0.0,
        "eval_load_fraction": load_s / (load_s + predict_s) if load_s + predict_s else 0.0,
    }
    example = evaluation["example"]
    if example is not None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, forecast=example["forecast"], truth=example["truth"],
                            time=np.array(example["time"]), channels=np.array(data.grid.channels),
                            lat=np.array(data.grid.lat), lon=np.array(data.grid.lon),
                            lead_hours=np.array(data.grid.lead_hours))
        write_atomic(task.path.with_suffix(".example.npz"), buffer.getvalue())
    if evaluation["forecasts"] is not None:
        from .forecast_io import write_wb2_forecasts

        path = task.path.with_suffix(".forecast.zarr")  # WB2 forecast layout (wxbench.forecast_io)
        write_wb2_forecasts(path, evaluation["forecasts"], evaluation["init_times"], data.grid,
                            ensemble=evaluation["is_ensemble"])
        result["forecast_file"] = path.name


def plan_tasks(models: list[str], benchmark: Benchmark, profile: str, seeds: list[int], **kwargs: Any) -> list[RunTask]:
    return [RunTask(model=m, benchmark=benchmark, profile=profile, seed=s, **kwargs) for s in seeds for m in models]


def completed(task: RunTask) -> bool:
    """A finished, successful result exists (``--resume`` skips it; error rows are rerun)."""
    from .results import read_result

    try:
        return read_result(task.path).get("status") == "ok"
    except (OSError, ValueError):
        return False


def run_local(tasks: list[RunTask], *, resume: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """The default executor: in-process, one model after another."""
    results = []
    for task in progress_bar(tasks, desc="models", unit="model", leave=True):
        if resume and completed(task):
            from .results import read_result

            results.append(read_result(task.path))
            continue
        results.append(run_task(task, progress=progress))
    return results

