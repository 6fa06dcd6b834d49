"""Digit scenes: 2-4 MNIST digits on a larger canvas, with a token sentence naming them and ground-truth segments —
the testbed of training-free segmentation (EmerDiff, Namekata et al. 2024), where ground truth exists.

Scene i of ``(pool, seed)``: k ~ U{2, 3, 4} of the four cells of a 2 x 2 grid over the canvas; in each chosen cell
(reading order) one digit of the pool, cropped to MNIST's 20 x 20 box, resized to a random side in [1/3, 11/24] of
the canvas and placed at a random offset inside its cell, so digits never overlap; background -1. Ground truth:
segment 0 is the background, segment j (1..k) the strokes (value > 0) of the j-th digit. Condition: the sentence
``[<bos>, word(d_1), ..., word(d_k)]`` padded with the null token to 1 + 4 tokens (:mod:`kakusan.data.tokens`).
Scenes come from one generator in order, so scene i is the same whatever the number of scenes asked for.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .imageset import ImageDataset
from .tokens import sentence_classes, sentence_ids

MAX_DIGITS = 4
SCENE_TOKENS = 1 + MAX_DIGITS
DEFAULT_CANVAS = 48
BOX = slice(6, 26)  # MNIST's 20 x 20 digit box inside the 32 x 32 padded digit


def make_scenes(pool: ImageDataset, n: int, seed: int, canvas: int = DEFAULT_CANVAS) -> ImageDataset:
    """``n`` scenes of digits drawn from ``pool`` (32 x 32 MNIST digits with labels)."""
    g = torch.Generator().manual_seed(seed)
    cell = canvas // 2
    lo, hi = round(canvas / 3), round(canvas * 11 / 24)
    digits = pool.images[:, :1, BOX, BOX]
    images = torch.full((n, 1, canvas, canvas), -1.0)
    segments = torch.zeros((n, canvas, canvas), dtype=torch.uint8)
    tokens = torch.zeros((n, SCENE_TOKENS), dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(2, MAX_DIGITS + 1, (1,), generator=g))
        cells = torch.randperm(4, generator=g)[:k].sort().values.tolist()
        picks = torch.randint(len(pool), (k,), generator=g).tolist()
        sizes = torch.randint(lo, hi + 1, (k,), generator=g).tolist()
        for j, (c, p, s) in enumerate(zip(cells, picks, sizes)):
            digit = F.interpolate(digits[p:p + 1], size=(s, s), mode="bilinear", antialias=True,
                                  align_corners=False)[0].clamp(-1, 1)
            top = (c // 2) * cell + int(torch.randint(0, cell - s + 1, (1,), generator=g))
            left = (c % 2) * cell + int(torch.randint(0, cell - s + 1, (1,), generator=g))
            images[i, :, top:top + s, left:left + s] = digit
            segments[i, top:top + s, left:left + s][digit[0] > 0] = j + 1
        tokens[i] = torch.tensor(sentence_ids([int(pool.labels[p]) for p in picks], SCENE_TOKENS))
    return ImageDataset(f"digit-scenes-{canvas}", images, None, [str(k) for k in range(10)], tokens=tokens,
                        segments=segments)


def scene_words(tokens: torch.Tensor) -> list[str]:
    """The digits a scene's sentence names, e.g. ``['3', '7']``."""
    return [str(c) for c in sentence_classes(tokens)]
