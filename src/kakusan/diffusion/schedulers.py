"""Any diffusers scheduler over any kakusan denoiser.

A diffusers scheduler drives an eps-network in its own coordinates x_s: ``scale_model_input(x_s, t)`` is always the
VP-scaled network input x_VP = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (VE-style schedulers such as Euler keep
x_s = x_VP / sqrt(abar_t) and divide in ``scale_model_input``; VP-style ones such as DDIM, DPM-Solver or UniPC keep
x_s = x_VP). kakusan's denoiser lives in the sigma view x = x_VP / sqrt(abar_t), sigma_t = sqrt((1 - abar_t) / abar_t)
(Karras et al. 2022, Table 1 "VP"), and eps is the same in both views. One step of the bridge is therefore

    x = scale_model_input(x_s, t) * sqrt(1 + sigma_t^2),   eps = (x - D(x; sigma_t)) / sigma_t,   x_s <- step(eps, t, x_s)

— exactly a diffusers pipeline's loop with D in place of the eps-network. The scheduler's training schedule is the
process's own (:meth:`discrete_sigmas`): a DDPM model's betas, or for an EDM model 1000 steps whose sigmas run
geometrically from sigma_min to sigma_max. The sigma of a fractional timestep (Karras or exponential spacings) is
linear in log sigma between neighbouring steps, the inverse of diffusers' own sigma -> t map.
"""
from __future__ import annotations

import inspect
import math
from functools import partial

import torch
from tqdm.auto import tqdm

from .. import KakusanError

PREFIX = "diffusers:"
ALIASES = {"unipc": "UniPCMultistepScheduler"}  # short sampler names served by a diffusers scheduler
SPACINGS = {"karras": {"use_karras_sigmas": True}, "exponential": {"use_exponential_sigmas": True},
            "uniform": {"timestep_spacing": "trailing"}, "auto": {"timestep_spacing": "trailing"}}


def is_scheduler(name: str) -> bool:
    return name in ALIASES or name.startswith(PREFIX)


def scheduler_class(name: str):
    """The diffusers scheduler class of a sampler name ('unipc' or 'diffusers:<ClassName>')."""
    import diffusers

    cls_name = ALIASES.get(name, name[len(PREFIX):])
    cls = getattr(diffusers, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, diffusers.SchedulerMixin)):
        raise KakusanError(f"{cls_name!r} is not a diffusers scheduler (e.g. UniPCMultistepScheduler, "
                           "DPMSolverMultistepScheduler, EulerDiscreteScheduler, DEISMultistepScheduler)")
    return cls


def betas_of(sigmas: torch.Tensor) -> torch.Tensor:
    """beta_t of the discrete VP schedule with sigma_t (t = 0..T-1): abar_t = 1 / (1 + sigma_t^2),
    beta_t = 1 - abar_t / abar_{t-1}."""
    abar = 1 / (1 + sigmas.double() ** 2)
    return 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])


def make_scheduler(process, name: str, steps: int, schedule: str = "auto", **options):
    """A fresh diffusers scheduler for ``process`` with ``steps`` inference steps and the spacing ``schedule``
    (``options``: further constructor arguments, e.g. solver_order)."""
    cls = scheduler_class(name)
    takes = set(inspect.signature(cls.__init__).parameters)
    if schedule not in SPACINGS:
        raise KakusanError(f"unknown schedule {schedule!r} for a diffusers scheduler: choose "
                           f"{', '.join(SPACINGS)}")
    spacing = {k: v for k, v in SPACINGS[schedule].items() if k in takes}
    if len(spacing) < len(SPACINGS[schedule]) and schedule != "auto":
        raise KakusanError(f"{cls.__name__} has no {schedule} spacing")
    sigmas = process.discrete_sigmas()
    config = {"num_train_timesteps": len(sigmas), "trained_betas": betas_of(sigmas).tolist(),
              "prediction_type": "epsilon", **spacing, **options}
    for key, value in {"clip_sample": False, "thresholding": False, "set_alpha_to_one": True}.items():
        if key in takes:
            config[key] = value
    scheduler = cls(**{k: v for k, v in config.items() if k in takes})
    scheduler.set_timesteps(steps)
    return scheduler


def timestep_sigma(scheduler, t) -> float:
    """sigma of (possibly fractional) timestep t in the scheduler's training schedule (linear in log sigma)."""
    abar = scheduler.alphas_cumprod.double()
    log_sigma = (((1 - abar) / abar).sqrt()).log()
    t = min(max(float(t), 0.0), len(abar) - 1.0)
    lo = min(int(math.floor(t)), len(abar) - 2)
    w = t - lo
    return math.exp((1 - w) * float(log_sigma[lo]) + w * float(log_sigma[lo + 1]))


def call_sigmas(scheduler) -> list[float]:
    """The sigma of each network call: the scheduler's own ``sigmas`` where it keeps one per timestep (its update
    uses them; with Karras spacing its timesteps are rounded), else that of each timestep."""
    own = getattr(scheduler, "sigmas", None)
    if own is not None and len(own) == len(scheduler.timesteps) + 1:
        return [float(s) for s in own[:-1]]
    return [timestep_sigma(scheduler, t) for t in scheduler.timesteps]


def scheduler_grid(scheduler) -> torch.Tensor:
    """The sigma of every network call of the scheduler, with a final 0 (its length - 1 is the NFE)."""
    return torch.tensor(call_sigmas(scheduler) + [0.0], dtype=torch.float64)


def sample_scheduler(denoise, x: torch.Tensor, sigmas: torch.Tensor, *, make, noise=None, callback=None,
                     progress: bool = False) -> torch.Tensor:
    """Sample with a diffusers scheduler (module docstring). ``x`` = sigmas[0] n as for every kakusan sampler; the
    scheduler starts from its own x_T = init_noise_sigma n. ``make()`` builds a fresh scheduler (they keep state);
    ancestral schedulers draw their noise from ``noise``'s per-sample generators, so a seed's image does not depend
    on the batch."""
    scheduler = make()
    x_s = x / float(sigmas[0]) * float(scheduler.init_noise_sigma)
    extra = {}
    if "generator" in inspect.signature(scheduler.step).parameters and hasattr(noise, "generators"):
        extra["generator"] = noise.generators
    steps, sigmas = scheduler.timesteps, call_sigmas(scheduler)
    for i, t in enumerate(tqdm(steps, desc=type(scheduler).__name__, leave=False) if progress else steps):
        sigma = sigmas[i]
        x_ve = scheduler.scale_model_input(x_s, t) * math.sqrt(1 + sigma**2)
        x0_hat = denoise(x_ve, x_ve.new_tensor(sigma))
        eps = (x_ve - x0_hat) / sigma
        x_s = scheduler.step(eps, t, x_s, **extra).prev_sample
        if callback:
            callback(i, x_s, x0_hat, sigma)
    return x_s


def scheduler_sampler(process, name: str, steps: int, schedule: str = "auto"):
    """The sampler function ``(denoise, x, sigmas, ...)`` of a diffusers scheduler for ``process``."""
    make_scheduler(process, name, steps, schedule)  # fail now on a bad name or spacing
    return partial(sample_scheduler, make=partial(make_scheduler, process, name, steps, schedule))


def steps_for_nfe(name: str, nfe: int) -> int:
    """Inference steps that spend about ``nfe`` network calls (second-order schedulers call twice per step)."""
    return (nfe + 1) // 2 if getattr(scheduler_class(name), "order", 1) == 2 else nfe
