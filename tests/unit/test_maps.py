"""Similarity maps, SAM points, combined targets and overlays (docs/algorithms.md#similarity-maps, #points-for-sam) on hand-built examples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsurgery_widgets.engine.errors import TextInputError
from clipsurgery_widgets.engine.maps import (
    combine_targets,
    map_to_points,
    overlay,
    similarity_maps,
)
from clipsurgery_widgets.engine.text.labels import parse_target

# --- similarity maps ---------------------------------------------------------------------------

def test_maps_are_min_max_normalised_per_image_and_label():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 4 * 5, 3, generator=gen) * torch.tensor([1.0, 5.0, 0.1]) + 3.0
    # 3x upsampling puts an output pixel on every patch centre, so the extremes survive exactly
    maps = similarity_maps(scores, (4, 5), (12, 15))
    assert maps.shape == (2, 3, 12, 15) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    flat = maps.flatten(2)
    torch.testing.assert_close(flat.amin(-1), torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.amax(-1), torch.ones(2, 3), atol=1e-6, rtol=0)
    # at the patch centres the values are the min-max normalised scores, row-major
    centres = maps[:, :, 1::3, 1::3].flatten(2).transpose(1, 2)
    low, high = scores.amin(1, keepdim=True), scores.amax(1, keepdim=True)
    torch.testing.assert_close(centres, (scores - low) / (high - low), atol=1e-5, rtol=0)


def test_any_size_stays_in_unit_range():
    maps = similarity_maps(torch.randn(1, 14 * 14, 2), (14, 14), (333, 500))
    assert maps.shape == (1, 2, 333, 500)
    assert maps.min() >= 0 and maps.max() <= 1


def test_constant_map_gives_zeros_not_nan():
    scores = torch.stack([torch.full((6,), 0.3), torch.arange(6.0)], dim=-1)[None]  # [1, 6, 2]
    maps = similarity_maps(scores, (2, 3), (8, 9))
    assert not torch.isnan(maps).any()
    assert torch.equal(maps[0, 0], torch.zeros(8, 9))
    assert maps[0, 1].max() > 0.5


def test_planted_hot_patch_lands_in_its_cell():
    gh, gw = 4, 5
    scores = torch.zeros(1, gh * gw, 1)
    scores[0, 1 * gw + 3, 0] = 2.0  # row 1, column 3
    maps = similarity_maps(scores, (gh, gw), (40, 50))  # 10 pixels per cell
    row, col = divmod(int(maps[0, 0].argmax()), 50)
    assert 10 <= row < 20 and 30 <= col < 40
    assert maps[0, 0, 15, 35] > 0.9 and maps[0, 0, 35, 5] == 0


def test_similarity_map_errors():
    with pytest.raises(ValueError, match="gh \\* gw == N"):
        similarity_maps(torch.zeros(1, 10, 2), (3, 3), (9, 9))
    with pytest.raises(ValueError, match=r"\[B, N, T\]"):
        similarity_maps(torch.zeros(10, 2), (2, 5), (9, 9))


# --- points for SAM ----------------------------------------------------------------------------

def test_points_without_downsampling_by_hand():
    # 4x4 grid holding 0..15 in a scrambled order; normalised v/15 >= 0.8 <=> v >= 12 -> num = 4
    values = np.array([[3, 12, 7, 0],
                       [9, 15, 1, 10],
                       [4, 2, 14, 6],
                       [13, 8, 5, 11]], dtype=np.float32)
    points, labels = map_to_points(torch.from_numpy(values.reshape(-1)), (4, 4), (40, 80), downsample=1)
    # cell (r, c) -> x = (c + .5) * 80 / 4, y = (r + .5) * 40 / 4
    positives = [(30, 15), (50, 25), (10, 35), (30, 5)]  # values 15, 14, 13, 12
    negatives = [(70, 5), (50, 15), (30, 25), (10, 5)]  # values 0, 1, 2, 3
    assert points.dtype == np.int64 and points.shape == (8, 2)
    assert labels.dtype == np.uint8 and labels.tolist() == [1] * 4 + [0] * 4
    assert [tuple(p) for p in points] == positives + negatives


def test_points_with_downsampling_by_hand():
    # Bilinear halving (align_corners=False) of a 4x4 grid averages each 2x2 block.
    blocks = np.array([[0, 10], [9, 5]], dtype=np.float32)
    values = np.kron(blocks, np.ones((2, 2), np.float32)) + np.array([[1, -1, 1, -1]] * 2 + [[-1, 1, -1, 1]] * 2)
    # block means 0, 10, 9, 5 -> normalised 0, 1, .9, .5; two cells >= .8, cap 4 // 2 = 2 -> num = 2
    points, labels = map_to_points(values.reshape(-1), (4, 4), (100, 60))
    # (r, c) -> x = (c + .5) * 30, y = (r + .5) * 50
    assert [tuple(p) for p in points] == [(45, 25), (15, 75), (15, 25), (45, 75)]
    assert labels.tolist() == [1, 1, 0, 0]


def test_points_are_clamped_inside_a_small_image():
    values = np.arange(16, dtype=np.float32)  # cells 12..15 positive, 0..3 negative
    points, _ = map_to_points(values, (4, 4), (2, 3), downsample=1)
    # x = int(min((c + .5) * 3 / 4, 2)), y = int(min((r + .5) * 2 / 4, 1))
    expected_pos = [(int(min((c + .5) * .75, 2)), int(min(3.5 * .5, 1))) for c in (3, 2, 1, 0)]
    expected_neg = [(int(min((c + .5) * .75, 2)), 0) for c in (0, 1, 2, 3)]
    assert [tuple(p) for p in points] == expected_pos + expected_neg
    assert points[:, 0].max() <= 2 and points[:, 1].max() <= 1


def test_num_is_capped_at_half_the_cells():
    values = np.ones(16, np.float32)
    values[5] = 0.0  # 15 cells >= .8 but at most 16 // 2 = 8 of each kind
    points, labels = map_to_points(values, (4, 4), (40, 40), downsample=1)
    assert len(points) == 16 and labels.sum() == 8
    assert tuple(points[8]) == (15, 15)  # the lowest cell, (r 1, c 1), is the first negative


@pytest.mark.parametrize("values, threshold", [(np.full(16, 0.7, np.float32), 0.8),
                                               (np.arange(16, dtype=np.float32), 1.01)])
def test_flat_map_or_high_threshold_gives_no_points(values, threshold):
    points, labels = map_to_points(values, (4, 4), (32, 32), threshold=threshold)
    assert points.shape == (0, 2) and points.dtype == np.int64
    assert labels.shape == (0,) and labels.dtype == np.uint8


def test_points_match_a_literal_reference_on_random_scores():
    gen = np.random.default_rng(3)
    gh, gw, (height, width) = 8, 6, (123, 77)
    values = gen.normal(size=gh * gw).astype(np.float32)
    cells = values.reshape(gh // 2, 2, gw // 2, 2).mean(axis=(1, 3)).reshape(-1)  # 2x2 block means
    cells = (cells - cells.min()) / (cells.max() - cells.min())
    order = list(np.argsort(cells))
    num = min(int((cells >= 0.8).sum()), len(cells) // 2)
    h, w = gh // 2, gw // 2

    def pixel(i):
        r, c = divmod(int(i), w)
        return int(min((c + 0.5) * width / w, width - 1)), int(min((r + 0.5) * height / h, height - 1))

    expected = [pixel(i) for i in order[::-1][:num]] + [pixel(i) for i in order[:num]]
    points, labels = map_to_points(values, (gh, gw), (height, width))
    assert num > 0 and [tuple(p) for p in points] == expected
    assert labels.tolist() == [1] * num + [0] * num


def test_point_errors():
    with pytest.raises(ValueError, match="one label"):
        map_to_points(np.zeros((16, 2)), (4, 4), (8, 8))
    with pytest.raises(ValueError, match="too small"):
        map_to_points(np.zeros(4), (1, 4), (8, 8))
    with pytest.raises(ValueError, match="gh \\* gw == N"):
        map_to_points(np.zeros(15), (4, 4), (8, 8))


# --- combined targets --------------------------------------------------------------------------

def test_combined_target_by_hand():
    a = np.array([[10, 9, 1, 0], [2, 3, 4, 5]], np.float32)  # /10: two cells >= .8 -> (0,0), (0,1)
    b = np.array([[0, 1, 2, 3], [4, 5, 6, 20]], np.float32)  # /20: one cell -> (1,3)
    # mean of normalised maps: [[.5, .475, .1, .075], [.2, .275, .35, .75]] -> one cell >= .8
    # after min-max, so one negative, the lowest cell (0,3)
    parts = torch.from_numpy(np.stack([a.reshape(-1), b.reshape(-1)], axis=1))
    points, labels = combine_targets(parts, (2, 4), (20, 40), downsample=1)
    assert [tuple(p) for p in points] == [(5, 5), (15, 5), (35, 15), (35, 5)]
    assert labels.tolist() == [1, 1, 1, 0] and labels.dtype == np.uint8


def test_combined_target_errors():
    with pytest.raises(ValueError, match=r"\[N, P\]"):
        combine_targets(np.zeros(16), (4, 4), (8, 8))


@pytest.mark.parametrize("target, parts", [("person+bench", ["person", "bench"]),
                                           (" person + park bench ", ["person", "park bench"]),
                                           ("dog", ["dog"])])
def test_parse_target(target, parts):
    assert parse_target(target) == parts


@pytest.mark.parametrize("target", ["a+", "+", "+b", "a++b", "a+ "])
def test_parse_target_rejects_empty_parts(target):
    with pytest.raises(TextInputError, match="empty part"):
        parse_target(target)


# --- overlay -----------------------------------------------------------------------------------

def test_overlay_blends_jet_colours():
    from matplotlib import colormaps

    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    heat = np.linspace(0, 1, 35).reshape(5, 7)
    out = overlay(image, heat)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    jet = colormaps["jet"](heat[2, 3])[:3]
    expected = np.rint(0.4 * image[2, 3] + 0.6 * np.array(jet) * 255)
    np.testing.assert_array_equal(out[2, 3], expected.astype(np.uint8))
    assert np.array_equal(overlay(image, heat, opacity=0.0), image)
    assert tuple(overlay(image, np.ones((5, 7)), opacity=1.0)[0, 0]) == (128, 0, 0)  # jet(1) = dark red
    assert not np.array_equal(overlay(image, heat, cmap="viridis"), out)


def test_overlay_errors():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, np.zeros((4, 4)), opacity=1.5)
    with pytest.raises(ValueError, match="colormap"):
        overlay(image, np.zeros((4, 4)), cmap="no-such-map")
