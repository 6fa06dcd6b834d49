"""The judge panel: the feature spaces an FD is measured in, each a shipped folder that answers for itself.

A judge folder holds ``card.json`` — which network to build (``class_name``), its ``kind`` (classifier,
autoencoder, random, pixels), its weights file (none for the pixels) and how it was made: data, split, seed, held-out
accuracy or reconstruction error — and the weights. :func:`load_judge` reads nothing else. The panel
(:data:`PANEL`) is every shipped judge; :mod:`kakusan.metrics.panel` scores and compares sample sets under all of
them, since a claim that holds in one feature space only is not yet a finding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .. import KakusanError
from ..utils import io
from .featurenet import CARD_FILE, FeatureNet, train_classifier
from .inception import InceptionFeatures
from .judge_nets import AutoencoderJudge, PixelJudge, RandomConvJudge, ResNetJudge

ZOO = Path(__file__).resolve().parent.parent / "zoo"
PANEL = ("featurenet-mnist", "resnet-mnist", "autoencoder-mnist", "random-cnn", "pixels")
DEFAULT = "featurenet-mnist"  # the judge of every single-number score (reports, sweeps, benches before the panel)
CLASSES = {"FeatureNet": FeatureNet, "ResNetJudge": ResNetJudge, "AutoencoderJudge": AutoencoderJudge,
           "RandomConvJudge": RandomConvJudge, "PixelJudge": PixelJudge}
JUDGE_WEIGHTS = "judge.safetensors"


@dataclass
class Judge:
    """A feature space for Fréchet distances: ``net.features(x)`` of (N, channels, H, W) images in [-1, 1]
    (``channels`` None: any); a classifier judge's ``net.head`` gives class logits too."""

    name: str
    kind: str
    net: nn.Module
    channels: int | None = 1
    card: dict = field(default_factory=dict)

    @property
    def classifies(self) -> bool:
        return hasattr(self.net, "head")


def judge_folder(name: str | Path) -> Path:
    """A shipped judge's folder by name, or a folder path."""
    folder = ZOO / str(name) if str(name) in PANEL else Path(name)
    if not (folder / CARD_FILE).is_file():
        raise KakusanError(f"unknown judge {str(name)!r}: choose from {', '.join(PANEL)} or inception, or give a "
                           "judge folder (card.json + weights)")
    return folder


def load_judge(name: str | Path = DEFAULT, weights: str | Path | None = None) -> Judge:
    """A judge by name (:data:`PANEL`, or 'inception' with its ``weights`` file) or from a judge folder."""
    if str(name) == "inception":
        return Judge("inception", "classifier", InceptionFeatures(weights).eval(), 3, {"weights": str(weights)})
    folder = judge_folder(Path(weights) if weights else name)
    card = io.read_json(folder / CARD_FILE)
    cls = CLASSES.get(card.get("class_name", ""))
    if cls is None:
        raise KakusanError(f"{folder / CARD_FILE}: class_name must be one of {', '.join(CLASSES)} "
                           f"(got {card.get('class_name')!r})")
    net = cls(**card.get("arguments", {}))
    if card.get("weights"):
        net.load_state_dict(io.load_tensors(folder / card["weights"]))
    name = str(name) if str(name) in PANEL else folder.name
    return Judge(name, card["kind"], net.eval(), card.get("channels", 1), card)


def load_panel(names=None, weights: str | Path | None = None) -> list[Judge]:
    """The judges named (default: the whole panel); ``weights`` only with a single judge."""
    names = list(names or PANEL)
    if weights and len(names) != 1:
        raise KakusanError("--weights names one judge's weights: pick that judge alone with --judge")
    if len(set(names)) < len(names):
        raise KakusanError(f"a judge is named twice: {', '.join(names)}")
    return [load_judge(n, weights) for n in names]


# How each trainable judge of the panel is made: (class, kind, task, split and seed, epochs).
RECIPES = {
    "featurenet-mnist": dict(class_name="FeatureNet", kind="classifier", task="classify", seed=0, epochs=30,
                             about="the evaluation network since kakusan 0.1: conv-conv-pool x3 with BatchNorm, "
                                   "trained with affine augmentation; features: its 128-d penultimate layer"),
    "resnet-mnist": dict(class_name="ResNetJudge", kind="classifier", task="classify", seed=2, epochs=20, half=True,
                         about="a digit classifier of another design than featurenet-mnist (residual, GroupNorm, "
                               "strided), another split and seed; features: the pooled 96-d vector before its head"),
    "autoencoder-mnist": dict(class_name="AutoencoderJudge", kind="autoencoder", task="reconstruct", seed=3,
                              epochs=30, lr=1e-3, half=True,
                              about="a convolutional autoencoder never trained to classify; features: its 64-d code"),
    "random-cnn": dict(class_name="RandomConvJudge", kind="random", seed=0,
                       about="three random (seeded Kaiming) ReLU convolutions, never trained, pooled to 2x2: a "
                             "sanity floor that sees local edge statistics"),
    "pixels": dict(class_name="PixelJudge", kind="pixels",
                   about="the pixels average-pooled to 16x16: the crudest floor"),
}


def _store_half(path: Path) -> None:
    """Rewrite a trained judge's weights in float16 (the zoo's size budget, issue 13): it is loaded back into
    float32 modules, so only the stored weights are rounded (relative 5e-4), never the arithmetic."""
    tensors = io.load_tensors(path)
    io.save_tensors({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, path)


def train_judge(name: str, out: str | Path, *, epochs: int | None = None, progress: bool = True) -> dict:
    """Make the panel judge ``name`` in ``out`` by its recipe (:data:`RECIPES`): train it on its own split of the
    5,000 digits (the evaluation network uses split 0, the distillation's perceptual network split 1), or, for the
    untrained judges, write their fixed weights (or none). Returns the card."""
    if name not in RECIPES:
        raise KakusanError(f"no recipe for judge {name!r}: choose from {', '.join(RECIPES)}")
    recipe, out = RECIPES[name], Path(out)
    if (out / CARD_FILE).exists():
        raise KakusanError(f"{out} already holds a judge; choose another output folder")
    cls = CLASSES[recipe["class_name"]]
    head = {"class_name": recipe["class_name"], "kind": recipe["kind"], "about": recipe["about"], "channels": 1,
            "features": None, "weights": JUDGE_WEIGHTS}
    if "task" in recipe:
        epochs = epochs or recipe["epochs"]
        card = train_classifier(cls, out, weights_file=JUDGE_WEIGHTS, seed=recipe["seed"], epochs=epochs,
                                task=recipe["task"], lr=recipe.get("lr", 2e-3), progress=progress,
                                command=f"kakusan metrics train-judge {name} --out {out} --epochs {epochs}")
        card = head | card
        if recipe.get("half"):
            _store_half(out / JUDGE_WEIGHTS)
            card["weights_dtype"] = "float16"
    else:
        net = cls(**({"seed": recipe["seed"]} if "seed" in recipe else {}))
        card = head | {"command": f"kakusan metrics train-judge {name} --out {out}", "trained": False}
        if "seed" in recipe:
            card["arguments"] = {"seed": recipe["seed"]}
            out.mkdir(parents=True, exist_ok=True)
            io.save_tensors(net.state_dict(), out / JUDGE_WEIGHTS)
        else:
            card["weights"] = None
    card["features"] = cls().num_features if "task" in recipe else net.num_features
    io.write_json(card, out / CARD_FILE)
    return card
