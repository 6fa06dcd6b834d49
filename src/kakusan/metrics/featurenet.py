"""The evaluation network for the built-in MNIST: a small CNN classifier whose penultimate layer (128-d) plays the
role Inception-v3's pool features play for FID on ImageNet (no Inception weights can be downloaded here).

Trained by ``kakusan metrics train-featurenet`` on a fixed, class-balanced split of the 5,000 MNIST images
(4,000 train / 1,000 held out, :func:`mnist_split`), with random affine augmentation.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import KakusanError
from ..data import load_dataset, mnist_split
from ..utils import io

SHIPPED = Path(__file__).resolve().parent.parent / "zoo" / "featurenet-mnist"
WEIGHTS_FILE = "featurenet.safetensors"
CARD_FILE = "card.json"


class FeatureNet(nn.Module):
    """conv-conv-pool ×2, a 128-d feature layer, a linear classifier. Input (N, 1, 32, 32) in [-1, 1]."""

    num_features = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))
        self.body = nn.Sequential(block(1, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(128, self.num_features), nn.ReLU())
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random rotation (±12°), scale (0.9–1.1) and translation (±2.5 px) by one affine warp per image."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(12)
    scale = 1 + (torch.rand(n, generator=g) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (2.5 / 16)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # pad with background (-1)


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    net.eval()
    pred = torch.cat([net(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return float((pred == labels).float().mean())


def train_featurenet(out: str | Path, *, seed: int = 0, epochs: int = 30, batch_size: int = 128, lr: float = 2e-3,
                     progress: bool = True) -> dict:
    """Train on the 4,000-image split, report held-out accuracy; write weights + card into ``out``."""
    torch.manual_seed(seed)
    data = load_dataset("mnist")
    train_idx, held_idx = mnist_split(seed)
    x, y = data.images[train_idx], data.labels[train_idx]
    net = FeatureNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    bar = tqdm(total=steps, desc="featurenet", disable=not progress)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            b = perm[i:i + batch_size]
            loss = F.cross_entropy(net(augment(x[b], g)), y[b], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    held_acc = accuracy(net, data.images[held_idx], data.labels[held_idx])
    card = {"command": f"kakusan metrics train-featurenet --out {out} --seed {seed} --epochs {epochs}",
            "seed": seed, "epochs": epochs, "split": f"mnist_split(seed={seed}): 4000 train / 1000 held out",
            "held_out_accuracy": round(held_acc, 4), "train_accuracy": round(accuracy(net, x, y), 4),
            "wall_s": round(time.time() - t0, 1), "features": FeatureNet.num_features}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    io.save_tensors(net.state_dict(), out / WEIGHTS_FILE)
    io.write_json(card, out / CARD_FILE)
    return card


def load_featurenet(path: str | Path | None = None) -> FeatureNet:
    """The shipped evaluation network (or one at ``path``), in eval mode."""
    folder = Path(path) if path else SHIPPED
    if not (folder / WEIGHTS_FILE).is_file():
        raise KakusanError(f"no evaluation network at {folder} (train one: kakusan metrics train-featurenet)")
    net = FeatureNet()
    net.load_state_dict(io.load_tensors(folder / WEIGHTS_FILE))
    return net.eval()
