"""Result files are validated on read: foreign, damaged or other-version files are skipped with a reason."""

from __future__ import annotations

import json

import pytest

from wxbench.results import SCHEMA_VERSION, load_results, result_problem

GOOD = {"schema_version": SCHEMA_VERSION, "model": "m", "benchmark_key": "b-v1", "profile": "smoke", "seed": 0,
        "status": "ok", "scores": {"rmse": {"z500": [1.0, 2.0]}}, "channels": ["z500"], "lead_hours": [6, 12],
        "throughput": {"samples_per_second": 1.0}, "wall_seconds": 3.5}


def test_a_complete_result_has_no_problem():
    assert result_problem(GOOD) is None
    assert result_problem({**{k: v for k, v in GOOD.items() if k not in ("scores", "channels")},
                           "status": "error", "error": {"message": "boom"}}) is None


@pytest.mark.parametrize("change, reason", [
    ({"schema_version": 99}, "result schema version 99, this wxbench reads version"),
    ({"status": "running"}, "status 'running'"),
    ({"seed": "0"}, "field 'seed' is a str"),
    ({"seed": True}, "field 'seed' is a bool"),
    ({"scores": {"rmse": {"z500": [1.0]}}}, "scores['rmse']['z500'] is not one number per lead time"),
    ({"scores": {"rmse": {"t850": [1.0, 2.0]}}}, "scores['rmse']['z500'] is not one number per lead time"),
])
def test_damaged_results_are_named(change, reason):
    assert reason in result_problem({**GOOD, **change})


def test_missing_field_and_foreign_json():
    assert result_problem({k: v for k, v in GOOD.items() if k != "wall_seconds"}) == "missing field 'wall_seconds'"
    assert "not a wxbench result" in result_problem([1, 2])
    assert "not a wxbench result (no 'status')" in result_problem({"name": "my notes"})


def test_load_results_skips_bad_files_and_says_why(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "seed0.json").write_text(json.dumps(GOOD))
    (tmp_path / "m" / "seed1.json").write_text(json.dumps(GOOD)[:40])  # truncated
    (tmp_path / "m" / "seed2.json").write_text(json.dumps({**GOOD, "schema_version": 0}))
    (tmp_path / "m" / "seed3.json").write_text(json.dumps({"unrelated": True}))
    skipped = []
    results = load_results(tmp_path, skipped=skipped)
    assert [r["seed"] for r in results] == [0]
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"seed1.json", "seed2.json", "seed3.json"}
    assert reasons["seed1.json"].startswith("unreadable JSON (JSONDecodeError")
    assert "schema version 0" in reasons["seed2.json"]
    assert "no 'status'" in reasons["seed3.json"]
