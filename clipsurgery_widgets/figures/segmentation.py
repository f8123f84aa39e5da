"""A segmentation as a figure: the photo, the colour-coded class map over it, and a legend.

Receives plain arrays (``Segmentation.labels.numpy()``) and display names; computes nothing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .layout import Layout, apply_layout
from .style import label_colors, new_figure


def class_colors(labels: np.ndarray, count: int, opacity: float, rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: each pixel's class colour blended over the photo with weight ``opacity``."""
    palette = (label_colors(count) * 255).astype(np.float32)
    painted = palette[labels]
    return np.clip((1 - opacity) * rgb.astype(np.float32) + opacity * painted, 0, 255).astype(np.uint8)


def class_map_figure(rgb: np.ndarray, labels: np.ndarray, class_names: Sequence[str], opacity: float = 0.6,
                     legend: str = "present", title: str | None = None, panel_inches: float = 4.0,
                     layout: Layout = None) -> Figure:
    """Photo and its class map side by side, with a legend of the classes shown.

    rgb: uint8 [H, W, 3]; labels: int [H, W] class indices into ``class_names``;
    legend: "present" (classes that occur) or "all". layout: "column", "page", a width in inches or
    (width, height) (figures/layout.py); None: natural size.
    """
    rgb, labels = np.asarray(rgb), np.asarray(labels)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels must be [H, W] matching the image {rgb.shape[:2]}, got {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels hold class indices up to {int(labels.max())} but only {len(class_names)} "
                         f"class names were given.")
    if legend not in ("present", "all"):
        raise ValueError(f"legend must be 'present' or 'all', not {legend!r}.")
    fig = new_figure(1, 2, rgb.shape, panel_inches, pad=(2.2, 0.6))
    left, right = fig.subplots(1, 2)
    left.imshow(rgb)
    right.imshow(class_colors(labels, len(class_names), opacity, rgb), interpolation="nearest")
    for ax, text in ((left, "image"), (right, title or "segmentation")):
        ax.set_axis_off()
        ax.set_title(text, fontsize=11)
    colors = label_colors(len(class_names))
    shown = range(len(class_names)) if legend == "all" else np.unique(labels)
    handles = [Patch(facecolor=colors[i], edgecolor="none", label=class_names[i]) for i in shown]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    return apply_layout(fig, layout)
