"""Guidance: classifier-free guidance, autoguidance and the guidance interval, as one guided denoiser."""
from .guided import guide_denoisers, guide_from_spec, in_interval, make_guided

__all__ = ["guide_denoisers", "guide_from_spec", "in_interval", "make_guided"]
