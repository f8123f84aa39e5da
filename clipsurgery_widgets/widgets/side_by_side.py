"""SideBySide: any widgets next to each other, e.g. a heat-map explorer beside an attention explorer."""
from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import ipywidgets as widgets
from PIL import Image


class SideBySide(widgets.HBox):
    """Widgets next to each other, sharing the width equally, e.g. ``SideBySide(heatmaps, attention)``.

    Like the explorers themselves, its output carries a static PNG (the children's static views
    joined left to right) for viewers without a live kernel. ``panes`` are the widgets given.
    """

    def __init__(self, *children: widgets.Widget):
        # Equal shares of the width; a pane scrolls sideways when its figure is wider (plotly fixes a
        # figure's width when it is first drawn, 700 px when it was drawn out of view).
        share = f"{100 / max(1, len(children)):.4f}%"
        cells = [widgets.Box([child], layout=widgets.Layout(width=share, min_width="0", overflow="auto"))
                 for child in children]
        super().__init__(cells, layout=widgets.Layout(width="100%", align_items="flex-start"))
        self.panes = tuple(children)

    def static_png(self) -> bytes | None:
        """The panes' static views (those that have one) joined left to right as PNG bytes, or None."""
        pngs = [pane._static_png() for pane in self.panes if hasattr(pane, "_static_png")]
        pngs = [png for png in pngs if png]
        return join_pngs(pngs) if pngs else None

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        png = self.static_png()
        if png is not None:
            bundle["image/png"] = base64.b64encode(png).decode("ascii")
        return bundle


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
