"""The Ray executor: every (model, benchmark, profile, seed) run is one Ray task.

``wxbench run --all --executor ray [--address ADDR]``. Without an address a local Ray instance is
started (and shut down at the end); with one (``auto``, ``HOST:6379`` or ``ray://HOST:10001``) the run
joins that cluster. Ray itself is an optional extra: ``pip install 'wxbench[ray]'``.

What each task does and asks for
    A task calls :func:`wxbench.runner.run_task`, exactly what the local executor calls: it writes the
    result JSON (and checkpoint and example forecast) atomically with the same writer, and turns
    every fault of the model into an error row. Resources: ``num_cpus`` (default 1; Ray then sets
    ``OMP_NUM_THREADS=1`` in the worker) and one GPU when the run wants one: ``--device cuda[:N]``, or
    ``--device auto`` with the ``gpu`` profile on a cluster that has GPUs. A run that gets no GPU is
    pinned to the CPU, so it never uses a GPU that Ray gave to another task; a run that gets one uses
    ``cuda`` (the one GPU Ray made visible to it).

Failures
    A task whose worker dies (killed, out of memory, segfault, node lost) or that raises outside the
    model's own run is retried ``retries`` times by Ray (``max_retries``, ``retry_exceptions``); after
    that the driver writes its error row itself, with the same writer and in the same layout as
    ``run_task``'s error rows (:func:`wxbench.runner.error_result`, stage ``"ray worker"``). A model's
    own exception is not retried: it is an error row at once, as in a local run.

Data: cached once per node, memory-mapped by every worker
    The driver loads each benchmark once (:func:`wxbench.data.loading.load_benchmark`), which builds the
    benchmark's on-disk cache (:mod:`wxbench.data.cache`: one memory-mapped float32 file of the frames) if it
    is not there yet. A task receives only the benchmark, the cache folder and the data hash. A worker whose
    node sees that folder (the driver's node, or any node when ``$WXBENCH_CACHE`` is on a shared filesystem)
    maps the same file: the node's page cache holds one copy of the data for all its workers, nothing is
    copied through the object store, and those workers need neither the data files nor ``--data-path``. A
    worker on another node builds the cache there from the source (once per node: a file lock makes the
    other workers wait for it, then map it), so that node needs the data path, and the data hash must agree
    with the driver's or the run is an error row. Windows are gathered and normalised per batch from the
    map, so no worker holds a split in memory; the opened data are kept in the worker process for its next
    task on the same data.

Results
    The result files are written where ``--output`` points (made absolute on the driver). Use a
    folder every node sees (NFS, a mounted bucket) so checkpoints and example forecasts land in one
    place; if a worker's result file is not visible on the driver, the driver writes the JSON it got
    back so that the leaderboard is still complete, and warns once.
"""

from __future__ import annotations

import datetime as dt
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data.loading import BenchmarkData, load_benchmark, open_cached_benchmark
from ..errors import ConfigError, DataError
from ..progress import progress_bar
from ..results import read_result, write_result
from ..runner import RunTask, completed, error_result, run_task

__all__ = ["run_ray", "task_resources"]

MISSING_RAY = "--executor ray needs Ray: pip install 'wxbench[ray]'"
#: error stage of a run whose Ray task died (worker killed, node lost) or raised outside run_task
WORKER_STAGE = "ray worker"


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(MISSING_RAY) from exc
    return ray


def task_resources(task: RunTask, *, cluster_gpus: float = 0.0, num_cpus: float = 1) -> dict[str, float]:
    """The Ray resource request of one run: ``num_cpus`` CPUs, and one GPU when the run wants one."""
    if task.device.startswith("cuda"):
        gpus = 1
    elif task.device == "auto":
        gpus = 1 if task.profile == "gpu" and cluster_gpus >= 1 else 0
    else:
        gpus = 0
    return {"num_cpus": num_cpus, "num_gpus": gpus}


# -- worker side ----------------------------------------------------------------------------------

def _payload(data: BenchmarkData) -> dict[str, Any]:
    """What a task gets: where the cache is and what it must hold, not the data themselves."""
    return {"benchmark": data.benchmark, "cache_folder": str(data.cache.folder), "data_hash": data.data_hash}


_WORKER_DATA: tuple[tuple[Any, str], BenchmarkData] | None = None


def _from_payload(payload: dict[str, Any]) -> BenchmarkData:
    """The benchmark's data over the node's memory-mapped cache, kept for the next task of this worker process."""
    global _WORKER_DATA

    key = (payload["benchmark"], payload["data_hash"])
    if _WORKER_DATA is not None and _WORKER_DATA[0] == key:
        return _WORKER_DATA[1]
    if Path(payload["cache_folder"], "meta.json").exists():
        data = open_cached_benchmark(payload["benchmark"], payload["cache_folder"])
    else:  # another node: build this node's cache from the source
        data = load_benchmark(payload["benchmark"], progress=False)
    if data.data_hash != payload["data_hash"]:
        raise DataError(f"benchmark {payload['benchmark'].key}: the data on this node ({data.cache.folder}, data hash "
                        f"{data.data_hash}) differ from the driver's ({payload['data_hash']})")
    _WORKER_DATA = (key, data)
    return data


def _run_in_worker(task: RunTask, payload: dict[str, Any] | None) -> dict[str, Any]:
    """The body of one Ray task (module level, so workers import it instead of unpickling code)."""
    from ..progress import set_quiet

    set_quiet(True)  # worker output goes to the driver's log; the driver shows one progress bar
    data = _from_payload(payload) if payload is not None else None
    return run_task(task, progress=False, data=data)


# -- driver side ----------------------------------------------------------------------------------

def _worker_task(task: RunTask, gpus: float) -> RunTask:
    """The task as a worker runs it: absolute output folder, device fitting the resources it got."""
    device = task.device
    if gpus >= 1 and device.startswith("cuda"):
        device = "cuda"  # Ray exposes exactly the GPU(s) it assigned, as cuda:0
    elif gpus == 0 and device == "auto":
        device = "cpu"  # never use a GPU that was not reserved for this task
    return replace(task, output=str(Path(task.output).expanduser().resolve()), device=device)


def _failure(exc: BaseException) -> tuple[BaseException, str]:
    """The exception to report for a failed Ray task, and its traceback text."""
    cause = getattr(exc, "cause", None)  # RayTaskError wraps the worker's own exception
    if isinstance(cause, BaseException):
        text = str(exc)  # holds the worker-side traceback
        return cause, text
    return exc, "".join(traceback.format_exception(exc, limit=8))


def run_ray(tasks: list[RunTask], *, address: str | None = None, resume: bool = False, retries: int = 0,
            progress: bool = True, num_cpus: float = 1, init_kwargs: dict[str, Any] | None = None
            ) -> list[dict[str, Any]]:
    """Run ``tasks`` as Ray tasks; return their result dicts in task order (see the module docstring).

    ``address``: a Ray cluster to join (None: reuse an initialised Ray, else start a local one).
    ``resume``: skip tasks whose successful result exists, like the local executor. ``retries``: Ray
    retries of a task that dies. ``num_cpus``: CPUs per task. ``init_kwargs``: extra ``ray.init``
    arguments (e.g. ``runtime_env``).
    """
    ray = _import_ray()
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    todo: list[int] = []
    for i, task in enumerate(tasks):
        if resume and completed(task):
            results[i] = read_result(task.path)
        else:
            todo.append(i)
    if not todo:
        return results  # type: ignore[return-value]

    started_here = False
    if not ray.is_initialized():
        ray.init(address=address, **(init_kwargs or {}))
        started_here = True
    try:
        _run_pending(ray, tasks, todo, results, address=address, started_here=started_here, retries=retries,
                     progress=progress, num_cpus=num_cpus)
    finally:
        if started_here:
            ray.shutdown()
    return results  # type: ignore[return-value]


def _run_pending(ray, tasks: list[RunTask], todo: list[int], results: list[dict[str, Any] | None], *,
                 address: str | None, started_here: bool, retries: int, progress: bool, num_cpus: float) -> None:
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    resources = {i: task_resources(tasks[i], cluster_gpus=cluster_gpus, num_cpus=num_cpus) for i in todo}
    if cluster_gpus < 1 and any(r["num_gpus"] for r in resources.values()):
        if started_here and address is None:
            raise ConfigError("--device cuda: the local Ray instance has no GPU; use --device cpu or auto, or "
                              "--address of a Ray cluster with GPUs")
        print("warning: --device cuda: the Ray cluster has no GPU now; those runs wait until a node with a GPU "
              "joins", file=sys.stderr)

    # the data: cached once on the driver's node, the workers map the cache (see the module docstring)
    payloads: list[tuple[Any, Any]] = []  # (benchmark, ObjectRef or None); a Benchmark is not hashable
    for bench in [tasks[i].benchmark for i in todo]:
        if any(b == bench for b, _ in payloads):
            continue
        started = dt.datetime.now(dt.timezone.utc)
        try:
            data = load_benchmark(bench, progress=progress)
        except Exception as exc:  # noqa: BLE001 - every run on this benchmark becomes an error row
            tb = traceback.format_exc(limit=8)
            for j in todo:
                if tasks[j].benchmark == bench:
                    results[j] = error_result(tasks[j], "load data", exc, started=started, tb=tb)
                    write_result(tasks[j].path, results[j])
            payloads.append((bench, None))
            continue
        payloads.append((bench, ray.put(_payload(data))))
    todo = [i for i in todo if results[i] is None]

    remote = ray.remote(_run_in_worker)
    refs: dict[Any, int] = {}
    for i in todo:
        ref = next(r for b, r in payloads if b == tasks[i].benchmark)
        res = resources[i]
        future = remote.options(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_retries=retries,
                                retry_exceptions=retries > 0, name=f"wxbench:{tasks[i].model}:seed{tasks[i].seed}"
                                ).remote(_worker_task(tasks[i], res["num_gpus"]), ref)
        refs[future] = i
    submitted = dt.datetime.now(dt.timezone.utc)
    warned = False
    bar = progress_bar(total=len(refs), desc="models (ray)", unit="model", leave=True) if progress else None
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        for future in done:
            i = refs[future]
            task = tasks[i]
            try:
                result = ray.get(future)
            except Exception as exc:  # noqa: BLE001 - a dead or failed Ray task becomes an error row
                cause, tb = _failure(exc)
                result = error_result(task, WORKER_STAGE, cause, started=submitted, tb=tb)
                write_result(task.path, result)
            else:
                if not task.path.exists():  # the worker wrote to a folder the driver does not see
                    write_result(task.path, result)
                    if not warned:
                        warned = True
                        print(f"warning: result files written by Ray workers are not visible here under {task.output};"
                              " the driver wrote the result JSON, but checkpoints and example forecasts stay on the "
                              "worker nodes (give --output a folder every node shares)", file=sys.stderr)
            results[i] = result
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
