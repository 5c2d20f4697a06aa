"""Generative WeatherDiff models: conditional diffusion in an autoencoder's latent space.

Two probabilistic forecasters share one implementation (:class:`_ConditionalLatentDiffusion`); they
differ in the encoder they use by default and in the denoiser (:mod:`.denoisers`):

``latent_diffusion`` (docs/models.md, WeatherDiff models)
    A conditional DDPM in the SD-VAE latent space (``encoder="sd_vae"``). Each of the 12 history
    frames and each of the 4 future frames is encoded to a ``(4, H/8, W/8)`` latent (``(4, 4, 8)`` on
    the 32x64 grid); the denoiser is a diffusers ``UNet2DModel`` (:class:`.denoisers.LatentUNetDenoiser`).

``rae_diffusion`` (the original design's "Stage-B" of ``rae_direct``)
    The same conditional diffusion in the token space of the representation autoencoder
    (``encoder="rae"``): every frame becomes N tokens of width D (a (D, gh, gw) grid); the denoiser
    is a DiT (:class:`.denoisers.TokenDiT`): one token per (future step, position), self-attention
    over all 4N tokens, adaLN-single timestep modulation. Keep its width >= D (the RAE paper's
    finding: a DiT narrower than the representation cannot model its noise). Defaults: DiT-B (width
    768, 12 layers, 12 heads) for SigLIP2-base's 768-wide 16x16 tokens.

The diffusion process (DDPM training, clipped DDIM sampling) is in :mod:`.sampling`; the encoder is
found by its registered name (``encoder``, with ``encoder_profile`` and ``encoder_options``; see
:func:`.latent.build_encoder`).

What the original design left open, and what was chosen:

* Latent standardisation (:class:`.latent.Standardiser`, training-split statistics, in the state):
  the conditioning history per latent channel; the diffusion target per (lead, channel). SD's fixed
  0.18215 scale factor assumes the natural-image VAE; ours may be fine-tuned or untrained.
* Increment target (``predict_increment``, default on): the diffusion models the latent *increment*
  ``z(t+k) - z(t0)`` relative to the last history latent, standardised; the forecast latent is
  ``z(t0) + increment``. The increment is smaller and better conditioned than the absolute latent, and
  a diffusion that has learnt little degrades to (reconstructed) persistence rather than to noise.
  False gives the original's absolute target.
* ``pixel_anchor`` (off by default): forecast = ``x(t0) + D(z_forecast) - D(z(t0))`` instead of
  ``D(z_forecast)``: the decoder's systematic reconstruction error, strongly correlated between
  consecutive 6-hourly states, cancels in the difference.
* Sampling is deterministic under a seed: the initial noise (and DDIM's noise when eta > 0) comes
  from a ``torch.Generator`` seeded with the model's seed, afresh for every ``predict`` call (a
  forecast does not depend on what was predicted before). The seed is part of ``state_dict``.
  Ensemble members differ by their initial noise.
* Training: the encoder trains first for ``encoder_budget_fraction`` of the wall clock (with the
  profile's step and epoch limits) and is frozen; the latents of the train and validation frames
  (all, or ``latent_cache_frames`` / ``latent_cache_val_frames`` of them in evenly spaced contiguous
  chunks, :func:`.latent.encode_split`) are computed once, so the diffusion's training loop
  (``wxbench.training.train_module``) never runs the encoder; the diffusion gets the rest of the
  budget. ``FitReport.seconds`` is the total; ``extra`` reports the stages separately, the
  reconstruction floor and the measured sampling time per window.
* Validation loss (early stopping): the same noise-prediction MSE with noise and timesteps drawn
  from a generator reseeded per validation batch, so that successive checks are comparable.
  ``max_val_windows`` caps the validation windows of the encoder's and the diffusion's checks.
* Reconstruction floor: ``describe()["reconstruction_rmse"]``, the per-channel latitude-weighted RMSE
  (physical units) of decode(encode(x)) on evenly spaced *validation* frames.

Cost: sampling runs ``inference_steps`` denoiser passes on ``B * E`` samples plus ``4 * B * E``
decoder passes per batch of B windows (plus 12 * B encoder passes for the history);
``describe()["sampling_seconds_per_window"]`` records the measured time. Parameters at the defaults:
the latent U-Net 27.2 M (on the (4, 4, 8) SD latent), the DiT-B 97.9 M (on SigLIP2-base's 16x16
tokens of width 768), plus the encoders. The ``cpu`` profiles and how they were tuned are in
docs/weatherdiff-notes.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from wxbench import Budget, FitReport, Forecaster, GridSpec, SplitData
from wxbench.errors import ConfigError
from wxbench.training import count_parameters, train_module

from .denoisers import LatentUNetDenoiser, TokenDiT
from .latent import (Standardiser, build_encoder, encode_split, encoder_parameters, fit_encoder, freeze_encoder,
                     reconstruction_floor, stage_budget)
from .sampling import ddim_sampler, noise_prediction_loss, sample, training_scheduler

__all__ = ["LatentDiffusion", "RAEDiffusion"]

#: frames encoded or decoded per call at prediction (the encoders chunk further inside)
_ENCODE_CHUNK = 256


_DIFFUSION_DEFAULTS: dict[str, Any] = {
    "encoder": "sd_vae",  # a registered encoder's name
    "encoder_profile": None,  # whose profile overrides the encoder gets (None: its defaults)
    "encoder_options": {},  # encoder hyperparameters over those (e.g. a local pretrained path, freeze flags)
    # share of the wall-clock budget for training the encoder
    "encoder_budget_fraction": 0.3,
    # cap on the validation windows of the encoder's and the diffusion's early-stopping checks
    # (None: the profile's val_windows)
    "max_val_windows": None,
    # training frames encoded for the diffusion (None: all), in evenly spaced contiguous chunks
    "latent_cache_frames": None,
    # validation frames encoded for the diffusion's early stopping (None: all)
    "latent_cache_val_frames": None,
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "inference_steps": 50,
    "ddim_eta": 0.0,
    # the sampler clips its x0 estimates to +-this many standard deviations of the standardised
    # target (None: no clipping); see wxbench_weatherdiff.sampling
    "clip_denoised": 4.0,
    "predict_increment": True,
    "pixel_anchor": False,
    # samples (windows x members) per denoiser call at inference
    "sample_batch_size": 1024,
    "learning_rate": 2e-4,
    "weight_decay": 1e-4,
}


class _ConditionalLatentDiffusion(Forecaster):
    """Conditional DDPM on the latents of a frozen :class:`~wxbench.Encoder`; see the module docstring."""

    family = "weatherdiff"
    normalisation = "minmax"
    probabilistic = True

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, ensemble_size: int = 1,
                 **hparams: Any) -> None:
        super().__init__(grid, device=device, seed=seed, ensemble_size=ensemble_size, **hparams)
        hp = self.hparams
        torch.manual_seed(seed)
        self.encoder = build_encoder(hp["encoder"], grid, device=device, seed=seed, profile=hp["encoder_profile"],
                                     options=hp["encoder_options"], model=self.name)
        frame_shape = (grid.n_channels, *grid.shape)
        self.latent_shape = tuple(int(s) for s in self.encoder.latent_shape(frame_shape))
        self.canonical_shape = self._canonical_shape(self.latent_shape)  # (D, *spatial)
        torch.manual_seed(seed)  # the denoiser's initial weights do not depend on the encoder's size
        self.denoiser = self.build_denoiser(self.canonical_shape).to(device)
        self.scheduler = training_scheduler(hp["num_train_timesteps"], hp["beta_schedule"], hp["beta_start"],
                                            hp["beta_end"])
        d, spatial = self.canonical_shape[0], (1,) * (len(self.canonical_shape) - 1)
        # latent statistics from the training split (set by fit, saved in the state): the history per
        # latent channel, the diffusion target per (lead, latent channel)
        self.cond_scaler = Standardiser((d, *spatial)).to(device)
        self.target_scaler = Standardiser((grid.output_steps, d, *spatial)).to(device)
        self.sampling_seed = seed
        self.reconstruction_rmse: dict[str, float] | None = None
        self.sampling_seconds_per_window: float | None = None
        self._update_weights()

    # -- subclass hooks ----------------------------------------------------------------------------
    def build_denoiser(self, canonical_shape: tuple[int, ...]) -> nn.Module:
        raise NotImplementedError

    def _canonical_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(D, *spatial) with the latent channel dim first; the identity by default."""
        return latent_shape

    def to_canonical(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, *latent_shape) -> (B, D, *spatial)."""
        return latent

    def from_canonical(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, D, *spatial) -> (B, *latent_shape)."""
        return latent

    # -- encoder helpers ---------------------------------------------------------------------------
    def _update_weights(self) -> None:
        self.weights = (f"encoder {self.encoder.name}: {self.encoder.weights}; "
                        f"diffusion denoiser: trained from scratch")

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, C, H, W) in [-1, 1] -> canonical latents (F, D, *spatial), float32 on the model's device."""
        out = []
        with torch.no_grad():
            for i in range(0, len(frames), _ENCODE_CHUNK):
                z = self.encoder.encode(frames[i:i + _ENCODE_CHUNK].to(self.device))
                out.append(self.to_canonical(z.float()))
        return torch.cat(out) if out else torch.zeros(0, *self.canonical_shape, device=self.device)

    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """canonical latents (F, D, *spatial) -> (F, C, H, W)."""
        out = []
        with torch.no_grad():
            for i in range(0, len(latents), _ENCODE_CHUNK):
                out.append(self.encoder.decode(self.from_canonical(latents[i:i + _ENCODE_CHUNK])).float())
        return torch.cat(out)

    def _latent_split(self, split: SplitData, max_frames: int | None) -> SplitData:
        """The split's frames (all, or ``max_frames`` in chunks) as canonical latents, cached on the CPU."""
        latents = encode_split(self.encoder, split, max_frames=max_frames)
        latents.fields = self.to_canonical(latents.fields).contiguous()
        return latents

    # -- standardisation ---------------------------------------------------------------------------
    def _target(self, history_latents: torch.Tensor, target_latents: torch.Tensor) -> torch.Tensor:
        """Standardised diffusion target (B, 4, D, *sp): increments over the last history latent, or latents."""
        base = history_latents[:, -1:] if self.hparams["predict_increment"] else 0.0
        return self.target_scaler(target_latents - base)

    def _untarget(self, history_latents: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Inverse of ``_target``: forecast latents (N, 4, D, *sp) from standardised samples."""
        latents = self.target_scaler.inverse(sample)
        if self.hparams["predict_increment"]:
            latents = latents + history_latents[:, -1:]
        return latents

    def _fit_stats(self, train_latents: SplitData) -> None:
        self.cond_scaler.fit(train_latents.fields)  # (T, D, *sp): per latent channel
        history, target = train_latents.windows(train_latents.evenly_spaced(4096))
        base = history[:, -1:] if self.hparams["predict_increment"] else 0.0
        self.target_scaler.fit(target - base, keep=(1, 2))  # (B, 4, D, *sp): per (lead, latent channel)

    # -- diffusion loss ----------------------------------------------------------------------------
    def _diffusion_loss(self, history_latents: torch.Tensor, target_latents: torch.Tensor,
                        generator: torch.Generator) -> torch.Tensor:
        return noise_prediction_loss(self.denoiser, self.scheduler, self._target(history_latents, target_latents),
                                     self.cond_scaler(history_latents), generator)

    # -- Forecaster API ----------------------------------------------------------------------------
    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        if self.hparams["max_val_windows"]:  # cheaper early-stopping checks for encoder and diffusion
            budget = replace(budget, val_windows=min(budget.val_windows, int(self.hparams["max_val_windows"])))
        trainable = dict(self.encoder.trainable)
        share = float(self.hparams["encoder_budget_fraction"])
        encoder_report, _ = fit_encoder(self.encoder, train, val, budget, share)
        extra["encoder_fit"] = encoder_report.as_dict()
        extra["encoder_trainable"] = trainable
        self._update_weights()
        extra["encoder_seconds"] = time.perf_counter() - start

        t0 = time.perf_counter()
        train_latents = self._latent_split(train, self.hparams["latent_cache_frames"])
        extra["diffusion_training_windows"] = len(train_latents)
        val_latents = self._latent_split(val, self.hparams["latent_cache_val_frames"])
        self._fit_stats(train_latents)
        self.reconstruction_rmse = reconstruction_floor(self.encoder, val)
        extra["latent_cache_seconds"] = time.perf_counter() - t0
        extra["reconstruction_rmse"] = self.reconstruction_rmse

        diffusion_budget = stage_budget(budget, 1.0, spent=time.perf_counter() - start, minimum_share=0.05)
        train_generator = torch.Generator(device=self.device).manual_seed(self.seed)
        n_val_batches = max(1, math.ceil(len(val_latents.evenly_spaced(budget.val_windows)) / budget.eval_batch_size))
        val_calls = [0]

        def train_loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self._diffusion_loss(history, target, train_generator)

        def val_loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            # the same noise and timesteps at every validation check: checks are comparable
            batch = val_calls[0] % n_val_batches
            val_calls[0] += 1
            generator = torch.Generator(device=self.device).manual_seed(self.seed + 1 + batch)
            return self._diffusion_loss(history, target, generator)

        report = train_module(self.denoiser, train_loss, train_latents, val_latents, diffusion_budget,
                              device=self.device, seed=self.seed, learning_rate=self.hparams["learning_rate"],
                              weight_decay=self.hparams["weight_decay"], val_loss_fn=val_loss, desc=self.name)
        extra["diffusion_fit"] = {"seconds": report.seconds, "steps": report.steps, "epochs": report.epochs,
                                  "stopped_because": report.stopped_because}
        self.denoiser.eval()
        self.sampling_seconds_per_window = self._time_sampling(val, min(budget.eval_batch_size, 16))
        extra["sampling_seconds_per_window"] = self.sampling_seconds_per_window
        report.extra = extra
        # the budget covers the encoder, the latent cache and the diffusion; sampling timing is a measurement
        report.seconds = extra["encoder_seconds"] + extra["latent_cache_seconds"] + report.seconds
        return report

    def _time_sampling(self, split: SplitData, batch_size: int) -> float | None:
        if len(split) == 0:
            return None
        history, _ = split.windows(torch.arange(min(batch_size, len(split))))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.predict(history)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / len(history)

    def _sampler(self):
        return ddim_sampler(self.scheduler.config, self.hparams["inference_steps"], self.hparams["clip_denoised"])

    def sample(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Reverse diffusion: standardised conditions (N, 12, D, *sp) -> standardised samples (N, 4, D, *sp)."""
        shape = (cond.shape[0], self.grid.output_steps, *self.canonical_shape)
        return sample(self.denoiser, self._sampler(), cond, shape, eta=float(self.hparams["ddim_eta"]),
                      generator=generator, device=self.device)

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        self.denoiser.eval()
        b, n_in, c, h, w = history.shape
        e, k = self.ensemble_size, self.grid.output_steps
        history = history.to(self.device)
        with torch.no_grad():
            hist_lat = self.encode_frames(history.reshape(b * n_in, c, h, w)).reshape(b, n_in, *self.canonical_shape)
            cond = self.cond_scaler(hist_lat)
            generator = torch.Generator().manual_seed(self.sampling_seed)
            members = []
            # window-major order: sample i is window i // e, member i % e; conditions are gathered per
            # chunk (not repeated E times up front: RAE token conditions are large)
            chunk = max(1, int(self.hparams["sample_batch_size"]))
            for i in range(0, b * e, chunk):
                window = torch.arange(i, min(i + chunk, b * e), device=cond.device) // e
                sample = self.sample(cond[window], generator)
                latents = self._untarget(hist_lat[window, -1:], sample)  # (n, 4, D, *sp)
                members.append(self.decode_frames(latents.flatten(0, 1)).reshape(-1, k, c, h, w))
            out = torch.cat(members).reshape(b, e, k, c, h, w)
            if self.hparams["pixel_anchor"]:
                last = history[:, -1]
                reconstructed_last = self.decode_frames(hist_lat[:, -1])
                out = out + (last - reconstructed_last)[:, None, None]
        return out.float()

    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "denoiser": self.denoiser.state_dict(),
                "cond_scaler": self.cond_scaler.state_dict(), "target_scaler": self.target_scaler.state_dict(),
                "sampling_seed": self.sampling_seed,
                "encoder_weights": self.encoder.weights, "reconstruction_rmse": self.reconstruction_rmse,
                "sampling_seconds_per_window": self.sampling_seconds_per_window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        freeze_encoder(self.encoder)  # as after fit
        self.encoder.weights = state.get("encoder_weights", self.encoder.weights)
        self.denoiser.load_state_dict(state["denoiser"])
        self.cond_scaler.load_state_dict(state["cond_scaler"])
        self.target_scaler.load_state_dict(state["target_scaler"])
        self.sampling_seed = int(state["sampling_seed"])
        self.reconstruction_rmse = state.get("reconstruction_rmse")
        self.sampling_seconds_per_window = state.get("sampling_seconds_per_window")
        self._update_weights()

    def describe(self) -> dict[str, Any]:
        denoiser = count_parameters(self.denoiser)
        encoder = encoder_parameters(self.encoder)
        info: dict[str, Any] = {
            "parameters": denoiser + encoder,
            "denoiser_parameters": denoiser,
            "encoder_parameters": encoder,
            "encoder": self.encoder.name,
            "encoder_weights": self.encoder.weights,
            "latent_shape": list(self.latent_shape),
            "sampler": (f"DDIM ({self.hparams['inference_steps']} steps, trailing spacing, "
                        f"eta {self.hparams['ddim_eta']}); trained as DDPM with "
                        f"{self.hparams['num_train_timesteps']} {self.hparams['beta_schedule']} betas "
                        f"{self.hparams['beta_start']}..{self.hparams['beta_end']}"),
            "ensemble_size": self.ensemble_size,
        }
        if self.reconstruction_rmse is not None:
            info["reconstruction_rmse"] = dict(self.reconstruction_rmse)
            info["reconstruction_split"] = "val"
        if self.sampling_seconds_per_window is not None:
            info["sampling_seconds_per_window"] = self.sampling_seconds_per_window
        return info


class LatentDiffusion(_ConditionalLatentDiffusion):
    """Conditional DDPM in the SD-VAE latent space with a timestep-conditioned U-Net (see the module docstring)."""

    name = "latent_diffusion"
    hyperparameters = {
        **_DIFFUSION_DEFAULTS,
        "block_out_channels": (128, 256, 256),
        "layers_per_block": 2,
        "attention_levels": (False, True, True),
        "attention_head_dim": 32,
        "norm_num_groups": 32,
    }
    profile_hyperparameters = {
        "smoke": {
            "encoder_profile": "smoke",
            "encoder_budget_fraction": 0.5,
            "block_out_channels": (16, 32), "layers_per_block": 1, "attention_levels": (False, True),
            "attention_head_dim": 8, "norm_num_groups": 8, "inference_steps": 3, "learning_rate": 1e-3,
        },
        # tuned on the validation split: docs/weatherdiff-notes.md
        "cpu": {
            "encoder_profile": "cpu",
            "encoder_budget_fraction": 0.4, "max_val_windows": 32, "latent_cache_frames": 1024,
            "latent_cache_val_frames": 256,
            "block_out_channels": (32, 64), "layers_per_block": 1, "attention_levels": (False, True),
            "attention_head_dim": 32, "norm_num_groups": 8, "inference_steps": 10, "learning_rate": 3e-3,
            "pixel_anchor": True,
        },
    }

    def build_denoiser(self, canonical_shape: tuple[int, ...]) -> nn.Module:
        if len(canonical_shape) != 3:
            raise ConfigError(f"latent_diffusion needs an image-like latent (D, h, w); the encoder gives "
                              f"{canonical_shape}")
        hp = self.hparams
        d, h, w = canonical_shape
        return LatentUNetDenoiser(d, (h, w), self.grid.input_steps, self.grid.output_steps,
                                  block_out_channels=tuple(hp["block_out_channels"]),
                                  layers_per_block=hp["layers_per_block"],
                                  attention_levels=tuple(hp["attention_levels"]),
                                  attention_head_dim=hp["attention_head_dim"], norm_num_groups=hp["norm_num_groups"])


class RAEDiffusion(_ConditionalLatentDiffusion):
    """Diffusion in the RAE token space with a DiT-style denoiser ("Stage-B"; see the module docstring)."""

    name = "rae_diffusion"
    hyperparameters = {
        **_DIFFUSION_DEFAULTS,
        "encoder": "rae",
        "dit_width": 768,
        "dit_depth": 12,
        "dit_heads": 12,
        "dit_dropout": 0.0,
        # a DiT-B pass on 4 x 256 tokens is ~0.2 TFLOP per sample: 25 DDIM steps, not 50
        "inference_steps": 25,
        "sample_batch_size": 256,
    }
    profile_hyperparameters = {
        "smoke": {
            "encoder_profile": "smoke",
            "encoder_budget_fraction": 0.5,
            "dit_width": 192, "dit_depth": 1, "dit_heads": 2, "inference_steps": 3, "learning_rate": 1e-3,
        },
        # tuned on the validation split: docs/weatherdiff-notes.md
        "cpu": {
            "encoder_profile": "cpu",
            "encoder_budget_fraction": 0.4, "max_val_windows": 32, "latent_cache_frames": 512,
            "latent_cache_val_frames": 256,
            "dit_width": 192, "dit_depth": 1, "dit_heads": 3, "inference_steps": 10, "learning_rate": 3e-3,
            "pixel_anchor": True,
        },
    }

    def _canonical_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(latent_shape) == 2:  # (N tokens, D)
            n, d = latent_shape
            return (d, n)
        if len(latent_shape) == 3:  # (D, h, w) token grid
            d, h, w = latent_shape
            return (d, h * w)
        raise ConfigError(f"rae_diffusion needs token latents (N, D) or (D, h, w); the encoder gives {latent_shape}")

    def to_canonical(self, latent: torch.Tensor) -> torch.Tensor:
        if len(self.latent_shape) == 2:
            return latent.transpose(1, 2)
        return latent.flatten(2)

    def from_canonical(self, latent: torch.Tensor) -> torch.Tensor:
        if len(self.latent_shape) == 2:
            return latent.transpose(1, 2)
        return latent.reshape(latent.shape[0], *self.latent_shape)

    def build_denoiser(self, canonical_shape: tuple[int, ...]) -> nn.Module:
        hp = self.hparams
        d, n = canonical_shape
        return TokenDiT(d, n, self.grid.input_steps, self.grid.output_steps, width=hp["dit_width"],
                        depth=hp["dit_depth"], heads=hp["dit_heads"], dropout=hp["dit_dropout"])
