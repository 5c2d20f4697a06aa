"""Representation-autoencoder (RAE) parts shared by ``rae``, ``latent_unet_rae``, ``rae_direct`` and ``rae_diffusion``.

- :func:`build_backbone`: a timm vision transformer (DINOv2, SigLIP2, MAE, ... by timm model name),
  offline. Pretrained weights come only from a local file (``pretrained_path``: a safetensors or
  torch checkpoint of the timm model) or from a local cache (the Hugging Face hub cache or torch
  hub's checkpoint folder, looked up without network). Otherwise the architecture is built with
  random weights and :attr:`BackboneSpec.weights` says so. The backbone is frozen by default.
- :class:`ViTTokens`: field images in [-1, 1] (B, 3, h, w) -> resize (bilinear) to the backbone's
  input size -> map to [0, 1] -> the backbone's own mean/std normalisation -> patch tokens
  (prefix tokens such as CLS or registers dropped, after the final norm) laid out as a
  channels-first grid (B, D, gh, gw).
- :class:`MAEDecoder`: the MAE-style ViT decoder: Linear(D -> dim), fixed 2-D sin-cos position
  embedding, ``depth`` pre-norm transformer blocks (timm ``Block``), LayerNorm, Linear(dim ->
  patch*patch*out_channels), un-patchify to (gh*patch, gw*patch) and resample (bilinear,
  antialiased) to the output grid, e.g. (32, 64). MAE's defaults: dim 512, depth 8, 16 heads,
  patch 16.

Cost: a ViT-B/16 at 256 x 256 (SigLIP2-base) is about 87 M parameters and ~23 GFLOP per frame; the
default decoder about 26 M parameters. The ``cpu`` profiles use ``vit_tiny_patch16_224`` at a
small input size (see the model classes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BackboneSpec", "MAEDecoder", "ViTTokens", "build_backbone", "find_cached_weights",
           "sincos_2d_position_embedding"]


def find_cached_weights(model_name: str, *, cache_dir: str | None = None) -> str | None:
    """A locally cached checkpoint of timm model ``model_name`` (no network), or None.

    Looks in the Hugging Face hub cache (``timm/<name>`` repos: ``model.safetensors`` or
    ``pytorch_model.bin``, or the file the pretrained config names) and in torch hub's checkpoint
    folder (for weights that timm fetches by URL). ``cache_dir``: a Hugging Face hub cache other than
    the default one (``HF_HUB_CACHE``).
    """
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
    except Exception:  # noqa: BLE001 - unknown tag: nothing cached
        cfg = None
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub ships with timm
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            names = [n for n in (getattr(cfg, "hf_hub_filename", None), "model.safetensors",
                                 "pytorch_model.bin", "open_clip_pytorch_model.bin") if n]
            for name in names:
                found = try_to_load_from_cache(hub_id, name, cache_dir=cache_dir)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = getattr(cfg, "url", None)
    if url:
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if hub_dir.is_file():
            return str(hub_dir)
    return None


@dataclass
class BackboneSpec:
    """A built backbone and where its weights came from."""

    model: nn.Module
    weights: str
    pretrained: bool
    embed_dim: int
    grid_size: tuple[int, int]
    img_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_backbone(model_name: str, *, img_size: int | None = None, pretrained_path: str | None = None,
                   model_kwargs: dict[str, Any] | None = None) -> BackboneSpec:
    """Build timm ViT ``model_name`` without any download; see the module docstring for the weights rule.

    ``pretrained_path``: a local checkpoint file; a path that does not exist is an error (a typo should
    not silently train from random weights). ``None``: use a local cache entry when there is one.
    """
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0, **(model_kwargs or {})}
    if img_size is not None:
        kwargs["img_size"] = img_size
    source = None
    if pretrained_path:
        if not os.path.isfile(pretrained_path):
            raise FileNotFoundError(f"RAE backbone checkpoint {pretrained_path!r} does not exist")
        source = str(pretrained_path)
    else:
        source = find_cached_weights(model_name)
    if source is not None:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": source}, **kwargs)
        desc = "local file" if pretrained_path else "local cache"
        weights = f"timm {model_name} pretrained ({desc} {source})"
    else:
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        weights = f"timm {model_name} UNTRAINED (random init; no pretrained weights found locally)"
    cfg = model.pretrained_cfg or {}
    mean = tuple(cfg.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(cfg.get("std", (0.5, 0.5, 0.5)))
    size = tuple(model.patch_embed.img_size)
    grid = tuple(model.patch_embed.grid_size)
    extra = f", input {size[0]}x{size[1]}, {grid[0]}x{grid[1]} tokens of width {model.embed_dim}"
    if model_kwargs:
        extra += f", {model_kwargs}"
    return BackboneSpec(model, weights + extra, source is not None, int(model.embed_dim), grid, size, mean, std)


class ViTTokens(nn.Module):
    """[-1, 1] images (B, 3, h, w) -> backbone patch tokens as a grid (B, D, gh, gw)."""

    def __init__(self, spec: BackboneSpec, *, frozen: bool = True) -> None:
        super().__init__()
        self.backbone = spec.model
        self.img_size = spec.img_size
        self.grid_size = spec.grid_size
        self.embed_dim = spec.embed_dim
        self.frozen = frozen
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> ViTTokens:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a frozen backbone stays in eval mode (dropout, drop-path off)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=self.img_size, mode="bilinear", align_corners=False)
        x = (x + 1) / 2  # [-1, 1] -> [0, 1]
        x = (x - self.mean) / self.std
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
        gh, gw = self.grid_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.embed_dim, gh, gw)


def sincos_2d_position_embedding(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position embedding, (gh*gw, dim); half the width per axis."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    gh, gw = grid

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    yy, xx = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")
    emb = np.concatenate([one_axis(dim // 2, yy), one_axis(dim // 2, xx)], axis=1)
    return torch.from_numpy(emb).float()


class MAEDecoder(nn.Module):
    """MAE-style ViT decoder: token grid (B, D, gh, gw) -> fields (B, out_channels, *out_size)."""

    def __init__(self, in_dim: int, grid_size: tuple[int, int], out_channels: int, out_size: tuple[int, int], *,
                 dim: int = 512, depth: int = 8, heads: int = 16, patch: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.grid_size = tuple(grid_size)
        self.out_channels, self.out_size, self.patch = out_channels, tuple(out_size), patch
        self.embed = nn.Linear(in_dim, dim)
        self.register_buffer("pos_embed", sincos_2d_position_embedding(dim, self.grid_size)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch * patch * out_channels)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        b, _, gh, gw = grid.shape
        x = self.embed(grid.flatten(2).transpose(1, 2)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.head(self.norm(x))  # (B, gh*gw, p*p*C)
        p, c = self.patch, self.out_channels
        x = x.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)
        if (gh * p, gw * p) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False, antialias=True)
        return x
