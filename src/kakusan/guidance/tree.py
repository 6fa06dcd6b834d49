"""The 2-D fractal-tree data of Karras et al. 2024 (Fig. 1, App. C), rebuilt from the paper's description.

Each class is a Gaussian mixture laid out as a binary tree of depth 7 (127 branches); every branch carries 8 elongated
Gaussians along its length, branch lengths and thicknesses shrink by 0.8 per level, and children split off at
angle ± 0.7^depth (with 20% random jitter). Class A grows from angle pi/4, class B from 5 pi/4, from the same origin.
Because each class is an exact mixture, its density and score are known at every noise level (see ``exact``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion.exact import GaussianMixture

ORIGIN = np.array([0.0030, 0.0325])
SCALE = np.array([1.3136, 1.3844])
DEPTH = 7
PER_BRANCH = 8


@dataclass
class Tree:
    mixture: GaussianMixture
    branch: torch.Tensor  # (K,) branch index of every component
    branch_weights: torch.Tensor  # (num_branches,) true probability of each branch

    @property
    def num_branches(self) -> int:
        return len(self.branch_weights)


def _grow(rng: np.random.RandomState, start_angle: float):
    weights, means, covs, branch = [], [], [], []
    stack = [(np.zeros(2), start_angle, 0)]
    while stack:
        pos, angle, d = stack.pop(0)  # breadth-first: branch ids go level by level
        dist = 0.292 * 0.8**d * (1 + 0.2 * rng.randn())
        thick = 0.2 * 0.8**d / dist
        size = SCALE * dist * 0.06
        direction = np.array([np.cos(angle), np.sin(angle)])
        along = np.outer(direction, direction)
        cov = (along + (np.eye(2) - along) * thick**2) * np.outer(size, size)
        for t in np.linspace(0.07, 0.93, PER_BRANCH):
            weights.append(dist * 0.5**d)
            means.append(ORIGIN + (pos + direction * dist * t) * SCALE)
            covs.append(cov)
            branch.append(len(branch) // PER_BRANCH)
        if d + 1 < DEPTH:
            end = pos + direction * dist
            for sign in (-1, 1):
                stack.append((end, angle + sign * 0.7**d * (1 + 0.2 * rng.randn()), d + 1))
    return weights, means, covs, branch


def toy_classes(seed: int = 2) -> dict[str, Tree]:
    """{'A': tree, 'B': tree, 'AB': both classes with equal mass} — 1016 components per class."""
    rng = np.random.RandomState(seed)
    parts = {name: _grow(rng, angle) for name, angle in (("A", np.pi / 4), ("B", 5 * np.pi / 4))}
    trees = {}
    for name, (w, m, c, b) in parts.items():
        trees[name] = _tree(np.array(w) / np.sum(w), m, c, b)
    wa, ma, ca, ba = parts["A"]
    wb, mb, cb, bb = parts["B"]
    nb = max(ba) + 1
    trees["AB"] = _tree(np.concatenate([np.array(wa) / np.sum(wa), np.array(wb) / np.sum(wb)]) / 2,
                        ma + mb, ca + cb, ba + [x + nb for x in bb])
    return trees


def _tree(weights, means, covs, branch) -> Tree:
    mixture = GaussianMixture(weights, np.array(means), np.array(covs))
    branch = torch.tensor(branch)
    branch_weights = torch.zeros(int(branch.max()) + 1, dtype=torch.float64).index_add_(0, branch, mixture.weights)
    return Tree(mixture, branch, branch_weights)
