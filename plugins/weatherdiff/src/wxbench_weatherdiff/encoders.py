"""WeatherDiff encoders (the wxbench ``Encoder`` interface): ``sd_vae`` and ``rae``.

Both map single weather fields (B, C, H, W), min-max scaled to [-1, 1], to latents and back, and both
train on reconstruction of single frames with :func:`wxbench.training.train_module` (the one shared
loop: the loss closure takes ``frames_per_window`` random frames from each window of the batch it is
handed, :func:`~wxbench_weatherdiff.latent.frame_batch`; the loss is the latitude-weighted MSE). After
``fit`` each reports its reconstruction RMSE per variable in physical units on evenly spaced
validation frames (``describe()["reconstruction_rmse"]`` and ``FitReport.extra``).

Options both share (defaults keep the original design): ``input_transform`` (:class:`InputTransform`:
``"none"``, or the autoencoder sees the departure from the training split's mean field,
``"anomaly"``, or that departure standardised per channel, ``"standardised_anomaly"``; decoding
undoes it; the statistics are part of the state), ``lr_schedule`` (``"cosine"`` or ``"constant"``
after the warm-up, see :func:`wxbench.training.train_module`) and ``batch_size`` (windows per
training step; None: the profile's). Both encoders' ``cpu`` profiles use all three.

``sd_vae``: Stable Diffusion's VAE, diffusers ``AutoencoderKL``, wrapped as
``ChannelAdapter(C -> 3) -> AutoencoderKL -> ChannelAdapter(3 -> C)`` inside the input transform (the
adapters start as a channel-folding map and its pseudo-inverse, see :mod:`~wxbench_weatherdiff.latent`).

- Weights: ``vae_pretrained_path`` (default ``stabilityai/sd-vae-ft-mse``) is a local directory
  written by ``save_pretrained`` (``config.json`` plus weights, or such a directory in a ``vae/``
  subfolder) or a hub id looked up in the local Hugging Face cache only (its snapshot folder is loaded
  as a local directory: nothing is downloaded). A local-looking path that does not exist is an error.
  When no weights are found, the architecture is built from ``vae_config`` (None: the SD v1 VAE
  config, 83.65 M parameters) and trained from scratch on the training split; ``weights`` records which.
- Latent: the posterior mean (B, 4, H/8, W/8): (4, 4, 8) for a 32 x 64 field, 128 numbers for the
  4 x 32 x 64 = 8192 of a four-variable field (64x compression). No ``scaling_factor`` is applied:
  the latent forecasters standardise latents per channel with statistics they measure.
- Training: latitude-weighted MSE of the reconstruction of a posterior sample plus ``kl_weight`` times
  the KL divergence per field value (SD's VAE used a tiny KL weight). ``freeze_encoder`` /
  ``freeze_decoder`` freeze the pretrained encoder (encoder + quant_conv) / decoder (post_quant_conv
  + decoder); they only apply to pretrained weights (a randomly initialised VAE trains whole, noted in
  ``describe()``). ``train_adapter`` trains the two adapters (gradients reach the input adapter
  through a frozen encoder). Encoding and decoding run in chunks of ``vae_batch_size``.
- Chosen here (the original design is silent): ``freeze_encoder=True, freeze_decoder=False`` (fine-tune
  the decoder, which the original design says improves on the 5-10 K of the frozen VAE); learning rate 1e-4 for
  pretrained weights, 1e-3 from scratch (``learning_rate=None``).
- ``cpu`` profile: no SD weights exist on these machines, and the SD v1 VAE (~28 GFLOP per 32 x 64
  frame for encode + decode) cannot train in a share of 50 s on 2 cores, so a small VAE of the same
  family is built (``SD_SMALL_VAE_CONFIG``: widths 8-16-16, one layer each, and three blocks instead
  of four: downsampling 4 to a (4, 8, 16) latent, 16x compression instead of 64x; the four weather
  channels are its image channels, the adapter 4 -> 4 starting as the identity; 62 k parameters)
  and trained from scratch on standardised anomalies (``input_transform``), one frame per window,
  8 windows per step, on the posterior mean (``sample_posterior`` off: a plain autoencoder converges
  faster in so few steps), at a constant learning rate 5e-3 after the warm-up: on raw fields, or with
  four blocks, the VAE does not leave its mean-state plateau within its share of the budget
  (docs/weatherdiff-notes.md has the measurements).

``rae``: representation autoencoder: ``ChannelAdapter(C -> 3)`` -> frozen timm ViT
(:class:`~wxbench_weatherdiff.vit.ViTTokens`: resize to the backbone's input, [-1, 1] -> [0, 1], the
backbone's mean/std) -> patch tokens as a grid (D, gh, gw) -> trainable MAE-style ViT decoder
(:class:`~wxbench_weatherdiff.vit.MAEDecoder`, patch 16) -> (C, H, W).

- Backbone by timm name (``backbone``): default ``vit_base_patch16_siglip_256.v2_webli`` (SigLIP2-base
  patch16 at 256: 768-wide tokens on 16 x 16, the original's recommended choice); DINOv2
  (``vit_base_patch14_dinov2.lvd142m``) or MAE (``vit_base_patch16_224.mae``) by name, ``img_size``
  to change the input size. Weights from ``pretrained_path`` (a local checkpoint file) or the local
  cache (Hugging Face hub cache, torch hub checkpoints), else the architecture UNTRAINED (random,
  frozen) and ``weights`` says so.
- Left open by the original design: a C-channel field must become a 3-channel image; a 1x1 ``ChannelAdapter``
  does it (trainable with ``train_adapter``, through the frozen backbone), as for the SD VAE.
- Parameters at the defaults (C = 4): backbone 92.9 M (timm's SigLIP2 ViT-B including its unused
  attention-pool head), decoder 26.1 M (width 512, 8 blocks, 16 heads). A ViT-B/16 at 256 costs
  ~23 GFLOP per frame.
- ``cpu`` profile: ``vit_tiny_patch16_224`` at a 64 x 64 input (4 x 4 tokens of width 192, ~0.19
  GFLOP per frame; 5.49 M frozen parameters) and a decoder of width 128 with 2 blocks (0.55 M), with
  the adapter fixed (no backward pass through the backbone: about 3x the steps).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from wxbench import Budget, Encoder, FitReport, GridSpec
from wxbench.data.splits import SplitData
from wxbench.errors import ConfigError
from wxbench.nn import latitude_weighted_mse
from wxbench.training import autocast, count_parameters, train_module

from .latent import ChannelAdapter, Standardiser, frame_batch, moments, reconstruction_rmse
from .vit import MAEDecoder, ViTTokens, build_backbone

__all__ = ["InputTransform", "RAEEncoder", "SDVAEEncoder", "SD_V1_VAE_CONFIG", "load_pretrained_vae"]

#: the Stable Diffusion v1 VAE (``AutoencoderKL``) configuration: 83.65 M parameters, downsampling 8
SD_V1_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 512,
}

#: a small config of the same family for the ``cpu`` profile: three blocks (downsampling 4, latent 4
#: channels), the weather channels as image channels (see the module docstring)
SD_SMALL_VAE_CONFIG: dict[str, Any] = {
    **SD_V1_VAE_CONFIG, "in_channels": 4, "out_channels": 4, "block_out_channels": [8, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64,
}

#: a tiny config for the ``smoke`` profile and tests
SD_TINY_VAE_CONFIG: dict[str, Any] = {
    **SD_V1_VAE_CONFIG, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 8,
    "sample_size": 32,
}


def _looks_like_hub_id(path: str) -> bool:
    """``org/name`` (one slash, no leading ``.``, ``/`` or ``~``, no backslash): a hub id, not a local path."""
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~")) and "\\" not in path


def _cached_hub_snapshot(repo_id: str) -> str | None:
    """The local snapshot folder of hub repo ``repo_id`` holding a VAE ``config.json`` (or ``vae/config.json``)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - diffusers depends on huggingface_hub
        return None
    for name in ("config.json", "vae/config.json"):
        try:
            found = try_to_load_from_cache(repo_id, name)
        except ValueError:  # not a valid repo id
            return None
        if isinstance(found, str) and os.path.isfile(found):
            return os.path.dirname(found)
    return None


def load_pretrained_vae(path: str | None) -> tuple[Any | None, str]:
    """(AutoencoderKL, where from) for a local ``save_pretrained`` directory or a cached hub id; (None, why) else.

    A local-looking path (absolute, ``./``, ``~``, or anything that is not ``org/name``) that does not
    exist raises FileNotFoundError. A hub id is looked up in the local Hugging Face cache only
    (``HF_HUB_CACHE``; nothing is downloaded) and returns None when it is not there.
    """
    from diffusers import AutoencoderKL

    if not path:
        return None, "no vae_pretrained_path given"
    expanded = os.path.expanduser(path)
    where = f"local directory {expanded}"
    if not os.path.isdir(expanded):
        if not _looks_like_hub_id(path):
            raise FileNotFoundError(f"vae_pretrained_path {path!r} does not exist")
        snapshot = _cached_hub_snapshot(path)
        if snapshot is None:
            return None, f"{path!r} not in the local hub cache"
        expanded, where = snapshot, f"local hub cache {path}"
    if os.path.isfile(os.path.join(expanded, "config.json")):
        return AutoencoderKL.from_pretrained(expanded, low_cpu_mem_usage=False), where
    if os.path.isfile(os.path.join(expanded, "vae", "config.json")):
        return AutoencoderKL.from_pretrained(expanded, subfolder="vae", low_cpu_mem_usage=False), f"{where}/vae"
    raise FileNotFoundError(f"vae_pretrained_path {path!r} has no config.json (nor vae/config.json)")


class InputTransform(Standardiser):
    """What an autoencoder sees of a field x (C, H, W): x itself (``"none"``), its departure from the
    training split's mean field (``"anomaly"``) or that departure divided by its standard deviation
    per channel (``"standardised_anomaly"``); ``inverse`` undoes it on the decoder's output.

    A :class:`~wxbench_weatherdiff.latent.Standardiser` whose mean is a field (C, H, W), not one
    number per channel, hence its own :meth:`fit`. Why: an autoencoder trained from scratch on raw
    fields first learns the mean state and then decodes every state to nearly that field for a
    number of steps that varies from run to run; on standardised anomalies it starts on the
    departures at once (docs/weatherdiff-notes.md has the measurements). The identity until fitted.
    """

    #: the ``input_transform`` values both encoders accept
    KINDS = ("none", "anomaly", "standardised_anomaly")

    def __init__(self, channels: int, shape: tuple[int, int]) -> None:
        super().__init__((channels, *shape), (channels, 1, 1))

    @torch.no_grad()
    def fit(self, fields: torch.Tensor, kind: str) -> InputTransform:  # type: ignore[override]
        """Statistics of ``kind`` from training fields (T, C, H, W)."""
        if kind == "none":
            return self
        fields = fields.double()
        mean = fields.mean(dim=0)
        self.mean.copy_(mean.float())
        if kind == "standardised_anomaly":
            _, std = moments(fields - mean, keep=(1,))
            self.std.copy_(std.reshape(self.std.shape))
        return self


#: training options both encoders share (their defaults keep the original design)
_TRAINING_OPTIONS: dict[str, Any] = {
    "lr_schedule": "cosine",  # or "constant" after the warm-up (wxbench.training.train_module)
    "batch_size": None,  # windows per training step (frames_per_window frames each); None: the profile's
    "input_transform": "none",  # or "anomaly", "standardised_anomaly": see InputTransform
}


class _FieldAutoencoder(Encoder):
    """What both encoders share: a module, chunked encode/decode, frame-wise training, reconstruction RMSE."""

    family: ClassVar[str] = "weatherdiff"
    chunk_key: ClassVar[str] = "vae_batch_size"

    def __init__(self, grid: GridSpec, *, device: str = "cpu", seed: int = 0, **hparams: Any) -> None:
        super().__init__(grid, device=device, seed=seed, **hparams)
        from wxbench.metrics import latitude_weights

        transform = self.hparams["input_transform"]
        if transform not in InputTransform.KINDS:
            raise ConfigError(f"{self.name}: unknown input_transform {transform!r}; "
                              f"known: {', '.join(InputTransform.KINDS)}")
        torch.manual_seed(seed)
        self.module: nn.Module = self.build().to(device)
        self.module.eval()
        self.lat_weights = latitude_weights(torch.tensor(grid.lat)).float().to(device)
        self.recon_rmse: dict[str, float] | None = None

    # -- subclasses ------------------------------------------------------------------------------
    def build(self) -> nn.Module:
        raise NotImplementedError

    def _encode(self, fields: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, frames: torch.Tensor) -> torch.Tensor:
        return latitude_weighted_mse(self._decode(self._encode(frames)), frames, self.lat_weights)

    def learning_rate(self) -> float:
        return float(self.hparams["learning_rate"])

    # -- Encoder interface -----------------------------------------------------------------------
    def _chunked(self, fn, x: torch.Tensor) -> torch.Tensor:
        size = max(1, int(self.hparams[self.chunk_key]))
        with autocast(self.device):
            parts = [fn(x[i:i + size].to(self.device)).float() for i in range(0, len(x), size)]
        return torch.cat(parts) if parts else fn(x.to(self.device))

    def encode(self, fields: torch.Tensor) -> torch.Tensor:
        return self._chunked(self._encode, fields)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self._chunked(self._decode, latent)

    def fit(self, train: SplitData, val: SplitData, budget: Budget) -> FitReport:
        k = int(self.hparams["frames_per_window"])
        self.module.transform.fit(train.fields, self.hparams["input_transform"])  # training-split statistics
        if self.hparams["batch_size"]:  # the encoder's own batch (windows per step)
            budget = replace(budget, batch_size=int(self.hparams["batch_size"]))

        def loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self.training_loss(frame_batch(history, target, k))

        def val_loss(history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            frames = history[:, -1]  # one frame per validation window
            return latitude_weighted_mse(self._decode(self._encode(frames)), frames, self.lat_weights)

        # a quarter of the profile's validation windows, one frame each: validation stays a small
        # part of a short encoder budget (frames are far cheaper to compare than forecasts are to make)
        budget = replace(budget, val_windows=max(8, budget.val_windows // 4))
        report = train_module(self.module, loss, train, val, budget, device=self.device, seed=self.seed,
                              learning_rate=self.learning_rate(), weight_decay=self.hparams["weight_decay"],
                              val_loss_fn=val_loss, desc=self.name, schedule=self.hparams["lr_schedule"])
        self.module.eval()
        self.recon_rmse = reconstruction_rmse(self, val, limit=int(self.hparams["reconstruction_samples"]))
        report.extra.update({"reconstruction_rmse": self.recon_rmse, "weights": self.weights,
                             "trainable": self.trainable})
        return report

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "reconstruction_rmse": self.recon_rmse}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.recon_rmse = state.get("reconstruction_rmse")
        self.module.eval()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"parameters": count_parameters(self.module),
                                "trainable_parameters": count_parameters(self.module, trainable_only=True),
                                "weights": self.weights, "trainable": self.trainable}
        if self.recon_rmse is not None:
            info["reconstruction_rmse"] = self.recon_rmse
        return info


class SDVAEModule(nn.Module):
    """InputTransform -> ChannelAdapter(C -> 3) -> diffusers AutoencoderKL -> ChannelAdapter(3 -> C)
    -> the transform's inverse."""

    def __init__(self, vae: nn.Module, channels: int, shape: tuple[int, int]) -> None:
        super().__init__()
        image_channels = int(vae.config.in_channels)
        self.transform = InputTransform(channels, shape)
        self.in_adapter = ChannelAdapter(channels, image_channels)
        self.vae = vae
        self.out_adapter = ChannelAdapter(int(vae.config.out_channels), channels, inverse=True)

    def posterior(self, fields: torch.Tensor):
        return self.vae.encode(self.in_adapter(self.transform(fields))).latent_dist

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(self.out_adapter(self.vae.decode(latent).sample))


class SDVAEEncoder(_FieldAutoencoder):
    """Stable Diffusion's VAE (diffusers AutoencoderKL) with explicit channel adapters; see the module docstring."""

    name = "sd_vae"
    chunk_key = "vae_batch_size"
    hyperparameters: ClassVar[Mapping[str, Any]] = {
        "vae_pretrained_path": "stabilityai/sd-vae-ft-mse",  # local dir or hub id (cache only)
        "vae_config": None,  # AutoencoderKL kwargs when no pretrained weights are found; None: SD v1
        "freeze_encoder": True,
        "freeze_decoder": False,
        "train_adapter": True,
        "vae_batch_size": 16,
        "kl_weight": 1e-6,
        "sample_posterior": True,  # train on posterior samples (SD); False: on the mean, a plain autoencoder
        "learning_rate": None,  # None: 1e-4 for pretrained weights, 1e-3 from scratch
        "weight_decay": 0.0,
        **_TRAINING_OPTIONS,
        "frames_per_window": 2,
        "reconstruction_samples": 64,
    }
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {"vae_pretrained_path": None, "vae_config": SD_TINY_VAE_CONFIG, "vae_batch_size": 8,
                  "reconstruction_samples": 8},
        # no SD weights on these machines: a small VAE of the same family trained from scratch in its
        # share of the 50 s (see the module docstring)
        "cpu": {"vae_pretrained_path": None, "vae_config": SD_SMALL_VAE_CONFIG, "vae_batch_size": 64,
                "frames_per_window": 1, "sample_posterior": False, "input_transform": "standardised_anomaly",
                "learning_rate": 5e-3, "lr_schedule": "constant", "batch_size": 8},
    }

    def build(self) -> nn.Module:
        from diffusers import AutoencoderKL

        vae, source = load_pretrained_vae(self.hparams["vae_pretrained_path"])
        self.pretrained = vae is not None
        if vae is None:
            config = dict(self.hparams["vae_config"] or SD_V1_VAE_CONFIG)
            vae = AutoencoderKL(**config)
            shown = {k: config[k] for k in ("block_out_channels", "layers_per_block", "latent_channels")}
            self.weights = (f"diffusers AutoencoderKL {shown} trained from scratch on the training split "
                            f"({source})")
        else:
            parts = ["encoder frozen" if self.hparams["freeze_encoder"] else "encoder fine-tuned",
                     "decoder frozen" if self.hparams["freeze_decoder"] else "decoder fine-tuned"]
            self.weights = f"diffusers AutoencoderKL pretrained ({source}); {', '.join(parts)}"
        module = SDVAEModule(vae, self.grid.n_channels, self.grid.shape)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        if self.pretrained:
            v = module.vae
            v.encoder.requires_grad_(not self.hparams["freeze_encoder"])
            v.quant_conv.requires_grad_(not self.hparams["freeze_encoder"])
            v.decoder.requires_grad_(not self.hparams["freeze_decoder"])
            v.post_quant_conv.requires_grad_(not self.hparams["freeze_decoder"])
        module.in_adapter.requires_grad_(bool(self.hparams["train_adapter"]))
        module.out_adapter.requires_grad_(bool(self.hparams["train_adapter"]))
        return module

    @property
    def trainable(self) -> dict[str, bool]:
        v = self.module.vae
        return {"adapter": bool(self.hparams["train_adapter"]),
                "encoder": any(p.requires_grad for p in v.encoder.parameters()),
                "decoder": any(p.requires_grad for p in v.decoder.parameters())}

    def learning_rate(self) -> float:
        lr = self.hparams["learning_rate"]
        return float(lr) if lr is not None else (1e-4 if self.pretrained else 1e-3)

    def _encode(self, fields: torch.Tensor) -> torch.Tensor:
        return self.module.posterior(fields).mean

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.module.decode(latent)

    def training_loss(self, frames: torch.Tensor) -> torch.Tensor:
        posterior = self.module.posterior(frames)
        recon = self.module.decode(posterior.sample() if self.hparams["sample_posterior"] else posterior.mean)
        loss = latitude_weighted_mse(recon, frames, self.lat_weights)
        if self.hparams["kl_weight"]:
            kl = posterior.kl().mean() / frames[0].numel()  # KL per field value
            loss = loss + self.hparams["kl_weight"] * kl
        return loss

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        _, h, w = input_shape
        return (self.latent_channels, h // self.downsample, w // self.downsample)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["pretrained"] = self.pretrained
        if not self.pretrained and (self.hparams["freeze_encoder"] or self.hparams["freeze_decoder"]):
            info["note"] = "freeze_encoder/freeze_decoder ignored: no pretrained weights, the whole VAE trains"
        return info


class RAEModule(nn.Module):
    """InputTransform -> ChannelAdapter(C -> 3) -> frozen ViT tokens -> MAE-style decoder -> (C, H, W)
    -> the transform's inverse."""

    def __init__(self, tokens: ViTTokens, decoder: MAEDecoder, channels: int, shape: tuple[int, int]) -> None:
        super().__init__()
        self.transform = InputTransform(channels, shape)
        self.in_adapter = ChannelAdapter(channels, 3)
        self.tokens = tokens
        self.decoder = decoder

    def encode(self, fields: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.in_adapter(self.transform(fields)))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(self.decoder(latent))


#: RAE hyperparameters shared by the ``rae`` encoder and ``rae_direct`` (the original design's and MAE's
#: defaults; docs/models.md, WeatherDiff models)
RAE_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_base_patch16_siglip_256.v2_webli",  # SigLIP2-base/16 at 256
    "img_size": None,  # None: the backbone's own input size
    "pretrained_path": None,  # a local checkpoint file; None: the local cache when present
    "backbone_kwargs": {},  # extra timm.create_model kwargs (e.g. {"depth": 2} for tests)
    "decoder_dim": 512,
    "decoder_depth": 8,
    "decoder_heads": 16,
    "decoder_patch": 16,
}
RAE_CPU: dict[str, Any] = {"backbone": "vit_tiny_patch16_224", "img_size": 64, "decoder_dim": 128,
                           "decoder_depth": 2, "decoder_heads": 4, "decoder_patch": 16}
RAE_SMOKE: dict[str, Any] = {"backbone": "vit_tiny_patch16_224", "img_size": 32, "backbone_kwargs": {"depth": 1},
                             "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "decoder_patch": 8}


def build_rae_parts(hparams: Mapping[str, Any], out_channels: int, out_size: tuple[int, int], *,
                    frozen: bool = True) -> tuple[ViTTokens, MAEDecoder, str]:
    """The RAE's frozen token extractor and its decoder (to ``out_channels`` x ``out_size``), and the weights note."""
    spec = build_backbone(hparams["backbone"], img_size=hparams["img_size"],
                          pretrained_path=hparams["pretrained_path"], model_kwargs=hparams["backbone_kwargs"])
    tokens = ViTTokens(spec, frozen=frozen)
    decoder = MAEDecoder(spec.embed_dim, spec.grid_size, out_channels, out_size, dim=hparams["decoder_dim"],
                         depth=hparams["decoder_depth"], heads=hparams["decoder_heads"],
                         patch=hparams["decoder_patch"])
    return tokens, decoder, spec.weights


class RAEEncoder(_FieldAutoencoder):
    """Representation autoencoder: frozen timm ViT + MAE-style decoder; see the module docstring."""

    name = "rae"
    chunk_key = "encode_batch_size"
    hyperparameters: ClassVar[Mapping[str, Any]] = {
        **RAE_DEFAULTS,
        "train_adapter": True,
        "encode_batch_size": 64,
        "learning_rate": 5e-4,
        "weight_decay": 1e-4,
        **_TRAINING_OPTIONS,
        "frames_per_window": 2,
        "reconstruction_samples": 64,
    }
    profile_hyperparameters: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {**RAE_SMOKE, "encode_batch_size": 8, "reconstruction_samples": 8},
        # a fixed (folding) adapter: no backward pass through the backbone, about 3x the steps; the
        # decoder learns standardised anomalies at a constant learning rate, 8 windows per step
        # (measured in docs/weatherdiff-notes.md)
        "cpu": {**RAE_CPU, "train_adapter": False, "input_transform": "standardised_anomaly", "learning_rate": 1e-3,
                "lr_schedule": "constant", "batch_size": 8},
    }

    def build(self) -> nn.Module:
        tokens, decoder, weights = build_rae_parts(self.hparams, self.grid.n_channels, self.grid.shape)
        self.pretrained = "UNTRAINED" not in weights
        self.weights = f"encoder: {weights}, frozen; decoder trained on the training split"
        module = RAEModule(tokens, decoder, self.grid.n_channels, self.grid.shape)
        module.in_adapter.requires_grad_(bool(self.hparams["train_adapter"]))
        return module

    @property
    def trainable(self) -> dict[str, bool]:
        return {"adapter": bool(self.hparams["train_adapter"]), "encoder": False, "decoder": True}

    def _encode(self, fields: torch.Tensor) -> torch.Tensor:
        return self.module.encode(fields)

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.module.decode(latent)

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        tokens = self.module.tokens
        return (tokens.embed_dim, *tokens.grid_size)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["pretrained"] = self.pretrained
        return info
