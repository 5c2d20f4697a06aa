"""Result files: one typed JSON per (benchmark, profile, model, seed), written atomically.

Layout under the output folder::

    <benchmark>-v<version>/<profile>/<model>/seed<seed>.json          scores and provenance
    <benchmark>-v<version>/<profile>/<model>/seed<seed>.pt            checkpoint (wxbench score)
    <benchmark>-v<version>/<profile>/<model>/seed<seed>.example.npz   one test forecast, for the maps
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

#: bump when the JSON layout changes incompatibly
SCHEMA_VERSION = 1
DEFAULT_OUTPUT = "wxbench-results"


def result_dir(output: str | Path, benchmark_key: str, profile: str, model: str) -> Path:
    return Path(output) / benchmark_key / profile / model


def result_path(output: str | Path, benchmark_key: str, profile: str, model: str, seed: int) -> Path:
    return result_dir(output, benchmark_key, profile, model) / f"seed{seed}.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checkpoint(path: Path, state: Any) -> None:
    """torch.save straight to a temporary file, then rename (no in-memory copy of a large state)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(path: Path, result: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(result, indent=1, sort_keys=False, default=str) + "\n").encode())


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_results(folder: str | Path) -> list[dict[str, Any]]:
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
