"""The AttentionExplorer's view: one plotly FigureWidget with the maps, every layer, and the statistics.

It draws engine results it is given (AttentionRows, AttentionStats, and KindRow for the dense
methods' attention) and reports what it shows with :meth:`AttentionView.describe`. The attention
kinds shown are data: ``kinds`` (default the engine's KINDS, q-k and v-v; any of
engine/method_rows.py's METHOD_KINDS) sets the map panels; ``layer_kinds`` (default: the q-k and
v-v among them) the rows of each small-multiples band and the chart lines.
"""
from __future__ import annotations

import html
import re
from typing import Callable, Mapping, Sequence

import numpy as np

from ..engine.attention import (GLOBAL, KINDS, STAT_NAMES, STAT_TITLES, AttentionRows, AttentionStats, Query, cell_box)
from ..engine.method_rows import KIND_METHODS, KindRow
from ..figures.attention import head_text, kind_title, panel_title, query_text
from ..figures.style import method_name
from .attention_layout import IMAGE_HOVER, IMAGE_PANEL, AttentionLayout
from .live_figure import LiveFigure
from .plotting import axis_name, axis_ref, compact, image_data_uri, plotly_colorscale, plotly_text

__all__ = ["AttentionView", "IMAGE_PANEL"]


class AttentionView(AttentionLayout):
    """One FigureWidget holding every view of the explorer (one widget: plotly.js is sent once).

    Top: the image with its patch grid, then one map per kind (rows of up to four panels). Middle: small multiples, the rows
    of the query at every layer (one row of maps per kind, up to 12 layers per band). Bottom: one
    line chart per statistic. Map panels use image-pixel coordinates (pixel centres at integers);
    small multiples use cell coordinates. The query cell is outlined in every map. Where each of
    these sits is :class:`.attention_layout.AttentionLayout`'s business.

    Clicks: a real click on a map calls :meth:`click_map`, on a small multiple :meth:`click_layer`
    (call them to do what a click does; they raise on bad input, where a real click's error goes to
    ``on_error(exc, doing)``).
    """

    def __init__(self, layer_names: Sequence[str], on_map_click: Callable[[int, float, float], None],
                 on_layer_click: Callable[[int, float, float], None],
                 on_error: Callable[[Exception, str], None], kinds: Sequence[str] = KINDS,
                 layer_kinds: Sequence[str] | None = None, width_px: float | None = None,
                 on_width: Callable[[float], None] | None = None):
        super().__init__(layer_names, kinds, layer_kinds, width_px=width_px)
        self._on_map_click, self._on_layer_click, self._on_error = on_map_click, on_layer_click, on_error
        self._grid: tuple | None = None
        self._style: tuple[str, float] | None = None
        self._marked_layer: int | None = None
        self._rows: AttentionRows | None = None
        self._panels: dict[str, KindRow | None] = {}
        self.fig = LiveFigure(data=self.traces, layout=dict(
            self.axis_layout, height=self.height_px, margin=self.MARGIN, dragmode=False,
            plot_bgcolor="white", hovermode="closest", annotations=self.notes, images=self.images,
            showlegend=True, legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.02, yanchor="top",
                                         itemclick=False, itemdoubleclick=False)))
        # The browser reports the width it drew the figure at: lay out again for it.
        self._on_width = on_width or self.fit
        self.fig.observe(self._width_reported, names="_view_width")
        for panel, index in enumerate(self.map_heat):
            self.fig.data[index].on_click(self._handler(self.click_map, panel))
        for layer, heats in enumerate(self.layer_heat):
            for index in heats:
                self.fig.data[index].on_click(self._handler(self.click_layer, layer))

    # --- clicks ------------------------------------------------------------------------------

    def click_map(self, panel: int, x: float, y: float) -> None:
        """Do what a click at image pixel (x, y) of map ``panel`` does (0 the image, then one per kind)."""
        if not 0 <= panel < len(self.panels):
            raise ValueError(f"panel={panel!r} does not exist: the map panels are 0 to {len(self.panels) - 1} "
                             f"({', '.join(self.panels)}).")
        self._on_map_click(panel, float(x), float(y))

    def click_layer(self, layer: int, x: float, y: float) -> None:
        """Do what a click on the small multiple of ``layer`` at cell (x = column, y = row) does."""
        if not 0 <= layer < len(self.layer_names):
            raise ValueError(f"layer={layer!r} does not exist: the small multiples show layers 0 to "
                             f"{len(self.layer_names) - 1}.")
        self._on_layer_click(layer, float(x), float(y))

    def _handler(self, click: Callable[[int, float, float], None], index: int) -> Callable:
        """plotly's on_click callback for one heat trace: the same call as a click from Python."""
        def handle(trace, points, state) -> None:
            if points.point_inds and trace.z is not None:
                try:
                    click(index, float(points.xs[0]), float(points.ys[0]))
                except Exception as exc:  # noqa: BLE001 - shown in the widget, which keeps working
                    self._on_error(exc, "reading the clicked point")
        return handle

    # --- width -------------------------------------------------------------------------------

    def _width_reported(self, change: dict) -> None:
        width = change["new"]
        if width and abs(float(width) - self.width_px) >= 1:
            try:
                self._on_width(float(width))
            except Exception as exc:  # noqa: BLE001 - shown in the widget, which keeps working
                self._on_error(exc, "fitting the figure to its width")

    # --- data --------------------------------------------------------------------------------

    def set_image(self, rgb: np.ndarray) -> None:
        """Send the image (RGB uint8 [H, W, 3], once per image) to every map panel and clear the rest."""
        uri, _ = image_data_uri(rgb)
        height, width = rgb.shape[:2]
        self.fit(aspect=height / width)
        with self.fig.batch_update():
            for panel, n in enumerate(self.map_axes):
                self.fig.layout.images[panel].update(source=uri, x=-0.5, y=-0.5, sizex=width, sizey=height)
                self.fig.layout[axis_name("x", n)].range = [-0.5, width - 0.5]
                self.fig.layout[axis_name("y", n)].update(range=[height - 0.5, -0.5], autorange=False)
            self.clear()

    def clear(self) -> None:
        """Remove every map, outline and chart line (the photo stays)."""
        with self.fig.batch_update():
            for index in self.map_heat + [i for heats in self.layer_heat for i in heats]:
                self.fig.data[index].update(z=None, customdata=None)
            for index in self.map_box + [i for boxes in self.layer_box for i in boxes] + [self.grid_lines]:
                self.fig.data[index].update(x=[], y=[])
            for index in self.stat_lines.values():
                self.fig.data[index].update(x=[], y=[])
            self.fig.layout.shapes = []
            self._grid = self._marked_layer = self._rows = None
            self._panels = {}

    def show(self, size: tuple[int, int], rows: AttentionRows, all_rows: Sequence[AttentionRows],
             query_stats: AttentionStats, all_stats: AttentionStats | None, cmap: str, opacity: float,
             panels: Mapping[str, KindRow | None] | None = None) -> None:
        """Draw the rows at the current layer, at every layer (``all_rows``) and the statistics.

        panels: {kind: KindRow} of the map panels (None: not computed yet, drawn empty); by default
            the q-k and v-v rows of ``rows``.
        """
        if panels is None:
            panels = {kind: KindRow.from_rows(rows, kind) for kind in self.kinds}
        with self.fig.batch_update():
            self._show_grid(size, rows.grid)
            self._show_maps(size, rows, panels)
            self._show_layers(rows, all_rows)
            self._show_stats(rows.layer, query_stats, all_stats)
            if self._style != (cmap, opacity):
                self.restyle(cmap, opacity)
        self._rows = rows

    def restyle(self, cmap: str, opacity: float) -> None:
        """Colour map and opacity of the maps (sent only when they change)."""
        scale = plotly_colorscale(cmap)
        self._style = (cmap, opacity)
        with self.fig.batch_update():
            for index in self.map_heat[1:]:
                self.fig.data[index].update(colorscale=scale, opacity=opacity)
            for heats in self.layer_heat:
                for index in heats:
                    self.fig.data[index].colorscale = scale

    def _show_grid(self, size: tuple[int, int], grid: tuple[int, int]) -> None:
        """Per-cell geometry that changes only with the image or the grid."""
        if self._grid == (size, grid):
            return
        (height, width), (gh, gw) = size, grid
        geometry = dict(x0=width / gw / 2 - 0.5, dx=width / gw, y0=height / gh / 2 - 0.5, dy=height / gh)
        cells = np.stack(np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij"), axis=-1)
        # The image panel gets an invisible per-cell layer: it makes every patch clickable and hoverable.
        self.fig.data[self.map_heat[IMAGE_PANEL]].update(
            z=np.zeros((gh, gw)), customdata=cells, opacity=0.0, **geometry,
            hovertemplate=IMAGE_HOVER)
        names = np.array([[f"row {r}, col {c}" for c in range(gw)] for r in range(gh)], dtype=object)
        for index in self.map_heat[1:]:
            self.fig.data[index].update(text=names, **geometry)
        self.fig.data[self.grid_lines].update(**_grid_lines(size, grid))
        for heats, axes in zip(self.layer_heat, self.layer_axes):
            for index, n in zip(heats, axes):
                self.fig.data[index].update(x0=0, dx=1, y0=0, dy=1)
                self.fig.layout[axis_name("x", n)].range = [-0.5, gw - 0.5]
                self.fig.layout[axis_name("y", n)].update(range=[gh - 0.5, -0.5], autorange=False)
        self._grid = (size, grid)

    def _show_maps(self, size: tuple[int, int], rows: AttentionRows, panels: Mapping[str, KindRow | None]) -> None:
        titles = [("image", query_text(rows.query))]
        for panel, kind in enumerate(self.kinds, start=1):
            row = panels.get(kind)
            if row is None:  # its job is still running
                self.fig.data[self.map_heat[panel]].update(z=None, customdata=None)
                titles.append((f"{kind_title(kind)}, {head_text(rows.head)}", method_name(KIND_METHODS[kind][0]),
                               "computing…"))
                continue
            self.fig.data[self.map_heat[panel]].update(z=compact(row.normalised(), 4),
                                                       customdata=compact(row.patches, 5))
            titles.append(panel_title(row, self.layer_names[row.layer]))
        for note, lines in zip(self.map_titles, titles):  # short lines: the panels can be narrow
            self._set_note(note, "<br>".join(plotly_text(line) for line in lines))
        self._panels = dict(panels)
        xs, ys = _box_path(rows.query, size, rows.grid)
        for index in self.map_box:
            self.fig.data[index].update(x=xs, y=ys)

    def _show_layers(self, rows: AttentionRows, all_rows: Sequence[AttentionRows]) -> None:
        xs, ys = _box_path(rows.query, rows.grid, rows.grid)  # cell units
        for layer_rows, heats, boxes in zip(all_rows, self.layer_heat, self.layer_box):
            for index, box, kind in zip(heats, boxes, self.layer_kinds):
                self.fig.data[index].update(z=compact(layer_rows.normalised(kind), 4),
                                            customdata=compact(layer_rows.kind(kind)[0], 5))
                self.fig.data[box].update(x=xs, y=ys)
        for layer, note in enumerate(self.layer_titles):
            name = plotly_text(self.layer_names[layer])
            self._set_note(note, f"<b>[{name}]</b>" if layer == rows.layer else name)

    def _show_stats(self, layer: int, query_stats: AttentionStats, all_stats: AttentionStats | None) -> None:
        for (name, scope, kind), index in self.stat_lines.items():
            source = query_stats if scope == "query" else all_stats
            if source is None:
                self.fig.data[index].update(x=[], y=[])
                continue
            values = source.kind(kind)[name]
            self.fig.data[index].update(x=list(source.layers),
                                        y=[None if np.isnan(v) else round(float(v), 6) for v in values])
        self._set_note(self.stat_titles["local"], f"{STAT_TITLES['local']} (r = {query_stats.radius:g})")
        if self._marked_layer != layer:  # a vertical line at the current layer
            self.fig.layout.shapes = [dict(type="line", xref=axis_ref("x", n), yref=f"{axis_ref('y', n)} domain",
                                           x0=layer, x1=layer, y0=0, y1=1, line=dict(color="#bbb", width=1))
                                      for n in self.stat_axes]
            self._marked_layer = layer

    def _set_note(self, index: int, text: str) -> None:
        note = self.fig.layout.annotations[index]
        if note.text != text:
            note.text = text

    # --- what is shown -----------------------------------------------------------------------

    def describe(self) -> dict:
        """What a person sees, as plain values (tests assert on this, never on plotly traces).

        panels: what each map panel shows ("image", then the kinds). Per map panel: images, (H, W)
        of the photo or None; titles, plain text (lines joined by newlines); query_boxes, the
        query's outline (x0, y0, x1, y1) in image pixels, or None. map_shape: (rows, columns) of
        the map panels. kinds: the map panels' kinds; kind_titles: {kind: its panel's title};
        blocks: {kind: the block its map shows, None before it is drawn}.
        query, layer, head: of the rows drawn (None before any).
        maps: {kind: float [gh, gw] attention shown (the hover values)}; relative: {kind: the values
            drawn, each map divided by its largest patch value}.
        cmap, opacity: colour map name and opacity of the maps.
        layers: the small multiples: titles (plain; the current layer in brackets), current (its
            index), maps ({kind: [gh, gw]} per layer, None where empty).
        stats: titles {stat: title}, layers (x values), marked_layer (the vertical line) and series
            {(stat, "query" | "all", kind): per-layer values, None for gaps}.
        colorbar: the maps' colour bar: shown, title (plain), range (zmin, zmax), panel (the map panel it
            stands beside). hover: {"maps" | "layers": what hovering the cell (row, col) of the first map
            panel / of the first layer's first small multiple reads, as plain text; None where nothing is drawn}.
        geometry: see :meth:`AttentionLayout.geometry`.
        """
        rows = self._rows
        boxes = [self.fig.data[index] for index in self.map_box]
        first_line = self.fig.data[self.stat_lines[(STAT_NAMES[0], "query", self.layer_kinds[0])]]
        titles = [_plain(self.fig.layout.annotations[note].text) for note in self.map_titles]
        return {
            "panels": self.panels,
            "map_shape": self.map_shape,
            "kinds": self.kinds,
            "kind_titles": dict(zip(self.kinds, titles[1:])),
            "blocks": {kind: None if self._panels.get(kind) is None else self._panels[kind].layer
                       for kind in self.kinds},
            "images": [(int(i.sizey), int(i.sizex)) if i.source else None for i in self.fig.layout.images],
            "titles": titles,
            "query": None if rows is None else rows.query,
            "layer": None if rows is None else rows.layer,
            "head": None if rows is None else rows.head,
            "query_boxes": [(min(b.x), min(b.y), max(b.x), max(b.y)) if b.x else None for b in boxes],
            "maps": {kind: self._values(self.map_heat[p], "customdata") for p, kind in enumerate(self.kinds, 1)},
            "relative": {kind: self._values(self.map_heat[p], "z") for p, kind in enumerate(self.kinds, 1)},
            "cmap": None if self._style is None else self._style[0],
            "opacity": self.fig.data[self.map_heat[1]].opacity,
            "layers": {
                "titles": [_plain(self.fig.layout.annotations[note].text) for note in self.layer_titles],
                "current": None if rows is None else rows.layer,
                "maps": [{kind: self._values(index, "customdata") for kind, index in zip(self.layer_kinds, heats)}
                         for heats in self.layer_heat],
            },
            "colorbar": self.colorbar_facts(),
            "hover": {"maps": self.hover_text(self.map_heat[1], (0, 0)),
                      "layers": self.hover_text(self.layer_heat[0][0], (0, 0))},
            "geometry": self.geometry(),
            "stats": {
                "titles": {name: _plain(self.fig.layout.annotations[note].text)
                           for name, note in self.stat_titles.items()},
                "layers": list(first_line.x or []),
                "marked_layer": self._marked_layer,
                "series": {key: list(self.fig.data[index].y or []) for key, index in self.stat_lines.items()},
            },
        }

    def hover_text(self, index: int, cell: tuple[int, int]) -> str | None:
        """What hovering ``cell`` (row, col) of heat trace ``index`` reads (its template filled as plotly does)."""
        return _hover_text(self.fig.data[index], cell)

    def _values(self, index: int, field: str) -> np.ndarray | None:
        values = getattr(self.fig.data[index], field)
        return None if values is None or not len(values) else np.asarray(values, dtype=np.float64)


# --- helpers -----------------------------------------------------------------------------------

def _hover_text(heat, cell: tuple[int, int]) -> str | None:
    """A heat trace's hover template filled for ``cell`` (row, col) as plotly fills it, as plain text."""
    if heat.z is None or heat.customdata is None:
        return None
    row, col = cell
    values = {"text": None if heat.text is None else heat.text[row][col], "customdata": heat.customdata[row][col],
              "z": heat.z[row][col], "x": col, "y": row, "meta": heat.meta}

    def fill(match: re.Match) -> str:
        name, spec = match.group(1), match.group(2)
        return format(values[name], spec[1:]) if spec else str(values[name])
    template = re.sub(r"%\{(\w+)(:[^}]*)?\}", fill, heat.hovertemplate)
    return _plain(template.replace("<extra>", "\n").replace("</extra>", "")).strip()


def _plain(text: str | None) -> str:
    """An annotation's text without markup: <br> as a newline, tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", (text or "").replace("<br>", "\n")))


def _box_path(query: Query, size: tuple[int, int], grid: tuple[int, int]) -> tuple[list, list]:
    """Closed outline of the query cell (the whole image for the global token)."""
    if query == GLOBAL:
        x0, y0, x1, y1 = -0.5, -0.5, size[1] - 0.5, size[0] - 0.5
    else:
        x0, y0, x1, y1 = cell_box(query, size, grid)
    return [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]


def _grid_lines(size: tuple[int, int], grid: tuple[int, int]) -> dict:
    """The patch grid as one polyline (None breaks the lines)."""
    (height, width), (gh, gw) = size, grid
    xs: list = []
    ys: list = []
    for col in range(1, gw):
        x = cell_box((0, col), size, grid)[0]
        xs += [x, x, None]
        ys += [-0.5, height - 0.5, None]
    for row in range(1, gh):
        y = cell_box((row, 0), size, grid)[1]
        xs += [-0.5, width - 0.5, None]
        ys += [y, y, None]
    return dict(x=xs, y=ys)
