"""Where everything sits in the AttentionExplorer's figure: axes, traces and titles, built once.

:class:`AttentionLayout` lays out the map panels (the photo, then one per attention kind, wrapping
to more rows past four panels), the small multiples (per layer, one map per layer kind) and the
statistics charts, and records which trace, axis and annotation shows what.
:class:`.attention_view.AttentionView` fills them with data.
"""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from ..engine.attention import KIND_LABELS, KINDS, STAT_NAMES, STAT_TITLES
from ..figures.attention import MAP_COLUMNS, kind_title
from ..figures.style import KIND_COLORS, MARKER_COLOR, OUTLINE_COLOR
from .plotting import axis_name, axis_ref, plotly_text

SCOPES = {"query": ("solid", "this query"), "all": ("dash", "all queries")}  # chart lines: dash, legend text
IMAGE_PANEL = 0  # map panel 0 is the photo; panel 1 + i shows kinds[i]


class AttentionLayout:
    """Axes, traces and annotations of the explorer's one figure, and which index shows what.

    After construction: ``traces``, ``axis_layout`` (the axes), ``notes`` (annotations) and ``images`` (the
    photo's layout images) make the figure; ``map_heat``/``map_box``/``map_titles`` index the map
    panels, ``layer_heat``/``layer_box``/``layer_axes`` (per layer, one per kind) and
    ``layer_titles`` the small multiples, ``stat_lines`` ((stat, scope, kind) -> trace) and
    ``stat_titles`` the charts. Sizes are in pixels of the plot area (``plot_px`` tall).

    ``kinds`` are the map panels' kinds (any of engine/method_rows.py's METHOD_KINDS);
    ``layer_kinds`` those of the small multiples and charts, which exist at every layer: by default
    the kinds in the engine's KINDS (q-k, v-v) among ``kinds``, or both when there are none.
    The map panels sit ``map_shape`` = (rows, columns), at most MAP_COLUMNS per row.
    """

    MAPS_PX, MAP_TITLE_PX, HEADER_PX, CELL_PX, STATS_PX, TITLE_PX = 310, 48, 30, 80, 210, 22

    def __init__(self, layer_names: Sequence[str], kinds: Sequence[str] = KINDS,
                 layer_kinds: Sequence[str] | None = None):
        self.layer_names, self.kinds = tuple(layer_names), tuple(kinds)
        self.layer_kinds = tuple(layer_kinds) if layer_kinds is not None else (
            tuple(kind for kind in self.kinds if kind in KINDS) or KINDS)
        self.panels = ("image",) + self.kinds
        map_rows = -(-len(self.panels) // MAP_COLUMNS)
        self.map_shape = (map_rows, -(-len(self.panels) // map_rows))
        self.maps_px = map_rows * self.MAPS_PX
        count = len(self.layer_names)
        self.ncols = min(count, 12)
        self.bands = -(-count // self.ncols)
        self.band_px = self.TITLE_PX + len(self.layer_kinds) * (self.CELL_PX + 6) - 4
        self.plot_px = self.maps_px + 2 * self.HEADER_PX + self.bands * self.band_px + self.TITLE_PX + self.STATS_PX
        self.traces: list = []
        self.axis_layout: dict = {}
        self.notes: list[dict] = []
        self.images: list[dict] = []
        self._next_axis = 0
        self._add_maps()
        self._add_layers()
        self._add_stats()

    # --- building ----------------------------------------------------------------------------

    def _add(self, trace: go.BaseTraceType, axis: int) -> int:
        self.traces.append(trace.update(xaxis=axis_ref("x", axis), yaxis=axis_ref("y", axis)))
        return len(self.traces) - 1

    def _axis(self, x_domain: tuple[float, float], y_domain: tuple[float, float], image: bool) -> int:
        n, self._next_axis = self._next_axis, self._next_axis + 1
        x, y = axis_name("x", n), axis_name("y", n)
        axes = self.axis_layout
        if image:  # no ticks, square pixels, y downwards
            axes[x] = dict(domain=list(x_domain), anchor=axis_ref("y", n), visible=False, constrain="domain")
            axes[y] = dict(domain=list(y_domain), anchor=axis_ref("x", n), visible=False, constrain="domain",
                           constraintoward="top", scaleanchor=axis_ref("x", n), autorange="reversed")
        else:
            axes[x] = dict(domain=list(x_domain), anchor=axis_ref("y", n), gridcolor="#eee", dtick=1,
                           title=dict(text="layer", font=dict(size=10)), tickfont=dict(size=9))
            axes[y] = dict(domain=list(y_domain), anchor=axis_ref("x", n), gridcolor="#eee", rangemode="tozero",
                           tickfont=dict(size=9))
        return n

    def _note(self, text: str, x: float, top_px: float, xanchor: str = "center", yanchor: str = "bottom",
              size: int = 12) -> int:
        self.notes.append(dict(text=text, x=x, y=self._y(top_px), xref="paper", yref="paper", showarrow=False,
                                xanchor=xanchor, yanchor=yanchor, font=dict(size=size)))
        return len(self.notes) - 1

    def _y(self, px: float) -> float:
        return 1 - px / self.plot_px

    def _rows_domain(self, top_px: float, height_px: float) -> tuple[float, float]:
        return max(0.0, self._y(top_px + height_px)), min(1.0, self._y(top_px))

    def _add_maps(self) -> None:
        """The photo and one map per kind, row by row; each has a heat trace and the query outline."""
        self.map_axes, self.map_heat, self.map_box, self.map_titles = [], [], [], []
        width = 1 / self.map_shape[1]
        for panel, name in enumerate(self.panels):
            row, col = divmod(panel, self.map_shape[1])
            x0, x1, top = col * width + 0.01, (col + 1) * width - 0.01, row * self.MAPS_PX + self.MAP_TITLE_PX
            n = self._axis((x0, x1), self._rows_domain(top, self.MAPS_PX - self.MAP_TITLE_PX), True)
            self.map_axes.append(n)
            # The photo is a layout image, not a go.Image trace: plotly.js waits for an Image trace's
            # first load before it wires up click events, and an update arriving during that load
            # can leave it waiting for good (the explorer sends updates right after it is shown).
            self.images.append(dict(source=None, xref=axis_ref("x", n), yref=axis_ref("y", n), x=-0.5, y=-0.5,
                                     sizex=1, sizey=1, xanchor="left", yanchor="top", sizing="stretch",
                                     layer="below"))
            self.map_heat.append(self._add(go.Heatmap(
                z=None, showscale=False, zmin=0, zmax=1, zsmooth=False, name="heat", hoverongaps=False,
                hovertemplate="attention %{customdata:.4f}<br>(relative %{z:.3f})<extra></extra>"), n))
            self.map_box.append(self._add(_outline(MARKER_COLOR, 2.5, "query"), n))
            title = "image" if panel == IMAGE_PANEL else kind_title(name)
            size = 11 if self.map_shape[1] < MAP_COLUMNS else 10  # four abreast: about 240 px each at 1000 px
            self.map_titles.append(self._note(title, (x0 + x1) / 2, top, size=size))
        self.grid_lines = self._add(_outline(OUTLINE_COLOR, 0.7, "grid", opacity=0.5), self.map_axes[IMAGE_PANEL])

    def _add_layers(self) -> None:
        """Small multiples: per layer, one map per kind in a column, under the layer's name."""
        top = self.maps_px + self.HEADER_PX
        self._note("<b>Every layer</b> (click a map to show that layer and cell)", 0.0, top - 4, xanchor="left")
        self.layer_heat: list[tuple[int, ...]] = []
        self.layer_box: list[tuple[int, ...]] = []
        self.layer_axes: list[tuple[int, ...]] = []
        self.layer_titles: list[int] = []
        for layer, name in enumerate(self.layer_names):
            band, col = divmod(layer, self.ncols)
            x0, x1 = col / self.ncols + 0.003, (col + 1) / self.ncols - 0.003
            band_top = top + band * self.band_px + self.TITLE_PX
            heats, boxes, axes = [], [], []
            for offset, kind in enumerate(self.layer_kinds):
                n = self._axis((x0, x1), self._rows_domain(band_top + offset * (self.CELL_PX + 6), self.CELL_PX), True)
                heats.append(self._add(go.Heatmap(
                    z=None, showscale=False, zmin=0, zmax=1, zsmooth=False, meta=plotly_text(name),
                    name=plotly_text(f"{name} {kind}"),
                    hoverongaps=False, hovertemplate="attention %{customdata:.4f}<extra>%{meta}</extra>"), n))
                boxes.append(self._add(_outline(MARKER_COLOR, 1.5, "query"), n))
                axes.append(n)
            self.layer_heat.append(tuple(heats))
            self.layer_box.append(tuple(boxes))
            self.layer_axes.append(tuple(axes))
            self.layer_titles.append(self._note(plotly_text(name), (x0 + x1) / 2, band_top, size=10))
        for band in range(self.bands):
            band_top = top + band * self.band_px + self.TITLE_PX
            for offset, kind in enumerate(self.layer_kinds):
                middle = band_top + offset * (self.CELL_PX + 6) + self.CELL_PX / 2
                self._note(KIND_LABELS[kind], -0.005, middle, xanchor="right", yanchor="middle", size=10)

    def _add_stats(self) -> None:
        """One line chart per statistic; a solid line (this query) and a dashed one (all queries) per kind."""
        top = self.maps_px + 2 * self.HEADER_PX + self.bands * self.band_px
        labels = " against ".join(KIND_LABELS[kind] for kind in self.layer_kinds)
        self._note(f"<b>{labels} across layers</b> (solid: this query; dashed: mean of all patch queries)", 0.0,
                   top - 4, xanchor="left")
        self.stat_axes: list[int] = []
        self.stat_lines: dict[tuple[str, str, str], int] = {}
        self.stat_titles: dict[str, int] = {}
        for col, name in enumerate(STAT_NAMES):
            x0, x1 = col / len(STAT_NAMES) + 0.045, (col + 1) / len(STAT_NAMES) - 0.01
            n = self._axis((x0, x1), self._rows_domain(top + self.TITLE_PX, self.STATS_PX - 30), False)
            self.stat_axes.append(n)
            for scope, (dash, scope_text) in SCOPES.items():
                for kind in self.layer_kinds:
                    self.stat_lines[(name, scope, kind)] = self._add(go.Scatter(
                        x=[], y=[], mode="lines+markers", legendgroup=f"{scope}{kind}", showlegend=col == 0,
                        name=f"{KIND_LABELS[kind]}, {scope_text}", marker=dict(size=5),
                        line=dict(color=KIND_COLORS[kind], dash=dash, width=2),
                        hovertemplate="layer %{x}: %{y:.4f}<extra>%{fullData.name}</extra>"), n)
            self.stat_titles[name] = self._note(STAT_TITLES[name], (x0 + x1) / 2, top + self.TITLE_PX, size=11)


def _outline(color: str, width: float, name: str, opacity: float = 1.0) -> go.Scatter:
    return go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False, name=name, opacity=opacity,
                      line=dict(color=color, width=width))
