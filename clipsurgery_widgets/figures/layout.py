"""Paper sizes for any figure of this package: a journal column, a full page, or explicit inches.

``apply_layout(fig, "column")`` resizes a finished matplotlib Figure to the width it will be
printed at, sets every font for that true size (ticks and legend entries at the smallest size,
titles at the largest, the order of sizes kept), thins lines and markers of a shrunk figure, and
fits the height to the panels so no empty band is left above, below or between images. Figures
whose content must be rebuilt for a new width (token captions re-wrap) register a hook with
:func:`on_layout`. Without a layout (``None``) a figure keeps its natural size and fonts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

from matplotlib.axes import Axes
from matplotlib.collections import Collection, PathCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text

#: preset name -> printed width in inches (a two-column paper's column, and its full text width).
LAYOUT_WIDTHS = {"column": 3.5, "page": 7.0}

Layout = Optional[Union[str, float, Tuple[float, float]]]
LayoutHook = Callable[[Figure, "PaperSize"], Optional[float]]

_HOOKS_ATTR = "_csw_layout_hooks"
_FIXED_ATTR = "_csw_layout_fixed"  # texts a hook has already sized for the layout


@dataclass(frozen=True)
class PaperSize:
    """A resolved layout: printed width (inches), height (None: fitted) and the font range in points."""

    width: float
    height: float | None
    font_min: float  # tick labels, legend entries, small notes
    font_max: float  # titles

    @property
    def font_body(self) -> float:
        """Size of running text in panels (token captions, labels): between the two."""
        return round((self.font_min + self.font_max) / 2, 2)


def paper_size(layout: Layout) -> PaperSize | None:
    """Resolve ``layout``: "column" (3.5 in), "page" (7 in), a width in inches or (width, height); None -> None.

    Fonts grow slowly with the width: 7-9 pt for a column, 7.5-9.5 pt for a page, 8.5-10.5 pt at 14 in.
    """
    if layout is None:
        return None
    height = None
    if isinstance(layout, str):
        if layout not in LAYOUT_WIDTHS:
            raise ValueError(f"Unknown layout {layout!r}; use 'column' (3.5 in), 'page' (7 in), a width in "
                             f"inches, or (width, height) in inches.")
        width = LAYOUT_WIDTHS[layout]
    elif isinstance(layout, (tuple, list)) and len(layout) == 2:
        width, height = (float(v) for v in layout)
    elif isinstance(layout, (int, float)) and not isinstance(layout, bool):
        width = float(layout)
    else:
        raise ValueError(f"layout must be 'column', 'page', a width in inches or (width, height), not {layout!r}.")
    for name, value in (("width", width), ("height", height)):
        if value is not None and not (math.isfinite(value) and 0.5 <= value <= 60):
            raise ValueError(f"The layout {name} must be between 0.5 and 60 inches, got {value!r}.")
    font_min = min(10.0, max(6.5, 7.0 + (width - 3.5) / 7.0))
    return PaperSize(width, height, round(font_min, 2), round(font_min + 2.0, 2))


def on_layout(fig: Figure, hook: LayoutHook) -> None:
    """Call ``hook(fig, size)`` whenever a layout is applied to ``fig``, before the fonts are set.

    The hook rebuilds what depends on the width (and marks the texts it sized with
    :func:`keep_font_size`); it may return the figure's height in inches to use instead of fitting one.
    """
    hooks = list(getattr(fig, _HOOKS_ATTR, ()))
    hooks.append(hook)
    setattr(fig, _HOOKS_ATTR, hooks)


def keep_font_size(text: Text) -> Text:
    """Mark ``text`` as already sized for the layout (the generic font pass leaves it alone)."""
    setattr(text, _FIXED_ATTR, True)
    return text


def apply_layout(fig: Figure, layout: Layout) -> Figure:
    """Size ``fig`` for print in place (see the module docstring) and return it; ``layout=None`` changes nothing."""
    size = paper_size(layout)
    if size is None:
        return fig
    old_width, old_height = fig.get_size_inches()
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    height = None
    for hook in getattr(fig, _HOOKS_ATTR, ()):
        height = hook(fig, size) or height
    _set_fonts(fig, size)
    _thin_lines(fig, size.width / old_width)
    fig.set_size_inches(size.width, size.height or height or old_height * size.width / old_width)
    if size.height is None and height is None:
        _fit_height(fig, size.width)
    return fig


# --- fonts ---------------------------------------------------------------------------------------

def _set_fonts(fig: Figure, size: PaperSize) -> None:
    """Ticks at font_min; other texts mapped linearly from their range onto [font_min, font_max]."""
    tick_texts: set[int] = set()
    for ax in fig.get_axes() + _child_axes(fig):
        ax.tick_params(axis="both", which="both", labelsize=size.font_min)
        for axis in (ax.xaxis, ax.yaxis):
            axis.get_offset_text().set_fontsize(size.font_min)
            tick_texts.add(id(axis.get_offset_text()))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_texts.update((id(tick.label1), id(tick.label2)))
    texts = [t for t in fig.findobj(Text) if id(t) not in tick_texts and t.get_text()
             and not getattr(t, _FIXED_ATTR, False)]
    if not texts:
        return
    sizes = [t.get_fontsize() for t in texts]
    low, high = min(sizes), max(sizes)
    for text, old in zip(texts, sizes):
        share = (old - low) / (high - low) if high > low else 0.5
        text.set_fontsize(round(size.font_min + share * (size.font_max - size.font_min), 2))


def _child_axes(fig: Figure) -> list[Axes]:
    return [child for ax in fig.get_axes() for child in ax.child_axes]


def _thin_lines(fig: Figure, scale: float) -> None:
    """A shrunk figure's lines and markers shrink with it, by at most half (they stay visible)."""
    if scale >= 1.0:
        return
    factor = max(0.5, math.sqrt(scale))
    for line in fig.findobj(Line2D):
        line.set_linewidth(line.get_linewidth() * factor)
        line.set_markersize(line.get_markersize() * factor)
        line.set_markeredgewidth(line.get_markeredgewidth() * factor)
    for collection in fig.findobj(Collection):
        if isinstance(collection, PathCollection) and len(collection.get_sizes()):
            collection.set_sizes(collection.get_sizes() * factor ** 2)
        widths = collection.get_linewidths()
        if len(widths):
            collection.set_linewidths([w * factor for w in widths])
    for patch in fig.findobj(Patch):
        if patch.get_linewidth():
            patch.set_linewidth(patch.get_linewidth() * factor)


# --- height --------------------------------------------------------------------------------------

def _fit_height(fig: Figure, width: float, rounds: int = 4) -> None:
    """Adjust the height until every row of fixed-aspect panels (images) fills its cell."""
    for _ in range(rounds):
        fig.draw_without_rendering()
        slack = _vertical_slack(fig)
        height = fig.get_size_inches()[1]
        if abs(slack) < 0.02:
            return
        fig.set_size_inches(width, min(8.0 * width, max(0.2 * width, height - slack)))


def _vertical_slack(fig: Figure) -> float:
    """Inches of height to remove (negative: to add) so the image panels fill their cells exactly.

    Each fixed-aspect axes either is narrower than its cell (too little height: negative) or shorter
    (spare height: positive); each row of cells counts once, with its smallest value.
    """
    rows: dict[tuple[int, int], float] = {}
    dpi = fig.dpi
    for ax in fig.get_axes():
        if not _fixed_aspect(ax):
            continue
        cell = ax.get_position(original=True).transformed(ax.get_figure(root=False).transSubfigure)
        active = ax.get_position(original=False).transformed(ax.get_figure(root=False).transSubfigure)
        if cell.height <= 0 or cell.width <= 0 or active.width <= 0:
            continue
        if active.height < cell.height - 0.5:
            slack = cell.height - active.height
        elif active.width < cell.width - 0.5:
            slack = -cell.height * (cell.width / active.width - 1.0)
        else:
            slack = 0.0
        key = (round(cell.y0), round(cell.y1))
        rows[key] = min(rows.get(key, slack), slack)
    return sum(rows.values()) / dpi


def _fixed_aspect(ax: Axes) -> bool:
    return (ax.get_visible() and bool(ax.images) and ax.get_aspect() != "auto"
            and ax.get_adjustable() == "box" and not hasattr(ax, "_colorbar"))
