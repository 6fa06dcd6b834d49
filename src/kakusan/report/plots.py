"""Matplotlib figures (headless)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss(metrics_jsonl: str | Path, out_png: str | Path) -> Path | None:
    """Training loss (and its running mean) against thousands of images seen."""
    if not Path(metrics_jsonl).is_file():
        return None
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    kimg = [r["kimg"] for r in rows]
    loss = [r["loss"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(kimg, loss, lw=0.8, alpha=0.5, label="loss")
    k = max(1, len(loss) // 20)
    smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
    ax.plot(kimg, smooth, lw=1.5, label=f"running mean ({k})")
    ax.set_xlabel("thousands of images seen")
    ax.set_ylabel("weighted denoising loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
