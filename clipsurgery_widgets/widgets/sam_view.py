"""The SamWidget's plotly figure: the text's map with its automatic points, and SAM's panel.

One FigureWidget, two panels. The SAM panel is on axes x/y (plotly reports box-drag ranges only
there), the heat panel on x2/y2. Pictures are layout images, not image traces: a FigureWidget
wires up its click events only once its first drawing has finished, and an image trace still
loading when an update arrives can hold that up for ever (the plot then ignores every click).
SAM's points, box and outline are layout shapes. Clicks reach us through a transparent heat map
over the SAM panel (its cells resolve a click to a couple of pixels) and through the text's heat
map; both go to :meth:`SamView.click`, which tests call too.

The figure has no fixed width: plotly fills the cell it sits in and redraws when the window or
the cell changes size; the height is planned for ``width`` pixels. It has no toolbar (modebar):
the panels neither zoom nor pan, and a toolbar would cover the SAM panel's title.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Callable, Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib.colors import to_rgb
from PIL import Image

from ..engine.regions import display_step, region_outline
from ..figures.style import BOX_COLOR, NEGATIVE_COLOR, POSITIVE_COLOR
from .live_figure import LiveFigure
from .plotting import NO_TOOLBAR_CONFIG, image_data_uri, plotly_colorscale, plotly_text, subsample

# Trace and layout-image indices (the end-to-end test reads the mask image by its index).
T_CATCH, T_SELECT, H_HEAT, H_POS, H_NEG = range(5)
IMG_PHOTO, IMG_MASK, IMG_HEAT_PHOTO = range(3)
MARKER_RADIUS = 6.5  # screen pixels
#: Colours of the instance masks (one mask per region), in order; repeated beyond ten.
INSTANCE_COLORS = ("#22c55e", "#e11d48", "#2563eb", "#f59e0b", "#9333ea", "#0891b2", "#db2777", "#65a30d",
                   "#ea580c", "#4f46e5")
PANELS = ("sam", "heat")

ClickHandler = Callable[[float, float, bool], None]  # (x, y, modifier held)
BoxHandler = Callable[[float, float, float, float], None]  # (x0, y0, x1, y1)


class SamView:
    """Draws what the SamWidget gives it and routes clicks and box drags back to it.

    Args:
        on_click: called with (x, y, modifier) in image pixels for a click on either panel.
        on_box: called with (x0, y0, x1, y1) for a box dragged on the SAM panel.
        width: the width in pixels the height is planned for (the figure itself fills the
            width of its cell; its height follows the image's shape).
        image_side, heat_side, click_side: the image and mask are sent at about ``image_side``
            pixels on the long side, the heat map at ``heat_side``; clicks resolve on a grid of
            about ``click_side`` cells.
        mask_color: colour of the mask and its outline.
    """

    def __init__(self, on_click: ClickHandler, on_box: BoxHandler, *, width: int = 960, image_side: int = 640,
                 heat_side: int = 200, click_side: int = 320, mask_color: str = "#22c55e"):
        self._on_click, self._on_box = on_click, on_box
        self.width, self.image_side, self.heat_side, self.click_side = width, image_side, heat_side, click_side
        self.mask_color = mask_color
        self._size: tuple[int, int] | None = None  # (H, W) of the image shown
        self._heat_step = 1
        self._drawn_mask: list | None = None  # [key, display mask, scale, PNG URI, outline path or None]
        self.fig = self._build()

    # --- routes from the browser (and from tests) ----------------------------------------------

    def click(self, x: float, y: float, panel: str = "sam", alt: bool = False, shift: bool = False) -> None:
        """A click at image pixel (x, y) of ``panel`` ("sam" or "heat"): what a browser click does.

        Alt (Option on a Mac) adds the other kind of point. plotly turns Shift-drags into pans and
        swallows Shift-clicks when no drag mode is set, but passes Shift on when one reaches us, so
        both count. Ignored, like a real click, where the panel shows nothing to click yet.
        """
        if panel not in PANELS:
            raise ValueError(f"panel must be one of {PANELS}, not {panel!r}.")
        if self._size is None or (panel == "heat" and not _has_z(self.fig.data[H_HEAT])):
            return
        self._on_click(float(x), float(y), bool(alt or shift))

    def select_box(self, xrange: Sequence[float] | None, yrange: Sequence[float] | None) -> None:
        """A box dragged in box mode: x and y ranges in image pixels (None for a box on the heat panel)."""
        self._clear_selection_outline()
        if xrange is None or yrange is None or self._size is None:
            return  # plotly gives no ranges for a box drawn on the heat panel
        self._on_box(float(xrange[0]), float(yrange[0]), float(xrange[1]), float(yrange[1]))

    # --- drawing -------------------------------------------------------------------------------

    def show_image(self, rgb: np.ndarray) -> None:
        """A new image, RGB uint8 [H, W, 3], in both panels; the old heat map and mask go."""
        fig = self.fig
        height, width = rgb.shape[:2]
        step = display_step((height, width), self.click_side)
        with fig.batch_update():
            for index, side in ((IMG_PHOTO, self.image_side), (IMG_HEAT_PHOTO, max(160, self.image_side * 3 // 4))):
                fig.layout.images[index].update(source=image_data_uri(rgb, side)[0], x=-0.5, y=-0.5, sizex=width,
                                                sizey=height, visible=True)
            # The click catcher: cells of step x step pixels (a click resolves to a cell's centre).
            fig.data[T_CATCH].update(z=np.zeros((-(-height // step), -(-width // step)), np.uint8),
                                     x0=(step - 1) / 2, dx=step, y0=(step - 1) / 2, dy=step)
            # Fixed ranges (autorange off): the view never moves, whatever the traces cover.
            for axis in ("xaxis", "xaxis2"):
                fig.layout[axis].update(range=[-0.5, width - 0.5], autorange=False)
            for axis in ("yaxis", "yaxis2"):
                fig.layout[axis].update(range=[height - 0.5, -0.5], autorange=False)
            # Panels fill their half of the width; the height follows the image's shape (within limits).
            panel = 0.49 * (self.width - 16)
            fig.layout.height = int(min(720, max(260, panel * height / width + 38)))
        self._size = (height, width)
        self._drawn_mask = None

    def show_heat(self, heat: np.ndarray | None, points: np.ndarray, labels: np.ndarray, title: str) -> None:
        """The text's map (float [H, W] in [0, 1], or None) with its automatic points ([P, 2] (x, y), [P])."""
        fig = self.fig
        with fig.batch_update():
            if heat is None:
                fig.data[H_HEAT].update(z=None)
            else:
                step = self._heat_step = display_step(heat.shape, self.heat_side)
                fig.data[H_HEAT].update(z=np.round(subsample(heat, step).astype(np.float64), 3),
                                        x0=step // 2, dx=step, y0=step // 2, dy=step)
            for trace, value in ((H_POS, 1), (H_NEG, 0)):
                chosen = points[labels == value]
                fig.data[trace].update(x=chosen[:, 0].tolist(), y=chosen[:, 1].tolist())
            fig.layout.annotations[1].text = plotly_text(title)

    def show_sam(self, title: str, mask: np.ndarray | None, mask_key: Any, points: np.ndarray, labels: np.ndarray,
                 box: np.ndarray | None, opacity: float, outline_only: bool) -> None:
        """SAM's panel: the mask (bool [H, W], or None) as a transparent PNG or its outline, and the prompts.

        ``mask_key`` names the mask; the PNG is made again only when it changes. The filled view
        draws no outline: tracing it costs more than SAM's own prediction when a mask is ragged,
        and a click should feel instant.
        """
        fig = self.fig
        mask_image = fig.layout.images[IMG_MASK]
        outline = None
        with fig.batch_update():
            if mask is None or self._size is None:
                mask_image.visible = False
                self._drawn_mask = None
            else:
                if self._drawn_mask is None or self._drawn_mask[0] != mask_key:
                    shown, scale = self._display_mask(mask)
                    self._drawn_mask = [mask_key, shown, scale, _png_uri(shown, self.mask_color), None]
                _, shown, scale, uri, outline = self._drawn_mask
                if outline_only and outline is None:
                    outline = self._drawn_mask[4] = _outline_path(shown, scale)
                height, width = self._size
                mask_image.update(source=uri, x=-0.5, y=-0.5, sizex=width, sizey=height, opacity=opacity,
                                  visible=not outline_only)
            fig.layout.shapes = self._prompt_shapes(outline if outline_only else None, points, labels, box)
            title = plotly_text(title)
            if fig.layout.annotations[0].text != title:  # a title that stays while clicking: nothing is sent
                fig.layout.annotations[0].text = title

    def show_instances(self, title: str, masks: np.ndarray, key: Any, points: np.ndarray, labels: np.ndarray,
                       opacity: float) -> None:
        """One mask per instance (bool [K, H, W], K may be 0), each in its colour of INSTANCE_COLORS,
        with the prompts of the instance chosen ([P, 2] (x, y), [P]); ``key`` names the masks."""
        fig = self.fig
        mask_image = fig.layout.images[IMG_MASK]
        with fig.batch_update():
            if len(masks) == 0 or self._size is None:
                mask_image.visible = False
                self._drawn_mask = None
            else:
                if self._drawn_mask is None or self._drawn_mask[0] != key:
                    # Later instances are drawn over earlier ones where they overlap (index = instance + 1).
                    index = np.zeros(masks.shape[1:], np.uint8)
                    for k, mask in enumerate(masks):
                        index[mask] = k + 1
                    shown, scale = self._display_mask(index, labelled=True)
                    colors = [INSTANCE_COLORS[k % len(INSTANCE_COLORS)] for k in range(len(masks))]
                    self._drawn_mask = [key, shown, scale, _png_uri(shown, *colors), None]
                height, width = self._size
                mask_image.update(source=self._drawn_mask[3], x=-0.5, y=-0.5, sizex=width, sizey=height,
                                  opacity=opacity, visible=True)
            fig.layout.shapes = self._prompt_shapes(None, points, labels, None)
            title = plotly_text(title)
            if fig.layout.annotations[0].text != title:
                fig.layout.annotations[0].text = title

    def set_box_mode(self, on: bool) -> None:
        """Dragging on the SAM panel draws a box (on) or does nothing (off)."""
        self.fig.layout.dragmode = "select" if on else False

    # --- what is shown -------------------------------------------------------------------------

    def describe(self) -> dict:
        """What a person sees, as plain values (tests read this, never the traces).

        image: (H, W) or None; titles: {"sam", "heat"} (as sent, through ``plotly_text``); heat: float [h, w]
        values of the heat map as sent (every ``heat_step``-th pixel from ``heat_step // 2``) or
        None; auto_points / points: {"positive", "negative"} lists of (x, y) on the heat and SAM
        panels; colors: of those points, the box and the outline; box: (x0, y0, x1, y1) or None;
        mask: bool [h, w] of the mask image sent (None if none), mask_visible, mask_opacity;
        mask_labels: uint8 [h, w] of that image, 0 outside, k inside instance k (1 for the single mask);
        outline: list of [K, 2] (x, y) rings drawn around the mask; box_mode: dragging draws a box.
        """
        fig, shapes = self.fig, list(self.fig.layout.shapes)
        mask_image, heat = fig.layout.images[IMG_MASK], fig.data[H_HEAT]

        def placed(kind: str) -> list[tuple[float, float]]:
            return [(float(s.xanchor), float(s.yanchor)) for s in shapes if s.name == f"{kind} point"]

        def trace_points(index: int) -> list[tuple[float, float]]:
            t = fig.data[index]
            return list(zip(np.asarray(t.x or [], dtype=float).tolist(), np.asarray(t.y or [], dtype=float).tolist()))

        boxes = [s for s in shapes if s.name == "box"]
        outlines = [s for s in shapes if s.name == "outline"]
        return {
            "image": self._size,
            "titles": {"sam": fig.layout.annotations[0].text, "heat": fig.layout.annotations[1].text},
            "heat": np.asarray(heat.z, dtype=float) if _has_z(heat) else None,
            "heat_step": self._heat_step,
            "auto_points": {"positive": trace_points(H_POS), "negative": trace_points(H_NEG)},
            "points": {"positive": placed("positive"), "negative": placed("negative")},
            "colors": {"auto_positive": fig.data[H_POS].marker.color, "auto_negative": fig.data[H_NEG].marker.color,
                       "positive": sorted({s.fillcolor for s in shapes if s.name == "positive point"}),
                       "negative": sorted({s.fillcolor for s in shapes if s.name == "negative point"}),
                       "box": boxes[0].line.color if boxes else None,
                       "outline": outlines[0].line.color if outlines else None},
            "box": (float(boxes[0].x0), float(boxes[0].y0), float(boxes[0].x1), float(boxes[0].y1)) if boxes else None,
            "mask": _decode_mask(mask_image.source) if mask_image.source else None,
            "mask_labels": _decode_labels(mask_image.source) if mask_image.source else None,
            "mask_visible": mask_image.visible is True,
            "mask_opacity": mask_image.opacity,
            "outline": _parse_path(outlines[0].path) if outlines else [],
            "box_mode": fig.layout.dragmode == "select",
            "height": fig.layout.height, "width": fig.layout.width,
        }

    # --- internals -----------------------------------------------------------------------------

    def _build(self) -> go.FigureWidget:
        sam, heat = dict(xaxis="x", yaxis="y"), dict(xaxis="x2", yaxis="y2")
        clear = [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]]

        def markers(color: str) -> go.Scatter:  # (a box drag must not dim them as "unselected")
            return go.Scatter(x=[], y=[], mode="markers", showlegend=False, hoverinfo="skip", **heat,
                              marker=dict(size=2 * MARKER_RADIUS, color=color, line=dict(color="white", width=2)),
                              unselected=dict(marker=dict(opacity=1)))

        traces = [
            go.Heatmap(z=None, colorscale=clear, showscale=False, hoverinfo="none", zmin=0, zmax=1, name="clicks",
                       zsmooth="fast", **sam),
            go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False, name="box drags", **sam),
            go.Heatmap(z=None, colorscale=plotly_colorscale("jet"), opacity=0.6, showscale=False, zmin=0, zmax=1,
                       zsmooth="fast", name="heat", hovertemplate="normalised %{z:.2f}<extra></extra>", **heat),
            markers(POSITIVE_COLOR).update(name="auto positive"),
            markers(NEGATIVE_COLOR).update(name="auto negative"),
        ]
        image = dict(source=None, xanchor="left", yanchor="top", sizing="stretch", visible=False)
        images = [dict(image, xref="x", yref="y", layer="below", name="image"),
                  dict(image, xref="x", yref="y", layer="above", name="mask"),
                  dict(image, xref="x2", yref="y2", layer="below", name="heat image")]
        axis = dict(visible=False, showgrid=False, zeroline=False, constrain="domain", fixedrange=True)
        # Centred over each panel ("auto" would anchor them by their side and, in a narrow cell, overlap).
        titles = [dict(text="", x=x, y=1.0, xref="paper", yref="paper", showarrow=False, yanchor="bottom",
                       xanchor="center", font=dict(size=13)) for x in (0.755, 0.245)]
        fig = LiveFigure(data=traces, layout=dict(
            height=440, margin=dict(l=8, r=8, t=30, b=8), dragmode=False, autosize=True,
            plot_bgcolor="white", showlegend=False, hovermode="closest", annotations=titles, images=images,
            # In a cell narrower than planned the pictures shrink toward the titles (the spare height goes below).
            xaxis=dict(axis, domain=[0.51, 1.0]),
            yaxis=dict(axis, scaleanchor="x", autorange="reversed", constraintoward="top"),
            xaxis2=dict(axis, domain=[0.0, 0.49]),
            yaxis2=dict(axis, scaleanchor="x2", autorange="reversed", anchor="x2", constraintoward="top")))
        fig._config = dict(NO_TOOLBAR_CONFIG)  # no toolbar: see the module docstring
        for index, panel in ((T_CATCH, "sam"), (H_HEAT, "heat")):
            fig.data[index].on_click(lambda trace, points, state, panel=panel: points.point_inds and self.click(
                points.xs[0], points.ys[0], panel, alt=bool(state and state.alt), shift=bool(state and state.shift)))
        fig.data[T_SELECT].on_selection(lambda trace, points, selector: self.select_box(
            getattr(selector, "xrange", None), getattr(selector, "yrange", None)))
        return fig

    def _prompt_shapes(self, outline: str | None, points: np.ndarray, labels: np.ndarray,
                       box: np.ndarray | None) -> list[dict]:
        """Layout shapes of SAM's points (orange / blue circles), its box and the mask's outline."""
        shapes = []
        if outline:
            shapes.append(dict(type="path", path=outline, xref="x", yref="y", layer="above", name="outline",
                               line=dict(color=self.mask_color, width=2.5)))
        if box is not None:
            shapes.append(dict(type="rect", x0=float(box[0]), y0=float(box[1]), x1=float(box[2]), y1=float(box[3]),
                               xref="x", yref="y", layer="above", name="box", line=dict(color=BOX_COLOR, width=2.5)))
        r = MARKER_RADIUS
        for (x, y), label in zip(points.tolist(), labels.tolist()):
            shapes.append(dict(type="circle", xref="x", yref="y", xsizemode="pixel", ysizemode="pixel",
                               xanchor=x, yanchor=y, x0=-r, x1=r, y0=-r, y1=r, layer="above",
                               name="positive point" if label else "negative point",
                               fillcolor=POSITIVE_COLOR if label else NEGATIVE_COLOR,
                               line=dict(color="white", width=2)))
        return shapes

    def _display_mask(self, mask: np.ndarray, labelled: bool = False) -> tuple[np.ndarray, float]:
        """The mask at the size the image is sent at: (bool [h, w], or uint8 [h, w] instance numbers
        with ``labelled``; image pixels per sent pixel)."""
        height, width = mask.shape
        shrink = max(1.0, max(height, width) / self.image_side)
        size = (max(1, round(width / shrink)), max(1, round(height / shrink)))
        if size == (width, height):
            return mask, 1.0
        if labelled:
            return np.asarray(Image.fromarray(mask, mode="L").resize(size, Image.NEAREST)), width / size[0]
        small = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize(size, Image.NEAREST)
        return np.asarray(small) > 127, width / size[0]

    def _clear_selection_outline(self) -> None:
        """Remove the dotted outline plotly leaves after a box drag (our own box shape shows the box).

        The browser keeps that outline in its layout.selections without telling Python, where the
        list stays empty; setting it to empty would change nothing, so a placeholder goes first.
        """
        self.fig.layout.selections = [dict(type="rect", xref="x", yref="y", x0=0, x1=0, y0=0, y1=0, opacity=0)]
        self.fig.layout.selections = ()


def _has_z(trace: go.Heatmap) -> bool:
    return trace.z is not None and len(trace.z) > 0


def _png_uri(mask: np.ndarray, *colors: str) -> str:
    """A palette PNG (0 transparent, k the k-th of ``colors``) as a data URI: small and fast to encode."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, *(round(c * 255) for color in colors for c in to_rgb(color))])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0, compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode_mask(uri: str) -> np.ndarray:
    """bool [h, w]: the opaque pixels of a mask PNG sent to the browser."""
    png = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[..., 3] > 0


def _decode_labels(uri: str) -> np.ndarray:
    """uint8 [h, w]: the palette index of each pixel of a mask PNG sent to the browser (0: transparent)."""
    png = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)))


def _outline_path(mask: np.ndarray, scale: float) -> str:
    """SVG path of a display-size mask's outline, in image pixels (for a plotly path shape)."""
    parts = []
    for line in region_outline(mask.astype(np.float32), 0.5):
        points = np.round((line + 0.5) * scale - 0.5, 1)
        parts.append("M" + "L".join(f"{x:g},{y:g}" for x, y in points) + "Z")
    return "".join(parts)


def _parse_path(path: str) -> list[np.ndarray]:
    """The rings of an outline path made by :func:`_outline_path`, each float [K, 2] (x, y)."""
    return [np.array([[float(v) for v in point.split(",")] for point in ring[1:].split("L")])
            for ring in path.split("Z") if ring]
