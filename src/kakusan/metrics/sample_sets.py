"""Scoring a set of samples (a .npz, a ``kakusan sample`` folder or PNGs) against a reference set under one judge or
the whole panel: the task behind ``kakusan eval`` and ``kakusan compare``."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import KakusanError
from ..data import load_dataset, load_image_set
from .judges import DEFAULT, load_judge, load_panel
from .panel import compare_sets, panel_scores
from .scores import evaluate


def reference_images(ref: str, like: torch.Tensor, channels: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The real images (and labels) of a built-in data set at the samples' size, or of an image folder / .npz."""
    if ref in ("mnist", "digits"):
        data = load_dataset(ref, image_size=like.shape[-1], channels=channels or like.shape[1])
        return data.images, data.labels
    return load_image_set(ref, channels)


def evaluate_samples(samples: str | Path, ref: str = "mnist", *, n: int | None = None, judge: str = DEFAULT,
                     weights: str | Path | None = None, seed: int = 0, reference: str = "split") -> dict:
    """FD, KID, precision/recall (and class accuracy when the samples carry labels) under one judge against ``ref``
    (a built-in data set or an image folder / .npz) — a disjoint half of it or all of it (``reference``, see
    :func:`kakusan.metrics.scores.reference_sets`) — with the real-vs-real floor."""
    j = load_judge(judge, weights)
    images, labels = load_image_set(samples, j.channels)
    real, real_labels = reference_images(ref, images, j.channels)
    result = evaluate(j.net, images, real, labels, n=n, seed=seed, reference=reference, real_labels=real_labels)
    return {"samples": str(samples), "ref": str(ref), "judge": j.name, **result}


def panel_samples(samples: str | Path, ref: str = "mnist", *, judges=None, weights: str | Path | None = None,
                  n: int | None = None, seed: int = 0, reference: str = "split", bootstrap: int = 100,
                  spread: str = "auto") -> list[dict]:
    """One row per judge (:func:`kakusan.metrics.panel.panel_scores`) for a sample set on disk."""
    panel = load_panel(judges, weights)
    channels = {j.channels for j in panel} - {None}
    if len(channels) > 1:
        raise KakusanError("judges that read 1 and 3 channels cannot score one set together; evaluate them apart")
    images, labels = load_image_set(samples, channels.pop() if channels else None)
    real, real_labels = reference_images(ref, images, images.shape[1])
    return panel_scores(panel, images, real, labels, n=n, seed=seed, bootstrap=bootstrap, reference=reference,
                        real_labels=real_labels, spread=spread)


def compare_samples(named: dict[str, str | Path], ref: str = "mnist", *, judges=None, n: int | None = None,
                    seed: int = 0, bootstrap: int = 100, reference: str = "all", spread: str = "both",
                    beyond: float = 1.0) -> dict:
    """:func:`kakusan.metrics.panel.compare_sets` on sample sets on disk (the first ``n`` of each)."""
    panel = load_panel(judges)
    sets = {}
    for name, path in named.items():
        images, labels = load_image_set(path, 1)
        sets[name] = (images[:n], labels[:n] if labels is not None else None)
    first = next(iter(sets.values()))[0]
    real, real_labels = reference_images(ref, first, 1)
    return compare_sets(panel, sets, real, real_labels=real_labels, seed=seed, bootstrap=bootstrap,
                        reference=reference, spread=spread, beyond=beyond)
