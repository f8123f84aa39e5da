"""Attention mass inside versus outside a mask (engine/mask_stats.py), checked against hand-made rows
and an independent per-query loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsurgery_widgets.engine.attention import capture_image_attention
from clipsurgery_widgets.engine.images import sample_image
from clipsurgery_widgets.engine.mask_stats import grid_mask, map_inside_outside, mask_attention_share, mask_share_by_layer

GRID = (4, 4)
LEFT = np.zeros(GRID, dtype=bool)
LEFT[:, :2] = True  # the "object": the two left columns


def rows_from(patch_rows: np.ndarray, global_mass: float = 0.0) -> torch.Tensor:
    """[1+N, 1+N] attention with the given patch->patch rows (each scaled to 1 - global_mass)."""
    n = patch_rows.shape[0]
    out = np.zeros((1 + n, 1 + n))
    out[0] = 1.0 / (1 + n)
    out[1:, 0] = global_mass
    out[1:, 1:] = (1 - global_mass) * patch_rows / patch_rows.sum(1, keepdims=True)
    return torch.from_numpy(out)


def cells_of(grid):
    return [(r, c) for r in range(grid[0]) for c in range(grid[1])]


def loop_share(weights: np.ndarray, cells: np.ndarray, radius: float):
    """Independent reference: per query, far keys, share inside; means over inside/outside queries."""
    grid = cells.shape
    coords = cells_of(grid)
    shares = {True: [], False: []}
    chances = {True: [], False: []}
    for i, (r, c) in enumerate(coords):
        far = [j for j, (r2, c2) in enumerate(coords) if max(abs(r - r2), abs(c - c2)) > radius]
        total = sum(weights[1 + i, 1 + j] for j in far)
        inside = sum(weights[1 + i, 1 + j] for j in far if cells[coords[j]])
        shares[bool(cells[r, c])].append(inside / total)
        chances[bool(cells[r, c])].append(sum(bool(cells[coords[j]]) for j in far) / len(far))
    return (np.mean(shares[True]), np.mean(shares[False]), np.mean(chances[True]), np.mean(chances[False]))


def test_uniform_rows_sit_at_chance():
    result = mask_attention_share(rows_from(np.ones((16, 16))), LEFT, exclude_radius=1)
    assert result.inside == pytest.approx(result.chance_inside)
    assert result.outside == pytest.approx(result.chance_outside)
    assert result.contrast == pytest.approx(result.chance_contrast)
    assert (result.queries_inside, result.queries_outside) == (8, 8)


def test_a_self_peak_does_not_count_as_semantic():
    # 90% on the query itself, the rest spread evenly: the "self" statistic would read 0.9, but the
    # far mass is uniform, so the share sits at chance.
    patch = np.full((16, 16), 0.1 / 15)
    np.fill_diagonal(patch, 0.9)
    result = mask_attention_share(rows_from(patch), LEFT, exclude_radius=1)
    assert result.inside == pytest.approx(result.chance_inside)
    assert result.outside == pytest.approx(result.chance_outside)


def test_rows_that_stay_on_their_own_region_give_full_contrast():
    region = LEFT.reshape(-1)
    patch = (region[:, None] == region[None, :]).astype(float)  # attend evenly to your own region
    result = mask_attention_share(rows_from(patch, global_mass=0.3), LEFT, exclude_radius=1)
    assert result.inside == pytest.approx(1.0)
    assert result.outside == pytest.approx(0.0)
    assert result.contrast == pytest.approx(1.0)


def test_global_token_mass_is_left_out():
    rng = np.random.default_rng(0)
    patch = rng.random((16, 16))
    a = mask_attention_share(rows_from(patch, global_mass=0.0), LEFT)
    b = mask_attention_share(rows_from(patch, global_mass=0.7), LEFT)
    assert (a.inside, a.outside) == pytest.approx((b.inside, b.outside))
    assert a.inside != pytest.approx(a.chance_inside)  # the rows are not uniform, so this says something


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_matches_a_per_query_loop_on_random_rows(radius):
    rng = np.random.default_rng(radius)
    cells = rng.random((5, 6)) < 0.4
    weights = rows_from(rng.random((30, 30)) ** 3, global_mass=0.1).numpy()
    got = mask_attention_share(weights, cells, exclude_radius=radius)  # numpy input works too
    want = loop_share(weights, cells, radius)
    assert (got.inside, got.outside, got.chance_inside, got.chance_outside) == pytest.approx(want)


def test_by_layer_on_the_tiny_model_matches_the_matrices(tiny_vit):
    rgb = sample_image("coffee")
    capture = capture_image_attention(tiny_vit, rgb, 224)
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[40:260, 170:410] = True
    cells = grid_mask(mask, capture.grid)
    result = mask_share_by_layer(capture, cells, exclude_radius=2, layers=[0, -1])
    assert set(result) == {"qk", "vv"} and all(len(v) == 2 for v in result.values())
    for position, layer in enumerate([0, capture.num_layers - 1]):
        qk, vv = capture.matrices(layer)
        for kind, matrix in (("qk", qk), ("vv", vv)):
            want = loop_share(matrix.double().numpy(), cells, 2)
            got = result[kind][position]
            assert (got.inside, got.outside, got.chance_inside, got.chance_outside) == pytest.approx(want, rel=1e-9)


def test_grid_mask_counts_cells_at_least_half_inside():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4, :4] = 255        # top-left cell full
    mask[:2, 4:] = 255        # top-right cell half inside
    mask[4:5, :4] = 1         # bottom-left cell a quarter inside
    got = grid_mask(mask, (2, 2))
    assert got.tolist() == [[True, True], [False, False]]
    rgb = np.stack([mask] * 3, axis=-1)
    assert grid_mask(rgb, (2, 2)).tolist() == got.tolist()
    assert grid_mask(np.ones((15, 9), bool), (14, 7)).all()  # uneven cell sizes still cover the image


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4), bool), "some cells"),
    (np.ones((4, 4), bool), "some cells"),
])
def test_empty_or_full_mask_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        mask_attention_share(rows_from(np.ones((16, 16))), bad)


def test_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"\[1\+N, 1\+N\]"):
        mask_attention_share(torch.ones(10, 10), LEFT)
    with pytest.raises(ValueError, match="2-D"):
        grid_mask(np.ones((2, 2, 2, 2)), (2, 2))
    with pytest.raises(ValueError, match="smaller than"):
        grid_mask(np.ones((3, 3)), (4, 4))
    with pytest.raises(ValueError, match="smaller radius"):
        mask_attention_share(rows_from(np.ones((16, 16))), LEFT, exclude_radius=5)


def test_map_inside_outside_means():
    heat = np.zeros((4, 6))
    heat[:, :2] = 1.0
    heat[0, 5] = 0.5
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[:, :3] = 255
    inside, outside = map_inside_outside(heat, mask)
    assert inside == pytest.approx(8 / 12) and outside == pytest.approx(0.5 / 12)
    with pytest.raises(ValueError, match="same"):
        map_inside_outside(heat, mask[:3])
    with pytest.raises(ValueError, match="part of the image"):
        map_inside_outside(heat, np.zeros_like(mask))
