"""Static figures of token attributions in the style of the paper's multimodal figure.

Each panel shows a caption with its best tokens marked (top three in red, yellow and cyan, or
every token on a colour scale) above the image's heat map: the whole caption's map, or one
token's. Several image-caption pairs go in a grid. The colours are also used by the
TokenExplorer's chips, so the widget and its figures agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnchoredOffsetbox, DrawingArea, HPacker, TextArea, VPacker
from matplotlib.patches import Patch
from matplotlib.text import Text

from ..engine.attribution import RegionRanking, TokenAttribution
from ..engine.maps import overlay
from .layout import Layout, PaperSize, apply_layout, keep_font_size, on_layout
from .style import TOP_COLORS, checked_rgb, inset_colorbar, plain_figure

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
    layout: Layout = None,
) -> Figure:
    """A grid of panels: caption with marked tokens above the heat map of each image-caption pair.

    A legend names the marking colours (top three) and a colour bar gives the scale of the maps
    (and of the tokens, for the "scale" marking). Marked tokens' boxes never overlap.

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
        panel_inches, fontsize: width of a panel and size of the caption text without a layout.
        layout: "column", "page", a width in inches or (width, height) (figures/layout.py): the
            captions are re-wrapped for that width.
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
    if marking not in MARKINGS:
        raise ValueError(f"marking must be 'top3' or 'scale', not {marking!r}.")
    for rgb, attribution in items:
        _check_pair(rgb, attribution)
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    aspect = max(rgb.shape[0] / rgb.shape[1] for rgb, _ in items)
    fig = plain_figure(figsize=(ncols * panel_inches + 0.6, nrows * (panel_inches * aspect + 1.0) + 0.4),
                       layout="constrained")
    grid = fig.add_gridspec(2 * nrows, ncols)
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(ncols)] for r in range(2 * nrows)])
    panels = []
    for index in range(nrows * ncols):
        row, col = divmod(index, ncols)
        text_ax, image_ax = axes[2 * row, col], axes[2 * row + 1, col]
        if index >= count:
            text_ax.remove()
            image_ax.remove()
            continue
        rgb, attribution = items[index]
        ranking = regions[index]
        scores, order = (attribution.scores, attribution.order) if ranking is None else (ranking.scores, ranking.order)
        token = tokens[index]
        heat = attribution.caption_map if token is None else attribution.image_map(token)
        text_ax.set_axis_off()
        image_ax.imshow(overlay(rgb, heat, cmap=cmap, opacity=opacity), interpolation="nearest")
        image_ax.set_axis_off()
        image_ax.set_anchor("N")  # keep the image right under its caption
        if token is not None:
            image_ax.set_title(f"map of “{attribution.tokens.texts[token]}”", fontsize=fontsize * 0.9,
                               parse_math=False)
        panels.append(_CaptionPanel(text_ax, attribution, token_colors(scores, order, attribution.shown, marking,
                                                                          cmap), token))
    captions = _Captions(panels, grid, nrows, ncols, aspect)
    captions.draw(panel_inches, fontsize)
    on_layout(fig, captions.relayout)
    # Short labels: the bar is one panel high; with the "scale" marking the tokens share its colours.
    inset_colorbar(axes[1, ncols - 1], cmap, "score" if marking == "top3" else "score, tokens too")
    if marking == "top3":
        handles = [Patch(facecolor=color, edgecolor="none", label=name)
                   for color, name in zip(TOP_COLORS, ("best token", "second", "third"))]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=fontsize * 0.8, frameon=False)
    return apply_layout(fig, layout)


# --- helpers -------------------------------------------------------------------------------------

# Geometry of the marked tokens, in units of the font size: the box's padding around its text, the
# gap left between two boxes (pieces of one word), between words, and between lines.
_BOX_PAD, _PIECE_GAP, _WORD_GAP, _LINE_GAP = 0.18, 0.08, 0.45, 0.2
_CHAR_WIDTH = 0.58  # a generous average glyph width of the sans-serif font, for line breaking


@dataclass
class _CaptionPanel:
    ax: Axes
    attribution: TokenAttribution
    colors: list
    selected: int | None
    box: AnchoredOffsetbox | None = None


class _Captions:
    """The captions of a token figure, drawn for a panel width and font size and redrawn for a layout."""

    def __init__(self, panels: list[_CaptionPanel], grid, nrows: int, ncols: int, aspect: float):
        self.panels, self.grid, self.nrows, self.ncols, self.aspect = panels, grid, nrows, ncols, aspect
        self.text_inches = 0.0

    def draw(self, panel_inches: float, fontsize: float) -> list[Text]:
        """(Re)draw every caption wrapped to ``panel_inches``; returns the caption texts; sets ``text_inches``."""
        width_points = panel_inches * 72 * 0.95
        layouts = [_caption_lines(p.attribution, p.colors, width_points, fontsize) for p in self.panels]
        texts: list[Text] = []
        for panel, lines in zip(self.panels, layouts):
            if panel.box is not None:
                panel.box.remove()
            panel.box, drawn = _draw_caption(panel.ax, lines, panel.attribution, panel.colors, fontsize,
                                             panel.selected)
            texts += drawn
        line_count = max(len(lines) for lines in layouts)
        self.text_inches = (line_count * (1.25 + 2 * _BOX_PAD + _LINE_GAP) * fontsize + 0.3 * fontsize) / 72
        self.grid.set_height_ratios([self.text_inches, panel_inches * self.aspect] * self.nrows)
        return texts

    def relayout(self, fig: Figure, size: PaperSize) -> float:
        """Re-wrap the captions for ``size``; returns the figure height (text rows have fixed inches, so the
        height is computed here rather than fitted)."""
        panel_inches = (size.width - 0.6) / self.ncols  # the colour bar takes about 0.6 inch
        fontsize = size.font_body if panel_inches >= 1.6 else size.font_min
        for text in self.draw(panel_inches, fontsize):
            keep_font_size(text)
        titled = any(p.selected is not None for p in self.panels)
        image_inches = panel_inches * self.aspect + (1.5 * size.font_max / 72 if titled else 0.0)
        self.grid.set_height_ratios([self.text_inches, image_inches] * self.nrows)
        legend_inches = 2.2 * size.font_min / 72 if fig.legends else 0.0
        return self.nrows * (self.text_inches + image_inches + 0.08) + legend_inches + 0.1


def _gap(left: str | None, right: str | None, base: float) -> float:
    """Gap in font sizes between two tokens: ``base`` plus the boxes' padding on both sides."""
    return base + _BOX_PAD * ((left is not None) + (right is not None))


def _caption_lines(attribution: TokenAttribution, colors, width_points: float,
                   fontsize: float) -> list[list[list[int]]]:
    """Lines of space-separated groups of token indices that fit ``width_points``; special tokens only when shown."""
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
    length = 0.0
    for group in groups:
        size = sum(len(tokens.texts[t]) * _CHAR_WIDTH for t in group) + _BOX_PAD * 2 * len(group)
        size += sum(_gap(colors[a], colors[b], _PIECE_GAP) for a, b in zip(group, group[1:]))
        size = (size + _WORD_GAP + 2 * _BOX_PAD) * fontsize
        if lines[-1] and length + size > width_points:
            lines.append([])
            length = 0.0
        lines[-1].append(group)
        length += size
    return lines


def _draw_caption(ax, lines, attribution: TokenAttribution, colors, fontsize: float,
                  selected: int | None) -> tuple[AnchoredOffsetbox, list[Text]]:
    """Pack the caption's tokens with gaps wide enough that no two boxes touch."""
    texts_of = attribution.tokens.texts
    rows, texts = [], []
    for line in lines:
        children = []
        for w, word in enumerate(line):
            if w:
                gap = _gap(colors[line[w - 1][-1]], colors[word[0]], _WORD_GAP)
                children.append(DrawingArea(gap * fontsize, 0))
            for i, t in enumerate(word):
                if i:
                    children.append(DrawingArea(_gap(colors[word[i - 1]], colors[t], _PIECE_GAP) * fontsize, 0))
                props = dict(fontsize=fontsize, color=text_color(colors[t]), parse_math=False)
                if colors[t] is not None:
                    props["bbox"] = dict(boxstyle=f"round,pad={_BOX_PAD}", facecolor=colors[t], edgecolor="none")
                if t == selected:
                    props.update(fontweight="bold", style="italic")
                area = TextArea(texts_of[t], textprops=props)
                texts.append(area.get_children()[0])
                children.append(area)
        rows.append(HPacker(children=children, sep=0, pad=0, align="baseline"))
    box = VPacker(children=rows, sep=fontsize * (2 * _BOX_PAD + _LINE_GAP), pad=0, align="left")
    anchored = AnchoredOffsetbox(loc="upper left", child=box, frameon=False, pad=_BOX_PAD + 0.05,
                                 borderpad=0.1)
    ax.add_artist(anchored)
    return anchored, texts


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
