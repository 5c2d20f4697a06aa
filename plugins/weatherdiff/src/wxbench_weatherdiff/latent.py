"""Helpers shared by every WeatherDiff model that works in an encoder's latent space.

- :class:`ChannelAdapter`: the explicit 1x1-convolution adapter between C weather channels and an
  image model's 3 channels (or back), initialised to a channel-folding map (``C -> 3``: image
  channel ``k`` is the mean of weather channels ``j`` with ``j % 3 == k``) or its pseudo-inverse
  (``3 -> C``), so that an untrained adapter already passes every weather channel through.
- :func:`frame_batch`: single frames for encoder training, drawn from the windows that
  :func:`wxbench.training.train_module` hands to a loss (so encoders train with the one shared loop).
- :func:`make_encoder`, :func:`fit_encoder`, :func:`sub_budget`: a forecaster builds its own encoder
  (``vae_type`` ``"sd"`` or ``"rae"``) and trains it on part of its own budget first; the encoder's
  :class:`~wxbench.FitReport` and seconds go to the forecaster's ``FitReport.extra``.
- :func:`encode_split`: encode every frame of a split (or ``max_frames`` of them, in contiguous
  chunks) once into a latent :class:`~wxbench.SplitData` with the matching window starts, so that
  ``train_module`` can draw latent windows directly (no encoder pass per training step).
- :class:`LatentScaler`: per-latent-channel mean/std standardisation from training latents (the
  role of Stable Diffusion's ``scaling_factor``, measured instead of assumed).
- :func:`reconstruction_rmse`: the latitude-weighted RMSE in physical units of encode -> decode on
  evenly spaced frames of a split: the floor under which no latent model's forecast can go.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from wxbench import Budget, Encoder, FitReport, GridSpec
from wxbench.data.splits import SplitData

__all__ = ["ChannelAdapter", "LatentScaler", "cache_frames", "encode_split", "fit_encoder", "frame_batch", "make_encoder",
           "reconstruction_rmse", "sub_budget"]

ENCODER_NAMES = {"sd": "sd_vae", "rae": "rae"}


def folding_matrix(c_in: int, c_out: int) -> torch.Tensor:
    """(c_out, c_in) map: output k = mean of inputs j with j % c_out == k (zero rows when c_in < c_out)."""
    w = torch.zeros(c_out, c_in)
    for j in range(c_in):
        w[j % c_out, j] = 1.0
    counts = w.sum(dim=1, keepdim=True)
    return torch.where(counts > 0, w / counts.clamp(min=1), w)


class ChannelAdapter(nn.Conv2d):
    """1x1 convolution ``in_channels -> out_channels`` with a channel-folding initialisation.

    ``inverse=True`` initialises with the pseudo-inverse of the folding map ``out -> in`` (the decoder
    side), so that ``inverse(fold(x))`` reproduces the weather channels when C <= 3.
    """

    def __init__(self, in_channels: int, out_channels: int, *, inverse: bool = False) -> None:
        super().__init__(in_channels, out_channels, 1)
        with torch.no_grad():
            w = torch.linalg.pinv(folding_matrix(out_channels, in_channels)) if inverse \
                else folding_matrix(in_channels, out_channels)
            self.weight.copy_(w[:, :, None, None])
            self.bias.zero_()


def frame_batch(history: torch.Tensor, target: torch.Tensor, frames_per_window: int,
                random: bool = True) -> torch.Tensor:
    """Single frames (N, C, H, W) from a batch of windows, for training on reconstruction.

    ``random``: ``frames_per_window`` frames drawn per window with torch's global generator (seeded by
    the harness, so reproducible); otherwise evenly spaced frames (for validation).
    """
    frames = torch.cat([history, target], dim=1)  # (B, 16, C, H, W)
    b, t = frames.shape[:2]
    k = max(1, min(frames_per_window, t))
    if random:
        idx = torch.stack([torch.randperm(t)[:k] for _ in range(b)]).to(frames.device)
    else:
        idx = torch.linspace(0, t - 1, k).round().long().to(frames.device).expand(b, k)
    picked = frames[torch.arange(b, device=frames.device)[:, None], idx]
    return picked.reshape(b * k, *frames.shape[2:])


def sub_budget(budget: Budget, fraction: float) -> Budget:
    """The same budget with ``fraction`` of its wall clock (step and epoch limits unchanged)."""
    return replace(budget, max_seconds=budget.max_seconds * fraction)


def make_encoder(vae_type: str, grid: GridSpec, *, device: str, seed: int,
                 hyperparameters: dict[str, Any] | None = None) -> Encoder:
    """An ``sd_vae`` (``vae_type="sd"``) or ``rae`` (``"rae"``) encoder with the given hyperparameters."""
    from .encoders import RAEEncoder, SDVAEEncoder

    if vae_type not in ENCODER_NAMES:
        from wxbench.errors import ConfigError

        raise ConfigError(f"vae_type must be 'sd' or 'rae', got {vae_type!r}")
    cls = SDVAEEncoder if vae_type == "sd" else RAEEncoder
    return cls(grid, device=device, seed=seed, **(hyperparameters or {}))


def fit_encoder(encoder: Encoder, train: SplitData, val: SplitData, budget: Budget,
                fraction: float) -> tuple[FitReport, float]:
    """Train ``encoder`` on ``fraction`` of ``budget``'s wall clock, then freeze it; (report, seconds)."""
    start = time.perf_counter()
    report = encoder.fit(train, val, sub_budget(budget, fraction))
    module = getattr(encoder, "module", None)
    if isinstance(module, nn.Module):
        module.requires_grad_(False)
        module.eval()
    return report, time.perf_counter() - start


def cache_frames(split: SplitData, max_frames: int | None) -> torch.Tensor:
    """Indices of the frames to encode: all, or ``max_frames`` of them in evenly spaced contiguous chunks.

    Each chunk is at least four windows long (``4 * (input_steps + output_steps)`` frames, and at least
    64), so the windows inside the chunks are the usable training windows.
    """
    n = len(split.fields)
    if max_frames is None or max_frames >= n:
        return torch.arange(n)
    steps = split.grid.input_steps + split.grid.output_steps
    chunk = min(n, max(4 * steps, 64))
    n_chunks = max(1, int(max_frames) // chunk)
    firsts = torch.linspace(0, n - chunk, n_chunks).round().long()
    return torch.unique(torch.cat([torch.arange(f, f + chunk) for f in firsts.tolist()]))


@torch.no_grad()
def encode_split(encoder: Encoder, split: SplitData, *, batch_size: int = 64,
                 max_frames: int | None = None) -> SplitData:
    """The frames of ``split`` encoded once: a SplitData of latents (T', *latent_shape) and its windows.

    ``max_frames``: encode only that many frames (see :func:`cache_frames`) and keep the windows that
    lie entirely inside them (a CPU budget cannot use every window anyway). The latents stay on the
    split's device (CPU); ``train_module`` moves each batch to the model.
    """
    device = getattr(encoder, "device", "cpu")
    frames = cache_frames(split, max_frames)
    parts = []
    for i in range(0, len(frames), batch_size):
        chunk = split.fields[frames[i:i + batch_size]].to(device)
        parts.append(encoder.encode(chunk).float().to(split.fields.device))
    latents = torch.cat(parts).contiguous()
    steps = split.grid.input_steps + split.grid.output_steps
    position = torch.full((len(split.fields),), -1, dtype=torch.long)
    position[frames] = torch.arange(len(frames))
    ends = split.starts + steps - 1
    # a window is kept when its first and last frames are cached and contiguous in the cache
    keep = (position[split.starts] >= 0) & (position[ends] - position[split.starts] == steps - 1)
    starts = position[split.starts[keep]]
    return SplitData(f"{split.name}-latent", latents, split.times[frames.numpy()], starts.contiguous(), split.grid,
                     split.normaliser)


class LatentScaler(nn.Module):
    """Per-channel standardisation of latents (B, ..., C_latent, h, w) on the channel dim (-3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    @torch.no_grad()
    def fit(self, latents: torch.Tensor) -> LatentScaler:
        """Statistics from latents (N, C_latent, h, w)."""
        x = latents.transpose(0, 1).reshape(latents.shape[1], -1).double()
        self.mean.copy_(x.mean(dim=1).float())
        self.std.copy_(x.std(dim=1).clamp(min=1e-6).float())
        return self

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(-1, 1, 1)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self._view(self.mean)) / self._view(self.std)

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._view(self.std) + self._view(self.mean)


@torch.no_grad()
def reconstruction_rmse(encoder: Encoder, split: SplitData, *, limit: int = 64,
                        batch_size: int = 32) -> dict[str, float]:
    """Latitude-weighted RMSE per channel, in physical units, of decode(encode(x)) on ``limit`` frames.

    The frames are evenly spaced over the split; both the reconstruction and the truth are
    denormalised with ``split.normaliser`` before comparison (WB convention: root after the mean).
    """
    from wxbench.metrics import latitude_weights

    device = getattr(encoder, "device", "cpu")
    n = len(split.fields)
    index = torch.linspace(0, n - 1, min(limit, n)).round().long().unique()
    weights = latitude_weights(torch.tensor(split.grid.lat)).double().to(device)
    total = torch.zeros(split.grid.n_channels, dtype=torch.float64, device=device)
    for i in range(0, len(index), batch_size):
        truth = split.fields[index[i:i + batch_size]].to(device)
        recon = encoder.decode(encoder.encode(truth)).float()
        diff = split.normaliser.denormalise(recon).double() - split.normaliser.denormalise(truth).double()
        total += (diff ** 2 * weights[:, None]).mean(dim=(-2, -1)).sum(dim=0)
    mse = total / len(index)
    return {name: float(v) for name, v in zip(split.grid.channels, mse.sqrt().cpu())}
