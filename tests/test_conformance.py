"""Every registered forecaster and encoder passes the same contract checks (timm-style parametrisation
over the registry), so a new plugin is checked without new tests."""

from __future__ import annotations

import pytest

from wxbench.plugins import get_registry
from wxbench.testing import check_encoder, check_forecaster

REGISTRY = get_registry()
FORECASTERS = sorted(REGISTRY.forecasters)
ENCODERS = sorted(REGISTRY.encoders)


def test_every_installed_plugin_loads():
    failed = {name: info.error for name, info in REGISTRY.plugins.items() if info.error}
    assert not failed, failed


@pytest.mark.parametrize("name", FORECASTERS)
def test_forecaster_conformance(name):
    check_forecaster(REGISTRY.forecaster(name))  # built as the runner builds it, variant included


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_conformance(name):
    check_encoder(REGISTRY.encoder(name))


@pytest.mark.parametrize("name", FORECASTERS + ENCODERS)
def test_documented(name):
    """Every model says what it is: a module or class docstring and a family."""
    reg = REGISTRY.forecasters.get(name) or REGISTRY.encoders[name]
    import sys

    doc = (reg.cls.__doc__ or "") + (sys.modules[reg.cls.__module__].__doc__ or "")
    assert len(doc.strip()) > 40, f"{name}: document the model (architecture, defaults, choices)"
    assert reg.cls.family, name
