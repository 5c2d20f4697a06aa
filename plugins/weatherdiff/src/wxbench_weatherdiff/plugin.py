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
    register(LatentUNet, name="latent_unet_sd", vae_type="sd")
    register(LatentUNet, name="latent_unet_rae", vae_type="rae")
    register(RAEDirect)
    register(LatentDiffusion)
    register(RAEDiffusion)
