"""Progress bars (tqdm) that one switch silences, for CI logs and tests."""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm

_quiet = os.environ.get("WXBENCH_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=_quiet, **kwargs)
