"""AttentionExplorer: q-k versus v-v attention of any layer, query patch and head (the paper's Figure 1)."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from PIL import Image

from ..engine.attention import (
    ALL_QUERIES,
    GLOBAL,
    KINDS,
    STAT_NAMES,
    STAT_TITLES,
    AttentionCapture,
    AttentionInputError,
    AttentionRows,
    AttentionStats,
    Query,
    attention_layout,
    capture_attention,
    cell_box,
    check_query,
)
from ..engine.cache import LRUCache, content_hash
from ..engine.errors import ClipSurgeryError
from ..engine.images import check_input_size, preprocess
from ..engine.regions import patch_at
from ..figures import attention as figures_attention
from ..figures.attention import (
    KIND_COLORS,
    KIND_TITLES,
    QUERY_COLOR,
    head_text,
    query_text,
)
from .base import ExplorerWidget
from .plotting import image_data_uri, plotly_colorscale

SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
VIEWS = ("maps", "layers", "stats")
MEAN = -1  # the head dropdown's value for "mean of heads" (ipywidgets reads None as "no selection")
IMAGE_PANEL, QK_PANEL, VV_PANEL = 0, 1, 2
_WIDE = {"description_width": "initial"}


class AttentionExplorer(ExplorerWidget):
    """Compare CLIP's q-k attention with CLIP Surgery's v-v attention, layer by layer.

    Click a patch of the image (or of either map) to make it the query. The two maps show that
    query's attention row at the chosen layer and head: softmax(s q k^T) and softmax(s v v^T), each
    scaled to its largest patch value (hover for the probabilities). Below: the same rows at every
    layer (click one to jump to that layer and cell), and per-layer statistics of q-k against v-v
    for this query (solid) and averaged over all patch queries (dashed).

    Args:
        explainer: an ``engine.Explainer`` (its model and image loading are used).
        image: anything ``load_image`` accepts; or upload one.
        query: (row, col) or "global"; default the centre cell.
        layer: layer index (negative counts from the end; default the last). ResNets have one
            layer, the attention pool.
        head: a head index, or None for the mean of the heads' rows.
        size: model input size (square, a multiple of the patch size).
        radius: radius in cells (Chebyshev: radius 1 = the 3x3 block) of the "mass within the
            radius" statistic.
        cmap, opacity: colour map of the maps and their weight over the image.

    The properties below mirror the controls; ``rows`` is the AttentionRows on screen,
    ``query_stats`` / ``all_stats`` the statistics, ``capture`` the AttentionCapture (one forward
    pass per image and size, cached). ``figure()`` draws the paper's Figure 1 layout with matplotlib.
    """

    def __init__(self, explainer: Any, image: Any = None, *, query: Query | None = None, layer: int = -1,
                 head: int | None = None, size: int = 224, radius: int = 1, cmap: str = "jet",
                 opacity: float = 0.6, max_cached_images: int = 4):
        super().__init__()
        self.explainer = explainer
        self._layer_names, self._num_heads = attention_layout(explainer.model)
        self._captures = LRUCache(max_cached_images)  # (image hash, size, model) -> AttentionCapture
        self._all_stats_cache = LRUCache(32)  # (capture key, head, radius) -> AttentionStats
        self._rgb: np.ndarray | None = None
        self._rgb_hash: str | None = None  # content hash of the image, computed once per image
        self._capture: AttentionCapture | None = None
        self._capture_key: tuple | None = None
        self._all_stats: AttentionStats | None = None
        self._query: Query | None = query
        self._check_layer(layer)
        self._check_head(head)
        self._build_controls(layer, head, size, radius, cmap, opacity)
        self._view = AttentionFigure(self._layer_names,
                                     on_map_click=self._guarded(self._on_map_click, "reading the clicked point"),
                                     on_layer_click=self._guarded(self._on_layer_click, "reading the clicked point"))
        plot_box = widgets.Box([self._view.fig], layout=widgets.Layout(width="100%"))
        plot_box.add_class("csw-plot")
        self.add_class("csw-attention-explorer")
        self.children = self.children + (plot_box,)
        self._wire()
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")

    # --- Python API --------------------------------------------------------------------------

    @property
    def query(self) -> Query | None:
        """The query: (row, col) of a patch, or "global" for the global token."""
        return self._query

    @query.setter
    def query(self, value: Query) -> None:
        with self._lock:
            if self._capture is not None:
                try:
                    value, _ = check_query(value, self._capture.grid)
                except AttentionInputError as exc:
                    self._show_error(exc, "choosing the query")
                    raise
            self._query = value
            self._clear_error()
            self._render()

    @property
    def layer(self) -> int:
        """Layer index 0..L-1 (ViT block; 0 is the ResNet attention pool). Set negative values to count from the end."""
        return self.controls["layer"].value

    @layer.setter
    def layer(self, value: int) -> None:
        self.controls["layer"].value = self._check_layer(value)

    @property
    def head(self) -> int | None:
        """The head shown, or None for the mean of the heads' rows."""
        value = self.controls["head"].value
        return None if value == MEAN else value

    @head.setter
    def head(self, value: int | None) -> None:
        self.controls["head"].value = MEAN if self._check_head(value) is None else value

    size = property(lambda self: self.controls["size"].value, lambda self, v: self._set_size(v),
                    doc="Model input size in pixels (square).")
    radius = property(lambda self: self.controls["radius"].value,
                      lambda self, v: setattr(self.controls["radius"], "value", int(v)),
                      doc="Radius in cells (Chebyshev) of the 'mass within the radius' statistic.")
    cmap = property(lambda self: self.controls["cmap"].value,
                    lambda self, v: setattr(self.controls["cmap"], "value", _check(v, CMAPS, "cmap")),
                    doc="Colour map of the attention maps.")
    opacity = property(lambda self: self.controls["opacity"].value,
                       lambda self, v: setattr(self.controls["opacity"], "value", float(v)),
                       doc="Weight of the maps over the image, 0..1.")

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self._layer_names

    @property
    def capture(self) -> AttentionCapture | None:
        """The AttentionCapture of the image and size on screen (None before it arrives)."""
        return self._capture if self._capture_current() else None

    @property
    def rows(self) -> AttentionRows | None:
        """The AttentionRows on screen (current layer, query and head), or None."""
        capture = self.capture
        return None if capture is None or self._query is None else capture.rows(self.layer, self._query, self.head)

    @property
    def query_stats(self) -> AttentionStats | None:
        """Per-layer statistics of the current query (current head and radius), or None."""
        capture = self.capture
        return None if capture is None or self._query is None else capture.stats(self._query, self.head, self.radius)

    @property
    def all_stats(self) -> AttentionStats | None:
        """Per-layer statistics averaged over all patch queries, for the current head and radius (or None)."""
        stats = self._all_stats if self._capture_current() else None
        return stats if stats is not None and (stats.head, stats.radius) == (self.head, self.radius) else None

    @property
    def plot(self) -> go.FigureWidget:
        """The plotly FigureWidget with every view (maps, small multiples, statistics)."""
        return self._view.fig

    @property
    def view(self) -> "AttentionFigure":
        """The figure's trace bookkeeping (which trace shows what), for tests and custom styling."""
        return self._view

    def click(self, x: float, y: float, panel: int = IMAGE_PANEL) -> Query:
        """Do what a click at image pixel (x, y) of ``panel`` (0 image, 1 q-k, 2 v-v) does; returns the query."""
        self.wait(self.display_timeout)
        self._on_map_click(panel, x, y)
        return self._query

    def figure(self, view: str = "maps", images: Sequence[Any] | None = None,
               queries: Query | Sequence[Query] | None = None):
        """A static matplotlib figure.

        view: "maps" (the paper's Figure 1 layout: rows image-with-query, q-k, v-v), "layers" (every
            layer) or "stats" (statistics across layers).
        images: for "maps", several images side by side (paths, arrays, ...); default the current one.
        queries: one query for every image, or one per image; default the current query.
        The current layer, head and input size are used.
        """
        _check(view, VIEWS, "view")
        if view == "maps" and images is None and queries is None:
            return super().figure()
        self.wait(self.display_timeout)
        with self._lock:
            if view != "maps":
                return self._render_figure(view)
            return self._paper_figure(images, queries)

    # --- controls ----------------------------------------------------------------------------

    def _build_controls(self, layer, head, size, radius, cmap, opacity) -> None:
        count = len(self._layer_names)
        heads = [("mean of heads", MEAN)] + [(f"head {h}", h) for h in range(self._num_heads)]
        c = self.controls = {
            "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
            "size": widgets.Dropdown(options=[(str(s), s) for s in SIZES], value=SIZES[0], description="Input size",
                                     style=_WIDE, layout=widgets.Layout(width="170px")),
            "layer": widgets.IntSlider(value=layer % count, min=0, max=max(count - 1, 0), description="Layer",
                                       style=_WIDE, disabled=count == 1, continuous_update=True,
                                       layout=widgets.Layout(width="300px")),
            "layer_name": widgets.HTML(),
            "head": widgets.Dropdown(options=heads, value=MEAN if head is None else head, description="Head",
                                     style=_WIDE, layout=widgets.Layout(width="190px")),
            "global": widgets.Button(description="Query: global token", tooltip="Use the global (class) token as "
                                     "the query", layout=widgets.Layout(width="170px")),
            "query_text": widgets.HTML(),
            "radius": widgets.IntSlider(value=radius, min=0, max=6, description="Radius (cells)", style=_WIDE,
                                        continuous_update=False, layout=widgets.Layout(width="250px")),
            "cmap": widgets.Dropdown(options=CMAPS, value=_check(cmap, CMAPS, "cmap"), description="Colours",
                                     style=_WIDE, layout=widgets.Layout(width="160px")),
            "opacity": widgets.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="Opacity",
                                           style=_WIDE, layout=widgets.Layout(width="240px")),
        }
        for name, control in c.items():  # stable CSS hooks for tests and custom styling
            control.add_class(f"csw-{name.replace('_', '-')}")
        self._set_size(size)
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        self.children = [
            widgets.HBox([c["upload"], c["size"], c["layer"], c["layer_name"], c["head"]], layout=wrap),
            widgets.HBox([c["global"], c["query_text"], c["radius"], c["cmap"], c["opacity"]], layout=wrap),
            self._status_html, self._error_html,
        ]
        self._show_layer_name()
        self._show_query_text()

    def _check_layer(self, value: Any) -> int:
        count = len(self._layer_names)
        integer = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if not integer or not -count <= value < count:
            what = "its attention pool (layer 0)" if count == 1 else f"layers 0 to {count - 1}"
            exc = AttentionInputError(f"layer={value!r} does not exist: this model has {what}; "
                                      f"choose an integer from 0 to {count - 1} (or -1 for the last).")
            if hasattr(self, "controls"):
                self._show_error(exc, "choosing the layer")
            raise exc
        return int(value) % count

    def _check_head(self, value: Any) -> int | None:
        if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
                                  or not 0 <= value < self._num_heads):
            exc = AttentionInputError(f"head={value!r} does not exist: this model has {self._num_heads} heads; "
                                      f"choose 0 to {self._num_heads - 1}, or None for the mean of the heads.")
            if hasattr(self, "controls"):
                self._show_error(exc, "choosing the head")
            raise exc
        return None if value is None else int(value)

    def _set_size(self, value: int) -> None:
        hw = check_input_size(value, self.explainer.model.patch_size)
        if hw[0] != hw[1]:
            raise ValueError(f"The attention explorer uses square inputs; got {hw[0]}x{hw[1]}.")
        control = self.controls["size"]
        if hw[0] not in [v for _, v in control.options]:
            control.options = [(str(s), s) for s in sorted({*(v for _, v in control.options), hw[0]})]
        control.value = hw[0]

    def _wire(self) -> None:
        c = self.controls
        c["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")
        c["layer"].observe(self._guarded(self._on_layer, "changing the layer"), names="value")
        for name, doing in (("size", "changing the input size"), ("head", "changing the head"),
                            ("radius", "changing the radius")):
            c[name].observe(self._guarded(lambda change: self._on_capture_settings(), doing), names="value")
        c["global"].on_click(self._guarded(lambda button: setattr(self, "query", GLOBAL), "choosing the query"))
        restyle = self._guarded(lambda change: self._view.restyle(self.cmap, self.opacity), "changing the colours")
        c["cmap"].observe(restyle, names="value")
        c["opacity"].observe(restyle, names="value")

    def _on_layer(self, change: dict) -> None:
        self._show_layer_name()
        with self._lock:
            self._render()

    def _on_capture_settings(self) -> None:
        with self._lock:
            self._render()  # what is cheap now (a new head's rows); the rest when the work is done
        self._request()

    def _show_layer_name(self) -> None:
        name = self._layer_names[self.controls["layer"].value]
        self.controls["layer_name"].value = f"<span style='color:#555'>{html.escape(name)}</span>"

    def _show_query_text(self) -> None:
        text = query_text(self._query) if self._query is not None else "query: click a patch"
        self.controls["query_text"].value = f"<b style='color:{QUERY_COLOR}'>&#9633;</b> {html.escape(text)}"

    # --- requests ----------------------------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work."""
        with self._lock:
            self._rgb, self._rgb_hash = rgb, content_hash(rgb)
            self._capture = self._capture_key = self._all_stats = None
            self._view.set_image(rgb)
            self._render()
        self._request()

    def _capture_key_for(self, image_hash: str, size: int) -> tuple:
        return (image_hash, size, self.explainer.model.fingerprint)

    def _capture_current(self) -> bool:
        return (self._capture is not None and self._rgb_hash is not None
                and self._capture_key == self._capture_key_for(self._rgb_hash, self.size))

    def _get_capture(self, rgb: np.ndarray, size: int, image_hash: str | None = None
                     ) -> tuple[tuple, AttentionCapture]:
        """The capture of (image, size): one forward pass, then cached."""
        key = self._capture_key_for(image_hash or content_hash(rgb), size)
        capture = self._captures.get(key)
        if capture is None:
            model = self.explainer.model
            hw = check_input_size(size, model.patch_size)
            pixels = preprocess(rgb, hw, model.mean, model.std, model.patch_size).to(model.device)
            capture = capture_attention(model, pixels)
            self._captures.put(key, capture)
        return key, capture

    def _request(self) -> None:
        """Capture (if not cached) and the all-queries statistics, in the background."""
        if self._rgb is None:
            return
        rgb, image_hash, size, head, radius = self._rgb, self._rgb_hash, self.size, self.head, self.radius
        new_capture = self._captures.get(self._capture_key_for(image_hash, size)) is None

        def work() -> tuple[tuple, AttentionCapture, AttentionStats]:
            key, capture = self._get_capture(rgb, size, image_hash)
            stats = self._all_stats_cache.get((key, head, radius))
            if stats is None:
                stats = capture.stats(ALL_QUERIES, head, radius)
                self._all_stats_cache.put((key, head, radius), stats)
            return key, capture, stats

        self._submit(work, self._apply,
                     busy_text=(f"Capturing q, k, v of every layer at {size} px…" if new_capture
                                else "Computing the statistics over all queries…"),
                     doing="capturing the attention",
                     done_text=lambda r, s: (f"{r[1].num_layers} layer{'s' * (r[1].num_layers != 1)}, "
                                             f"{r[1].num_heads} heads, grid {r[1].grid[0]}x{r[1].grid[1]} · "
                                             f"{s:.2f} s"))

    def _apply(self, result: tuple) -> None:
        key, capture, stats = result
        self._capture_key, self._capture, self._all_stats = key, capture, stats
        if self._query is not None:
            try:
                self._query, _ = check_query(self._query, capture.grid)
            except AttentionInputError:
                self._query = None  # e.g. after a smaller input size: back to the centre cell
        if self._query is None:
            self._query = (capture.grid[0] // 2, capture.grid[1] // 2)
        self._render()

    # --- drawing -----------------------------------------------------------------------------

    def _render(self) -> None:
        """Redraw maps, small multiples and statistics from the current capture (cheap: no forward pass)."""
        self._show_query_text()
        capture = self.capture
        if capture is None or self._query is None:
            self._view.clear()
            return
        layer, head = self.layer, self.head
        self._view.show(self._rgb.shape[:2], capture, capture.rows(layer, self._query, head),
                        capture.all_layers(self._query, head), self.query_stats, self.all_stats,
                        self.cmap, self.opacity)

    # --- clicks ------------------------------------------------------------------------------

    def _on_map_click(self, panel: int, x: float, y: float) -> None:
        with self._lock:
            capture = self.capture
            if capture is None:
                raise ClipSurgeryError("No attention yet: set an image and wait for the capture.")
            self.query = patch_at(self._rgb.shape[:2], capture.grid, x, y)

    def _on_layer_click(self, layer: int, x: float, y: float) -> None:
        with self._lock:
            capture = self.capture
            if capture is None:
                return
            self._query = patch_at(capture.grid, capture.grid, x, y)  # small multiples are in cell units
            if self.layer != layer:
                self.layer = layer  # the slider's observer redraws
            else:
                self._render()

    # --- static figures ----------------------------------------------------------------------

    def _render_figure(self, view: str = "maps"):
        capture = self.capture
        if capture is None or self._query is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image and wait for the attention capture.")
        if view == "layers":
            return figures_attention.layers_figure(self._rgb, capture.all_layers(self._query, self.head),
                                                   self._layer_names, self.cmap, self.opacity)
        if view == "stats":
            return figures_attention.stats_figure(self.query_stats, self.all_stats, self._layer_names,
                                                  current_layer=self.layer)
        return figures_attention.qk_vv_figure([(self._rgb, self.rows)], self._layer_names[self.layer], self.cmap,
                                              self.opacity)

    def _paper_figure(self, images: Sequence[Any] | None, queries: Query | Sequence[Query] | None):
        rgbs = [self._rgb] if images is None else [self.explainer.prepare_image(i) for i in images]
        if not rgbs or rgbs[0] is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image (or pass images=[...]).")
        if queries is None:
            if self._query is None:
                raise ClipSurgeryError("No query yet: click a patch or pass queries=...")
            queries = [self._query] * len(rgbs)
        elif _is_single_query(queries):
            queries = [queries] * len(rgbs)
        queries = list(queries)
        if len(queries) != len(rgbs):
            raise ValueError(f"Got {len(queries)} queries for {len(rgbs)} images: pass one query, or one per image.")
        panels = []
        for rgb, query in zip(rgbs, queries):
            _, capture = self._get_capture(rgb, self.size)
            panels.append((rgb, capture.rows(self.layer, query, self.head)))
        return figures_attention.qk_vv_figure(panels, self._layer_names[self.layer], self.cmap, self.opacity)


class AttentionFigure:
    """One plotly FigureWidget holding every view of the explorer (one widget: plotly.js is sent once).

    Top: three image panels (image with patch grid, q-k map, v-v map). Middle: small multiples,
    q-k and v-v rows of the query at every layer (up to 12 per band). Bottom: one line chart per
    statistic. Map panels use image-pixel coordinates (pixel centres at integers); small multiples
    use cell coordinates. The query cell is outlined in every map.
    """

    MAPS_PX, MAP_TITLE_PX, HEADER_PX, BAND_PX, CELL_PX, STATS_PX, TITLE_PX = 310, 34, 30, 190, 80, 210, 22

    def __init__(self, layer_names: Sequence[str], on_map_click: Callable[[int, float, float], None],
                 on_layer_click: Callable[[int, float, float], None]):
        self.layer_names = tuple(layer_names)
        count = len(self.layer_names)
        self.ncols = min(count, 12)
        self.bands = -(-count // self.ncols)
        self._plot_px = (self.MAPS_PX + 2 * self.HEADER_PX + self.bands * self.BAND_PX + self.TITLE_PX
                         + self.STATS_PX)
        self._image_size: tuple[int, int] | None = None
        self._grid: tuple | None = None
        self._style: tuple[str, float] | None = None
        self._stats_layer: int | None = None
        traces: list = []
        layout: dict = {}
        notes: list[dict] = []
        axis = iter(range(1, 10_000))

        def add(trace, n):
            traces.append(trace.update(xaxis=_ref("x", n), yaxis=_ref("y", n)))
            return len(traces) - 1

        # Map panels: image, heat, query outline (+ the patch grid on the image panel).
        self.map_axes, self.map_heat, self.map_box = [], [], []
        images: list[dict] = []
        for panel, title in enumerate(("image", KIND_TITLES["qk"], KIND_TITLES["vv"])):
            n = next(axis)
            self.map_axes.append(n)
            x0, x1 = panel / 3 + 0.01, (panel + 1) / 3 - 0.01
            self._axes(layout, n, (x0, x1), self._rows(self.MAP_TITLE_PX, self.MAPS_PX - self.MAP_TITLE_PX),
                       image=True)
            # The photo is a layout image, not a go.Image trace: plotly.js waits for an Image trace's
            # first load before it wires up click events, and an update arriving during that load
            # can leave it waiting for good (the explorer sends updates right after it is shown).
            images.append(dict(source=None, xref=_ref("x", n), yref=_ref("y", n), x=-0.5, y=-0.5, sizex=1, sizey=1,
                               xanchor="left", yanchor="top", sizing="stretch", layer="below"))
            self.map_heat.append(add(go.Heatmap(
                z=None, showscale=False, zmin=0, zmax=1, zsmooth=False, name="heat", hoverongaps=False,
                hovertemplate="attention %{customdata:.4f}<br>(relative %{z:.3f})<extra></extra>"), n))
            self.map_box.append(add(_outline(QUERY_COLOR, 2.5, "query"), n))
            notes.append(_note(title, (x0 + x1) / 2, self._y(self.MAP_TITLE_PX), size=11))
        self.grid_lines = add(_outline("rgba(255,255,255,0.5)", 0.7, "grid"), self.map_axes[0])
        # Small multiples.
        top = self.MAPS_PX + self.HEADER_PX
        notes.append(_note("<b>Every layer</b> (click a map to show that layer and cell)", 0.0,
                           self._y(top - 4), xanchor="left", size=12))
        self.layer_heat: list[tuple[int, int]] = []
        self.layer_box: list[tuple[int, int]] = []
        self.layer_titles: list[int] = []
        for layer, name in enumerate(self.layer_names):
            band, col = divmod(layer, self.ncols)
            x0, x1 = col / self.ncols + 0.003, (col + 1) / self.ncols - 0.003
            band_top = top + band * self.BAND_PX + self.TITLE_PX
            heats, boxes = [], []
            for offset in (0, 1):
                n = next(axis)
                cell_top = band_top + offset * (self.CELL_PX + 6)
                self._axes(layout, n, (x0, x1), self._rows(cell_top, self.CELL_PX), image=True)
                heats.append(add(go.Heatmap(z=None, showscale=False, zmin=0, zmax=1, zsmooth=False, meta=name,
                                            name=f"{name} {KINDS[offset]}", hoverongaps=False,
                                            hovertemplate="attention %{customdata:.4f}<extra>%{meta}</extra>"), n))
                boxes.append(add(_outline(QUERY_COLOR, 1.5, "query"), n))
            self.layer_heat.append(tuple(heats))
            self.layer_box.append(tuple(boxes))
            self.layer_titles.append(len(notes))
            notes.append(_note(html.escape(name), (x0 + x1) / 2, self._y(band_top), size=10))
        for band in range(self.bands):
            band_top = top + band * self.BAND_PX + self.TITLE_PX
            for offset, label in enumerate(("q-k", "v-v")):
                middle = band_top + offset * (self.CELL_PX + 6) + self.CELL_PX / 2
                notes.append(_note(label, -0.005, self._y(middle), xanchor="right", yanchor="middle", size=10))
        # Statistics.
        top = self.MAPS_PX + 2 * self.HEADER_PX + self.bands * self.BAND_PX
        notes.append(_note("<b>q-k against v-v across layers</b> (solid: this query; dashed: mean of all patch "
                           "queries)", 0.0, self._y(top - 4), xanchor="left", size=12))
        self.stat_axes: list[int] = []
        self.stat_lines: dict[tuple[str, str, str], int] = {}
        self.stat_titles: dict[str, int] = {}
        for col, name in enumerate(STAT_NAMES):
            n = next(axis)
            self.stat_axes.append(n)
            x0, x1 = col / len(STAT_NAMES) + 0.045, (col + 1) / len(STAT_NAMES) - 0.01
            self._axes(layout, n, (x0, x1), self._rows(top + self.TITLE_PX, self.STATS_PX - 30), image=False)
            for scope, dash in (("query", "solid"), ("all", "dash")):
                for kind in KINDS:
                    short = KIND_TITLES[kind].replace(" attention", "")
                    self.stat_lines[(name, scope, kind)] = add(go.Scatter(
                        x=[], y=[], mode="lines+markers", legendgroup=f"{scope}{kind}", showlegend=col == 0,
                        name=f"{short}, {'this query' if scope == 'query' else 'all queries'}",
                        line=dict(color=KIND_COLORS[kind], dash=dash, width=2), marker=dict(size=5),
                        hovertemplate="layer %{x}: %{y:.4f}<extra>%{fullData.name}</extra>"), n)
            self.stat_titles[name] = len(notes)
            notes.append(_note(STAT_TITLES[name], (x0 + x1) / 2, self._y(top + self.TITLE_PX), size=11))
        self.fig = go.FigureWidget(data=traces, layout=dict(
            layout, height=self._plot_px + 70, margin=dict(l=40, r=10, t=10, b=60), dragmode=False,
            plot_bgcolor="white", hovermode="closest", annotations=notes, images=images, showlegend=True,
            legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.02, yanchor="top", itemclick=False,
                        itemdoubleclick=False)))
        for panel, index in enumerate(self.map_heat):
            self.fig.data[index].on_click(_click_handler(on_map_click, panel))
        for layer, pair in enumerate(self.layer_heat):
            for index in pair:
                self.fig.data[index].on_click(_click_handler(on_layer_click, layer))

    # --- layout helpers ----------------------------------------------------------------------

    def _y(self, px: float) -> float:
        return 1 - px / self._plot_px

    def _rows(self, top_px: float, height_px: float) -> tuple[float, float]:
        return max(0.0, self._y(top_px + height_px)), min(1.0, self._y(top_px))

    @staticmethod
    def _axes(layout: dict, n: int, x_domain: tuple[float, float], y_domain: tuple[float, float],
              image: bool) -> None:
        x, y = _name("x", n), _name("y", n)
        if image:  # no ticks, square pixels, y downwards
            layout[x] = dict(domain=list(x_domain), anchor=_ref("y", n), visible=False, constrain="domain")
            layout[y] = dict(domain=list(y_domain), anchor=_ref("x", n), visible=False, constrain="domain",
                             constraintoward="top", scaleanchor=_ref("x", n), autorange="reversed")
        else:
            layout[x] = dict(domain=list(x_domain), anchor=_ref("y", n), gridcolor="#eee", dtick=1,
                             title=dict(text="layer", font=dict(size=10)), tickfont=dict(size=9))
            layout[y] = dict(domain=list(y_domain), anchor=_ref("x", n), gridcolor="#eee", rangemode="tozero",
                             tickfont=dict(size=9))

    # --- data --------------------------------------------------------------------------------

    def trace(self, index: int):
        return self.fig.data[index]

    def set_image(self, rgb: np.ndarray) -> None:
        """Send the image (once per image) to the three map panels and clear everything else."""
        uri, _ = image_data_uri(rgb)
        height, width = rgb.shape[:2]
        self._image_size = (height, width)
        with self.fig.batch_update():
            for panel, n in enumerate(self.map_axes):
                self.fig.layout.images[panel].update(source=uri, x=-0.5, y=-0.5, sizex=width, sizey=height)
                self.fig.layout[_name("x", n)].range = [-0.5, width - 0.5]
                self.fig.layout[_name("y", n)].update(range=[height - 0.5, -0.5], autorange=False)
            self.clear()

    def clear(self) -> None:
        with self.fig.batch_update():
            for index in self.map_heat + [i for pair in self.layer_heat for i in pair]:
                self.fig.data[index].update(z=None, customdata=None)
            for index in self.map_box + [i for pair in self.layer_box for i in pair] + [self.grid_lines]:
                self.fig.data[index].update(x=[], y=[])
            for index in self.stat_lines.values():
                self.fig.data[index].update(x=[], y=[])
            self.fig.layout.shapes = []
            self._grid = self._stats_layer = None

    def show(self, size: tuple[int, int], capture: AttentionCapture, rows: AttentionRows,
             all_rows: Sequence[AttentionRows], query_stats: AttentionStats, all_stats: AttentionStats | None,
             cmap: str, opacity: float) -> None:
        """Draw the current rows, small multiples and statistics (trace data only; the image stays)."""
        with self.fig.batch_update():
            self._show_grid(size, capture.grid)
            self._show_maps(size, rows)
            self._show_layers(rows, all_rows)
            self._show_stats(rows.layer, query_stats, all_stats)
            if self._style != (cmap, opacity):
                self.restyle(cmap, opacity)

    def restyle(self, cmap: str, opacity: float) -> None:
        """Colour map and opacity of the maps (sent only when they change)."""
        scale = plotly_colorscale(cmap)
        self._style = (cmap, opacity)
        with self.fig.batch_update():
            for index in self.map_heat[1:]:
                self.fig.data[index].update(colorscale=scale, opacity=opacity)
            for pair in self.layer_heat:
                for index in pair:
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
            hovertemplate="row %{customdata[0]}, col %{customdata[1]}<extra>click: make this the query</extra>")
        for index in self.map_heat[1:]:
            self.fig.data[index].update(**geometry)
        self.fig.data[self.grid_lines].update(**_grid_lines(size, grid))
        for pair in self.layer_heat:
            for offset, index in enumerate(pair):
                self.fig.data[index].update(x0=0, dx=1, y0=0, dy=1)
                n = self.layer_axis(pair, offset)
                self.fig.layout[_name("x", n)].range = [-0.5, gw - 0.5]
                self.fig.layout[_name("y", n)].update(range=[gh - 0.5, -0.5], autorange=False)
        self._grid = (size, grid)

    def layer_axis(self, pair: tuple[int, int], offset: int) -> int:
        ref = self.fig.data[pair[offset]].xaxis
        return 1 if ref == "x" else int(ref[1:])

    def _show_maps(self, size: tuple[int, int], rows: AttentionRows) -> None:
        for panel, kind in ((QK_PANEL, "qk"), (VV_PANEL, "vv")):
            self.fig.data[self.map_heat[panel]].update(z=_compact(rows.normalised(kind), 4),
                                                       customdata=_compact(rows.kind(kind)[0], 5))
        titles = [("image", query_text(rows.query)),
                  (f"{KIND_TITLES['qk']}, {head_text(rows.head)}", f"global token {rows.qk_global:.3f}"),
                  (f"{KIND_TITLES['vv']}, {head_text(rows.head)}", f"global token {rows.vv_global:.3f}")]
        for panel, (first, second) in enumerate(titles):  # two short lines: the panels can be narrow
            self._set_note(panel, f"{html.escape(first)}<br>{html.escape(second)}")
        xs, ys = _box_path(rows.query, size, rows.grid)
        for index in self.map_box:
            self.fig.data[index].update(x=xs, y=ys)

    def _show_layers(self, rows: AttentionRows, all_rows: Sequence[AttentionRows]) -> None:
        xs, ys = _box_path(rows.query, rows.grid, rows.grid)  # cell units
        for layer_rows, heats, boxes in zip(all_rows, self.layer_heat, self.layer_box):
            for index, box, kind in zip(heats, boxes, KINDS):
                self.fig.data[index].update(z=_compact(layer_rows.normalised(kind), 4),
                                            customdata=_compact(layer_rows.kind(kind)[0], 5))
                self.fig.data[box].update(x=xs, y=ys)
        for layer, note in enumerate(self.layer_titles):
            name = html.escape(self.layer_names[layer])
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
        if self._stats_layer != layer:  # a vertical line at the current layer
            self.fig.layout.shapes = [dict(type="line", xref=_ref("x", n), yref=f"{_ref('y', n)} domain", x0=layer,
                                           x1=layer, y0=0, y1=1, line=dict(color="#bbb", width=1))
                                      for n in self.stat_axes]
            self._stats_layer = layer

    def _set_note(self, index: int, text: str) -> None:
        note = self.fig.layout.annotations[index]
        if note.text != text:
            note.text = text


class SideBySide(widgets.HBox):
    """Widgets next to each other, sharing the width equally, e.g. ``SideBySide(heatmaps, attention)``.

    Like the explorers themselves, its output carries a static PNG (the children's static views
    joined left to right) for viewers without a live kernel.
    """

    def __init__(self, *children: widgets.Widget):
        # Equal shares of the width; a pane scrolls sideways when its figure is wider (plotly fixes a
        # figure's width when it is first drawn, 700 px when it was drawn out of view).
        share = f"{100 / max(1, len(children)):.4f}%"
        cells = [widgets.Box([child], layout=widgets.Layout(width=share, min_width="0", overflow="auto"))
                 for child in children]
        super().__init__(cells, layout=widgets.Layout(width="100%", align_items="flex-start"))
        self.panes = tuple(children)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        pngs = [pane._static_png() for pane in self.panes if hasattr(pane, "_static_png")]
        pngs = [png for png in pngs if png]
        if pngs:
            bundle["image/png"] = base64.b64encode(_join_pngs(pngs)).decode("ascii")
        return bundle


# --- helpers -----------------------------------------------------------------------------------

def _name(letter: str, n: int) -> str:
    return f"{letter}axis" if n == 1 else f"{letter}axis{n}"


def _ref(letter: str, n: int) -> str:
    return letter if n == 1 else f"{letter}{n}"


def _note(text: str, x: float, y: float, xanchor: str = "center", yanchor: str = "bottom", size: int = 12) -> dict:
    return dict(text=text, x=x, y=y, xref="paper", yref="paper", showarrow=False, xanchor=xanchor, yanchor=yanchor,
                font=dict(size=size))


def _outline(color: str, width: float, name: str) -> go.Scatter:
    return go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False, name=name,
                      line=dict(color=color, width=width))


def _click_handler(callback: Callable[[int, float, float], None], index: int) -> Callable:
    def handle(trace, points, state) -> None:
        if points.point_inds and trace.z is not None:
            callback(index, float(points.xs[0]), float(points.ys[0]))
    return handle


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


def _join_pngs(pngs: Sequence[bytes]) -> bytes:
    """PNG images side by side on white, top-aligned."""
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    canvas = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    left = 0
    for image in images:
        canvas.paste(image, (left, 0))
        left += image.width
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _compact(values: np.ndarray, decimals: int) -> np.ndarray:
    """Round for transport (2-D arrays travel as JSON text, where short numbers are small)."""
    return np.round(np.asarray(values, dtype=np.float64), decimals)


def _is_single_query(queries: Any) -> bool:
    if isinstance(queries, str):
        return True
    items = list(queries)
    return len(items) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items)


def _check(value: Any, allowed: Sequence, what: str) -> Any:
    if value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(map(str, allowed))}.")
    return value
