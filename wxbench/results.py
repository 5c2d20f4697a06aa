"""Result files: one typed JSON per (benchmark, profile, model, seed), written atomically.

Layout under the output folder::

    <benchmark>-v<version>/<profile>/<model>/seed<seed>.json          scores and provenance
    <benchmark>-v<version>/<profile>/<model>/seed<seed>.pt            checkpoint (wxbench score)
    <benchmark>-v<version>/<profile>/<model>/seed<seed>.example.npz   one test forecast, for the maps
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypedDict

from .atomic import atomic_path, write_atomic

#: bump when the JSON layout changes incompatibly
SCHEMA_VERSION = 1
DEFAULT_OUTPUT = "wxbench-results"

Scores = dict[str, dict[str, list[float]]]  # metric -> channel -> value per lead time


class Result(TypedDict, total=False):
    """The JSON of one run, as :func:`wxbench.runner.run_task` writes it (the only place that
    assembles it; :func:`wxbench.runner.error_result` writes the same header for a run that died
    outside it). Keys after ``status`` are present when the stage that fills them was reached."""

    schema_version: int
    model: str
    benchmark: dict[str, Any]  # the frozen benchmark definition (Benchmark.as_dict)
    benchmark_key: str  # "<name>-v<version>"
    profile: str
    seed: int
    status: Literal["running", "ok", "error"]
    budget: dict[str, Any] | None  # the profile's Budget
    start_time: str
    end_time: str
    wall_seconds: float
    family: str
    hyperparameters: dict[str, Any]  # as resolved: defaults < variant < profile < user
    probabilistic: bool
    normalisation: str
    ensemble_size: int
    fit: dict[str, Any]  # FitReport.as_dict
    weights: str  # which weights the model used ("trained from scratch", a local path, ...)
    model_info: dict[str, Any]  # Forecaster.describe()
    checkpoint_error: str  # the trained model was scored, but its checkpoint could not be written
    scores: Scores
    reference_scores: dict[str, Scores]  # the core baselines' scores on the same test split
    lead_hours: list[int]
    channels: list[str]
    data_stats: dict[str, dict[str, float]]
    is_ensemble: bool
    crps_is_mae: bool
    test_windows: int
    throughput: dict[str, float]
    forecast_file: str
    peak_memory_bytes: int | None
    error: dict[str, str]  # stage, type, message (names the model and plugin), traceback
    provenance: dict[str, Any]


def result_dir(output: str | Path, benchmark_key: str, profile: str, model: str) -> Path:
    return Path(output) / benchmark_key / profile / model


def result_path(output: str | Path, benchmark_key: str, profile: str, model: str, seed: int) -> Path:
    return result_dir(output, benchmark_key, profile, model) / f"seed{seed}.json"


def write_checkpoint(path: Path, state: Any) -> None:
    """torch.save straight to the temporary file of an atomic write (no in-memory copy of a large state)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_result(path: Path, result: Result) -> None:
    write_atomic(path, (json.dumps(result, indent=1, sort_keys=False, default=str) + "\n").encode())


def read_result(path: Path) -> Result:
    return json.loads(Path(path).read_text())


def load_results(folder: str | Path) -> list[Result]:
    """Every result JSON under ``folder`` (temporary files of interrupted writes are ignored)."""
    results = []
    for path in sorted(Path(folder).rglob("seed*.json")):
        try:
            result = read_result(path)
        except (OSError, json.JSONDecodeError):
            continue  # cannot happen for files we wrote atomically; skip foreign junk
        if isinstance(result, dict) and result.get("schema_version") == SCHEMA_VERSION:
            result["_path"] = str(path)
            results.append(result)
    return results
