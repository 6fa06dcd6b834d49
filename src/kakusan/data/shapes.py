"""Shape scenes: a segmentation test where appearance gives neither the boundaries nor the classes away — only shape
does. The testbed of EmerDiff's claim that a diffusion UNet knows *what* is where (Namekata et al., ICLR 2024).

Scene i of ``(n, seed)`` on a ``canvas``-pixel RGB square:
* k ~ U{1..3} objects, each of a class drawn from :data:`SHAPES` (disc, square, triangle, cross, ring, star), at a
  random size (diameter of its bounding disc in [0.3, 0.6] of the canvas), rotation and position (its centre
  anywhere in the middle 80 % of the canvas, so it may be cut by the edge); later objects are painted over earlier
  ones, and a placement that would leave any object with less than half of its area visible is drawn again (up to
  20 times).
* Every region — the background and each object — is filled with its own **smooth random colour field**: a sum of
  three random plane waves (random direction, 0.5-1.5 cycles per canvas, random phase) mapped through a path of three
  colours that is drawn once per scene and shared by all its regions. Colour, intensity and position are therefore
  distributed the same inside and outside every object; a boundary shows only as the place where one smooth field
  jumps to another, and a class only as the outline's shape.
* Rendering is supersampled (``SUPER`` x ``SUPER`` samples a pixel): the image is their mean (anti-aliased) and the
  ground truth their majority — ``segments`` (0 background, j the j-th object of the sentence) and, through the
  sentence, :func:`class_map` (0 background, 1 + c the class c).
* Condition: the sentence ``[<bos>, word(c_1), ..., word(c_k)]`` in painting order, padded to 1 + 3 tokens.

Scenes come from one generator in order, so scene i is the same whatever the number asked for.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .imageset import ImageDataset
from .tokens import sentence_classes, sentence_ids

SHAPES = ("disc", "square", "triangle", "cross", "ring", "star")
MAX_OBJECTS = 3
SHAPE_TOKENS = 1 + MAX_OBJECTS
SUPER = 4
DEFAULT_CANVAS = 32
FREQ = (0.5, 1.5)  # cycles per canvas of the plane waves of a colour field
RADIUS = (0.15, 0.3)  # of an object's bounding disc, in canvas sides


def inside(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Membership of points (u, v) in the object's own frame (unit bounding disc, rotation already applied)."""
    r, a = torch.sqrt(u**2 + v**2), torch.atan2(v, u)
    if shape == "disc":
        return r <= 0.85
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.68
    if shape == "triangle":  # equilateral, vertices on the unit circle: three half-planes at distance 1/2
        return torch.stack([u * math.cos(t) + v * math.sin(t) <= 0.5
                            for t in (math.pi / 2 + k * 2 * math.pi / 3 + math.pi for k in range(3))]).all(0)
    if shape == "cross":
        return ((u.abs() <= 0.28) & (v.abs() <= 0.9)) | ((v.abs() <= 0.28) & (u.abs() <= 0.9))
    if shape == "ring":
        return (r <= 0.9) & (r >= 0.5)
    if shape == "star":  # five points: radius linear in angle between tips (1.0) and notches (0.42)
        w = torch.remainder(a, 2 * math.pi / 5) / (2 * math.pi / 5)  # 0 at a tip, 1 at the next tip
        return r <= 0.42 + 0.58 * (2 * (w - 0.5)).abs()
    raise ValueError(shape)


def placed(shape: str, cy: float, cx: float, radius: float, theta: float, yy: torch.Tensor,
           xx: torch.Tensor) -> torch.Tensor:
    """Membership of the sample points (yy, xx) in a shape of bounding radius ``radius`` centred at (cy, cx) and
    rotated by ``theta`` (all in canvas units)."""
    du, dv = (xx - cx) / radius, (yy - cy) / radius
    return inside(shape, math.cos(theta) * du + math.sin(theta) * dv, -math.sin(theta) * du + math.cos(theta) * dv)


def colour_field(g: torch.Generator, side: int, palette: torch.Tensor) -> torch.Tensor:
    """(3, side, side) smooth random colour field: three random plane waves through the scene's colour path."""
    y, x = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    angle = torch.rand(3, generator=g) * 2 * math.pi
    freq = FREQ[0] + (FREQ[1] - FREQ[0]) * torch.rand(3, generator=g)
    phase = torch.rand(3, generator=g) * 2 * math.pi
    waves = torch.cos(2 * math.pi * freq[:, None, None] * (torch.cos(angle)[:, None, None] * x
                                                           + torch.sin(angle)[:, None, None] * y) + phase[:, None, None])
    f = (waves.mean(0) / 1.2).clamp(-1, 1) * 0.5 + 0.5  # in [0, 1]
    lo = (f < 0.5)[None]
    first = palette[0][:, None, None] + (palette[1] - palette[0])[:, None, None] * (2 * f)[None]
    second = palette[1][:, None, None] + (palette[2] - palette[1])[:, None, None] * (2 * f - 1)[None]
    return torch.where(lo, first, second)


def make_shape_scenes(n: int, seed: int, canvas: int = DEFAULT_CANVAS) -> ImageDataset:
    """``n`` shape scenes (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    hi = canvas * SUPER
    coords = (torch.arange(hi) + 0.5) / hi  # sample centres in [0, 1]
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty((n, 3, canvas, canvas))
    segments = torch.zeros((n, canvas, canvas), dtype=torch.uint8)
    tokens = torch.zeros((n, SHAPE_TOKENS), dtype=torch.long)
    for i in range(n):
        palette = torch.rand(3, 3, generator=g) * 2 - 1
        k = int(torch.randint(1, MAX_OBJECTS + 1, (1,), generator=g))
        classes = torch.randint(len(SHAPES), (k,), generator=g).tolist()
        labels = torch.zeros((hi, hi), dtype=torch.long)
        areas = []  # each placed object's full area (samples)
        for j, c in enumerate(classes):
            for _ in range(20):  # place again while an object would be mostly hidden
                radius = RADIUS[0] + (RADIUS[1] - RADIUS[0]) * float(torch.rand(1, generator=g))
                theta = float(torch.rand(1, generator=g)) * 2 * math.pi
                cy, cx = (0.1 + 0.8 * torch.rand(2, generator=g)).tolist()
                mask = placed(SHAPES[c], cy, cx, radius, theta, yy, xx)
                trial = labels.clone()
                trial[mask] = j + 1
                full = areas + [int(mask.sum())]
                if full[-1] > 0 and all((trial == m + 1).sum() >= 0.5 * a for m, a in enumerate(full)):
                    break
            labels = trial
            areas = full
        hires = torch.empty((3, hi, hi))
        for region in range(k + 1):
            field = colour_field(g, hi, palette)
            sel = labels == region
            hires[:, sel] = field[:, sel]
        images[i] = F.avg_pool2d(hires[None], SUPER)[0]
        votes = F.avg_pool2d(F.one_hot(labels, k + 1).permute(2, 0, 1).float()[None], SUPER)[0]
        segments[i] = votes.argmax(0).to(torch.uint8)
        tokens[i] = torch.tensor(sentence_ids(classes, SHAPE_TOKENS))
    return ImageDataset(f"shape-scenes-{canvas}", images.clamp(-1, 1), None, list(SHAPES), tokens=tokens,
                        segments=segments)


def class_map(tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """(H, W) class ids of one scene: 0 the background, 1 + c where the object of class c lies."""
    lookup = torch.tensor([0] + [1 + c for c in sentence_classes(tokens)])
    return lookup[segments.long()]
