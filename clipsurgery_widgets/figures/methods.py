"""The methods-compared grid: labels as rows, dense methods as columns, as in the papers' figures.

Draws the maps of an Explanation computed with several methods (``Explainer.explain(..., methods=[...])``);
it computes nothing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..engine.maps import overlay
from ..engine.results import Explanation
from .layout import Layout, apply_layout
from .style import DEFAULT_CMAP, DEFAULT_OPACITY, grid_colorbar, method_name, new_figure


def methods_grid(rgb: np.ndarray, explanation: Explanation, methods: Sequence[str] | None = None,
                 labels: Sequence[str] | None = None, cmap: str = DEFAULT_CMAP, opacity: float = DEFAULT_OPACITY,
                 show_image: bool = True, panel_inches: float = 2.2, layout: Layout = None) -> Figure:
    """One row per label, one column per method (plus the photo first when ``show_image``).

    rgb: uint8 [H, W, 3], the explained image. methods: names in ``explanation.by_method``
    (default: all of them, in the order computed). labels: default all. A colour bar gives the maps'
    scale. layout: "column", "page", a width in inches or (width, height) (figures/layout.py).
    """
    methods = list(explanation.by_method) if methods is None else [methods] if isinstance(methods, str) \
        else list(methods)
    labels = list(explanation.labels) if labels is None else [labels] if isinstance(labels, str) else list(labels)
    if not methods or not labels:
        raise ValueError("Nothing to draw: pass at least one method and one label of the explanation.")
    maps = {m: explanation.mapset(m) for m in methods}  # raises a clear error for a method not computed
    unknown = [label for label in labels if label not in explanation.labels]
    if unknown:
        raise ValueError(f"Label(s) {', '.join(map(repr, unknown))} not in this explanation "
                         f"({', '.join(explanation.labels)}).")
    rgb = np.asarray(rgb)
    if rgb.shape[:2] != tuple(explanation.image_size):
        raise ValueError(f"The image is {rgb.shape[0]}x{rgb.shape[1]} but the explanation is for "
                         f"{explanation.image_size[0]}x{explanation.image_size[1]}; pass the same image.")
    columns = (["image"] if show_image else []) + methods
    fig = new_figure(len(labels), len(columns), rgb.shape, panel_inches, pad=(0.8, 0.5))
    axes = np.atleast_2d(fig.subplots(len(labels), len(columns), squeeze=False))
    for row, label in enumerate(labels):
        index = explanation.labels.index(label)
        for col, column in enumerate(columns):
            ax = axes[row, col]
            shown = rgb if column == "image" else overlay(rgb, maps[column].map_at(index), cmap=cmap, opacity=opacity)
            ax.imshow(shown, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if row == 0:
                ax.set_title("image" if column == "image" else method_name(column), fontsize=10)
            if col == 0:
                ax.set_ylabel(label, fontsize=10)
    grid_colorbar(fig, axes, cmap)  # a bad cmap was refused by overlay() above
    return apply_layout(fig, layout)
