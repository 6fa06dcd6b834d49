"""Diffusion core: schedules, forward processes, the preconditioned denoiser, samplers and generation (names
imported on first use)."""
from ..utils.lazy import lazy_names

_WHERE = {"Denoiser": "denoiser", "generate": "generation", "DDPMProcess": "process", "EDMProcess": "process",
          "ForwardProcess": "process", "SAMPLERS": "samplers", "sample_ddim": "samplers", "sample_ddpm": "samplers",
          "sample_euler": "samplers", "sample_heun": "samplers"}
__all__ = list(_WHERE)
__getattr__ = lazy_names(__name__, _WHERE)
