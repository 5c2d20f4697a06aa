"""Shared fixtures. The embedded-tiny benchmark (four weeks of the Held-Suarez simulation) is
generated once into the wxbench cache ($WXBENCH_CACHE or ~/.cache/wxbench) and reused."""

from __future__ import annotations

import pytest

from wxbench.progress import set_quiet

pytest_plugins = ["wxbench.testing"]

set_quiet(True)


@pytest.fixture(scope="session")
def tiny_benchmark():
    from wxbench.data.benchmarks import EMBEDDED_TINY

    return EMBEDDED_TINY


@pytest.fixture(scope="session")
def tiny_data(tiny_benchmark):
    from wxbench.runner import cached_benchmark_data

    return cached_benchmark_data(tiny_benchmark, progress=False)
