"""In-memory splits and fast window gathering.

A split is one contiguous float32 tensor ``(T, C, H, W)``; a window is 12 inputs + 4 targets at
consecutive 6 h steps. A batch of windows is gathered with one index operation (start indices plus
a step offset), with no per-sample xarray or pandas work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np
import torch

from ..interfaces import GridSpec

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


@dataclass
class SplitData:
    """One split, normalised for one model, with fast window access."""

    name: str
    fields: torch.Tensor  # (T, C, H, W) float32, normalised, contiguous
    times: np.ndarray  # datetime64[ns], (T,)
    starts: torch.Tensor  # (N,) int64 window start indices
    grid: GridSpec
    normaliser: Normaliser
    _offsets: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        steps = self.grid.input_steps + self.grid.output_steps
        self._offsets = torch.arange(steps, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def windows(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """History (B, 12, C, H, W) and target (B, 4, C, H, W) for windows ``index``."""
        starts = self.starts[index]
        # one gather of whole frames: index_select copies contiguous rows, 2.4x faster on CPU than
        # advanced indexing with the 2-D index (measured: 1.5 vs 3.6 ms for a batch of 32)
        rows = (starts[:, None] + self._offsets).reshape(-1)
        frames = self.fields.index_select(0, rows).view(len(starts), -1, *self.fields.shape[1:])  # (B, 16, C, H, W)
        n_in = self.grid.input_steps
        return frames[:, :n_in], frames[:, n_in:]

    def window_times(self, index: torch.Tensor | slice) -> np.ndarray:
        """Initialisation time (last input state) of each window."""
        starts = self.starts[index].numpy()
        return self.times[starts + self.grid.input_steps - 1]

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: str | torch.device = "cpu", limit: int | None = None,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (history, target) batches on ``device``; ``limit`` caps the number of windows."""
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
