"""Tests of the WeatherDiff plugin's encoders (``sd_vae``, ``rae``) and deterministic forecasters
(``pixel_unet``, ``latent_unet_sd``, ``latent_unet_rae``, ``rae_direct``).

Conformance (the shared checks on the smoke configs), a short training run that must learn, and the
architecture: U-Net widths and parameter counts at the original defaults (closed formula; docs/models.md,
WeatherDiff models), depth limits on the 32 x 64 grid and on latent grids, periodic padding, the channel
adapters, the standardiser, encoders found through the registry, the staged budget, the ViT token
pipeline ([-1, 1] -> [0, 1] -> mean/std), the MAE decoder, reconstruction RMSE in physical units, and
the pretrained-weights routes with weights files the tests write themselves (nothing is downloaded).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

pytest.importorskip("wxbench_weatherdiff")

from wxbench.errors import ConfigError  # noqa: E402
from wxbench.interfaces import Encoder  # noqa: E402
from wxbench.testing import (DEFAULT_GRID, check_encoder, check_forecaster, check_learns, smoke_budget,  # noqa: E402
                             synthetic_split)
from wxbench.training import count_parameters  # noqa: E402
from wxbench_weatherdiff.encoders import (SD_SMALL_VAE_CONFIG, SD_TINY_VAE_CONFIG, SD_V1_VAE_CONFIG,  # noqa: E402
                                          RAEEncoder, SDVAEEncoder)
from wxbench_weatherdiff.forecasters import LatentUNet, PixelUNet, RAEDirect  # noqa: E402
from wxbench_weatherdiff.latent import (ChannelAdapter, Standardiser, build_encoder, folding_matrix,  # noqa: E402
                                        reconstruction_rmse, stage_budget)
from wxbench_weatherdiff.unet import ConvBlock, UNet, max_depth  # noqa: E402
from wxbench_weatherdiff.vit import MAEDecoder, ViTTokens, build_backbone, sincos_2d_position_embedding  # noqa: E402

C = DEFAULT_GRID.n_channels  # 4
H, W = DEFAULT_GRID.shape  # 32, 64


# one torch thread (wxbench.testing.one_torch_thread): fast and unaffected on a shared machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits():
    return synthetic_split("minmax", seed=1), synthetic_split("minmax", n_times=24, seed=2, name="val")


def smoke(cls, seed: int = 0, **overrides):
    from wxbench.runtime import seed_everything

    seed_everything(seed)
    return cls(DEFAULT_GRID, seed=seed, **{**cls.profile_hyperparameters["smoke"], **overrides})


# -- U-Net --------------------------------------------------------------------------------------------


def unet_parameters(cin: int, cout: int, base: int, depth: int) -> int:
    """Closed-form parameter count of the original design's U-Net (conv biases, GroupNorm affine)."""
    def conv3(i, o):
        return 9 * i * o + o

    def block(i, o):
        return conv3(i, o) + 2 * o + conv3(o, o) + 2 * o

    widths = [base * 2 ** k for k in range(depth + 1)]
    total, ch = 0, cin
    for k in range(depth):
        total += block(ch, widths[k])
        ch = widths[k]
    total += block(ch, widths[depth])
    for k in reversed(range(depth)):
        total += 4 * widths[k + 1] * widths[k] + widths[k]  # ConvTranspose(k2, s2)
        total += block(2 * widths[k], widths[k])
    return total + widths[0] * cout + cout  # 1x1 head


def test_pixel_unet_default_architecture():
    model = PixelUNet(DEFAULT_GRID, device="meta")  # the real defaults, without keeping 31 M weights
    unet = model.module.core.unet
    assert unet.depth == 4 and unet.widths == [64, 128, 256, 512, 1024]
    assert unet.in_channels == 12 * C and unet.out_channels == 4 * C
    n = count_parameters(model.module)
    assert n == unet_parameters(12 * C, 4 * C, 64, 4) == 31_070_416
    assert model.describe()["parameters"] == n
    norms = [m for m in unet.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    assert sum(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in unet.modules()) == 4
    assert isinstance(unet.pool, nn.MaxPool2d) and unet.pool.kernel_size == 2
    block = unet.down[0]
    assert [type(m) for m in (block.norm1, block.act)] == [nn.GroupNorm, nn.SiLU]


def test_unet_block_order_and_bottleneck_size():
    block = ConvBlock(3, 8)
    x = torch.randn(2, 3, 8, 16)
    manual = block.act(block.norm2(block.conv2(block.act(block.norm1(block.conv1(x))))))
    assert torch.allclose(block(x), manual)
    unet = UNet(12 * C, 4 * C, base_channels=8, depth=4)
    seen = {}
    unet.bottleneck.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    assert unet(torch.randn(1, 12 * C, H, W)).shape == (1, 4 * C, H, W)
    assert seen["shape"] == (1, 128, 2, 4)  # 32 x 64 after four halvings


def test_depth_limits():
    assert max_depth(32, 64) == 5 and max_depth(4, 8) == 2 and max_depth(16, 16) == 4 and max_depth(4, 4) == 2
    deep = smoke(PixelUNet, depth=5)
    assert deep.predict(torch.zeros(1, 12, C, H, W)).shape == (1, 4, C, H, W)
    with pytest.raises(ConfigError, match="too deep"):
        smoke(PixelUNet, depth=6)
    with pytest.raises(ValueError, match="divisible"):
        UNet(3, 3, base_channels=8, depth=3)(torch.randn(1, 3, 4, 8))


def test_circular_longitude_padding_is_equivariant():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 16, 32)
    shift = 4  # a multiple of 2**depth keeps the pooling grid aligned
    circ = UNet(6, 2, base_channels=8, depth=2, lon_padding="circular").eval()
    zero = UNet(6, 2, base_channels=8, depth=2, lon_padding="zero").eval()
    zero.load_state_dict(circ.state_dict())
    with torch.no_grad():
        a, b = circ(x.roll(shift, -1)), circ(x).roll(shift, -1)
        assert torch.allclose(a, b, atol=1e-5)
        assert not torch.allclose(zero(x.roll(shift, -1)), zero(x).roll(shift, -1), atol=1e-3)


@pytest.mark.parametrize("cls", [PixelUNet, LatentUNet], ids=lambda c: c.name)
def test_unknown_lon_padding_names_the_option(cls):
    with pytest.raises(ConfigError, match=r"lon_padding must be one of \('circular', 'zero'\), got 'zeros'"):
        smoke(cls, lon_padding="zeros")


def test_residual_forms_start_at_persistence():
    history = torch.rand(2, 12, C, H, W) * 2 - 1
    persistence = history[:, -1:].expand(-1, 4, -1, -1, -1)
    for cls in (PixelUNet, RAEDirect):
        model = smoke(cls, residual=True)
        assert torch.allclose(model.predict(history), persistence, atol=1e-6), cls.name
        plain = smoke(cls, residual=False)
        assert not torch.allclose(plain.predict(history), persistence, atol=1e-2), cls.name
    # latent U-Net: starts at the last latent state, i.e. the reconstruction of the last input
    model = smoke(LatentUNet, encoder="sd_vae", residual=True)
    with torch.no_grad():
        expected = model.encoder.decode(model.encoder.encode(history[:, -1]))
    assert torch.allclose(model.predict(history), expected[:, None].expand(-1, 4, -1, -1, -1), atol=1e-4)
    for cls in (PixelUNet, LatentUNet, RAEDirect):
        assert cls.hyperparameters["residual"] is False  # the original predicts the states themselves


def test_pixel_unet_conformance_and_learns():
    check_forecaster(PixelUNet)
    check_learns(PixelUNet)


# -- channel adapters, latent helpers ------------------------------------------------------------------


def test_channel_adapter_folding():
    fold = folding_matrix(4, 3)
    assert torch.equal(fold, torch.tensor([[0.5, 0, 0, 0.5], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
    x = torch.randn(2, 3, 8, 16)
    down, up = ChannelAdapter(3, 3), ChannelAdapter(3, 3, inverse=True)
    with torch.no_grad():
        assert torch.allclose(up(down(x)), x, atol=1e-6)  # C <= 3 passes through exactly
        y = torch.randn(2, 2, 8, 16)
        assert torch.allclose(ChannelAdapter(3, 2, inverse=True)(ChannelAdapter(2, 3)(y)), y, atol=1e-6)


def test_standardiser_roundtrip():
    z = torch.randn(50, 3, 4, 8) * torch.tensor([1.0, 5.0, 0.1])[:, None, None] + 2.0
    scaler = Standardiser((3, 1, 1)).fit(z)  # per channel (dim 1)
    n = scaler(z)
    assert torch.allclose(n.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(n.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    assert torch.allclose(scaler.inverse(n), z, atol=1e-5)
    assert set(scaler.state_dict()) == {"mean", "std"}  # the statistics travel with the state


def test_standardiser_keeps_several_dims():
    # per (lead, channel) of (B, 4, D, n) increments, as the diffusion target is standardised
    x = torch.randn(20, 4, 3, 6) * torch.arange(1.0, 13.0).reshape(4, 3, 1) + torch.arange(12.0).reshape(4, 3, 1)
    scaler = Standardiser((4, 3, 1)).fit(x, keep=(1, 2))
    assert torch.allclose(scaler.mean[..., 0], x.double().mean(dim=(0, 3)).float())
    assert torch.allclose(scaler.std[..., 0], x.double().transpose(0, 2).reshape(3, 4, -1).std(-1).T.float())
    constant = Standardiser((2, 1)).fit(torch.ones(5, 2, 3))
    assert torch.equal(constant.std, torch.full((2, 1), 1e-6))  # a constant channel is not divided by 0


def test_stage_budget_slices_the_wall_clock_only():
    budget = smoke_budget()
    first = stage_budget(budget, 0.4)
    assert first.max_seconds == pytest.approx(0.4 * budget.max_seconds)
    assert (first.max_steps, first.max_epochs, first.batch_size) == (budget.max_steps, budget.max_epochs,
                                                                     budget.batch_size)
    rest = stage_budget(budget, 1.0, spent=0.5 * budget.max_seconds, minimum_share=0.1)
    assert rest.max_seconds == pytest.approx(0.5 * budget.max_seconds)
    overrun = stage_budget(budget, 1.0, spent=2 * budget.max_seconds, minimum_share=0.1)
    assert overrun.max_seconds == pytest.approx(0.1 * budget.max_seconds)  # an overrun leaves the floor


def test_build_encoder_resolves_like_the_harness():
    """Class defaults < profile < options, for the encoder found by its registered name."""
    enc = build_encoder("sd_vae", DEFAULT_GRID, device="cpu", seed=0, profile="smoke", options={"kl_weight": 0.5})
    assert isinstance(enc, SDVAEEncoder) and enc.name == "sd_vae"
    assert enc.hparams["vae_config"] == SD_TINY_VAE_CONFIG  # the encoder's own smoke profile
    assert enc.hparams["kl_weight"] == 0.5 and enc.hparams["freeze_encoder"] is True
    defaults = build_encoder("rae", DEFAULT_GRID, device="meta", seed=0)
    assert defaults.hparams == dict(RAEEncoder.hyperparameters)


def test_build_encoder_uses_registered_variants(wxbench_registry):
    class Plugin:
        from wxbench import hookimpl

        @hookimpl
        def wxbench_register_encoders(self, register):
            register(SDVAEEncoder, name="sd_vae_kl", kl_weight=0.25)

    wxbench_registry.add_plugin(Plugin(), name="variant-test")
    enc = build_encoder("sd_vae_kl", DEFAULT_GRID, device="cpu", seed=0, profile="smoke")
    assert enc.name == "sd_vae_kl" and enc.hparams["kl_weight"] == 0.25
    model = smoke(LatentUNet, encoder="sd_vae_kl")
    assert model.encoder.name == "sd_vae_kl" and model.weights.startswith("sd_vae_kl: ")


class _OffsetEncoder(Encoder):
    """Identity encoder whose decoder adds ``delta`` (normalised units) to channel 0 only."""

    name = "offset"
    hyperparameters = {"delta": 0.1}

    def encode(self, fields):
        return fields

    def decode(self, latent):
        out = latent.clone()
        out[:, 0] += self.hparams["delta"]
        return out

    def latent_shape(self, input_shape):
        return input_shape

    @property
    def trainable(self):
        return {}

    def fit(self, train, val, budget):
        raise NotImplementedError

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_reconstruction_rmse_is_in_physical_units(splits):
    _, val = splits
    rmse = reconstruction_rmse(_OffsetEncoder(DEFAULT_GRID, delta=0.1), val, limit=10)
    assert set(rmse) == set(DEFAULT_GRID.channels)
    # a constant error of 0.1 normalised units is 0.1 * scale physical units (latitude weights average to 1)
    assert rmse["z500"] == pytest.approx(0.1 * val.normaliser.scale[0], rel=1e-6)
    assert all(rmse[c] < 1e-6 for c in DEFAULT_GRID.channels[1:])


def test_encode_split_keeps_whole_windows():
    from wxbench_weatherdiff.latent import cache_frames, encode_split

    split = synthetic_split("minmax", n_times=200, seed=1)
    identity = _OffsetEncoder(DEFAULT_GRID, delta=0.0)
    full = encode_split(identity, split)
    assert torch.equal(full.fields, split.fields) and torch.equal(full.starts, split.starts)
    part = encode_split(identity, split, max_frames=128, batch_size=7)
    frames = cache_frames(split, 128)
    assert len(part.fields) == len(frames) == 128  # two chunks of 64 frames
    assert 0 < len(part) < len(split)
    for i in range(len(part)):  # every kept latent window is an original window, frame for frame
        first = int(frames[part.starts[i]])
        original = split.windows(torch.nonzero(split.starts == first)[0])
        kept = part.windows(torch.tensor([i]))
        assert torch.equal(original[0], kept[0]) and torch.equal(original[1], kept[1])


# -- SD VAE ------------------------------------------------------------------------------------------


def test_sd_vae_default_config_is_stable_diffusion():
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        assert count_parameters(AutoencoderKL(**SD_V1_VAE_CONFIG)) == 83_653_863  # the SD v1 VAE
        small = AutoencoderKL(**SD_SMALL_VAE_CONFIG)
    # same family, three blocks on CPU (downsampling 4; see the encoders' module docstring)
    assert len(small.config.block_out_channels) == 3 and small.config.latent_channels == 4
    assert SDVAEEncoder.hyperparameters["vae_config"] is None


def test_sd_vae_latent_shape_chunking_and_adapters():
    enc = smoke(SDVAEEncoder)
    assert "trained from scratch" in enc.weights and not enc.pretrained
    assert enc.latent_shape((C, H, W)) == (4, 4, 8)  # SD downsamples by 8
    assert enc.module.in_adapter.weight.shape == (3, C, 1, 1)
    assert enc.module.out_adapter.weight.shape == (C, 3, 1, 1)
    x = torch.rand(5, C, H, W) * 2 - 1
    with torch.no_grad():
        whole = smoke(SDVAEEncoder, vae_batch_size=64).encode(x)
        chunked = smoke(SDVAEEncoder, vae_batch_size=2).encode(x)
        assert whole.shape == (5, 4, 4, 8)
        assert torch.allclose(whole, chunked, atol=1e-5)
    assert enc.trainable == {"adapter": True, "encoder": True, "decoder": True}  # scratch: all of it trains


def test_sd_vae_conformance():
    result = check_encoder(SDVAEEncoder)
    assert result["latent_shape"] == (4, 4, 8)
    assert set(result["fit"].extra["reconstruction_rmse"]) == set(DEFAULT_GRID.channels)


@pytest.mark.parametrize("transform", ["anomaly", "standardised_anomaly"])
@pytest.mark.parametrize("cls", [SDVAEEncoder, RAEEncoder], ids=lambda c: c.name)
def test_encoder_input_transform(splits, cls, transform):
    """The autoencoder sees the (standardised) departure from the training split's mean field, and
    decoding inverts it: the same weights without the transform, applied to the transformed field."""
    train, val = splits
    plain = smoke(cls)
    plain.fit(train, val, smoke_budget())
    assert torch.count_nonzero(plain.module.transform.mean) == 0  # "none" by default
    assert torch.equal(plain.module.transform.std, torch.ones(C, 1, 1))

    enc = smoke(cls, input_transform=transform)
    enc.fit(train, val, smoke_budget())
    fields = train.fields.double()
    mean = fields.mean(dim=0)
    std = torch.stack([(fields - mean)[:, c].std() for c in range(C)]).float().reshape(C, 1, 1)
    m, s = enc.module.transform.mean, enc.module.transform.std
    assert torch.allclose(m, mean.float())
    assert torch.allclose(s, std if transform == "standardised_anomaly" else torch.ones(C, 1, 1))

    identity = smoke(cls)
    identity.load_state_dict(enc.state_dict())
    identity.module.transform.mean.zero_()
    identity.module.transform.std.fill_(1.0)
    x = val.fields[:3]
    with torch.no_grad():
        latent = enc.encode(x)
        assert torch.allclose(latent, identity.encode((x - m) / s), atol=1e-5)
        assert torch.allclose(enc.decode(latent), identity.decode(latent) * s + m, atol=1e-5)
        # the transform is part of the state: a reloaded encoder reproduces the reconstruction
        other = smoke(cls, input_transform=transform)
        other.load_state_dict(enc.state_dict())
        assert torch.equal(other.decode(other.encode(x)), enc.decode(enc.encode(x)))


@pytest.mark.parametrize("cls", [SDVAEEncoder, RAEEncoder], ids=lambda c: c.name)
def test_unknown_input_transform(cls):
    with pytest.raises(ConfigError, match=f"{cls.name}: unknown input_transform 'zscore'.*standardised_anomaly"):
        smoke(cls, input_transform="zscore")


def test_encoder_batch_size_overrides_the_profile(splits, monkeypatch):
    import wxbench_weatherdiff.encoders as encoders

    seen = []
    real = encoders.train_module

    def spy(module, loss, train, val, budget, **kwargs):
        seen.append((budget.batch_size, kwargs["schedule"]))
        return real(module, loss, train, val, budget, **kwargs)

    monkeypatch.setattr(encoders, "train_module", spy)
    smoke(SDVAEEncoder).fit(*splits, smoke_budget())
    smoke(SDVAEEncoder, batch_size=2, lr_schedule="constant").fit(*splits, smoke_budget())
    assert seen == [(smoke_budget().batch_size, "cosine"), (2, "constant")]


@pytest.mark.parametrize("subfolder", [False, True])
def test_sd_vae_pretrained_local_directory(tmp_path, splits, subfolder):
    from diffusers import AutoencoderKL

    torch.manual_seed(123)
    saved = AutoencoderKL(**SD_TINY_VAE_CONFIG)
    root = tmp_path / "my-vae"
    saved.save_pretrained(root / "vae" if subfolder else root)
    enc = smoke(SDVAEEncoder, vae_pretrained_path=str(root), freeze_encoder=True, freeze_decoder=False)
    assert enc.pretrained and "pretrained (local directory" in enc.weights and "encoder frozen" in enc.weights
    reference = saved.state_dict()
    loaded = enc.module.vae.state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert enc.trainable == {"adapter": True, "encoder": False, "decoder": True}
    enc_before = {k: v.clone() for k, v in enc.module.vae.encoder.state_dict().items()}
    dec_before = {k: v.clone() for k, v in enc.module.vae.decoder.state_dict().items()}
    report = enc.fit(*splits, smoke_budget())
    assert report.steps > 0
    assert all(torch.equal(v, enc_before[k]) for k, v in enc.module.vae.encoder.state_dict().items())
    assert any(not torch.equal(v, dec_before[k]) for k, v in enc.module.vae.decoder.state_dict().items())
    assert enc.describe()["pretrained"] is True


def test_sd_vae_frozen_pretrained_trains_nothing(tmp_path, splits):
    from diffusers import AutoencoderKL

    AutoencoderKL(**SD_TINY_VAE_CONFIG).save_pretrained(tmp_path / "vae")
    enc = smoke(SDVAEEncoder, vae_pretrained_path=str(tmp_path / "vae"), freeze_encoder=True,
                freeze_decoder=True, train_adapter=False)
    assert enc.trainable == {"adapter": False, "encoder": False, "decoder": False}
    assert count_parameters(enc.module, trainable_only=True) == 0
    assert enc.fit(*splits, smoke_budget()).stopped_because == "nothing to train"


def write_hub_cache(root, repo_id: str, files) -> None:
    """A Hugging Face hub cache entry in the hub's on-disk layout; ``files(snapshot_dir)`` writes the content."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    files(repo / "snapshots" / "abc")


def test_sd_vae_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from diffusers import AutoencoderKL

    torch.manual_seed(5)
    saved = AutoencoderKL(**SD_TINY_VAE_CONFIG)
    write_hub_cache(tmp_path / "hub", "some-org/tiny-vae", lambda d: saved.save_pretrained(d / "vae"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = smoke(SDVAEEncoder, vae_pretrained_path="some-org/tiny-vae")
    assert enc.pretrained and "pretrained (local hub cache some-org/tiny-vae" in enc.weights
    w = saved.decoder.conv_out.weight
    assert torch.equal(enc.module.vae.decoder.conv_out.weight, w)


def test_sd_vae_missing_weights():
    enc = smoke(SDVAEEncoder, vae_pretrained_path="no-such-org/no-such-vae")  # a hub id not in the cache
    assert not enc.pretrained and "not in the local hub cache" in enc.weights
    with pytest.raises(FileNotFoundError):
        smoke(SDVAEEncoder, vae_pretrained_path="/nonexistent/path/to/vae")


# -- RAE -----------------------------------------------------------------------------------------------


class _RecordingBackbone(nn.Module):
    """A stand-in ViT: records its input, returns 1 prefix token + a 2x3 grid of 4-wide tokens."""

    num_prefix_tokens = 1

    def forward_features(self, x):
        self.seen = x
        b = x.shape[0]
        grid = torch.arange(6 * 4, dtype=torch.float32).reshape(1, 6, 4).expand(b, -1, -1)
        return torch.cat([torch.full((b, 1, 4), -99.0), grid], dim=1)


def test_vit_tokens_input_mapping_and_token_grid():
    from wxbench_weatherdiff.vit import BackboneSpec

    spec = BackboneSpec(_RecordingBackbone(), "fake", False, 4, (2, 3), (16, 24), (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    tokens = ViTTokens(spec)
    images = torch.full((2, 3, 8, 12), -1.0)
    images[:, 1] = 1.0
    out = tokens(images)
    seen = tokens.backbone.seen
    assert seen.shape == (2, 3, 16, 24)  # resized to the backbone's input size
    # -1 -> 0 and 1 -> 1 in [0, 1], then (x - mean) / std per channel
    assert torch.allclose(seen[:, 0], torch.tensor((0 - 0.5) / 0.2))
    assert torch.allclose(seen[:, 1], torch.tensor((1 - 0.4) / 0.25))
    assert out.shape == (2, 4, 2, 3)  # prefix token dropped, channels first
    assert out[0, :, 0, 0].tolist() == [0, 1, 2, 3] and out[0, :, 1, 2].tolist() == [20, 21, 22, 23]


def test_mae_decoder_shapes_and_position_embedding():
    pos = sincos_2d_position_embedding(8, (2, 3))
    assert pos.shape == (6, 8)
    assert torch.allclose(pos[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))  # sin 0 | cos 0 on both axes
    dec = MAEDecoder(16, (4, 4), C, (H, W), dim=32, depth=1, heads=2, patch=16)
    assert dec(torch.randn(2, 16, 4, 4)).shape == (2, C, H, W)
    assert dec.head.out_features == 16 * 16 * C
    with torch.device("meta"):  # the MAE defaults on SigLIP2-base tokens
        assert count_parameters(MAEDecoder(768, (16, 16), C, (H, W))) == 26_139_136  # rae
        assert count_parameters(MAEDecoder(768, (16, 16), 4 * C, (H, W))) == 27_715_072  # rae_direct


def test_rae_defaults_and_backbone_offline():
    assert RAEEncoder.hyperparameters["backbone"] == "vit_base_patch16_siglip_256.v2_webli"
    assert RAEEncoder.hyperparameters["decoder_patch"] == 16
    with torch.device("meta"):
        spec = build_backbone("vit_base_patch16_siglip_256.v2_webli")
    assert spec.grid_size == (16, 16) and spec.embed_dim == 768 and spec.img_size == (256, 256)
    assert "UNTRAINED" in spec.weights and not spec.pretrained


def test_rae_encoder_shapes_and_freezing():
    enc = smoke(RAEEncoder)
    assert enc.latent_shape((C, H, W)) == (192, 2, 2)  # ViT-tiny at 32 x 32: 2 x 2 tokens of width 192
    assert "UNTRAINED" in enc.weights
    assert not any(p.requires_grad for p in enc.module.tokens.parameters())
    assert all(p.requires_grad for p in enc.module.decoder.parameters())
    enc.module.train()
    assert not enc.module.tokens.backbone.training  # a frozen backbone stays in eval mode


def test_rae_conformance():
    result = check_encoder(RAEEncoder)
    assert result["latent_shape"] == (192, 2, 2)


def test_rae_pretrained_file_and_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    torch.manual_seed(7)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    path = tmp_path / "vit.safetensors"
    save_file(vit.state_dict(), str(path))
    enc = smoke(RAEEncoder, pretrained_path=str(path))
    assert enc.pretrained and "pretrained (local file" in enc.weights
    assert torch.equal(enc.module.tokens.backbone.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    with pytest.raises(FileNotFoundError):
        smoke(RAEEncoder, pretrained_path=str(tmp_path / "missing.pth"))
    # a Hugging Face hub cache entry (in the hub's on-disk layout) is found without network
    hub_id = get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    write_hub_cache(tmp_path / "hub", hub_id, lambda d: save_file(vit.state_dict(), str(d / "model.safetensors")))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = smoke(RAEEncoder)
    assert cached.pretrained and "pretrained (local cache" in cached.weights
    assert torch.equal(cached.module.tokens.backbone.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)


# -- latent U-Net ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["sd_vae", "rae"])
def test_latent_unet_conformance(encoder):
    check_forecaster(LatentUNet, hyperparameters={"encoder": encoder})


@pytest.fixture(scope="module")
def fitted_latent_sd(splits):
    torch.set_num_threads(1)
    model = smoke(LatentUNet, encoder="sd_vae")
    report = model.fit(*splits, smoke_budget())
    return model, report


def test_latent_unet_reports_encoder_and_floor(fitted_latent_sd):
    model, report = fitted_latent_sd
    extra = report.extra
    assert extra["encoder_fit"]["steps"] > 0 and extra["encoder_seconds"] > 0
    assert extra["latent_shape"] == [4, 4, 8]
    assert report.seconds >= extra["encoder_seconds"]
    info = model.describe()
    recon = info["reconstruction_rmse"]
    assert set(recon) == set(DEFAULT_GRID.channels) and all(math.isfinite(v) and v > 0 for v in recon.values())
    assert info["parameters"] == info["encoder_parameters"] + info["unet_parameters"]
    assert model.weights.startswith("sd_vae: diffusers AutoencoderKL")


def test_latent_unet_reloads_frozen_with_its_latent_statistics(fitted_latent_sd, splits):
    model, _ = fitted_latent_sd
    other = smoke(LatentUNet, encoder="sd_vae", seed=3)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.scaler.mean, model.scaler.mean) and torch.count_nonzero(model.scaler.mean) > 0
    assert not any(p.requires_grad for p in other.encoder.module.parameters())  # frozen, as after fit
    history = splits[1].windows(torch.arange(2))[0]
    assert torch.equal(other.predict(history), model.predict(history))


def test_latent_unet_budget_split(splits, monkeypatch):
    from wxbench import FitReport

    model = smoke(LatentUNet, encoder="sd_vae", encoder_budget_fraction=0.25)
    seen = {}

    def fake_fit(train, val, budget):
        seen["budget"] = budget
        return FitReport(seconds=0.0, steps=0, stopped_because="test")

    monkeypatch.setattr(model.encoder, "fit", fake_fit)
    budget = smoke_budget()
    report = model.fit(*splits, budget)
    assert seen["budget"].max_seconds == pytest.approx(0.25 * budget.max_seconds)
    assert seen["budget"].max_steps == budget.max_steps and seen["budget"].batch_size == budget.batch_size
    assert report.extra["encoder_fit"]["stopped_because"] == "test"
    assert not any(p.requires_grad for p in model.encoder.module.parameters())  # frozen after its fit


def test_latent_unet_depth_on_latent_grids():
    with torch.device("meta"):
        # default depth 3 on the SD latent (4 x 8) runs at depth 2: pin the default U-Net (base 128)
        net = UNet(12 * 4, 4 * 4, base_channels=128, depth=min(3, max_depth(4, 8)))
        assert count_parameters(net) == unet_parameters(48, 16, 128, 2) == 7_503_760
        # RAE default (SigLIP2-base: 768 x 16 x 16 tokens): depth 3 fits
        assert max_depth(16, 16) >= 3
        assert count_parameters(UNet(12 * 768, 4 * 768, base_channels=128, depth=3)) \
            == unet_parameters(12 * 768, 4 * 768, 128, 3)
    model = smoke(LatentUNet, encoder="sd_vae", unet_depth=3)
    assert model.depth_used == 2 and model.net.core.unet.depth == 2
    assert LatentUNet.hyperparameters["unet_base_channels"] == 128 and LatentUNet.hyperparameters["unet_depth"] == 3


def test_latent_unet_without_latent_cache(splits):
    model = smoke(LatentUNet, encoder="sd_vae", cache_latents=False)
    report = model.fit(*splits, smoke_budget())
    assert report.steps > 0
    assert model.predict(splits[0].windows(torch.arange(2))[0]).shape == (2, 4, C, H, W)


def test_latent_unet_rejects_unknown_encoder():
    with pytest.raises(ConfigError, match="latent_unet: hyperparameter 'encoder': unknown encoder 'vqgan'.*Known: rae, sd_vae"):
        smoke(LatentUNet, encoder="vqgan")


def test_registration_keeps_variant_under_profiles(wxbench_registry):
    from wxbench.runner import resolve_hyperparameters

    for name, encoder in (("latent_unet_sd", "sd_vae"), ("latent_unet_rae", "rae")):
        reg = wxbench_registry.forecaster(name)
        assert reg.cls is LatentUNet and reg.variant == {"encoder": encoder}
        for profile in ("smoke", "cpu", "gpu"):
            assert resolve_hyperparameters(reg, profile, {})["encoder"] == encoder
    for name, cls in (("pixel_unet", PixelUNet), ("rae_direct", RAEDirect)):
        assert wxbench_registry.forecaster(name).cls is cls
    assert wxbench_registry.encoder("sd_vae").cls is SDVAEEncoder
    assert wxbench_registry.encoder("rae").cls is RAEEncoder


# -- RAE direct -----------------------------------------------------------------------------------------


def test_rae_direct_adapter_and_freezing():
    model = smoke(RAEDirect)
    net = model.module.core
    adapter = net.in_adapter
    assert adapter.weight.shape == (3, 12 * C, 1, 1)
    assert torch.count_nonzero(adapter.weight[:, :11 * C]) == 0  # starts from the last input state
    assert torch.equal(adapter.weight[:, 11 * C:, 0, 0], folding_matrix(C, 3))
    assert net.decoder.out_channels == 4 * C
    assert not any(p.requires_grad for p in net.tokens.parameters())
    assert adapter.weight.requires_grad
    fixed = smoke(RAEDirect, train_in_adapter=False, freeze_backbone=False)
    assert not fixed.module.core.in_adapter.weight.requires_grad
    assert all(p.requires_grad for p in fixed.module.core.tokens.parameters())
    assert "fine-tuned" in fixed.weights and "UNTRAINED" in fixed.weights


def test_rae_direct_conformance():
    check_forecaster(RAEDirect)
