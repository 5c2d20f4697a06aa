"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Every file wxbench writes for others to read (results, checkpoints, leaderboards, saved forecasts, the embedded
data cache and its completion marker) goes through :func:`atomic_path`. Imports nothing from wxbench, so both
the core and ``wxbench.data`` can use it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer; on success fsync it and rename it onto ``path``.

    The writer (``to_netcdf``, ``torch.save``, ``Path.write_bytes``) creates the file at the temporary path.
    If the block raises, the temporary file is removed and ``path`` is left as it was. The temporary name is
    hidden and ends in ``.tmp`` (``.seed0.json.<random>.tmp``), so folder scans such as ``seed*.json`` skip it;
    it lies in the same folder, so the rename is atomic. For files only: a directory (a zarr store) would need
    its own rename step.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:  # the data must be on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
