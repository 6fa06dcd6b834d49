"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 3.2 and
App. C.3): choose the EMA length after training, from periodic snapshots of a few power-function EMAs.

A power-function EMA of exponent gamma, read at training time t (in images), averages the raw weights theta(tau) with
the profile (EDM2 eq. 1, normalised to unit mass on [0, t])

    p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1),   0 < tau <= t,

so every stored snapshot i (time t_i, exponent gamma_i) is the linear functional <p_i, theta>. A new length sigma_r at
time t_r is approximated by sum_i x_i theta_i, the x that minimise || sum_i x_i p_i - p_r ||^2 in L2[0, inf)
(App. C.3): the normal equations  A x = b  with A_ij = <p_i, p_j>, b_i = <p_i, p_r>, where for two profiles

    <p_a, p_b> = (g_a + 1)(g_b + 1) min(t_a, t_b)^(g_a + g_b + 1) / ((g_a + g_b + 1) t_a^(g_a + 1) t_b^(g_b + 1)).

Only snapshots taken at t_i <= t_r enter (the future is unknown at t_r). Times are divided by t_r and the powers
taken in log space, so long runs and long profiles do not overflow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import KakusanError
from .ema import std_to_gamma


def profile(tau: np.ndarray, t: float, std: float) -> np.ndarray:
    """p_{t,gamma}(tau) of the EMA of relative length ``std`` read at time ``t`` (EDM2 eq. 1, unit mass)."""
    g = std_to_gamma(std)
    tau = np.asarray(tau, dtype=np.float64)
    inside = (tau > 0) & (tau <= t)
    return np.where(inside, (g + 1) * np.exp(g * np.log(np.where(inside, tau, 1.0)) - (g + 1) * np.log(t)), 0.0)


def profile_inner(t_a: float, g_a: float, t_b: float, g_b: float) -> float:
    """<p_a, p_b> = integral of the product of two power profiles (closed form, in log space)."""
    log = (np.log(g_a + 1) + np.log(g_b + 1) + (g_a + g_b + 1) * np.log(min(t_a, t_b))
           - np.log(g_a + g_b + 1) - (g_a + 1) * np.log(t_a) - (g_b + 1) * np.log(t_b))
    return float(np.exp(log))


def _normal_equations(times, stds, t_target: float, std_target: float):
    """(A, b, <p_r, p_r>) of App. C.3 for snapshots (times, stds) and the target profile; times in units of t_target."""
    t = np.asarray(times, dtype=np.float64) / t_target
    g = [std_to_gamma(s) for s in stds]
    g_r = std_to_gamma(std_target)
    A = np.array([[profile_inner(t[i], g[i], t[j], g[j]) for j in range(len(t))] for i in range(len(t))])
    b = np.array([profile_inner(t[i], g[i], 1.0, g_r) for i in range(len(t))])
    return A, b, profile_inner(1.0, g_r, 1.0, g_r)


def solve_coefficients(times, stds, t_target: float, std_target: float) -> np.ndarray:
    """x minimising || sum_i x_i p_{t_i, std_i} - p_{t_target, std_target} ||^2 (App. C.3); zero for snapshots taken
    after ``t_target``."""
    times, stds = np.asarray(times, dtype=np.float64), np.asarray(stds, dtype=np.float64)
    if len(times) != len(stds) or len(times) == 0:
        raise KakusanError("post-hoc EMA needs at least one snapshot (time, length)")
    if not t_target > 0:
        raise KakusanError(f"the target time must be > 0 (got {t_target})")
    use = np.flatnonzero(times <= t_target * (1 + 1e-9))
    if len(use) == 0:
        raise KakusanError(f"no snapshot was taken at or before {t_target:g} images")
    A, b, _ = _normal_equations(times[use], stds[use], t_target, std_target)
    x = np.zeros(len(times))
    x[use] = np.linalg.lstsq(A, b, rcond=None)[0]
    return x


def profile_error(times, stds, x, t_target: float, std_target: float) -> float:
    """Relative L2 error || sum_i x_i p_i - p_r || / || p_r || of a solution (closed form, no quadrature)."""
    A, b, rr = _normal_equations(times, stds, t_target, std_target)
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(max(x @ A @ x - 2 * x @ b + rr, 0.0) / rr))


def combine(states, x) -> dict[str, torch.Tensor]:
    """sum_i x_i theta_i over floating tensors, accumulated in float64 (the coefficients alternate in sign);
    non-floating tensors come from the newest state. ``states`` may be a generator: one set in memory at a time."""
    acc, dtypes, last = {}, {}, None
    for xi, state in zip(x, states):
        for key, v in state.items():
            if v.is_floating_point():
                dtypes[key] = v.dtype
                acc[key] = acc.get(key, torch.zeros(v.shape, dtype=torch.float64)) + float(xi) * v.double()
        last = state
    return {k: acc[k].to(dtypes[k]) if k in acc else v.clone() for k, v in last.items()}


def snapshot_folders(run: str | Path) -> list[tuple[int, Path]]:
    """[(images seen, folder)] of a run's snapshots, oldest first."""
    from ..diffusion.denoiser import Denoiser

    run = Path(run)
    if not run.is_dir():
        raise KakusanError(f"{run} is not a run folder")
    found = []
    for folder in sorted((run / "snapshots").glob("kimg-*")):
        if folder.name.endswith((".staging", ".old")) or not folder.is_dir():
            continue
        _, config = Denoiser.read_config(folder)
        found.append((int(config.get("images_seen") or 0), folder))
    if not found:
        raise KakusanError(f"{run} holds no snapshots (train with --snapshot-every-kimg to keep them for post-hoc EMA)")
    return sorted(found)


def posthoc_ema(run: str | Path, stds, out: str | Path | None = None, at_kimg: float | None = None) -> dict:
    """Reconstruct EMA lengths ``stds`` of a run from its snapshots, at its newest snapshot (or the newest at or
    before ``at_kimg``), into a new model folder ``out`` (default ``RUN/posthoc-<kimg>``): that snapshot's weight
    sets plus one ``ema-<std>`` set per reconstructed length, its default weights unchanged. Written atomically;
    an existing ``out`` is refused."""
    from ..diffusion.denoiser import Denoiser, ema_variant
    from ..utils import io

    stds = [float(s) for s in stds]
    for s in stds:
        std_to_gamma(s)  # a clear error for a length outside (0, sqrt(1/12))
    snaps = snapshot_folders(run)
    if at_kimg is not None:
        spacing = snaps[-1][0] - snaps[-2][0] if len(snaps) > 1 else 0.0
        if at_kimg * 1000 > snaps[-1][0] + spacing + 1e-6:  # past the run's end, not between two snapshots
            raise KakusanError(f"{run}'s snapshots end at {snaps[-1][0] / 1000:g} kimg; it cannot be reconstructed "
                               f"at {at_kimg:g} kimg (train it further with --resume)")
        snaps = [(t, f) for t, f in snaps if t <= at_kimg * 1000 + 1e-6]
        if not snaps:
            raise KakusanError(f"{run} has no snapshot at or before {at_kimg:g} kimg")
    t_target, base = snaps[-1]
    out = Path(out) if out is not None else Path(run) / f"posthoc-{t_target / 1000:06.1f}"
    if out.exists():
        raise KakusanError(f"{out} already exists; choose another --out (nothing was touched)")
    model = Denoiser.from_pretrained(base)
    profiles = []  # (time, std, folder, default variant) of every stored EMA of every snapshot
    for t, folder in snaps:
        _, config = Denoiser.read_config(folder)
        profiles += [(t, s, folder, config["weights"]["default"]) for s in config.get("ema_stds", [])]
    if not profiles:
        raise KakusanError(f"the snapshots of {run} hold no EMA weights (trained with --ema none?)")
    times, lengths = [p[0] for p in profiles], [p[1] for p in profiles]
    coeffs = {s: solve_coefficients(times, lengths, t_target, s) for s in stds}
    read = lambda i: model.read_weights(profiles[i][2], ema_variant(profiles[i][1]), profiles[i][3])  # noqa: E731
    acc = {s: combine((read(i) for i in range(len(profiles)) if coeffs[s][i] != 0),
                      [c for c in coeffs[s] if c != 0]) for s in stds}
    _, base_config = Denoiser.read_config(base)
    sets = {v: model.read_weights(base, v, base_config["weights"]["default"])
            for v in base_config["weights"]["sets"]}
    report = {}
    for s in stds:
        sets[ema_variant(s)] = acc[s]
        report[f"{s:.3f}"] = {"profile_error": round(profile_error(times, lengths, coeffs[s], t_target, s), 6),
                              "sum_coefficients": round(float(coeffs[s].sum()), 6)}
    model.info["posthoc_ema"] = {"target_kimg": t_target / 1000, "snapshots_kimg": sorted({t / 1000 for t in times}),
                                 "stored_lengths": sorted(set(lengths)), "lengths": report}
    staging = io.staging_folder(out)
    model.write_weight_sets(staging, sets, default=base_config["weights"]["default"])
    io.swap_folder(staging, out)
    return {"model": str(out), "target_kimg": t_target / 1000, "snapshots": len(snaps), "lengths": report}
