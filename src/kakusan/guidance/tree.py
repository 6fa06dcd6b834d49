"""The 2-D fractal-tree data of Karras et al. 2024 (Fig. 1, App. C).

Each class is a Gaussian mixture laid out as a binary tree of depth 7 (127 branches); every branch carries 8 elongated
Gaussians along its length (at 0.07 ... 0.93 of it), branch lengths shrink by 0.8 per level (0.292 at the trunk, 20%
random jitter), thicknesses by 0.8 relative to the length, and children split off at angle +- 0.7^depth (20% jitter).
Component weights are length x 0.5^depth. Class A grows from angle pi/4, class B from 5 pi/4, from the same origin;
both classes come from one random stream (seed 2), class A first.

Two layouts of that description:
* ``paper`` — the tree of the reference implementation (NVlabs/edm2 ``toy_example.py``), rebuilt from its published
  construction so that numbers set beside the reference run's: depth-first growth, one jitter draw for the branch
  length, then for each child (turning +, then -) one draw for its angle before that child's subtree grows (children
  below the last level draw their angle and grow nothing); the origin is scaled with the tree; the two-class mixture
  keeps the raw weights of both trees (normalised together).
* ``kakusan`` — kakusan's first reading of the paper: breadth-first growth (so other jitter draws), the origin added
  unscaled, the two classes given equal mass.
Because each class is an exact mixture, its density and score are known at every noise level (see ``exact``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import KakusanError
from ..diffusion.exact import GaussianMixture

ORIGIN = np.array([0.0030, 0.0325])
SCALE = np.array([1.3136, 1.3844])
DEPTH = 7
PER_BRANCH = 8
TREES = ("paper", "kakusan")


@dataclass
class Tree:
    mixture: GaussianMixture
    branch: torch.Tensor  # (K,) branch index of every component
    branch_weights: torch.Tensor  # (num_branches,) true probability of each branch

    @property
    def num_branches(self) -> int:
        return len(self.branch_weights)


def _branch(parts: tuple, rng, depth: int, pos, angle: float, offset) -> tuple:
    """Append one branch's 8 components to ``parts`` (weights, means, covariances, branch ids); return its end
    point and length. Means are ``offset + (pos + direction * length * t) * SCALE``."""
    weights, means, covs, branch = parts
    dist = 0.292 * 0.8**depth * (1 + 0.2 * rng.randn())
    thick = 0.2 * 0.8**depth / dist
    size = SCALE * dist * 0.06
    direction = np.array([np.cos(angle), np.sin(angle)])
    along = np.outer(direction, direction)
    cov = (along + (np.eye(2) - along) * thick**2) * np.outer(size, size)
    index = branch[-1] + 1 if branch else 0
    for t in np.linspace(0.07, 0.93, PER_BRANCH):
        weights.append(dist * 0.5**depth)
        means.append(offset + (pos + direction * dist * t) * SCALE)
        covs.append(cov)
        branch.append(index)
    return pos + direction * dist


def _grow_kakusan(rng, start_angle: float) -> tuple:
    parts = ([], [], [], [])
    queue = [(np.zeros(2), start_angle, 0)]
    while queue:
        pos, angle, d = queue.pop(0)  # breadth-first: branch ids go level by level
        end = _branch(parts, rng, d, pos, angle, ORIGIN)
        if d + 1 < DEPTH:
            for sign in (-1, 1):
                queue.append((end, angle + sign * 0.7**d * (1 + 0.2 * rng.randn()), d + 1))
    return parts


def _grow_paper(rng, start_angle: float) -> tuple:
    parts = ([], [], [], [])

    def grow(d, pos, angle):
        if d >= DEPTH:
            return
        end = _branch(parts, rng, d, pos, angle, np.zeros(2))
        for sign in (1, -1):
            grow(d + 1, end, angle + sign * 0.7**d * (1 + 0.2 * rng.randn()))  # the angle is drawn first

    grow(0, ORIGIN.copy(), start_angle)
    return parts


def toy_classes(seed: int = 2, layout: str = "paper") -> dict[str, Tree]:
    """{'A': tree, 'B': tree, 'AB': both classes} — 1016 components per class; ``layout``: paper | kakusan."""
    if layout not in TREES:
        raise KakusanError(f"unknown tree {layout!r}: choose {' or '.join(TREES)}")
    rng = np.random.RandomState(seed)
    grow = _grow_paper if layout == "paper" else _grow_kakusan
    parts = {name: grow(rng, angle) for name, angle in (("A", np.pi / 4), ("B", 5 * np.pi / 4))}
    (wa, ma, ca, ba), (wb, mb, cb, bb) = parts["A"], parts["B"]
    wa, wb = np.array(wa), np.array(wb)
    if layout == "paper":
        both = np.concatenate([wa, wb]) / (wa.sum() + wb.sum())
    else:
        both = np.concatenate([wa / wa.sum(), wb / wb.sum()]) / 2
    nb = max(ba) + 1
    return {"A": _tree(wa / wa.sum(), ma, ca, ba), "B": _tree(wb / wb.sum(), mb, cb, bb),
            "AB": _tree(both, ma + mb, ca + cb, ba + [x + nb for x in bb])}


def _tree(weights, means, covs, branch) -> Tree:
    mixture = GaussianMixture(weights, np.array(means), np.array(covs))
    branch = torch.tensor(branch)
    branch_weights = torch.zeros(int(branch.max()) + 1, dtype=torch.float64).index_add_(0, branch, mixture.weights)
    return Tree(mixture, branch, branch_weights)
