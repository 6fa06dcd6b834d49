"""Forward processes: how a clean image x0 is degraded to severity t, and how a network is preconditioned for it.

Every process implements one small interface (:class:`ForwardProcess`) so that the trainer and the samplers never
ask which process they hold. Gaussian processes work in the sigma ("variance exploding") view of Karras et al. (2022):
x = x0 + sigma * n. A *cold* degradation (blur, mask, ...) implements the same interface with a deterministic D(x0, t).

* :class:`EDMProcess` — Karras et al. 2022, Table 1 "EDM": log-normal sigma, c_skip/c_out/c_in/c_noise, loss weight.
* :class:`DDPMProcess` — Ho et al. 2020 (the tutorial seed): beta schedule, eps-prediction and L_simple, expressed in the
  sigma view through sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (Table 1 "VP").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .. import KakusanError
from ..utils.configs import class_path, from_dict, import_class
from ..utils.options import option
from . import schedules


class ForwardProcess:
    """The interface. ``t`` is a per-sample severity tensor of shape (B,); for Gaussian processes t is sigma.

    Besides training (``sample_t``, ``degrade``, ``loss_weight``, ``precondition``), a process answers for its own
    sampling: the samplers that apply to it (``sampler``), their default grid of severities (``sampling_grid``) and
    the prior x_T that sampling starts from (``prior``)."""

    kind: str = ""

    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training severities t ~ p_train(t), shape (B,)."""
        raise NotImplementedError

    def degrade(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """D(x0, t), vectorised over a per-sample t; D(x0, 0) = x0."""
        raise NotImplementedError

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) of the training loss lambda(t) * ||D_theta(x_t, t) - x0||^2."""
        raise NotImplementedError

    def precondition(self, t: torch.Tensor):
        """Per-sample (B,) tensors (c_skip, c_out, c_in, c_noise) of D(x; t) = c_skip x + c_out F(c_in x; c_noise)
        (Karras et al. eq. 7); c_noise in the units the network's time embedding expects."""
        raise NotImplementedError

    default_sampler: str = "heun"
    generative: bool = True  # can x_T be drawn without a clean image (see ``prior``)?
    score_based: bool = True  # is (D(x; t) - x) / t^2 a score (Tweedie), so that guidance applies?
    default_loss: str = "l2"  # the training loss when the user does not choose one
    conditional_by_default: bool = True  # condition on the data's labels when it has some and the user does not say

    trainable: bool = True  # can `kakusan train --process <kind>` fit a denoiser for it?

    # --- what a user chooses when training one (``kakusan train --process <kind>``) --------------------------------
    @classmethod
    def training_options(cls) -> type:
        """The dataclass whose command-line fields (:func:`~kakusan.utils.options.option`) are this process's training
        options; by default the process's own dataclass."""
        return cls

    @classmethod
    def for_training(cls, options: dict, images: torch.Tensor | None = None) -> "ForwardProcess":
        """The process for a training run with ``options`` (the user's, by field name), checked here; ``images``:
        the training data, for processes that fit something to it."""
        try:
            return from_dict(cls, options)
        except (ValueError, TypeError) as e:
            raise KakusanError(f"{cls.kind} options: {e}") from None

    def sampler(self, name: str, steps: int = 1, schedule: str = "auto"):
        """The sampler function ``(denoise, x, grid, *, noise, progress, **options)`` called ``name``: one of
        kakusan's, or a diffusers scheduler ('unipc', 'diffusers:<ClassName>'; ``steps`` and ``schedule`` set it up)."""
        from . import schedulers
        from .samplers import SAMPLERS

        if schedulers.is_scheduler(name):
            return schedulers.scheduler_sampler(self, name, steps, schedule)
        if name not in SAMPLERS:
            raise KakusanError(f"unknown sampler {name!r} for a {self.kind} model; choose one of "
                               f"{', '.join([*SAMPLERS, *schedulers.ALIASES])} or diffusers:<scheduler class>")
        return SAMPLERS[name]

    def discrete_sigmas(self, num: int = 1000) -> torch.Tensor:
        """The noise levels of a discrete schedule for this process (for diffusers schedulers): ``num`` sigmas
        geometric from sigma_min to sigma_max, increasing (a DDPM process has its own)."""
        return torch.logspace(math.log10(self.sigma_min), math.log10(self.sigma_max), num, dtype=torch.float64)

    def sampling_grid(self, sampler: str, steps: int, schedule: str = "auto", rho: float = 7.0) -> torch.Tensor:
        """Decreasing severities ending in 0. Gaussian processes: Karras et al. (2022, eq. 5) sigmas; a diffusers
        scheduler's own (:func:`~kakusan.diffusion.schedulers.scheduler_grid`)."""
        from . import schedulers

        if schedulers.is_scheduler(sampler):
            return schedulers.scheduler_grid(schedulers.make_scheduler(self, sampler, steps, schedule))
        if schedule not in ("auto", "karras"):
            raise KakusanError(f"unknown schedule {schedule!r} for a {self.kind} model: choose auto or karras "
                               "(uniform needs the discrete steps of a DDPM model)")
        return schedules.karras_sigmas(steps, self.sigma_min, self.sigma_max, rho)

    def prior(self, noise, shape: tuple[int, ...], grid: torch.Tensor, device=None) -> torch.Tensor:
        """x_T for one sample per generator of ``noise`` (a :class:`~kakusan.diffusion.samplers.PerSampleNoise`):
        for a Gaussian process x_T = sigma_0 n, n ~ N(0, I)."""
        return float(grid[0]) * noise(torch.empty(len(noise), *shape, device=device))

    def to_config(self) -> dict:
        return {"class_name": class_path(type(self)), "kind": self.kind, **asdict(self)}


PANEL = "Forward process (options of one process)"

# diffusers' sinusoidal time embedding is laid out for DDPM step indices 0..999; each process maps its severity to
# that range (the "time units" of the network input c_noise).
TIME_UNITS = 1000.0


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (B,) tensor to broadcast against ``like`` (B, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@dataclass
class EDMProcess(ForwardProcess):
    """Karras et al. 2022, Table 1, column "EDM" (sigma_data = 0.5 for data in [-1, 1])."""

    sigma_data: float = 0.5
    p_mean: float = option(-1.2, "EDM: mean of ln(sigma) in training (Karras et al. 2022, Table 1).", panel=PANEL)
    p_std: float = option(1.2, "EDM: std of ln(sigma) in training.", panel=PANEL)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    # EDM's c_noise = ln(sigma) / 4 spans about [-1.6, 1.1] for sigma in [0.002, 80]; the time embedding sees it
    # stretched by TIME_UNITS / 4 (toy MLPs, which take c_noise as a plain input, use 1)
    c_noise_scale: float = TIME_UNITS / 4
    kind = "edm"

    def __post_init__(self):
        if not (math.isfinite(self.p_mean) and math.isfinite(self.p_std) and self.p_std > 0):
            raise KakusanError(f"EDM needs a finite p_mean and p_std > 0 (got {self.p_mean}, {self.p_std})")

    def sample_t(self, batch, generator=None, device=None):
        # ln(sigma) ~ N(P_mean, P_std^2)
        z = torch.randn(batch, generator=generator, device=device)
        return (self.p_mean + self.p_std * z).exp()

    def degrade(self, x0, t, generator=None):
        return x0 + per_sample(t, x0) * _randn_like(x0, generator)

    def loss_weight(self, t):
        # lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2
        return (t**2 + self.sigma_data**2) / (t * self.sigma_data) ** 2

    def precondition(self, t):
        sd2 = self.sigma_data**2
        c_skip = sd2 / (t**2 + sd2)
        c_out = t * self.sigma_data / (t**2 + sd2).sqrt()
        c_in = 1 / (t**2 + sd2).sqrt()
        c_noise = t.log() / 4 * self.c_noise_scale
        return c_skip, c_out, c_in, c_noise


@dataclass
class DDPMProcess(ForwardProcess):
    """Ho et al. 2020 in the sigma view. x_VE = x_VP / sqrt(alpha_bar_t) = x0 + sigma_t eps, and the eps-network gives
    D(x; sigma) = x - sigma * eps_theta(x / sqrt(1 + sigma^2), t(sigma)); with lambda = 1/sigma^2 the loss
    lambda ||D - x0||^2 equals L_simple = ||eps - eps_theta||^2 exactly."""

    schedule: str = option("linear", "DDPM beta schedule: linear | cosine.", flag="beta-schedule", panel=PANEL)
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    kind = "ddpm"

    def __post_init__(self):
        self.alphas_cumprod = schedules.alphas_cumprod(
            schedules.ddpm_betas(self.schedule, self.num_steps, self.beta_start, self.beta_end))
        self.sigmas = schedules.sigma_from_alpha_bar(self.alphas_cumprod)  # sigma_t for t = 0..T-1 (step t+1)
        self._log_sigmas = self.sigmas.log()

    def to_config(self):
        return {"class_name": class_path(type(self)), "kind": self.kind, "schedule": self.schedule, "num_steps": self.num_steps,
                "beta_start": self.beta_start, "beta_end": self.beta_end}

    def sample_t(self, batch, generator=None, device=None):
        # t ~ U{1..T}, returned as sigma_t
        idx = torch.randint(0, self.num_steps, (batch,), generator=generator, device=device)
        return self.sigmas.to(device=device, dtype=torch.float32)[idx]

    def degrade(self, x0, t, generator=None):
        return x0 + per_sample(t, x0) * _randn_like(x0, generator)

    def loss_weight(self, t):
        return 1 / t**2

    def sigma_to_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous step index t(sigma): linear interpolation of log sigma between the discrete steps."""
        log_sigmas = self._log_sigmas.to(sigma.device)
        log_s = sigma.double().log().clamp(log_sigmas[0], log_sigmas[-1])
        hi = torch.searchsorted(log_sigmas, log_s).clamp(1, self.num_steps - 1)
        lo = hi - 1
        w = (log_s - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return (lo + w).to(sigma.dtype)

    def precondition(self, t):
        c_skip = torch.ones_like(t)
        c_out = -t
        c_in = 1 / (t**2 + 1).sqrt()
        return c_skip, c_out, c_in, self.sigma_to_index(t)  # step indices: already in TIME_UNITS

    @property
    def sigma_min(self):
        return float(self.sigmas[0])

    @property
    def sigma_max(self):
        return float(self.sigmas[-1])

    def discrete_sigmas(self, num=None):
        return self.sigmas

    def sampling_grid(self, sampler, steps, schedule="auto", rho=7.0):
        """``auto``: the model's own discrete steps, evenly spaced (DDIM), for ddim / ddpm; Karras sigmas otherwise."""
        from . import schedulers

        if schedulers.is_scheduler(sampler):
            return super().sampling_grid(sampler, steps, schedule, rho)
        if schedule == "auto":
            schedule = "uniform" if sampler in ("ddim", "ddpm") else "karras"
        if schedule == "uniform":
            return schedules.spaced_sigmas(self.sigmas, steps)
        if schedule != "karras":
            raise KakusanError(f"unknown schedule {schedule!r}: choose auto, karras or uniform")
        return schedules.karras_sigmas(steps, self.sigma_min, self.sigma_max, rho)


class OneStep(ForwardProcess):
    """A one-step generator distilled from a Gaussian process (Diffusion2GAN): G(z, c) = D(sigma_max z; sigma_max, c),
    the base process's preconditioned network called once at its largest noise level. It samples with exactly one
    network evaluation — the Euler step from sigma_max to 0, x = D(x_T) — and refuses multi-step samplers."""

    kind = "one-step"
    default_sampler = "onestep"
    trainable = False  # made by distillation (`kakusan distill train`), not by denoiser training

    def __init__(self, base: ForwardProcess | dict):
        self.base = process_from_config(base) if isinstance(base, dict) else base
        self.sigma_max = float(self.base.sampling_grid("heun", 1)[0])  # the base's largest noise level

    def sample_t(self, batch, generator=None, device=None):
        return torch.full((batch,), self.sigma_max, device=device)

    def degrade(self, x0, t, generator=None):
        return self.base.degrade(x0, t, generator)

    def loss_weight(self, t):
        return torch.ones_like(t)

    def precondition(self, t):
        return self.base.precondition(t)

    def sampler(self, name, steps=1, schedule="auto"):
        from .samplers import sample_euler

        if name not in ("onestep", "euler"):
            raise KakusanError(f"a one-step model samples with one network evaluation (sampler 'onestep'), not {name!r}")
        return sample_euler

    def sampling_grid(self, sampler, steps, schedule="auto", rho=7.0):
        """[sigma_max, 0] whatever the number of steps asked for."""
        return torch.tensor([self.sigma_max, 0.0], dtype=torch.float64)

    def to_config(self):
        return {"class_name": class_path(type(self)), "kind": self.kind, "base": self.base.to_config()}


# Every process by the name a user gives (``kakusan train --process``), as the class to import: a catalogue of names,
# not a registry that fills as modules are imported. A model folder's config names its class itself (``class_name``);
# this table also reads folders written before it did.
PROCESSES = {
    "edm": "kakusan.diffusion.process:EDMProcess",
    "ddpm": "kakusan.diffusion.process:DDPMProcess",
    "one-step": "kakusan.diffusion.process:OneStep",
    **{kind: f"kakusan.cold.degradations:{kind.capitalize()}"
       for kind in ("blur", "pixelate", "mask", "desaturate", "snow", "mix", "noise")},
}


def process_class(kind: str, class_name: str | None = None) -> type:
    """The :class:`ForwardProcess` class a config names (``class_name``), or the one called ``kind``."""
    if class_name is None and kind not in PROCESSES:
        raise KakusanError(f"unknown process {kind!r}; known: {', '.join(PROCESSES)}")
    try:
        cls = import_class(class_name or PROCESSES[kind], ForwardProcess)
    except ValueError as e:
        raise KakusanError(str(e)) from None
    if cls.kind != kind:
        raise KakusanError(f"process class {class_name} is {cls.kind!r}, but the config says {kind!r}")
    return cls


def process_from_config(config: dict) -> ForwardProcess:
    """The process a model folder's config describes (``class_name`` is imported; ``kind`` is checked against it)."""
    config = dict(config)
    cls = process_class(config.pop("kind", None), config.pop("class_name", None))
    return from_dict(cls, config)
