"""plotly pieces shared by the widgets: image panels with heat maps, colour scales, bar charts.

A :class:`PanelFigure` is one ``go.FigureWidget`` with up to ``capacity`` image panels. Each
panel is a layout image (a base64 PNG, sent once per image) under two traces: a heat map (its data
replaced when the explanation changes, its style when colour map or opacity change) and an
outline. One marker trace shows the last clicked point. Coordinates everywhere are
original-image pixels (x = column, y = row, pixel centres at integers), whatever resolution is
actually sent.

Why layout images and not ``go.Image`` traces: an image trace loads asynchronously, and an update
that reaches the browser while it loads stops the FigureWidget from ever wiring its click and
hover events (seen with plotly 7.1 in JupyterLab 4 on "Run All").
"""
from __future__ import annotations

import base64
import io
import math
from typing import Callable, Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib import colormaps
from PIL import Image

from ..engine.regions import sample_positions
from ..figures.style import (
    MARKER_COLOR,  # one colour for the clicked point in live and static views
)
from .live_figure import LiveFigure

HEAT_TRACE, OUTLINE_TRACE = 0, 1
TRACES_PER_PANEL = 2
#: top margin (px) keeping plotly's toolbar (about 28 px tall, top right) off the first row of titles.
MODEBAR_ROOM = 36
#: plotly.js config of the figures (no fixed width): redraw at the cell's width when the window resizes.
FIGURE_CONFIG = {"responsive": True, "displaylogo": False}
#: the same without plotly's toolbar, for figures with nothing to zoom or whose toolbar would cover a title.
NO_TOOLBAR_CONFIG = dict(FIGURE_CONFIG, displayModeBar=False)


def image_data_uri(rgb: np.ndarray, max_side: int = 640) -> tuple[str, float]:
    """RGB uint8 [H, W, 3] -> (data URI no larger than ``max_side``, original pixels per sent pixel).

    PNG (lossless) for full-size panels; JPEG for thumbnails of at most 256 pixels, where a
    grid of dozens of panels would otherwise send megabytes.
    """
    height, width = rgb.shape[:2]
    scale = max(1.0, max(height, width) / max_side)
    img = Image.fromarray(rgb)
    if scale > 1.0:
        img = img.resize((max(1, round(width / scale)), max(1, round(height / scale))), Image.LANCZOS)
    buffer = io.BytesIO()
    if max_side <= 256:
        img.save(buffer, format="JPEG", quality=88)
        mime = "image/jpeg"
    else:
        img.save(buffer, format="PNG", compress_level=6)
        mime = "image/png"
    uri = f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return uri, width / img.width


def plotly_colorscale(cmap: str, steps: int = 17) -> list[list]:
    """A matplotlib colour map as a plotly colour scale, so widgets and static figures match."""
    if cmap not in colormaps:
        raise ValueError(f"Unknown colour map {cmap!r}; use a matplotlib name such as 'jet' or 'viridis'.")
    values = np.linspace(0.0, 1.0, steps)
    rgba = colormaps[cmap](values)
    return [[float(v), f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"] for v, (r, g, b, _) in zip(values, rgba)]


def discrete_colorscale(colors: np.ndarray) -> list[list]:
    """Colour scale for integer z in 0..n-1 (with zmin=-0.5, zmax=n-0.5): one flat band per colour."""
    n = len(colors)
    scale = []
    for i, (r, g, b) in enumerate(np.asarray(colors)):
        colour = f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    return scale


class PanelFigure:
    """One FigureWidget holding up to ``capacity`` image panels, arranged on demand.

    Every view of a widget reuses the same FigureWidget: :meth:`arrange` lays out the first ``n``
    panels on a grid and hides the rest. (Each new plotly FigureWidget ships plotly.js, several
    megabytes, to the browser, so widgets create as few as they can.)

    With ``staged=True`` it starts as a plain ``go.Figure``: fill it, then call :meth:`go_live` to
    turn it into the FigureWidget, whose first state then carries all the data. (A fresh
    FigureWidget that receives a large batch of updates before its first view renders can show
    stale traces in plotly 7.1.) By default it is a FigureWidget from the start.

    ``on_click(panel, x, y)`` is called with original-image pixel coordinates when a panel's heat
    map is clicked. ``top_margin``: pixels above the first row of titles (:data:`MODEBAR_ROOM`
    keeps the plotly toolbar off them).
    """

    def __init__(self, capacity: int, on_click: Callable[[int, float, float], None] | None = None,
                 staged: bool = False, top_margin: int = 28):
        self.capacity = capacity
        self.top_margin = top_margin
        self.n_panels = 0
        self._on_click = on_click
        self._keys: list[object] = [None] * capacity
        self._image_keys: list[object] = [None] * capacity
        traces, layout = [], {}
        for panel in range(capacity):
            axes = dict(xaxis=_axis_ref("x", panel), yaxis=_axis_ref("y", panel))
            traces += [
                go.Heatmap(z=None, showscale=False, name="heat", zsmooth=False, hoverongaps=False, visible=False,
                           **axes),
                go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False, visible=False,
                           line=dict(color="white", width=2), name="outline", **axes),
            ]
            layout[_axis_name("x", panel)] = dict(visible=False, showgrid=False, zeroline=False, constrain="domain",
                                                  anchor=_axis_ref("y", panel), domain=[0, 0.01])
            layout[_axis_name("y", panel)] = dict(visible=False, showgrid=False, zeroline=False, constrain="domain",
                                                  constraintoward="top",  # right under the panel's title
                                                  anchor=_axis_ref("x", panel), domain=[0, 0.01],
                                                  scaleanchor=_axis_ref("x", panel), autorange="reversed")
        traces.append(go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False, name="clicked",
                                 marker=dict(symbol="x-thin", size=14, line=dict(width=3, color=MARKER_COLOR))))
        annotations = [dict(text="", x=0, y=1, xref="paper", yref="paper", showarrow=False, xanchor="center",
                            yanchor="bottom", font=dict(size=13), visible=False) for _ in range(capacity)]
        images = [dict(source=None, xref=_axis_ref("x", p), yref=_axis_ref("y", p), x=-0.5, y=-0.5, sizex=1, sizey=1,
                       xanchor="left", yanchor="top", sizing="stretch", layer="below", visible=False)
                  for p in range(capacity)]
        self.fig: go.Figure = go.Figure(data=traces, layout=dict(
            layout, height=420, autosize=True, margin=dict(l=8, r=8, t=top_margin, b=8), dragmode=False,
            plot_bgcolor="white", showlegend=False, hovermode="closest", annotations=annotations, images=images,
            legend=dict(itemclick=False, itemdoubleclick=False)))
        self._legend_start = len(self.fig.data)
        if not staged:
            self.go_live()

    @property
    def live(self) -> bool:
        return isinstance(self.fig, go.FigureWidget)

    def go_live(self) -> go.FigureWidget:
        """Turn the staged figure into its FigureWidget (once) and wire the click callbacks."""
        if not self.live:
            self.fig = LiveFigure(self.fig)
            self.fig._config = dict(FIGURE_CONFIG)
            for panel in range(self.capacity):
                self.trace(panel, HEAT_TRACE).on_click(self._make_click_handler(panel))
        return self.fig

    # --- layout ------------------------------------------------------------------------------

    def arrange(self, n_panels: int, ncols: int, height: int, width: int | None = None,
                right_margin: int = 8) -> None:
        """Show the first ``n_panels`` panels on a grid with ``ncols`` columns; hide the others."""
        if not 1 <= n_panels <= self.capacity:
            raise ValueError(f"n_panels must be in 1..{self.capacity}, got {n_panels}.")
        nrows = math.ceil(n_panels / ncols)
        title = 24 / max(1, height - self.top_margin - 8)  # room above each panel for its title (paper units)
        hgap, vgap = (0.02 if ncols > 1 else 0.0), (8 / height if nrows > 1 else 0.0)
        updates: dict = {"height": height, "width": width, "margin.r": right_margin}
        notes: list[dict] = []
        for panel in range(self.capacity):
            active = panel < n_panels
            x, y = _axis_name("x", panel), _axis_name("y", panel)
            if active:
                row, col = divmod(panel, ncols)
                x0, x1 = col / ncols + hgap / 2, (col + 1) / ncols - hgap / 2
                y1 = 1 - row / nrows - vgap / 2 - title
                y0 = 1 - (row + 1) / nrows + vgap / 2
                updates[f"{x}.domain"], updates[f"{y}.domain"] = [x0, x1], [max(0.0, y0), max(y0 + 0.01, y1)]
                notes.append(dict(x=(x0 + x1) / 2, y=y1, visible=True))
            else:
                updates[f"{x}.domain"] = updates[f"{y}.domain"] = [0, 0.01]
                notes.append(dict(visible=False))
        with self.fig.batch_update():
            for path, value in updates.items():
                self.fig.layout[path] = value  # plotly sends only values that changed
            for panel, (annotation, note) in enumerate(zip(self.fig.layout.annotations, notes)):
                annotation.update(note)
                self.fig.layout.images[panel].visible = panel < n_panels
            for panel in range(self.capacity):
                active = panel < n_panels
                for kind in (HEAT_TRACE, OUTLINE_TRACE):
                    trace = self.trace(panel, kind)
                    if trace.visible != active:
                        trace.visible = active
        self.n_panels = n_panels

    # --- data --------------------------------------------------------------------------------

    def trace(self, panel: int, kind: int) -> go.Heatmap:
        return self.fig.data[panel * TRACES_PER_PANEL + kind]

    def set_image(self, panel: int, rgb: np.ndarray, key: object, max_side: int = 640) -> None:
        """Show ``rgb`` in ``panel``, sent only when ``key`` (e.g. an image version) or ``max_side``
        changes. A new ``key`` also clears the panel's heat map and outline, which belonged to the
        previous image."""
        if self._image_keys[panel] == (key, max_side):
            return
        new_image = self._image_keys[panel] is None or self._image_keys[panel][0] != key
        uri, _ = image_data_uri(rgb, max_side)
        height, width = rgb.shape[:2]
        self.fig.layout.images[panel].update(source=uri, sizex=width, sizey=height)
        if new_image:
            # Not when only the size changes: in a plotly batch_update, clearing a value and setting
            # the same value again leaves it cleared.
            self.clear_panel(panel)
        self.fig.layout[_axis_name("x", panel)].update(range=[-0.5, width - 0.5], autorange=False)
        self.fig.layout[_axis_name("y", panel)].update(range=[height - 0.5, -0.5], autorange=False)
        self._image_keys[panel] = (key, max_side)

    def clear_panel(self, panel: int) -> None:
        # Empty arrays, not None: in a plotly batch_update, None followed by a value keeps None.
        self.trace(panel, HEAT_TRACE).update(z=[], customdata=[])
        self.trace(panel, OUTLINE_TRACE).update(x=[], y=[])
        self._keys[panel] = None

    def set_heat(self, panel: int, key: object, z: np.ndarray, step: int, customdata: np.ndarray | None = None,
                 hovertemplate: str | None = None, zmin: float = 0.0, zmax: float = 1.0) -> None:
        """Replace a panel's heat data, unless ``key`` says it is already there.

        z: [h, w] values at the pixels :func:`subsample` keeps for ``step`` (every ``step``-th
        pixel from ``step // 2``); plotly draws each as a ``step`` x ``step`` cell.
        """
        if self._keys[panel] == key:
            return
        offset = step // 2
        heat = self.trace(panel, HEAT_TRACE)
        heat.update(z=_compact(z, 3), customdata=[] if customdata is None else _compact(customdata, 4),
                    x0=offset, dx=step, y0=offset, dy=step, zmin=zmin, zmax=zmax,
                    hovertemplate=hovertemplate, hoverinfo=None if hovertemplate else "none")
        self._keys[panel] = key

    def set_patch_heat(self, panel: int, key: object, values: np.ndarray, image_size: tuple[int, int],
                       customdata: np.ndarray | None = None, hovertemplate: str | None = None,
                       zmin: float = 0.0, zmax: float = 1.0) -> None:
        """A heat map given on the patch grid ([gh, gw]), one cell per patch over the image.

        With smoothing on (see :meth:`set_style`) plotly interpolates bilinearly between patch
        centres and holds the edge values, as the engine's align_corners=False resize does; so a
        label change sends gh * gw numbers, not an image-sized map.
        """
        if self._keys[panel] == key:
            return
        (height, width), (gh, gw) = image_size, np.shape(values)
        cell_h, cell_w = height / gh, width / gw
        heat = self.trace(panel, HEAT_TRACE)
        heat.update(z=_compact(values, 4), customdata=[] if customdata is None else _compact(customdata, 5),
                    x0=cell_w / 2 - 0.5, dx=cell_w, y0=cell_h / 2 - 0.5, dy=cell_h, zmin=zmin, zmax=zmax,
                    hovertemplate=hovertemplate, hoverinfo=None if hovertemplate else "none")
        self._keys[panel] = key

    def set_style(self, panel: int, colorscale: list, opacity: float, showscale: bool = False,
                  smooth: bool = True, bar_px: int = 300) -> None:
        """Colours and opacity of a panel's heat map; ``showscale`` adds a ``bar_px``-tall colour bar."""
        self.trace(panel, HEAT_TRACE).update(
            colorscale=colorscale, opacity=opacity, showscale=showscale, zsmooth="best" if smooth else False,
            colorbar=dict(title=dict(text="normalised", side="right"), thickness=12, lenmode="pixels",
                          len=bar_px, y=1, yanchor="top"))

    def set_outline(self, panel: int, lines: Sequence[np.ndarray]) -> None:
        """Draw polylines (each [K, 2] in (x, y)) as one trace; None separates them."""
        xs: list = []
        ys: list = []
        for line in lines:
            xs += np.round(line[:, 0], 1).tolist() + [None]
            ys += np.round(line[:, 1], 1).tolist() + [None]
        trace = self.trace(panel, OUTLINE_TRACE)
        if list(trace.x or []) != xs or list(trace.y or []) != ys:
            trace.update(x=xs, y=ys)

    def set_marker(self, point: tuple[float, float] | None, panel: int = 0) -> None:
        marker = self.fig.data[self.capacity * TRACES_PER_PANEL]
        marker.update(x=[] if point is None else [point[0]], y=[] if point is None else [point[1]],
                      xaxis=_axis_ref("x", panel), yaxis=_axis_ref("y", panel))

    def set_titles(self, titles: Sequence[str]) -> None:
        for annotation, title in zip(self.fig.layout.annotations, titles):
            if annotation.text != title:
                annotation.text = title

    def set_legend(self, names: Sequence[str], colors: np.ndarray) -> None:
        """Legend entries (square markers) for ``names``; replaces any previous legend."""
        wanted = [(name, [round(float(c), 4) for c in colour]) for name, colour in zip(names, colors)]
        current = [(t.name, list(t.meta) if t.meta is not None else None) for t in self.fig.data[self._legend_start:]]
        if current == wanted:
            return
        with self.fig.batch_update():
            self.fig.data = self.fig.data[:self._legend_start]
            self.fig.add_traces([
                go.Scatter(x=[None], y=[None], mode="markers", name=name, meta=colour, hoverinfo="skip",
                           marker=dict(symbol="square", size=12, color=_rgb(colour)), showlegend=True)
                for name, colour in wanted])
            self.fig.layout.showlegend = bool(wanted)

    @property
    def legend_names(self) -> list[str]:
        return [t.name for t in self.fig.data[self._legend_start:]]

    def click(self, panel: int, x: float, y: float) -> None:
        """Act as if the user clicked ``panel`` at image pixel (x, y): the same route as a real click.

        Ignored, like a real click, when the panel is hidden or shows no heat map yet.
        """
        if 0 <= panel < self.n_panels and self._on_click is not None and self._keys[panel] is not None:
            self._on_click(panel, float(x), float(y))

    def describe(self) -> dict:
        """What a person sees, as plain values (for tests; never reach into traces instead).

        panels: number shown; titles; images: (H, W) of each shown panel's photo or None;
        heat: (rows, cols) of each shown panel's heat data or None; marker: (x, y, panel) or None;
        legend: legend names; colorscale / opacity / colorbar: of each shown panel's heat map;
        height, width: of the figure in pixels (width None = fills its container);
        capacity: panels the figure holds; traces: plotly traces it holds (sent with every redraw).
        """
        shown = range(self.n_panels)
        heat = [self.trace(p, HEAT_TRACE) for p in shown]
        marker = self.fig.data[self.capacity * TRACES_PER_PANEL]
        images = [self.fig.layout.images[p] for p in shown]
        return {
            "panels": self.n_panels,
            "titles": [self.fig.layout.annotations[p].text for p in shown],
            "images": [(int(i.sizey), int(i.sizex)) if i.source else None for i in images],
            "heat": [np.shape(t.z) if t.z is not None and len(t.z) else None for t in heat],
            "marker": (float(marker.x[0]), float(marker.y[0]), _panel_of(marker.xaxis)) if marker.x else None,
            "legend": self.legend_names,
            "colorscale": [tuple(tuple(c) for c in t.colorscale) if t.colorscale else None for t in heat],
            "opacity": [t.opacity for t in heat],
            "colorbar": [bool(t.showscale) for t in heat],
            "outlined": [bool(self.trace(p, OUTLINE_TRACE).x) for p in shown],
            "height": self.fig.layout.height, "width": self.fig.layout.width,
            "capacity": self.capacity, "traces": len(self.fig.data),
        }

    def _make_click_handler(self, panel: int) -> Callable:
        def handle(trace, points, state) -> None:
            if not points.point_inds or self._on_click is None or trace.z is None or len(trace.z) == 0:
                return
            self._on_click(panel, float(points.xs[0]), float(points.ys[0]))
        return handle


def bar_figure(height: int = 260) -> go.FigureWidget:
    """An empty bar chart for per-label scores at a clicked patch."""
    fig = LiveFigure(go.Bar(x=[], y=[], name="score", marker=dict(color=[])))
    # No toolbar: nothing to zoom in a few bars, and its buttons would sit over the title.
    fig._config = dict(NO_TOOLBAR_CONFIG)
    fig.update_layout(height=height, autosize=True, margin=dict(l=50, r=10, t=40, b=80), showlegend=False,
                      title=dict(text="", font=dict(size=13)), yaxis=dict(title=dict(text="score", font=dict(size=11))),
                      xaxis=dict(tickangle=-40))
    return fig


def subsample(values: np.ndarray, step: int) -> np.ndarray:
    """The pixels of an [H, W] map that are sent for display (see ``regions.sample_positions``)."""
    rows = sample_positions(values.shape[0], step)
    cols = sample_positions(values.shape[1], step)
    return values[np.ix_(rows, cols)]


def _panel_of(axis_ref: str | None) -> int:
    digits = (axis_ref or "x")[1:]
    return int(digits) - 1 if digits else 0


def _axis_name(letter: str, panel: int) -> str:
    return f"{letter}axis" if panel == 0 else f"{letter}axis{panel + 1}"


def _axis_ref(letter: str, panel: int) -> str:
    return letter if panel == 0 else f"{letter}{panel + 1}"


def _compact(values: np.ndarray, decimals: int) -> np.ndarray:
    """Round for transport: 2-D arrays travel as JSON text, where short numbers are small."""
    values = np.asarray(values)
    return np.round(values.astype(np.float64), decimals) if values.dtype.kind == "f" else values


def _rgb(colour: Sequence[float]) -> str:
    r, g, b = (int(round(c * 255)) for c in colour[:3])
    return f"rgb({r},{g},{b})"


axis_name, axis_ref, compact = _axis_name, _axis_ref, _compact  # public, for views with their own layouts


_PLOTLY_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "%": "&#37;", "$": "&#36;"})


def plotly_text(text: object) -> str:
    """User text (labels, captions, class names) made safe to show in any plotly text: titles,
    legends, annotations, ticks, hover labels and the parts of a hover template.

    plotly renders a subset of HTML in every text it draws (<b>, <br>, <a href>, styled <span>),
    fills ``%{...}`` in templates, and typesets a text between ``$`` signs as LaTeX when MathJax
    is on the page. Sent as entities (plotly decodes ``&amp;``, ``&lt;``, ``&gt;`` and numeric ones
    after parsing markup and templates), these characters are shown exactly as typed;
    ``html.unescape`` reads the text back. The one helper for every widget.
    """
    return str(text).translate(_PLOTLY_ESCAPES)
