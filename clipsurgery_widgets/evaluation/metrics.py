"""Segmentation metrics from one confusion matrix (docs/algorithms.md#evaluation-protocol).

The confusion matrix M [C, C] counts pixels with ground truth c (row) predicted as c' (column),
over every evaluated pixel of a dataset (ground truth 255 ignored). From it:
IoU_c = M_cc / (row_c + column_c - M_cc), null where that union is 0; mIoU = mean of the
non-null IoU_c; pixel accuracy = trace / total. Per item the matrix is stored sparsely (flat
index, count) so 171-class runs stay small on disk; merging adds counts, which is exact.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(target: np.ndarray, prediction: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Counts int64 [C, C] (row = ground truth, column = prediction) over pixels with target != ignore.

    Args:
        target: int [H, W] class indices 0..C-1 or ``ignore_index``.
        prediction: int [H, W] class indices 0..C-1.
    """
    index, count = confusion_entries(target, prediction, num_classes, ignore_index)
    return dense_confusion([(index, count)], num_classes)


def confusion_entries(target: np.ndarray, prediction: np.ndarray, num_classes: int,
                      ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero cells of the confusion matrix: (flat index target * C + prediction [K], count [K])."""
    target = np.asarray(target).astype(np.int64, copy=False).ravel()
    prediction = np.asarray(prediction).astype(np.int64, copy=False).ravel()
    if target.shape != prediction.shape:
        raise ValueError(f"target and prediction differ in size ({target.size} and {prediction.size} pixels)")
    keep = target != ignore_index
    target, prediction = target[keep], prediction[keep]
    for name, values in (("target", target), ("prediction", prediction)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside 0..{num_classes - 1} (besides {ignore_index}): "
                             f"{np.unique(values[(values < 0) | (values >= num_classes)])[:8].tolist()}")
    flat = np.bincount(target * num_classes + prediction, minlength=num_classes * num_classes)
    index = np.flatnonzero(flat)
    return index.astype(np.int64), flat[index].astype(np.int64)


def dense_confusion(entries: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """Sum sparse confusion entries (flat index, count) into one int64 matrix [C, C]."""
    total = np.zeros(num_classes * num_classes, dtype=np.int64)
    for index, count in entries:
        np.add.at(total, np.asarray(index, dtype=np.int64), np.asarray(count, dtype=np.int64))
    return total.reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU per class, float64 [C]; NaN where the class is in neither ground truth nor prediction."""
    confusion = np.asarray(confusion, dtype=np.int64)
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)


def segmentation_scores(confusion: np.ndarray) -> dict:
    """mIoU, per-class IoU (None where the union is empty), pixel accuracy and pixel count of a matrix."""
    confusion = np.asarray(confusion, dtype=np.int64)
    iou = per_class_iou(confusion)
    total = int(confusion.sum())
    valid = ~np.isnan(iou)
    return {
        "miou": float(iou[valid].mean()) if valid.any() else None,
        "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
        "pixel_accuracy": float(np.trace(confusion) / total) if total else None,
        "pixels": total,
    }
