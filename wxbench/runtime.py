"""Device choice, seeding and resource measurements shared by the runner and the bench suite."""

from __future__ import annotations

import random
import resource
import sys
import time
from typing import Callable

import numpy as np
import torch

from .errors import ConfigError


def resolve_device(device: str) -> str:
    """``auto`` picks cuda when available; asking for cuda without it is an error before any work."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); "
                          "use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return device


def device_name(device: str) -> str:
    """What ran the model: the GPU's name, or the CPU's model name and the torch thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    cpu = platform.processor() or platform.machine() or "cpu"
    try:  # Linux names the CPU model here; platform.processor() often only says "x86_64"
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {cpu}, {torch.get_num_threads()} torch threads"


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def peak_memory_bytes(device: str) -> int:
    """GPU: torch.cuda.max_memory_allocated; CPU: the process's peak resident set size."""
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def measure_throughput(predict: Callable[[torch.Tensor], torch.Tensor], history: torch.Tensor, *,
                       device: str, warmup: int = 1, repeats: int = 3) -> float:
    """Inference samples per second at ``history``'s batch size, after warm-up.

    On GPU the timed region ends with a synchronisation so asynchronous kernels are counted. The
    leaderboard and the bench suite both call this one function.
    """
    with torch.no_grad():
        for _ in range(warmup):
            predict(history)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            predict(history)
        synchronize(device)
        elapsed = time.perf_counter() - start
    return history.shape[0] * repeats / elapsed
