"""What a user chooses when training a cold restorer (``kakusan train --process blur --steps 20 ...``): the options
every degradation shares, their defaults for 32 x 32 images, their one check, and the degradation they build."""
from __future__ import annotations

from dataclasses import dataclass

from .. import KakusanError
from ..diffusion.process import PANEL
from ..utils.options import option
from .sampling import fit_flat_prior

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


@dataclass
class ColdOptions:
    """The training options of every cold degradation."""

    steps: int | None = option(None, "Cold: degradation steps T.", panel=PANEL, shown=", ".join(
        f"{k.replace('_to_mean', ' --to-mean')} {v['steps']}" for k, v in DEFAULTS.items()))
    to_mean: bool = option(False, "Cold blur: the last step is the flat mean (generation from a flat prior).",
                           panel=PANEL)
    mix_source: str = option("digits", "Cold mix: the data set mixed in.", panel=PANEL)


def degradation_for_training(cls, *, steps: int | None = None, to_mean: bool = False, mix_source: str = "digits",
                             images=None):
    """A degradation of class ``cls`` with this project's defaults and the user's options, checked here;
    blur-to-mean also fits its flat prior on ``images``."""
    if to_mean and cls.kind != "blur":
        raise KakusanError("to_mean applies to the blur degradation only")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise KakusanError(f"steps must be an integer >= 1 (got {steps!r})")
    options = dict(DEFAULTS["blur_to_mean" if to_mean else cls.kind])
    if steps is not None:
        options["steps"] = steps
    if cls.kind == "mix":
        options["source"] = mix_source
    degradation = cls(**options)
    if to_mean and images is not None:
        degradation.prior_fit = fit_flat_prior(images)
    return degradation
