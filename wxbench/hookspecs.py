"""The hooks a wxbench plugin implements. Each receives a ``register`` callback, so the core owns the
collection, rejects duplicate names and knows which plugin gave what.

A plugin is a module exposed through the ``wxbench`` entry-point group::

    [project.entry-points.wxbench]
    mymodels = "mymodels.plugin"

whose hook implementations are marked with ``wxbench.hookimpl``.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("wxbench")
hookimpl = pluggy.HookimplMarker("wxbench")


@hookspec
def wxbench_register_forecasters(register: Callable[..., None]) -> None:
    """Register Forecaster classes: ``register(cls, name=None, **variant_hyperparameters)``.

    ``name`` defaults to ``cls.name``; keyword arguments fix hyperparameters for a named variant,
    e.g. ``register(LatentUNet, name="latent_unet_sd", encoder="sd_vae")``.
    """


@hookspec
def wxbench_register_encoders(register: Callable[..., Any]) -> None:
    """Register Encoder classes: ``register(cls, name=None, **variant_hyperparameters)``."""
