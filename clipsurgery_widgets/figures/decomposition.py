"""Static matplotlib figure of the decomposition explorer: head grid, per-layer bars, head maps.

Pure drawing: every number comes in computed (the widget asks the engine). No pyplot state.
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..engine.maps import overlay
from .output import register_notebook_display
from .layout import Layout, apply_layout
from .style import ABLATED_COLOR, MARKER_COLOR, inset_colorbar, plain_figure

SELECTED_COLOR = MARKER_COLOR
ATTN_COLOR, MLP_COLOR = "#1f77b4", "#ff7f0e"  # attention and MLP bars, here and in the live widget
ABLATED_BAR_COLOR = "#bbbbbb"  # a mean-ablated layer's bar in the live widget (hatched here)


def decomposition_figure(rgb: np.ndarray, label: str, contributions: np.ndarray, layer_attn: np.ndarray,
                         layer_mlp: np.ndarray, full_map: np.ndarray,
                         head_maps: Sequence[tuple[tuple[int, int], np.ndarray, Sequence[str]]] = (),
                         ablated_heads: Sequence[tuple[int, int]] = (), ablated_layers: Sequence[int] = (),
                         ablated_mlps: Sequence[int] = (), selected: tuple[int, int] | None = None,
                         cmap: str = "jet", opacity: float = 0.6, texts_shown: int = 3,
                         layout: Layout = None) -> Figure:
    """Top: the layer x head grid of direct contributions to ``label`` and per-layer bars.
    Bottom: the label's map from all heads, then one map per head in ``head_maps``.

    Args:
        rgb: uint8 [H, W, 3] image.
        contributions: [L, H] each head's direct contribution (its term . label embedding).
        layer_attn: [L] attention layers' contributions; layer_mlp: [L] MLP contributions.
        full_map: [H, W] in [0, 1], the label's map summed over layers and heads.
        head_maps: ((layer, head), [H, W] map in [0, 1], its TEXTSPAN texts) per head to show.
        ablated_*: what is mean-ablated (drawn crossed out / hatched).
        selected: the head outlined in the grid.
        layout: "column", "page", a width in inches or (width, height) (figures/layout.py); None: natural size.
    """
    register_notebook_display()
    contributions = np.asarray(contributions, dtype=np.float64)
    layers, heads = contributions.shape
    panels = 1 + len(head_maps)
    fig = plain_figure(figsize=(max(9.0, 2.8 * panels), 7.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.15])
    grid_ax, bar_ax = top.subplots(1, 2, width_ratios=[max(1.0, heads / layers * 1.2), 2.0])

    bound = float(np.abs(contributions).max()) or 1.0
    image = grid_ax.imshow(contributions, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto",
                           interpolation="nearest")
    grid_ax.set_xlabel("head")
    grid_ax.set_ylabel("layer")
    grid_ax.set_xticks(range(heads))
    grid_ax.set_yticks(range(layers))
    grid_ax.tick_params(labelsize=7)
    grid_ax.set_title(f"Direct contribution to '{label}'", fontsize=10)
    for layer, head in ablated_heads:
        grid_ax.plot(head, layer, marker="x", color=ABLATED_COLOR, markersize=9, mew=2)
    for layer in ablated_layers:
        grid_ax.add_patch(Rectangle((-0.5, layer - 0.5), heads, 1, fill=False, hatch="///", edgecolor=ABLATED_COLOR,
                                    linewidth=0))
    if selected is not None:
        grid_ax.add_patch(Rectangle((selected[1] - 0.5, selected[0] - 0.5), 1, 1, fill=False,
                                    edgecolor=SELECTED_COLOR, linewidth=2.5))
    top.colorbar(image, ax=grid_ax, shrink=0.85, pad=0.02).ax.tick_params(labelsize=7)

    x = np.arange(layers)
    attn_bars = bar_ax.bar(x - 0.2, layer_attn, width=0.4, color=ATTN_COLOR, label="attention")
    mlp_bars = bar_ax.bar(x + 0.2, layer_mlp, width=0.4, color=MLP_COLOR, label="MLP")
    for layer in ablated_layers:
        attn_bars[layer].set_hatch("///")
        attn_bars[layer].set_alpha(0.45)
    for layer in ablated_mlps:
        mlp_bars[layer].set_hatch("///")
        mlp_bars[layer].set_alpha(0.45)
    bar_ax.axhline(0.0, color="black", linewidth=0.6)
    bar_ax.set_xticks(x)
    bar_ax.tick_params(labelsize=7)
    bar_ax.set_xlabel("layer")
    bar_ax.set_title(f"Per-layer contribution to '{label}'", fontsize=10)
    bar_ax.legend(fontsize=8, frameon=False)

    axes = np.atleast_1d(bottom.subplots(1, panels))
    _map_panel(axes[0], rgb, full_map, f"all heads: {label}", cmap, opacity)
    for ax, ((layer, head), heat, texts) in zip(axes[1:], head_maps):
        lines = [textwrap.shorten(t, 34) for t in list(texts)[:texts_shown]]
        title = f"layer {layer}, head {head}" + ("".join(f"\n{t}" for t in lines) if lines else "")
        _map_panel(ax, rgb, heat, title, cmap, opacity)
    inset_colorbar(axes[-1], cmap, "score")
    return apply_layout(fig, layout)


def _map_panel(ax, rgb: np.ndarray, heat: np.ndarray, title: str, cmap: str, opacity: float) -> None:
    if cmap not in colormaps:
        raise ValueError(f"Unknown colour map {cmap!r}; use a matplotlib name such as 'jet'.")
    ax.imshow(overlay(rgb, heat, cmap=cmap, opacity=opacity), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
