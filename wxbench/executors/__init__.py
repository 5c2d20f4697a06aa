"""Executors: how a list of :class:`wxbench.runner.RunTask` is run.

- ``local`` (the default, :func:`wxbench.runner.run_local`): in-process, one model after another; imports
  nothing beyond wxbench.
- ``ray`` (:func:`wxbench.executors.ray_executor.run_ray`): one Ray task per (model, benchmark, profile,
  seed) run, on a local Ray instance or an existing cluster; needs the optional extra
  ``pip install 'wxbench[ray]'``.

Every executor runs :func:`wxbench.runner.run_task` and writes the same result files with the same
atomic writer, so a leaderboard does not depend on where its results were computed.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["EXECUTORS", "load_executor"]

#: executor name -> "module:function" (imported only when that executor is chosen). Each function
#: takes ``(tasks, *, resume, progress, **its own options)`` and returns the result dicts in task order.
EXECUTORS = {
    "local": "wxbench.runner:run_local",
    "ray": "wxbench.executors.ray_executor:run_ray",
}


def load_executor(name: str) -> Callable[..., list[dict[str, Any]]]:
    """The run function of executor ``name`` (see :data:`EXECUTORS`)."""
    module, function = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), function)
