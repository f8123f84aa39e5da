"""Average precision (docs/algorithms.md#evaluation-protocol).

AP of a ranking = sum over the distinct score thresholds, from the highest down, of
(recall gained) x (precision there): AP = sum_n (R_n - R_{n-1}) P_n, equal scores forming one step
(the step-wise area of scikit-learn and torchmetrics, no interpolation). Targets of -1 are left
out (VOC's "difficult" images). A ranking with no positive has no AP (None), and macro mAP skips it.

Per-item scores and targets are what merges exactly across processes: the multi-label task keeps
them per image and computes AP once over the whole set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """AP of ``scores`` (float [N]) against ``targets`` ([N]: 1 positive, 0 negative, -1 left out).

    Returns None when no positive is left.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).reshape(-1)
    if scores.shape != targets.shape:
        raise ValueError(f"scores ({scores.size}) and targets ({targets.size}) must have one entry per item.")
    keep = targets >= 0
    scores, positive = scores[keep], targets[keep] > 0
    total = int(positive.sum())
    if total == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    # The last index of every run of equal scores: a threshold admits the whole run at once.
    ends = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    true_pos = np.cumsum(positive)[ends].astype(np.float64)
    precision = true_pos / (ends + 1)
    recall_gain = np.diff(np.r_[0.0, true_pos]) / total
    return float(np.sum(recall_gain * precision))


def label_average_precision(scores: np.ndarray, targets: np.ndarray) -> list[float | None]:
    """AP of each label (column) of ``scores`` [N, T] against ``targets`` [N, T]; None without positives."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be [images, labels].")
    return [average_precision(scores[:, t], targets[:, t]) for t in range(scores.shape[1])]


def mean_average_precision(scores: np.ndarray, targets: np.ndarray,
                           label_names: Sequence[str] | None = None) -> dict:
    """Macro mAP over labels with at least one positive, and each label's AP.

    Returns {"map": float or None, "per_label_ap": {name: AP or None}, "labels_scored": int}.
    """
    per_label = label_average_precision(scores, targets)
    names = list(label_names) if label_names is not None else [str(i) for i in range(len(per_label))]
    if len(names) != len(per_label):
        raise ValueError(f"{len(names)} label names for {len(per_label)} score columns.")
    scored = [ap for ap in per_label if ap is not None]
    return {"map": float(np.mean(scored)) if scored else None, "labels_scored": len(scored),
            "per_label_ap": dict(zip(names, per_label))}
