"""The 2-D fractal-tree toy: the exact mixture, its 99%-mass contour and the branch-coverage metric."""
import numpy as np
import pytest
import torch

from kakusan import KakusanError
from kakusan.guidance.toy import outlier_threshold, sample_toy, toy_metrics
from kakusan.guidance.tree import ORIGIN, SCALE, toy_classes


@pytest.mark.parametrize("layout", ["paper", "kakusan"])
def test_tree_structure(layout):
    trees = toy_classes(layout=layout)
    for name in "AB":
        t = trees[name]
        assert len(t.mixture.weights) == 1016 and t.num_branches == 127
        assert torch.isclose(t.branch_weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert trees["AB"].num_branches == 254


def test_paper_tree_follows_the_reference_construction():
    """One random stream, depth-first: each branch draws its length, then each child its angle (+ first) before
    growing; leaves' children draw an angle too. So class A takes 3 draws per branch (381) and class B's trunk length
    is draw 382. The origin is scaled with the tree; the two-class mixture keeps the raw weights."""
    z = np.random.RandomState(2).randn(400)
    trees = toy_classes(layout="paper")
    for name, angle, draw in (("A", np.pi / 4, 0), ("B", 5 * np.pi / 4, 381)):
        dist = 0.292 * (1 + 0.2 * z[draw])
        first = (ORIGIN + np.array([np.cos(angle), np.sin(angle)]) * dist * 0.07) * SCALE
        assert np.allclose(trees[name].mixture.means[0].numpy(), first)
    # depth-first: the trunk's first child (turning +) is branch 1, grown with the second draw
    dist0, dist1 = 0.292 * (1 + 0.2 * z[0]), 0.292 * 0.8 * (1 + 0.2 * z[2])
    angle1 = np.pi / 4 + (1 + 0.2 * z[1])
    start = ORIGIN + np.array([np.cos(np.pi / 4), np.sin(np.pi / 4)]) * dist0
    expect = (start + np.array([np.cos(angle1), np.sin(angle1)]) * dist1 * 0.07) * SCALE
    assert np.allclose(trees["A"].mixture.means[8].numpy(), expect)
    # weights: length x 0.5^depth, normalised over both classes together
    wa, wb = trees["A"].mixture.weights, trees["AB"].mixture.weights
    ratio = trees["AB"].mixture.weights[:1016].sum()
    assert torch.allclose(wb[:1016] / ratio, wa) and abs(float(ratio) - 0.5) > 1e-4
    assert torch.isclose(wa[0] / wa[8], torch.tensor(dist0 / (dist1 * 0.5), dtype=torch.float64))
    with pytest.raises(KakusanError, match="unknown tree"):
        toy_classes(layout="oak")


@pytest.mark.slow
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


def test_run_toy_writes_the_metrics_it_returns(tmp_path, monkeypatch):
    """run_toy writes metrics.json itself (the CLI only prints it). The 99%-mass contour and the figure's density
    grid (~25 s between them) are stood in for: what is tested is which files the run leaves."""
    import json

    from kakusan.guidance import toy, toy_plot

    monkeypatch.setattr(toy, "outlier_threshold", lambda tree: -3.0)
    monkeypatch.setattr(toy_plot, "plot_toy", lambda tree, threshold, panels, path: path.write_bytes(b"") or path)
    result = toy.run_toy(tmp_path, ws=(2.0,), n=64, main_width=8, guide_width=4, main_iters=2, guide_iters=1,
                         fig_w=2.0, batch=16, progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(result))
    assert [r["w"] for r in result["cfg"]] == [r["w"] for r in result["autoguidance"]] == [2.0]
    assert result["threshold_logp"] == -3.0 and (tmp_path / "samples_autoguidance_w2.npz").exists()
