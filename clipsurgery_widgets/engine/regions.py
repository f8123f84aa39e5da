"""Pixel-level geometry of maps: region outlines and which patch a pixel belongs to.

Pure numpy/scikit-image; the widgets and figures draw what these functions return.
"""
from __future__ import annotations

import math

import numpy as np


def region_outline(heat: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Outline of the binarised region ``heat >= threshold``.

    Args:
        heat: float [H, W] map (values in [0, 1] for similarity maps).
        threshold: the binarisation level.

    Returns:
        A list of closed polylines, each float [K, 2] in (x, y) pixel coordinates (x = column,
        y = row, pixel centres at integers). Regions touching the image border are closed along
        the border. Empty when no pixel reaches the threshold or every pixel does.
    """
    from skimage.measure import find_contours

    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map [H, W], got shape {heat.shape}.")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
    inside = heat >= threshold
    if not inside.any() or inside.all():
        return []
    # A frame below the threshold closes regions that touch the border; contours are then
    # shifted back and clamped onto the image.
    floor = min(float(np.nanmin(heat)), float(threshold)) - 1.0
    padded = np.pad(np.nan_to_num(heat, nan=floor), 1, constant_values=floor)
    height, width = heat.shape
    outlines = []
    for contour in find_contours(padded, level=float(threshold)):
        rows = np.clip(contour[:, 0] - 1.0, 0.0, height - 1.0)
        cols = np.clip(contour[:, 1] - 1.0, 0.0, width - 1.0)
        outlines.append(np.stack([cols, rows], axis=1))
    return outlines


def normalised_patch_grid(patch_scores: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Similarity maps before they are resized to the image: float32 [T, gh, gw].

    Each label's patch scores ([N, T], N == gh * gw row-major) min-max normalised over the patches
    (docs/algorithms.md#similarity-maps). Resizing this grid bilinearly (align_corners=False) to (H, W) gives the
    Explanation's maps, so a viewer that interpolates bilinearly can draw the maps from it.
    """
    import torch

    from .maps import similarity_maps

    scores = torch.from_numpy(np.ascontiguousarray(patch_scores, dtype=np.float32))[None]
    return similarity_maps(scores, grid, grid)[0].numpy()  # resizing to the grid itself is the identity


def patch_at(image_size: tuple[int, int], grid: tuple[int, int], x: float, y: float) -> tuple[int, int]:
    """(row, col) of the patch that covers pixel (x, y) of the original image.

    The whole image is resized onto the (gh, gw) patch grid (no crop), so pixel centre
    (x + 0.5, y + 0.5) falls in column floor((x + 0.5) * gw / W) and row floor((y + 0.5) * gh / H).
    """
    height, width = image_size
    gh, gw = grid
    if not (-0.5 <= x < width - 0.5 + 1e-9 and -0.5 <= y < height - 0.5 + 1e-9):
        raise ValueError(f"Point ({x:g}, {y:g}) lies outside the {width}x{height} image.")
    col = min(gw - 1, max(0, math.floor((x + 0.5) * gw / width)))
    row = min(gh - 1, max(0, math.floor((y + 0.5) * gh / height)))
    return row, col


def patch_value_image(values: np.ndarray, grid: tuple[int, int], image_size: tuple[int, int],
                      step: int = 1) -> np.ndarray:
    """Each kept pixel gets the value of the patch that covers it (nearest patch, no interpolation).

    Args:
        values: [N] or [N, T] per-patch values, N == gh * gw in row-major order.
        grid: (gh, gw).
        image_size: (H, W) of the original image.
        step: keep the pixels :func:`sample_positions` picks for this step in both directions.

    Returns:
        [len(rows), len(cols)] (or [..., T]) array of ``values``' dtype.
    """
    values = np.asarray(values)
    gh, gw = grid
    if values.shape[0] != gh * gw:
        raise ValueError(f"values has {values.shape[0]} patches but the grid {gh}x{gw} has {gh * gw}.")
    height, width = image_size
    rows = np.minimum(((sample_positions(height, step) + 0.5) * gh / height).astype(int), gh - 1)
    cols = np.minimum(((sample_positions(width, step) + 0.5) * gw / width).astype(int), gw - 1)
    cells = values.reshape(gh, gw, *values.shape[1:])
    return cells[rows[:, None], cols[None, :]]


def sample_positions(length: int, step: int) -> np.ndarray:
    """Pixel indices kept when a map is shown at every ``step``-th pixel: the middle pixel of each
    ``step``-long block (``step // 2, step // 2 + step, ...``), so the kept pixels are evenly spaced
    and each stands for its block. int64 [ceil((length - step // 2) / step)], increasing.
    """
    if length < 1 or step < 1:
        raise ValueError(f"length and step must be positive, got {length} and {step}.")
    return np.arange(step // 2, length, step)


def display_step(image_size: tuple[int, int], max_side: int) -> int:
    """Smallest integer stride that brings the longer image side down to at most ``max_side`` pixels."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}.")
    return max(1, math.ceil(max(image_size) / max_side))
