"""Shared fixtures. The embedded-tiny benchmark (four weeks of the Held-Suarez simulation) is
generated once into the wxbench cache ($WXBENCH_CACHE or ~/.cache/wxbench) and reused."""

from __future__ import annotations

import pytest

from wxbench.progress import set_quiet

pytest_plugins = ["wxbench.testing"]

set_quiet(True)


@pytest.fixture(scope="session", autouse=True)
def benchmark_cache_in_tmp(tmp_path_factory):
    """Benchmark caches built by the tests (one per synthetic store) go to a temporary $WXBENCH_CACHE;
    its ``data/`` links to the real cache, so the embedded data is still generated only once."""
    from wxbench.data.embedded import cache_dir

    real = cache_dir() / "data"
    real.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("wxbench-cache")
    (tmp / "data").symlink_to(real, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WXBENCH_CACHE", str(tmp))
        yield tmp


@pytest.fixture(scope="session")
def tiny_benchmark():
    from wxbench.data.benchmarks import EMBEDDED_TINY

    return EMBEDDED_TINY


@pytest.fixture(scope="session")
def tiny_data(tiny_benchmark):
    from wxbench.runner import cached_benchmark_data

    return cached_benchmark_data(tiny_benchmark, progress=False)
