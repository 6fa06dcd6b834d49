"""Sampling grids optimised for one model, one solver and one NFE, stored with the model (``--schedule optimized``).

In the spirit of "Align Your Steps" (Sabour et al. 2024): with few network evaluations the *grid* — where the N
noise levels sigma_0 > ... > sigma_{N-1} (then 0) sit — decides the result as much as the solver. Karras' grid
(eq. 5) spends its last evaluation at sigma_min = 0.002, where D(x) barely changes x: at 3 NFE a third of the budget.
We choose the grid that minimises the error of the N-NFE solver against a many-step reference solution from the same
x_T, E = mean over seeds of ||x_grid(n) - x_ref(n)||^2 / dim, on a fixed set of class-cycled seeds disjoint from any
evaluation's:

1. a coarse search over Karras grids (eq. 5) with free sigma_min' and rho;
2. Nelder-Mead over all N log-sigmas, parametrised so that they stay decreasing and below sigma_max:
   ln sigma_0 = ln sigma_max - softplus(a_0), ln sigma_i = ln sigma_{i-1} - softplus(a_i).

The model folder's ``solver.json`` holds the grids (``{"grids": {sampler: {nfe: {...}}}}``) and the model's default
sampler, NFE and schedule (``{"default": {...}}``), both optional.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .. import KakusanError
from . import schedules
from .samplers import PerSampleNoise, steps_for_nfe


def softplus(v: float) -> float:
    """ln(1 + e^v), without overflow."""
    return math.log1p(math.exp(-abs(v))) + max(v, 0.0)


def inv_softplus(y: float) -> float:
    return math.log(math.expm1(y)) if y < 30 else y


def grid_from_params(a, sigma_max: float) -> torch.Tensor:
    """The decreasing grid (with a final 0) of the unconstrained parameters ``a`` (module docstring, step 2)."""
    logs, cur = [], math.log(sigma_max)
    for v in a:
        cur -= softplus(float(v))
        logs.append(cur)
    return torch.tensor([math.exp(v) for v in logs] + [0.0], dtype=torch.float64)


def params_from_grid(grid: torch.Tensor, sigma_max: float) -> list[float]:
    """The inverse of :func:`grid_from_params` (the starting point of Nelder-Mead)."""
    logs = [math.log(float(s)) for s in grid[:-1]]
    prev, out = math.log(sigma_max), []
    for v in logs:
        out.append(inv_softplus(max(prev - v, 1e-6)))
        prev = v
    return out


class GridProblem:
    """x_T, conditions and the reference solution of a fixed seed set; ``error(grid)`` runs the solver on ``grid``."""

    def __init__(self, model, sampler: str, *, n: int = 64, seed: int = 1_000_000, reference: tuple[str, int] =
                 ("heun", 35), batch_size: int = 64):
        self.model, self.sampler, self.batch_size = model, sampler, batch_size
        self.run = model.process.sampler(sampler)
        self.seeds = list(range(seed, seed + n))
        labels = torch.arange(n) % model.num_classes if model.cond_type == "class" else None
        self.cond = model.cond_from_labels(labels) if labels is not None else None
        self.unit = PerSampleNoise(self.seeds)(torch.empty(n, *model.image_shape))
        ref_sampler, ref_nfe = reference
        ref_grid = model.process.sampling_grid(ref_sampler, steps_for_nfe(ref_sampler, ref_nfe))
        self.reference = self._solve(model.process.sampler(ref_sampler), ref_grid)
        self.evaluations = 0

    @torch.no_grad()
    def _solve(self, run, grid: torch.Tensor) -> torch.Tensor:
        out = []
        for a in range(0, len(self.seeds), self.batch_size):
            b = a + self.batch_size
            c = None if self.cond is None else self.cond[a:b]
            out.append(run(lambda x, s: self.model(x, s, c), float(grid[0]) * self.unit[a:b], grid))
        return torch.cat(out)

    def error(self, grid: torch.Tensor) -> float:
        self.evaluations += 1
        x = self._solve(self.run, grid)
        return float((x - self.reference).pow(2).mean())


def optimize_grid(problem: GridProblem, nfe: int, *, max_evals: int = 60, progress: bool = True) -> dict:
    """The grid of ``nfe`` network calls that minimises ``problem.error`` (module docstring); returns
    ``{sigmas, error, karras_error, evaluations}`` (karras_error: the default Karras grid's, for comparison)."""
    from scipy.optimize import minimize

    if nfe < 1:
        raise KakusanError(f"nfe must be >= 1 (got {nfe})")
    model, sampler = problem.model, problem.sampler
    steps = steps_for_nfe(sampler, nfe)
    if sampler == "heun" or len(model.process.sampling_grid(sampler, steps)) - 1 != nfe:
        raise KakusanError(f"grids are optimised for one-call-per-step solvers (euler, ddim, dpmpp2m, dpmpp3m), "
                           f"not {sampler!r}")
    hi = model.process.sigma_max
    bar = tqdm(total=max_evals, desc=f"grid {sampler} {nfe} NFE", leave=False, disable=not progress)
    start = problem.evaluations
    default = model.process.sampling_grid(sampler, steps)
    best = {"error": problem.error(default), "sigmas": default}
    karras_error = best["error"]
    bar.update()

    def consider(grid):
        e = problem.error(grid)
        bar.update()
        if e < best["error"]:
            best.update(error=e, sigmas=grid)
        return e

    for last in ([0.02, 0.1, 0.3, 1.0] if nfe > 1 else [1.0, 3.0]):  # 1. Karras grids with free sigma_min', rho
        for rho in (3.0, 7.0):
            consider(schedules.karras_sigmas(nfe, min(last, hi), hi, rho))
    x0 = params_from_grid(best["sigmas"], hi)
    budget = max(0, max_evals - (problem.evaluations - start))
    if budget:  # 2. Nelder-Mead on all log-sigmas
        minimize(lambda a: consider(grid_from_params(a, hi)), x0, method="Nelder-Mead",
                 options={"maxfev": budget, "xatol": 1e-3, "fatol": 1e-7})
    bar.close()
    return {"sigmas": [float(s) for s in best["sigmas"]], "error": best["error"], "karras_error": karras_error,
            "evaluations": problem.evaluations - start}


def store_grids(model_name, sampler: str, nfes: list[int], *, n: int = 64, max_evals: int = 60,
                reference: tuple[str, int] = ("heun", 35), default_nfe: int | None = None, note: str = "",
                ema="auto", progress: bool = True) -> dict:
    """Optimise a grid per NFE for ``sampler`` and merge them into the model folder's solver.json (written
    atomically); ``default_nfe``: also make (sampler, default_nfe, optimized) the model's default sampling."""
    from ..models import model_folder
    from ..utils import io
    from .denoiser import SOLVER_FILE, Denoiser

    if any(k < 1 for k in nfes) or n < 1 or max_evals < 1:
        raise KakusanError("nfe, n and max_evals must be >= 1")
    if default_nfe is not None and default_nfe not in nfes:
        raise KakusanError(f"--default-nfe {default_nfe} is not among the NFEs optimised ({nfes})")
    folder = io.resolve_folder(model_folder(model_name))
    model = Denoiser.from_pretrained(folder, ema=ema)
    if not model.process.score_based:
        raise KakusanError(f"{folder} is a {model.process.kind} model; grids are for Gaussian diffusion models")
    problem = GridProblem(model, sampler, n=n, reference=reference)
    solver = dict(model.solver)
    grids = solver.setdefault("grids", {}).setdefault(sampler, {})
    found = {}
    for k in nfes:
        r = optimize_grid(problem, k, max_evals=max_evals, progress=progress)
        grids[str(k)] = {**r, "n": n, "reference": f"{reference[0]} {reference[1]} NFE", "weights":
                         model.info.get("weights")}
        found[k] = {"error": r["error"], "karras_error": r["karras_error"], "sigmas": r["sigmas"]}
    if default_nfe is not None:
        solver["default"] = {"sampler": sampler, "nfe": default_nfe, "schedule": "optimized", "note": note}
    io.write_json(solver, folder / SOLVER_FILE)
    return {"model": str(folder), "sampler": sampler, "grids": found, "default": solver.get("default")}
