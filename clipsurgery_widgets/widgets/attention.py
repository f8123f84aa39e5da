"""AttentionExplorer: q-k versus v-v attention of any layer, query patch and head (the paper's Figure 1),
beside the attention each dense method uses.

The controller: it reacts to its settings (traits, declared with their rules in
:mod:`.attention_state`) and calls the engine in named background jobs ("capture": one forward pass
per image and size; "stats": statistics over all patch queries; "kinds": the methods' attention,
see :mod:`.attention_kinds`). The controls are built in :mod:`.attention_controls`, the plotly view
is :mod:`.attention_view`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..engine.attention import (ALL_QUERIES, GLOBAL, AttentionCapture, AttentionRows, AttentionStats, Query,
                                attention_layout, capture_image_attention)
from ..engine.cache import LRUCache, content_hash
from ..engine.errors import ClipSurgeryError
from ..engine.regions import patch_at
from ..figures.layout import Layout, apply_layout
from ..figures.style import DEFAULT_CMAP, DEFAULT_OPACITY
from .attention_controls import build_controls, control_rows, size_label
from .attention_kinds import KindPanels
from .attention_state import AttentionSettings
from .attention_view import IMAGE_PANEL, AttentionView
from .base import ExplorerWidget

VIEWS = ("maps", "layers", "stats")


class AttentionExplorer(KindPanels, ExplorerWidget, AttentionSettings):
    """Compare CLIP's q-k attention with CLIP Surgery's v-v attention, layer by layer, and with the
    attention each dense method uses.

    Click a patch of the image (or of either map) to make it the query. The two maps show that
    query's attention row at the chosen layer and head: softmax(s q k^T) and softmax(s v v^T), each
    scaled to its largest patch value (hover for the probabilities). Below: the same rows at every
    layer (click one to jump to that layer and cell), and per-layer statistics of q-k against v-v
    for this query (solid) and averaged over all patch queries (dashed). More map panels (``kinds``,
    or the "Attention shown" toggles) show, for the same query, the attention the dense methods use
    at the last block: q-q (ClearCLIP), k-k (NACLIP without its prior), (q-q + k-k) / 2 (SCLIP, whose
    rows sum to 2, halved here to a distribution), k-k + Gaussian (NACLIP), GEM's self-self
    (docs/algorithms.md#dense-methods); a click on any panel moves the query.

    Args:
        explainer: an ``engine.Explainer`` (its model and image loading are used).
        image: anything ``load_image`` accepts; or upload one.
        query, layer, head, size, radius, cmap, opacity, kinds: the settings below.
        max_cached_images: captures (one forward pass each) kept, per image and size.

    Settings (traits, linked to the controls; an invalid value raises InvalidStateError and
    changes nothing): ``query`` (row, col) or "global" (default: the centre cell once an image
    is set; a size change that leaves the query outside the new grid moves it to the centre);
    ``layer`` 0..L-1 (negative counts from the end; ResNets have one, the attention pool);
    ``head`` an index or None for the mean of the heads' rows; ``size`` input size S or
    (S_h, S_w), multiples of the patch size; ``radius`` >= 0 in cells (Chebyshev: 1 = the 3x3
    block) of the "mass within the radius" statistic; ``cmap`` any matplotlib colour map and
    ``opacity`` 0..1 of the maps over the image; ``kinds`` the map panels' kinds, a tuple of
    distinct kinds of ``engine.method_rows.METHOD_KINDS`` (default ("qk", "vv"); the methods'
    kinds need a ViT).

    ``rows`` is the AttentionRows on screen, ``kind_rows`` {kind: KindRow} of every map panel,
    ``query_stats`` / ``all_stats`` the statistics, ``capture`` the AttentionCapture;
    ``view.describe()`` says what is shown (the view is rebuilt when ``kinds`` changes, so read
    ``view`` and ``plot`` again). ``figure()`` draws the map panels with matplotlib.
    """

    def __init__(self, explainer: Any, image: Any = None, *, query: Query | None = None, layer: int = -1,
                 head: int | None = None, size: int | tuple[int, int] = 224, radius: float = 1,
                 cmap: str = DEFAULT_CMAP, opacity: float = DEFAULT_OPACITY,
                 kinds: Sequence[str] = ("qk", "vv"), max_cached_images: int = 4):
        super().__init__()
        self.explainer = explainer
        self._layer_names, self._num_heads = attention_layout(explainer.model)
        self._captures = LRUCache(max_cached_images)  # (image hash, size, model) -> AttentionCapture
        self._all_stats_cache = LRUCache(32)  # (capture key, head, radius) -> AttentionStats
        self._rgb_hash: str | None = None  # content hash of the image, computed once per image
        self._capture: AttentionCapture | None = None
        self._capture_key: tuple | None = None
        self._all_stats: tuple[tuple, AttentionStats] | None = None  # (its key, the statistics)
        self._holding = 0  # > 0 while several settings change at once (one redraw at the end)
        self._init_kind_panels(max_cached_images)
        self.size, self.layer, self.head, self.radius = size, layer, head, radius
        self.cmap, self.opacity, self.query, self.kinds = cmap, opacity, query, kinds
        self.controls = build_controls(self)
        # A block, not a flex row: the figure's element then takes the box's width, which plotly follows.
        self._plot_box = widgets.Box(layout=widgets.Layout(width="100%", display="block"))
        self._plot_box.add_class("csw-plot")
        self._view: AttentionView | None = None
        self._build_view()
        self.add_class("csw-attention-explorer")
        self.children = [*control_rows(self.controls), self._status_html, self._error_html, self._plot_box]
        self._wire()
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")

    # --- Python API --------------------------------------------------------------------------

    @property
    def capture(self) -> AttentionCapture | None:
        """The AttentionCapture of the image and size on screen (None before it arrives)."""
        current = self._rgb_hash is not None and self._capture_key == self._key(self._rgb_hash, self.size)
        return self._capture if current else None

    @property
    def rows(self) -> AttentionRows | None:
        """The AttentionRows on screen (current layer, query and head), or None."""
        capture = self.capture
        return None if capture is None or self.query is None else capture.rows(self.layer, self.query, self.head)

    @property
    def query_stats(self) -> AttentionStats | None:
        """Per-layer statistics of the current query (current head and radius), or None."""
        capture = self.capture
        return None if capture is None or self.query is None else capture.stats(self.query, self.head, self.radius)

    @property
    def all_stats(self) -> AttentionStats | None:
        """Per-layer statistics averaged over all patch queries, for the current head and radius (or None)."""
        if self._all_stats is None or self.capture is None:
            return None
        key, stats = self._all_stats
        return stats if key == (self._capture_key, self.head, self.radius) else None

    @property
    def plot(self) -> go.FigureWidget:
        """The plotly FigureWidget with every view (maps, small multiples, statistics)."""
        return self._view.fig

    @property
    def view(self) -> AttentionView:
        """The live view; ``view.describe()`` reports what it shows."""
        return self._view

    def click(self, x: float, y: float, panel: int = IMAGE_PANEL) -> Query:
        """Do what a click at image pixel (x, y) of ``panel`` (0 image, 1 + i: kinds[i]) does; returns the query."""
        self.wait(self.display_timeout)
        self._view.click_map(panel, x, y)
        return self.query

    def figure(self, view: str = "maps", images: Sequence[Any] | None = None,
               queries: Query | Sequence[Query] | None = None, layout: Layout = None):
        """A static matplotlib figure.

        view: "maps" (the paper's Figure 1 layout: rows image-with-query, then one per kind; one image
            with more than two kinds: the explorer's panels), "layers" (every layer) or "stats"
            (statistics across layers).
        images: for "maps", several images side by side (paths, arrays, ...); default the current one.
        queries: one query for every image, or one per image; default the current query.
        The current layer, head and input size are used. ``layout``: a size preset ("column",
        "page", inches), as for every widget's ``figure()``.
        """
        if view not in VIEWS:
            raise ValueError(f"Unknown view {view!r}; choose one of {', '.join(VIEWS)}.")
        if view == "maps" and images is None and queries is None:
            return super().figure(layout=layout)
        self.wait(self.display_timeout)
        with self._lock:
            fig = self._render_figure(view) if view != "maps" else self._paper_figure(images, queries)
        return apply_layout(fig, layout)

    # --- reacting to settings ----------------------------------------------------------------

    def _wire(self) -> None:
        c = self.controls
        c["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")
        c["global"].on_click(self._guarded(lambda button: setattr(self, "query", GLOBAL), "choosing the query"))
        self.observe(self._guarded(lambda change: self._redraw(), "drawing the attention"), names=["layer", "query"])
        self.observe(self._guarded(self._on_stats_settings, "changing the statistics"), names=["head", "radius"])
        self.observe(self._guarded(self._on_size, "changing the input size"), names="size")
        self.observe(self._guarded(lambda change: self._view.restyle(self.cmap, self.opacity),
                                   "changing the colours"), names=["cmap", "opacity"])
        self.observe(self._guarded(self._on_kinds, "changing the attention kinds"), names="kinds")

    def _build_view(self) -> None:
        """A view whose map panels are the current kinds (a view's panels are fixed), in place of the old one."""
        old = self._view
        self._view = AttentionView(self._layer_names, on_map_click=self._on_map_click,
                                   on_layer_click=self._on_layer_click, on_error=self._show_error, kinds=self.kinds,
                                   width_px=None if old is None else old.width_px, on_width=self._fit_width)
        self._plot_box.children = [self._view.fig]
        if old is not None:
            old.fig.close()
        if self._rgb is not None:
            self._view.set_image(self._rgb)

    def _fit_width(self, width: float) -> None:
        """The browser drew the figure ``width`` px wide: lay it out for that width (no job: layout only)."""
        with self._lock:
            self._view.fit(width_px=width)

    def _on_kinds(self, change: dict) -> None:
        with self._lock:
            self._build_view()
            self._redraw()
        self._request_kinds()

    def _on_stats_settings(self, change: dict) -> None:
        self._redraw()  # what is cheap now (a new head's rows); the all-queries statistics in the background
        self._request_all_stats()

    def _on_size(self, change: dict) -> None:
        with self._one_redraw():
            grid = self._grid()
            if self.query not in (None, GLOBAL) and not (self.query[0] < grid[0] and self.query[1] < grid[1]):
                self.query = (grid[0] // 2, grid[1] // 2)  # the old cell is not on the new grid
        self._request_capture()
        self._request_kinds()

    @contextmanager
    def _one_redraw(self) -> Iterator[None]:
        """Change several settings, then redraw once."""
        with self._lock:
            self._holding += 1
            try:
                yield
            finally:
                self._holding -= 1
            self._redraw()

    def _redraw(self) -> None:
        """Redraw maps, small multiples and statistics from the current capture (cheap: no forward pass)."""
        with self._lock:
            if self._holding:
                return
            capture = self.capture
            if capture is None or self.query is None:
                self._view.clear()
                return
            query, layer, head = self.query, self.layer, self.head
            rows = capture.rows(layer, query, head)
            self._view.show(self._rgb.shape[:2], rows, capture.all_layers(query, head), self.query_stats,
                            self.all_stats, self.cmap, self.opacity, self._panel_rows(rows))

    # --- background jobs ---------------------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its capture."""
        with self._lock:
            self._rgb, self._rgb_hash = rgb, content_hash(rgb)
            self._capture = self._capture_key = self._all_stats = None
            self._view.set_image(rgb)
            self._redraw()
        self._request_capture()
        self._request_kinds()

    def _key(self, image_hash: str, size: int | tuple[int, int]) -> tuple:
        return image_hash, size, self.explainer.model.fingerprint, self.precision

    def _capture_for(self, rgb: np.ndarray, size: int | tuple[int, int], key: tuple | None = None
                     ) -> AttentionCapture:
        """The capture of (image, size): one forward pass, then cached."""
        key = key or self._key(content_hash(rgb), size)
        capture = self._captures.get(key)
        if capture is None:
            capture = capture_image_attention(self.explainer.model, rgb, size)
            self._captures.put(key, capture)
        return capture

    def _request_capture(self) -> None:
        """Job "capture": q, k, v of every layer for the image and size (cached), then the statistics."""
        if self._rgb is None:
            return
        rgb, size = self._rgb, self.size
        key = self._key(self._rgb_hash, size)
        busy = ("Using the cached capture…" if key in self._captures
                else f"Capturing q, k, v of every layer at {size_label(size)} px…")
        self.submit("capture", lambda job: (key, self._capture_for(rgb, size, key)), self._apply_capture,
                    busy_text=busy, doing="capturing the attention",
                    done_text=lambda result, seconds: _summary(result[1], seconds))

    def _apply_capture(self, result: tuple[tuple, AttentionCapture]) -> None:
        self._capture_key, self._capture = result
        with self._one_redraw():
            if self.query is None:
                grid = self._capture.grid
                self.query = (grid[0] // 2, grid[1] // 2)
        self._request_all_stats()

    def _request_all_stats(self) -> None:
        """Job "stats": the statistics averaged over all patch queries for the current head and radius."""
        capture = self.capture
        if capture is None:
            return  # the capture job asks again when it is done
        key = (self._capture_key, self.head, self.radius)

        def work(job) -> tuple[tuple, AttentionStats]:
            stats = self._all_stats_cache.get(key)
            if stats is None:
                stats = capture.stats(ALL_QUERIES, key[1], key[2])
                self._all_stats_cache.put(key, stats)
            return key, stats

        self.submit("stats", work, self._apply_all_stats, busy_text="Statistics over all patch queries…",
                    doing="computing the statistics", done_text=lambda result, seconds: _summary(capture, seconds))

    def _apply_all_stats(self, result: tuple[tuple, AttentionStats]) -> None:
        self._all_stats = result
        self._redraw()

    # --- clicks (the view calls these; so do view.click_map / view.click_layer) ---------------

    def _on_map_click(self, panel: int, x: float, y: float) -> None:
        with self._lock:
            if self.capture is None:
                raise ClipSurgeryError("No attention yet: set an image and wait for the capture.")
            self.query = patch_at(self._rgb.shape[:2], self._grid(), x, y)

    def _on_layer_click(self, layer: int, x: float, y: float) -> None:
        with self._lock:
            capture = self.capture
            if capture is None:
                raise ClipSurgeryError("No attention yet: set an image and wait for the capture.")
            with self._one_redraw():
                self.query = patch_at(capture.grid, capture.grid, x, y)  # small multiples are in cell units
                self.layer = layer


def _summary(capture: AttentionCapture, seconds: float) -> str:
    """The status line once the attention is shown: "6 layers, 12 heads, grid 14x14 · 0.42 s"."""
    layers = capture.num_layers
    return (f"{layers} layer{'s' * (layers != 1)}, {capture.num_heads} heads, "
            f"grid {capture.grid[0]}x{capture.grid[1]} · {seconds:.2f} s")
