"""The sample report behind ``kakusan report`` and ``make demo``: a class-cycled grid, its metrics beside the
real-vs-real floor, one self-contained HTML page."""
from __future__ import annotations

from pathlib import Path

from ..metrics.sample_sets import evaluate_samples
from ..sampling import sample_to_folder
from .html import write_report


def sample_report(model: str | Path, out: str | Path, *, n: int = 200, nfe: int | None = None, seed: int = 0,
                  ema="auto", progress: bool = True) -> dict:
    """Sample ``n`` class-cycled images (with the model's default sampling: its solver, NFE and grid, see
    :meth:`~kakusan.diffusion.Denoiser.default_sampling`), score them with the shipped evaluation network, write
    report.html."""
    out = Path(out)
    sampled = sample_to_folder(model, out, n=n, nfe=nfe, seed=seed, ema=ema, progress=progress)
    metrics = evaluate_samples(out / "samples.npz", "mnist", n=n, seed=seed)
    details = {"model": str(model), "weights": sampled["weights"],
               "sampler": f"{sampled['sampler']}, {sampled['nfe']} NFE, {sampled['schedule']} grid",
               **({"why this sampler": sampled["sampling_note"]} if sampled["sampling_note"] else {}),
               "samples": n, "sampling seconds": sampled["seconds"], "seeds": f"{seed}..{seed + n - 1}"}
    report = write_report(out / "report.html", f"kakusan — samples of {Path(str(model)).name}", out / "grid.png",
                          metrics, details)
    return {**sampled, "report": str(report), "metrics": metrics}
