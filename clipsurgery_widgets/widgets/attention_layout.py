"""Where everything sits in the AttentionExplorer's figure: axes, traces and titles, built once.

:class:`AttentionLayout` lays out the map panels (the photo, then one per attention kind, wrapping
to more rows past four panels), the small multiples (per layer, one map per layer kind) and the
statistics charts, and records which trace, axis and annotation shows what.
:class:`.attention_view.AttentionView` fills them with data.
"""
from __future__ import annotations

import re
from typing import Sequence

from ..engine.attention import KIND_LABELS, KINDS, STAT_NAMES, STAT_TITLES
from ..figures.attention import MAP_COLUMNS, kind_title
from ..figures.style import KIND_COLORS, MARKER_COLOR, OUTLINE_COLOR
from .plotting import axis_name, axis_ref, plotly_text

SCOPES = {"query": ("solid", "this query"), "all": ("dash", "all queries")}  # chart lines: dash, legend text
IMAGE_PANEL = 0  # map panel 0 is the photo; panel 1 + i shows kinds[i]
# Hover texts: the cell, then its probability in the query's attention row (text: "row r, col c" per cell;
# the small multiples are drawn in cell units, so x and y are the column and the row).
MAP_HOVER = "%{text}<br>probability %{customdata:.4f}<br>(÷ the map's largest: %{z:.2f})<extra></extra>"
LAYER_HOVER = "row %{y}, col %{x}<br>probability %{customdata:.4f}<extra>%{meta}</extra>"
IMAGE_HOVER = "row %{customdata[0]}, col %{customdata[1]}<extra>click: make this the query</extra>"


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

    MAP_TITLE_PX, HEADER_PX, CELL_PX, STATS_PX, TITLE_PX = 48, 30, 80, 210, 22
    #: figure margins (px): the top one leaves the plotly toolbar room above the panel titles
    MARGIN = dict(l=40, r=10, t=30, b=60)
    DEFAULT_WIDTH = 700  # px, the figure's width until the browser reports the real one
    COLORBAR_PX = 58  # room at the right of the map panels for their colour bar
    MAP_PX_RANGE = (60, 420)  # the photo's drawn height in a map panel, at least / at most
    STATS_ABREAST_PX = 760  # narrower plots show the four statistics charts 2x2

    def __init__(self, layer_names: Sequence[str], kinds: Sequence[str] = KINDS,
                 layer_kinds: Sequence[str] | None = None, width_px: float | None = None, aspect: float = 1.0):
        self.layer_names, self.kinds = tuple(layer_names), tuple(kinds)
        self.layer_kinds = tuple(layer_kinds) if layer_kinds is not None else (
            tuple(kind for kind in self.kinds if kind in KINDS) or KINDS)
        self.panels = ("image",) + self.kinds
        map_rows = -(-len(self.panels) // MAP_COLUMNS)
        self.map_shape = (map_rows, -(-len(self.panels) // map_rows))
        self.width_px, self.aspect = float(width_px or self.DEFAULT_WIDTH), float(aspect)
        # The map rows are as tall as the photo drawn at the panels' width: no empty band under them.
        plot_width = max(1.0, self.width_px - self.MARGIN["l"] - self.MARGIN["r"])
        self.maps_right = max(0.5, 1 - self.COLORBAR_PX / plot_width)  # paper x where the colour bar starts
        panel_px = plot_width * (self.maps_right / self.map_shape[1] - 0.02)
        low, high = self.MAP_PX_RANGE
        self.map_px = 4 * round(min(high, max(low, panel_px * self.aspect)) / 4)  # steps of 4 px: fewer redraws
        self.map_row_px = self.MAP_TITLE_PX + self.map_px + 8
        self.maps_px = map_rows * self.map_row_px
        count = len(self.layer_names)
        self.ncols = min(count, 12)
        self.bands = -(-count // self.ncols)
        self.band_px = self.TITLE_PX + len(self.layer_kinds) * (self.CELL_PX + 6) - 4
        # The statistics charts: four abreast where there is room, else 2x2 (their titles would overlap).
        self.stat_columns = len(STAT_NAMES) if plot_width >= self.STATS_ABREAST_PX else 2
        self.stat_rows = -(-len(STAT_NAMES) // self.stat_columns)
        self._tick_room = 36 / plot_width  # paper x left of each chart for its tick labels
        self.plot_px = (self.maps_px + 2 * self.HEADER_PX + self.bands * self.band_px
                        + self.stat_rows * (self.TITLE_PX + self.STATS_PX))
        self.height_px = self.plot_px + self.MARGIN["t"] + self.MARGIN["b"]
        self.traces: list = []
        self.axis_layout: dict = {}
        self.notes: list[dict] = []
        self.images: list[dict] = []
        self._next_axis = 0
        self._add_maps()
        self._add_layers()
        self._add_stats()

    def colorbar(self) -> dict:
        """The map panels' colour bar: right of them, as tall as their rows (it also reads the small multiples)."""
        top, bottom = self._y(self.MAP_TITLE_PX), self._y(self.maps_px - 8)
        return dict(x=1.0, xanchor="right", xref="paper", y=top, yanchor="top", yref="paper", len=top - bottom,
                    lenmode="fraction", thickness=12, outlinewidth=0, tickvals=[0, 0.5, 1], tickfont=dict(size=10),
                    title=dict(text="÷ max", side="top", font=dict(size=10)))

    def fit(self, width_px: float | None = None, aspect: float | None = None) -> bool:
        """Lay ``self.fig`` (the figure made from this layout) out for a width of ``width_px`` (the browser's)
        and photos of ``aspect`` (height / width); None keeps the current value.

        The map rows become as tall as the photo drawn at the panels' width, so no empty band is left
        under them. Returns True when the layout changed.
        """
        geometry = AttentionLayout(self.layer_names, self.kinds, self.layer_kinds,
                                   width_px=self.width_px if width_px is None else width_px,
                                   aspect=self.aspect if aspect is None else aspect)
        moved = ((geometry.map_px, round(geometry.maps_right, 3), geometry.stat_columns)
                 != (self.map_px, round(self.maps_right, 3), self.stat_columns))
        if moved:
            with self.fig.batch_update():
                self.fig.layout.height = geometry.height_px
                for name, axis in geometry.axis_layout.items():
                    self.fig.layout[name].domain = axis["domain"]
                for note, placed in zip(self.fig.layout.annotations, geometry.notes):
                    note.update(x=placed["x"], y=placed["y"])
                self.fig.data[self.map_heat[-1]].colorbar.update(geometry.colorbar())
        for name in ("width_px", "aspect", "maps_right", "map_px", "map_row_px", "maps_px", "plot_px", "height_px",
                     "stat_columns", "stat_rows"):
            setattr(self, name, getattr(geometry, name))
        return moved

    def geometry(self) -> dict:
        """Where things are, in pixels, as plotly draws ``self.fig``: width, height, stats_grid (rows, columns
        of the statistics charts), map_px (the photo's height in a map panel) and map_band_px (the largest
        empty height left in a map panel under its photo)."""
        layout = self.fig.layout
        plot_width = self.width_px - self.MARGIN["l"] - self.MARGIN["r"]
        plot_height = layout.height - self.MARGIN["t"] - self.MARGIN["b"]
        band = 0.0
        for n in self.map_axes:
            (x0, x1), (y0, y1) = layout[axis_name("x", n)].domain, layout[axis_name("y", n)].domain
            tall, wide = (y1 - y0) * plot_height, (x1 - x0) * plot_width
            band = max(band, tall - min(tall, wide * self.aspect))
        return {"width": self.width_px, "height": layout.height, "stats_grid": (self.stat_rows, self.stat_columns),
                "map_px": self.map_px, "map_band_px": band}

    def colorbar_facts(self) -> dict:
        """The maps' colour bar as shown in ``self.fig``: shown, title, range (zmin, zmax), panel beside it."""
        shown = [p for p, index in enumerate(self.map_heat) if self.fig.data[index].showscale]
        heat = self.fig.data[self.map_heat[shown[0] if shown else -1]]
        title = re.sub(r"<[^>]+>", " ", heat.colorbar.title.text or "")
        return {"shown": bool(shown), "title": title, "range": (heat.zmin, heat.zmax),
                "panel": shown[0] if shown else None}

    # --- building ----------------------------------------------------------------------------

    def _add(self, trace: dict, axis: int) -> int:
        # Plain dicts: plotly checks them once, when the figure is made (a layout made only for its
        # geometry, see AttentionView.fit, then costs no plotly object).
        self.traces.append(dict(trace, xaxis=axis_ref("x", axis), yaxis=axis_ref("y", axis)))
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
        width = self.maps_right / self.map_shape[1]
        for panel, name in enumerate(self.panels):
            row, col = divmod(panel, self.map_shape[1])
            x0, x1, top = col * width + 0.01, (col + 1) * width - 0.01, row * self.map_row_px + self.MAP_TITLE_PX
            n = self._axis((x0, x1), self._rows_domain(top, self.map_px), True)
            self.map_axes.append(n)
            # The photo is a layout image, not a go.Image trace: plotly.js waits for an Image trace's
            # first load before it wires up click events, and an update arriving during that load
            # can leave it waiting for good (the explorer sends updates right after it is shown).
            self.images.append(dict(source=None, xref=axis_ref("x", n), yref=axis_ref("y", n), x=-0.5, y=-0.5,
                                     sizex=1, sizey=1, xanchor="left", yanchor="top", sizing="stretch",
                                     layer="below"))
            last = panel == len(self.panels) - 1  # one colour bar for all the maps, beside the last
            self.map_heat.append(self._add(dict(type="heatmap",
                z=None, showscale=last and panel != IMAGE_PANEL, zmin=0, zmax=1, zsmooth=False, name="heat",
                hoverongaps=False, hovertemplate=MAP_HOVER, **({"colorbar": self.colorbar()} if last else {})), n))
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
                heats.append(self._add(dict(type="heatmap",
                    z=None, showscale=False, zmin=0, zmax=1, zsmooth=False,
                    meta=plotly_text(f"{name}, {KIND_LABELS[kind]}"),
                    name=plotly_text(f"{name} {kind}"),
                    hoverongaps=False, hovertemplate=LAYER_HOVER), n))
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
        for index, name in enumerate(STAT_NAMES):
            row, col = divmod(index, self.stat_columns)
            x0, x1 = col / self.stat_columns + self._tick_room, (col + 1) / self.stat_columns - 0.01
            chart_top = top + row * (self.TITLE_PX + self.STATS_PX) + self.TITLE_PX
            n = self._axis((x0, x1), self._rows_domain(chart_top, self.STATS_PX - 46), False)  # room: "layer"
            self.stat_axes.append(n)
            for scope, (dash, scope_text) in SCOPES.items():
                for kind in self.layer_kinds:
                    self.stat_lines[(name, scope, kind)] = self._add(dict(type="scatter",
                        x=[], y=[], mode="lines+markers", legendgroup=f"{scope}{kind}", showlegend=index == 0,
                        name=f"{KIND_LABELS[kind]}, {scope_text}", marker=dict(size=5),
                        line=dict(color=KIND_COLORS[kind], dash=dash, width=2),
                        hovertemplate="layer %{x}: %{y:.4f}<extra>%{fullData.name}</extra>"), n)
            self.stat_titles[name] = self._note(STAT_TITLES[name], (x0 + x1) / 2, chart_top, size=11)


def _outline(color: str, width: float, name: str, opacity: float = 1.0) -> dict:
    return dict(type="scatter", x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False, name=name,
                opacity=opacity, line=dict(color=color, width=width))
