"""The in-memory data set every loader returns: images in [-1, 1] with optional labels, token sentences and
ground-truth segments."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageDataset:
    name: str
    images: torch.Tensor  # (N, C, H, W) float32 in [-1, 1]
    labels: torch.Tensor | None = None  # (N,) int64
    class_names: list[str] = field(default_factory=list)
    tokens: torch.Tensor | None = None  # (N, L) int64: a token sentence per image (its condition), if not its label
    segments: torch.Tensor | None = None  # (N, H, W) uint8: ground-truth segment ids, where a data set knows them

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
