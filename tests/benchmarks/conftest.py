"""The speed suite: every test in this folder is marked ``bench`` (deselected by the default run;
``wxbench bench`` / ``tox -e bench`` run it with ``-m bench --benchmark-enable``).

The fixtures and the end-of-run ratio summary live in :mod:`wxbench.benchmarking`, so that plugin
authors can use the same ones (``pytest_plugins = ["wxbench.benchmarking"]`` in their conftest).
They are imported here rather than listed in ``pytest_plugins``, which pytest only allows in the
top-level conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wxbench.benchmarking import (  # noqa: F401 - fixtures and hooks, registered by import
    bench_split,
    model_factory,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_terminal_summary_regressions,
    registered_forecasters,
    window_batch,
)

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.bench)
