"""WeatherDiff generative models: ``latent_diffusion`` (SD-VAE latents, U-Net) and ``rae_diffusion`` (RAE tokens, DiT).

Conformance (``check_forecaster``, ``check_learns``) with the smoke hyperparameters, plus tests that pin
the architecture: the U-Net's channels and parameter count, the DiT's parameter count (by formula),
the DDPM/DDIM schedules, the noise-prediction loss, the increment target, sampling reproducibility,
and the budget split between encoder and diffusion. Everything runs offline with tiny configs.
"""

from __future__ import annotations

import math

import pytest
import torch

from wxbench.errors import ConfigError
from wxbench.testing import check_forecaster, check_learns, smoke_budget, synthetic_split
from wxbench.training import count_parameters

from wxbench_weatherdiff.denoisers import LatentUNetDenoiser, TokenDiT
from wxbench_weatherdiff.diffusion import LatentDiffusion, RAEDiffusion
from wxbench_weatherdiff.latent import cache_frames


def smoke(cls, ensemble_size: int = 3, seed: int = 0, **overrides):
    """A model with the smoke hyperparameters, built as the harness builds it."""
    from wxbench.runtime import seed_everything

    train = synthetic_split(cls.normalisation, seed=1)
    seed_everything(seed)
    params = {**cls.profile_hyperparameters["smoke"], **overrides}
    return cls(train.grid, seed=seed, ensemble_size=ensemble_size, **params)


@pytest.fixture(scope="module")
def splits():
    return synthetic_split("minmax", seed=1), synthetic_split("minmax", n_times=24, seed=2, name="val")


@pytest.fixture(scope="module")
def fitted_latent(splits):
    model = smoke(LatentDiffusion)
    report = model.fit(*splits, smoke_budget())
    return model, report


# -- conformance -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LatentDiffusion, RAEDiffusion], ids=lambda c: c.name)
def test_conformance(cls):
    result = check_forecaster(cls)
    assert result["output_shape"] == (3, 3, 4, 4, 32, 64)  # (B, E, 4, C, H, W)


@pytest.mark.parametrize("cls", [LatentDiffusion, RAEDiffusion], ids=lambda c: c.name)
def test_learns(cls):
    check_learns(cls)


def test_class_contract():
    for cls in (LatentDiffusion, RAEDiffusion):
        assert cls.probabilistic and cls.normalisation == "minmax" and cls.family == "weatherdiff"
        for profile in ("smoke", "cpu"):
            assert set(cls.profile_hyperparameters[profile]) <= set(cls.hyperparameters)
        hp = cls.hyperparameters
        assert (hp["num_train_timesteps"], hp["beta_schedule"], hp["beta_start"], hp["beta_end"]) == \
            (1000, "linear", 1e-4, 0.02)
    assert LatentDiffusion.hyperparameters["encoder"] == "sd_vae" and RAEDiffusion.hyperparameters["encoder"] == "rae"
    assert smoke(RAEDiffusion).encoder.name == "rae"  # found through the registry by that name
    assert LatentDiffusion.name == "latent_diffusion" and RAEDiffusion.name == "rae_diffusion"


# -- architecture ------------------------------------------------------------------------------


def _unet(**overrides):
    hp = {**LatentDiffusion.hyperparameters, **overrides}
    return LatentUNetDenoiser(4, (4, 8), 12, 4, block_out_channels=hp["block_out_channels"],
                              layers_per_block=hp["layers_per_block"], attention_levels=hp["attention_levels"],
                              attention_head_dim=hp["attention_head_dim"], norm_num_groups=hp["norm_num_groups"])


def test_unet_denoiser_at_defaults():
    """SD latent of a 32x64 field is (4, 4, 8): 12 history + 4 noisy latents = 64 input channels, 16 out."""
    net = _unet()
    unet = net.unet
    assert unet.config.in_channels == 64 and unet.config.out_channels == 16
    assert tuple(unet.config.block_out_channels) == (128, 256, 256)
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
    assert count_parameters(net) == 27_242_256
    # the timestep enters every ResNet block (DDPM: "a timestep embedding in every block")
    resnets = [m for m in net.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert len(resnets) == 3 * 2 + 3 * 3 + 2  # down 2 per level, up 3 per level, 2 in the middle
    assert all(r.time_emb_proj is not None for r in resnets)


def test_unet_denoiser_uses_noisy_input_condition_and_timestep():
    torch.manual_seed(0)
    net = _unet(**{k: v for k, v in LatentDiffusion.profile_hyperparameters["smoke"].items()
                   if k in ("block_out_channels", "layers_per_block", "attention_levels", "attention_head_dim",
                            "norm_num_groups")}).eval()
    x, cond = torch.randn(2, 4, 4, 4, 8), torch.randn(2, 12, 4, 4, 8)
    t = torch.tensor([10, 10])
    with torch.no_grad():
        out = net(x, cond, t)
        assert out.shape == x.shape
        assert not torch.allclose(out, net(x, cond, torch.tensor([900, 900])))
        assert not torch.allclose(out, net(x, cond + 1, t))
        assert not torch.allclose(out, net(x + 1, cond, t))


def test_unet_rejects_a_latent_too_small_for_its_depth():
    with pytest.raises(ConfigError, match="halves"):
        _unet(block_out_channels=(32, 32, 32, 32), attention_levels=(False,) * 4, norm_num_groups=8)


def test_dit_parameter_count_matches_its_equations():
    d, n, w, depth = 12, 6, 32, 2
    net = TokenDiT(d, n, 12, 4, width=w, depth=depth, heads=4)
    lin = lambda i, o: i * o + o  # noqa: E731
    expected = (
        lin(d, w)  # in_proj: one noisy future token
        + lin(12 * d, w)  # cond_proj: the 12 history tokens at the same position
        + n * w + 4 * w  # learnable position and lead-time embeddings
        + lin(256, w) + lin(w, w) + lin(w, 6 * w)  # AdaLayerNormSingle: sinusoid(256) -> MLP -> 6 modulations
        + depth * (4 * lin(w, w) + lin(w, 4 * w) + lin(4 * w, w) + 6 * w)  # attn qkv+out, MLP x4, table
        + 2 * w  # final modulation table
        + lin(w, d)  # proj_out: the token's noise
    )
    assert count_parameters(net) == expected


def test_dit_at_defaults_is_dit_b_on_siglip_tokens():
    hp = RAEDiffusion.hyperparameters
    assert (hp["dit_width"], hp["dit_depth"], hp["dit_heads"]) == (768, 12, 12)
    assert hp["dit_width"] >= 768  # SigLIP2-base token width: the DiT is at least as wide


def test_dit_is_zero_initialised_and_mixes_tokens_and_time():
    torch.manual_seed(0)
    net = TokenDiT(8, 6, 12, 4, width=32, depth=2, heads=4).eval()
    x, cond, t = torch.randn(2, 4, 8, 6), torch.randn(2, 12, 8, 6), torch.tensor([5, 5])
    assert torch.count_nonzero(net(x, cond, t)) == 0  # DiT's zero-initialised output layer
    torch.nn.init.normal_(net.proj_out.weight, std=0.1)
    x.requires_grad_(True)
    out = net(x, cond, t)
    assert out.shape == x.shape
    out[:, 0, :, 0].sum().backward()
    assert x.grad[:, :, :, 1:].abs().sum() > 0  # attention across positions
    assert x.grad[:, 1:].abs().sum() > 0  # and across lead times
    with torch.no_grad():
        assert not torch.allclose(out, net(x, cond, torch.tensor([700, 700])))
        assert not torch.allclose(out, net(x, cond + 1, t))


# -- diffusion equations -----------------------------------------------------------------------


def test_training_schedule_and_sampler():
    model = smoke(LatentDiffusion)
    betas = model.scheduler.betas
    assert len(betas) == 1000 and torch.allclose(betas, torch.linspace(1e-4, 0.02, 1000))
    assert not model.scheduler.config.clip_sample
    sampler = model._sampler()
    assert type(sampler).__name__ == "DDIMScheduler"
    assert sampler.config.clip_sample and sampler.config.clip_sample_range == 4.0  # x0 estimates within 4 sigma
    steps = model.hparams["inference_steps"]
    assert len(sampler.timesteps) == steps and int(sampler.timesteps[0]) == 999  # trailing: starts from noise
    assert torch.allclose(sampler.alphas_cumprod, torch.cumprod(1 - betas, 0))


class _ShrinkingDenoiser(torch.nn.Module):
    """An imperfect noise predictor, as a briefly trained network is: it underestimates the noise."""

    def forward(self, noisy, cond, t):
        return 0.5 * noisy


def test_sampler_clips_x0_estimates_so_an_imperfect_denoiser_cannot_blow_up():
    model = smoke(LatentDiffusion, inference_steps=10)
    model.denoiser = _ShrinkingDenoiser()
    cond = torch.zeros(8, 12, 4, 4, 8)
    clipped = model.sample(cond, torch.Generator().manual_seed(0))
    assert clipped.abs().max() < 4.2  # x0 within 4 sigma, plus sqrt(1 - abar_0) = 0.01 of noise
    model.hparams["clip_denoised"] = None
    unclipped = model.sample(cond, torch.Generator().manual_seed(0))
    assert unclipped.std() > 5 * clipped.std()  # the error is amplified by 1/sqrt(abar) ~ 160 at t = 999


class _Recorder(torch.nn.Module):
    """A denoiser that records its inputs and predicts zero noise."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, noisy, cond, t):
        self.seen = (noisy, cond, t)
        return noisy * self.w


def test_loss_is_the_noise_prediction_mse_on_forward_diffused_increments():
    model = smoke(LatentDiffusion)
    model.cond_scaler.mean.copy_(torch.randn(4, 1, 1))
    model.cond_scaler.std.copy_(torch.rand(4, 1, 1) + 0.5)
    model.target_scaler.mean.copy_(torch.randn(4, 4, 1, 1))
    model.target_scaler.std.copy_(torch.rand(4, 4, 1, 1) + 0.5)
    model.denoiser = _Recorder()
    history, target = torch.randn(3, 12, 4, 4, 8), torch.randn(3, 4, 4, 4, 8)
    loss = model._diffusion_loss(history, target, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    mean, std = model.target_scaler.mean, model.target_scaler.std
    x0 = (target - history[:, -1:] - mean) / std
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)[t].view(3, 1, 1, 1, 1)
    noisy, cond, seen_t = model.denoiser.seen
    assert torch.equal(seen_t, t)
    assert torch.allclose(noisy, abar.sqrt() * x0 + (1 - abar).sqrt() * noise, atol=1e-5)
    cond_mean, cond_std = model.cond_scaler.mean, model.cond_scaler.std
    assert torch.allclose(cond, (history - cond_mean) / cond_std)
    assert torch.allclose(loss, (noise ** 2).mean())  # MSE(prediction = 0, noise)


@pytest.mark.parametrize("increment", [True, False])
def test_target_round_trip(increment):
    model = smoke(LatentDiffusion, predict_increment=increment)
    model.target_scaler.mean.copy_(torch.randn(4, 4, 1, 1))
    model.target_scaler.std.copy_(torch.rand(4, 4, 1, 1) + 0.5)
    history, target = torch.randn(2, 12, 4, 4, 8), torch.randn(2, 4, 4, 4, 8)
    standardised = model._target(history, target)
    assert torch.allclose(model._untarget(history, standardised), target, atol=1e-5)
    zero = model._untarget(history, torch.zeros_like(standardised))  # the "nothing learnt" forecast
    base = history[:, -1:] if increment else 0.0
    assert torch.allclose(zero, base + model.target_scaler.mean, atol=1e-6)


# -- sampling ----------------------------------------------------------------------------------


def test_ensemble_is_reproducible_under_the_model_seed_and_members_differ(splits):
    model = smoke(RAEDiffusion, ensemble_size=4)
    history, _ = splits[0].windows(torch.arange(2))
    torch.manual_seed(1)
    a = model.predict(history)
    torch.manual_seed(2)  # the global RNG does not matter: the model's seeded generator does
    b = model.predict(history)
    assert a.shape == (2, 4, 4, 4, 32, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert a.std(dim=1).mean() > 0  # members differ by their initial noise
    other = smoke(RAEDiffusion, ensemble_size=4, seed=5)
    other.load_state_dict(model.state_dict())  # the sampling seed travels with the state
    # a loaded (trained) encoder is frozen, as after fit: CPU matmul kernels differ with requires_grad
    assert not any(p.requires_grad for p in other.encoder.module.parameters())
    assert torch.equal(other.predict(history), a)


def test_pixel_anchor_adds_the_reconstruction_error_of_the_last_state(splits):
    model = smoke(LatentDiffusion, ensemble_size=2)
    history, _ = splits[0].windows(torch.arange(2))
    plain = model.predict(history)
    model.hparams["pixel_anchor"] = True
    anchored = model.predict(history)
    last = history[:, -1]
    with torch.no_grad():
        reconstructed = model.encoder.decode(model.encoder.encode(last))
    assert torch.allclose(anchored - plain, (last - reconstructed)[:, None, None].expand_as(plain), atol=1e-5)


# -- fit: budget split and reports -------------------------------------------------------------


def test_latent_cache_keeps_only_windows_inside_the_kept_chunks():
    """``latent_cache_frames`` caches evenly spaced chunks of 64 frames (the latent U-Net's cache,
    ``latent.encode_split``); no window spans the gap between two chunks."""
    split = synthetic_split("minmax", n_times=300, seed=1)
    model = smoke(RAEDiffusion)
    sub = model._latent_split(split, 128)
    frames = cache_frames(split, 128)
    assert torch.equal(frames, torch.cat([torch.arange(0, 64), torch.arange(236, 300)]))
    assert sub.fields.shape == (128, *model.canonical_shape)
    assert torch.equal(sub.fields, model.encode_frames(split.fields[frames]).cpu())
    assert len(sub) == 2 * (64 - 16 + 1)  # no window spans the gap between the two chunks
    for i in (0, 48, 49, len(sub) - 1):
        start = int(frames[sub.starts[i]])
        assert int(frames[sub.starts[i] + 15]) == start + 15  # 16 consecutive original frames
    assert torch.equal(model._latent_split(split, None).starts, split.starts)  # None: every frame and window


def test_denoiser_learns_beyond_predicting_zero_noise(splits):
    """check_learns is dominated by the encoder's training; this isolates the diffusion: its validation
    noise-MSE must fall well below 1.0, the loss of predicting zero noise (E[noise^2] = 1)."""
    from dataclasses import replace

    model = smoke(RAEDiffusion)
    budget = replace(smoke_budget(), max_steps=40, max_epochs=40, max_seconds=60, patience=40)
    report = model.fit(*splits, budget)
    assert report.extra["diffusion_fit"]["steps"] == 40
    assert report.best_val_loss < 0.9, report.val_history


def test_fit_reports_encoder_and_diffusion_separately(fitted_latent, splits):
    model, report = fitted_latent
    extra = report.extra
    assert extra["encoder_fit"]["steps"] == 3 and extra["diffusion_fit"]["steps"] == 3  # smoke: 3 steps each
    assert report.steps == 3
    assert math.isclose(report.seconds, extra["encoder_seconds"] + extra["latent_cache_seconds"]
                        + extra["diffusion_fit"]["seconds"], rel_tol=1e-9)
    assert extra["sampling_seconds_per_window"] > 0
    info = model.describe()
    assert set(info["reconstruction_rmse"]) == {"z500", "t850", "u850", "v850"}
    assert all(v > 0 and math.isfinite(v) for v in info["reconstruction_rmse"].values())
    assert info["parameters"] == info["denoiser_parameters"] + info["encoder_parameters"]
    assert "sd_vae" in model.weights and "trained from scratch" in model.weights
    # the encoder is frozen once trained; its latent statistics come from the training split
    assert not any(p.requires_grad for p in model.encoder.module.parameters())
    latents = model.encode_frames(splits[0].fields)
    assert torch.allclose(model.cond_scaler.mean.flatten(), latents.transpose(0, 1).reshape(4, -1).mean(1), atol=1e-4)
