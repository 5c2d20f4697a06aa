"""Benchmarks: frozen, versioned definitions of data, variables, grid, splits and initialisation hours.

A benchmark never changes once released; a change to its data, splits or initialisation times gets a new
version. Users define their own in a TOML file with the same fields (see ``Benchmark.from_toml``).

The train split is a range of states: every training window lies wholly inside it. The val and test splits
are ranges of *initialisation* times (WeatherBench 2's convention): a window initialised in the range at one of
``init_hours`` may take its history from before the range and its targets from after it, where the data
exist (docs/protocol.md, "Windows and initialisation times").
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: int
    description: str
    source: str  # "embedded" | "wb1" | "wb2"
    channels: tuple[str, ...]
    train: tuple[str, str]  # inclusive ISO time ranges
    val: tuple[str, str]
    test: tuple[str, str]
    input_steps: int = 12
    output_steps: int = 4
    step_hours: int = 6
    #: UTC hours at which val and test windows are initialised (the init is a window's last input state)
    init_hours: tuple[int, ...] = (0, 12)
    #: data location for wb1/wb2 sources (a folder or zarr store); overridable with --data-path
    path: str | None = None
    #: a WB2 climatology store (zarr, dayofyear x hour x grid) that ACC and the climatology baseline use instead of
    #: the one computed from the training split (wxbench.data.climatology); overridable with --climatology
    climatology: str | None = None
    #: embedded source only: the simulated trajectories, see wxbench.data.embedded
    trajectories: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: embedded source only: the name of the generated data in the cache (default: ``key``). A new version
    #: that changes only the splits keeps it, so the same simulation is not generated again.
    data_key: str | None = None

    def __hash__(self) -> int:  # trajectories hold dicts; hash the frozen definition instead
        import json

        return hash(json.dumps(self.as_dict(), sort_keys=True))

    @property
    def key(self) -> str:
        return f"{self.name}-v{self.version}"

    @property
    def window_steps(self) -> int:
        return self.input_steps + self.output_steps

    def split_range(self, split: str) -> tuple[np.datetime64, np.datetime64]:
        """Inclusive range: of states (train), of initialisation times (val, test)."""
        start, end = getattr(self, split)
        return np.datetime64(start, "ns"), np.datetime64(end, "ns")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_path(self, path: str | None) -> Benchmark:
        return self if path is None else replace(self, path=str(path))

    def validate(self) -> None:
        if self.source not in ("embedded", "wb1", "wb2"):
            raise ConfigError(f"benchmark {self.name!r}: unknown source {self.source!r} (embedded, wb1 or wb2)")
        bounds = [self.split_range(s) for s in SPLITS]
        for split, (start, end) in zip(SPLITS, bounds):
            if end < start:
                raise ConfigError(f"benchmark {self.name!r}: split {split!r} ends before it starts ({start} > {end})")
        for (a, (_, a_end)), (b, (b_start, _)) in zip(zip(SPLITS, bounds), zip(SPLITS[1:], bounds[1:])):
            if b_start <= a_end:
                raise ConfigError(f"benchmark {self.name!r}: splits {a!r} and {b!r} overlap")
        hours = self.init_hours
        if (not hours or list(hours) != sorted(set(hours))
                or any(not isinstance(h, int) or not 0 <= h < 24 or h % self.step_hours for h in hours)):
            raise ConfigError(f"benchmark {self.name!r}: init_hours must be distinct UTC hours in increasing order, "
                              f"each in 0..23 and a multiple of step_hours ({self.step_hours}); got {list(hours)}")

    @classmethod
    def from_toml(cls, path: str | Path) -> Benchmark:
        """Read a user-defined benchmark. Required keys: name, version, source, channels, train, val, test;
        optional: description, path, init_hours (default [0, 12]), input_steps, output_steps, step_hours."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"benchmark file {path}: {exc}") from exc
        raw = raw.get("benchmark", raw)
        known = {f for f in cls.__dataclass_fields__}
        if "test_stride" in raw:
            raise ConfigError(f"benchmark file {path}: 'test_stride' was replaced by 'init_hours', the UTC hours of "
                              "the val and test initialisations, e.g. init_hours = [0, 12] (the default)")
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"benchmark file {path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        missing = {"name", "version", "source", "channels", "train", "val", "test"} - set(raw)
        if missing:
            raise ConfigError(f"benchmark file {path}: missing keys {sorted(missing)}")
        raw.setdefault("description", f"user-defined benchmark from {path}")
        for key in ("channels", "train", "val", "test", "init_hours"):
            if key in raw:
                raw[key] = tuple(raw[key])
        raw["trajectories"] = tuple(raw.get("trajectories", ()))
        # a relative path is relative to the TOML file; a URL (gs://..., an fsspec location) is kept as given
        if raw.get("path") is not None and "://" not in raw["path"] and not Path(raw["path"]).is_absolute():
            raw["path"] = str((path.parent / raw["path"]).resolve())
        if raw.get("climatology") is not None and "://" not in raw["climatology"] \
                and not Path(raw["climatology"]).is_absolute():
            raw["climatology"] = str((path.parent / raw["climatology"]).resolve())
        bench = cls(**raw)
        bench.validate()
        return bench


# The embedded default: Held-Suarez simulations on the WeatherBench 5.625 deg grid (see embedded.py).
# Two independent trajectories run in parallel (one per core); the training split spans the first
# and the start of the second, so no window crosses from one trajectory into the other (the gap in
# the time axis between them breaks any window) and val/test come from the second trajectory's end.
# Version 2: val/test are ranges of initialisation times at 00/12 UTC (version 1 had windows wholly
# inside each split, initialised at 06/18 UTC); the generated data are those of version 1.
EMBEDDED = Benchmark(
    name="embedded",
    version=2,
    description=("Held-Suarez primitive-equation simulation (dinosaur, T21 equiangular = WeatherBench "
                 "5.625 deg), generated locally; no seasonal or diurnal cycle"),
    source="embedded",
    channels=("z500", "t850", "u850", "v850"),
    train=("2000-01-01T00", "2001-09-30T18"),
    val=("2001-10-01T00", "2001-12-31T18"),
    test=("2002-01-01T00", "2002-06-30T18"),
    trajectories=(
        {"start": "spunup-0", "seed": 0, "start_time": "2000-01-01T00", "days": 456},
        {"start": "spunup-1", "seed": 1, "start_time": "2001-04-02T00", "days": 455},
    ),
    data_key="embedded-v1",
)

# A few weeks of the same simulation, for tests and quick trials (about a minute to generate).
EMBEDDED_TINY = Benchmark(
    name="embedded-tiny",
    version=2,
    description="a few weeks of the embedded simulation, for tests and quick trials",
    source="embedded",
    channels=("z500", "t850", "u850", "v850"),
    train=("2000-01-01T00", "2000-01-15T18"),
    val=("2000-01-16T00", "2000-01-21T18"),
    test=("2000-01-22T00", "2000-01-28T18"),
    trajectories=(
        {"start": "spunup-0", "seed": 0, "start_time": "2000-01-01T00", "days": 28},
    ),
    data_key="embedded-tiny-v1",
)

# wb1/wb2 version 2: val/test initialised at 00/12 UTC over their whole range (WeatherBench 2's convention)
WB1 = Benchmark(
    name="wb1-5.625",
    version=2,
    description="WeatherBench 1 at 5.625 deg (netCDF, one folder per variable); ClimaX/ClimateLearn splits",
    source="wb1",
    channels=("z500", "t850", "t2m"),
    train=("1979-01-01T00", "2015-12-31T18"),
    val=("2016-01-01T00", "2016-12-31T18"),
    test=("2017-01-01T00", "2018-12-31T18"),
)

WB2 = Benchmark(
    name="wb2-64x32",
    version=2,
    description="WeatherBench 2 64x32 equiangular zarr; official evaluation year 2020",
    source="wb2",
    channels=("z500", "t850", "t2m"),
    train=("1979-01-01T00", "2017-12-31T18"),
    val=("2018-01-01T00", "2019-12-31T18"),
    test=("2020-01-01T00", "2020-12-31T18"),
)

BUILTIN_BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (EMBEDDED, EMBEDDED_TINY, WB1, WB2)}
DEFAULT_BENCHMARK = EMBEDDED.name


def get_benchmark(name_or_path: str, data_path: str | None = None) -> Benchmark:
    """A built-in benchmark by name, or a user's benchmark from a TOML file."""
    if name_or_path.endswith(".toml"):
        if not Path(name_or_path).is_file():
            raise ConfigError(f"benchmark file {name_or_path} does not exist")
        return Benchmark.from_toml(name_or_path).with_path(data_path)
    if name_or_path not in BUILTIN_BENCHMARKS:
        close = difflib.get_close_matches(name_or_path, list(BUILTIN_BENCHMARKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown benchmark {name_or_path!r}{hint} Known: {', '.join(BUILTIN_BENCHMARKS)}, "
                          "or a path to a .toml file")
    return BUILTIN_BENCHMARKS[name_or_path].with_path(data_path)
