"""SAM prompts: the automatic points of a CLIP Surgery map, and checking prompts into a :class:`PromptState`.

Pure functions of the inputs and the image size; every bad input gets an error naming the fix.
The points follow docs/algorithms.md#points-for-sam.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..maps import combine_targets, map_to_points
from ..text.labels import parse_target
from .results import PromptState, frozen


def map_point_scores(explainer: Any, image: Any, text: str,
                     size: int | tuple[int, int] = 224) -> tuple[Any, np.ndarray]:
    """The CLIP Surgery map of ``text`` and the patch scores its SAM points come from.

    Args:
        explainer: an :class:`~clipsurgery_widgets.engine.explainer.Explainer`.
        image: RGB uint8 [H, W, 3] or anything the explainer reads.
        text: one target, or "a+b" for a combined target (docs/algorithms.md#points-for-sam).
        size: CLIP input size S or (S_h, S_w), multiples of the patch size.

    Returns:
        (Explanation of ``[text]``, scores): float32 [N] patch scores of the text, or for a
        combined target [N, P] single-text scores of each of its P parts; give them to
        :func:`points_from_map`.
    """
    parts = parse_target(text)
    explanation = explainer.explain(image, [text], method="surgery", size=size)
    if len(parts) > 1:
        scores = explainer.target_part_scores(image, text, size=size)
    else:
        scores = explanation.surgery.patch_scores[:, 0]
    return explanation, np.asarray(scores, dtype=np.float32)


def points_from_map(scores: Any, grid: tuple[int, int], size: tuple[int, int], threshold: float = 0.8,
                    downsample: int = 2, *, threshold_mode: str = "value",
                    max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SAM's automatic points from a surgery map (docs/algorithms.md#points-for-sam).

    Args:
        scores: patch scores [N] of one label (:func:`~..maps.map_to_points`), or [N, P] of the
            parts of a combined target "a+b" (:func:`~..maps.combine_targets`); N == gh * gw.
        grid: (gh, gw) patch grid.   size: (H, W) of the original image.
        threshold, downsample: as in :func:`~..maps.map_to_points`.
        threshold_mode: "value" (cells >= threshold after min-max) or "quantile" (cells >= the
            threshold-quantile of the cells' values).
        max_points: at most this many positives (and as many negatives); None: up to half the cells.

    Returns:
        points int64 [K, 2] (x, y) pixels, labels uint8 [K] (1 positive, 0 negative); K may be 0
        (a constant map has no cells above the threshold).
    """
    arr = as_numpy(scores)
    rule = {"threshold_mode": threshold_mode, "max_points": max_points}
    if arr.ndim == 1:
        return map_to_points(arr, grid, size=size, threshold=threshold, downsample=downsample, **rule)
    if arr.ndim == 2:
        return combine_targets(arr, grid, size, threshold, downsample, **rule)
    raise ValueError(f"scores must be patch scores [N] or part scores [N, P], got shape {arr.shape}.")


def as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check_points(points: Any, image_size: tuple[int, int] | None) -> np.ndarray:
    """[P, 2] (x, y) pixels -> int64 [P, 2], rounded and checked to lie inside the (H, W) image."""
    arr = np.asarray(as_numpy(points), dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must be [P, 2] (x, y) pixels, got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError("points contain NaN or infinity.")
    pts = np.rint(arr).astype(np.int64)
    if image_size is not None:
        h, w = image_size
        bad = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
        if bad.any():
            raise ValueError(f"Point {pts[bad][0].tolist()} is outside the image (width {w}, height {h}); points "
                             f"are (x, y) pixels with 0 <= x < {w}, 0 <= y < {h}.")
    return pts


def check_box(box: Any, image_size: tuple[int, int] | None) -> np.ndarray | None:
    """[x0, y0, x1, y1] -> float32 [4] clipped to the image, or None."""
    if box is None:
        return None
    arr = np.asarray(as_numpy(box), dtype=np.float64).reshape(-1)
    if arr.size != 4 or not np.isfinite(arr).all():
        raise ValueError(f"box must be 4 finite numbers [x0, y0, x1, y1], got {np.asarray(box).tolist()}.")
    if image_size is not None:
        h, w = image_size
        arr = np.clip(arr, 0, [w, h, w, h])
    if not (arr[0] < arr[2] and arr[1] < arr[3]):
        raise ValueError(f"box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1 (inside the image), got "
                         f"{arr.tolist()}.")
    return frozen(arr.astype(np.float32))


def check_mask_input(mask_input: Any, expected: tuple[int, int]) -> np.ndarray | None:
    """Low-res logits [h, w] or [1, h, w] -> float32 [1, h, w] (``expected`` = (h, w) of the model)."""
    if mask_input is None:
        return None
    arr = np.asarray(as_numpy(mask_input), dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (1, *expected):
        raise ValueError(f"mask_input must be low-res logits [1, {expected[0]}, {expected[1]}] (a result's "
                         f".best_logits), got shape {arr.shape}.")
    return frozen(np.ascontiguousarray(arr))


def check_labels(labels: Any, count: int) -> np.ndarray:
    """[P] of 1 (positive) / 0 (negative) -> uint8 [P]; None means all positive."""
    if labels is None:
        return np.ones(count, np.uint8)
    raw = np.asarray(as_numpy(labels)).reshape(-1)
    if len(raw) != count:
        raise ValueError(f"{count} points but {len(raw)} labels: give one label per point (1 positive, 0 negative).")
    if not np.isin(raw, (0, 1)).all():
        raise ValueError(f"labels must be 1 (positive) or 0 (negative), got {sorted(set(raw.tolist()))}.")
    return raw.astype(np.uint8)


def make_state(points: Any, labels: Any, box: Any, mask_input: Any, image_size: tuple[int, int] | None,
               mask_input_size: tuple[int, int]) -> PromptState:
    """Check every prompt and bundle them (arrays read-only)."""
    pts = check_points(points, image_size) if points is not None else np.zeros((0, 2), np.int64)
    return PromptState(frozen(pts), frozen(check_labels(labels, len(pts))), check_box(box, image_size),
                       check_mask_input(mask_input, mask_input_size))
