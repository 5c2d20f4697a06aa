"""The example third-party plugin (examples/wxbench-example-plugin), registered in-process from its
source file (nothing installed): it loads through the hook, and both its models pass the conformance
checks every registered model passes. (tests/test_plugins.py installs it and finds it through its
entry point.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from wxbench.plugins import Registry
from wxbench.testing import DEFAULT_GRID, check_forecaster, check_learns

PLUGIN_FILE = Path(__file__).resolve().parents[1] / "examples" / "wxbench-example-plugin" / "src" / \
    "wxbench_example" / "plugin.py"
MODELS = ("damped_persistence", "tendency_cnn")


def _load_plugin_module():
    # a name of its own, so that an installed copy of wxbench_example cannot stand in for the source
    spec = importlib.util.spec_from_file_location("wxbench_example_from_source", PLUGIN_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the model classes' module, for their docstrings and pickling
    spec.loader.exec_module(module)
    return module


PLUGIN = _load_plugin_module()


@pytest.fixture(scope="module")
def registry() -> Registry:
    registry = Registry()
    info = registry.add_plugin(PLUGIN, name="example", distribution="wxbench-example-plugin")
    assert info.error is None, info.error
    assert sorted(info.forecasters) == sorted(MODELS)
    return registry


@pytest.mark.parametrize("name", MODELS)
def test_example_models_pass_the_conformance_checks(registry, name, one_torch_thread):
    reg = registry.forecaster(name)
    assert reg.plugin == "example" and reg.cls.__module__ == "wxbench_example_from_source"
    check_forecaster(reg.cls, hyperparameters=dict(reg.variant))
    doc = (reg.cls.__doc__ or "") + (sys.modules[reg.cls.__module__].__doc__ or "")
    assert len(doc.strip()) > 40 and reg.cls.family


def test_tendency_cnn_learns(registry, one_torch_thread):
    check_learns(registry.forecaster("tendency_cnn").cls)


def test_tendency_cnn_is_built_from_wxbench_nn_and_starts_at_persistence(registry):
    from wxbench.nn import GridConv2d, TendencyWrapper

    cls = registry.forecaster("tendency_cnn").cls
    model = cls(DEFAULT_GRID, hidden=8)
    assert isinstance(model.module, TendencyWrapper)
    convs = [m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, GridConv2d) and m.lon_padding == "circular" for m in convs)
    history = torch.randn(2, 12, DEFAULT_GRID.n_channels, *DEFAULT_GRID.shape)
    assert torch.equal(model.predict(history), history[:, -1:].expand(-1, 4, -1, -1, -1))
