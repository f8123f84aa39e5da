"""Static matplotlib figures of q-k versus v-v attention (the paper's Figure 1 and companions), and of
the attention each dense method uses (docs/algorithms.md#dense-methods).

Renderers only: the rows and statistics come from :mod:`clipsurgery_widgets.engine.attention` and
:mod:`clipsurgery_widgets.engine.method_rows`.
Maps are shown per patch (nearest, no interpolation), each divided by its own largest patch value,
over the image as in the heat-map figures (jet, 0.4 image + 0.6 heat by default). The query cell
is outlined in magenta; a global-token query outlines the whole image.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from ..engine.attention import (GLOBAL, KIND_LABELS, KINDS, STAT_NAMES, STAT_TITLES, AttentionRows, AttentionStats,
                                cell_box)
from ..engine.maps import overlay
from ..engine.method_rows import KindRow
from ..engine.regions import patch_value_image
from .layout import Layout, apply_layout
from .style import KIND_COLORS, MARKER_COLOR, inset_colorbar, method_name, new_figure, plain_figure

_MAX_SIDE = 640  # panels never need more pixels than this


PanelRows = Union[AttentionRows, Mapping[str, KindRow]]
MAP_SCALE = "÷ max"  # colour-bar label: every map is divided by its own largest patch value
MAP_COLUMNS = 4  # a single image's panels wrap past this many per row (as in the explorer)


def qk_vv_figure(panels: Sequence[tuple[np.ndarray, PanelRows]], layer_name: str | None = None,
                 cmap: str = "jet", opacity: float = 0.6, panel_inches: float = 2.4,
                 kinds: Sequence[str] = KINDS, layout: Layout = None) -> Figure:
    """The paper's Figure 1 layout: one column per image; rows image-with-query, then one per kind.

    Args:
        panels: (rgb uint8 [H, W, 3], rows) per column; rows is an AttentionRows (kinds "qk", "vv")
            or {kind: KindRow} holding every kind in ``kinds`` (engine/method_rows.py).
        layer_name: shown in the title (e.g. "block 11"); default "layer <index>".
        cmap, opacity: colour map of the attention maps and their weight over the image.
        kinds: the attention kinds shown, one row each (KINDS, or any of method_rows.METHOD_KINDS).
        layout: "column", "page", a width in inches or (width, height) (figures/layout.py); None: natural size.
    One image with more than two kinds is laid out like the explorer instead: the image, then one
    panel per kind, wrapping past four panels per row, each titled with its kind, method and block.
    """
    if not panels:
        raise ValueError("panels is empty: pass at least one (image, AttentionRows) pair.")
    kinds = tuple(kinds)
    images = [_display_image(rgb) for rgb, _ in panels]
    columns = [_kind_rows(rows, kinds) for _, rows in panels]
    if len(panels) == 1 and len(kinds) > 2:
        return apply_layout(_wrapped_figure(images[0], columns[0], kinds, cmap, opacity, panel_inches), layout)
    fig = new_figure(1 + len(kinds), len(panels), images[0].shape, panel_inches, pad=(0.6, 0.7))
    axes = fig.subplots(1 + len(kinds), len(panels), squeeze=False)
    for col, (rgb, rows) in enumerate(zip(images, columns)):
        first = rows[kinds[0]]
        _draw(axes[0, col], rgb, None, first, cmap, opacity)
        axes[0, col].set_title(query_text(first.query), fontsize=10)
        for r, kind in enumerate(kinds, start=1):
            _draw(axes[r, col], rgb, rows[kind].normalised(), rows[kind], cmap, opacity)
            axes[r, col].set_title(f"global token {rows[kind].global_token:.3f}", fontsize=8, color="#555")
    labels = ["image and query"] + [kind_title(kind) if kind in KINDS else
                                    f"{kind_title(kind)}\n{method_text(columns[0][kind])}" for kind in kinds]
    for r, label in enumerate(labels):
        axes[r, 0].text(-0.05, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=10 if "\n" not in label else 8)
    first = columns[0][kinds[0]]
    fig.suptitle(f"{layer_name or f'layer {first.layer}'}, {head_text(first.head)}", fontsize=11)
    inset_colorbar(axes[1, -1], cmap, MAP_SCALE)
    return apply_layout(fig, layout)


def _wrapped_figure(rgb: np.ndarray, rows: Mapping[str, KindRow], kinds: tuple[str, ...], cmap: str,
                    opacity: float, panel_inches: float) -> Figure:
    """One image: the image panel, then one panel per kind, at most MAP_COLUMNS per row."""
    count = 1 + len(kinds)
    nrows = math.ceil(count / MAP_COLUMNS)
    ncols = math.ceil(count / nrows)
    fig = new_figure(nrows, ncols, rgb.shape, panel_inches, pad=(0.3, 0.6 + 0.45 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_axis_off()
    first = rows[kinds[0]]
    _draw(axes[0], rgb, None, first, cmap, opacity)
    axes[0].set_title(f"image\n{query_text(first.query)}", fontsize=9)
    for ax, kind in zip(axes[1:], kinds):
        _draw(ax, rgb, rows[kind].normalised(), rows[kind], cmap, opacity)
        ax.set_title("\n".join(panel_title(rows[kind])), fontsize=8)
    inset_colorbar(axes[min(ncols, count) - 1], cmap, MAP_SCALE)
    fig.suptitle(f"{query_text(first.query)}, {head_text(first.head)}", fontsize=11)
    return fig


def _kind_rows(rows: PanelRows, kinds: Sequence[str]) -> Mapping[str, KindRow]:
    """{kind: KindRow} for ``kinds`` from an AttentionRows or such a mapping, or a clear error."""
    if isinstance(rows, AttentionRows):
        rows = {kind: KindRow.from_rows(rows, kind) for kind in kinds if kind in KINDS}
    missing = [kind for kind in kinds if rows.get(kind) is None]
    if missing:
        raise ValueError(f"No rows for the kinds {', '.join(missing)}: pass {{kind: KindRow}} with every kind "
                         f"shown (an AttentionRows has q-k and v-v only).")
    return rows


def layers_figure(rgb: np.ndarray, rows: Sequence[AttentionRows], layer_names: Sequence[str] | None = None,
                  cmap: str = "jet", opacity: float = 0.6, ncols: int | None = None,
                  panel_inches: float = 1.3, kinds: Sequence[str] = KINDS, layout: Layout = None) -> Figure:
    """Small multiples: the rows of one query at every layer, one row of maps per kind in each band (layout: as
    for :func:`qk_vv_figure`)."""
    if not rows:
        raise ValueError("rows is empty: pass AttentionCapture.all_layers(query, head).")
    names = list(layer_names) if layer_names is not None else [f"layer {r.layer}" for r in rows]
    image = _display_image(rgb)
    ncols = ncols or min(len(rows), 12)
    bands = math.ceil(len(rows) / ncols)
    fig = new_figure(len(kinds) * bands, ncols, image.shape, panel_inches, pad=(0.6, 0.7))
    axes = fig.subplots(len(kinds) * bands, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for index, layer_rows in enumerate(rows):
        band, col = divmod(index, ncols)
        for offset, kind in enumerate(kinds):
            ax = axes[len(kinds) * band + offset, col]
            _draw(ax, image, layer_rows.normalised(kind), layer_rows, cmap, opacity)
            if offset == 0:
                ax.set_title(names[index], fontsize=8)
            if col == 0:
                ax.text(-0.08, 0.5, KIND_LABELS[kind], transform=ax.transAxes,
                        rotation=90, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{query_text(rows[0].query)}, {head_text(rows[0].head)}: every layer", fontsize=11)
    inset_colorbar(axes[0, min(ncols, len(rows)) - 1], cmap, MAP_SCALE)
    return apply_layout(fig, layout)


def stats_figure(query_stats: AttentionStats, all_stats: AttentionStats | None = None,
                 layer_names: Sequence[str] | None = None, current_layer: int | None = None,
                 panel_inches: float = 2.6, kinds: Sequence[str] = KINDS, layout: Layout = None) -> Figure:
    """q-k against v-v across layers: one panel per statistic; solid = the query, dashed = all queries
    (layout: as for :func:`qk_vv_figure`)."""
    fig = plain_figure(figsize=(len(STAT_NAMES) * panel_inches + 0.8, panel_inches + 0.9), layout="constrained")
    axes = fig.subplots(1, len(STAT_NAMES), squeeze=False)[0]
    layers = np.asarray(query_stats.layers)
    for ax, name in zip(axes, STAT_NAMES):
        for kind in kinds:
            label = KIND_LABELS[kind]
            ax.plot(layers, query_stats.kind(kind)[name], "-o", ms=3, color=KIND_COLORS[kind],
                    label=f"{label}, {query_text(query_stats.query)}")
            if all_stats is not None:
                ax.plot(np.asarray(all_stats.layers), all_stats.kind(kind)[name], "--", color=KIND_COLORS[kind],
                        alpha=0.8, label=f"{label}, mean of all patch queries")
        if name == "entropy":
            ax.axhline(query_stats.max_entropy, color="#999", lw=0.8, ls=":", label="uniform row")
        if current_layer is not None:
            ax.axvline(current_layer, color="#bbb", lw=1)
        title = STAT_TITLES[name]
        if name == "local":
            title += f" ({query_stats.metric} r={query_stats.radius:g})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(labelsize=7)
        if layer_names is not None and len(layer_names) <= 12:
            ax.set_xticks(layers, [layer_names[i] for i in layers], rotation=45, ha="right")
    handles, labels = axes[0].get_legend_handles_labels()
    handles2, labels2 = axes[STAT_NAMES.index("entropy")].get_legend_handles_labels()
    extra = [(h, l) for h, l in zip(handles2, labels2) if l not in labels]
    fig.legend(handles + [h for h, _ in extra], labels + [l for _, l in extra], loc="outside lower center",
               ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"q-k vs v-v attention across layers, {head_text(query_stats.head)}", fontsize=11)
    return apply_layout(fig, layout)


def query_text(query) -> str:
    """"query (row 3, col 5)" or "query: global token"."""
    if query == GLOBAL:
        return "query: global token"
    if isinstance(query, str):
        return f"query: {query}"
    return f"query (row {query[0]}, col {query[1]})"


def head_text(head: int | None) -> str:
    """"mean of heads" or "head 3"."""
    return "mean of heads" if head is None else f"head {head}"


def kind_title(kind: str) -> str:
    """"q-k attention", "q-q + k-k attention", ... for any kind in the engine's KIND_LABELS."""
    return f"{KIND_LABELS[kind]} attention"


_KIND_NOTES = {"kk": ", no Gaussian"}  # a method's kind that is not the method's own setting


def method_text(row: KindRow, layer_name: str | None = None) -> str:
    """"ClearCLIP · block 11": the method using the row's kind and its block; "SCLIP, ÷ 2 · ..." when halved,
    "NACLIP, no Gaussian · ..." for plain k-k."""
    note = _KIND_NOTES.get(row.kind, "") + (f", ÷ {row.scale:g}" if row.scale != 1 else "")
    return f"{method_name(row.method)}{note} · {layer_name or f'block {row.layer}'}"


def panel_title(row: KindRow, layer_name: str | None = None) -> tuple[str, str, str]:
    """The three title lines of a map panel: kind and head; method and block; the global token's share."""
    return (f"{kind_title(row.kind)}, {head_text(row.head)}", method_text(row, layer_name),
            f"global token {row.global_token:.3f}")


def global_text(rows: AttentionRows, kind: str) -> str:
    """"global token 0.123": the attention a row pays to the global token."""
    return f"global token {rows.kind(kind)[1]:.3f}"


# --- helpers -----------------------------------------------------------------------------------

def _draw(ax, rgb: np.ndarray, heat_grid: np.ndarray | None, rows: AttentionRows | KindRow, cmap: str,
          opacity: float) -> None:
    """Image (with the attention map over it when given) and the query outline."""
    size = rgb.shape[:2]
    if heat_grid is None:
        shown = rgb
    else:
        heat = patch_value_image(heat_grid.ravel(), rows.grid, size)
        shown = overlay(rgb, heat, cmap=cmap, opacity=opacity)
    ax.imshow(shown, interpolation="nearest")
    if rows.query == GLOBAL:
        x0, y0, x1, y1 = -0.5, -0.5, size[1] - 0.5, size[0] - 0.5
    else:
        x0, y0, x1, y1 = cell_box(rows.query, size, rows.grid)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=MARKER_COLOR, linewidth=1.8))
    ax.set_xlim(-0.5, size[1] - 0.5)
    ax.set_ylim(size[0] - 0.5, -0.5)
    ax.set_axis_off()


def _display_image(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be a uint8 [H, W, 3] array, got {rgb.dtype} {rgb.shape}; "
                         f"use Explainer.prepare_image or load_image to read it.")
    height, width = rgb.shape[:2]
    scale = max(height, width) / _MAX_SIDE
    if scale <= 1:
        return rgb
    size = (max(1, round(width / scale)), max(1, round(height / scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))

