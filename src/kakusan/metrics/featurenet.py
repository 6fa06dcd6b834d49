"""The evaluation network for the built-in MNIST: a small CNN classifier whose penultimate layer (128-d) plays the
role Inception-v3's pool features play for FID on ImageNet (no Inception weights can be downloaded here).

Trained by ``kakusan metrics train-judge featurenet-mnist`` (on the generic training loop) on a fixed,
class-balanced split of the 5,000 MNIST images (4,000 train / 1,000 held out, :func:`mnist_split`), with random affine
augmentation. It is one judge of the panel (:mod:`.judges`); :func:`train_classifier` trains the panel's others too.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import KakusanError
from ..data import load_dataset, mnist_split
from ..train import LoopConfig, Objective, TrainLoop
from ..train.checkpoint import has_checkpoint
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
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    net.eval()
    pred = torch.cat([net(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return float((pred == labels).float().mean())


class ClassifierObjective(Objective):
    """A network fitted on augmented digits with AdamW and a one-cycle learning rate (and momentum) schedule (Smith &
    Topin 2019) over the whole run; saved as ``weights_file``. ``task='classify'``: ``net(x) -> logits``,
    cross-entropy with label smoothing; ``task='reconstruct'``: ``net(x) -> x_hat`` (an autoencoder), mean squared
    error against the augmented digit itself (the labels are not used)."""

    def __init__(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, lr: float, total_steps: int,
                 weights_file: str = WEIGHTS_FILE, task: str = "classify"):
        if task not in TASKS:
            raise KakusanError(f"a network's task is one of {TASKS} (got {task!r})")
        self.images, self.labels, self.weights_file, self.task = images, labels, weights_file, task
        self.net = self.forward = net
        self.modules = {"model": self.net}
        self.optimizers = {"model": torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)}
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizers["model"], max_lr=lr,
                                                            total_steps=total_steps)

    def set_learning_rates(self, config, images_seen, step):
        # the schedule is a closed form of the step: set it for this step (also right after a resume)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)")
            self.schedule.last_epoch = step - 1
            self.schedule.step()

    def prepare(self, accel):
        self.forward, self.optimizers["model"] = accel.prepare(self.net, self.optimizers["model"])

    def train_step(self, loop):
        self.forward.train()
        idx = loop.global_batch(len(self.images))
        device = loop.accel.device
        x, labels = loop.share(augment(self.images[idx], loop.cpu_generator), self.labels[idx])  # drawn on the CPU
        x, labels = x.to(device), labels.to(device)
        if self.task == "classify":
            loss = F.cross_entropy(self.forward(x), labels, label_smoothing=0.05)
        else:
            loss = F.mse_loss(self.forward(x), x)
        loop.optimize("model", loss, self.forward.parameters())
        return {"loss": loss.item()}

    def write_model(self, folder, ema_weights, raw=True, info=None):
        io.save_tensors(self.net.state_dict(), Path(folder) / self.weights_file)

    def read_model_weights(self, folder, which):
        return io.load_tensors(Path(folder) / self.weights_file)


TASKS = ("classify", "reconstruct")


@torch.no_grad()
def reconstruction_mse(net: nn.Module, images: torch.Tensor, batch: int = 500) -> float:
    net.eval()
    return float(torch.cat([(net(images[i:i + batch]) - images[i:i + batch]).square().flatten(1).mean(1)
                            for i in range(0, len(images), batch)]).mean())


def train_classifier(make_net, out: str | Path, *, weights_file: str, command: str, seed: int = 0, epochs: int = 30,
                     batch_size: int = 128, lr: float = 2e-3, progress: bool = True, task: str = "classify",
                     split_seed: int | None = None) -> dict:
    """Train ``make_net()`` on the 4,000 training images of ``mnist_split(split_seed)`` (default: ``seed``) on the
    generic loop (run folder ``out/run``, resumable), report its held-out accuracy (or, for ``task='reconstruct'``,
    its held-out reconstruction error); write ``weights_file`` + card into ``out``."""
    out = Path(out)
    if (out / weights_file).exists():
        raise KakusanError(f"{out} already holds a trained network; choose another output folder")
    split_seed = seed if split_seed is None else split_seed
    torch.manual_seed(seed)
    data = load_dataset("mnist")
    train_idx, held_idx = mnist_split(split_seed)
    x, y = data.images[train_idx], data.labels[train_idx]
    kimg = epochs * len(x) / 1000
    config = LoopConfig(batch_size=batch_size, kimg=kimg, lr=lr, warmup_kimg=0, grad_clip=0, ema_stds=[], seed=seed,
                        checkpoint_kimg=kimg / 5, sample_kimg=2 * kimg, log_kimg=len(x) / 1000)
    objective = ClassifierObjective(make_net(), x, y, lr=lr, total_steps=math.ceil(kimg * 1000 / batch_size),
                                    weights_file=weights_file, task=task)
    t0 = time.time()
    TrainLoop(objective, config, out / "run", progress=progress,
              resume=has_checkpoint(out / "run" / "checkpoint")).train()
    net = objective.net.cpu()
    held = data.images[held_idx]
    if task == "classify":
        quality = {"held_out_accuracy": round(accuracy(net, held, data.labels[held_idx]), 4),
                   "train_accuracy": round(accuracy(net, x, y), 4)}
    else:
        quality = {"held_out_reconstruction_mse": round(reconstruction_mse(net, held), 5),
                   "train_reconstruction_mse": round(reconstruction_mse(net, x), 5)}
    card = {"command": command, "seed": seed, "epochs": epochs,
            "split": f"mnist_split(seed={split_seed}): 4000 train / 1000 held out", **quality,
            "wall_s": round(time.time() - t0, 1), "parameters": sum(p.numel() for p in net.parameters())}
    io.save_tensors(net.state_dict(), out / weights_file)
    io.write_json(card, out / CARD_FILE)
    return card


def load_trained(net: nn.Module, folder: Path, weights_file: str, how_to_train: str) -> nn.Module:
    """``net`` with the weights of a folder written by :func:`train_classifier`, in eval mode."""
    if not (folder / weights_file).is_file():
        raise KakusanError(f"no trained network at {folder} (train one: {how_to_train})")
    net.load_state_dict(io.load_tensors(folder / weights_file))
    return net.eval()


def load_featurenet(path: str | Path | None = None) -> FeatureNet:
    """The shipped evaluation network (or one at ``path``), in eval mode."""
    return load_trained(FeatureNet(), Path(path) if path else SHIPPED, WEIGHTS_FILE,
                        "kakusan metrics train-judge featurenet-mnist")
