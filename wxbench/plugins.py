"""Plugin discovery: entry points of the ``wxbench`` group, loaded one by one with pluggy.

The core's own reference baselines (:mod:`wxbench.baselines`) are registered first, through the same
hook, as the built-in plugin ``wxbench`` (as llm ships its default plugins).

Loading is guarded per entry point: a plugin that fails to import is recorded with its error (and
shown by ``wxbench plugins``) while the others load. Two plugins registering one name is an error
that names both.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError
from .interfaces import Encoder, Forecaster

ENTRY_POINT_GROUP = "wxbench"
#: the in-process plugin name of the core's reference baselines
BUILTIN_PLUGIN = "wxbench"


@dataclass(frozen=True)
class Registration:
    """One registered model or encoder and where it came from."""

    name: str
    cls: type
    plugin: str  # entry-point name (or the in-process plugin's name)
    distribution: str | None
    version: str | None
    variant: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    forecasters: list[str] = field(default_factory=list)
    encoders: list[str] = field(default_factory=list)
    error: str | None = None  # "Error importing plugin X: ..." when it failed to load


class Registry:
    """Everything the installed plugins registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("wxbench")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.forecasters: dict[str, Registration] = {}
        self.encoders: dict[str, Registration] = {}

    # -- loading ---------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Register the built-in reference baselines, then every installed entry point."""
        if BUILTIN_PLUGIN not in self.plugins:
            from . import __version__, baselines

            self.add_plugin(baselines, name=BUILTIN_PLUGIN, distribution="wxbench", version=__version__)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if ep.name in self.plugins:
                continue  # the same distribution seen twice on sys.path
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure becomes a report
                self.plugins[ep.name] = PluginInfo(
                    ep.name, dist, version,
                    error=f"Error importing plugin {ep.name!r} ({ep.value}, distribution {dist}): "
                          f"{type(exc).__name__}: {exc}",
                )
                continue
            self.add_plugin(module, name=ep.name, distribution=dist, version=version)

    def add_plugin(self, module: ModuleType | object, *, name: str, distribution: str | None = None,
                   version: str | None = None) -> PluginInfo:
        """Register one plugin object and collect what its hooks register."""
        info = PluginInfo(name, distribution, version)
        self.plugins[name] = info
        try:
            self.pm.register(module, name=name)
            # a hook implementation whose name matches no spec is a typo; say which plugin has it
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001
            info.error = f"Error loading plugin {name!r}: {type(exc).__name__}: {exc}"
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            return info
        for hook, table, base in (
            ("wxbench_register_forecasters", self.forecasters, Forecaster),
            ("wxbench_register_encoders", self.encoders, Encoder),
        ):
            others = [p for p in self.pm.get_plugins() if p is not module]
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
            try:
                caller(register=self._registrar(info, table, base))
            except Exception as exc:  # noqa: BLE001 - a broken hook must not stop the other plugins
                info.error = f"Error in plugin {name!r} hook {hook}: {type(exc).__name__}: {exc}"
        return info

    def _registrar(self, info: PluginInfo, table: dict[str, Registration], base: type):
        def register(cls: type, name: str | None = None, **variant: Any) -> None:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise PluginError(f"plugin {info.name!r} registered {cls!r}, which is not a {base.__name__} subclass")
            model_name = name or getattr(cls, "name", None)
            if not model_name:
                raise PluginError(f"plugin {info.name!r} registered {cls.__name__} without a name")
            unknown = set(variant) - set(cls.hyperparameters)
            if unknown:
                raise PluginError(f"plugin {info.name!r} registered {model_name!r} with unknown "
                                  f"hyperparameters {sorted(unknown)}")
            clash = self.forecasters.get(model_name) or self.encoders.get(model_name)
            if clash is not None:
                raise PluginError(f"model name {model_name!r} registered twice: by plugin "
                                  f"{clash.plugin!r} and by plugin {info.name!r}")
            table[model_name] = Registration(model_name, cls, info.name, info.distribution,
                                             info.version, dict(variant))
            (info.encoders if base is Encoder else info.forecasters).append(model_name)

        return register

    # -- look-up ---------------------------------------------------------------------------------
    def forecaster(self, name: str) -> Registration:
        return self._lookup(name, self.forecasters, "model")

    def encoder(self, name: str) -> Registration:
        return self._lookup(name, self.encoders, "encoder")

    def _lookup(self, name: str, table: dict[str, Registration], what: str) -> Registration:
        if name in table:
            return table[name]
        close = difflib.get_close_matches(name, list(table), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        failed = [p.name for p in self.plugins.values() if p.error]
        also = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
        raise ConfigError(f"unknown {what} {name!r}{hint} Known: {', '.join(sorted(table)) or 'none'}{also}")


def registration_of(target: str | type | Registration) -> Registration:
    """A registered name (forecaster or encoder), a Registration, or a bare model class (taken as if
    registered under its ``name`` by no plugin: what the conformance checks and the speed suite accept)."""
    if isinstance(target, Registration):
        return target
    if isinstance(target, str):
        registry = get_registry()
        return registry.encoders[target] if target in registry.encoders else registry.forecaster(target)
    if isinstance(target, type) and issubclass(target, (Forecaster, Encoder)):
        return Registration(getattr(target, "name", target.__name__), target, "(not registered)", None, None)
    raise TypeError(f"expected a registered name, a Registration or a Forecaster/Encoder class, got {target!r}")


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry of installed plugins (loaded on first use)."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = Registry()
        _REGISTRY.load_entry_points()
    return _REGISTRY
