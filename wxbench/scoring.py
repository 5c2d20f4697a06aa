"""Re-scoring a trained model from its checkpoint, without retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data.benchmarks import Benchmark
from .errors import ConfigError
from .plugins import get_registry
from .profiles import get_profile
from .results import read_checkpoint, read_result
from .runtime import resolve_device


def rescore(result_file: Path, *, device: str = "auto") -> dict[str, Any]:
    """Rebuild the model a result file describes, load its checkpoint and score it on the test split."""
    from .runner import build_model, cached_benchmark_data, evaluate

    result = read_result(result_file)
    checkpoint = Path(result_file).with_suffix(".pt")
    if result.get("status") != "ok":
        raise ConfigError(f"{result_file}: the run failed ({result.get('error', {}).get('message')}); nothing to score")
    if not checkpoint.exists():
        why = result.get("checkpoint_error") or "was the run made with --no-checkpoint?"
        raise ConfigError(f"{result_file}: no checkpoint {checkpoint.name} beside it ({why})")
    bench_fields = dict(result["benchmark"])
    for key in ("channels", "train", "val", "test", "trajectories"):
        bench_fields[key] = tuple(bench_fields[key])
    benchmark = Benchmark(**bench_fields)
    data = cached_benchmark_data(benchmark)
    if data.data_hash != result["provenance"]["data_hash"]:
        raise ConfigError(f"{result_file}: the benchmark data changed since this result was made "
                          f"({result['provenance']['data_hash']} then, {data.data_hash} now)")
    reg = get_registry().forecaster(result["model"])
    device = resolve_device(device)
    model = build_model(reg, data.grid, result["profile"], device=device, seed=result["seed"],
                        ensemble_size=result.get("ensemble_size", 1), overrides=result["hyperparameters"])
    model.load_state_dict(read_checkpoint(checkpoint, map_location=device))
    evaluation = evaluate(model, reg, data, get_profile(result["profile"]))
    return {"model": result["model"], "scores": evaluation["scores"], "stored_scores": result["scores"]}
