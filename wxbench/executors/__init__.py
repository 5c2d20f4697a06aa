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

__all__ = ["EXECUTORS"]

#: executor name -> "module:function" (imported only when that executor is chosen)
EXECUTORS = {
    "local": "wxbench.runner:run_local",
    "ray": "wxbench.executors.ray_executor:run_ray",
}
