"""HeatmapView: what HeatmapExplorer shows, as plotly figures.

A small :class:`~.plotting.PanelFigure` (up to four panels) holds the image panels of the small
views (one label, raw vs surgery, segmentation, a few labels); a second one, sized to the view, the
panels of a big grid. Every plotly redraw handles every trace of its figure, so a view after a
59-label grid must not keep the grid's 121 traces. A bar chart, made with the view so that the
first click costs what later clicks cost, shows every label's score at the clicked patch. The controller
says *what* to show with a :class:`~.heatmap_plan.Plan` (one panel per image panel: a method's map
of a label, or a method's segmentation) and a :class:`~.heatmap_plan.Style`; this view decides
*how*. Tests read :meth:`HeatmapView.describe` and :meth:`HeatmapView.heat`, never the plotly traces.
Every user string sent to plotly goes through :func:`~.plotting.plotly_text`.
"""
from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np

from ..engine.errors import ClipSurgeryError
from ..engine.regions import display_step, normalised_patch_grid, region_outline
from ..figures.style import label_colors, method_name
from .heatmap_plan import COMPARED_METHODS, VIEWS, Panel, Plan, Style, panel_plan
from .plotting import (HEAT_TRACE, MODEBAR_ROOM, OUTLINE_TRACE, PanelFigure, bar_figure, discrete_colorscale,
                       plotly_colorscale, plotly_text, subsample)

__all__ = ["HeatmapView", "VIEWS", "COMPARED_METHODS", "Panel", "Plan", "Style", "panel_plan", "method_maps",
           "has_maps", "method_title"]

#: the width (pixels) figure heights are planned for; the figures fill their cell's width, whatever it is.
NOMINAL_WIDTH = 700
_PLOT_WIDTH = NOMINAL_WIDTH - 90  # without the margins and the colour bar
SMALL_CAPACITY = 4  # panels of the small figure: one label, raw vs surgery, segmentation, up to 4 labels
_BAR_HEIGHT = 260
_BAR_HINT = "Click a map to see every label's score at that patch."
_BAR_COLOR, _BAR_HIGHLIGHT = "#1f77b4", "#d62728"  # bars; the bar of the label shown in the overlay


def method_title(method: str) -> str:
    """The display name of a method ("clip_surgery" -> "CLIP Surgery")."""
    return method_name(method)


def method_maps(explanation: Any, method: str) -> Any:
    """The MapSet of ``method`` in an Explanation (any dense method, "surgery" = clip_surgery)."""
    try:
        return explanation.mapset(method)
    except ValueError as exc:
        raise ClipSurgeryError(str(exc)) from None


def has_maps(explanation: Any, method: str) -> bool:
    """Whether ``explanation`` holds ``method``'s maps (False for None)."""
    if explanation is None:
        return False
    try:
        explanation.mapset(method)
    except ValueError:
        return False
    return True


class HeatmapView:
    """The figures of a HeatmapExplorer: image panels with heat maps, and the per-label bar chart.

    ``plot_box`` and ``bar_box`` are the containers the controller places in its layout.
    ``on_click(panel, x, y)`` is called (with original-image pixels) when a heat map is clicked.
    """

    def __init__(self, on_click: Callable[[int, float, float], None]):
        self._on_click = on_click
        # Columns: a figure stretches to the cell's width (in a row it would take its own width).
        self.plot_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.bar_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.plot_box.add_class("csw-plot")
        self.bar_box.add_class("csw-bars")
        self.panels: PanelFigure | None = None  # the figure on screen, built on the first show
        self._kind: str | None = None  # "small" or "large": the kind of ``panels`` (see _figure)
        # Made now, empty with a one-line hint: a new FigureWidget costs the browser seconds (it
        # ships plotly.js), which would otherwise land on the first click.
        self.bar_chart = bar_figure(_BAR_HEIGHT)
        self.bar_box.children = (self.bar_chart,)
        self._scores_shown = False
        self.hide_scores()
        self._plan: Plan | None = None
        self._style: Style | None = None
        self._segmentation: Any = None  # the LabelSegmentation drawn, or None
        self._derived: dict[tuple[object, str], np.ndarray] = {}
        self._watchers: list[Callable[[str], None]] = []
        self._watched: dict[int, int] = {}  # id of a PanelFigure's FigureWidget -> watchers registered on it

    @property
    def figure(self):
        """The plotly FigureWidget of the image panels (None before the first show)."""
        return self.panels.fig if self.panels is not None else None

    # --- drawing -----------------------------------------------------------------------------

    def show(self, plan: Plan, style: Style, rgb: np.ndarray | None, image_key: object,
             explanation: Any = None, explanation_key: object = None,
             marker: tuple[float, float, int] | None = None,
             segmentation: tuple[object, Any] | None = None) -> None:
        """Draw ``plan`` over ``rgb`` (uint8 [H, W, 3]) with the maps of ``explanation`` (or none yet).

        The keys say when the image or the explanation is new; only what changed is sent.
        marker: (x, y, panel) of the clicked point, or None. segmentation: (key, LabelSegmentation)
        of the current image for the segmentation view, or None (the panel then shows the image).
        Panels whose method the explanation does not hold yet show the image only.
        """
        panels = self._figure(len(plan.panels))
        ncols, height, image_side = _grid_shape(plan, rgb)
        seg_view = plan.panels[0].segmentation
        with panels.fig.batch_update():
            panels.arrange(len(plan.panels), ncols, height, width=None, right_margin=140 if seg_view else 70)
            panels.set_titles([plotly_text(p.title(plan.short_titles)) for p in plan.panels])
            if rgb is not None:
                for index in range(len(plan.panels)):
                    panels.set_image(index, rgb, key=image_key, max_side=image_side)
            drawn = None
            if seg_view:
                drawn = self._draw_segmentation(segmentation, style)
            elif explanation is not None:
                for index, panel in enumerate(plan.panels):
                    last = index == len(plan.panels) - 1
                    self._draw_panel(index, panel, style, explanation, explanation_key, showscale=last,
                                     bar_px=min(300, height - 40))
            self._draw_legend(drawn)
            shown = marker is not None and marker[2] < len(plan.panels)
            panels.set_marker((marker[0], marker[1]) if shown else None, marker[2] if shown else 0)
        figure = panels.go_live()
        self._tell_watchers()
        if self.plot_box.children != (figure,):
            self.plot_box.children = (figure,)
        self._plan, self._style, self._segmentation = plan, style, drawn

    def show_scores(self, labels: Sequence[str], scores: Sequence[float], normalised: Sequence[float],
                    title: str, highlight: str | None) -> None:
        """The bar chart of every label's ``scores`` at a patch (hover adds the ``normalised`` value)."""
        colors = [_BAR_HIGHLIGHT if t == highlight else _BAR_COLOR for t in labels]
        with self.bar_chart.batch_update():
            bars = self.bar_chart.data[0]
            bars.update(x=[plotly_text(t) for t in labels], y=np.round(scores, 5).tolist(),
                        customdata=np.round(normalised, 3).tolist(), marker=dict(color=colors),
                        hovertemplate="<b>%{x}</b><br>score %{y:.4f}<br>normalised %{customdata:.3f}<extra></extra>")
            self.bar_chart.layout.title.text = plotly_text(title)
            if not self._scores_shown:
                self.bar_chart.update_layout(height=_BAR_HEIGHT, margin=dict(t=40, b=80),
                                             xaxis_visible=True, yaxis_visible=True)
        self._scores_shown = True

    def show_marker(self, x: float, y: float, panel: int) -> None:
        """Mark the clicked point (x, y) of ``panel``."""
        self.panels.set_marker((x, y), panel)

    def hide_scores(self) -> None:
        """Back to the empty bar chart: one line saying what a click shows."""
        with self.bar_chart.batch_update():
            self.bar_chart.data[0].update(x=[], y=[], customdata=[], marker=dict(color=[]))
            self.bar_chart.update_layout(height=44, margin=dict(t=30, b=0), title_text=_BAR_HINT,
                                         xaxis_visible=False, yaxis_visible=False)
        self._scores_shown = False

    def _figure(self, n_panels: int) -> PanelFigure:
        """The PanelFigure for ``n_panels`` panels, made the one on screen.

        Up to :data:`SMALL_CAPACITY` panels: the small figure. More: the large one, rebuilt when
        it is too small, or more than twice too big. The figure put aside is dropped, and going
        back makes a new one: a plotly view put back on the page after being taken off showed its
        old panels and missed every later update (seen in JupyterLab 4.6 with plotly 7.1). A
        replaced figure is not closed: its view may still be on screen until the swap, and closing
        a plotly FigureWidget under a live view breaks the browser's message handling.
        """
        kind = "small" if n_panels <= SMALL_CAPACITY else "large"
        panels = self.panels if self._kind == kind else None
        if panels is None or not n_panels <= panels.capacity <= max(SMALL_CAPACITY, 2 * n_panels):
            capacity = SMALL_CAPACITY if kind == "small" else -(-n_panels // 4) * 4
            panels = PanelFigure(capacity, staged=True, on_click=self._on_click, top_margin=MODEBAR_ROOM)
            self._kind = kind
        self.panels = panels
        return panels

    def _draw_segmentation(self, segmentation: tuple[object, Any] | None, style: Style) -> Any:
        """Panel 0: the class of each pixel (sent at about ``heat_side`` pixels); returns what was drawn."""
        panels = self.panels
        if segmentation is None:
            panels.clear_panel(0)
            return None
        key, seg = segmentation
        step = display_step(seg.labels.shape, style.heat_side)
        panels.set_heat(0, (key, "segmentation", step), subsample(seg.labels, step), step,
                        zmin=-0.5, zmax=len(seg.classes) - 0.5)
        panels.set_style(0, discrete_colorscale(label_colors(len(seg.classes))), style.opacity, smooth=False)
        panels.set_outline(0, [])
        return seg

    def _draw_panel(self, index: int, panel: Panel, style: Style, e: Any, key: object, showscale: bool,
                    bar_px: int) -> None:
        panels, labels = self.panels, e.labels
        if not has_maps(e, panel.method) or panel.label not in labels:
            panels.clear_panel(index)  # its maps are being computed
            return
        maps, t = method_maps(e, panel.method), labels.index(panel.label)
        hover = (f"<b>{plotly_text(panel.label)}</b> ({plotly_text(method_title(panel.method))})<br>"
                 "normalised %{z:.3f}<br>raw score %{customdata:.4f}<br>patch at x %{x:.0f}, y %{y:.0f}"
                 "<extra></extra>")
        # The patch grid travels, not an image-sized map: the browser interpolates it bilinearly,
        # which is how the engine resizes it too.
        panels.set_patch_heat(index, (key, panel.method, panel.label), self._grids(e, key, panel.method)[t],
                              e.image_size, customdata=maps.patch_scores[:, t].reshape(e.grid), hovertemplate=hover)
        panels.set_style(index, plotly_colorscale(style.cmap), style.opacity, showscale=showscale, bar_px=bar_px)
        panels.set_outline(index, region_outline(maps.map_at(t), style.threshold) if style.threshold else [])

    def _grids(self, e: Any, key: object, method: str) -> np.ndarray:
        """The normalised patch grids [T, gh, gw] of ``method``, made once per explanation by the engine."""
        if (key, method) not in self._derived:
            self._derived = {k: v for k, v in self._derived.items() if k[0] == key}
            self._derived[(key, method)] = normalised_patch_grid(method_maps(e, method).patch_scores, e.grid)
        return self._derived[(key, method)]

    def _draw_legend(self, seg: Any) -> None:
        if seg is None:
            self.panels.set_legend([], np.zeros((0, 3)))
            return
        present = np.unique(seg.labels)
        self.panels.set_legend([plotly_text(seg.classes[i]) for i in present],
                               label_colors(len(seg.classes))[present])

    # --- reading back what is shown ----------------------------------------------------------

    def describe(self) -> dict:
        """What a person sees, as plain values.

        view; panels (count); titles; methods and labels of the panels; images: (H, W) per panel
        (None before an image) and image_formats ("png", "jpeg"); heat: (rows, cols) of each panel's
        heat data or None; legend: legend names; cmap (name) and colorscale (per panel, as sent);
        opacity; threshold; colorbar and outlined per panel; marker: (x, y, panel) or None;
        bars: None before a click (the bar chart is there, empty), else {"labels", "values", "title",
        "highlight"}; bar_chart: whether the bar chart exists (it does from the start);
        traces, capacity: plotly traces and panels of the figure on screen (what every redraw handles);
        method: the chosen method; compared: the methods of the "methods" view (its columns);
        shape: (rows, columns) of the panel grid (labels x methods in the "methods" view);
        segmentation: None, or what the segmentation view shows: {"method", "classes", and the
        settings of that segmentation: short_side, crop, stride, logit_scale, prob_thd, area_thd,
        pamr_steps (and depth for clip_surgery)}.
        """
        if self.panels is None or self._plan is None:
            return {"view": None, "panels": 0, "titles": [], "methods": [], "labels": [], "images": [],
                    "image_formats": [], "heat": [], "legend": [], "cmap": None, "colorscale": [], "opacity": None,
                    "threshold": None, "colorbar": [], "outlined": [], "marker": None, "bars": None,
                    "method": None, "compared": [], "shape": (0, 0), "segmentation": None,
                    "bar_chart": self.bar_chart is not None, "traces": 0, "capacity": 0}
        shown = self.panels.describe()
        plan, style = self._plan, self._style
        drawn = [o for o in shown["opacity"] if o is not None]  # None until a heat map is drawn
        described = {
            "view": plan.view, "panels": shown["panels"], "titles": [html.unescape(t) for t in shown["titles"]],
            "methods": [p.method for p in plan.panels], "labels": [p.label for p in plan.panels],
            "images": shown["images"], "image_formats": [_image_format(self.figure.layout.images[p].source)
                                                         for p in range(shown["panels"])],
            "heat": shown["heat"], "legend": [html.unescape(t) for t in shown["legend"]], "cmap": style.cmap,
            "colorscale": shown["colorscale"], "opacity": drawn[0] if drawn else style.opacity,
            "threshold": style.threshold, "colorbar": shown["colorbar"], "outlined": shown["outlined"],
            "marker": shown["marker"], "bars": None, "method": plan.method, "compared": list(plan.compared),
            "shape": plan.shape, "segmentation": None, "bar_chart": self.bar_chart is not None,
            "traces": shown["traces"], "capacity": shown["capacity"],
        }
        seg = self._segmentation
        if plan.panels[0].segmentation and seg is not None:
            described["segmentation"] = {"method": seg.method, "classes": list(seg.classes), **seg.settings}
        if self._scores_shown:
            bars = self.bar_chart.data[0]
            highlighted = [i for i, c in enumerate(bars.marker.color) if c == _BAR_HIGHLIGHT]
            labels = [html.unescape(t) for t in bars.x]
            described["bars"] = {"labels": labels, "values": list(bars.y),
                                 "title": html.unescape(self.bar_chart.layout.title.text),
                                 "highlight": labels[highlighted[0]] if highlighted else None}
        return described

    def heat(self, panel: int) -> dict:
        """The heat map shown in ``panel``, read back from the figure.

        values: [h, w] as sent (normalised map, or class index for segmentation); scores: the raw
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
        self._tell_watchers()

    def _tell_watchers(self) -> None:
        """Register on the figure on screen the watchers not registered there yet."""
        if self.panels is None or not self.panels.live:
            return
        done = self._watched.get(id(self.panels.fig), 0)
        self._watched[id(self.panels.fig)] = len(self._watchers)
        for callback in self._watchers[done:]:
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
