"""Scoring a set of samples (a .npz, a ``kakusan sample`` folder or PNGs) against a reference set: the task behind
``kakusan eval``."""
from __future__ import annotations

from pathlib import Path

from .. import KakusanError
from ..data import load_dataset, load_image_set
from .featurenet import load_featurenet
from .inception import InceptionFeatures
from .scores import evaluate


def evaluate_samples(samples: str | Path, ref: str = "mnist", *, n: int | None = None, feature_net: str = "mnist",
                     weights: str | Path | None = None, seed: int = 0, reference: str = "split") -> dict:
    """FD, KID, precision/recall (and class accuracy when the samples carry labels) against ``ref`` (a built-in data
    set or an image folder / .npz) — a disjoint half of it or all of it (``reference``, see
    :func:`kakusan.metrics.scores.reference_sets`) — with the real-vs-real floor."""
    if feature_net == "mnist":
        net, channels = load_featurenet(weights), 1
    elif feature_net == "inception":
        net, channels = InceptionFeatures(weights), 3
    else:
        raise KakusanError(f"unknown feature net {feature_net!r}: choose mnist or inception")
    images, labels = load_image_set(samples, channels)
    if ref in ("mnist", "digits"):
        data = load_dataset(ref, image_size=images.shape[-1], channels=channels)
        real, real_labels = data.images, data.labels
    else:
        real, real_labels = load_image_set(ref, channels)
    result = evaluate(net, images, real, labels, n=n, seed=seed, reference=reference, real_labels=real_labels)
    return {"samples": str(samples), "ref": str(ref), "feature_net": feature_net, **result}
