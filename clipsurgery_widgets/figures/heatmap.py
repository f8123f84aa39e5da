"""Static matplotlib figures of explanations, for papers and slides.

Shared by the widgets' ``figure()`` and the ``clipsurgery`` command line. Figures are built with
``matplotlib.figure.Figure`` (no pyplot state, no GUI backend), so they are safe in scripts,
threads and notebooks alike; display one in Jupyter by making it the cell's value.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..engine.maps import overlay
from ..engine.regions import region_outline
from ..engine.results import Explanation
from .layout import Layout, apply_layout
from .style import METHOD_NAMES, OUTLINE_COLOR, checked_rgb, grid_colorbar, label_colors, method_name, new_figure

# The two original methods' titles (kept for callers); every method's display name is style.method_name.
METHOD_TITLES = {"raw": "raw CLIP", "surgery": "CLIP Surgery"}
_PANEL_INCHES = 2.6


def explanation_grid(rgb: np.ndarray, explanation: Explanation, methods: Sequence[str] = ("raw", "surgery"),
                     labels: Sequence[str] | None = None, cmap: str = "jet", opacity: float = 0.6,
                     threshold: float | None = None, show_image: bool = True,
                     panel_inches: float = _PANEL_INCHES, layout: Layout = None) -> Figure:
    """One row per label; columns: the image, then one overlay per method (raw CLIP, CLIP Surgery, ...).

    Args:
        rgb: uint8 [H, W, 3], the image the explanation was computed for.
        explanation: from ``Explainer.explain(..., method="both")`` (or with the methods asked for).
        methods: which map sets to show, in column order: any dense method the explanation holds
            ("raw", "surgery" or "clip_surgery", "sclip", ...; docs/algorithms.md#dense-methods).
        labels: rows to show (default every label of the explanation).
        cmap, opacity: colour map of the heat maps and their weight over the image.
        threshold: when given, outline the region where the map is >= threshold.
        show_image: include the plain image as the first column.
        layout: "column" (3.5 in wide), "page" (7 in), a width in inches or (width, height): size,
            fonts and height for print (figures/layout.py); None keeps ``panel_inches`` per panel.
    """
    rgb = _check_image(rgb, explanation)
    methods = _check_methods(explanation, methods)
    labels = _check_labels(explanation, labels)
    columns = (["image"] if show_image else []) + list(methods)
    fig = new_figure(len(labels), len(columns), rgb.shape, panel_inches)
    axes = fig.subplots(len(labels), len(columns), squeeze=False)
    for row, label in enumerate(labels):
        for col, column in enumerate(columns):
            ax = axes[row, col]
            heat = None if column == "image" else explanation.map_for(label, column)
            _draw_panel(ax, rgb, heat, cmap, opacity, threshold)
            if row == 0:
                ax.set_title("image" if column == "image" else method_name(column), fontsize=11)
            if col == 0:
                ax.text(-0.04, 0.5, label, transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=11)
    grid_colorbar(fig, axes, cmap)
    return apply_layout(fig, layout)


def label_grid(rgb: np.ndarray, explanation: Explanation, method: str = "surgery",
               labels: Sequence[str] | None = None, cmap: str = "jet", opacity: float = 0.6,
               threshold: float | None = None, ncols: int | None = None,
               panel_inches: float = _PANEL_INCHES, layout: Layout = None) -> Figure:
    """One overlay panel per label (one method, any the explanation holds), titled with the label, sharing a colour bar.

    layout: as for :func:`explanation_grid`.
    """
    rgb = _check_image(rgb, explanation)
    (method,) = _check_methods(explanation, (method,))
    labels = _check_labels(explanation, labels)
    ncols = ncols or min(len(labels), max(1, math.ceil(math.sqrt(len(labels) * 1.5))))
    nrows = math.ceil(len(labels) / ncols)
    fig = new_figure(nrows, ncols, rgb.shape, panel_inches)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(labels):
            ax.set_axis_off()
            continue
        _draw_panel(ax, rgb, explanation.map_for(labels[index], method), cmap, opacity, threshold)
        ax.set_title(labels[index], fontsize=10)
    if len(labels) > 1 or ncols > 1:
        fig.suptitle(method_name(method), fontsize=12)
    grid_colorbar(fig, axes, cmap)
    return apply_layout(fig, layout)


def overlay_figure(rgb: np.ndarray, explanation: Explanation, label: str, method: str = "surgery",
                   cmap: str = "jet", opacity: float = 0.6, threshold: float | None = None,
                   panel_inches: float = 4.0, layout: Layout = None) -> Figure:
    """A single overlay of one label, titled "<method>: <label>", with a colour bar (layout: as for explanation_grid)."""
    fig = label_grid(rgb, explanation, method, [label], cmap, opacity, threshold, ncols=1,
                     panel_inches=panel_inches)
    fig.axes[0].set_title(f"{method_name(method)}: {label}", fontsize=11)
    return apply_layout(fig, layout)


def segmentation_figure(rgb: np.ndarray, explanation: Explanation, method: str = "surgery",
                        opacity: float = 0.5, legend: str = "present", panel_inches: float = 4.0,
                        layout: Layout = None) -> Figure:
    """The argmax label per pixel, one colour per label over the image, with a legend.

    legend: "present" lists only labels that win somewhere; "all" lists every label.
    layout: as for :func:`explanation_grid`.
    """
    rgb = _check_image(rgb, explanation)
    (method,) = _check_methods(explanation, (method,))
    if legend not in ("present", "all"):
        raise ValueError(f"legend must be 'present' or 'all', not {legend!r}.")
    segmentation = np.asarray(explanation.segmentation(method))
    colors = label_colors(len(explanation.labels))
    painted = np.round(colors[segmentation] * 255.0)
    blended = np.clip(np.rint((1 - opacity) * rgb + opacity * painted), 0, 255).astype(np.uint8)
    fig = new_figure(1, 1, rgb.shape, panel_inches)
    ax = fig.subplots()
    ax.imshow(blended, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{method_name(method)}: argmax segmentation", fontsize=11)
    shown = range(len(explanation.labels)) if legend == "all" else np.unique(segmentation)
    handles = [Patch(facecolor=colors[i], edgecolor="none", label=explanation.labels[i]) for i in shown]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    return apply_layout(fig, layout)



# --- helpers -----------------------------------------------------------------------------------

def _draw_panel(ax, rgb: np.ndarray, heat: np.ndarray | None, cmap: str, opacity: float,
                threshold: float | None) -> None:
    ax.imshow(rgb if heat is None else overlay(rgb, heat, cmap=cmap, opacity=opacity), interpolation="nearest")
    if heat is not None and threshold is not None:
        for line in region_outline(heat, threshold):
            ax.plot(line[:, 0], line[:, 1], color=OUTLINE_COLOR, linewidth=1.5)
    ax.set_axis_off()




def _check_image(rgb: np.ndarray, explanation: Explanation) -> np.ndarray:
    return checked_rgb(rgb, explanation.image_size, "the explanation")


def _check_methods(explanation: Explanation, methods: Sequence[str]) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError("methods is empty: pass ('raw', 'surgery') or one of them.")
    for method in methods:
        if method not in METHOD_NAMES and method != "surgery":
            raise ValueError(f"Unknown method {method!r}; use 'surgery' or one of {', '.join(METHOD_NAMES)}.")
        try:
            explanation.mapset(method)  # every method is read through mapset
        except ValueError:
            have = ", ".join(explanation.by_method) or ", ".join(
                m for m in ("raw", "surgery") if getattr(explanation, m) is not None)
            raise ValueError(f"This explanation has no {method!r} maps (it has: {have}); explain with "
                             f"method='both' (raw and CLIP Surgery) or methods=[{method!r}, ...].") from None
    return methods


def _check_labels(explanation: Explanation, labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return list(explanation.labels)
    labels = [labels] if isinstance(labels, str) else list(labels)
    unknown = [label for label in labels if label not in explanation.labels]
    if unknown:
        raise ValueError(f"Label(s) {', '.join(map(repr, unknown))} not in this explanation "
                         f"({', '.join(explanation.labels)}).")
    if not labels:
        raise ValueError("labels is empty: pass at least one label of the explanation.")
    return labels


