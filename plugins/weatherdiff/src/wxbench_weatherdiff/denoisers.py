"""Denoisers of the WeatherDiff diffusion models: (noisy future, history, timestep) -> predicted noise.

Both take standardised latents in the canonical layout (D, *spatial): the noisy future (B, 4, D, *sp),
the history (B, 12, D, *sp) and the diffusion timesteps (B,), and return the noise (B, 4, D, *sp).

- :class:`LatentUNetDenoiser` (``latent_diffusion``): a diffusers ``UNet2DModel`` (ResNet blocks with
  the timestep embedding added in every block, self-attention at the coarser levels) on
  ``concat(noisy future latents (4*D ch), history latents (12*D ch))``, predicting the 4*D noise
  channels. diffusers' blocks pad with zeros; at the 4x8 latent resolution periodic padding in
  longitude would matter little and is not offered.
- :class:`TokenDiT` (``rae_diffusion``): a DiT-style transformer on RAE tokens, assembled from
  diffusers building blocks with adaLN-single timestep modulation (PixArt-alpha's form of DiT's
  adaLN-Zero).
"""

from __future__ import annotations

import torch
from torch import nn

from wxbench.errors import ConfigError

__all__ = ["LatentUNetDenoiser", "TokenDiT"]


class LatentUNetDenoiser(nn.Module):
    """diffusers ``UNet2DModel`` on concat(noisy future latents, history latents), time folded into channels."""

    def __init__(self, latent_channels: int, spatial: tuple[int, int], in_steps: int, out_steps: int, *,
                 block_out_channels: tuple[int, ...], layers_per_block: int, attention_levels: tuple[bool, ...],
                 attention_head_dim: int, norm_num_groups: int) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        levels = len(block_out_channels)
        if len(attention_levels) != levels:
            raise ConfigError(f"attention_levels {attention_levels} needs one flag per level of block_out_channels "
                              f"{block_out_channels}")
        h, w = spatial
        factor = 2 ** (levels - 1)
        if h % factor or w % factor:
            raise ConfigError(f"a {levels}-level U-Net halves the latent {h}x{w} {levels - 1} times; "
                              f"{h}x{w} is not divisible by {factor}")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ConfigError(f"block_out_channels {block_out_channels} must be multiples of norm_num_groups "
                              f"{norm_num_groups}")
        self.out_steps = out_steps
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
        self.unet = UNet2DModel(
            sample_size=(h, w), in_channels=(in_steps + out_steps) * latent_channels,
            out_channels=out_steps * latent_channels, block_out_channels=tuple(block_out_channels),
            down_block_types=down, up_block_types=up, layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
        )

    def forward(self, noisy: torch.Tensor, cond: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        x = torch.cat([noisy.flatten(1, 2), cond.flatten(1, 2)], dim=1)
        return self.unet(x, timestep).sample.reshape(noisy.shape)


class TokenDiT(nn.Module):
    """DiT-style denoiser on RAE tokens, built from diffusers blocks (adaLN-single timestep modulation).

    One token per (future step, token position): 4 * N tokens of width ``width``. A token's
    embedding is ``in_proj(noisy token) + cond_proj(history at its position) + pos[n] + lead[k]``,
    where ``cond_proj`` maps the 12 history tokens at that position (12 * D features) to the width.
    Self-attention then runs over all 4 * N tokens (space and lead time); the output layer maps each
    token back to D noise channels. Keep ``width >= D``: a token of D noise channels squeezed through
    a narrower transformer cannot even represent the identity part of the noise prediction (the
    RAE paper's observation that the DiT width must match the representation's width).
    """

    def __init__(self, token_dim: int, n_tokens: int, in_steps: int, out_steps: int, *, width: int, depth: int,
                 heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.normalization import AdaLayerNormSingle

        if width % heads:
            raise ConfigError(f"dit_width {width} must be a multiple of dit_heads {heads}")
        self.in_proj = nn.Linear(token_dim, width)
        self.cond_proj = nn.Linear(in_steps * token_dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, n_tokens, width))
        self.lead_embed = nn.Parameter(torch.zeros(1, out_steps, 1, width))
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.lead_embed, std=0.02)
        self.time_modulation = AdaLayerNormSingle(width)
        self.blocks = nn.ModuleList([
            BasicTransformerBlock(width, heads, width // heads, dropout=dropout, activation_fn="gelu-approximate",
                                  attention_bias=True, norm_type="ada_norm_single", norm_elementwise_affine=False,
                                  norm_eps=1e-6)
            for _ in range(depth)
        ])
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, width) / width ** 0.5)
        self.proj_out = nn.Linear(width, token_dim)
        nn.init.zeros_(self.proj_out.weight)  # DiT: the denoiser starts by predicting zero noise
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, noisy: torch.Tensor, cond: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        b, k, d, n = noisy.shape
        x = self.in_proj(noisy.transpose(2, 3))  # (B, K, N, width)
        c = self.cond_proj(cond.reshape(b, -1, n).transpose(1, 2))  # (B, N, width)
        x = (x + c[:, None] + self.pos_embed + self.lead_embed).reshape(b, k * n, -1)
        modulation, embedded = self.time_modulation(timestep, batch_size=b, hidden_dtype=x.dtype)
        for block in self.blocks:
            x = block(x, timestep=modulation)
        shift, scale = (self.scale_shift_table[None] + embedded[:, None]).chunk(2, dim=1)
        x = self.norm_out(x) * (1 + scale) + shift
        return self.proj_out(x).reshape(b, k, n, d).transpose(2, 3)
