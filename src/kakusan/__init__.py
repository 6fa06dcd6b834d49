"""kakusan (拡散): train, sample, guide, distil and probe diffusion models on your own machine.

The one idea everything shares is a *denoiser* ``D(x, sigma, cond) -> x0_hat`` (Karras et al. 2022, eq. 7).
"""
__version__ = "0.2.0"


class KakusanError(ValueError):
    """An error caused by the user's input (bad data, bad path, bad option): reported without a traceback."""
