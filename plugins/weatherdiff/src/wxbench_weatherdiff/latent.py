"""Helpers shared by every WeatherDiff model that works in an encoder's latent space.

- :class:`ChannelAdapter`: the explicit 1x1-convolution adapter between C weather channels and an
  image model's 3 channels (or back), initialised to a channel-folding map (``C -> 3``: image
  channel ``k`` is the mean of weather channels ``j`` with ``j % 3 == k``) or its pseudo-inverse
  (``3 -> C``), so that an untrained adapter already passes every weather channel through.
- :func:`frame_batch`: single frames for encoder training, drawn from the windows that
  :func:`wxbench.training.train_module` hands to a loss (so encoders train with the one shared loop).
- :class:`Standardiser`: ``(x - mean) / std`` with statistics measured on the training split and
  kept as buffers (so in the state): the latent forecasters' per-channel latent scaling (the role of
  Stable Diffusion's ``scaling_factor``, measured instead of assumed) and the encoders' input
  transform.
- :func:`build_encoder`: the encoder a latent forecaster owns, found by its registered name (the
  ``encoder`` hyperparameter) the way the harness finds forecasters.
- :func:`stage_budget`, :func:`fit_encoder`, :func:`freeze_encoder`: a latent forecaster trains its
  encoder on a share of its own budget first, then freezes it; the rest of the budget trains the
  forecaster on the latents.
- :func:`encode_split`: encode every frame of a split (or ``max_frames`` of them, in contiguous
  chunks) once into a latent :class:`~wxbench.SplitData` with the matching window starts, so that
  ``train_module`` draws latent windows directly (no encoder pass per training step).
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
from wxbench.errors import ConfigError
from wxbench.plugins import get_registry
from wxbench.runner import resolve_hyperparameters

__all__ = ["ChannelAdapter", "Standardiser", "build_encoder", "cache_frames", "encode_split", "fit_encoder",
           "encoder_parameters", "folding_matrix", "frame_batch", "freeze_encoder", "moments", "reconstruction_floor",
           "reconstruction_rmse", "stage_budget"]


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


def stage_budget(budget: Budget, share: float, *, spent: float = 0.0, minimum_share: float = 0.0) -> Budget:
    """The budget of one stage of a staged fit (the encoder, then the model on its latents).

    ``share`` of the wall clock less the ``spent`` seconds of the earlier stages, but at least
    ``minimum_share`` of it (an earlier stage may overrun its share by a step and its validation);
    the step, epoch and batch limits stay the profile's.
    """
    seconds = max(share * budget.max_seconds - spent, minimum_share * budget.max_seconds)
    return replace(budget, max_seconds=seconds)


def build_encoder(name: str, grid: GridSpec, *, device: str, seed: int, profile: str | None = None,
                  options: dict[str, Any] | None = None, model: str = "latent model") -> Encoder:
    """The registered encoder ``name`` with its hyperparameters resolved as the harness resolves a
    forecaster's: class defaults < registered variant < ``profile``'s overrides < ``options``.

    A forecaster is not told the run profile, so its own profiles name the encoder profile to use.
    An unknown name is a ConfigError naming ``model``'s ``encoder`` option and the known encoders.
    """
    try:
        registration = get_registry().encoder(name)
    except ConfigError as exc:
        raise ConfigError(f"{model}: hyperparameter 'encoder': {exc}") from None
    hparams = resolve_hyperparameters(registration, profile, dict(options or {}))
    encoder = registration.cls(grid, device=device, seed=seed, **hparams)
    encoder.name = registration.name  # a registered variant keeps its own name
    return encoder


def freeze_encoder(encoder: Encoder) -> None:
    """Freeze a trained (or reloaded) encoder: no gradients, eval mode.

    Besides keeping it out of the forecaster's optimiser, this makes a reloaded model compute exactly
    what the trained one computed: on CPU, PyTorch picks different (equally exact) matmul kernels for
    weights with and without ``requires_grad``, and a diffusion sampler amplifies such 1e-7 differences.
    """
    module = getattr(encoder, "module", None)
    if isinstance(module, nn.Module):
        module.requires_grad_(False)
        module.eval()


def fit_encoder(encoder: Encoder, train: SplitData, val: SplitData, budget: Budget,
                share: float) -> tuple[FitReport, float]:
    """Train ``encoder`` on ``share`` of ``budget``'s wall clock, then freeze it; (report, seconds).

    The encoder decides what it trains (a frozen pretrained one reports "nothing to train"); its fit
    also measures its input transform's statistics and its reconstruction floor.
    """
    start = time.perf_counter()
    report = encoder.fit(train, val, stage_budget(budget, share))
    freeze_encoder(encoder)
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


class Standardiser(nn.Module):
    """``x -> (x - mean) / std`` and back, with ``mean`` and ``std`` buffers (part of the state).

    The buffers have the shapes given (``std_shape`` defaults to ``mean_shape``) and broadcast against
    the trailing dims of ``x``: ``(C, 1, 1)`` standardises each channel of (..., C, h, w) latents.
    The identity (mean 0, std 1) until :meth:`fit`.
    """

    def __init__(self, mean_shape: tuple[int, ...], std_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(mean_shape))
        self.register_buffer("std", torch.ones(mean_shape if std_shape is None else std_shape))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, keep: tuple[int, ...] = (1,)) -> Standardiser:
        """Mean and standard deviation of ``x`` for each index of its dims ``keep`` (over all other
        dims), computed in float64; a std below 1e-6 counts as 1e-6."""
        mean, std = moments(x, keep)
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(std.reshape(self.std.shape))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def moments(x: torch.Tensor, keep: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of ``x`` per index of its dims ``keep``, over all other dims: float32 of float64
    statistics, shaped like the kept dims; the std is clamped below at 1e-6."""
    kept = x.movedim(keep, tuple(range(len(keep))))
    flat = kept.reshape(*kept.shape[:len(keep)], -1).double()
    return flat.mean(-1).float(), flat.std(-1).clamp_min(1e-6).float()


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


def reconstruction_floor(encoder: Encoder, val: SplitData) -> dict[str, float]:
    """:func:`reconstruction_rmse` on the encoder's ``reconstruction_samples`` (default 64) validation
    frames: the floor a latent forecaster reports (it never sees the test split before it is scored)."""
    return reconstruction_rmse(encoder, val, limit=int(encoder.hparams.get("reconstruction_samples", 64)))


def encoder_parameters(encoder: Encoder) -> int:
    """The encoder's parameter count: its ``describe()["parameters"]``, else the numbers in its state."""
    count = encoder.describe().get("parameters")
    return int(count) if count is not None else _tensor_numel(encoder.state_dict())


def _tensor_numel(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(_tensor_numel(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_numel(v) for v in obj)
    return 0
