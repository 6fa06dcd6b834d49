"""Cold diffusion (Bansal et al. 2022): arbitrary degradations, restorers trained by the core trainer,
Algorithms 1 and 2, generation from a fully degraded prior."""
from .. import KakusanError
from .degradations import (DEGRADATIONS, SYMMETRY_NOISE, Blur, Degradation, Desaturate, Mask, Mix, Noise, Pixelate,
                           Snow, gaussian_blur)
from .sampling import (RESTORERS, fit_flat_prior, generation_sampler, restore_direct, restorer,
                       sample_alg1, sample_alg2)

# Defaults for 32 x 32 images when the user gives only the degradation (and maybe its number of steps).
DEFAULTS = {
    "blur": {"steps": 20, "std": 1.5},
    "blur_to_mean": {"steps": 50, "std": 0.5, "growth": 1.04, "to_mean": True},
    "pixelate": {"steps": 4},
    "mask": {"steps": 50},
    "desaturate": {"steps": 10},
    "snow": {"steps": 50},
    "mix": {"steps": 50},
    "noise": {"steps": 50},
}


def check_options(kind: str, steps: int | None = None, to_mean: bool = False) -> None:
    """The one check of a degradation's user options (called before any data is loaded)."""
    if to_mean and kind != "blur":
        raise KakusanError("to_mean applies to the blur degradation only")
    if kind not in DEGRADATIONS:
        raise KakusanError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")
    if steps is not None and steps < 1:
        raise KakusanError("steps must be >= 1")


def build_degradation(kind: str, *, steps: int | None = None, to_mean: bool = False, source: str = "digits",
                      images=None) -> Degradation:
    """A degradation with this project's defaults; blur-to-mean also fits its flat prior on ``images``."""
    check_options(kind, steps, to_mean)
    options = dict(DEFAULTS["blur_to_mean" if to_mean else kind])
    if steps is not None:
        options["steps"] = steps
    if kind == "mix":
        options["source"] = source
    degradation = DEGRADATIONS[kind](**options)
    if to_mean and images is not None:
        degradation.prior_fit = fit_flat_prior(images)
    return degradation


__all__ = ["DEGRADATIONS", "DEFAULTS", "SYMMETRY_NOISE", "Blur", "Degradation", "Desaturate", "Mask", "Mix", "Noise",
           "Pixelate", "RESTORERS", "Snow", "build_degradation", "check_options", "fit_flat_prior",
           "gaussian_blur", "generation_sampler", "restore_direct", "restorer", "sample_alg1", "sample_alg2"]
