"""Splits, windows and normalisation, with window gathering straight from the frames on disk.

A split's frames are ``(T, C, H, W)`` float32 in physical units, usually a view of the memory-mapped
benchmark cache (:mod:`wxbench.data.cache`); a window is 12 inputs + 4 targets at consecutive 6 h steps.
A batch of windows is gathered with one index operation (start indices plus a step offset) and then
normalised, with no per-sample xarray or pandas work and without holding a normalised copy of the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Literal

import numpy as np
import torch

from ..interfaces import GridSpec

if TYPE_CHECKING:
    from .climatology import Climatology

Kind = Literal["zscore", "minmax"]


@dataclass(frozen=True)
class Normaliser:
    """Per-channel affine scaling, ``normalised = (x - offset) / scale``, on the channel dim (-3).

    zscore: offset = mean, scale = std.  minmax to [-1, 1]: offset = (max + min) / 2, scale = (max - min) / 2.
    Statistics come from the training split only.
    """

    kind: Kind
    channels: tuple[str, ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def from_stats(cls, kind: Kind, stats: dict[str, dict[str, float]]) -> Normaliser:
        channels = tuple(stats)
        if kind == "zscore":
            offset = [stats[c]["mean"] for c in channels]
            scale = [stats[c]["std"] for c in channels]
        elif kind == "minmax":
            offset = [(stats[c]["max"] + stats[c]["min"]) / 2 for c in channels]
            scale = [(stats[c]["max"] - stats[c]["min"]) / 2 for c in channels]
        else:
            raise ValueError(f"unknown normalisation {kind!r}: zscore or minmax")
        return cls(kind, channels, tuple(offset), tuple(scale))

    def _affine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (len(self.channels), 1, 1)
        offset = torch.tensor(self.offset, dtype=x.dtype, device=x.device).view(shape)
        scale = torch.tensor(self.scale, dtype=x.dtype, device=x.device).view(shape)
        return offset, scale

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        offset, scale = self._affine(x)
        return (x - offset) / scale

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        offset, scale = self._affine(x)
        return torch.addcmul(offset, x, scale)  # x * scale + offset in one pass (scoring runs it per batch)


def channel_stats(fields: torch.Tensor, channels: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """mean, std (population), min, max per channel of a (T, C, H, W) tensor, in float64."""
    stats = {}
    for i, name in enumerate(channels):
        x = fields[:, i].double()
        stats[name] = {"mean": x.mean().item(), "std": x.std(unbiased=False).item(),
                       "min": x.min().item(), "max": x.max().item()}
    return stats


class StatsAccumulator:
    """:func:`channel_stats` over a split streamed in blocks of time (float64, Chan et al.'s pairwise update
    of mean and sum of squared deviations), so that no split has to be in memory at once."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels
        n = len(channels)
        self.count = 0
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)
        self.min = np.full(n, np.inf)
        self.max = np.full(n, -np.inf)

    def update(self, block: np.ndarray) -> None:
        """Add a ``(t, C, H, W)`` block of values (one channel at a time: float64 copies stay small)."""
        n_b = block[:, 0].size
        if n_b == 0:
            return
        mean_b, m2_b, min_b, max_b = (np.empty(len(self.channels)) for _ in range(4))
        for c in range(len(self.channels)):
            x = torch.from_numpy(np.ascontiguousarray(block[:, c])).double()
            mean_b[c] = x.mean().item()
            m2_b[c] = ((x - mean_b[c]) ** 2).sum().item()
            min_b[c], max_b[c] = x.min().item(), x.max().item()
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.count * n_b / total)
        self.count = total
        self.min = np.minimum(self.min, min_b)
        self.max = np.maximum(self.max, max_b)

    def result(self) -> dict[str, dict[str, float]]:
        std = np.sqrt(self.m2 / self.count)
        return {c: {"mean": float(self.mean[i]), "std": float(std[i]), "min": float(self.min[i]),
                    "max": float(self.max[i])} for i, c in enumerate(self.channels)}


def window_starts(times: np.ndarray, window_steps: int, step: np.timedelta64, stride: int = 1) -> np.ndarray:
    """Start indices of all windows of ``window_steps`` consecutive times, ``step`` apart.

    A window whose times are not consecutive (a gap, e.g. between two simulated trajectories) is
    excluded; ``stride`` keeps every stride-th valid start (test initialisation spacing).
    """
    n = len(times)
    if n < window_steps:
        return np.zeros(0, dtype=np.int64)
    consecutive = np.diff(times) == step  # consecutive[i]: times[i] -> times[i+1] is one step
    # number of breaks inside each candidate window, via a cumulative sum
    breaks = np.concatenate([[0], np.cumsum(~consecutive)])
    starts = np.arange(n - window_steps + 1)
    valid = breaks[starts + window_steps - 1] - breaks[starts] == 0
    return starts[valid][::stride].astype(np.int64)


def init_window_starts(times: np.ndarray, input_steps: int, output_steps: int, step: np.timedelta64,
                       first_init: np.datetime64, last_init: np.datetime64, init_hours: tuple[int, ...]
                       ) -> np.ndarray:
    """Start indices of the windows initialised in ``first_init .. last_init`` at one of ``init_hours`` (UTC).

    WeatherBench 2's convention: the initialisation is a window's last input state; its history may lie
    before ``first_init`` and its targets after ``last_init``, as long as all of the window's states are in
    ``times`` and consecutive (no gap). ``times`` decides how far they may reach.
    """
    starts = window_starts(times, input_steps + output_steps, step)
    inits = times[starts + input_steps - 1]
    hours = (inits - inits.astype("datetime64[D]")) // np.timedelta64(1, "h")
    on_the_hour = inits == inits.astype("datetime64[h]")
    keep = (inits >= first_init) & (inits <= last_init) & np.isin(hours, init_hours) & on_the_hour
    return starts[keep]


class SplitData:
    """One split for one model: its frames, its windows, and the normalisation the model wants.

    ``SplitData(name, fields, times, starts, grid, normaliser)`` wraps frames that are already normalised
    (what plugins build, e.g. latent codes); :meth:`from_frames` wraps frames in physical units, typically a
    view of the memory-mapped benchmark cache, and normalises each gathered batch instead. Either way
    ``starts`` index ``times`` and the frames, and ``windows`` / ``batches`` / ``fields`` return normalised
    values, bit for bit the same in both cases.
    """

    def __init__(self, name: str, fields: torch.Tensor | None, times: np.ndarray, starts: torch.Tensor,
                 grid: GridSpec, normaliser: Normaliser, *, frames: torch.Tensor | None = None,
                 climatology: Climatology | None = None) -> None:
        if (fields is None) == (frames is None):
            raise ValueError("SplitData: give either normalised fields or physical frames")
        self.name = name
        self._fields = fields
        self._frames = frames  # physical units, (T, C, H, W)
        self.times = times  # datetime64[ns], (T,)
        self.starts = starts  # (N,) int64 window start indices
        self.grid = grid
        self.normaliser = normaliser
        #: the benchmark's climatology in physical units (for the climatology baseline, or a model forecasting
        #: anomalies); None for a split built without one (plugins' own splits, wxbench.testing's)
        self.climatology = climatology
        self._offsets = torch.arange(grid.input_steps + grid.output_steps, dtype=torch.int64)

    @classmethod
    def from_frames(cls, name: str, frames: torch.Tensor, times: np.ndarray, starts: torch.Tensor, grid: GridSpec,
                    normaliser: Normaliser, climatology: Climatology | None = None) -> SplitData:
        return cls(name, None, times, starts, grid, normaliser, frames=frames, climatology=climatology)

    @property
    def fields(self) -> torch.Tensor:
        """The whole split normalised, ``(T, C, H, W)`` float32. Built (and kept) at the first access: this
        holds the split in memory, which gathering windows never does."""
        if self._fields is None:
            self._fields = self.normaliser.normalise(self._frames).contiguous()
        return self._fields

    @fields.setter
    def fields(self, value: torch.Tensor) -> None:
        self._fields = value
        self._frames = None

    @property
    def n_frames(self) -> int:
        return len(self.times)

    def __len__(self) -> int:
        return len(self.starts)

    def __repr__(self) -> str:
        return f"SplitData({self.name!r}, frames={self.n_frames}, windows={len(self)}, {self.normaliser.kind})"

    def windows(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """History (B, 12, C, H, W) and target (B, 4, C, H, W) for windows ``index``, normalised."""
        starts = self.starts[index]
        n_in = self.grid.input_steps
        if self._fields is not None:
            # one gather of whole frames: index_select copies contiguous rows, 2.4x faster on CPU than
            # advanced indexing with the 2-D index (measured: 1.5 vs 3.6 ms for a batch of 32)
            rows = (starts[:, None] + self._offsets).reshape(-1)
            frames = self._fields.index_select(0, rows).view(len(starts), -1, *self._fields.shape[1:])
            return frames[:, :n_in], frames[:, n_in:]
        # from the memory map: a window is a contiguous block of frames, whose offset is subtracted
        # on the way into the batch, then one in-place division: two passes over the batch instead of
        # three (gather, subtract, divide), the same operations as normalise, so the same bits
        steps = len(self._offsets)
        offset, scale = self.normaliser._affine(self._frames[:1])
        frames = torch.empty((len(starts), steps, *self._frames.shape[1:]), dtype=self._frames.dtype)
        for i, start in enumerate(starts.tolist()):
            torch.sub(self._frames[start:start + steps], offset, out=frames[i])
        frames.div_(scale)
        return frames[:, :n_in], frames[:, n_in:]

    def frame_blocks(self, block: int = 256) -> Iterator[torch.Tensor]:
        """The split's frames, normalised, ``block`` at a time (for a pass over a split too big for memory)."""
        for a in range(0, self.n_frames, block):
            if self._fields is not None:
                yield self._fields[a:a + block]
            else:
                yield self.normaliser.normalise(self._frames[a:a + block])

    def window_times(self, index: torch.Tensor | slice) -> np.ndarray:
        """Initialisation time (last input state) of each window."""
        starts = self.starts[index].numpy()
        return self.times[starts + self.grid.input_steps - 1]

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: str | torch.device = "cpu", limit: int | None = None,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (history, target) batches on ``device``; ``limit`` caps the number of windows.

        In order (``shuffle=False``), batch ``k`` holds windows ``k * batch_size .. (k + 1) * batch_size - 1``,
        whose initialisation times are ``window_times(slice(k * batch_size, (k + 1) * batch_size))``.
        """
        n = len(self) if limit is None else min(limit, len(self))
        order = torch.randperm(len(self), generator=generator)[:n] if shuffle else torch.arange(n)
        non_blocking = torch.device(device).type == "cuda"
        for i in range(0, n, batch_size):
            history, target = self.windows(order[i:i + batch_size])
            if non_blocking:
                history, target = history.pin_memory(), target.pin_memory()
            yield history.to(device, non_blocking=non_blocking), target.to(device, non_blocking=non_blocking)

    def evenly_spaced(self, limit: int) -> torch.Tensor:
        """Indices of at most ``limit`` windows spread over the split (for cheap validation)."""
        n = len(self)
        if n <= limit:
            return torch.arange(n)
        return torch.linspace(0, n - 1, limit).round().long().unique()
