"""One-step distillation (Diffusion2GAN, Kang et al. 2024): ODE pairs from a (guided) teacher, and the pieces of the
one-step conditional generator's training."""
from .pairs import PairSet, generate_pairs, load_pairs, regenerate

__all__ = ["PairSet", "generate_pairs", "load_pairs", "regenerate"]
