"""Where data lives: a local path or an fsspec URL (``gs://``, ``s3://``, ``https://``, ``memory://``, ...).

Every reader and writer that takes a location goes through here, so that a remote store works
wherever a local one does, and a protocol whose package is missing is one clear error naming the
location and the package to install (``pip install 'wxbench[cloud]'``), raised by
:func:`filesystem` before any data is read.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from ..errors import DataError

__all__ = ["CLOUD_EXTRA", "PROTOCOL_PACKAGES", "display", "filesystem", "is_remote", "join",
           "local_file", "location_exists", "zarr_store"]

#: how to get the packages of the cloud protocols
CLOUD_EXTRA = "pip install 'wxbench[cloud]'"
#: protocol -> the package fsspec needs for it (the ones the ``cloud`` extra installs)
PROTOCOL_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "s3a": "s3fs", "http": "aiohttp",
                     "https": "aiohttp"}


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is a URL of a non-local filesystem (``gs://b/x.zarr``; not ``/x`` or ``file://``)."""
    return isinstance(location, str) and get_protocol(location) not in ("file", "local")


def _local(location: str | Path) -> str:
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return str(Path(text).expanduser())


def filesystem(location: str | Path, what: str = "data") -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem holding ``location`` and the path inside it.

    DataError (naming ``what`` and the location) for an unknown protocol, or one whose package is
    not installed, with the install hint. Makes no network request.
    """
    if not is_remote(location):
        return fsspec.filesystem("file"), _local(location)
    protocol = get_protocol(str(location))
    try:
        fsspec.get_filesystem_class(protocol)
        return fsspec.core.url_to_fs(str(location))
    except ImportError as exc:
        package = PROTOCOL_PACKAGES.get(protocol)
        needs = f"{package}: {CLOUD_EXTRA}" if package else f"a package fsspec names: {exc}"
        raise DataError(f"{what} {location}: reading {protocol}:// needs {needs}") from exc
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise DataError(f"{what} {location}: unknown protocol {protocol}:// ({exc})") from exc


def display(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """How to name ``path`` of ``fs`` in a message: a plain path locally, the full URL otherwise."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def location_exists(location: str | Path, what: str = "data") -> bool:
    """Whether ``location`` exists (a request to the store for a remote one)."""
    fs, path = filesystem(location, what)
    return bool(fs.exists(path))


def zarr_store(location: str | Path, what: str = "zarr store") -> Any:
    """What xarray's zarr engine opens: the local path, or an fsspec mapper of the remote store."""
    if not is_remote(location):
        return _local(location)
    fs, path = filesystem(location, what)
    return fs.get_mapper(path)


def local_file(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A local path to read ``path`` of ``fs`` from: itself, or for a remote file a copy in fsspec's
    temporary ``simplecache`` (netCDF libraries read local files only)."""
    if isinstance(fs, LocalFileSystem):
        return path
    return fsspec.open_local(f"simplecache::{fs.unstrip_protocol(path)}")


def join(*parts: str) -> str:
    """Join path parts of any filesystem (``/`` separated)."""
    return posixpath.join(*parts)
