"""Weather Transformer: patch tokens, factorised space-time attention, learnable output queries.

Architecture (the original design in docs/models.md, Spatial models, with the open points filled in
as stated below)::

    history (B, 12, C, 32, 64)
      -> patch embedding per time step: Conv2d(C -> d, kernel = stride = (4, 8))   8 x 8 = 64 patches
      -> + sinusoidal temporal encoding (over the 12 steps; fixed, so it extrapolates)
         + learnable spatial encoding (64, d)
      -> L encoder layers, each (post-norm residual sub-blocks):
             x = LN(x + SpatialAttention(x))    attention among the 64 patches of one time step
             x = LN(x + TemporalAttention(x))   attention of one patch across the 12 steps
             x = LN(x + FFN(x))                 d -> ff -> d, GELU
      -> memory (B, 12 * 64, d)
      -> learnable output queries (4, 64, d) (4 lead times x 64 patches), each plus the encoder's
         token of the same patch at the last observed step (``queries_plus_last_step``, default)
      -> shallow transformer decoder (``decoder_layers`` post-norm layers: self-attention among the
         256 queries, cross-attention to the memory, FFN)
      -> Linear(d, patch_h * patch_w * C) -> un-patchify to (B, 4, C, 32, 64)

Defaults: d_model 128, 4 heads, 4 encoder layers (the original design); choices the original design left open:

- One FFN per encoder layer, after the two attentions (the "divided space-time attention" block
  of TimeSformer), ``ff_dim`` = 4 d_model = 512, GELU; ``decoder_layers`` = 2 ("shallow": half the
  encoder's depth); ``dropout`` = 0.1 (PyTorch's transformer default). With C = 4 this gives
  1,661,440 parameters (the original design: "about 1.6 M"; pinned by a test).
- Learnable spatial encoding and output queries initialised N(0, 0.02^2) (ViT practice).
- ``residual=True`` by default: the head's output is added to the last observed state, as for the
  other models of this plugin (``wxbench.nn.TendencyWrapper``). Unlike a convolution, the patch head must
  reproduce sub-patch detail; predicting the increment means it only has to produce the small
  6-24 h change, which matters a lot in short trainings.
- ``queries_plus_last_step=True`` by default. With pure learnable queries (``False``, the literal
  reading of the original design) every query starts almost identical (N(0, 0.02^2)) and cross-attention is
  nearly uniform at initialisation, so all 256 decoder outputs are about the same vector and the
  head can only learn a global increment; the network first has to learn, through attention alone,
  which of the 768 memory tokens belong to each patch. Measured on the embedded data: after 72
  optimiser steps (``cpu`` config, lr 1e-3) the validation loss had not moved from persistence
  (0.2179 -> 0.2176), whereas with the last step's tokens added it fell from 0.210 to 0.149 in 40
  steps. The queries keep their (4, 64, d) shape and role (a lead-time x patch embedding); they are
  added to the decoder's input tokens, the usual way to give a query decoder a local anchor.
- No longitude padding question arises (non-overlapping patches, attention is global).

Cost at the defaults (32x64, 768 tokens): ~2.3 GFLOP per sample forward, 1.66 M parameters, about
as expensive as the CNN. The ``cpu`` profile uses d_model 64, 4 heads, 2 encoder layers, 1 decoder
layer, ff 128, dropout 0, learning rate 3e-3 (187,776 parameters, ~8x fewer FLOPs), so that 50 s
on 2 cores buy some tens of steps; see ``profile_hyperparameters`` and the README for the measured
step times and scores.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wxbench.nn import TendencyWrapper

from .common import SpatialForecaster


def sinusoidal_encoding(steps: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """The Transformer's sinusoidal encoding (steps, dim): sin on even, cos on odd features."""
    position = torch.arange(steps, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(steps, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div[: dim // 2])
    return pe


class FactorisedLayer(nn.Module):
    """Spatial attention, then temporal attention, then an FFN; post-norm residual sub-blocks."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.spatial_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.temporal_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.norm_spatial = nn.LayerNorm(d_model)
        self.norm_temporal = nn.LayerNorm(d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, N, d) -> (B, T, N, d)."""
        b, t, n, d = x.shape
        s = x.reshape(b * t, n, d)  # one sequence of N patches per time step
        s = self.norm_spatial(s + self.drop(self.spatial_attn(s, s, s, need_weights=False)[0]))
        x = s.view(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)  # one sequence of T steps per patch
        x = self.norm_temporal(x + self.drop(self.temporal_attn(x, x, x, need_weights=False)[0]))
        x = self.norm_ffn(x + self.drop(self.ffn(x)))
        return x.view(b, n, t, d).transpose(1, 2)


class WeatherTransformerNet(nn.Module):
    def __init__(self, n_channels: int, height: int, width: int, output_steps: int, *, d_model: int = 128,
                 n_heads: int = 4, n_layers: int = 4, decoder_layers: int = 2, ff_dim: int = 512,
                 dropout: float = 0.1, patch_size: tuple[int, int] = (4, 8),
                 queries_plus_last_step: bool = True) -> None:
        super().__init__()
        ph, pw = patch_size
        if height % ph or width % pw:
            raise ValueError(f"grid {height}x{width} is not divisible by the patch size {ph}x{pw}")
        self.n_channels, self.output_steps, self.patch_size = n_channels, output_steps, (ph, pw)
        self.grid_patches = (height // ph, width // pw)
        n_patches = self.grid_patches[0] * self.grid_patches[1]
        self.queries_plus_last_step = bool(queries_plus_last_step)
        self.d_model = d_model
        self.patch_embed = nn.Conv2d(n_channels, d_model, kernel_size=(ph, pw), stride=(ph, pw))
        self.spatial_pos = nn.Parameter(torch.zeros(n_patches, d_model))
        self.layers = nn.ModuleList(FactorisedLayer(d_model, n_heads, ff_dim, dropout) for _ in range(n_layers))
        self.queries = nn.Parameter(torch.zeros(output_steps, n_patches, d_model))
        decoder_layer = nn.TransformerDecoderLayer(d_model, n_heads, ff_dim, dropout, activation="gelu",
                                                   batch_first=True, norm_first=False)
        self.decoder = nn.TransformerDecoder(decoder_layer, decoder_layers)
        self.head = nn.Linear(d_model, ph * pw * n_channels)
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.queries, std=0.02)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> encoder tokens (B, T, N, d)."""
        b, t, c, h, w = history.shape
        x = self.patch_embed(history.reshape(b * t, c, h, w))  # (B*T, d, nh, nw)
        x = x.flatten(2).transpose(1, 2).reshape(b, t, -1, self.d_model)  # (B, T, N, d)
        x = x + sinusoidal_encoding(t, self.d_model, x.device).to(x.dtype)[None, :, None, :] \
            + self.spatial_pos.to(x.dtype)[None, None]
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = history.shape
        tokens = self.encode(history)  # (B, T, N, d)
        memory = tokens.reshape(b, -1, self.d_model)  # (B, T*N, d)
        queries = self.queries.to(tokens.dtype)[None]  # (1, 4, N, d)
        if self.queries_plus_last_step:
            # each lead time's query for patch p starts from the encoder's token of patch p at the last
            # observed step: the decoder then refines a local state instead of having to learn, through
            # cross-attention alone, which of the 768 memory tokens belong to its patch
            queries = queries + tokens[:, -1:]
        queries = queries.expand(b, -1, -1, -1).reshape(b, -1, self.d_model)  # (B, 4*N, d)
        out = self.head(self.decoder(queries, memory))  # (B, 4*N, ph*pw*C)
        (nh, nw), (ph, pw) = self.grid_patches, self.patch_size
        out = out.view(b, self.output_steps, nh, nw, c, ph, pw)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, self.output_steps, c, nh * ph, nw * pw)

    def extra_repr(self) -> str:
        return f"queries_plus_last_step={self.queries_plus_last_step}"


class WeatherTransformer(SpatialForecaster):
    name = "weather_transformer"
    family = "transformer"
    hyperparameters = {
        **{k: v for k, v in SpatialForecaster.common_hyperparameters.items() if not k.endswith("_padding")},
        "d_model": 128, "n_heads": 4, "n_layers": 4, "decoder_layers": 2, "ff_dim": 512, "dropout": 0.1,
        "patch_size": (4, 8), "queries_plus_last_step": True,
    }
    profile_hyperparameters = {
        "smoke": {"d_model": 16, "n_heads": 2, "n_layers": 1, "decoder_layers": 1, "ff_dim": 32, "dropout": 0.0},
        # ~8x fewer FLOPs than the defaults (0.19 M parameters); lr 3e-3 learned faster than 1e-3 in
        # the first 40 steps (validation loss 0.117 vs 0.149, persistence 0.218); see the README
        "cpu": {"d_model": 64, "n_heads": 4, "n_layers": 2, "decoder_layers": 1, "ff_dim": 128, "dropout": 0.0,
                "learning_rate": 3e-3},
    }

    def padding(self) -> dict[str, str]:
        return {}

    def build(self) -> nn.Module:
        g, hp = self.grid, self.hparams
        h, w = g.shape
        net = WeatherTransformerNet(g.n_channels, h, w, g.output_steps, d_model=hp["d_model"],
                                    n_heads=hp["n_heads"], n_layers=hp["n_layers"],
                                    decoder_layers=hp["decoder_layers"], ff_dim=hp["ff_dim"],
                                    dropout=hp["dropout"], patch_size=tuple(hp["patch_size"]),
                                    queries_plus_last_step=hp["queries_plus_last_step"])
        # with residual, the zero-initialised head makes the untrained network persistence
        return TendencyWrapper(net, residual=hp["residual"], output_layer=net.head)
