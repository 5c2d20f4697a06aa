"""The Ray executor on a local two-CPU Ray instance: same leaderboard as the local executor, error rows
for a model that raises and for a worker that dies, retries, resume, and the data read once."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from wxbench import plugins
from wxbench.cli import main
from wxbench.data.benchmarks import Benchmark
from wxbench.errors import ConfigError
from wxbench.executors import ray_executor
from wxbench.results import load_results
from wxbench.runner import RunTask
from wxbench.testing_data import TINY_PERIOD, write_benchmark_toml, write_wb2_layout

CHANNELS = ["z500", "t850"]
PERIOD = TINY_PERIOD
MODELS = ["persistence", "climatology", "lr", "faulty_raise"]
DETERMINISTIC = ["persistence", "climatology", "lr"]

# A plugin installed the real way (a dist-info with an entry point on a sys.path entry), so that Ray's
# worker processes, which share nothing with this one but the environment, load it too.
PLUGIN = '''
import os

from wxbench import FitReport, Forecaster, hookimpl


class Faulty(Forecaster):
    family = "test"
    hyperparameters = {"fault": "raise", "log": ""}

    def fit(self, train, val, budget):
        if self.hparams["log"]:
            with open(self.hparams["log"], "a") as fh:
                fh.write(f"{os.getpid()}\\n")
        if self.hparams["fault"] == "exit":
            os._exit(1)  # the worker process dies: no exception, no result
        raise RuntimeError("boom in fit")

    def predict(self, history):
        return history[:, -1:].expand(-1, 4, -1, -1, -1).clone()

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@hookimpl
def wxbench_register_forecasters(register):
    register(Faulty, name="faulty_raise", fault="raise")
    register(Faulty, name="faulty_exit", fault="exit")
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "wxbench_raytest_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "raytest-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: raytest\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wxbench]\nraytest = wxbench_raytest_plugin\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        registry = plugins.Registry()
        registry.load_entry_points()
        assert "faulty_exit" in registry.forecasters, registry.plugins.get("raytest")
        mp.setattr(plugins, "_REGISTRY", registry)
        yield site


@pytest.fixture(scope="module")
def cluster(plugin_site):
    ray = pytest.importorskip("ray")
    pythonpath = os.pathsep.join([str(plugin_site), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "WXBENCH_QUIET": "1"}})
    # start both workers' imports now; they run while this process does the local-executor run
    warm_up = ray.remote(num_cpus=1)(lambda: __import__("wxbench.runner").plugins.get_registry() is not None)
    warm = [warm_up.remote() for _ in range(2)]
    yield
    ray.get(warm)
    ray.shutdown()


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb2")
    store = write_wb2_layout(root / "data.zarr", CHANNELS, PERIOD)
    return write_benchmark_toml(root / "bench.toml", name="tiny-wb2", source="wb2", data=store, channels=CHANNELS)


def _run(*args: str) -> str:
    out = CliRunner().invoke(main, ["run", "--profile", "smoke", "--quiet", "--seeds", "0 1", "--no-leaderboard",
                                    *[a for m in MODELS for a in ("-m", m)], *args])
    assert out.exit_code == 1, out.output + repr(out.exception)  # 1: a run failed (faulty_raise, by design)
    return out.output


def _board(folder: Path) -> dict:
    from wxbench.leaderboard import build_leaderboards

    build_leaderboards(folder, plots=False)
    return json.loads((folder / "leaderboards" / "tiny-wb2-v1" / "smoke" / "leaderboard.json").read_text())


def test_ray_leaderboard_equals_local_and_data_is_read_once(tmp_path, cluster, bench_file, monkeypatch):
    _run("--benchmark", str(bench_file), "--output", str(tmp_path / "local"))  # while the Ray workers start

    store = Path(Benchmark.from_toml(bench_file).path)
    hidden = store.with_name("hidden.zarr")
    loads = []
    load = ray_executor.load_benchmark

    def load_then_hide(bench, **kwargs):
        """The driver reads the data once, then the store disappears: workers must use the shared copy."""
        data = load(bench, **kwargs)
        loads.append(bench.key)
        store.rename(hidden)
        return data

    monkeypatch.setattr(ray_executor, "load_benchmark", load_then_hide)
    try:
        _run("--executor", "ray", "--benchmark", str(bench_file), "--output", str(tmp_path / "ray"))
    finally:
        if hidden.exists():
            hidden.rename(store)
        monkeypatch.undo()
    assert loads == ["tiny-wb2-v1"]  # one read for 8 runs

    ray_runs = {(r["model"], r["seed"]): r for r in load_results(tmp_path / "ray")}
    local_runs = {(r["model"], r["seed"]): r for r in load_results(tmp_path / "local")}
    assert set(ray_runs) == set(local_runs) == {(m, s) for m in MODELS for s in (0, 1)}
    for key, r in ray_runs.items():
        assert set(r) == set(local_runs[key]), key  # the same result layout
        assert r["status"] == local_runs[key]["status"] == ("error" if key[0] == "faulty_raise" else "ok")
        assert r["provenance"]["data_hash"] == local_runs[key]["provenance"]["data_hash"]
    error = ray_runs[("faulty_raise", 0)]["error"]
    assert error["stage"] == "fit" and "boom in fit" in error["message"] and "(plugin 'raytest')" in error["message"]

    ray_board, local_board = _board(tmp_path / "ray"), _board(tmp_path / "local")
    assert [r["model"] for r in ray_board["rows"]] == [r["model"] for r in local_board["rows"]]
    for ray_row, local_row in zip(ray_board["rows"], local_board["rows"]):
        assert set(ray_row) == set(local_row), ray_row["model"]
        assert ray_row["seeds"] == 2 and ray_row["status"] == local_row["status"]
        if ray_row["model"] in DETERMINISTIC:
            for c in CHANNELS:
                assert ray_row[f"rmse/{c}"] == pytest.approx(local_row[f"rmse/{c}"], rel=1e-5)
            assert ray_row["headline"] == pytest.approx(local_row["headline"], rel=1e-5)
    board_md = (tmp_path / "ray" / "leaderboards" / "tiny-wb2-v1" / "smoke" / "leaderboard.md").read_text()
    assert "boom in fit" in board_md and " ± " in board_md  # error row; mean ± std over the two seeds

    # --resume: finished results are kept, error rows are rerun, as with the local executor
    ok_file = next((tmp_path / "ray").rglob("persistence/seed0.json"))
    err_file = next((tmp_path / "ray").rglob("faulty_raise/seed0.json"))
    ok_before, err_before = ok_file.read_text(), json.loads(err_file.read_text())["end_time"]
    bench = Benchmark.from_toml(bench_file)
    tasks = [RunTask(model=m, benchmark=bench, profile="smoke", seed=0, device="cpu", output=str(tmp_path / "ray"))
             for m in ("persistence", "faulty_raise")]
    results = ray_executor.run_ray(tasks, resume=True, progress=False)
    assert [r["model"] for r in results] == ["persistence", "faulty_raise"]
    assert ok_file.read_text() == ok_before
    assert json.loads(err_file.read_text())["end_time"] != err_before


def test_dead_worker_and_escaping_exception_become_error_rows(tmp_path, cluster, bench_file):
    bench = Benchmark.from_toml(bench_file)
    attempts = tmp_path / "attempts.log"
    base = RunTask(model="faulty_exit", benchmark=bench, profile="smoke", seed=0, device="cpu",
                   output=str(tmp_path), hyperparameters={"log": str(attempts)})
    # an exception outside the model's run (here: an unknown profile) escapes run_task in the worker
    escaping = replace(base, model="persistence", profile="no-such-profile", hyperparameters={})
    results = ray_executor.run_ray([base, escaping], retries=1, progress=False)

    dead = results[0]
    assert len(attempts.read_text().split()) == 2  # the first try and one retry, both died
    assert dead["status"] == "error" and dead["error"]["stage"] == ray_executor.WORKER_STAGE
    assert dead["error"]["type"] == "WorkerCrashedError"
    assert "model 'faulty_exit' (plugin 'raytest') failed in ray worker" in dead["error"]["message"]
    on_disk = {r["model"]: r for r in load_results(tmp_path)}
    assert on_disk["faulty_exit"]["error"] == dead["error"] and on_disk["faulty_exit"]["family"] == "test"
    assert results[1]["status"] == "error" and results[1]["error"]["type"] == "ConfigError"
    assert "no-such-profile" in results[1]["error"]["message"]


def test_missing_ray_is_a_clear_error(monkeypatch, bench_file, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    task = RunTask(model="persistence", benchmark=Benchmark.from_toml(bench_file), profile="smoke",
                   output=str(tmp_path))
    with pytest.raises(ConfigError, match=r"pip install 'wxbench\[ray\]'"):
        ray_executor.run_ray([task])


def test_resource_requests():
    bench = Benchmark(name="b", version=1, description="", source="wb2", channels=("z500",),
                      train=("2000-01-01", "2000-02-01"), val=("2000-03-01", "2000-04-01"),
                      test=("2000-05-01", "2000-06-01"))
    task = RunTask(model="lr", benchmark=bench, profile="cpu", device="auto")
    assert ray_executor.task_resources(task, cluster_gpus=4) == {"num_cpus": 1, "num_gpus": 0}
    gpu = replace(task, profile="gpu")
    assert ray_executor.task_resources(gpu, cluster_gpus=4)["num_gpus"] == 1
    assert ray_executor.task_resources(gpu, cluster_gpus=0)["num_gpus"] == 0  # auto without GPUs: CPU, no hang
    assert ray_executor.task_resources(replace(task, device="cuda:1"))["num_gpus"] == 1
    assert ray_executor._worker_task(replace(task, device="cuda:1"), 1).device == "cuda"
    assert ray_executor._worker_task(task, 0).device == "cpu"
    assert Path(ray_executor._worker_task(task, 0).output).is_absolute()

