"""Exceptions raised by wxbench. Every message names the file, variable, plugin or option at fault."""

from __future__ import annotations


class WxbenchError(Exception):
    """Base class for all errors that wxbench raises on purpose."""


class DataError(WxbenchError, ValueError):
    """Bad or missing input data: a file, variable, grid or time axis that cannot be used."""


class ConfigError(WxbenchError, ValueError):
    """A bad option: unknown model, benchmark or profile, or an unusable device."""


class PluginError(WxbenchError):
    """A plugin broke its contract (import failure, duplicate name, wrong output)."""


class ContractViolation(PluginError):
    """A forecaster or encoder returned output of the wrong shape, dtype or with non-finite values."""
