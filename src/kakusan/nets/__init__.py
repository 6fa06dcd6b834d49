"""Networks F(x; c_noise, cond) built on diffusers UNets, and named size presets."""
from .unet import PRESETS, TIME_CONDITIONINGS, NetConfig, build_net

__all__ = ["PRESETS", "TIME_CONDITIONINGS", "NetConfig", "build_net"]
