"""The diffusion process of the WeatherDiff generative models: DDPM training, DDIM sampling (diffusers).

- Training (:func:`training_scheduler`, :func:`noise_prediction_loss`): ``DDPMScheduler`` with
  ``num_train_timesteps`` linear betas from ``beta_start`` to ``beta_end`` (the original: 1000,
  1e-4..0.02) noises the standardised target (``add_noise``) at a uniformly drawn timestep; the loss
  is the MSE of the predicted noise (epsilon). The scheduler does not clip: the diffused quantities
  are standardised latents, not images in [-1, 1].
- Sampling (:func:`ddim_sampler`, :func:`sample`): ``DDIMScheduler.from_config`` of the training
  schedule, ``inference_steps`` steps with ``timestep_spacing="trailing"`` (so the first step starts at
  t = 999, where the linear schedule has alpha_bar ~ 4e-5: pure noise), DDIM's ``eta``. The x0
  estimates are clipped at ``clip`` standard deviations of the standardised target (diffusers'
  ``clip_sample`` with ``clip_sample_range``). Why: at t = 999 the x0 estimate
  ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)`` multiplies the noise-prediction error by
  1/sqrt(abar) ~ 160, so an imperfect denoiser (any model trained briefly) yields samples far
  outside the data's range unless the estimates are clipped; standardised targets beyond 4 sigma are
  rare.
- Randomness comes only from the ``torch.Generator`` passed in, so sampling is reproducible under a seed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wxbench.training import autocast

__all__ = ["ddim_sampler", "noise_prediction_loss", "sample", "training_scheduler"]


def training_scheduler(num_train_timesteps: int, beta_schedule: str, beta_start: float, beta_end: float) -> Any:
    """The DDPM noise schedule the denoiser is trained on (epsilon prediction, no clipping)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         beta_start=beta_start, beta_end=beta_end, prediction_type="epsilon", clip_sample=False)


def noise_prediction_loss(denoiser: nn.Module, scheduler: Any, x0: torch.Tensor, cond: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """MSE of the noise ``denoiser`` predicts for ``x0`` diffused to random timesteps (noise and
    timesteps drawn from ``generator``, in that order)."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator,
                      device=x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    prediction = denoiser(noisy, cond, t)
    return ((prediction.float() - noise) ** 2).mean()


def ddim_sampler(training_config: Any, inference_steps: int, clip: float | None) -> Any:
    """A DDIM sampler of the training schedule: trailing spacing, x0 estimates clipped at ``clip`` (None: not)."""
    from diffusers import DDIMScheduler

    sampler = DDIMScheduler.from_config(training_config, timestep_spacing="trailing", clip_sample=clip is not None,
                                        clip_sample_range=float(clip or 1.0), set_alpha_to_one=False)
    sampler.set_timesteps(int(inference_steps))
    return sampler


def sample(denoiser: nn.Module, sampler: Any, cond: torch.Tensor, shape: tuple[int, ...], *, eta: float,
           generator: torch.Generator, device: str) -> torch.Tensor:
    """Reverse diffusion from noise of ``shape`` (drawn from ``generator`` on the CPU) conditioned on
    ``cond``: the denoised samples."""
    x = torch.randn(shape, generator=generator).to(device)
    for t in sampler.timesteps:
        timestep = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        with autocast(device):
            eps = denoiser(x, cond, timestep)
        x = sampler.step(eps.float(), t, x, eta=eta, generator=generator).prev_sample
    return x
