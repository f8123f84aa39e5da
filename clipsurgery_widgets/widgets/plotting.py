"""plotly pieces shared by the widgets: image panels with heat maps, colour scales, bar charts.

A :class:`PanelFigure` is a ``go.FigureWidget`` holding ``n`` image panels. Each panel has three
traces: the image (a base64 PNG, sent once per image), a heat map (its data replaced when the
explanation changes; its style when colour map or opacity change) and an outline. One marker
trace shows the last clicked point. Coordinates everywhere are original-image pixels
(x = column, y = row, pixel centres at integers), whatever resolution is actually sent.
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

IMAGE_TRACE, HEAT_TRACE, OUTLINE_TRACE = 0, 1, 2
TRACES_PER_PANEL = 3
MARKER_COLOR = "#ff2bd6"


def image_data_uri(rgb: np.ndarray, max_side: int = 640) -> tuple[str, float]:
    """RGB uint8 [H, W, 3] -> (PNG data URI no larger than ``max_side``, original pixels per sent pixel)."""
    height, width = rgb.shape[:2]
    scale = max(1.0, max(height, width) / max_side)
    img = Image.fromarray(rgb)
    if scale > 1.0:
        img = img.resize((max(1, round(width / scale)), max(1, round(height / scale))), Image.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=False, compress_level=6)
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
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

    ``on_click(panel, x, y)`` is called with original-image pixel coordinates when a panel's heat
    map is clicked.
    """

    def __init__(self, capacity: int, on_click: Callable[[int, float, float], None] | None = None):
        self.capacity = capacity
        self.n_panels = 0
        self._on_click = on_click
        self._keys: list[object] = [None] * capacity
        self._image_keys: list[object] = [None] * capacity
        self._image_size: tuple[int, int] | None = None
        traces, layout = [], {}
        for panel in range(capacity):
            axes = dict(xaxis=_axis_ref("x", panel), yaxis=_axis_ref("y", panel))
            traces += [
                go.Image(source=None, hoverinfo="skip", name="image", visible=False, **axes),
                go.Heatmap(z=None, showscale=False, name="heat", zsmooth=False, hoverongaps=False, visible=False,
                           **axes),
                go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False, visible=False,
                           line=dict(color="white", width=2), name="outline", **axes),
            ]
            layout[_axis_name("x", panel)] = dict(visible=False, showgrid=False, zeroline=False, constrain="domain",
                                                  anchor=_axis_ref("y", panel), domain=[0, 0.01])
            layout[_axis_name("y", panel)] = dict(visible=False, showgrid=False, zeroline=False, constrain="domain",
                                                  anchor=_axis_ref("x", panel), domain=[0, 0.01],
                                                  scaleanchor=_axis_ref("x", panel), autorange="reversed")
        traces.append(go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False, name="clicked",
                                 marker=dict(symbol="x-thin", size=14, line=dict(width=3, color=MARKER_COLOR))))
        annotations = [dict(text="", x=0, y=1, xref="paper", yref="paper", showarrow=False, xanchor="center",
                            yanchor="bottom", font=dict(size=13), visible=False) for _ in range(capacity)]
        self.fig = go.FigureWidget(data=traces, layout=dict(
            layout, height=420, margin=dict(l=8, r=8, t=8, b=8), dragmode=False, plot_bgcolor="white",
            showlegend=False, hovermode="closest", annotations=annotations,
            legend=dict(itemclick=False, itemdoubleclick=False)))
        self._legend_start = len(self.fig.data)
        self.fig.observe(lambda c: open("/tmp/csw/click.log", "a").write(f"js2py {str(c['new'])[:150]}\n"), names="_js2py_pointsCallback")
        for panel in range(capacity):
            self.trace(panel, HEAT_TRACE).on_click(self._make_click_handler(panel))

    # --- layout ------------------------------------------------------------------------------

    def arrange(self, n_panels: int, ncols: int, height: int, right_margin: int = 8) -> None:
        """Show the first ``n_panels`` panels on a grid with ``ncols`` columns; hide the others."""
        if not 1 <= n_panels <= self.capacity:
            raise ValueError(f"n_panels must be in 1..{self.capacity}, got {n_panels}.")
        nrows = math.ceil(n_panels / ncols)
        title = 24 / height  # room above each panel for its title, in paper units
        hgap, vgap = (0.02 if ncols > 1 else 0.0), (0.03 if nrows > 1 else 0.0)
        updates: dict = {"height": height, "margin.r": right_margin}
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
            for annotation, note in zip(self.fig.layout.annotations, notes):
                annotation.update(note)
            for panel in range(self.capacity):
                active = panel < n_panels
                for kind in (IMAGE_TRACE, HEAT_TRACE, OUTLINE_TRACE):
                    trace = self.trace(panel, kind)
                    if trace.visible != active:
                        trace.visible = active
        self.n_panels = n_panels

    # --- data --------------------------------------------------------------------------------

    def trace(self, panel: int, kind: int) -> go.Heatmap:
        return self.fig.data[panel * TRACES_PER_PANEL + kind]

    def set_image(self, panel: int, rgb: np.ndarray, key: object, max_side: int = 640) -> None:
        """Show ``rgb`` in ``panel``; sent only when ``key`` (e.g. an image version) changes."""
        if self._image_keys[panel] == key:
            return
        uri, scale = image_data_uri(rgb, max_side)
        height, width = rgb.shape[:2]
        self.trace(panel, IMAGE_TRACE).update(source=uri, x0=scale / 2 - 0.5, dx=scale, y0=scale / 2 - 0.5,
                                              dy=scale)
        self.clear_panel(panel)
        self.fig.layout[_axis_name("x", panel)].range = [-0.5, width - 0.5]
        self.fig.layout[_axis_name("y", panel)].update(range=[height - 0.5, -0.5], autorange=False)
        self._image_keys[panel] = key

    def clear_panel(self, panel: int) -> None:
        self.trace(panel, HEAT_TRACE).update(z=None, customdata=None)
        self.trace(panel, OUTLINE_TRACE).update(x=[], y=[])
        self._keys[panel] = None

    def set_heat(self, panel: int, key: object, z: np.ndarray, step: int, customdata: np.ndarray | None = None,
                 hovertemplate: str | None = None, zmin: float = 0.0, zmax: float = 1.0) -> None:
        """Replace a panel's heat data, unless ``key`` says it is already there.

        z: [h, w] values at every ``step``-th pixel from the middle of the first block
        (``map[o::step, o::step]`` with o = step // 2); see :func:`subsample`.
        """
        if self._keys[panel] == key:
            return
        heat = self.trace(panel, HEAT_TRACE)
        offset = step // 2
        heat.update(z=_compact(z, 3), customdata=None if customdata is None else _compact(customdata, 4),
                    x0=offset, dx=step, y0=offset, dy=step, zmin=zmin, zmax=zmax,
                    hovertemplate=hovertemplate, hoverinfo=None if hovertemplate else "none")
        self._keys[panel] = key

    def set_style(self, panel: int, colorscale: list, opacity: float, showscale: bool = False,
                  smooth: bool = True) -> None:
        self.trace(panel, HEAT_TRACE).update(
            colorscale=colorscale, opacity=opacity, showscale=showscale, zsmooth="best" if smooth else False,
            colorbar=dict(title=dict(text="normalised", side="right"), thickness=12, len=0.9))

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

    def _make_click_handler(self, panel: int) -> Callable:
        def handle(trace, points, state) -> None:
            open("/tmp/csw/click.log", "a").write(f"handle {panel} {points.point_inds} {points.xs} z={trace.z is not None}\n")
            if not points.point_inds or self._on_click is None or trace.z is None:
                return
            self._on_click(panel, float(points.xs[0]), float(points.ys[0]))
        return handle


def bar_figure(height: int = 260) -> go.FigureWidget:
    """An empty bar chart for per-label scores at a clicked patch."""
    fig = go.FigureWidget(go.Bar(x=[], y=[], name="score", marker=dict(color=[])))
    fig.update_layout(height=height, margin=dict(l=50, r=10, t=40, b=80), showlegend=False,
                      title=dict(text="", font=dict(size=13)), yaxis=dict(title=dict(text="score", font=dict(size=11))),
                      xaxis=dict(tickangle=-40))
    return fig


def subsample(values: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th pixel of an [H, W] map, from the middle of the first step x step block."""
    offset = step // 2
    return values[offset::step, offset::step]


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
