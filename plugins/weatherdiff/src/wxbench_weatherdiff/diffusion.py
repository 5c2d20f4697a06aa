"""Generative WeatherDiff models: conditional diffusion in an autoencoder's latent space.

Two probabilistic forecasters share one implementation (:class:`_ConditionalLatentDiffusion`):

``latent_diffusion`` (MODELS.md "latent_diffusion")
    A conditional DDPM in the SD-VAE latent space (encoder ``sd_vae``, :class:`.encoders.SDVAEEncoder`).
    Each of the 12 history frames and each of the 4 future frames is encoded to a ``(4, H/8, W/8)``
    latent (``(4, 4, 8)`` on the 32x64 grid). The denoiser is a diffusers ``UNet2DModel`` (ResNet
    blocks with the timestep embedding added in every block, self-attention at the coarser levels)
    on ``concat(noisy future latents (4*4 ch), history latents (12*4 ch))`` = 64 channels at 4x8,
    predicting the noise (epsilon) of the 16 future channels. Loss: MSE(noise).

``rae_diffusion`` (MODELS.md "Stage-B" of ``rae_direct``)
    The same conditional diffusion in the token space of the representation autoencoder (encoder
    ``rae``, :class:`.encoders.RAEEncoder`): every frame becomes N tokens of width D (a (D, gh, gw)
    grid). The denoiser is a DiT-style transformer assembled from diffusers building blocks: one
    token per (future step, position), embedded as ``Linear(D->w)(noisy token) + Linear(12D->w)(the
    12 history tokens at that position) + positional + lead-time embeddings``; ``depth``
    ``BasicTransformerBlock`` s with self-attention over all 4N tokens and adaLN-single timestep
    modulation (``norm_type="ada_norm_single"``: PixArt-alpha's form of DiT's adaLN-Zero, with
    ``AdaLayerNormSingle`` turning the timestep into every block's shift/scale/gate); a modulated
    final LayerNorm and a zero-initialised Linear(w->D) give each token's noise. The width is kept
    >= D (the RAE paper's finding: a DiT narrower than the representation cannot model its noise).
    Defaults: DiT-B (width 768, 12 layers, 12 heads) for SigLIP2-base's 768-wide 16x16 tokens.
    The forecast tokens are decoded by the RAE decoder.

Diffusion (both): ``DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
beta_end=0.02)`` for training (``add_noise``); sampling with ``DDIMScheduler.from_config`` of that
schedule, ``inference_steps`` steps with ``timestep_spacing="trailing"`` (so the first step starts at
t = 999, where the linear schedule has alpha_bar ~ 4e-5, i.e. pure noise), ``eta`` = ``ddim_eta``.
The training scheduler does not clip (the diffused quantities are standardised latents, not images in
[-1, 1]); the sampler clips its x0 estimates at ``clip_denoised`` = 4 standard deviations of the
standardised target (diffusers' ``clip_sample`` with ``clip_sample_range``). Why: at t = 999 the x0
estimate ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)`` multiplies the noise-prediction error by
1/sqrt(abar) ~ 160; an imperfect denoiser (any model trained for seconds on a CPU) then yields
samples with a standard deviation ~100 times the data's (measured: 108 against 0.96), while the
clipped sampler stays within the data's range. Standardised targets beyond 4 sigma are rare.

What MODELS.md left open, and what was chosen (documented design decisions):

* Latent standardisation. Latents are standardised per latent channel with training-split
  statistics (SD's fixed 0.18215 scale factor assumes the natural-image VAE; ours may be fine-tuned
  or untrained, so the statistics are measured). The conditioning history uses per-channel
  mean/std of the latents; the diffusion target uses per-(lead, channel) mean/std.
* Increment target (``predict_increment``, default on): the diffusion models the latent *increment*
  ``z(t+k) - z(t0)`` relative to the last history latent (per lead k), standardised, and the
  forecast latent is ``z(t0) + increment``. The increment is smaller and better conditioned than the
  absolute latent; a diffusion that has learnt little then degrades to (reconstructed) persistence
  rather than to noise. Common practice in latent weather forecasters; set it to False for
  MODELS.md's literal absolute target.
* ``pixel_anchor`` (off by default): forecast = ``x(t0) + D(z_forecast) - D(z(t0))`` instead of
  ``D(z_forecast)``: the decoder's systematic reconstruction error, which is strongly correlated
  between consecutive 6-hourly states, cancels in the difference. The leaderboard row records the
  option in its hyperparameters.
* Sampling is deterministic under a seed: the initial noise (and DDIM's noise when eta > 0) comes
  from a ``torch.Generator`` seeded with the model's seed, freshly for every ``predict`` call (so a
  forecast does not depend on what was predicted before). The seed is part of ``state_dict`` so
  that a reloaded model reproduces the forecasts. Ensemble members differ by their initial noise.
* Training: the encoder is trained first (when it has trainable parts: no pretrained weights, or
  fine-tuning) for ``encoder_budget_fraction`` of the wall-clock budget (with the profile's step and
  epoch limits), then frozen. The latents of the train and validation frames (all of them, or
  ``latent_cache_frames`` / ``latent_cache_val_frames`` frames in evenly spaced blocks of 64
  consecutive frames) are computed once and cached (a :class:`SplitData` whose "fields" are
  latents), so the diffusion training loop (``wxbench.training.train_module``) never runs the
  encoder. The diffusion gets the rest of the budget. The FitReport's ``seconds`` is the total;
  ``extra`` reports the encoder fit, the latent caching time and the diffusion fit separately, plus
  the reconstruction floor and the measured sampling time per window.
* Validation loss (early stopping): the same noise-prediction MSE with noise and timesteps drawn
  from a generator reseeded per validation batch, so that successive checks are comparable.
* Reconstruction floor: ``describe()["reconstruction_rmse"]`` = per-channel latitude-weighted RMSE
  (physical units) of decode(encode(x)) on the encoder's ``reconstruction_samples`` (64) evenly
  spaced *validation* frames (``latent.reconstruction_rmse``, the function the latent U-Nets use;
  the model never sees the test split before it is scored).
* The U-Net uses zero padding (diffusers' blocks); at the 4x8 latent resolution periodic padding in
  longitude would matter little and is not offered.

Cost: sampling runs ``inference_steps`` denoiser passes on ``B * E`` samples plus ``4 * B * E``
decoder passes per batch of B windows (plus 12 * B encoder passes for the history).
``describe()["sampling_seconds_per_window"]`` records the measured time per window (all E members)
on the fit device. Parameters at the defaults: the latent U-Net 27.2 M (on the (4, 4, 8) SD latent),
the DiT-B 97.9 M (on SigLIP2-base's 16x16 tokens of width 768), plus the encoders.

cpu profile (50 s of training in all, encoder included, on 2 CPU cores; measured on the embedded data):

* latent_diffusion. What makes the SD-type VAE useful within its 20 s (40 % of the budget), each
  measured on the validation split (2026-11-29; "oracle" = the true future latents decoded, with
  the pixel anchor below: the best any forecast in that latent space can do):
  (1) ``input_transform="standardised_anomaly"``: the VAE encodes the departure from the training
  split's mean field, divided by its standard deviation per channel. A VAE on the raw fields first
  spends its steps learning the mean state and then sits on a plateau (every state decoded to
  nearly the same field) for a number of steps that varies from run to run; on standardised
  anomalies it leaves the plateau within ~100 steps. After 30 s: z500 reconstruction RMSE 263-287
  (two seeds) against 633 for raw fields. (2) Three blocks instead of four
  (``sd_vae``'s ``SD_SMALL_VAE_CONFIG``, latent (4, 8, 16)): with four the VAE did not leave the mean
  state in 30 s. (3) A constant learning rate 5e-3 after the warm-up (``lr_schedule="constant"``):
  the cosine decay over a 20 s stage halves its useful steps. (4) 8 windows (frames) per step:
  a step costs about 70 % of a 16-frame step, so more steps in the same time.
  Result: reconstruction floor z500 ~270, oracle ~215 against persistence's 462 at 24 h. The
  diffusion (a 2-level U-Net, 32 and 64 channels, 0.72 M parameters, learning rate 3e-3; ~290 steps
  in the remaining ~29 s) then gives an ensemble mean 3-7 % below persistence's RMSE at 24 h on every
  variable, a fair CRPS a third below persistence's MAE, and spread-skill ratios 0.55-0.8 (three
  runs at diffusion learning rates 3e-3 and 5e-3; at 1e-3 the ensemble mean was 1-4 % below
  persistence on three variables and 0.7 % above on t850). Before these changes the
  ensemble mean tied persistence (ratio 1.00) with spread-skill 0.01-0.07. ``pixel_anchor`` is on:
  the forecast is the last state plus the decoded latent increment. The latents of 1024 training
  frames (16 blocks of 64 consecutive frames, ~780 windows) and 256 validation frames are cached;
  10 DDIM steps; sampling 8 members takes ~0.13 s per window (2 cores): ~45 s for the test split.
* rae_diffusion: the ``rae`` encoder's cpu config (frozen untrained ViT-tiny at 64x64: 4x4 tokens
  of width 192; its decoder learns standardised anomalies at a constant learning rate 1e-3, 8
  windows per step, for 20 s) and a 1-layer DiT of width 192 (the token width; 1.27 M parameters,
  learning rate 3e-3); 512 cached training frames (encoding is ~5x dearer than the VAE's); 10 DDIM
  steps; ~0.2 s per window (2 idle cores). On the validation split: z500 reconstruction floor 269
  (655 on raw fields with the cosine schedule), ensemble mean 15-21 % below persistence's RMSE at
  24 h on every variable, spread-skill 0.67-0.72 (before: tied persistence, spread-skill 0.09-0.25).
* Early-stopping checks of the encoder and the diffusion use 32 validation windows
  (``max_val_windows``): with checks every tenth of the budget, the profile's 128 would take most
  of the time.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from wxbench import Budget, FitReport, Forecaster, GridSpec, SplitData
from wxbench.errors import ConfigError
from wxbench.training import autocast, count_parameters, train_module

from .encoders import RAEEncoder, SDVAEEncoder
from .latent import fit_encoder
from .latent import reconstruction_rmse as encoder_reconstruction_rmse

__all__ = ["LatentDiffusion", "RAEDiffusion", "LatentUNetDenoiser", "TokenDiT"]

#: frames encoded or decoded per call while caching latents (the encoders chunk further inside)
_ENCODE_CHUNK = 256


# ----------------------------------------------------------------------------------------------
# Denoisers: (noisy future (B, 4, D, *sp), history (B, 12, D, *sp), timestep (B,)) -> noise (B, 4, D, *sp)
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# The shared conditional latent diffusion forecaster
# ----------------------------------------------------------------------------------------------

_DIFFUSION_DEFAULTS: dict[str, Any] = {
    # options passed to the encoder class (e.g. a local pretrained path, freeze flags, sizes)
    "encoder_options": {},
    # share of the wall-clock budget for training the encoder (when it has trainable parts)
    "encoder_budget_fraction": 0.3,
    # cap on the validation windows of the encoder's and the diffusion's early-stopping checks
    # (None: the profile's val_windows)
    "max_val_windows": None,
    # training frames encoded for the diffusion (None: all); whole blocks of consecutive frames
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
    # target (None: no clipping); see the module docstring
    "clip_denoised": 4.0,
    "predict_increment": True,
    "pixel_anchor": False,
    # samples (windows x members) per denoiser call at inference
    "sample_batch_size": 1024,
    "learning_rate": 2e-4,
    "weight_decay": 1e-4,
}


def subset_frames(split: SplitData, max_frames: int | None, block: int = 64) -> SplitData:
    """``split`` restricted to at most ``max_frames`` frames: evenly spaced blocks of ``block``
    consecutive frames, keeping only the windows that lie inside the kept frames (a window never
    spans two blocks that were not adjacent: the time gap breaks it, as between trajectories)."""
    import numpy as np

    from wxbench.data.splits import window_starts

    n = len(split.fields)
    total = n // block  # whole blocks only
    if not max_frames or n <= max_frames or total == 0:
        return split
    n_blocks = max(1, int(max_frames) // block)
    chosen = torch.linspace(0, total - 1, min(n_blocks, total)).round().long().unique()
    index = torch.cat([torch.arange(int(b) * block, min((int(b) + 1) * block, n)) for b in chosen])
    times = split.times[index.numpy()]
    grid = split.grid
    starts = window_starts(times, grid.input_steps + grid.output_steps, np.timedelta64(grid.step_hours, "h"))
    return SplitData(split.name, split.fields[index].contiguous(), times, torch.from_numpy(starts), grid,
                     split.normaliser)


def _tensor_numel(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, Mapping):
        return sum(_tensor_numel(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_numel(v) for v in obj)
    return 0


class _ConditionalLatentDiffusion(Forecaster):
    """Conditional DDPM on the latents of a frozen :class:`~wxbench.Encoder`; see the module docstring."""

    family = "weatherdiff"
    normalisation = "minmax"
    probabilistic = True
    encoder_class: ClassVar[type]

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, ensemble_size: int = 1,
                 **hparams: Any) -> None:
        super().__init__(grid, device=device, seed=seed, ensemble_size=ensemble_size, **hparams)
        from diffusers import DDPMScheduler

        hp = self.hparams
        torch.manual_seed(seed)
        self.encoder = self.encoder_class(grid, device=device, seed=seed, **dict(hp["encoder_options"]))
        frame_shape = (grid.n_channels, *grid.shape)
        self.latent_shape = tuple(int(s) for s in self.encoder.latent_shape(frame_shape))
        self.canonical_shape = self._canonical_shape(self.latent_shape)  # (D, *spatial)
        torch.manual_seed(seed)  # the denoiser's initial weights do not depend on the encoder's size
        self.denoiser = self.build_denoiser(self.canonical_shape).to(device)
        self.scheduler = DDPMScheduler(num_train_timesteps=hp["num_train_timesteps"], beta_schedule=hp["beta_schedule"],
                                       beta_start=hp["beta_start"], beta_end=hp["beta_end"],
                                       prediction_type="epsilon", clip_sample=False)
        d = self.canonical_shape[0]
        k = grid.output_steps
        # latent statistics from the training split (set by fit, saved in the state)
        self.stats = {"cond_mean": torch.zeros(d), "cond_std": torch.ones(d),
                      "target_mean": torch.zeros(k, d), "target_std": torch.ones(k, d)}
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

    def _freeze_encoder(self) -> None:
        """Freeze the encoder after its training (and after loading a trained state). Besides keeping
        it out of the diffusion's optimiser, this makes a reloaded model compute exactly what the
        trained one computed: on CPU, PyTorch picks different (equally exact) matmul kernels for
        weights with and without requires_grad, and the sampler amplifies such 1e-7 differences."""
        module = getattr(self.encoder, "module", None)
        if isinstance(module, nn.Module):
            module.requires_grad_(False)
            module.eval()

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

    def _latent_split(self, split: SplitData) -> SplitData:
        """The split with every frame replaced by its canonical latent (cached on the CPU)."""
        latents = self.encode_frames(split.fields).cpu().contiguous()
        return SplitData(f"{split.name} latents", latents, split.times, split.starts, split.grid, split.normaliser)

    # -- standardisation ---------------------------------------------------------------------------
    def _stat(self, name: str, ndim_spatial: int) -> torch.Tensor:
        value = self.stats[name].to(self.device)
        return value.reshape(*value.shape, *([1] * ndim_spatial))

    def _standardise_history(self, history_latents: torch.Tensor) -> torch.Tensor:
        sp = history_latents.ndim - 3
        return (history_latents - self._stat("cond_mean", sp)) / self._stat("cond_std", sp)

    def _target(self, history_latents: torch.Tensor, target_latents: torch.Tensor) -> torch.Tensor:
        """Standardised diffusion target (B, 4, D, *sp): increments over the last history latent, or latents."""
        sp = target_latents.ndim - 3
        base = history_latents[:, -1:] if self.hparams["predict_increment"] else 0.0
        return (target_latents - base - self._stat("target_mean", sp)) / self._stat("target_std", sp)

    def _untarget(self, history_latents: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Inverse of ``_target``: forecast latents (N, 4, D, *sp) from standardised samples."""
        sp = sample.ndim - 3
        latents = sample * self._stat("target_std", sp) + self._stat("target_mean", sp)
        if self.hparams["predict_increment"]:
            latents = latents + history_latents[:, -1:]
        return latents

    def _fit_stats(self, train_latents: SplitData) -> None:
        fields = train_latents.fields  # (T, D, *sp)
        d = fields.shape[1]
        per_channel = fields.transpose(0, 1).reshape(d, -1).double()
        self.stats["cond_mean"] = per_channel.mean(1).float()
        self.stats["cond_std"] = per_channel.std(1).clamp_min(1e-6).float()
        index = train_latents.evenly_spaced(4096)
        history, target = train_latents.windows(index)
        base = history[:, -1:] if self.hparams["predict_increment"] else 0.0
        inc = (target - base).transpose(0, 2).reshape(d, target.shape[1], -1).transpose(0, 1).double()  # (4, D, n)
        self.stats["target_mean"] = inc.mean(-1).float()
        self.stats["target_std"] = inc.std(-1).clamp_min(1e-6).float()

    # -- diffusion loss ----------------------------------------------------------------------------
    def _diffusion_loss(self, history_latents: torch.Tensor, target_latents: torch.Tensor,
                        generator: torch.Generator) -> torch.Tensor:
        cond = self._standardise_history(history_latents)
        x0 = self._target(history_latents, target_latents)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator,
                          device=x0.device)
        noisy = self.scheduler.add_noise(x0, noise, t)
        prediction = self.denoiser(noisy, cond, t)
        return ((prediction.float() - noise) ** 2).mean()

    # -- Forecaster API ----------------------------------------------------------------------------
    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        if self.hparams["max_val_windows"]:  # cheaper early-stopping checks for encoder and diffusion
            budget = replace(budget, val_windows=min(budget.val_windows, int(self.hparams["max_val_windows"])))
        trainable = dict(self.encoder.trainable)
        if any(trainable.values()):
            encoder_report, _ = fit_encoder(self.encoder, train, val, budget,
                                            float(self.hparams["encoder_budget_fraction"]))
            extra["encoder_fit"] = encoder_report.as_dict()
        else:
            extra["encoder_fit"] = None
        self._freeze_encoder()
        extra["encoder_trainable"] = trainable
        self._update_weights()
        extra["encoder_seconds"] = time.perf_counter() - start

        t0 = time.perf_counter()
        train_latents = self._latent_split(subset_frames(train, self.hparams["latent_cache_frames"]))
        extra["diffusion_training_windows"] = len(train_latents)
        val_latents = self._latent_split(subset_frames(val, self.hparams["latent_cache_val_frames"]))
        self._fit_stats(train_latents)
        limit = int(self.encoder.hparams.get("reconstruction_samples", 64))
        self.reconstruction_rmse = encoder_reconstruction_rmse(self.encoder, val, limit=limit)
        extra["latent_cache_seconds"] = time.perf_counter() - t0
        extra["reconstruction_rmse"] = self.reconstruction_rmse

        remaining = budget.max_seconds - (time.perf_counter() - start)
        diffusion_budget = replace(budget, max_seconds=max(remaining, 0.05 * budget.max_seconds))
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
        from diffusers import DDIMScheduler

        clip = self.hparams["clip_denoised"]
        sampler = DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing",
                                            clip_sample=clip is not None, clip_sample_range=float(clip or 1.0),
                                            set_alpha_to_one=False)
        sampler.set_timesteps(int(self.hparams["inference_steps"]))
        return sampler

    def sample(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Reverse diffusion: standardised conditions (N, 12, D, *sp) -> standardised samples (N, 4, D, *sp)."""
        shape = (cond.shape[0], self.grid.output_steps, *self.canonical_shape)
        x = torch.randn(shape, generator=generator).to(self.device)
        sampler = self._sampler()
        eta = float(self.hparams["ddim_eta"])
        for t in sampler.timesteps:
            timestep = torch.full((shape[0],), int(t), device=self.device, dtype=torch.long)
            with autocast(self.device):
                eps = self.denoiser(x, cond, timestep)
            x = sampler.step(eps.float(), t, x, eta=eta, generator=generator).prev_sample
        return x

    def predict(self, history: torch.Tensor) -> torch.Tensor:
        self.denoiser.eval()
        b, n_in, c, h, w = history.shape
        e, k = self.ensemble_size, self.grid.output_steps
        history = history.to(self.device)
        with torch.no_grad():
            hist_lat = self.encode_frames(history.reshape(b * n_in, c, h, w)).reshape(b, n_in, *self.canonical_shape)
            cond = self._standardise_history(hist_lat)
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
                "stats": {k: v.clone() for k, v in self.stats.items()}, "sampling_seed": self.sampling_seed,
                "encoder_weights": self.encoder.weights, "reconstruction_rmse": self.reconstruction_rmse,
                "sampling_seconds_per_window": self.sampling_seconds_per_window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self._freeze_encoder()
        self.encoder.weights = state.get("encoder_weights", self.encoder.weights)
        self.denoiser.load_state_dict(state["denoiser"])
        self.stats = {k: v.clone() for k, v in state["stats"].items()}
        self.sampling_seed = int(state["sampling_seed"])
        self.reconstruction_rmse = state.get("reconstruction_rmse")
        self.sampling_seconds_per_window = state.get("sampling_seconds_per_window")
        self._update_weights()

    def describe(self) -> dict[str, Any]:
        denoiser = count_parameters(self.denoiser)
        encoder = self.encoder.describe().get("parameters")
        if encoder is None:
            encoder = _tensor_numel(self.encoder.state_dict())
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
    encoder_class = SDVAEEncoder
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
            "encoder_options": dict(SDVAEEncoder.profile_hyperparameters.get("smoke", {})),
            "encoder_budget_fraction": 0.5,
            "block_out_channels": (16, 32), "layers_per_block": 1, "attention_levels": (False, True),
            "attention_head_dim": 8, "norm_num_groups": 8, "inference_steps": 3, "learning_rate": 1e-3,
        },
        # see "cpu profile" in the module docstring
        "cpu": {
            "encoder_options": dict(SDVAEEncoder.profile_hyperparameters["cpu"]),
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
    encoder_class = RAEEncoder
    hyperparameters = {
        **_DIFFUSION_DEFAULTS,
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
            "encoder_options": dict(RAEEncoder.profile_hyperparameters.get("smoke", {})),
            "encoder_budget_fraction": 0.5,
            "dit_width": 192, "dit_depth": 1, "dit_heads": 2, "inference_steps": 3, "learning_rate": 1e-3,
        },
        # see "cpu profile" in the module docstring
        "cpu": {
            "encoder_options": dict(RAEEncoder.profile_hyperparameters.get("cpu", {})),
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
