"""Cold degradations D(x0, t; z) of Bansal et al. 2022 ("Cold Diffusion"), one :class:`ForwardProcess` each.

Severity t is an integer 0..T given per sample as a (B,) tensor, with D(x0, 0) = x0. ``z`` is the degradation's
per-sample nuisance (the hidden centre of a mask, a snow field, the image mixed in); deterministic degradations have
none. Every D(., t) is computed in **constant time in t** from a closed form of the composition of the T per-step
operators (the reference code re-applies t small operators per call, which makes a trajectory O(T^2)):

* :class:`Blur`       — per-step Gaussian blurs compose into one Gaussian of variance sum(s_i^2); applied in the
  Fourier domain of the mirror-extended image (reflect boundary), so the composition is exact.
* :class:`Pixelate`   — t halvings of the resolution (2x2 area averages) compose into one 2^t x 2^t average.
* :class:`Mask`       — the product of per-step Gaussian-shaped masks 1 - exp(-r^2 / 2 s_i^2) is tabulated once.
* :class:`Desaturate` — colour fraction 1 - t/T towards the per-pixel grey.
* :class:`Snow`       — a fixed flake field thresholded at a level falling linearly in t, blended towards white.
* :class:`Mix`        — x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) z with a cosine abar (animorphosis); z is an image of
  another data set, or Gaussian noise for :class:`Noise`, the "hot" baseline.

The restorer R(x_t, t) ~ x0 is the core's preconditioned network with c_skip = 0, c_out = c_in = 1 (R predicts x0
directly, as in the paper) and c_noise = t / T in the network's time units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import KakusanError
from ..diffusion.process import TIME_UNITS, ForwardProcess, per_sample
from .options import ColdOptions, degradation_for_training




class Degradation(ForwardProcess):
    """Common part of the cold processes: uniform integer severities, R = F, an optional nuisance. Sampling walks the
    integer grid T, T-1, ..., 0 with Algorithm 2 (default) or 1; generation starts from :meth:`draw_prior`, which
    only the generative degradations define."""

    steps: int = 1
    default_sampler = "alg2"
    generative = False  # can x_T be drawn without a clean image?
    score_based = False  # R(x_t, t) ~ x0 of a deterministic degradation is no score: guidance does not apply
    default_loss = "l1"  # Bansal et al. 2022, sec. 3.2: restorers are trained with the L1 norm
    conditional_by_default = False  # the paper's restorers are unconditional

    @classmethod
    def training_options(cls):
        return ColdOptions

    @classmethod
    def for_training(cls, options, images=None):
        return degradation_for_training(cls, images=images, **options)

    def sample_t(self, batch, generator=None, device=None):
        # t ~ U{1..T}
        return torch.randint(1, self.steps + 1, (batch,), generator=generator, device=device).float()

    def nuisance(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        """The hidden random part z of D(x0, t; z); None if D is deterministic."""
        return None

    def apply(self, x0: torch.Tensor, t: torch.Tensor, z=None) -> torch.Tensor:
        """D(x0, t; z) for a per-sample integer t (B,)."""
        raise NotImplementedError

    def estimate_nuisance(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, z=None):
        """The z that makes D(x0_hat, t; z) = x_t where it can be solved for; otherwise the known z."""
        return z

    def degrade(self, x0, t, generator=None):
        return self.apply(x0, t, self.nuisance(x0, generator))

    def loss_weight(self, t):
        return torch.ones_like(t)

    def precondition(self, t):
        one = torch.ones_like(t)
        return torch.zeros_like(t), one, one, t / self.steps * TIME_UNITS

    # --- sampling ------------------------------------------------------------------------------------------------
    def sampler(self, name, steps=1, schedule="auto"):
        from .sampling import generation_sampler

        return generation_sampler(self, name)

    def sampling_grid(self, sampler, steps, schedule="auto", rho=7.0):
        """Every integer severity T, T-1, ..., 0 (a cold model is always run over its own T steps)."""
        return torch.arange(self.steps, -1, -1, dtype=torch.float64)

    @torch.no_grad()
    def restoration_preview(self, model, clean: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Algorithm-2 restorations by ``model`` of ``clean`` degraded to T (the training preview of a restorer)."""
        from .sampling import restorer, sample_alg2

        z = self.nuisance(clean, torch.Generator().manual_seed(seed))
        t = torch.full((len(clean),), self.steps, dtype=torch.long)
        return sample_alg2(restorer(model), self.apply(clean, t, z), self, self.steps, z).clamp(-1, 1)

    def draw_prior(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """One fully degraded x_T (1, C, H, W) drawn without a clean image."""
        raise KakusanError(f"generation is defined for blur (to mean), mix and noise models, not {self.kind!r}")

    def prior(self, noise, shape, grid, device=None):
        return torch.cat([self.draw_prior(shape, g) for g in noise.generators]).to(device)

def _steps_of(t: torch.Tensor, steps: int) -> torch.Tensor:
    t = t.round().long()
    if t.min() < 0 or t.max() > steps:
        raise KakusanError(f"severity t must be in 0..{steps}, got {t.min().item()}..{t.max().item()}")
    return t


def _by_level(x: torch.Tensor, t: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn(x_subset, level) to each group of samples sharing one integer level."""
    out = torch.empty_like(x)
    for level in t.unique().tolist():
        sel = t == level
        out[sel] = fn(x[sel], int(level))
    return out


@dataclass
class Blur(Degradation):
    """Gaussian blur; step i has std s_i = std * growth**i pixels. With ``to_mean`` the last step gives the flat
    per-channel mean (the fully degraded prior of blur generation)."""

    steps: int = 20
    std: float = 1.0
    growth: float = 1.0
    to_mean: bool = False
    prior_fit: dict | None = None  # Gaussian mixture of the per-image channel means, fitted on the data (generation)
    kind = "blur"

    def step_variances(self) -> torch.Tensor:
        i = torch.arange(self.steps, dtype=torch.float64)
        return (self.std * self.growth**i) ** 2

    def cumulative_variance(self, t: torch.Tensor) -> torch.Tensor:
        """v_t = sum_{i < t} s_i^2: the variance of the one Gaussian equal to the first t per-step blurs."""
        v = torch.cat([torch.zeros(1, dtype=torch.float64), self.step_variances().cumsum(0)])
        out = v[t.cpu()]
        if self.to_mean:
            out[t.cpu() == self.steps] = math.inf
        return out.to(t.device)

    def apply(self, x0, t, z=None):
        return gaussian_blur(x0, self.cumulative_variance(_steps_of(t, self.steps)))

    @property
    def generative(self) -> bool:
        return self.to_mean and self.prior_fit is not None

    def draw_prior(self, shape, generator):
        """A flat image of one colour drawn from the fitted mixture of per-image channel means."""
        if not self.generative:
            raise KakusanError("generation from blur needs a blur-to-mean model with a fitted prior "
                               "(trained with process 'blur' and to_mean)")
        from .sampling import sample_flat_prior

        colour = sample_flat_prior(self.prior_fit, 1, generator)
        return colour[:, :, None, None].expand(1, *shape).contiguous()

    def apply_step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The i-th per-step operator alone (for checking the closed form against the composition)."""
        v = torch.full((x.shape[0],), float(self.step_variances()[i]), dtype=torch.float64)
        if self.to_mean and i == self.steps - 1:
            v[:] = math.inf
        return gaussian_blur(x, v)


def gaussian_blur(x: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur of variance v (pixels^2; inf gives the mean) with a mirror (reflect) boundary:
    filter the 2H x 2W mirror extension with the Gaussian transfer function exp(-v |omega|^2 / 2), then crop."""
    B, C, H, W = x.shape
    ext = torch.cat([x, x.flip(-1)], dim=-1)
    ext = torch.cat([ext, ext.flip(-2)], dim=-2)
    wy = 2 * math.pi * torch.fft.fftfreq(2 * H, dtype=torch.float64, device=x.device)
    wx = 2 * math.pi * torch.fft.rfftfreq(2 * W, dtype=torch.float64, device=x.device)
    w2 = wy[:, None] ** 2 + wx[None, :] ** 2
    v = variance.to(device=x.device, dtype=torch.float64).reshape(B, 1, 1, 1)
    transfer = torch.where(w2 == 0, torch.ones_like(v * w2), torch.exp(-0.5 * v * w2.clamp_min(1e-300)))
    out = torch.fft.irfft2(torch.fft.rfft2(ext.double()) * transfer, s=(2 * H, 2 * W))
    return out[..., :H, :W].to(x.dtype)


@dataclass
class Pixelate(Degradation):
    """Step i halves the resolution (2x2 area average, nearest-neighbour back to full size)."""

    steps: int = 4
    kind = "pixelate"

    def apply(self, x0, t, z=None):
        t = _steps_of(t, self.steps)
        if x0.shape[-1] % 2**self.steps or x0.shape[-2] % 2**self.steps:
            raise KakusanError(f"pixelate with {self.steps} steps needs image sides divisible by {2**self.steps}")

        def level(x, k):
            f = 2**k
            return x if k == 0 else F.interpolate(F.avg_pool2d(x, f), scale_factor=f, mode="nearest")
        return _by_level(x0, t, level)


@dataclass
class Mask(Degradation):
    """Inpainting by a growing hole: step i multiplies by 1 - exp(-r^2 / (2 s_i^2)), s_i = std * (i + initial) px,
    around a per-sample centre z (random unless ``random_centre`` is off); masked pixels fade to ``fill``."""

    steps: int = 50
    std: float = 0.1
    initial: float = 11.0
    fill: float = 0.0
    random_centre: bool = True
    kind = "mask"

    def mask_table(self, H: int, W: int, device=None) -> torch.Tensor:
        """(T+1, 2H-1, 2W-1) cumulative masks around the table's centre, m_0 = 1; built once per size and device."""
        key = (H, W, str(device))
        cache = self.__dict__.setdefault("_tables", {})
        if key not in cache:
            cache[key] = self._build_table(H, W, device)
        return cache[key]

    def _build_table(self, H: int, W: int, device=None) -> torch.Tensor:
        dy = torch.arange(-(H - 1), H, dtype=torch.float64, device=device)
        dx = torch.arange(-(W - 1), W, dtype=torch.float64, device=device)
        r2 = dy[:, None] ** 2 + dx[None, :] ** 2
        s = self.std * (torch.arange(self.steps, dtype=torch.float64, device=device) + self.initial)
        step_masks = 1 - torch.exp(-r2 / (2 * s[:, None, None] ** 2))
        return torch.cat([torch.ones_like(r2)[None], step_masks.cumprod(0)]).float()

    def nuisance(self, x0, generator=None):
        B, _, H, W = x0.shape
        if not self.random_centre:
            return torch.tensor([[H // 2, W // 2]], device=x0.device).expand(B, 2)
        return torch.stack([torch.randint(0, H, (B,), generator=generator, device=x0.device),
                            torch.randint(0, W, (B,), generator=generator, device=x0.device)], dim=1)

    def masks(self, t: torch.Tensor, centre: torch.Tensor, H: int, W: int) -> torch.Tensor:
        table = self.mask_table(H, W, t.device)[_steps_of(t, self.steps)]  # (B, 2H-1, 2W-1)
        rows = (H - 1) - centre[:, 0, None] + torch.arange(H, device=t.device)  # (B, H)
        cols = (W - 1) - centre[:, 1, None] + torch.arange(W, device=t.device)
        b = torch.arange(len(t), device=t.device)[:, None, None]
        return table[b, rows[:, :, None], cols[:, None, :]][:, None]  # (B, 1, H, W)

    def apply(self, x0, t, z=None):
        if z is None and not self.random_centre:
            z = self.nuisance(x0)
        if z is None:
            raise KakusanError("a random-centre mask needs its centres z (see Mask.nuisance)")
        m = self.masks(t, z, x0.shape[-2], x0.shape[-1]).to(x0.dtype)
        return m * x0 + (1 - m) * self.fill


@dataclass
class Desaturate(Degradation):
    """x_t = f_t x + (1 - f_t) grey(x), f_t = 1 - t/T (RGB images)."""

    steps: int = 10
    kind = "desaturate"

    def apply(self, x0, t, z=None):
        if x0.shape[1] != 3:
            raise KakusanError(f"desaturate needs RGB images (3 channels), got {x0.shape[1]}")
        f = per_sample(1 - _steps_of(t, self.steps).to(x0.dtype) / self.steps, x0)
        return f * x0 + (1 - f) * x0.mean(dim=1, keepdim=True)


@dataclass
class Snow(Degradation):
    """Snow: a per-sample flake field u ~ U(0,1) (the nuisance), flakes where u exceeds a threshold falling linearly
    from 1 to ``threshold`` over T steps, streaked by a small diagonal motion blur, blended towards white."""

    steps: int = 50
    threshold: float = 0.8
    kind = "snow"

    def nuisance(self, x0, generator=None):
        return torch.rand(x0.shape[0], 1, *x0.shape[-2:], generator=generator, device=x0.device)

    def layer(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        thr = per_sample(1 - (1 - self.threshold) * t.to(u.dtype) / self.steps, u)
        flakes = ((u - thr) / (1 - thr).clamp_min(1e-6) * 4).clamp(0, 1)
        kernel = torch.tensor([[0.5, 0, 0], [0, 1, 0], [0, 0, 0.5]], dtype=u.dtype, device=u.device)
        return F.conv2d(flakes, kernel[None, None] / 2, padding=1).clamp(0, 1)

    def apply(self, x0, t, z=None):
        if z is None:
            raise KakusanError("snow needs its flake field z (see Snow.nuisance)")
        s = self.layer(z, _steps_of(t, self.steps)).to(x0.dtype)
        return x0 + (1 - x0) * s


def cosine_abar(t: torch.Tensor, steps: int, s: float = 0.008) -> torch.Tensor:
    """abar_t = cos^2(pi/2 (t/T + s)/(1 + s)) / cos^2(pi/2 s/(1 + s)) (Nichol & Dhariwal 2021): 1 at t = 0, 0 at T."""
    f = lambda u: torch.cos(math.pi / 2 * (u + s) / (1 + s)) ** 2  # noqa: E731
    return (f(t.double() / steps) / f(torch.zeros((), dtype=torch.float64))).clamp(0, 1)


@dataclass
class Mix(Degradation):
    """Animorphosis: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) z, z an image of the data set ``source``."""

    steps: int = 50
    source: str = "digits"
    kind = "mix"
    generative = True

    def draw_prior(self, shape, generator):
        """x_T = D(0, T; z): the image mixed in (or the noise), with nothing left of x0."""
        zeros = torch.zeros(1, *shape)
        z = self.nuisance(zeros, generator)
        return self.apply(zeros, torch.full((1,), self.steps), z)

    def coefficients(self, t: torch.Tensor, like: torch.Tensor):
        abar = cosine_abar(_steps_of(t, self.steps), self.steps).to(like.device)
        return per_sample(abar.sqrt(), like).to(like.dtype), per_sample((1 - abar).sqrt(), like).to(like.dtype)

    def source_images(self, like: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_source", None) is None or self._source.shape[1:] != like.shape[1:]:
            from ..data import load_dataset

            ds = load_dataset(self.source, image_size=like.shape[-1], channels=like.shape[1])
            self._source = ds.images.to(like.device)
        return self._source

    def nuisance(self, x0, generator=None):
        pool = self.source_images(x0)
        return pool[torch.randint(0, len(pool), (x0.shape[0],), generator=generator).to(pool.device)].to(x0.dtype)

    def apply(self, x0, t, z=None):
        if z is None:
            raise KakusanError(f"{self.kind} needs the image mixed in, z (see {type(self).__name__}.nuisance)")
        a, b = self.coefficients(t, x0)
        return a * x0 + b * z

    def estimate_nuisance(self, x_t, x0_hat, t, z=None):
        # solve x_t = a x0_hat + b z for z (t >= 1, where b > 0)
        a, b = self.coefficients(t, x_t)
        return (x_t - a * x0_hat) / b.clamp_min(1e-8)


@dataclass
class Noise(Mix):
    """The "hot" baseline: Mix with z ~ N(0, I), i.e. a cosine-schedule VP diffusion predicting x0; Algorithm 2 with
    the estimated z is then DDIM (eta = 0)."""

    source: str = "gaussian"
    kind = "noise"

    def nuisance(self, x0, generator=None):
        return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)


DEGRADATIONS = {cls.kind: cls for cls in (Blur, Pixelate, Mask, Desaturate, Snow, Mix, Noise)}



def build_degradation(kind: str, *, images=None, **options) -> Degradation:
    """The degradation ``kind`` with this project's defaults and the user's ``options`` (:class:`ColdOptions`)."""
    if kind not in DEGRADATIONS:
        raise KakusanError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")
    return DEGRADATIONS[kind].for_training(options, images)
