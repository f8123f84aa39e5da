"""Explainability metrics of CLIP Surgery's paper as this toolkit defines them
(docs/algorithms.md#evaluation-protocol).

For every (image, label present in the ground truth) pair the label's map, min-max normalised to
[0, 1], is compared with the label's mask:

- foreground IoU at threshold t: (map >= t) against the mask, for t in 0.00, 0.05, ..., 0.95;
  mIoU = the best over t of the mean IoU over all pairs (one threshold per dataset and method);
- mSC = mean over pairs of (mean map inside the mask - mean map outside it).

Per pair the stats are integer pixel counts (intersection and union per threshold) and float64
sums, so that results computed in several processes merge exactly: concatenate the pairs.
torchmetrics has neither metric, so they are written here and tested against hand-computed values.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# 0.00, 0.05, ..., 0.95 (rounded so that 0.15 is 0.15, not 0.15000000000000002).
THRESHOLDS: np.ndarray = np.round(np.arange(20) * 0.05, 2)

STAT_NAMES = ("intersection", "union", "inside_sum", "inside_count", "outside_sum", "outside_count", "label")


def pair_stats(score_map: np.ndarray, mask: np.ndarray, valid: np.ndarray | None = None,
               thresholds: Sequence[float] = THRESHOLDS) -> dict[str, np.ndarray]:
    """Counts and sums of one (image, label) pair.

    Args:
        score_map: float [H, W], the label's min-max normalised map.
        mask: bool [H, W], the label's ground-truth pixels.
        valid: bool [H, W], pixels that count (None = all; ignored ground truth is left out).
        thresholds: the K thresholds t of the foreground IoU.

    Returns:
        intersection, union: int64 [K] pixel counts of (map >= t) & mask and (map >= t) | mask;
        inside_sum, outside_sum: float64 [] sums of the map inside / outside the mask;
        inside_count, outside_count: int64 [] their pixel counts.
    """
    score_map, mask = np.asarray(score_map), np.asarray(mask, dtype=bool)
    if score_map.shape != mask.shape:
        raise ValueError(f"The map {score_map.shape} and the mask {mask.shape} must have the same [H, W] size.")
    keep = np.ones(mask.shape, bool) if valid is None else np.asarray(valid, dtype=bool)
    values = score_map[keep].astype(np.float64)
    inside = mask[keep]
    order = np.sort(values)  # counts of values >= t for every t by one binary search each
    inside_sorted = np.sort(values[inside])
    t = np.asarray(thresholds, dtype=np.float64)
    predicted = order.size - np.searchsorted(order, t, side="left")
    intersection = inside_sorted.size - np.searchsorted(inside_sorted, t, side="left")
    union = predicted + inside_sorted.size - intersection
    return {"intersection": intersection.astype(np.int64), "union": union.astype(np.int64),
            "inside_sum": np.float64(values[inside].sum()), "inside_count": np.int64(inside.sum()),
            "outside_sum": np.float64(values[~inside].sum()), "outside_count": np.int64((~inside).sum())}


def stack_pairs(pairs: Sequence[dict[str, np.ndarray]], labels: Sequence[int],
                num_thresholds: int = len(THRESHOLDS)) -> dict[str, np.ndarray]:
    """The stats of P pairs as arrays with a leading pair axis (P may be 0), plus their label index [P]."""
    if len(pairs) != len(labels):
        raise ValueError(f"{len(pairs)} pairs but {len(labels)} labels: give one label index per pair.")
    out = {}
    for name in STAT_NAMES[:-1]:
        if pairs:
            out[name] = np.stack([np.asarray(p[name]) for p in pairs])
        else:
            kind = np.float64 if name.endswith("_sum") else np.int64
            out[name] = np.zeros((0, num_thresholds) if name in ("intersection", "union") else (0,), kind)
    out["label"] = np.asarray(labels, dtype=np.int64).reshape(-1)
    return out


def concat_pairs(stats: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pairs of several images (or processes) in one set: the exact merge (concatenation, in order)."""
    stats = list(stats)
    if not stats:
        return stack_pairs([], [])
    return {name: np.concatenate([np.asarray(s[name]) for s in stats]) for name in STAT_NAMES}


def pair_iou(stats: dict[str, np.ndarray]) -> np.ndarray:
    """float64 [P, K] foreground IoU of every pair at every threshold (0 where the union is empty)."""
    inter, union = stats["intersection"].astype(np.float64), stats["union"].astype(np.float64)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def pair_contrast(stats: dict[str, np.ndarray]) -> np.ndarray:
    """float64 [P] mean map inside minus mean map outside per pair (an empty side counts as 0)."""
    def mean(total, count):
        total, count = np.asarray(total, np.float64), np.asarray(count, np.float64)
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return mean(stats["inside_sum"], stats["inside_count"]) - mean(stats["outside_sum"], stats["outside_count"])


def explain_scores(stats: dict[str, np.ndarray], class_names: Sequence[str] | None = None,
                   thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """mIoU at the best threshold, mSC, and per-class foreground IoU at that threshold.

    Returns a JSON-able dict: miou, threshold, msc, pairs, iou_by_threshold (mean IoU at every t),
    per_class_iou (a list in class order: the mean over the class's pairs at the chosen threshold,
    None for classes without a pair) when ``class_names`` are given. With no pair at all, miou and msc are None.
    """
    thresholds = [float(t) for t in thresholds]
    pairs = int(stats["label"].shape[0])
    out = {"pairs": pairs}
    if pairs == 0:
        out.update(miou=None, threshold=None, msc=None, iou_by_threshold=[None] * len(thresholds))
        if class_names is not None:
            out["per_class_iou"] = [None] * len(class_names)
        return out
    iou = pair_iou(stats)
    by_threshold = iou.mean(axis=0)
    best = int(np.argmax(by_threshold))  # the lowest threshold among equals
    out.update(miou=float(by_threshold[best]), threshold=thresholds[best], msc=float(pair_contrast(stats).mean()),
               iou_by_threshold=[float(v) for v in by_threshold])
    if class_names is not None:
        labels = stats["label"]
        out["per_class_iou"] = [float(iou[labels == c, best].mean()) if np.any(labels == c) else None
                                for c in range(len(class_names))]
    return out
