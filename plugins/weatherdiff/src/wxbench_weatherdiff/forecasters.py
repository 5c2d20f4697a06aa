"""WeatherDiff deterministic forecasters: ``pixel_unet``, ``latent_unet`` (``_sd`` / ``_rae``), ``rae_direct``.

All take min-max scaled fields in [-1, 1] (``normalisation = "minmax"``) and fold time into
channels, as the original did (no explicit temporal model; docs/models.md, WeatherDiff models). Left
open by the original design and offered by all three: ``residual`` (predict the change from the last
input state with :class:`wxbench.nn.TendencyWrapper`, whose zero-initialised output layer makes
training start exactly at persistence; off by default, as the original predicted the states
themselves) and, for the U-Nets, ``lon_padding`` ("zero" as in the original, or "circular": periodic
in longitude; :class:`wxbench.nn.GridConv2d`).

``pixel_unet``: :class:`~wxbench_weatherdiff.unet.UNet` on (B, 12*C, H, W) -> (B, 4*C, H, W).
ConvBlock = (Conv3x3-GroupNorm(8)-SiLU) x 2; down = ConvBlock then MaxPool(2) keeping the skip; up =
ConvTranspose(k2, s2), concatenate the skip, ConvBlock; 1x1 head. Defaults base 64, depth 4 (32 x 64
-> 2 x 4 at the bottleneck, width 1024; 32 latitudes halve 5 times, so depth 5 is accepted and deeper
is a ConfigError): 31.07 M parameters at C = 4, ~3.1 GFLOP per sample. ``cpu`` profile: base 16, depth
4 (1.95 M parameters, ~0.22 GFLOP per sample), circular padding, residual: a base-64 U-Net would get
only a few dozen steps in 50 s on 2 cores.

``latent_unet``: the forecaster owns an encoder, found by its registered name (``encoder``:
``"sd_vae"`` for ``latent_unet_sd``, ``"rae"`` for ``latent_unet_rae``) with the hyperparameters of
the encoder's ``encoder_profile`` (the forecaster's own profiles name theirs) and ``encoder_options``
over them (see :func:`~wxbench_weatherdiff.latent.build_encoder`). ``fit``:

1. trains the encoder on reconstruction with ``encoder_budget_fraction`` of the wall clock (reported
   separately: ``FitReport.extra["encoder_fit"]`` and ``["encoder_seconds"]``), then freezes it;
2. encodes every frame of the training and validation splits once (``cache_latents``; otherwise each
   training step encodes its windows; ``latent_cache_frames`` / ``latent_cache_val_frames`` cap the
   frames, taken in evenly spaced contiguous chunks) and standardises the latents per channel;
3. trains a U-Net (base 128, depth 3) on latent windows (B, 12*C_lat, h, w) -> (B, 4*C_lat, h, w),
   MSE on standardised latents, with the rest of the budget;
4. predicts by encoding the 12 frames, running the U-Net, and decoding each of the 4 latents.

The latent grid is small at 32 x 64: the SD-VAE latent is 4 x 8, which halves only twice, so the
default depth 3 runs at depth 2 (``describe()["unet_depth_used"]``); the RAE token grid depends on the
backbone (16 x 16 for SigLIP2-base/256: depth 3 fits; 4 x 4 in the ``cpu`` profile: depth 2).
``describe()["reconstruction_rmse"]`` is the encoder's encode -> decode RMSE per variable in physical
units on validation frames: the floor under the latent forecast.
Parameters at the defaults (C = 4): latent_unet_sd = SD v1 VAE 83.65 M + U-Net 7.50 M; latent_unet_rae
= SigLIP2-base 92.9 M (frozen) + decoder 26.1 M + U-Net 41.8 M (12*768 input channels).
``cpu`` profile: the encoders' cpu configs (see :mod:`~wxbench_weatherdiff.encoders`), half of the
budget for the encoder, 768 cached training frames, U-Net base 64 (1.89 M on the SD latent, 3.24 M on the 192 x 4 x 4 RAE
tokens; well under 0.1 GFLOP per sample on cached latents), residual, circular padding.

``rae_direct`` ("Stage-1 direct"): (B, 12, C, H, W) -> (B, 12*C, H, W) -> 1x1 ``in_adapter`` (12*C ->
3, initialised to pass the last input state, folded into 3 channels) -> resize to the backbone's input
size -> frozen timm ViT (``freeze_backbone``) -> tokens -> MAE-style RAE decoder -> (B, 4*C, H, W) ->
(B, 4, C, H, W). ``train_in_adapter`` trains the adapter through the frozen backbone. The original
design's example backbone (DINOv2-giant/14 at 518) is selectable by name; the default is the RAE's
SigLIP2-base/16 at 256 (92.9 M frozen + decoder 27.7 M). With no local weights the backbone is random
and frozen (a random-feature model), recorded in ``weights``. ``cpu`` profile: ViT-tiny at 64 x 64
(5.49 M frozen) + decoder width 128, 2 blocks (0.95 M), residual.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from wxbench import Budget, FitReport, Forecaster, GridSpec
from wxbench.data.splits import SplitData
from wxbench.errors import ConfigError
from wxbench.nn import TendencyWrapper, check_padding
from wxbench.training import TorchForecaster, autocast, count_parameters, train_module

from .encoders import RAE_CPU, RAE_DEFAULTS, RAE_SMOKE, build_rae_parts
from .latent import (ChannelAdapter, Standardiser, build_encoder, encode_split, encoder_parameters, fit_encoder,
                     folding_matrix, freeze_encoder, reconstruction_floor, stage_budget)
from .unet import TimeFoldedUNet, max_depth

__all__ = ["LatentUNet", "PixelUNet", "RAEDirect"]


def time_folded_unet(channels: int, input_steps: int, output_steps: int, *, residual: bool,
                     **unet_options: Any) -> TendencyWrapper:
    """(B, 12, C, H, W) -> U-Net on time folded into channels -> (B, 4, C, H, W); with ``residual``, the
    change from the last state (the head zero-initialised: the untrained module is persistence)."""
    core = TimeFoldedUNet(channels, input_steps, output_steps, **unet_options)
    return TendencyWrapper(core, residual=residual, output_layer=core.unet.head)


class PixelUNet(TorchForecaster):
    """Pixel-space U-Net; see the module docstring."""

    name = "pixel_unet"
    family = "weatherdiff"
    normalisation = "minmax"
    hyperparameters: ClassVar[Mapping[str, Any]] = {
        "base_channels": 64,
        "depth": 4,
        "groups": 8,
        "lon_padding": "zero",
        "residual": False,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
    }
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {"base_channels": 8, "depth": 2},
        "cpu": {"base_channels": 16, "depth": 4, "lon_padding": "circular", "residual": True},
    }

    def build(self) -> nn.Module:
        h, w = self.grid.shape
        depth = int(self.hparams["depth"])
        if depth > max_depth(h, w):
            raise ConfigError(f"pixel_unet depth {depth} too deep for a {h} x {w} grid (at most {max_depth(h, w)})")
        check_padding(self.hparams["lon_padding"], model=self.name)
        return time_folded_unet(self.grid.n_channels, self.grid.input_steps, self.grid.output_steps,
                                residual=bool(self.hparams["residual"]), base_channels=self.hparams["base_channels"],
                                depth=depth, groups=self.hparams["groups"], lon_padding=self.hparams["lon_padding"])


class LatentUNet(Forecaster):
    """U-Net on the latents of a registered encoder (``encoder``); see the module docstring."""

    name = "latent_unet"
    family = "weatherdiff"
    normalisation = "minmax"
    hyperparameters: ClassVar[Mapping[str, Any]] = {
        "encoder": "sd_vae",  # a registered encoder's name
        "encoder_profile": None,  # whose profile overrides the encoder gets (None: its defaults)
        "encoder_options": {},  # encoder hyperparameters over those
        "unet_base_channels": 128,
        "unet_depth": 3,
        "groups": 8,
        "lon_padding": "zero",
        "residual": False,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "encoder_budget_fraction": 0.4,
        "cache_latents": True,
        "latent_cache_frames": None,  # None: encode every training frame once; N: N frames in chunks
        "latent_cache_val_frames": None,  # the same for the validation frames
    }
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {"encoder_profile": "smoke", "unet_base_channels": 8, "unet_depth": 1},
        # the encoders' own cpu configs (small SD-family VAE from scratch; ViT-tiny at 64 x 64) and a
        # U-Net of base 64 (cheap on a 4 x 8 or 4 x 4 latent grid: well under 0.1 GFLOP per sample), so
        # that the U-Net stage gets thousands of samples on cached latents
        # 768 cached training frames (12 chunks of 64: ~590 windows) bound the encoding cost, which the
        # budget pays (the ViT-tiny costs ~0.19 GFLOP per frame)
        "cpu": {"encoder_profile": "cpu", "unet_base_channels": 64, "lon_padding": "circular", "residual": True,
                "encoder_budget_fraction": 0.5, "latent_cache_frames": 768},
    }

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, ensemble_size: int = 1,
                 **hparams: Any) -> None:
        super().__init__(grid, device=device, seed=seed, ensemble_size=ensemble_size, **hparams)
        hp = self.hparams
        check_padding(hp["lon_padding"], model=self.name)
        torch.manual_seed(seed)
        self.encoder = build_encoder(hp["encoder"], grid, device=device, seed=seed, profile=hp["encoder_profile"],
                                     options=hp["encoder_options"], model=self.name)
        self.latent_shape = tuple(self.encoder.latent_shape((grid.n_channels, *grid.shape)))
        if len(self.latent_shape) != 3:
            raise ConfigError(f"{self.name}: the U-Net needs an image-like latent (C, h, w); encoder "
                              f"{self.encoder.name!r} gives {self.latent_shape}")
        self.depth_used = min(int(hp["unet_depth"]), max_depth(*self.latent_shape[1:]))
        # standardised latent windows (B, 12, C_lat, h, w) -> (B, 4, C_lat, h, w); residual: start at the
        # last latent state, "persistence in latent space"
        self.net = time_folded_unet(self.latent_shape[0], grid.input_steps, grid.output_steps,
                                    residual=bool(hp["residual"]), base_channels=hp["unet_base_channels"],
                                    depth=self.depth_used, groups=hp["groups"],
                                    lon_padding=hp["lon_padding"]).to(device)
        self.scaler = Standardiser((self.latent_shape[0], 1, 1)).to(device)  # per latent channel
        self.recon_rmse: dict[str, float] | None = None
        self.weights = f"{self.encoder.name}: {self.encoder.weights}; latent U-Net trained from scratch"

    # -- helpers ---------------------------------------------------------------------------------
    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> standardised latents (B, T, *latent_shape), no gradient."""
        b, t = frames.shape[:2]
        with torch.no_grad():
            z = self.encoder.encode(frames.reshape(b * t, *frames.shape[2:]))
        return self.scaler(z.to(self.device)).reshape(b, t, *self.latent_shape)

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        share = float(self.hparams["encoder_budget_fraction"])
        enc_report, enc_seconds = fit_encoder(self.encoder, train, val, budget, share)
        t0 = time.perf_counter()
        if self.hparams["cache_latents"]:
            latent_train = encode_split(self.encoder, train, max_frames=self.hparams["latent_cache_frames"])
            latent_val = encode_split(self.encoder, val, max_frames=self.hparams["latent_cache_val_frames"])
            stats = Standardiser(tuple(self.scaler.mean.shape)).fit(latent_train.fields)  # on the CPU, beside the cache
            latent_train.fields = stats(latent_train.fields).contiguous()
            latent_val.fields = stats(latent_val.fields).contiguous()
            self.scaler.load_state_dict(stats.state_dict())
            fit_train, fit_val = latent_train, latent_val

            def loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.mse_loss(self.net(history).float(), target.float())
        else:
            sample = train.fields[torch.linspace(0, len(train.fields) - 1, min(256, len(train.fields))).long()]
            with torch.no_grad():
                self.scaler.fit(self.encoder.encode(sample.to(self.device)).float())
            fit_train, fit_val = train, val

            def loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.mse_loss(self.net(self._encode_frames(history)).float(), self._encode_frames(target).float())
        encode_seconds = time.perf_counter() - t0
        unet_budget = stage_budget(budget, 1.0, spent=time.perf_counter() - start, minimum_share=0.25 * (1 - share))
        report = train_module(self.net, loss, fit_train, fit_val, unet_budget, device=self.device,
                              seed=self.seed, learning_rate=self.hparams["learning_rate"],
                              weight_decay=self.hparams["weight_decay"], desc=f"{self.name} U-Net")
        self.net.eval()
        self.recon_rmse = reconstruction_floor(self.encoder, val)
        report.extra.update({
            "encoder_fit": enc_report.as_dict(), "encoder_seconds": enc_seconds, "latent_encode_seconds": encode_seconds,
            "unet_seconds": report.seconds, "reconstruction_rmse": self.recon_rmse,
            "latent_shape": list(self.latent_shape), "unet_depth_used": self.depth_used,
        })
        report.seconds = time.perf_counter() - start
        report.data_seconds += enc_report.data_seconds
        return report

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        with torch.no_grad():
            z = self._encode_frames(history.to(self.device))
            with autocast(self.device):
                future = self.net(z).float()
            b, t = future.shape[:2]
            latents = self.scaler.inverse(future.reshape(b * t, *self.latent_shape))
            fields = self.encoder.decode(latents).float()
        return fields.reshape(b, t, *fields.shape[1:])

    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "net": self.net.state_dict(), "scaler": self.scaler.state_dict(),
                "reconstruction_rmse": self.recon_rmse}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        freeze_encoder(self.encoder)  # as after fit
        self.net.load_state_dict(state["net"])
        self.scaler.load_state_dict(state["scaler"])
        self.recon_rmse = state.get("reconstruction_rmse")

    def describe(self) -> dict[str, Any]:
        enc = encoder_parameters(self.encoder)
        unet = count_parameters(self.net)
        info: dict[str, Any] = {"parameters": enc + unet, "encoder_parameters": enc, "unet_parameters": unet,
                                "latent_shape": list(self.latent_shape), "unet_depth_used": self.depth_used,
                                "encoder": self.encoder.describe()}
        if self.recon_rmse is not None:
            info["reconstruction_rmse"] = self.recon_rmse
        return info


class RAEDirectNet(nn.Module):
    """History -> 1x1 in_adapter (12C -> 3) -> frozen ViT tokens -> RAE decoder -> (B, 4, C, H, W)."""

    def __init__(self, in_adapter: nn.Conv2d, tokens: nn.Module, decoder: nn.Module, output_steps: int) -> None:
        super().__init__()
        self.in_adapter, self.tokens, self.decoder = in_adapter, tokens, decoder
        self.output_steps = output_steps

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = history.shape
        image = self.in_adapter(history.reshape(b, t * c, h, w))
        return self.decoder(self.tokens(image)).reshape(b, self.output_steps, c, h, w)


class RAEDirect(TorchForecaster):
    """RAE "Stage-1 direct" forecaster; see the module docstring."""

    name = "rae_direct"
    family = "weatherdiff"
    normalisation = "minmax"
    hyperparameters: ClassVar[Mapping[str, Any]] = {
        **RAE_DEFAULTS,
        "freeze_backbone": True,
        "train_in_adapter": True,
        "residual": False,
        "learning_rate": 5e-4,
        "weight_decay": 1e-4,
    }
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": dict(RAE_SMOKE),
        "cpu": {**RAE_CPU, "residual": True},
    }

    def build(self) -> nn.Module:
        c, steps_in, steps_out = self.grid.n_channels, self.grid.input_steps, self.grid.output_steps
        frozen = bool(self.hparams["freeze_backbone"])
        tokens, decoder, weights = build_rae_parts(self.hparams, steps_out * c, self.grid.shape, frozen=frozen)
        adapter = ChannelAdapter(steps_in * c, 3)
        with torch.no_grad():  # start from the last input state, folded into 3 channels
            adapter.weight.zero_()
            adapter.weight[:, (steps_in - 1) * c:, 0, 0] = folding_matrix(c, 3)
        adapter.requires_grad_(bool(self.hparams["train_in_adapter"]))
        self.weights = (f"backbone: {weights}, {'frozen' if frozen else 'fine-tuned'}; in_adapter "
                        f"{'trained' if self.hparams['train_in_adapter'] else 'fixed'}; decoder trained from scratch")
        # residual: the decoder learns the change from the last state, starting exactly at persistence
        return TendencyWrapper(RAEDirectNet(adapter, tokens, decoder, steps_out),
                               residual=bool(self.hparams["residual"]), output_layer=decoder.head)

    def describe(self) -> dict[str, Any]:
        return {"parameters": count_parameters(self.module),
                "trainable_parameters": count_parameters(self.module, trainable_only=True),
                "backbone_parameters": count_parameters(self.module.core.tokens)}
