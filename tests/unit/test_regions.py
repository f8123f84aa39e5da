"""engine.regions: outlines of thresholded maps and the pixel -> patch geometry."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.maps import similarity_maps
from clipsurgery_widgets.engine.regions import (
    display_step,
    normalised_patch_grid,
    patch_at,
    patch_value_image,
    region_outline,
    sample_positions,
)


def _disk(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width]
    return np.clip(radius + 0.5 - np.hypot(yy - cy, xx - cx), 0, 1)  # 1 inside, ramps to 0 at the edge


def test_outline_of_a_disk_lies_on_its_edge():
    heat = _disk(60, 80, cy=30, cx=35, radius=12)
    lines = region_outline(heat, 0.5)
    assert len(lines) == 1
    xs, ys = lines[0][:, 0], lines[0][:, 1]
    assert np.allclose(np.hypot(ys - 30, xs - 35), 12, atol=0.75)
    assert np.allclose(lines[0][0], lines[0][-1])  # closed


def test_region_touching_the_border_is_closed_along_the_border():
    heat = np.zeros((20, 30))
    heat[:8, :10] = 1.0  # top-left corner block
    (line,) = region_outline(heat, 0.5)
    assert np.allclose(line[0], line[-1])
    assert line[:, 0].min() == 0 and line[:, 1].min() == 0  # runs along the image edges
    assert 9 <= line[:, 0].max() <= 10 and 7 <= line[:, 1].max() <= 8


def test_two_regions_two_outlines_and_degenerate_cases():
    heat = np.zeros((20, 40))
    heat[5:10, 5:10] = 1
    heat[5:10, 25:30] = 1
    assert len(region_outline(heat, 0.5)) == 2
    assert region_outline(heat, 2.0) == []        # nothing reaches the threshold
    assert region_outline(np.ones((5, 5)), 0.5) == []  # everything does: no edge to draw


def test_outline_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        region_outline(np.zeros((2, 3, 4)), 0.5)
    with pytest.raises(ValueError, match="finite"):
        region_outline(np.zeros((4, 4)), float("nan"))


@pytest.mark.parametrize("size,grid", [((300, 451), (14, 14)), ((224, 224), (14, 14)), ((100, 50), (3, 7))])
def test_patch_at_matches_the_pixel_centre_formula(size, grid):
    height, width = size
    gh, gw = grid
    rng = np.random.default_rng(0)
    for x, y in [(0, 0), (width - 1, height - 1), *rng.uniform([0, 0], [width - 1, height - 1], (20, 2))]:
        expected = (min(gh - 1, int((y + 0.5) / height * gh)), min(gw - 1, int((x + 0.5) / width * gw)))
        assert patch_at(size, grid, x, y) == expected


def test_patch_at_refuses_points_outside_the_image():
    with pytest.raises(ValueError, match="outside"):
        patch_at((10, 20), (2, 2), 25, 3)


def test_patch_value_image_repeats_each_patch_over_its_pixels():
    values = np.arange(6, dtype=np.float32)  # grid 2 x 3
    image = patch_value_image(values, (2, 3), (8, 12))
    expected = np.kron(values.reshape(2, 3), np.ones((4, 4)))
    assert np.array_equal(image, expected)
    stacked = patch_value_image(np.stack([values, -values], 1), (2, 3), (8, 12))
    assert stacked.shape == (8, 12, 2) and np.array_equal(stacked[..., 1], -expected)


def test_patch_value_image_with_a_step_keeps_the_sampled_pixels():
    values = np.random.default_rng(1).normal(size=14 * 14)
    full = patch_value_image(values, (14, 14), (300, 451))
    rows, cols = sample_positions(300, 3), sample_positions(451, 3)
    assert np.array_equal(patch_value_image(values, (14, 14), (300, 451), step=3), full[np.ix_(rows, cols)])
    with pytest.raises(ValueError, match="patches"):
        patch_value_image(values[:-1], (14, 14), (300, 451))


def test_sample_positions():
    assert np.array_equal(sample_positions(7, 1), np.arange(7))
    assert sample_positions(451, 3).tolist() == list(range(1, 451, 3))  # middles of 3-pixel blocks
    assert sample_positions(10, 4).tolist() == [2, 6]
    with pytest.raises(ValueError):
        sample_positions(0, 3)


def test_normalised_patch_grid_is_the_map_before_resizing():
    scores = np.random.default_rng(2).normal(size=(5 * 7, 3)).astype(np.float32)
    grid = normalised_patch_grid(scores, (5, 7))
    for t in range(3):
        s = scores[:, t]
        assert np.allclose(grid[t], ((s - s.min()) / (s.max() - s.min())).reshape(5, 7), atol=1e-6)
    # Bilinear (align_corners=False) resizing of the grid gives the image-sized maps.
    upsampled = F.interpolate(torch.from_numpy(grid)[None], size=(40, 56), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(upsampled, similarity_maps(torch.from_numpy(scores)[None], (5, 7), (40, 56))[0], atol=1e-6)


def test_display_step():
    assert display_step((300, 451), 200) == math.ceil(451 / 200)
    assert display_step((100, 100), 200) == 1
    with pytest.raises(ValueError):
        display_step((100, 100), 0)
