"""HeatmapView: what HeatmapExplorer shows, as plotly figures.

One :class:`~.plotting.PanelFigure` holds every image panel of every view (overlay, grid, compare,
segmentation); a bar chart shows every label's score at the clicked patch. The controller says
*what* to show with a :class:`Plan` (one :class:`Panel` per image panel: a method's map of a label,
or the argmax segmentation) and a :class:`Style`; this view decides *how*. Tests read
:meth:`HeatmapView.describe` and :meth:`HeatmapView.heat`, never the plotly traces.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np

from ..engine.errors import ClipSurgeryError
from ..engine.regions import display_step, normalised_patch_grid, region_outline
from ..figures import METHOD_TITLES, label_colors
from .plotting import (
    HEAT_TRACE,
    OUTLINE_TRACE,
    PanelFigure,
    bar_figure,
    discrete_colorscale,
    plotly_colorscale,
    subsample,
)

#: view name -> its button text. A new view is one entry here and one branch in :func:`panel_plan`.
VIEWS: dict[str, str] = {"overlay": "one label", "grid": "all labels", "compare": "raw vs surgery",
                         "segmentation": "segmentation"}
#: the maps the "compare" view puts side by side, left to right.
COMPARED_METHODS: tuple[str, ...] = ("raw", "surgery")
FIGURE_WIDTH = 780  # pixels; fixed so that panel sizes (and the data sent for them) are predictable
_PLOT_WIDTH = FIGURE_WIDTH - 90  # without the margins and the colour bar
_BAR_COLOR, _BAR_HIGHLIGHT = "#1f77b4", "#d62728"  # bars; the bar of the label shown in the overlay


@dataclass(frozen=True)
class Panel:
    """One image panel: ``method``'s map of ``label``, or (segmentation) the argmax label of ``method``."""

    method: str
    label: str = ""
    segmentation: bool = False

    def title(self, short: bool) -> str:
        if self.segmentation:
            return "segmentation (argmax)"
        if short:
            return self.label
        return f"{method_title(self.method)}: {self.label}"


@dataclass(frozen=True)
class Plan:
    """The panels of a view: ``panels`` fill a grid of ``ncols`` columns row by row.

    compact: many small panels (smaller images sent, label-only titles).
    """

    view: str
    panels: tuple[Panel, ...]
    ncols: int
    compact: bool = False


@dataclass(frozen=True)
class Style:
    """How heat maps are drawn: colour map, opacity over the image, outline level (None: no outline),
    and the long side in pixels at which the segmentation view is sent."""

    cmap: str
    opacity: float
    threshold: float | None
    heat_side: int = 200


def panel_plan(view: str, labels: Sequence[str], label: str | None, method: str = "surgery",
               compared: Sequence[str] = COMPARED_METHODS) -> Plan:
    """The panels of ``view`` for an explanation with ``labels``; ``label`` is the one-label choice."""
    label = label if label in labels else (labels[0] if labels else "")
    if view == "grid":
        panels = tuple(Panel(method, t) for t in labels) or (Panel(method, ""),)
        n = len(panels)
        return Plan(view, panels, n if n <= 4 else 4 if n <= 12 else 6, compact=True)
    if view == "compare":
        return Plan(view, tuple(Panel(m, label) for m in compared), len(compared))
    if view == "segmentation":
        return Plan(view, (Panel(method, segmentation=True),), 1)
    if view == "overlay":
        return Plan(view, (Panel(method, label),), 1)
    raise ValueError(f"Unknown view {view!r}; use one of {', '.join(VIEWS)}.")


def method_title(method: str) -> str:
    return METHOD_TITLES.get(method, method)


def method_maps(explanation: Any, method: str) -> Any:
    """The MapSet of ``method`` ("raw" or "surgery") in an Explanation."""
    maps = getattr(explanation, method, None)
    if maps is None:
        raise ClipSurgeryError(f"This explanation has no {method!r} maps.")
    return maps


class HeatmapView:
    """The figures of a HeatmapExplorer: image panels with heat maps, and the per-label bar chart.

    ``plot_box`` and ``bar_box`` are the containers the controller places in its layout.
    ``on_click(panel, x, y)`` is called (with original-image pixels) when a heat map is clicked.
    """

    def __init__(self, on_click: Callable[[int, float, float], None]):
        self._on_click = on_click
        self.plot_box = widgets.Box(layout=widgets.Layout(width="100%"))
        self.bar_box = widgets.Box(layout=widgets.Layout(width="100%", display="none"))
        self.plot_box.add_class("csw-plot")
        self.bar_box.add_class("csw-bars")
        self.panels: PanelFigure | None = None  # built on the first show, rebuilt only to grow
        self.bar_chart = None  # a bar FigureWidget, built on the first click
        self._plan: Plan | None = None
        self._style: Style | None = None
        self._derived: dict[tuple[object, str], np.ndarray] = {}
        self._watchers: list[Callable[[str], None]] = []
        self._watched = None  # the FigureWidget the watchers are registered on

    @property
    def figure(self):
        """The plotly FigureWidget of the image panels (None before the first show)."""
        return self.panels.fig if self.panels is not None else None

    # --- drawing -----------------------------------------------------------------------------

    def show(self, plan: Plan, style: Style, rgb: np.ndarray | None, image_key: object,
             explanation: Any = None, explanation_key: object = None,
             marker: tuple[float, float, int] | None = None) -> None:
        """Draw ``plan`` over ``rgb`` (uint8 [H, W, 3]) with the maps of ``explanation`` (or none yet).

        The keys say when the image or the explanation is new; only what changed is sent.
        marker: (x, y, panel) of the clicked point, or None.
        """
        panels = self._figure(len(plan.panels))
        ncols, height, image_side = _grid_shape(plan, rgb)
        segmentation = plan.panels[0].segmentation
        with panels.fig.batch_update():
            panels.arrange(len(plan.panels), ncols, height, width=FIGURE_WIDTH,
                           right_margin=140 if segmentation else 70)
            panels.set_titles([html.escape(p.title(plan.compact)) for p in plan.panels])
            if rgb is not None:
                for index in range(len(plan.panels)):
                    panels.set_image(index, rgb, key=image_key, max_side=image_side)
            if explanation is not None:
                for index, panel in enumerate(plan.panels):
                    last = index == len(plan.panels) - 1
                    self._draw_panel(index, panel, style, explanation, explanation_key, showscale=last,
                                     bar_px=min(300, height - 40))
            self._draw_legend(plan, explanation, explanation_key)
            shown = marker is not None and marker[2] < len(plan.panels)
            panels.set_marker((marker[0], marker[1]) if shown else None, marker[2] if shown else 0)
        figure = panels.go_live()
        if figure is not self._watched:
            self._watched = figure
            self._tell_watchers(self._watchers)
        if self.plot_box.children != (figure,):
            self.plot_box.children = (figure,)
        self._plan, self._style = plan, style

    def show_scores(self, labels: Sequence[str], scores: Sequence[float], normalised: Sequence[float],
                    title: str, highlight: str | None) -> None:
        """The bar chart of every label's ``scores`` at a patch (hover adds the ``normalised`` value)."""
        if self.bar_chart is None:
            self.bar_chart = bar_figure()
            self.bar_box.children = (self.bar_chart,)
        self.bar_box.layout.display = None
        colors = [_BAR_HIGHLIGHT if t == highlight else _BAR_COLOR for t in labels]
        with self.bar_chart.batch_update():
            bars = self.bar_chart.data[0]
            bars.update(x=[html.escape(t) for t in labels], y=np.round(scores, 5).tolist(),
                        customdata=np.round(normalised, 3).tolist(), marker=dict(color=colors),
                        hovertemplate="<b>%{x}</b><br>score %{y:.4f}<br>normalised %{customdata:.3f}<extra></extra>")
            self.bar_chart.layout.title.text = html.escape(title)

    def show_marker(self, x: float, y: float, panel: int) -> None:
        """Mark the clicked point (x, y) of ``panel``."""
        self.panels.set_marker((x, y), panel)

    def hide_scores(self) -> None:
        self.bar_box.layout.display = "none"

    def _figure(self, n_panels: int) -> PanelFigure:
        """The one PanelFigure, rebuilt only when it needs more panels.

        The old figure is not closed: its view may still be on screen until the swap, and closing
        a plotly FigureWidget under a live view breaks the browser's message handling.
        """
        if self.panels is None or self.panels.capacity < n_panels:
            capacity = max(4, -(-n_panels // 4) * 4)
            self.panels = PanelFigure(capacity, staged=True, on_click=self._on_click)
        return self.panels

    def _draw_panel(self, index: int, panel: Panel, style: Style, e: Any, key: object, showscale: bool,
                    bar_px: int) -> None:
        panels, labels = self.panels, e.labels
        if panel.segmentation:
            step = display_step(e.image_size, style.heat_side)
            panels.set_heat(index, (key, "segmentation", panel.method, step),
                            subsample(self._derived_array(e, key, panel.method, True), step), step,
                            zmin=-0.5, zmax=len(labels) - 0.5)
            panels.set_style(index, discrete_colorscale(label_colors(len(labels))), style.opacity, smooth=False)
            panels.set_outline(index, [])
            return
        maps, t = method_maps(e, panel.method), labels.index(panel.label)
        hover = (f"<b>{html.escape(panel.label)}</b> ({html.escape(method_title(panel.method))})<br>"
                 "normalised %{z:.3f}<br>raw score %{customdata:.4f}<br>patch at x %{x:.0f}, y %{y:.0f}"
                 "<extra></extra>")
        # The patch grid travels, not an image-sized map: the browser interpolates it bilinearly,
        # which is how the engine resizes it too.
        panels.set_patch_heat(index, (key, panel.method, panel.label),
                              self._derived_array(e, key, panel.method, False)[t], e.image_size,
                              customdata=maps.patch_scores[:, t].reshape(e.grid), hovertemplate=hover)
        panels.set_style(index, plotly_colorscale(style.cmap), style.opacity, showscale=showscale, bar_px=bar_px)
        panels.set_outline(index, region_outline(maps.maps[t], style.threshold) if style.threshold else [])

    def _derived_array(self, e: Any, key: object, method: str, segmentation: bool) -> np.ndarray:
        """Arrays every view of one explanation shares, made once by the engine: the normalised
        patch grids [T, gh, gw] of ``method``, or its argmax label per pixel [H, W]."""
        name = ("segmentation:" if segmentation else "grid:") + method
        if (key, name) not in self._derived:
            self._derived = {k: v for k, v in self._derived.items() if k[0] == key}
            self._derived[(key, name)] = (e.segmentation(method) if segmentation else
                                          normalised_patch_grid(method_maps(e, method).patch_scores, e.grid))
        return self._derived[(key, name)]

    def _draw_legend(self, plan: Plan, e: Any, key: object) -> None:
        panel = plan.panels[0]
        if not panel.segmentation or e is None:
            self.panels.set_legend([], np.zeros((0, 3)))
            return
        present = np.unique(self._derived_array(e, key, panel.method, True))
        self.panels.set_legend([e.labels[i] for i in present], label_colors(len(e.labels))[present])

    # --- reading back what is shown ----------------------------------------------------------

    def describe(self) -> dict:
        """What a person sees, as plain values.

        view; panels (count); titles; methods and labels of the panels; images: (H, W) per panel
        (None before an image) and image_formats ("png", "jpeg"); heat: (rows, cols) of each panel's
        heat data or None; legend: legend names; cmap (name) and colorscale (per panel, as sent);
        opacity; threshold; colorbar and outlined per panel; marker: (x, y, panel) or None;
        bars: None when hidden, else {"labels", "values", "title", "highlight"}.
        """
        if self.panels is None or self._plan is None:
            return {"view": None, "panels": 0, "titles": [], "methods": [], "labels": [], "images": [],
                    "image_formats": [], "heat": [], "legend": [], "cmap": None, "colorscale": [], "opacity": None,
                    "threshold": None, "colorbar": [], "outlined": [], "marker": None, "bars": None}
        shown = self.panels.describe()
        plan, style = self._plan, self._style
        drawn = [o for o in shown["opacity"] if o is not None]  # None until a heat map is drawn
        described = {
            "view": plan.view, "panels": shown["panels"], "titles": [html.unescape(t) for t in shown["titles"]],
            "methods": [p.method for p in plan.panels], "labels": [p.label for p in plan.panels],
            "images": shown["images"], "image_formats": [_image_format(self.figure.layout.images[p].source)
                                                         for p in range(shown["panels"])],
            "heat": shown["heat"], "legend": shown["legend"], "cmap": style.cmap, "colorscale": shown["colorscale"],
            "opacity": drawn[0] if drawn else style.opacity, "threshold": style.threshold,
            "colorbar": shown["colorbar"], "outlined": shown["outlined"], "marker": shown["marker"], "bars": None,
        }
        if self.bar_chart is not None and self.bar_box.layout.display != "none":
            bars = self.bar_chart.data[0]
            highlighted = [i for i, c in enumerate(bars.marker.color) if c == _BAR_HIGHLIGHT]
            labels = [html.unescape(t) for t in bars.x]
            described["bars"] = {"labels": labels, "values": list(bars.y),
                                 "title": html.unescape(self.bar_chart.layout.title.text),
                                 "highlight": labels[highlighted[0]] if highlighted else None}
        return described

    def heat(self, panel: int) -> dict:
        """The heat map shown in ``panel``, read back from the figure.

        values: [h, w] as sent (normalised map, or label index for segmentation); scores: the raw
        score per cell or None; x, y: image-pixel centres of the columns and rows; smooth: whether
        the browser interpolates between cells; hover: the hover text template; outline: polylines
        [K, 2] in (x, y).
        """
        if self.panels is None or not 0 <= panel < self.panels.n_panels:
            raise IndexError(f"Panel {panel} is not shown.")
        trace, outline = self.panels.trace(panel, HEAT_TRACE), self.panels.trace(panel, OUTLINE_TRACE)
        values = np.asarray(trace.z if trace.z is not None else [], dtype=float)
        rows, cols = values.shape if values.ndim == 2 else (0, 0)
        scores = np.asarray(trace.customdata, dtype=float) if trace.customdata is not None and len(
            trace.customdata) else None
        return {"values": values, "scores": scores,
                "x": [trace.x0 + trace.dx * j for j in range(cols)],
                "y": [trace.y0 + trace.dy * i for i in range(rows)],
                "smooth": trace.zsmooth not in (False, None), "hover": trace.hovertemplate or "",
                "outline": _polylines(outline.x or (), outline.y or ())}

    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(kind)`` whenever the figure sends new "heat" data, "style" or an "image"
        to the browser (plotly sends only values that changed); for tests and benchmarks."""
        self._watchers.append(callback)
        if self._watched is not None:
            self._tell_watchers([callback])

    def _tell_watchers(self, callbacks: Sequence[Callable[[str], None]]) -> None:
        for callback in callbacks:
            for panel in range(self.panels.capacity):
                trace = self.panels.trace(panel, HEAT_TRACE)
                trace.on_change(lambda *_, c=callback: c("heat"), "z", "customdata")
                trace.on_change(lambda *_, c=callback: c("style"), "colorscale", "opacity")
            self.panels.fig.layout.on_change(lambda *_, c=callback: c("image"), "images")


def _grid_shape(plan: Plan, rgb: np.ndarray | None, width: int = _PLOT_WIDTH) -> tuple[int, int, int]:
    """(columns, figure height, longest image side sent) for a plot area ``width`` pixels wide."""
    n, ncols = len(plan.panels), plan.ncols
    aspect = rgb.shape[0] / rgb.shape[1] if rgb is not None else 0.75
    if not plan.compact:
        height = min(560, max(280, round(width / n * aspect) + 60))
        return ncols, height, 640
    rows = -(-n // ncols)
    row_height = round(width / ncols * aspect) + 28
    return ncols, max(200, rows * row_height + 36), 160 if ncols > 4 else 320


def _image_format(source: str | None) -> str | None:
    if not source:
        return None
    return source.split(";", 1)[0].removeprefix("data:image/")


def _polylines(xs: Sequence, ys: Sequence) -> list[np.ndarray]:
    lines, current = [], []
    for x, y in zip(list(xs) + [None], list(ys) + [None]):
        if x is None or y is None:
            if current:
                lines.append(np.asarray(current, dtype=float))
            current = []
        else:
            current.append((x, y))
    return lines
