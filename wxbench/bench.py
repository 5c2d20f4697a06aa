"""``wxbench bench``: run the speed suite, save the run, compare with the previous run on this machine.

The suite is ``tests/benchmarks`` of a wxbench source checkout (pytest-benchmark; see
``wxbench.benchmarking`` and the README's "Speed suite" section). Each run is saved by
pytest-benchmark's ``--benchmark-autosave`` into ``.benchmarks/<machine id>/NNNN_<commit>_<time>.json``
at the checkout's root, where the machine id is pytest-benchmark's
``<system>-<implementation>-<python major.minor>-<bits>bit`` (e.g. ``Linux-CPython-3.11-64bit``).

That id names the platform, not the computer, so a previous run counts as "this machine's" only
if it also recorded this host name and CPU (pytest-benchmark stores both in the run's
``machine_info``): a ``.benchmarks`` folder shared between computers (a network home directory,
a copied checkout) then never compares one computer's times with another's. When such a run
exists, the newest one is compared with ``--benchmark-compare=NNNN
--benchmark-compare-fail=median:25%`` (a benchmark whose median is 25 % slower than in that run
fails the session); otherwise, as on the first run on a machine, the run is only saved.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError

BENCH_DIR = Path("tests") / "benchmarks"
STORAGE_DIR = ".benchmarks"


def find_bench_dir(tests_dir: str | Path | None = None) -> Path:
    """``tests/benchmarks`` of the checkout this wxbench is imported from, else of the current directory."""
    if tests_dir is not None:
        candidates = [Path(tests_dir)]
    else:
        package_root = Path(__file__).resolve().parent.parent
        candidates = [package_root / BENCH_DIR, Path.cwd() / BENCH_DIR]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("test_*.py")):
            return candidate.resolve()
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ConfigError(
        f"wxbench bench: no speed suite found (looked for test_*.py in {looked}). The suite lives in "
        "tests/benchmarks of a wxbench source checkout and is not part of an installed wheel: run "
        "`wxbench bench` from a clone installed with `pip install -e .` (or `tox -e bench` there)."
    )


def _check_tools() -> None:
    import importlib.util

    missing = [name for name in ("pytest", "pytest_benchmark") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"wxbench bench needs {' and '.join(m.replace('_', '-') for m in missing)}: "
                          "pip install -r requirements-test.txt (or run `tox -e bench`)")


def machine_id() -> str:
    """pytest-benchmark's name of the folder this machine's runs are saved in."""
    from pytest_benchmark.utils import get_machine_id

    return get_machine_id()


def _this_host() -> tuple[str, str | None]:
    from pytest_benchmark.plugin import get_cpu_info

    return platform.node(), (get_cpu_info() or {}).get("brand_raw")


def saved_runs(storage: Path) -> list[Path]:
    """This platform's saved runs (``NNNN_*.json``), oldest first."""
    folder = storage / machine_id()
    return sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.json")) if folder.is_dir() else []


def previous_run(storage: Path) -> tuple[Path | None, str]:
    """The newest saved run from this host and CPU, and a line saying what was found."""
    runs = saved_runs(storage)
    if not runs:
        return None, f"no saved run in {storage / machine_id()}: this first run is saved as the baseline"
    node, cpu = _this_host()
    others = set()
    for path in reversed(runs):
        try:
            info = json.loads(path.read_text(encoding="utf-8")).get("machine_info", {})
        except (OSError, ValueError):
            continue
        saved_cpu = (info.get("cpu") or {}).get("brand_raw")
        if info.get("node") == node and (cpu is None or saved_cpu is None or saved_cpu == cpu):
            return path, f"comparing with the previous run on this machine: {path}"
        others.add(f"{info.get('node')} ({saved_cpu})")
    return None, (f"the saved runs in {storage / machine_id()} come from other machines "
                  f"({', '.join(sorted(others))}), not {node} ({cpu}): this run is saved as this machine's baseline")


def _option_value(args: Sequence[str], option: str) -> str | None:
    value = None
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def _storage_path(args: Sequence[str], root: Path) -> Path | None:
    """The file storage the run saves to (None for a non-file storage such as elasticsearch)."""
    value = _option_value(args, "--benchmark-storage")
    if value is None:
        return root / STORAGE_DIR
    if value.startswith("file://"):
        value = value[len("file://"):]
    elif "://" in value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def bench_command(extra_args: Sequence[str] | None = None, *, compare_fail: str | None = "median:25%",
                  tests_dir: str | Path | None = None) -> tuple[list[str], Path, list[str]]:
    """The pytest command line, the directory it runs in, and lines describing the save/compare plan."""
    extra = list(extra_args or [])
    _check_tools()
    bench_dir = find_bench_dir(tests_dir)
    root = bench_dir.parent.parent if bench_dir.parent.name == "tests" else bench_dir.parent
    if compare_fail:
        from pytest_benchmark.utils import parse_compare_fail

        try:
            parse_compare_fail(compare_fail)
        except Exception as exc:  # argparse.ArgumentTypeError
            raise ConfigError(f"--compare-fail {compare_fail!r}: expected FIELD:PERCENT% or FIELD:SECONDS with FIELD "
                              "one of min, max, mean, median, stddev, iqr (e.g. median:25%)") from exc
    cmd = [sys.executable, "-m", "pytest", str(bench_dir), "-m", "bench", "--benchmark-enable",
           "--benchmark-autosave", "--benchmark-group-by=group"]
    plan = [f"speed suite: {bench_dir}"]
    storage = _storage_path(extra, root)
    if storage is None:
        plan.append("non-file --benchmark-storage: saving there, no automatic comparison")
    else:
        if _option_value(extra, "--benchmark-storage") is None:
            cmd.append(f"--benchmark-storage=file://{storage}")
        plan.append(f"saved runs: {storage / machine_id()}")
        if any(a.startswith("--benchmark-compare") for a in extra):
            plan.append("comparison as given on the command line")
        else:
            previous, line = previous_run(storage)
            plan.append(line)
            if previous is not None:
                cmd.append(f"--benchmark-compare={previous.name.split('_', 1)[0]}")
                if compare_fail:
                    cmd.append(f"--benchmark-compare-fail={compare_fail}")
                    plan.append(f"a benchmark fails the run if it regressed by more than {compare_fail}")
    return cmd + extra, root, plan


def run_bench(extra_args: list[str] | None = None, *, compare_fail: str | None = "median:25%",
              tests_dir: str | Path | None = None) -> int:
    """Run the speed suite (see the module docstring); returns pytest's exit code.

    ``extra_args`` are passed on to pytest (``-k forward``, ``--benchmark-columns=...``, ...);
    ``compare_fail`` is pytest-benchmark's ``--benchmark-compare-fail`` expression (None: compare
    without failing). Raises :class:`~wxbench.errors.ConfigError` when no suite is found.
    """
    cmd, root, plan = bench_command(extra_args, compare_fail=compare_fail, tests_dir=tests_dir)
    for line in plan:
        print(f"wxbench bench: {line}", flush=True)
    env = {**os.environ, "WXBENCH_QUIET": os.environ.get("WXBENCH_QUIET", "1")}
    return subprocess.call(cmd, cwd=root, env=env)
