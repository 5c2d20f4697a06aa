"""Plugin discovery: real entry points, guarded loading, duplicate names, misspelled hooks, the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from wxbench import Forecaster, hookimpl
from wxbench.cli import main
from wxbench.errors import ConfigError
from wxbench.plugins import Registry

ROOT = Path(__file__).resolve().parents[1]


def _fake_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """A minimal installed distribution (dist-info with an entry point) on a private sys.path entry."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[wxbench]\n{dist} = {module}\n")


@pytest.fixture
def private_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def test_installed_plugins_register_their_models():
    registry = Registry()
    registry.load_entry_points()
    assert {"persistence", "climatology", "lr", "lr_multi"} <= set(registry.forecasters)
    reg = registry.forecaster("lr")
    assert reg.plugin == "baselines" and reg.distribution == "wxbench-baselines"


def test_broken_plugin_is_reported_and_the_others_still_load(private_site, monkeypatch):
    _fake_distribution(private_site, "broken-plugin", "broken_wxbench_plugin",
                       "raise ImportError('needs a library that is not installed')\n")
    registry = Registry()
    registry.load_entry_points()
    info = registry.plugins["broken-plugin"]
    assert "Error importing plugin 'broken-plugin'" in info.error
    assert "needs a library that is not installed" in info.error
    assert "persistence" in registry.forecasters  # the rest loaded

    from wxbench import plugins

    monkeypatch.setattr(plugins, "_REGISTRY", registry)
    out = CliRunner().invoke(main, ["plugins"])
    assert out.exit_code == 0
    assert "broken-plugin" in out.output and "ERROR: Error importing plugin" in out.output
    assert "forecasters: lr, lr_multi" in out.output
    # the core's reference baselines come first, from the built-in plugin
    assert out.output.startswith("wxbench  (wxbench ") and "forecasters: persistence, climatology" in out.output


def test_misspelled_hook_is_reported(private_site):
    _fake_distribution(private_site, "typo-plugin", "typo_wxbench_plugin", """
        from wxbench import hookimpl

        @hookimpl
        def wxbench_register_forecaster(register):  # missing "s"
            pass
    """)
    registry = Registry()
    registry.load_entry_points()
    assert "wxbench_register_forecaster" in registry.plugins["typo-plugin"].error
    assert "persistence" in registry.forecasters


class _Dup(Forecaster):
    name = "persistence"

    def fit(self, train, val, budget): ...
    def predict(self, history): ...
    def state_dict(self): return {}
    def load_state_dict(self, state): ...


def test_duplicate_model_name_names_both_plugins():
    class Plugin:
        @hookimpl
        def wxbench_register_forecasters(self, register):
            register(_Dup)

    registry = Registry()
    registry.load_entry_points()
    info = registry.add_plugin(Plugin(), name="dup-plugin")
    assert "'persistence' registered twice" in info.error
    assert "'wxbench'" in info.error and "'dup-plugin'" in info.error
    assert registry.forecasters["persistence"].plugin == "wxbench"


def test_registering_a_non_forecaster_is_an_error():
    class Plugin:
        @hookimpl
        def wxbench_register_forecasters(self, register):
            register(dict)

    registry = Registry()
    info = registry.add_plugin(Plugin(), name="bad")
    assert "not a Forecaster subclass" in info.error


def test_unknown_model_suggests_a_close_name():
    registry = Registry()
    registry.load_entry_points()
    with pytest.raises(ConfigError, match="did you mean 'persistence'"):
        registry.forecaster("persistance")


class _InProc(Forecaster):
    name = "inproc_model"

    def fit(self, train, val, budget): ...
    def predict(self, history): ...
    def state_dict(self): return {}
    def load_state_dict(self, state): ...


class _InProcPlugin:
    @hookimpl
    def wxbench_register_forecasters(self, register):
        register(_InProc)


def test_in_process_plugin_through_the_fixture(wxbench_registry):
    from wxbench.plugins import get_registry

    wxbench_registry.add_plugin(_InProcPlugin(), name="inproc")
    assert get_registry().forecaster("inproc_model").plugin == "inproc"


def test_example_plugin_installs_and_is_discovered_through_its_entry_point(tmp_path, monkeypatch):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "wxbench-example-plugin")],
                   check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(target))
    registry = Registry()
    registry.load_entry_points()
    reg = registry.forecaster("damped_persistence")
    assert reg.distribution == "wxbench-example-plugin" and reg.version == "0.1.0"
    from wxbench.testing import check_forecaster

    check_forecaster(reg.cls)


def test_cli_help_documents_every_command():
    out = CliRunner().invoke(main, ["--help"])
    assert out.exit_code == 0
    for command in ("plugins", "list", "run", "data", "leaderboard", "score", "benchmarks", "bench"):
        assert command in out.output
    run_help = CliRunner().invoke(main, ["run", "--help"]).output
    for option in ("--all", "--model", "--benchmark", "--profile", "--device", "--seed", "--resume", "--output",
                   "--executor", "--save-forecasts"):
        assert option in run_help


def test_bad_options_fail_before_any_work(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["run", "-m", "persistance", "--output", str(tmp_path)])
    assert out.exit_code == 2 and "did you mean 'persistence'" in out.output
    out = runner.invoke(main, ["run", "--all", "--benchmark", "embeded", "--output", str(tmp_path)])
    assert out.exit_code == 2 and "unknown benchmark 'embeded'" in out.output and "did you mean 'embedded'" in out.output
    out = runner.invoke(main, ["run", "--all", "--profile", "fast", "--output", str(tmp_path)])
    assert out.exit_code == 2 and "fast" in out.output
    import torch

    if not torch.cuda.is_available():
        out = runner.invoke(main, ["run", "--all", "--device", "cuda", "--output", str(tmp_path)])
        assert out.exit_code == 2 and "CUDA is not available" in out.output
    assert not any(tmp_path.iterdir())  # nothing was started
