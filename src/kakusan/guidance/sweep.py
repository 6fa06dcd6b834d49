"""Metrics against the guidance weight w for several guides on MNIST (FD, precision, recall, class accuracy), with a
CSV, a plot and the best w of each guide marked. w = 1 (no guidance) is sampled once and shared by all guides."""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import load_dataset
from ..diffusion.denoiser import Denoiser
from ..diffusion.generate import generate
from ..diffusion.samplers import steps_for_nfe
from ..metrics import evaluate, load_featurenet
from .guided import guide_from_spec

FIELDS = ("w", "fd", "precision", "recall", "class_acc")


def guidance_sweep(model, guides: dict[str, str], ws, out: str | Path, *, n: int = 1000, nfe: int = 35,
                   seed: int = 0, ema="auto", guide_ema="auto", interval=None, progress: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main = Denoiser.from_pretrained(model, ema=ema)
    net, real = load_featurenet(), load_dataset("mnist").images
    labels = torch.arange(n) % len(main.info.get("class_names", range(10)))
    steps = steps_for_nfe("heun", nfe)
    cache: dict[float, dict] = {}

    def score(make_denoise) -> dict:
        images = generate(main, range(seed, seed + n), cond=labels, steps=steps, make_denoise=make_denoise,
                          progress=False)
        r = evaluate(net, images, real, labels, seed=seed)
        return {k: r[k] for k in FIELDS[1:]} | {"floor_fd": r["floor"]["fd"]}

    rows = {}
    jobs = [(name, w) for name in guides for w in ws]
    for name, w in tqdm(jobs, desc="guidance sweep", disable=not progress):
        if w == 1:
            cache.setdefault(1.0, score(None))
            r = cache[1.0]
        else:
            r = score(guide_from_spec(main, guides[name], w, interval, guide_ema))
        rows.setdefault(name, []).append({"w": w, **r})
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["guide", *FIELDS, "floor_fd"])
        for name, rs in rows.items():
            for r in rs:
                writer.writerow([name, *(r[k] for k in FIELDS), r["floor_fd"]])
    plot_sweep(rows, out / "sweep.png")
    best = {name: min(rs, key=lambda r: r["fd"])["w"] for name, rs in rows.items()}
    return {"rows": rows, "best_w": best, "csv": str(out / "sweep.csv"), "plot": str(out / "sweep.png"), "n": n}


def plot_sweep(rows: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), dpi=110)
    for ax, key in zip(axes, FIELDS[1:]):
        for name, rs in rows.items():
            ws, vs = [r["w"] for r in rs], [r[key] for r in rs]
            line, = ax.plot(ws, vs, marker="o", label=name)
            if key == "fd":
                b = min(rs, key=lambda r: r["fd"])
                ax.plot([b["w"]], [b["fd"]], marker="*", ms=16, color=line.get_color())
        if key == "fd" and rows:
            floor = next(iter(rows.values()))[0]["floor_fd"]
            ax.axhline(floor, color="gray", ls="--", lw=1, label="real vs real")
            ax.set_yscale("log")
        ax.set_xlabel("guidance weight w")
        ax.set_title(key + (" (best: star)" if key == "fd" else ""))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
