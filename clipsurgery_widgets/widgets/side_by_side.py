"""SideBySide: any widgets next to each other, e.g. a heat-map explorer beside an attention explorer."""
from __future__ import annotations

import io
from typing import Sequence

import ipywidgets as widgets
from PIL import Image

from .static_view import ShownAtOnce

MIN_PANE_WIDTH = 520  # px: narrower, an explorer's three map panels get too small to read


def pane_layout(min_pane_width: int) -> widgets.Layout:
    """One pane: grows from ``min_pane_width`` to its share of the row, never wider than the row.

    As a block (not a flex row) its widget fills its width, and so do the figures inside.
    """
    return widgets.Layout(flex=f"1 1 {min_pane_width}px", min_width="0", max_width="100%", display="block",
                          overflow="auto", padding="0 4px")


class SideBySide(ShownAtOnce, widgets.HBox):
    """Widgets next to each other, sharing the width equally, e.g. ``SideBySide(heatmaps, attention)``.

    Each pane takes its share of the row and its widget fills the pane (the explorers' figures
    follow their container's width). Where the row has no room for every pane at
    ``min_pane_width`` pixels, the panes stack, one under the other, each the full width.

    Like the explorers themselves, its output carries a static PNG (the children's static views
    joined left to right) for viewers without a live kernel. ``panes`` are the widgets given.
    """

    def __init__(self, *children: widgets.Widget, min_pane_width: int = MIN_PANE_WIDTH):
        if min_pane_width <= 0:
            raise ValueError(f"min_pane_width={min_pane_width!r}: give the narrowest a pane may be, in pixels (> 0).")
        cells = [widgets.Box([child], layout=pane_layout(min_pane_width)) for child in children]
        for cell in cells:
            cell.add_class("csw-side-by-side-pane")
        # A wrapping row: the panes sit side by side while each gets min_pane_width, else they stack.
        super().__init__(cells, layout=widgets.Layout(width="100%", flex_flow="row wrap", align_items="flex-start"))
        self.add_class("csw-side-by-side")
        self.panes = tuple(children)
        self.min_pane_width = min_pane_width

    def static_png(self) -> bytes | None:
        """The panes' static views (those that have one) joined left to right as PNG bytes, or None."""
        return self._static_copy()[0]

    def _static_copy(self) -> tuple[bytes | None, dict | None]:
        """(joined PNG or None, its display metadata: the width at 1x when every pane gives one)."""
        copies = [pane._static_copy() for pane in self.panes if hasattr(pane, "_static_copy")]
        copies = [(png, metadata) for png, metadata in copies if png]
        if not copies:
            return None, None
        widths = [(metadata or {}).get("width") for _, metadata in copies]
        metadata = {"width": sum(widths)} if all(widths) else None
        return join_pngs([png for png, _ in copies]), metadata


def join_pngs(pngs: Sequence[bytes]) -> bytes:
    """PNG images side by side on white, top-aligned, as one PNG."""
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    canvas = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    left = 0
    for image in images:
        canvas.paste(image, (left, 0))
        left += image.width
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
