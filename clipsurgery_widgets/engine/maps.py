"""Similarity maps, heat-map overlays and point prompts for SAM (docs/algorithms.md#similarity-maps and #points-for-sam)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def similarity_maps(patch_scores: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Per-label heat maps at image size.

    Args:
        patch_scores: [B, N, T] scores of the patch tokens (token 0 already dropped), N == gh * gw
            in row-major grid order.
        grid: (gh, gw) patch grid.
        size: (H, W) output size, usually the original image's.

    Returns:
        float32 [B, T, H, W]: each (image, label) min-max normalised to [0, 1] over its patches
        (a constant map gives zeros), then resized bilinearly (align_corners=False). Bilinear
        interpolation stays inside [0, 1]; its extremes reach exactly 0 and 1 only where an
        output pixel lands on a patch centre.
    """
    scores = torch.as_tensor(patch_scores).float()
    if scores.dim() != 3:
        raise ValueError(f"patch_scores must be [B, N, T], got shape {tuple(scores.shape)}.")
    batch, num_patches, num_labels = scores.shape
    gh, gw = _check_grid(grid, num_patches)
    height, width = _check_size(size)
    normed = _min_max(scores, dim=1)
    maps = normed.permute(0, 2, 1).reshape(batch, num_labels, gh, gw)
    return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)


def map_to_points(
    patch_scores: torch.Tensor | np.ndarray,
    grid: tuple[int, int],
    size: tuple[int, int],
    threshold: float = 0.8,
    downsample: int = 2,
    *,
    threshold_mode: str = "value",
    max_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """SAM point prompts from one label's patch scores (docs/algorithms.md#points-for-sam).

    The (gh, gw) map is smoothed by a bilinear downsample to (gh // downsample, gw // downsample)
    and min-max normalised; num = min(#cells >= threshold, #cells // 2). The num highest cells are
    positives, the num lowest negatives; a cell (r, c) becomes the pixel at its centre in the
    original image, clamped to (W - 1, H - 1).

    Args:
        patch_scores: [N] scores of one label's patch tokens, N == gh * gw.
        grid: (gh, gw) patch grid.
        size: (H, W) of the original image.
        threshold_mode: "value": cells >= ``threshold`` count; "quantile": cells >= the
            ``threshold``-quantile of the cells' values count (0.9: about the top tenth), so the
            number of points no longer depends on how peaked the map is. A flat map gives none.
        max_points: at most this many positives (and as many negatives); None: no limit but
            half the cells.

    Returns:
        points: int64 [2 * num, 2] in (x, y) order, positives first (highest score first), then
        negatives (lowest score first). labels: uint8 [2 * num], 1 positive, 0 negative.
    """
    rule = point_rule(threshold, threshold_mode, max_points)
    cells, cell_grid = _smoothed_cells(patch_scores, grid, downsample)
    positives, negatives = _extreme_cells(cells, *rule)
    points = np.concatenate([_cell_centres(positives, cell_grid, size), _cell_centres(negatives, cell_grid, size)])
    labels = np.concatenate([np.ones(len(positives), np.uint8), np.zeros(len(negatives), np.uint8)])
    return points, labels


def combine_targets(
    part_scores: torch.Tensor | np.ndarray,
    grid: tuple[int, int],
    size: tuple[int, int],
    threshold: float = 0.8,
    downsample: int = 2,
    *,
    threshold_mode: str = "value",
    max_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """SAM point prompts for a combined target "a+b+..." (docs/algorithms.md#points-for-sam, combined targets).

    Each part's patch scores are min-max normalised; positives come from each part's own map,
    negatives from the mean of the normalised maps; all go to one SAM call.

    Args:
        part_scores: [N, P] single-text surgery scores of the P parts' patch tokens.
        grid, size, threshold, downsample, threshold_mode, max_points: as in :func:`map_to_points`
            (the rule applies to each part's map and to the mean map separately).

    Returns:
        points int64 [K, 2] in (x, y) order: positives of part 0, part 1, ..., then the negatives
        of the mean map; labels uint8 [K].
    """
    scores = torch.as_tensor(np.asarray(part_scores) if not isinstance(part_scores, torch.Tensor) else part_scores)
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"part_scores must be [N, P] (one column per part), got shape {tuple(scores.shape)}.")
    rule = point_rule(threshold, threshold_mode, max_points)
    normed = _min_max(scores.float(), dim=0)
    points, labels = [], []
    for part in range(normed.shape[1]):
        cells, cell_grid = _smoothed_cells(normed[:, part], grid, downsample)
        positives, _ = _extreme_cells(cells, *rule)
        points.append(_cell_centres(positives, cell_grid, size))
        labels.append(np.ones(len(positives), np.uint8))
    cells, cell_grid = _smoothed_cells(normed.mean(dim=1), grid, downsample)
    _, negatives = _extreme_cells(cells, *rule)
    points.append(_cell_centres(negatives, cell_grid, size))
    labels.append(np.zeros(len(negatives), np.uint8))
    return np.concatenate(points), np.concatenate(labels)


def overlay(image_rgb: np.ndarray, heat: np.ndarray | torch.Tensor, cmap: str = "jet",
            opacity: float = 0.6) -> np.ndarray:
    """Blend a colour-mapped heat map onto an image: (1 - opacity) * image + opacity * colour.

    Args:
        image_rgb: uint8 [H, W, 3].
        heat: [H, W] values in [0, 1] (clipped; NaN counts as 0).
        cmap: a matplotlib colormap name.
        opacity: weight of the heat map, 0 (image only) to 1 (heat only); 0.6 as in the paper.

    Returns:
        uint8 [H, W, 3].
    """
    from matplotlib import colormaps

    image = np.asarray(image_rgb)
    heat = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image_rgb must be a uint8 [H, W, 3] array, got {image.dtype} {image.shape}; "
                         f"use engine.load_image to read images.")
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map shape {heat.shape} does not match the image's {image.shape[:2]}; "
                         f"make the maps at the image size.")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}.")
    if cmap not in colormaps:
        raise ValueError(f"Unknown colormap {cmap!r}; use a matplotlib colormap name such as 'jet' or 'viridis'.")
    heat = np.clip(np.nan_to_num(heat.astype(np.float64), nan=0.0), 0.0, 1.0)
    colour = colormaps[cmap](heat)[..., :3] * 255.0
    blended = (1.0 - opacity) * image.astype(np.float64) + opacity * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# --- helpers -----------------------------------------------------------------------------------

def _min_max(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """Min-max normalise to [0, 1] along ``dim``; constant slices become 0 (never NaN)."""
    low = scores.amin(dim=dim, keepdim=True)
    spread = scores.amax(dim=dim, keepdim=True) - low
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    return torch.where(spread > 0, (scores - low) / safe, torch.zeros_like(scores))


def _check_grid(grid: tuple[int, int], num_patches: int) -> tuple[int, int]:
    gh, gw = (int(g) for g in grid)
    if gh < 1 or gw < 1 or gh * gw != num_patches:
        raise ValueError(f"grid {tuple(grid)} does not match {num_patches} patch scores (need gh * gw == N; "
                         f"pass only the patch tokens, without token 0).")
    return gh, gw


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be a positive (H, W), got {tuple(size)}.")
    return height, width


def _smoothed_cells(patch_scores, grid: tuple[int, int], downsample: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Bilinear downsample of one label's (gh, gw) map, flattened and min-max normalised."""
    scores = torch.as_tensor(np.asarray(patch_scores) if not isinstance(patch_scores, torch.Tensor) else patch_scores)
    scores = scores.detach().float().cpu()
    if scores.dim() != 1:
        raise ValueError(f"Point prompts take one label's patch scores [N], got shape {tuple(scores.shape)}; "
                         f"select a label, e.g. scores[:, t].")
    gh, gw = _check_grid(grid, scores.shape[0])
    if not isinstance(downsample, int) or downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample!r}.")
    h, w = gh // downsample, gw // downsample
    if h < 1 or w < 1:
        raise ValueError(f"grid {gh}x{gw} is too small to downsample by {downsample}; use a smaller downsample.")
    cells = F.interpolate(scores.reshape(1, 1, gh, gw), size=(h, w), mode="bilinear", align_corners=False)
    return _min_max(cells.reshape(-1), dim=0), (h, w)


THRESHOLD_MODES = ("value", "quantile")


def point_rule(threshold: float, threshold_mode: str, max_points: int | None) -> tuple[float, str, int | None]:
    """Check the point rule's settings (docs/algorithms.md#points-for-sam); returned in order for _extreme_cells
    (the SAM instance split checks its threshold here too)."""
    if threshold_mode not in THRESHOLD_MODES:
        raise ValueError(f"threshold_mode must be 'value' (a level of the min-max scaled cells) or 'quantile' (a "
                         f"quantile of their values), not {threshold_mode!r}.")
    try:
        level = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, not {threshold!r}.") from None
    if level != level:
        raise ValueError("threshold is NaN; give a number between 0 and 1.")
    if threshold_mode == "quantile" and not 0.0 <= level <= 1.0:
        raise ValueError(f"A quantile threshold must be between 0 and 1 (0.9: the top tenth of the cells), "
                         f"not {threshold!r}.")
    if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer))
                                   or max_points < 1):
        raise ValueError(f"max_points must be a whole number >= 1 (positives, and as many negatives), or None for "
                         f"no limit; got {max_points!r}.")
    return level, threshold_mode, None if max_points is None else int(max_points)


def _extreme_cells(cells: torch.Tensor, threshold: float, threshold_mode: str = "value",
                   max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the num highest (highest first) and num lowest (lowest first) cells."""
    if threshold_mode == "quantile":
        # A flat map (all cells 0 after min-max) has no quantile worth pointing at.
        threshold = float(torch.quantile(cells.double(), threshold)) if cells.max() > 0 else math.inf
    num = min(int((cells >= threshold).sum()), cells.numel() // 2)
    if max_points is not None:
        num = min(num, max_points)
    rank = np.argsort(cells.numpy(), kind="stable")  # ascending
    return rank[::-1][:num].copy(), rank[:num].copy()


def _cell_centres(indices: np.ndarray, cell_grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Pixel (x, y) at the centre of each flat cell index, clamped inside the image."""
    height, width = _check_size(size)
    h, w = cell_grid
    rows, cols = np.divmod(np.asarray(indices, dtype=np.int64), w)
    x = np.minimum((cols + 0.5) * (width / w), width - 1)
    y = np.minimum((rows + 0.5) * (height / h), height - 1)
    return np.stack([x, y], axis=1).astype(np.int64).reshape(-1, 2)
