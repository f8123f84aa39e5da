"""Evaluation figures: per-class IoU bars per method, and a grid of the best and worst images.

Receives plain numbers and arrays (an EvaluationResult's ``per_class()``, images, label maps,
heat maps); computes nothing.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .layout import Layout, apply_layout
from .output import register_notebook_display
from .segmentation import class_colors
from .style import DEFAULT_CMAP, METHOD_NAMES, inset_colorbar, label_colors, new_figure


def per_class_iou_figure(class_names: Sequence[str], per_class: Mapping[str, Sequence[float | None]],
                         title: str | None = None, max_classes: int = 40, inches_per_class: float = 0.32,
                         layout: Layout = None) -> Figure:
    """Horizontal bars of each class's IoU (percent), one bar per method, classes top to bottom.

    per_class: method -> IoU per class in [0, 1] (None: the class was never in ground truth nor
    prediction; drawn as no bar with "n/a"). With more than ``max_classes`` classes, those with
    the highest mean IoU over methods are shown. layout: "column", "page", a width in inches or
    (width, height) (figures/layout.py); None: natural size.
    """
    methods = list(per_class)
    if not methods:
        raise ValueError("per_class is empty: pass {method: [IoU per class]} (EvaluationResult.per_class()).")
    values = np.array([[np.nan if v is None else float(v) for v in per_class[m]] for m in methods])  # [M, C]
    if values.shape[1] != len(class_names):
        raise ValueError(f"{len(class_names)} class names but {values.shape[1]} IoU values per method.")
    shown = np.arange(len(class_names))
    if len(shown) > max_classes:
        score = np.nan_to_num(values, nan=-1.0).mean(0)  # classes never seen sort last
        shown = np.sort(np.argsort(-score, kind="stable")[:max_classes])
    register_notebook_display()
    fig = Figure(figsize=(7.5, 1.2 + inches_per_class * len(shown) * max(1, len(methods) / 2)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(methods)
    colors = label_colors(len(methods))
    rows = np.arange(len(shown))
    for k, method in enumerate(methods):
        offsets = rows - 0.4 + (k + 0.5) * height
        bars = np.nan_to_num(values[k, shown] * 100)
        ax.barh(offsets, bars, height=height, color=colors[k], label=METHOD_NAMES.get(method, method))
        for y, v in zip(offsets, values[k, shown]):
            if np.isnan(v):
                ax.text(1, y, "n/a", va="center", fontsize=7, color="#777777")
    ax.set_yticks(rows, [class_names[i] for i in shown], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title(title or "Per-class IoU", fontsize=11)
    return apply_layout(fig, layout)


def best_worst_figure(rows: Sequence[Mapping], class_names: Sequence[str], opacity: float = 0.6,
                      panel_inches: float = 2.4, cmap: str = DEFAULT_CMAP, layout: Layout = None) -> Figure:
    """One row per image: photo, ground truth, prediction, and the method's map of one class.

    Each row is a mapping with ``rgb`` (uint8 [H, W, 3]), ``truth`` (int [H, W], 255 = ignored,
    drawn black), ``prediction`` (int [H, W]), optionally ``map`` (float [H, W] in [0, 1]) and
    ``map_label`` (its class name), and ``title`` (e.g. "best 1: img3, mIoU 41.2%"). The map column has a
    colour bar. layout: "column", "page", a width in inches or (width, height) (figures/layout.py).
    """
    if not rows:
        raise ValueError("No images to draw: pass at least one row (rgb, truth, prediction, ...).")
    count = len(class_names)
    columns = 4 if any(r.get("map") is not None for r in rows) else 3
    fig = new_figure(len(rows), columns, np.asarray(rows[0]["rgb"]).shape, panel_inches, pad=(0.3, 0.5))
    axes = np.asarray(fig.subplots(len(rows), columns, squeeze=False))
    for r, row in enumerate(rows):
        rgb = np.asarray(row["rgb"])
        truth = np.asarray(row["truth"])
        ignored = truth == 255
        truth_image = class_colors(np.where(ignored, 0, truth), count, 1.0, rgb)
        truth_image[ignored] = 0
        panels = [(rgb, row.get("title", "image")), (truth_image, "ground truth"),
                  (class_colors(np.asarray(row["prediction"]), count, opacity, rgb), "prediction")]
        for c, (image, text) in enumerate(panels):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].set_title(text, fontsize=9)
        if columns == 4:
            score_map = row.get("map")
            if score_map is not None:
                axes[r, 3].imshow(rgb)
                axes[r, 3].imshow(np.asarray(score_map), cmap=cmap, vmin=0, vmax=1, alpha=opacity)
                axes[r, 3].set_title(f"map: {row.get('map_label', '')}", fontsize=9)
        for ax in axes[r]:
            ax.set_axis_off()
    with_map = [r for r, row in enumerate(rows) if row.get("map") is not None]
    if with_map:  # a child of the first map panel: fig.axes keeps one entry per panel
        inset_colorbar(axes[with_map[0], 3], cmap, "score")
    return apply_layout(fig, layout)


def present_classes(truth: np.ndarray, ignore_index: int = 255) -> list[int]:
    """Classes in a ground-truth map, most pixels first (for picking which map to show)."""
    values, counts = np.unique(np.asarray(truth), return_counts=True)
    keep = values != ignore_index
    return [int(v) for v in values[keep][np.argsort(-counts[keep], kind="stable")]]
