"""The U-Net of the WeatherDiff deterministic models (pixel U-Net, latent U-Net).

The architecture follows the original design (docs/models.md, WeatherDiff models):

- :class:`ConvBlock`: (Conv3x3 -> GroupNorm(8) -> SiLU) twice.
- :class:`UNet`: ``depth`` down stages (ConvBlock, keep the skip, MaxPool(2)), a ConvBlock
  bottleneck, ``depth`` up stages (ConvTranspose(k2, s2), concatenate the skip, ConvBlock), and a
  1x1 output convolution. Widths ``base * 2**i`` at stage ``i`` (``base * 2**depth`` at the
  bottleneck), optionally capped by ``max_channels``.
- :class:`TimeFoldedUNet`: a history (B, T, C, H, W) with time folded into channels through a U-Net
  to (B, S, C, H, W), as the original did (no explicit temporal model).
- Spatial sizes must be divisible by ``2**depth``; :func:`max_depth` says how deep a grid allows
  (32 x 64 halves 5 times; the SD-VAE latent of a 32 x 64 field, 4 x 8, only twice).
- The 3x3 convolutions are :class:`wxbench.nn.GridConv2d`: ``lon_padding="circular"`` pads them
  periodically in longitude (last dim) and with zeros in latitude; ``"zero"`` is PyTorch's zero
  padding (what the original used).

Cost at the original pixel defaults (base 64, depth 4, 48 -> 16 channels on 32 x 64): about 31 M
parameters and roughly 3 GFLOP per sample forward.
"""

from __future__ import annotations

import torch
from torch import nn

from wxbench.errors import ConfigError
from wxbench.nn import GridConv2d, check_padding

__all__ = ["ConvBlock", "TimeFoldedUNet", "UNet", "max_depth"]


def max_depth(height: int, width: int) -> int:
    """The largest number of 2x poolings a (height, width) grid allows with exact halving."""
    depth = 0
    while height % 2 == 0 and width % 2 == 0 and height >= 2 and width >= 2:
        height, width, depth = height // 2, width // 2, depth + 1
    return depth


class ConvBlock(nn.Module):
    """(Conv3x3 -> GroupNorm -> SiLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 8, lon_padding: str = "zero") -> None:
        super().__init__()
        if out_channels % groups:
            raise ConfigError(f"groups: GroupNorm({groups}) needs a width divisible by {groups}, got {out_channels}")
        self.conv1 = GridConv2d(in_channels, out_channels, 3, lon_padding=lon_padding)
        self.norm1 = nn.GroupNorm(groups, out_channels)
        self.conv2 = GridConv2d(out_channels, out_channels, 3, lon_padding=lon_padding)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.act(self.norm1(self.conv1(x))))))


class UNet(nn.Module):
    """U-Net (B, in_channels, H, W) -> (B, out_channels, H, W); H and W divisible by 2**depth."""

    def __init__(self, in_channels: int, out_channels: int, *, base_channels: int = 64, depth: int = 4,
                 groups: int = 8, max_channels: int | None = None, lon_padding: str = "zero") -> None:
        super().__init__()
        if depth < 0:
            raise ConfigError(f"depth must be >= 0, got {depth}")
        check_padding(lon_padding)
        self.depth = depth
        self.in_channels, self.out_channels = in_channels, out_channels

        def width(level: int) -> int:
            w = base_channels * 2 ** level
            return min(w, max_channels) if max_channels else w

        self.widths = [width(i) for i in range(depth + 1)]
        kw = dict(groups=groups, lon_padding=lon_padding)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2 ** self.depth or w % 2 ** self.depth:
            raise ValueError(f"U-Net of depth {self.depth} needs H and W divisible by {2 ** self.depth}, "
                             f"got {h} x {w} (max depth for this grid: {max_depth(h, w)})")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, block in zip(self.upsample, self.up):
            x = upsample(x)
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


class TimeFoldedUNet(nn.Module):
    """History (B, T, C, H, W) -> (B, T*C, H, W) -> U-Net -> (B, S, C, H, W): time folded into channels."""

    def __init__(self, channels: int, input_steps: int, output_steps: int, **unet_options) -> None:
        super().__init__()
        self.output_steps = output_steps
        self.unet = UNet(input_steps * channels, output_steps * channels, **unet_options)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = history.shape
        return self.unet(history.reshape(b, t * c, h, w)).reshape(b, self.output_steps, c, h, w)
