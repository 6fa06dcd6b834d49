"""Networks F(x; c_noise, cond) built on diffusers UNets, and named size presets."""
from .unet import PRESETS, NetConfig, build_net

__all__ = ["PRESETS", "NetConfig", "build_net"]
