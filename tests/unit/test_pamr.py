"""PAMR against hand-computed values and an independent per-pixel loop implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipsurgery_widgets.engine.segmentation.pamr import affinity, local_std, pamr


def loop_pamr(image, maps, steps, dilations):
    """Per-pixel float64 loops: image [3, H, W], maps [Q, H, W] (numpy)."""
    _, h, w = image.shape

    def at(arr, y, x):  # border-clamped read
        return arr[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    weights = np.zeros((h, w, 8 * len(dilations)))
    for y in range(h):
        for x in range(w):
            window = [at(image, y + d * dy, x + d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            sigma = np.std(np.stack(window), axis=0, ddof=1)  # [3]
            alpha = [np.mean(-np.abs(image[:, y, x] - at(image, y + d * dy, x + d * dx)) / (1e-8 + 0.1 * sigma))
                     for d in dilations for dy, dx in offsets]
            e = np.exp(np.array(alpha) - max(alpha))
            weights[y, x] = e / e.sum()
    for _ in range(steps):
        new = np.zeros_like(maps)
        for y in range(h):
            for x in range(w):
                neighbours = [at(maps, y + d * dy, x + d * dx) for d in dilations for dy, dx in offsets]
                new[:, y, x] = sum(wt * m for wt, m in zip(weights[y, x], neighbours))
        maps = new
    return maps


@pytest.mark.parametrize("dilations, steps, size", [((1,), 1, (4, 4)), ((1, 2), 2, (5, 4)), ((2, 8), 3, (4, 6))])
def test_matches_loop_implementation(dilations, steps, size):
    gen = torch.Generator().manual_seed(sum(size) + steps)
    image = torch.rand(1, 3, *size, generator=gen)
    maps = torch.rand(1, 2, *size, generator=gen)
    got = pamr(image, maps, steps, dilations)
    want = loop_pamr(image[0].double().numpy(), maps[0].double().numpy(), steps, dilations)
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-5)


def test_constant_image_gives_plain_neighbour_mean():
    # sigma = 0 -> every alpha is -0 / 1e-8 = 0 -> the 8 weights are 1/8
    image = torch.full((1, 3, 3, 3), 0.4)
    maps = torch.arange(9.0).reshape(1, 1, 3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
    out = pamr(image, maps, 1, (1,))
    assert out[0, 0, 1, 1].item() == pytest.approx((0 + 1 + 2 + 3 + 5 + 6 + 7 + 8) / 8)
    # corner (0, 0), replicate border: neighbours 0 0 1 | 0 1 | 3 3 4 -> 12 / 8
    assert out[0, 0, 0, 0].item() == pytest.approx(12 / 8)
    assert torch.allclose(affinity(image, (1,)), torch.full((1, 8, 3, 3), 1 / 8))


def test_local_std_by_hand():
    # 1 x 3 image, one channel pattern [0, 3, 6], dilation 1, pixel (0, 1): rows clamp, so the 3 x 3
    # window holds each of 0, 3, 6 three times: mean 3, unbiased var = 3 * (9 + 0 + 9) / 8 = 6.75
    image = torch.tensor([0.0, 3.0, 6.0]).reshape(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert local_std(image, (1,))[0, 0, 0, 1].item() == pytest.approx(math.sqrt(6.75))
    # two dilations: the centre counts twice among 18 values
    two = local_std(image, (1, 5))[0, 0, 0, 1].item()
    values = [0, 3, 6] * 3 + [0, 3, 6] * 3  # dilation 5 clamps to the same three columns
    assert two == pytest.approx(float(np.std(values, ddof=1)))


def test_edges_stop_the_spread():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0  # two flat halves
    maps = torch.zeros(1, 1, 8, 8)
    maps[..., :4] = 1.0
    out = pamr(image, maps, 10, (1, 2))
    assert out[..., :4].min() > 0.999 and out[..., 4:].max() < 1e-3
    assert torch.equal(pamr(image, maps, 0, (1,)), maps)


def test_dilation_larger_than_image_and_shape_checks():
    out = pamr(torch.rand(1, 3, 4, 4), torch.rand(1, 5, 4, 4), 2, (8, 16))
    assert out.shape == (1, 5, 4, 4) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="one size"):
        pamr(torch.rand(1, 3, 4, 4), torch.rand(1, 5, 4, 5), 1, (1,))
    with pytest.raises(ValueError, match="pamr_dilations"):
        pamr(torch.rand(1, 3, 4, 4), torch.rand(1, 5, 4, 4), 1, (1, -2))
