"""WeatherDiff deterministic forecasters: ``pixel_unet``, ``latent_unet`` (``_sd`` / ``_rae``), ``rae_direct``.

All take min-max scaled fields in [-1, 1] (``normalisation = "minmax"``) and fold time into
channels, as the original did (no explicit temporal model). Left open by MODELS.md and offered by all
three: ``residual`` (predict the change from the last input state, with the output layer initialised
to zero so that training starts exactly at persistence; off by default, as the original predicted the
states themselves) and, for the U-Nets, ``lon_padding`` ("zeros" as in the original, or "circular":
periodic in longitude).

``pixel_unet``: :class:`~wxbench_weatherdiff.unet.UNet` on (B, 12*C, H, W) -> (B, 4*C, H, W).
ConvBlock = (Conv3x3-GroupNorm(8)-SiLU) x 2; down = ConvBlock then MaxPool(2) keeping the skip; up =
ConvTranspose(k2, s2), concatenate the skip, ConvBlock; 1x1 head. Defaults base 64, depth 4 (32 x 64
-> 2 x 4 at the bottleneck, width 1024; 32 latitudes halve 5 times, so depth 5 is accepted and deeper
is a ConfigError): 31.07 M parameters at C = 4, ~3.1 GFLOP per sample. ``cpu`` profile: base 16, depth
4 (1.95 M parameters, ~0.22 GFLOP per sample), circular padding, residual: a base-64 U-Net would get
only a few dozen steps in 50 s on 2 cores.

``latent_unet``: the forecaster owns an encoder (``vae_type`` "sd": :class:`SDVAEEncoder`, "rae":
:class:`RAEEncoder`, configured by the ``sd_vae`` / ``rae`` hyperparameter dicts, merged over the
encoder's defaults). ``fit``:

1. trains the encoder on reconstruction with ``encoder_budget_fraction`` of the wall clock (reported
   separately: ``FitReport.extra["encoder_fit"]`` and ``["encoder_seconds"]``), then freezes it;
2. encodes every frame of the training and validation splits once (``cache_latents``; otherwise each
   training step encodes its windows; ``max_cached_frames`` caps the training frames, taken in
   evenly spaced contiguous chunks) and standardises the latents per channel;
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
(B, 4, C, H, W). ``train_in_adapter`` trains the adapter through the frozen backbone. The MODELS.md
example backbone (DINOv2-giant/14 at 518) is selectable by name; the default is the RAE's
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
from wxbench.training import TorchForecaster, autocast, count_parameters, train_module

from .encoders import RAE_CPU, RAE_DEFAULTS, RAE_SMOKE, RAEEncoder, SDVAEEncoder, build_rae_parts
from .latent import ChannelAdapter, LatentScaler, encode_split, fit_encoder, folding_matrix, make_encoder, \
    reconstruction_rmse
from .unet import UNet, max_depth

__all__ = ["LatentUNet", "PixelUNet", "RAEDirect"]


class PixelUNetModule(nn.Module):
    """(B, 12, C, H, W) -> fold time into channels -> U-Net -> (B, 4, C, H, W) (+ last state if residual)."""

    def __init__(self, unet: UNet, output_steps: int, residual: bool) -> None:
        super().__init__()
        self.unet, self.output_steps, self.residual = unet, output_steps, residual
        if residual:  # start exactly at persistence: the U-Net learns the change
            nn.init.zeros_(unet.head.weight)
            nn.init.zeros_(unet.head.bias)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = history.shape
        out = self.unet(history.reshape(b, t * c, h, w)).reshape(b, self.output_steps, c, h, w)
        return out + history[:, -1:] if self.residual else out


class PixelUNet(TorchForecaster):
    """Pixel-space U-Net; see the module docstring."""

    name = "pixel_unet"
    family = "weatherdiff"
    normalisation = "minmax"
    hyperparameters: ClassVar[Mapping[str, Any]] = {
        "base_channels": 64,
        "depth": 4,
        "groups": 8,
        "lon_padding": "zeros",
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
        c = self.grid.n_channels
        unet = UNet(self.grid.input_steps * c, self.grid.output_steps * c, base_channels=self.hparams["base_channels"],
                    depth=depth, groups=self.hparams["groups"], lon_padding=self.hparams["lon_padding"])
        return PixelUNetModule(unet, self.grid.output_steps, bool(self.hparams["residual"]))


class LatentNet(PixelUNetModule):
    """Standardised latent windows (B, 12, C_lat, h, w) -> (B, 4, C_lat, h, w) through a U-Net.

    The pixel U-Net's module on latents (residual: start at the last latent state, "persistence in
    latent space"), plus the latents' standardisation statistics.
    """

    def __init__(self, latent_shape: tuple[int, int, int], input_steps: int, output_steps: int, *,
                 base_channels: int, depth: int, groups: int, lon_padding: str, residual: bool = False) -> None:
        c = latent_shape[0]
        super().__init__(UNet(input_steps * c, output_steps * c, base_channels=base_channels, depth=depth,
                              groups=groups, lon_padding=lon_padding), output_steps, residual)
        self.scaler = LatentScaler(c)


class LatentUNet(Forecaster):
    """U-Net on encoder latents (``vae_type`` "sd" or "rae"); see the module docstring."""

    name = "latent_unet"
    family = "weatherdiff"
    normalisation = "minmax"
    hyperparameters: ClassVar[Mapping[str, Any]] = {
        "vae_type": "sd",
        "unet_base_channels": 128,
        "unet_depth": 3,
        "groups": 8,
        "lon_padding": "zeros",
        "residual": False,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "encoder_budget_fraction": 0.4,
        "cache_latents": True,
        "max_cached_frames": None,  # None: encode every training frame once; N: N frames in chunks
        "reconstruction_samples": 64,
        "sd_vae": {},  # SDVAEEncoder hyperparameter overrides
        "rae": {},  # RAEEncoder hyperparameter overrides
    }
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {"unet_base_channels": 8, "unet_depth": 1, "reconstruction_samples": 8,
                  "sd_vae": dict(SDVAEEncoder.profile_hyperparameters["smoke"]),
                  "rae": dict(RAEEncoder.profile_hyperparameters["smoke"])},
        # the encoders' own cpu configs (small SD-family VAE from scratch; ViT-tiny at 64 x 64) and a
        # U-Net of base 64 (cheap on a 4 x 8 or 4 x 4 latent grid: well under 0.1 GFLOP per sample), so
        # that the U-Net stage gets thousands of samples on cached latents
        # 768 cached training frames (12 chunks of 64: ~590 windows) bound the encoding cost, which the
        # budget pays (the ViT-tiny costs ~0.19 GFLOP per frame)
        "cpu": {"unet_base_channels": 64, "lon_padding": "circular", "residual": True,
                "encoder_budget_fraction": 0.5, "max_cached_frames": 768,
                "sd_vae": dict(SDVAEEncoder.profile_hyperparameters["cpu"]),
                "rae": dict(RAEEncoder.profile_hyperparameters["cpu"])},
    }

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, ensemble_size: int = 1,
                 **hparams: Any) -> None:
        super().__init__(grid, device=device, seed=seed, ensemble_size=ensemble_size, **hparams)
        vae_type = self.hparams["vae_type"]
        if vae_type not in ("sd", "rae"):
            raise ConfigError(f"latent_unet: vae_type must be 'sd' or 'rae', got {vae_type!r}")
        torch.manual_seed(seed)
        enc_params = self.hparams["sd_vae"] if vae_type == "sd" else self.hparams["rae"]
        self.encoder = make_encoder(vae_type, grid, device=device, seed=seed, hyperparameters=dict(enc_params))
        self.latent_shape = tuple(self.encoder.latent_shape((grid.n_channels, *grid.shape)))
        self.depth_used = min(int(self.hparams["unet_depth"]), max_depth(*self.latent_shape[1:]))
        self.net = LatentNet(self.latent_shape, grid.input_steps, grid.output_steps,
                             base_channels=self.hparams["unet_base_channels"], depth=self.depth_used,
                             groups=self.hparams["groups"], lon_padding=self.hparams["lon_padding"],
                             residual=bool(self.hparams["residual"])).to(device)
        self.recon_rmse: dict[str, float] | None = None
        self.weights = f"{self.encoder.name}: {self.encoder.weights}; latent U-Net trained from scratch"

    # -- helpers ---------------------------------------------------------------------------------
    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> standardised latents (B, T, *latent_shape), no gradient."""
        b, t = frames.shape[:2]
        with torch.no_grad():
            z = self.encoder.encode(frames.reshape(b * t, *frames.shape[2:]))
        return self.net.scaler.normalise(z.to(self.device)).reshape(b, t, *self.latent_shape)

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        fraction = float(self.hparams["encoder_budget_fraction"])
        enc_report, enc_seconds = fit_encoder(self.encoder, train, val, budget, fraction)
        t0 = time.perf_counter()
        scaler = self.net.scaler
        if self.hparams["cache_latents"]:
            latent_train = encode_split(self.encoder, train, max_frames=self.hparams["max_cached_frames"])
            latent_val = encode_split(self.encoder, val)
            stats = LatentScaler(self.latent_shape[0]).fit(latent_train.fields)  # on the CPU, beside the cache
            latent_train.fields = stats.normalise(latent_train.fields).contiguous()
            latent_val.fields = stats.normalise(latent_val.fields).contiguous()
            scaler.load_state_dict(stats.state_dict())
            fit_train, fit_val = latent_train, latent_val

            def loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.mse_loss(self.net(history).float(), target.float())
        else:
            sample = train.fields[torch.linspace(0, len(train.fields) - 1, min(256, len(train.fields))).long()]
            with torch.no_grad():
                scaler.fit(self.encoder.encode(sample.to(self.device)).float())
            fit_train, fit_val = train, val

            def loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.mse_loss(self.net(self._encode_frames(history)).float(), self._encode_frames(target).float())
        encode_seconds = time.perf_counter() - t0
        remaining = max(budget.max_seconds - (time.perf_counter() - start), 0.25 * budget.max_seconds * (1 - fraction))
        report = train_module(self.net, loss, fit_train, fit_val, _with_seconds(budget, remaining), device=self.device,
                              seed=self.seed, learning_rate=self.hparams["learning_rate"],
                              weight_decay=self.hparams["weight_decay"], desc=f"{self.name} U-Net")
        self.net.eval()
        self.recon_rmse = reconstruction_rmse(self.encoder, val, limit=int(self.hparams["reconstruction_samples"]))
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
            latents = self.net.scaler.denormalise(future.reshape(b * t, *self.latent_shape))
            fields = self.encoder.decode(latents).float()
        return fields.reshape(b, t, *fields.shape[1:])

    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "net": self.net.state_dict(), "reconstruction_rmse": self.recon_rmse}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.net.load_state_dict(state["net"])
        self.recon_rmse = state.get("reconstruction_rmse")

    def describe(self) -> dict[str, Any]:
        enc = count_parameters(self.encoder.module)
        unet = count_parameters(self.net)
        info: dict[str, Any] = {"parameters": enc + unet, "encoder_parameters": enc, "unet_parameters": unet,
                                "latent_shape": list(self.latent_shape), "unet_depth_used": self.depth_used,
                                "encoder": self.encoder.describe()}
        if self.recon_rmse is not None:
            info["reconstruction_rmse"] = self.recon_rmse
        return info


def _with_seconds(budget: Budget, seconds: float) -> Budget:
    from dataclasses import replace

    return replace(budget, max_seconds=seconds)


class RAEDirectModule(nn.Module):
    """History -> 1x1 in_adapter (12C -> 3) -> frozen ViT tokens -> RAE decoder -> (B, 4, C, H, W)."""

    def __init__(self, in_adapter: nn.Conv2d, tokens: nn.Module, decoder: nn.Module, output_steps: int,
                 residual: bool = False) -> None:
        super().__init__()
        self.in_adapter, self.tokens, self.decoder = in_adapter, tokens, decoder
        self.output_steps, self.residual = output_steps, residual
        if residual:  # start exactly at persistence: the decoder learns the change
            nn.init.zeros_(decoder.head.weight)
            nn.init.zeros_(decoder.head.bias)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = history.shape
        image = self.in_adapter(history.reshape(b, t * c, h, w))
        out = self.decoder(self.tokens(image)).reshape(b, self.output_steps, c, h, w)
        return out + history[:, -1:] if self.residual else out


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
        return RAEDirectModule(adapter, tokens, decoder, steps_out, residual=bool(self.hparams["residual"]))

    def describe(self) -> dict[str, Any]:
        return {"parameters": count_parameters(self.module),
                "trainable_parameters": count_parameters(self.module, trainable_only=True),
                "backbone_parameters": count_parameters(self.module.tokens)}
