"""Figure of the 2-D toy in the layout of Karras et al. 2024, Fig. 1: samples over the 99%-mass contour."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..utils import io  # noqa: E402
from .tree import Tree  # noqa: E402


def plot_toy(tree: Tree, threshold: float, panels: dict[str, torch.Tensor], path: Path,
             center=(0.3, 0.3), half=1.2, max_points: int = 8000) -> Path:
    lin = torch.linspace(-half, half, 300, dtype=torch.float64)
    gx, gy = torch.meshgrid(lin + center[0], lin + center[1], indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    logp = torch.cat([tree.mixture.log_prob(c) for c in grid.split(10_000)]).reshape(gx.shape)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2), dpi=110)
    for ax, (title, x) in zip(axes, panels.items()):
        x = x[:max_points].numpy()
        ax.contourf(gx, gy, logp, levels=[threshold, logp.max().item() + 1], colors=["#e8eef8"])
        ax.contour(gx, gy, logp, levels=[threshold], colors=["#5577aa"], linewidths=0.6)
        ax.scatter(x[:, 0], x[:, 1], s=0.6, c="#c0392b", alpha=0.5, linewidths=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(center[0] - half, center[0] + half)
        ax.set_ylim(center[1] - half, center[1] + half)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("class A of the fractal-tree mixture: samples (red) over the 99%-mass region (blue)", fontsize=10)
    fig.tight_layout()
    io.write_figure(fig, path)
    plt.close(fig)
    return Path(path)
