"""One SAM prompt per object: split a surgery map into connected regions (pure functions of the map)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..maps import point_rule
from .prompts import as_numpy
from .results import SamResult, frozen


@dataclass(frozen=True)
class InstancePrompt:
    """Prompts for one connected region of a thresholded surgery map.

    points: int64 [P, 2] (x, y); labels: uint8 [P]; region: bool [gh, gw] the region's grid cells;
    peak: its highest min-max normalised score; cells: its number of grid cells.
    """

    points: np.ndarray
    labels: np.ndarray
    region: np.ndarray
    peak: float
    cells: int


@dataclass(frozen=True)
class InstanceMasks:
    """One SAM call per region: ``prompts[i]`` produced ``results[i]``."""

    prompts: tuple[InstancePrompt, ...]
    results: tuple[SamResult, ...]

    @property
    def masks(self) -> np.ndarray:
        """Best mask per instance, bool [K, H, W] (K may be 0)."""
        if not self.results:
            return np.zeros((0, 0, 0), dtype=bool)
        return np.stack([r.mask for r in self.results])

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.results], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.results)


def cell_to_pixel(rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Grid cell centres -> int64 [K, 2] (x, y) pixels, the mapping of docs/algorithms.md#points-for-sam."""
    (gh, gw), (h, w) = grid, size
    x = np.minimum((cols + 0.5) * w / gw, w - 1).astype(np.int64)
    y = np.minimum((rows + 0.5) * h / gh, h - 1).astype(np.int64)
    return np.stack([x, y], axis=1)


def instance_prompts(patch_scores: Any, grid: tuple[int, int], image_size: tuple[int, int], threshold: float = 0.8,
                     *, points_per_instance: int = 3, num_negatives: int = 3, min_cells: int = 1,
                     max_instances: int | None = None, other_peaks_negative: bool = True,
                     threshold_mode: str = "value") -> list[InstancePrompt]:
    """Split a surgery map into connected regions and build SAM prompts for each.

    The patch scores [N] (N = gh * gw, row-major) are min-max normalised and thresholded at
    ``threshold`` (``threshold_mode`` "quantile": at that quantile of the normalised values); regions
    are 8-connected groups of cells at or above it, largest peak first. Each
    region gets its ``points_per_instance`` highest cells as positives; every region shares the
    ``num_negatives`` lowest cells of the whole map as negatives, plus (``other_peaks_negative``)
    the peak cell of every other region, which tells SAM to keep the instances apart. A flat map
    has no regions.
    """
    from scipy import ndimage

    gh, gw = int(grid[0]), int(grid[1])
    scores = as_numpy(patch_scores).astype(np.float64).reshape(-1)
    if scores.size != gh * gw:
        raise ValueError(f"patch_scores has {scores.size} values but grid {gh}x{gw} needs {gh * gw}: pass the patch "
                         f"scores of one label (tokens 1..N) and that explanation's grid.")
    if points_per_instance < 1 or num_negatives < 0:
        raise ValueError("points_per_instance must be >= 1 and num_negatives >= 0.")
    if max_instances is not None and max_instances < 1:
        raise ValueError(f"max_instances must be >= 1 (or None for every region), not {max_instances!r}.")
    level = instance_level(threshold, threshold_mode)
    grid_map = scores.reshape(gh, gw)
    lo, hi = grid_map.min(), grid_map.max()
    if not hi > lo:
        return []  # a flat map marks no region
    norm = (grid_map - lo) / (hi - lo)
    if threshold_mode == "quantile":
        level = float(np.quantile(norm, level))
    regions, count = ndimage.label(norm >= level, structure=np.ones((3, 3), dtype=bool))

    found = []
    for k in range(1, count + 1):
        cells = regions == k
        if cells.sum() >= min_cells:
            found.append((float(norm[cells].max()), cells))
    found.sort(key=lambda item: -item[0])
    if max_instances is not None:
        found = found[:max_instances]

    flat = norm.reshape(-1)
    lowest = np.argsort(flat, kind="stable")[:num_negatives]
    peaks = [int(np.flatnonzero(cells.reshape(-1))[np.argmax(flat[cells.reshape(-1)])]) for _, cells in found]
    out = []
    for i, (peak, cells) in enumerate(found):
        members = np.flatnonzero(cells.reshape(-1))
        top = members[np.argsort(-flat[members], kind="stable")[:points_per_instance]]
        negatives = list(lowest)
        if other_peaks_negative:
            negatives += [p for j, p in enumerate(peaks) if j != i]
        idx = np.concatenate([top, np.asarray(negatives, dtype=np.int64)])
        points = cell_to_pixel(idx // gw, idx % gw, (gh, gw), image_size)
        labels = np.concatenate([np.ones(len(top), np.uint8), np.zeros(len(negatives), np.uint8)])
        out.append(InstancePrompt(frozen(points), frozen(labels), frozen(cells), peak, int(cells.sum())))
    return out


def instance_level(threshold: float, threshold_mode: str) -> float:
    """Check an instance threshold: a level in [0, 1] of the min-max scaled map, or a quantile in [0, 1]."""
    level, _, _ = point_rule(threshold, threshold_mode, None)  # the map points' checks: mode, number, quantile range
    if not 0.0 <= level <= 1.0:
        kind = "a quantile" if threshold_mode == "quantile" else "a level of the min-max scaled map"
        raise ValueError(f"The instance threshold must be between 0 and 1 ({kind}), not {threshold!r}.")
    return level
