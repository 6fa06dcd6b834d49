"""Diffusion core: schedules, forward processes, the preconditioned denoiser, samplers and generation."""
from .denoiser import Denoiser
from .generate import generate
from .process import DDPMProcess, EDMProcess, ForwardProcess
from .samplers import SAMPLERS, sample_ddim, sample_ddpm, sample_euler, sample_heun

__all__ = ["Denoiser", "generate", "DDPMProcess", "EDMProcess", "ForwardProcess", "SAMPLERS",
           "sample_ddim", "sample_ddpm", "sample_euler", "sample_heun"]
