"""Static figures of token attributions in the style of the paper's multimodal figure.

Each panel shows a caption with its best tokens marked (top three in red, yellow and cyan, or
every token on a colour scale) above the image's heat map: the whole caption's map, or one
token's. Several image-caption pairs go in a grid. The colours are also used by the
TokenExplorer's chips, so the widget and its figures agree.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnchoredOffsetbox, HPacker, TextArea, VPacker

from ..engine.attribution import RegionRanking, TokenAttribution
from ..engine.maps import overlay
from .style import TOP_COLORS, checked_rgb, plain_figure

MARKINGS = ("top3", "scale")


def token_colors(scores: np.ndarray, order: np.ndarray, shown: np.ndarray, marking: str = "top3",
                 cmap: str = "jet") -> list[str | None]:
    """Background colour of each token: hex strings, None for unmarked or hidden tokens.

    Args:
        scores: [T] token scores; order: [K] shown tokens best first; shown: bool [T].
        marking: "top3" (best three red, yellow, cyan) or "scale" (every shown token coloured by
            its score, min-max over the shown tokens, on ``cmap``).
    """
    if marking not in MARKINGS:
        raise ValueError(f"marking must be 'top3' or 'scale', not {marking!r}.")
    colors: list[str | None] = [None] * len(scores)
    if marking == "top3":
        for color, token in zip(TOP_COLORS, order[:3]):
            colors[int(token)] = color
        return colors
    if cmap not in colormaps:
        raise ValueError(f"Unknown colormap {cmap!r}; use a matplotlib name such as 'jet' or 'viridis'.")
    visible = np.flatnonzero(shown)
    if len(visible) == 0:
        return colors
    values = np.asarray(scores, dtype=np.float64)[visible]
    spread = values.max() - values.min()
    normed = (values - values.min()) / spread if spread > 0 else np.full_like(values, 0.5)
    for token, value in zip(visible, normed):
        colors[int(token)] = to_hex(colormaps[cmap](float(value)))
    return colors


def text_color(background: str | None) -> str:
    """Black or white, whichever reads better on ``background`` (None: plain text)."""
    if background is None:
        return "#222222"
    r, g, b = to_rgb(background)
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "#ffffff"


def token_figure(
    items: tuple[np.ndarray, TokenAttribution] | Sequence[tuple[np.ndarray, TokenAttribution]],
    ncols: int = 3,
    marking: str = "top3",
    cmap: str = "jet",
    opacity: float = 0.6,
    tokens: Sequence[int | None] | int | None = None,
    regions: Sequence[RegionRanking | None] | None = None,
    panel_inches: float = 3.0,
    fontsize: float = 10.0,
) -> Figure:
    """A grid of panels: caption with marked tokens above the heat map of each image-caption pair.

    Args:
        items: one (rgb, attribution) pair or a list of them; rgb is the uint8 [H, W, 3] image the
            attribution was computed for.
        ncols: panels per row.
        marking: "top3" or "scale" (see :func:`token_colors`).
        cmap, opacity: colour map of the heat map and its weight over the image.
        tokens: per pair, the token whose map to show (None: the whole caption's map); one int
            for a single pair.
        regions: per pair, a RegionRanking whose scores mark the tokens instead (None: the
            attribution's own scores).
    """
    items = [items] if isinstance(items, tuple) and len(items) == 2 and isinstance(items[1], TokenAttribution) \
        else list(items)
    if not items:
        raise ValueError("Nothing to draw: pass at least one (image, attribution) pair.")
    count = len(items)
    tokens = _per_item(tokens, count, "tokens")
    regions = _per_item(regions, count, "regions")
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, not {ncols!r}.")
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    chars_per_line = max(12, int(panel_inches * 72 / (0.6 * fontsize)))
    layouts = [_caption_lines(a, chars_per_line) for _, a in items]
    text_inches = max(len(lines) for lines in layouts) * fontsize * 1.9 / 72 + 0.1
    aspect = max(rgb.shape[0] / rgb.shape[1] for rgb, _ in items)
    fig = plain_figure(figsize=(ncols * panel_inches, nrows * (panel_inches * aspect + text_inches + 0.25)),
                 layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(nrows, ncols, squeeze=False)).reshape(nrows, ncols)
    for index, sub in enumerate(subfigs.flat):
        if index >= count:
            continue
        rgb, attribution = items[index]
        _check_pair(rgb, attribution)
        text_ax, image_ax = sub.subplots(2, 1, height_ratios=[text_inches, panel_inches * aspect])
        ranking = regions[index]
        scores, order = (attribution.scores, attribution.order) if ranking is None else (ranking.scores, ranking.order)
        colors = token_colors(scores, order, attribution.shown, marking, cmap)
        _draw_caption(text_ax, layouts[index], attribution, colors, fontsize, tokens[index])
        token = tokens[index]
        heat = attribution.caption_map if token is None else attribution.image_map(token)
        image_ax.imshow(overlay(rgb, heat, cmap=cmap, opacity=opacity), interpolation="nearest")
        image_ax.set_axis_off()
        image_ax.set_anchor("N")  # keep the image right under its caption
        if token is not None:
            image_ax.set_title(f"map of “{attribution.tokens.texts[token]}”", fontsize=fontsize * 0.9,
                               parse_math=False)
    return fig


# --- helpers -------------------------------------------------------------------------------------

def _caption_lines(attribution: TokenAttribution, chars_per_line: int) -> list[list[list[int]]]:
    """Lines of space-separated groups of token indices; special tokens appear only when shown."""
    tokens = attribution.tokens
    groups: list[list[int]] = []
    for t in range(len(tokens)):
        if tokens.is_special[t] and not attribution.shown[t]:
            continue
        if groups and not tokens.space_before[t] and not tokens.is_special[t]:
            groups[-1].append(t)  # no space in the caption before it ("sofa," or a word's later piece)
        else:
            groups.append([t])
    lines: list[list[list[int]]] = [[]]
    length = 0
    for group in groups:
        size = sum(len(tokens.texts[t]) for t in group) + 1
        if lines[-1] and length + size > chars_per_line:
            lines.append([])
            length = 0
        lines[-1].append(group)
        length += size
    return lines


def _draw_caption(ax, lines, attribution: TokenAttribution, colors, fontsize: float, selected: int | None) -> None:
    ax.set_axis_off()
    texts = attribution.tokens.texts
    rows = []
    for line in lines:
        words = []
        for word in line:
            boxes = []
            for t in word:
                props = dict(fontsize=fontsize, color=text_color(colors[t]), parse_math=False)
                if colors[t] is not None:
                    props["bbox"] = dict(boxstyle="round,pad=0.18", facecolor=colors[t], edgecolor="none")
                if t == selected:
                    props.update(fontweight="bold", style="italic")
                boxes.append(TextArea(texts[t], textprops=props))
            words.append(HPacker(children=boxes, sep=0, pad=0, align="baseline"))
        rows.append(HPacker(children=words, sep=fontsize * 0.45, pad=0, align="baseline"))
    box = VPacker(children=rows, sep=fontsize * 0.55, pad=0, align="left")
    ax.add_artist(AnchoredOffsetbox(loc="upper left", child=box, frameon=False, pad=0.1, borderpad=0.1))


def _per_item(values, count: int, name: str) -> list:
    if values is None:
        return [None] * count
    if isinstance(values, (int, np.integer, RegionRanking)):
        values = [values]
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} image-caption pairs; give one per pair.")
    return values


def _check_pair(rgb: np.ndarray, attribution: TokenAttribution) -> None:
    checked_rgb(rgb, attribution.image_size, "its attribution")
