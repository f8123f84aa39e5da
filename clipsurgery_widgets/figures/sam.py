"""Static figures of SAM refinement in the style of the paper's figure: image, points, mask.

Positive points are orange and negative points blue (as in the paper); the mask is blended over
the image with its outline drawn. With a heat map, a first panel shows the CLIP Surgery map with
the automatic points it gave. The colours are shared with the SamWidget, so the live view and its
figures agree.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..engine.maps import overlay
from ..engine.regions import region_outline
from .layout import Layout, apply_layout
from .style import BOX_COLOR, MASK_COLOR, NEGATIVE_COLOR, POSITIVE_COLOR, inset_colorbar, new_figure


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, color: str = MASK_COLOR, opacity: float = 0.5) -> np.ndarray:
    """uint8 [H, W, 3]: ``color`` blended over the masked pixels with weight ``opacity``, others unchanged."""
    rgb, mask = _check_image(rgb), _check_mask(mask, rgb.shape[:2])
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}.")
    out = rgb.astype(np.float64)
    out[mask] = (1.0 - opacity) * out[mask] + opacity * np.asarray(to_rgb(color)) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mask_rgba(mask: np.ndarray, color: str = MASK_COLOR) -> np.ndarray:
    """uint8 [H, W, 4]: ``color`` where the mask is set, fully transparent elsewhere."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}.")
    out = np.zeros((*mask.shape, 4), np.uint8)
    out[mask] = [*(int(round(c * 255)) for c in to_rgb(color)), 255]
    return out


def sam_figure(rgb: np.ndarray, points: Any = None, labels: Any = None, mask: np.ndarray | None = None, *,
               box: Any = None, heat: np.ndarray | None = None, auto_points: Any = None, auto_labels: Any = None,
               title: str | None = None, heat_title: str | None = None, mask_color: str = MASK_COLOR,
               opacity: float = 0.5, outline_only: bool = False, cmap: str = "jet", heat_opacity: float = 0.6,
               marker_size: float = 90.0, legend: bool = True, panel_inches: float = 4.0,
               layout: Layout = None) -> Figure:
    """The image with SAM's prompts and mask; with ``heat``, the CLIP Surgery map and its points first.

    Args:
        rgb: uint8 [H, W, 3].
        points: [P, 2] (x, y) pixels; labels: [P], 1 positive (orange) / 0 negative (blue).
        mask: bool [H, W] (e.g. ``SamResult.mask``), or None for no mask.
        box: [x0, y0, x1, y1] box prompt, or None.
        heat: float [H, W] map in [0, 1] (e.g. ``Explanation.maps[0]``): adds a first panel with
            ``auto_points`` / ``auto_labels`` (the points the map gave) over it.
        title, heat_title: panel titles.
        mask_color, opacity: the mask's colour and its weight over the image; ``outline_only``
            draws only its outline.
        cmap, heat_opacity: colour map and weight of the heat map (with a colour bar).
        layout: "column", "page", a width in inches or (width, height) (figures/layout.py); None: natural size.
    """
    rgb = _check_image(rgb)
    points, labels = _check_points(points, labels)
    mask = None if mask is None else _check_mask(mask, rgb.shape[:2])
    panels = 1 if heat is None else 2
    fig = new_figure(1, panels, rgb.shape, panel_inches, pad=(0.4, 0.9))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if heat is not None:
        heat = np.asarray(heat, dtype=np.float64)
        ax = axes[0]
        ax.imshow(overlay(rgb, heat, cmap=cmap, opacity=heat_opacity), interpolation="nearest")
        auto_points, auto_labels = _check_points(auto_points, auto_labels)
        _draw_points(ax, auto_points, auto_labels, marker_size)
        _finish(ax, rgb.shape, heat_title or "CLIP Surgery")
        inset_colorbar(ax, cmap, "score")
    ax = axes[-1]
    shown = rgb if mask is None or outline_only else mask_overlay(rgb, mask, mask_color, opacity)
    ax.imshow(shown, interpolation="nearest")
    if mask is not None:
        for line in region_outline(mask.astype(np.float32), 0.5):
            ax.plot(line[:, 0], line[:, 1], color=mask_color if outline_only else "white",
                    linewidth=2.0 if outline_only else 1.2)
    if box is not None:
        x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=BOX_COLOR, linewidth=2.0))
    _draw_points(ax, points, labels, marker_size)
    _finish(ax, rgb.shape, title or "SAM")
    if legend:
        handles = [Line2D([], [], marker="o", linestyle="none", markerfacecolor=c, markeredgecolor="white",
                          markersize=8, label=name)
                   for c, name in ((POSITIVE_COLOR, "positive point"), (NEGATIVE_COLOR, "negative point"))]
        if mask is not None:
            handles.append(Patch(facecolor=mask_color, edgecolor="none", label="mask"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    return apply_layout(fig, layout)


# --- helpers -----------------------------------------------------------------------------------

def _draw_points(ax, points: np.ndarray, labels: np.ndarray, size: float) -> None:
    for value, color in ((1, POSITIVE_COLOR), (0, NEGATIVE_COLOR)):
        chosen = points[labels == value]
        if len(chosen):
            ax.scatter(chosen[:, 0], chosen[:, 1], s=size, c=color, marker="o", edgecolors="white",
                       linewidths=1.5, zorder=3)


def _finish(ax, shape: tuple[int, ...], title: str) -> None:
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)


def _check_image(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be a uint8 [H, W, 3] array, got {rgb.dtype} {rgb.shape}; "
                         f"use engine.load_image to read it.")
    return rgb


def _check_mask(mask: Any, size: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(size):
        raise ValueError(f"mask shape {mask.shape} does not match the image's {tuple(size)}; pass a mask of this "
                         f"image (e.g. SamResult.mask).")
    return mask.astype(bool)


def _check_points(points: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    points = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64)
    if points.size == 0:
        points = np.zeros((0, 2))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be [P, 2] (x, y) pixels, got shape {points.shape}.")
    labels = np.ones(len(points), np.uint8) if labels is None else np.asarray(labels).reshape(-1)
    if len(labels) != len(points):
        raise ValueError(f"{len(points)} points but {len(labels)} labels: give one label per point "
                         f"(1 positive, 0 negative).")
    return points, labels
