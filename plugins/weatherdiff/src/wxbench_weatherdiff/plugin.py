"""The WeatherDiff plugin's hooks: encoders first, as the latent forecasters look them up by name."""

from wxbench import hookimpl


@hookimpl
def wxbench_register_encoders(register):
    from .encoders import RAEEncoder, SDVAEEncoder

    register(SDVAEEncoder)
    register(RAEEncoder)


@hookimpl
def wxbench_register_forecasters(register):
    from .diffusion import LatentDiffusion, RAEDiffusion
    from .forecasters import LatentUNet, PixelUNet, RAEDirect

    register(PixelUNet)
    register(LatentUNet, name="latent_unet_sd", encoder="sd_vae")
    register(LatentUNet, name="latent_unet_rae", encoder="rae")
    register(RAEDirect)
    register(LatentDiffusion)
    register(RAEDiffusion)
