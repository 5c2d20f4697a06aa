"""U-Net building blocks shared by the WeatherDiff models (pixel U-Net, latent U-Net, latent diffusion).

The architecture follows MODELS.md:

- :class:`ConvBlock`: (Conv3x3 -> GroupNorm(8) -> SiLU) twice. With ``time_dim`` set, a timestep
  embedding is projected to the block's width and added after the first GroupNorm-SiLU (the DDPM
  convention), so the same U-Net serves deterministic forecasters and diffusion denoisers.
- :class:`UNet`: ``depth`` down stages (ConvBlock, keep the skip, MaxPool(2)), a ConvBlock
  bottleneck, ``depth`` up stages (ConvTranspose(k2, s2), concatenate the skip, ConvBlock), and a
  1x1 output convolution. Widths ``base * 2**i`` at stage ``i`` (``base * 2**depth`` at the
  bottleneck), optionally capped by ``max_channels``.
- Spatial sizes must be divisible by ``2**depth``; :func:`max_depth` says how deep a grid allows
  (32 x 64 halves 5 times; the SD-VAE latent of a 32 x 64 field, 4 x 8, only twice).
- ``lon_padding="circular"`` pads the 3x3 convolutions periodically in longitude (last dim) and with
  zeros in latitude; ``"zeros"`` is PyTorch's default (what the original used).
- :class:`TimestepEmbedding`: sinusoidal embedding of the diffusion step followed by an MLP
  (Linear -> SiLU -> Linear), as in DDPM.

Cost at the MODELS.md pixel defaults (base 64, depth 4, 48 -> 16 channels on 32 x 64): about 31 M
parameters and roughly 3 GFLOP per sample forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBlock", "TimestepEmbedding", "UNet", "max_depth", "sinusoidal_embedding"]


def max_depth(height: int, width: int) -> int:
    """The largest number of 2x poolings a (height, width) grid allows with exact halving."""
    depth = 0
    while height % 2 == 0 and width % 2 == 0 and height >= 2 and width >= 2:
        height, width, depth = height // 2, width // 2, depth + 1
    return depth


class Conv3x3(nn.Conv2d):
    """3x3 convolution, 'same' size; ``lon_padding="circular"`` wraps the last (longitude) dim."""

    def __init__(self, in_channels: int, out_channels: int, lon_padding: str = "zeros") -> None:
        if lon_padding not in ("zeros", "circular"):
            raise ValueError(f"lon_padding must be 'zeros' or 'circular', got {lon_padding!r}")
        super().__init__(in_channels, out_channels, 3, padding=1 if lon_padding == "zeros" else 0)
        self.lon_padding = lon_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lon_padding == "circular":
            x = F.pad(x, (1, 1, 0, 0), mode="circular")  # longitude wraps around
            x = F.pad(x, (0, 0, 1, 1))  # latitude: zeros beyond the poles
        return super().forward(x)


class ConvBlock(nn.Module):
    """(Conv3x3 -> GroupNorm -> SiLU) x 2, with an optional additive timestep embedding."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 8, time_dim: int | None = None,
                 lon_padding: str = "zeros") -> None:
        super().__init__()
        if out_channels % groups:
            raise ValueError(f"GroupNorm({groups}) needs a width divisible by {groups}, got {out_channels}")
        self.conv1 = Conv3x3(in_channels, out_channels, lon_padding)
        self.norm1 = nn.GroupNorm(groups, out_channels)
        self.conv2 = Conv3x3(out_channels, out_channels, lon_padding)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.act = nn.SiLU()
        self.time_proj = nn.Linear(time_dim, out_channels) if time_dim else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        if self.time_proj is not None:
            if t_emb is None:
                raise ValueError("this ConvBlock was built with time_dim; pass a timestep embedding")
            h = h + self.time_proj(t_emb)[:, :, None, None]
        return self.act(self.norm2(self.conv2(h)))


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) [cos | sin] features at geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the diffusion step -> Linear -> SiLU -> Linear (width ``dim``)."""

    def __init__(self, dim: int, frequency_dim: int | None = None) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim or dim
        self.mlp = nn.Sequential(nn.Linear(self.frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.frequency_dim))


class UNet(nn.Module):
    """U-Net (B, in_channels, H, W) -> (B, out_channels, H, W); H and W divisible by 2**depth.

    ``time_dim``: when set, ``forward(x, t)`` takes diffusion steps ``t`` (B,) and every ConvBlock
    receives their embedding (a :class:`TimestepEmbedding` of width ``time_dim``).
    """

    def __init__(self, in_channels: int, out_channels: int, *, base_channels: int = 64, depth: int = 4,
                 groups: int = 8, max_channels: int | None = None, time_dim: int | None = None,
                 lon_padding: str = "zeros") -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.depth = depth
        self.in_channels, self.out_channels = in_channels, out_channels

        def width(level: int) -> int:
            w = base_channels * 2 ** level
            return min(w, max_channels) if max_channels else w

        self.widths = [width(i) for i in range(depth + 1)]
        self.time_embedding = TimestepEmbedding(time_dim) if time_dim else None
        kw = dict(groups=groups, time_dim=time_dim, lon_padding=lon_padding)
        self.down = nn.ModuleList()
        ch = in_channels
        for level in range(depth):
            self.down.append(ConvBlock(ch, self.widths[level], **kw))
            ch = self.widths[level]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(ch, self.widths[depth], **kw)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsample.append(nn.ConvTranspose2d(self.widths[level + 1], self.widths[level], 2, stride=2))
            self.up.append(ConvBlock(2 * self.widths[level], self.widths[level], **kw))
        self.head = nn.Conv2d(self.widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2 ** self.depth or w % 2 ** self.depth:
            raise ValueError(f"U-Net of depth {self.depth} needs H and W divisible by {2 ** self.depth}, "
                             f"got {h} x {w} (max depth for this grid: {max_depth(h, w)})")
        t_emb = None
        if self.time_embedding is not None:
            if t is None:
                raise ValueError("this U-Net was built with time_dim; pass the diffusion steps t")
            t_emb = self.time_embedding(t)
        skips = []
        for block in self.down:
            x = block(x, t_emb)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x, t_emb)
        for upsample, block in zip(self.upsample, self.up):
            x = upsample(x)
            x = block(torch.cat([x, skips.pop()], dim=1), t_emb)
        return self.head(x)
