"""Result files: one typed JSON per (benchmark, profile, model, seed), written atomically.

Layout under the output folder::

    <benchmark>-v<version>/<profile>/<model>/seed<seed>.json          scores and provenance
    <benchmark>-v<version>/<profile>/<model>/seed<seed>.pt            checkpoint (wxbench score)
    <benchmark>-v<version>/<profile>/<model>/seed<seed>.example.npz   one test forecast, for the maps
    <benchmark>-v<version>/<profile>/<model>/seed<seed>.forecast.zarr --save-forecasts, WB2 forecast layout
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypedDict

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
    forecast_file: str  # --save-forecasts: the WB2-layout zarr beside the result (wxbench.forecast_io)
    external: bool  # scored from a forecast file made elsewhere (wxbench evaluate); absent: trained here
    forecast_source: str  # external: the forecast file that was scored
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


def read_checkpoint(source: str | Path | BinaryIO, *, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without executing code: ``torch.load(weights_only=True)`` accepts tensors,
    numbers, strings and plain containers only, which is all a wxbench model state holds (every
    registered model is checked by the conformance tests). A checkpoint that holds anything else
    (e.g. a pickle that would run code: checkpoints are files users exchange) is refused with an
    error naming the file."""
    import pickle

    import torch

    from .errors import DataError

    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        name = getattr(source, "name", source)
        detail = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise DataError(f"checkpoint {name}: refused, it holds objects other than tensors and plain "
                        f"containers, which could run code when loaded ({detail})") from None


def write_result(path: Path, result: Result) -> None:
    write_atomic(path, (json.dumps(result, indent=1, sort_keys=False, default=str) + "\n").encode())


def read_result(path: Path) -> Result:
    return json.loads(Path(path).read_text())


#: what a result must hold to be read, by status (the rest of :class:`Result` is optional)
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "any": {"schema_version": int, "model": str, "benchmark_key": str, "profile": str, "seed": int, "status": str},
    "ok": {"scores": dict, "channels": list, "lead_hours": list, "throughput": dict, "wall_seconds": (int, float)},
    "error": {"error": dict},
}


def result_problem(obj: Any) -> str | None:
    """Why ``obj`` (a parsed JSON) is not a result this wxbench can read, or None when it is."""
    if not isinstance(obj, dict):
        return f"not a wxbench result (a JSON {type(obj).__name__}, not an object)"
    if "schema_version" in obj and obj["schema_version"] != SCHEMA_VERSION:
        return f"result schema version {obj['schema_version']!r}, this wxbench reads version {SCHEMA_VERSION}"
    status = obj.get("status")
    if status not in ("ok", "error"):
        return f"status {status!r} (expected 'ok' or 'error')" if "status" in obj else "not a wxbench result (no 'status')"
    for key, kind in {**_REQUIRED["any"], **_REQUIRED[status]}.items():
        if key not in obj:
            return f"missing field {key!r}"
        if not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            return f"field {key!r} is a {type(obj[key]).__name__}"
    if status == "ok":
        for metric, per_channel in obj["scores"].items():
            for channel in obj["channels"]:
                values = per_channel.get(channel) if isinstance(per_channel, dict) else None
                if not (isinstance(values, list) and len(values) == len(obj["lead_hours"])
                        and all(isinstance(v, (int, float)) for v in values)):
                    return f"scores[{metric!r}][{channel!r}] is not one number per lead time"
    return None


def load_results(folder: str | Path, *, skipped: list[tuple[Path, str]] | None = None) -> list[Result]:
    """Every valid result JSON under ``folder``. A file that cannot be read as a result of this
    schema (truncated, another version, hand-edited, unrelated) is left out and, when ``skipped``
    is given, appended to it as (path, reason). Temporary files of interrupted writes are hidden
    names and never matched."""
    results = []
    for path in sorted(Path(folder).rglob("seed*.json")):
        try:
            result = read_result(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem: str | None = f"unreadable JSON ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        else:
            problem = result_problem(result)
        if problem is not None:
            if skipped is not None:
                skipped.append((path, problem))
            continue
        result["_path"] = str(path)
        results.append(result)
    return results
