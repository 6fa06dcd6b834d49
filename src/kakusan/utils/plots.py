"""Matplotlib figures (headless)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import io  # noqa: E402


def plot_loss(metrics_jsonl: str | Path, out_png: str | Path) -> Path | None:
    """Every logged loss (keys starting with "loss") and its running mean against thousands of images seen."""
    if not Path(metrics_jsonl).is_file():
        return None
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for key in keys:
        kimg = [r["kimg"] for r in rows if key in r]
        loss = [r[key] for r in rows if key in r]
        line, = ax.plot(kimg, loss, lw=0.8, alpha=0.5, label=key)
        k = max(1, len(loss) // 20)
        smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
        ax.plot(kimg, smooth, lw=1.5, color=line.get_color(), label=f"{key}, running mean ({k})")
    ax.set_xlabel("thousands of images seen")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    io.write_figure(fig, out_png)
    plt.close(fig)
    return Path(out_png)
