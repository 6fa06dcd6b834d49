"""Shape scenes: deterministic, masks that match the rasterised shapes, classes from the sentence."""
import math

import pytest
import torch

from kakusan.data.shapes import SHAPES, class_map, inside, make_shape_scenes, placed
from kakusan.data.tokens import sentence_classes

# Area of each shape with a unit bounding radius, from its definition in kakusan.data.shapes
STAR_AREA = 5 * 2 * 0.5 * sum((0.42 + 0.58 * abs(2 * (w - 0.5))) ** 2 * (2 * math.pi / 5) / 10000
                              for w in ((i + 0.5) / 10000 for i in range(10000))) / 2
AREAS = {"disc": math.pi * 0.85**2, "square": (2 * 0.68) ** 2, "triangle": 3 * math.sqrt(3) / 4,
         "cross": 2 * 0.56 * 1.8 - 0.56**2, "ring": math.pi * (0.9**2 - 0.5**2), "star": STAR_AREA}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_rasterised_shape_has_its_analytic_area_at_any_rotation(shape):
    side = 512
    c = (torch.arange(side) + 0.5) / side
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    for theta in (0.0, 0.7, 2.1):
        area = float(placed(shape, 0.5, 0.5, 0.3, theta, yy, xx).float().mean()) / 0.3**2
        assert area == pytest.approx(AREAS[shape], rel=0.02), (shape, theta)
    assert not bool(inside(shape, torch.tensor([1.01]), torch.tensor([0.0])))  # within the bounding disc


def test_scenes_are_deterministic_and_a_prefix_of_a_longer_set():
    a, b = make_shape_scenes(5, seed=3), make_shape_scenes(8, seed=3)
    assert torch.equal(a.images, b.images[:5]) and torch.equal(a.segments, b.segments[:5])
    assert torch.equal(a.tokens, b.tokens[:5]) and a.images.shape == (5, 3, 32, 32)
    assert not torch.equal(make_shape_scenes(5, seed=4).images, a.images)


def test_segments_are_the_majority_of_the_supersampled_shapes_and_classes_follow_the_sentence():
    ds = make_shape_scenes(40, seed=0)
    for img, seg, tok in zip(ds.images, ds.segments, ds.tokens):
        classes = sentence_classes(tok)
        assert 1 <= len(classes) <= 3
        assert set(seg.unique().tolist()) == set(range(len(classes) + 1))  # every object is visible
        cmap = class_map(tok, seg)
        for j, c in enumerate(classes):
            assert bool((cmap[seg == j + 1] == c + 1).all())
        assert bool((cmap[seg == 0] == 0).all())
    assert float(ds.images.min()) >= -1 and float(ds.images.max()) <= 1


def test_colour_does_not_give_the_objects_away():
    """Inside and outside the objects the colours come from the same distribution: their means over many scenes
    agree to within a few hundredths."""
    ds = make_shape_scenes(200, seed=1)
    fg = ds.segments[:, None].expand_as(ds.images) > 0
    inside_mean, outside_mean = ds.images[fg].mean(), ds.images[~fg].mean()
    assert abs(float(inside_mean - outside_mean)) < 0.05
