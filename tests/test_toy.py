"""The 2-D fractal-tree toy: the exact mixture, its 99%-mass contour and the branch-coverage metric."""
import torch

from kakusan.guidance.toy import outlier_threshold, sample_toy, toy_metrics
from kakusan.guidance.tree import toy_classes


def test_tree_structure():
    trees = toy_classes()
    for name in "AB":
        t = trees[name]
        assert len(t.mixture.weights) == 1016 and t.num_branches == 127
        assert torch.isclose(t.branch_weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert trees["AB"].num_branches == 254


def test_exact_score_sampler_hits_the_99_percent_contour_and_every_branch():
    tree = toy_classes()["A"]
    threshold = outlier_threshold(tree)
    x = sample_toy(tree, tree.mixture.denoise, 4000, seed=0, steps=24)
    m = toy_metrics(tree, x, threshold)
    assert abs(m["outlier_rate"] - 0.01) < 0.006, m
    assert m["coverage_tv"] < 0.1, m
    # a sampler that collapses onto the trunk keeps few outliers but loses the branches
    trunk = tree.mixture.means[:8].float()[torch.randint(0, 8, (4000,))]
    collapsed = toy_metrics(tree, trunk, threshold)
    assert collapsed["coverage_tv"] > 0.5 and collapsed["branches_missed"] > 100
