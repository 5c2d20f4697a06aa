"""The runner end to end on WB1/WB2-layout files: results, error rows, resume, leaderboard, re-scoring."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from wxbench import Forecaster, hookimpl
from wxbench.cli import main
from wxbench.results import load_results
from wxbench.testing_data import TINY_PERIOD, write_benchmark_toml, write_wb1_layout, write_wb2_layout

CHANNELS = ["z500", "t850"]
PERIOD = TINY_PERIOD


def write_toml(path: Path, source: str, data: Path) -> Path:
    return write_benchmark_toml(path, name=f"tiny-{source}", source=source, data=data, channels=CHANNELS)


@pytest.fixture(scope="module")
def wb2_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb2")
    store = write_wb2_layout(root / "data.zarr", CHANNELS, PERIOD)
    return write_toml(root / "bench.toml", "wb2", store)


@pytest.fixture(scope="module")
def wb1_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb1")
    write_wb1_layout(root / "data", CHANNELS, ("1979-12-01T00", "1980-01-09T23"))
    return write_toml(root / "bench.toml", "wb1", root / "data")


def run_cli(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(main, ["run", "--profile", "smoke", "--quiet", *args])
    return out.exit_code, out.output


def test_wb1_and_wb2_layouts_give_identical_scores(tmp_path, wb1_benchmark, wb2_benchmark):
    for name, bench in (("wb1", wb1_benchmark), ("wb2", wb2_benchmark)):
        code, output = run_cli("-m", "persistence", "-m", "climatology", "--benchmark", str(bench),
                               "--output", str(tmp_path / name))
        assert code == 0, output
    wb1 = {r["model"]: r for r in load_results(tmp_path / "wb1")}
    wb2 = {r["model"]: r for r in load_results(tmp_path / "wb2")}
    for model in ("persistence", "climatology"):
        assert wb1[model]["status"] == wb2[model]["status"] == "ok"
        for metric in ("rmse", "mae", "acc"):
            for c in CHANNELS:
                # (nan_ok: the climatology forecast has no anomaly, so its ACC is 0/0)
                assert wb1[model]["scores"][metric][c] == pytest.approx(wb2[model]["scores"][metric][c], rel=1e-6,
                                                                        nan_ok=True)
    assert wb1["persistence"]["scores"]["rmse"]["z500"][0] > 0


class _Faulty(Forecaster):
    """A persistence model that breaks in the way its ``fault`` hyperparameter says."""

    family = "test"
    hyperparameters = {"fault": "none"}

    def fit(self, train, val, budget):
        from wxbench import FitReport

        if self.hparams["fault"] == "fit":
            raise RuntimeError("boom in fit")
        if self.hparams["fault"] == "slow":
            time.sleep(120)
        return FitReport(seconds=0.0)

    def predict(self, history):
        fault = self.hparams["fault"]
        if fault == "predict":
            raise ValueError("boom in predict")
        out = history[:, -1:].expand(-1, 4, -1, -1, -1).clone()
        if fault == "shape":
            return out[:, :3]
        if fault == "nan":
            out[0, 0, 0, 0, 0] = float("nan")
        return out

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class _FaultyPlugin:
    @hookimpl
    def wxbench_register_forecasters(self, register):
        for fault in ("fit", "predict", "shape", "nan", "slow"):
            register(_Faulty, name=f"faulty_{fault}", fault=fault)


def test_faulty_models_become_error_rows_and_others_are_intact(tmp_path, wb2_benchmark, wxbench_registry,
                                                               monkeypatch):
    from wxbench import profiles

    smoke = profiles.PROFILES["smoke"]
    monkeypatch.setitem(profiles.PROFILES, "smoke", replace(smoke, timeout_seconds=10))
    wxbench_registry.add_plugin(_FaultyPlugin(), name="faulty")
    models = ["persistence", "climatology", "faulty_fit", "faulty_predict", "faulty_shape", "faulty_nan", "faulty_slow"]
    args = [a for m in models for a in ("-m", m)]
    code, output = run_cli(*args, "--benchmark", str(wb2_benchmark), "--output", str(tmp_path))
    assert code == 1, output  # some runs failed: exit 1, after every run was written and ranked
    results = {r["model"]: r for r in load_results(tmp_path)}
    assert results["persistence"]["status"] == results["climatology"]["status"] == "ok"
    expected = {
        "faulty_fit": ("fit", "boom in fit"),
        "faulty_predict": ("predict", "boom in predict"),
        "faulty_shape": ("predict", "predict returned shape (8, 3, 2, 32, 64), expected (8, 4, 2, 32, 64)"),
        "faulty_nan": ("predict", "non-finite values"),
        "faulty_slow": ("fit", "ran past its time limit of 10 s"),
    }
    for model, (stage, message) in expected.items():
        error = results[model]["error"]
        assert results[model]["status"] == "error"
        assert error["stage"] == stage, (model, error)
        assert message in error["message"] and f"model {model!r} (plugin 'faulty')" in error["message"]
    board = (tmp_path / "leaderboards" / "tiny-wb2-v1" / "smoke" / "leaderboard.md").read_text()
    assert "## Errors" in board and "boom in fit" in board
    ranked = board.split("## Errors")[0]
    assert "persistence" in ranked and "faulty_fit" not in ranked


def test_resume_skips_finished_results_and_reruns_errors(tmp_path, wb2_benchmark, wxbench_registry):
    wxbench_registry.add_plugin(_FaultyPlugin(), name="faulty")
    args = ["-m", "persistence", "-m", "faulty_fit", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path)]
    assert run_cli(*args)[0] == 1  # faulty_fit failed
    ok_file = next(tmp_path.rglob("persistence/seed0.json"))
    err_file = next(tmp_path.rglob("faulty_fit/seed0.json"))
    ok_before, err_before = ok_file.read_text(), json.loads(err_file.read_text())["end_time"]
    assert run_cli(*args, "--resume")[0] == 1  # and fails again
    assert ok_file.read_text() == ok_before  # not rerun
    assert json.loads(err_file.read_text())["end_time"] != err_before  # rerun


def test_result_file_holds_scores_throughput_and_provenance(tmp_path, wb2_benchmark):
    code, output = run_cli("-m", "lr", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path), "--seed", "3")
    assert code == 0, output
    [result] = load_results(tmp_path)
    assert result["status"] == "ok" and result["seed"] == 3
    assert result["lead_hours"] == [6, 12, 18, 24] and result["channels"] == CHANNELS
    for metric in ("rmse", "mae", "bias", "acc", "crps"):
        assert set(result["scores"][metric]) == set(CHANNELS)
        assert len(result["scores"][metric]["z500"]) == 4
    assert result["crps_is_mae"] and result["scores"]["crps"] == result["scores"]["mae"]
    for key in ("samples_per_second", "train_seconds", "eval_seconds", "train_load_fraction", "eval_load_fraction",
                "batch_size"):
        assert key in result["throughput"]
    prov = result["provenance"]
    for key in ("wxbench_version", "plugin_distribution", "plugin_version", "git_commit", "git_dirty", "data_hash", "device",
                "device_name", "torch_version", "seed"):
        assert key in prov
    assert prov["plugin_distribution"] == "wxbench-baselines" and prov["data_hash"].startswith("sha256:")
    # alpha None: chosen on the validation split from the grid, and the chosen value is recorded
    assert result["budget"]["max_steps"] == 3 and result["hyperparameters"]["alpha"] is None
    assert result["model_info"]["alpha"] in result["hyperparameters"]["alpha_grid"]
    assert result["weights"] and result["model_info"]["parameters"] > 0
    assert result["peak_memory_bytes"] > 0
    folder = tmp_path / "leaderboards" / "tiny-wb2-v1" / "smoke"
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "rmse_vs_lead.png", "crps_vs_lead.png",
                 "maps/lr.png"):
        assert (folder / name).exists(), name


def test_score_rescores_from_the_checkpoint(tmp_path, wb2_benchmark):
    assert run_cli("-m", "lr", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path))[0] == 0
    result_file = next(tmp_path.rglob("lr/seed0.json"))
    out = CliRunner().invoke(main, ["score", str(result_file), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    scored = json.loads(out.output)
    for c in CHANNELS:
        assert scored["scores"]["rmse"][c] == pytest.approx(scored["stored_scores"]["rmse"][c], rel=1e-5)


def test_save_forecasts_writes_the_wb2_forecast_layout(tmp_path, wb2_benchmark):
    import xarray as xr

    assert run_cli("-m", "persistence", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path),
                   "--save-forecasts")[0] == 0
    path = next(tmp_path.rglob("persistence/seed0.forecast.zarr"))
    result = load_results(tmp_path)[0]
    assert result["forecast_file"] == "seed0.forecast.zarr"
    with xr.open_zarr(path) as ds:  # zarr format 2, consolidated, as WB2's evaluation opens it
        # z500 and t850 have different levels: one variable per channel with the level as a suffix
        # (WB2's --pressure_level_suffixes), not a union level axis half filled with NaN
        assert set(ds.data_vars) == {"geopotential_500", "temperature_850"} and "level" not in ds.dims
        assert ds.attrs["pressure_levels"] == "suffix"
        assert ds["geopotential_500"].dims == ("time", "prediction_timedelta", "longitude", "latitude")
        assert ds["geopotential_500"].attrs["units"] == "m**2 s**-2"
        assert ds["temperature_850"].attrs["long_name"] == "temperature at 850 hPa"
        assert ds.sizes["prediction_timedelta"] == 4 and bool(ds["temperature_850"].notnull().all())
        assert (ds["prediction_timedelta"].values == [torch.tensor(h).numpy() * 3600 * 10**9 for h in (6, 12, 18, 24)]).all()


def test_git_state_reports_commit_and_uncommitted_changes(tmp_path):
    from wxbench.runner import git_state

    assert git_state(tmp_path) == (None, None)  # not a checkout
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,  # noqa: E731
                                       env={**os.environ, **env})
    git("init", "-q")
    (tmp_path / "model.py").write_text("a = 1\n")
    git("add", "model.py")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD").stdout.decode().strip()
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "model.py").write_text("a = 2\n")
    assert git_state(tmp_path) == (head, True)


def test_leaderboard_shows_reconstruction_floor_next_to_forecast(tmp_path, wb2_benchmark):
    from wxbench.leaderboard import build_leaderboards

    assert run_cli("-m", "persistence", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path),
                   "--no-leaderboard")[0] == 0
    result_file = next(tmp_path.rglob("persistence/seed0.json"))
    result = json.loads(result_file.read_text())
    # as a latent model reports it (model_info["reconstruction_rmse"]); one variable left out
    result["model_info"]["reconstruction_rmse"] = {"z500": 123.456}
    result_file.write_text(json.dumps(result))
    build_leaderboards(tmp_path, plots=False)
    board = (tmp_path / "leaderboards" / "tiny-wb2-v1" / "smoke" / "leaderboard.md").read_text()
    floor = board.split("## Autoencoder reconstruction floor")[1].split("## Time per model")[0]
    forecast_24h = result["scores"]["rmse"]["z500"][-1]
    row = next(line for line in floor.splitlines() if line.startswith("| persistence"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"123 / {forecast_24h:.3g}"
    assert cells[2].startswith("- / ")  # no floor reported for that variable


def test_failed_checkpoint_write_keeps_the_scores(tmp_path, wb2_benchmark, monkeypatch):
    """A full disk loses the weights file, not the trained model's scores; the result and the CLI say why."""
    import errno

    def full_disk(path, state):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("wxbench.runner.write_checkpoint", full_disk)
    code, output = run_cli("-m", "lr", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path),
                           "--no-leaderboard")
    assert code == 0, output
    [result] = load_results(tmp_path)
    result_file = next(tmp_path.rglob("lr/seed0.json"))
    assert result["status"] == "ok" and set(result["scores"]["rmse"]) == set(CHANNELS)
    message = result["checkpoint_error"]
    assert str(result_file.with_suffix(".pt")) in message and "No space left on device" in message
    assert "GB free on its disk" in message
    assert "warning: model 'lr' was scored, but its checkpoint" in output
    assert not result_file.with_suffix(".pt").exists()
    # re-scoring then says why there is nothing to load
    out = CliRunner().invoke(main, ["score", str(result_file), "--device", "cpu"])
    assert out.exit_code != 0 and "No space left on device" in out.output


def test_a_model_run_alone_has_the_headline_of_the_full_table(tmp_path, wb2_benchmark):
    """Every result stores the reference scores it is normalised by: persistence run on its own (no
    climatology row in its folder) gets the same headline as beside climatology."""
    from wxbench.leaderboard import summarise

    alone, full = tmp_path / "alone", tmp_path / "full"
    assert run_cli("-m", "persistence", "--benchmark", str(wb2_benchmark), "--output", str(alone),
                   "--no-leaderboard")[0] == 0
    assert run_cli("-m", "persistence", "-m", "climatology", "--benchmark", str(wb2_benchmark),
                   "--output", str(full), "--no-leaderboard")[0] == 0
    result = load_results(alone)[0]
    climatology = next(r for r in load_results(full) if r["model"] == "climatology")
    # the stored reference is the climatology model's own score, bit for bit
    assert result["reference_scores"]["climatology"]["rmse"] == climatology["scores"]["rmse"]
    assert result["reference_scores"]["persistence"]["rmse"] == result["scores"]["rmse"]
    headline_alone = summarise(load_results(alone)).rows[0]["headline"]
    headline_full = next(r for r in summarise(load_results(full)).rows if r["model"] == "persistence")["headline"]
    assert headline_alone == headline_full
    last = -1
    expected = sum(result["scores"]["rmse"][c][last] / climatology["scores"]["rmse"][c][last]
                   for c in CHANNELS) / len(CHANNELS)
    assert headline_alone == pytest.approx(expected, rel=1e-12)


def test_a_result_without_reference_scores_says_why_it_has_no_headline(tmp_path, wb2_benchmark):
    from wxbench.leaderboard import build_leaderboards
    from wxbench.results import write_result

    assert run_cli("-m", "persistence", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path),
                   "--no-leaderboard")[0] == 0
    result = load_results(tmp_path)[0]
    path = Path(result.pop("_path"))
    del result["reference_scores"]  # as written by a wxbench from before reference scores were stored
    write_result(path, result)
    board = build_leaderboards(tmp_path, plots=False)[0].read_text()
    assert "## No headline score" in board
    assert "no climatology reference scores: the result predates them" in board


def test_seeds_option_takes_a_comma_list(tmp_path, wb2_benchmark):
    code, output = run_cli("-m", "persistence", "--seeds", "1,2", "--benchmark", str(wb2_benchmark),
                           "--output", str(tmp_path), "--no-leaderboard")
    assert code == 0, output
    assert sorted(r["seed"] for r in load_results(tmp_path)) == [1, 2]


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "expected integers separated by commas, e.g. --seeds 0,1,2"),
    (["--address", "auto"], "--address and --retries are options of the ray executor"),
    (["--retries", "2"], "--address and --retries are options of the ray executor"),
])
def test_bad_run_options_are_named(tmp_path, args, message):
    code, output = run_cli("-m", "persistence", *args, "--output", str(tmp_path))
    assert code != 0 and message in output, output
    assert not list(tmp_path.rglob("seed*.json"))  # refused before any work


def test_result_files_have_only_the_documented_keys(tmp_path, wb2_benchmark):
    """wxbench.results.Result documents every key a result file has (typed JSON, one schema)."""
    from typing import get_type_hints

    from wxbench.results import Result, read_result

    assert run_cli("-m", "persistence", "--benchmark", str(wb2_benchmark), "--output", str(tmp_path),
                   "--no-leaderboard")[0] == 0
    result = read_result(next(tmp_path.rglob("seed0.json")))
    undocumented = set(result) - set(get_type_hints(Result))
    assert not undocumented, f"result keys missing from wxbench.results.Result: {sorted(undocumented)}"


def test_exit_status_says_whether_every_run_succeeded(tmp_path, wb2_benchmark, wxbench_registry):
    """0: all runs ok; 1: some or all failed (every run still written); 2: refused before any work."""
    wxbench_registry.add_plugin(_FaultyPlugin(), name="faulty")
    bench = ["--benchmark", str(wb2_benchmark), "--no-leaderboard"]
    assert run_cli("-m", "persistence", *bench, "--output", str(tmp_path / "ok"))[0] == 0
    assert run_cli("-m", "persistence", "-m", "faulty_fit", *bench, "--output", str(tmp_path / "one"))[0] == 1
    assert len(load_results(tmp_path / "one")) == 2
    assert run_cli("-m", "faulty_fit", "-m", "faulty_predict", *bench, "--output", str(tmp_path / "all"))[0] == 1
    assert len(load_results(tmp_path / "all")) == 2


def test_a_misspelt_hyperparameter_is_refused_before_any_model_starts(tmp_path, wb2_benchmark):
    code, output = run_cli("-m", "persistence", "-m", "lr", "-H", "lr.alhpa=3", "--benchmark", str(wb2_benchmark),
                           "--output", str(tmp_path))
    assert code == 2, output
    assert "unknown hyperparameter(s) 'alhpa' (did you mean 'alpha'?)" in output
    assert not list(tmp_path.rglob("seed*.json"))


def test_foreign_and_damaged_result_files_are_skipped_with_a_reason(tmp_path, wb2_benchmark):
    """A truncated JSON, one of another schema version and an unrelated one give the same leaderboard
    as without them, plus one skip line each."""
    from wxbench.leaderboard import build_leaderboards

    assert run_cli("-m", "persistence", "-m", "climatology", "--benchmark", str(wb2_benchmark),
                   "--output", str(tmp_path), "--no-leaderboard")[0] == 0
    build_leaderboards(tmp_path, plots=False)
    board_json = tmp_path / "leaderboards" / "tiny-wb2-v1" / "smoke" / "leaderboard.json"
    clean = json.loads(board_json.read_text())
    good = next(tmp_path.rglob("persistence/seed0.json"))
    junk = good.parent.parent / "junk"
    junk.mkdir()
    (junk / "seed0.json").write_text(good.read_text()[:200])
    (junk / "seed1.json").write_text(good.read_text().replace('"schema_version": 1', '"schema_version": 7'))
    (junk / "seed2.json").write_text(json.dumps({"hello": "world"}))
    out = CliRunner().invoke(main, ["leaderboard", str(tmp_path), "--no-plots"])
    assert out.exit_code == 0, out.output
    assert "skipped 3 result file(s)" in out.output and "schema version 7" in out.output
    messy = json.loads(board_json.read_text())
    assert messy["rows"] == clean["rows"]
    assert len(messy["skipped_files"]) == 3
    board = board_json.with_suffix(".md").read_text()
    assert "## Skipped result files" in board and "unreadable JSON" in board


def test_a_missing_data_path_is_refused_before_any_model_starts(tmp_path):
    code, output = run_cli("-m", "persistence", "--benchmark", "wb2-64x32", "--data-path", str(tmp_path / "nowhere.zarr"),
                           "--output", str(tmp_path / "out"))
    assert code == 2, output
    assert f"benchmark 'wb2-64x32': data path {tmp_path / 'nowhere.zarr'} does not exist" in output
    assert not (tmp_path / "out").exists()
