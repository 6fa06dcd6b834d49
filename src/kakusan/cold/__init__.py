"""Cold diffusion (Bansal et al. 2022): arbitrary degradations, restorers trained by the core trainer,
Algorithms 1 and 2, generation from a fully degraded prior."""
from .degradations import (DEGRADATIONS, Blur, Degradation, Desaturate, Mask, Mix, Noise, Pixelate, Snow,
                           build_degradation, gaussian_blur)
from .options import DEFAULTS, ColdOptions
from .sampling import (RESTORERS, SYMMETRY_NOISE, fit_flat_prior, generation_sampler, restore_direct, restorer,
                       sample_alg1, sample_alg2)

__all__ = ["ColdOptions", "DEGRADATIONS", "DEFAULTS", "SYMMETRY_NOISE", "Blur", "Degradation", "Desaturate", "Mask",
           "Mix", "Noise", "Pixelate", "RESTORERS", "Snow", "build_degradation", "fit_flat_prior",
           "gaussian_blur", "generation_sampler", "restore_direct", "restorer", "sample_alg1", "sample_alg2"]
