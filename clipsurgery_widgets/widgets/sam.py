"""SamWidget: a text's CLIP Surgery map gives SAM its points; your clicks refine the mask.

Two panels share one plotly FigureWidget. Left: the CLIP Surgery map of the text with the
automatic points it gives (SPEC 6). Right: the image with SAM's prompts and mask; clicking it adds
or removes points. The SAM image embedding (about 18 s for vit_b on a CPU) is computed in a
background thread with its own progress line, so typing a text or moving a slider keeps working
meanwhile; a newer image abandons an older computation. The widget only routes events: points,
masks and maps all come from the engine (``SamRefiner``, ``Explainer``, ``maps``).
"""
from __future__ import annotations

import base64
import html
import io
import time
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from matplotlib.colors import to_rgb
from PIL import Image

from ..engine.errors import ClipSurgeryError, ImageInputError
from ..engine.maps import combine_targets, map_to_points
from ..engine.regions import display_step, region_outline
from ..engine.sam.refiner import SamRefiner
from ..engine.text.labels import parse_target
from ..figures import figure_bytes
from ..figures import sam as figures_sam
from .base import ExplorerWidget, LatestOnlyRunner
from .plotting import image_data_uri, plotly_colorscale, subsample

MODES = (("click adds positive", "positive"), ("click adds negative", "negative"), ("drag a box", "box"))
_WIDE = {"description_width": "initial"}

# Trace indices. The SAM panel is on axes x/y (plotly reports box ranges only there), the heat
# panel on x2/y2. Pictures are layout images, not image traces: a FigureWidget wires up its click
# events only once its first drawing has finished, and an image trace still loading when an update
# arrives can hold that up for ever (the plot then ignores every click). SAM's points, box and
# outline are layout shapes. Clicks reach us through a transparent heat map over the SAM panel
# (its cells resolve a click to a couple of pixels) and through the text's heat map.
T_CATCH, T_SELECT, H_HEAT, H_POS, H_NEG = range(5)
IMG_PHOTO, IMG_MASK, IMG_HEAT_PHOTO = range(3)
MARKER_RADIUS = 6.5  # screen pixels


class _Superseded(Exception):
    """A newer image replaced the one whose embedding was being computed."""


class SamWidget(ExplorerWidget):
    """Segment with SAM from a text: CLIP Surgery points first, then your clicks.

    Args:
        explainer: an ``engine.Explainer`` (gives the text's surgery map).
        refiner: an ``engine.sam.SamRefiner`` (e.g. ``load_sam_from_env()``).
        image: path, array, PIL image or bytes (anything ``load_image`` accepts); or upload one.
        text: what to segment; "a+b" combines targets (SPEC 6). None: click points yourself.
        threshold: level of the automatic points (cells >= threshold of the min-max map).
        opacity: weight of the mask over the image.   outline_only: draw only the mask's outline.
        mode: what a click adds: "positive", "negative" (Alt-click adds the other kind), or
            "box" (drag a box; clicks still add positive points).
        size: CLIP input size.   mask_color: colour of the mask.
        image_side: the image and mask are sent at about this many pixels on the long side.
        click_side: clicks are resolved on a grid of about this many cells on the long side.
        remove_radius: a click this close (image pixels) to a point removes it; default 1.5 % of
            the long side, at least 3 pixels.
        figure_width: width of the two-panel plot in pixels (its height follows the image).

    From Python: ``points``, ``point_labels``, ``box``, ``mask`` (the selected candidate),
    ``masks``, ``scores``, ``auto_points``, ``explanation`` and ``refiner`` (its own ``mask``,
    ``masks``, ``points``) at any time; ``click``, ``drag_box``, ``undo``, ``redo``, ``reset``,
    ``clear`` do what the controls do; ``figure()`` is the paper-style static figure.
    """

    def __init__(self, explainer: Any, refiner: SamRefiner, image: Any = None, text: str | None = None, *,
                 threshold: float = 0.8, opacity: float = 0.5, outline_only: bool = False, mode: str = "positive",
                 size: int = 224, mask_color: str = figures_sam.MASK_COLOR, image_side: int = 640,
                 heat_side: int = 200, click_side: int = 320, remove_radius: float | None = None,
                 figure_width: int = 960):
        if not isinstance(refiner, SamRefiner):
            raise TypeError(f"SamWidget needs a SamRefiner, not {type(refiner).__name__}: use "
                            f"clipsurgery_widgets.engine.sam.refiner.load_sam_from_env() or SamRefiner(sam_model).")
        super().__init__()
        self.explainer = explainer
        self.refiner = refiner
        self.size = size
        self.mask_color = mask_color
        self.image_side, self.heat_side, self.click_side = image_side, heat_side, click_side
        self.figure_width = figure_width
        self._remove_radius = remove_radius
        self._embedder = LatestOnlyRunner("SamWidget-embedding")
        self._rgb: np.ndarray | None = None
        self._image_version = 0
        self._explanation = None
        self._scores: np.ndarray | None = None
        self._auto = (np.zeros((0, 2), np.int64), np.zeros(0, np.uint8))
        self._auto_pending = False
        self._sam_key: str | None = None
        self._sam_ready = False
        self._sam_status_text = ""
        self._mask_index: int | None = None
        self._drawn_mask: list | None = None  # [key, display mask, scale, PNG URI, outline path]
        self._syncing = False
        self.last_click: dict | None = None
        self._build_controls(text or "", threshold, opacity, outline_only, mode)
        self._fig = self._build_figure()
        self._view_box.children = (self._fig,)
        self._wire()
        self._set_sam_status("SAM: waiting for an image.")
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")

    # --- Python API --------------------------------------------------------------------------

    text = property(lambda self: self.controls["text"].value.strip(),
                    lambda self, value: setattr(self.controls["text"], "value", value or ""),
                    doc='What to segment ("" for none; "a+b" combines targets).')
    threshold = property(lambda self: self.controls["threshold"].value,
                         lambda self, v: setattr(self.controls["threshold"], "value", float(v)),
                         doc="Level of the automatic points, in (0, 1].")
    opacity = property(lambda self: self.controls["opacity"].value,
                       lambda self, v: setattr(self.controls["opacity"], "value", float(v)),
                       doc="Weight of the mask over the image, 0..1.")
    outline_only = property(lambda self: self.controls["outline"].value,
                            lambda self, v: setattr(self.controls["outline"], "value", bool(v)),
                            doc="Draw only the mask's outline.")
    mode = property(lambda self: self.controls["mode"].value,
                    lambda self, v: setattr(self.controls["mode"], "value", _check(v, [k for _, k in MODES], "mode")),
                    doc='What a click adds: "positive", "negative" or "box" (drag).')

    @property
    def sam_ready(self) -> bool:
        """True when SAM's embedding of the current image is ready (clicks work)."""
        return self._sam_ready

    @property
    def sam_status(self) -> str:
        """The SAM line (embedding progress) as plain text."""
        return self._sam_status_text

    @property
    def busy(self) -> bool:
        return self._runner.busy or self._embedder.busy

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the explanation and the SAM embedding are done; False if ``timeout`` passed first."""
        start = time.monotonic()
        left = lambda: None if timeout is None else max(0.0, timeout - (time.monotonic() - start))  # noqa: E731
        return self._embedder.wait(left()) and self._runner.wait(left()) and self._embedder.wait(left())

    @property
    def explanation(self):
        """The Explanation of the text (None before it arrives or without a text)."""
        return self._explanation

    @property
    def heat(self) -> np.ndarray | None:
        """The text's CLIP Surgery map, float32 [H, W] in [0, 1], or None."""
        return None if self._explanation is None else self._explanation.maps[0]

    @property
    def auto_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The automatic points of the text's map: (int64 [P, 2] (x, y), uint8 [P] labels)."""
        return self._auto

    @property
    def points(self) -> np.ndarray:
        """The points SAM gets, int64 [P, 2] (x, y) pixels (empty until the embedding is ready)."""
        return self.refiner.points if self._current() else np.zeros((0, 2), np.int64)

    @property
    def point_labels(self) -> np.ndarray:
        """uint8 [P]: 1 positive, 0 negative."""
        return self.refiner.point_labels if self._current() else np.zeros(0, np.uint8)

    @property
    def box(self) -> np.ndarray | None:
        """The box prompt, float32 [4] (x0, y0, x1, y1), or None."""
        return self.refiner.box if self._current() else None

    @property
    def result(self):
        """The last SamResult for the current prompts, or None."""
        return self.refiner.result if self._current() else None

    @property
    def masks(self) -> np.ndarray | None:
        """SAM's candidate masks, bool [M, H, W] (M = 3), or None."""
        result = self.result
        return None if result is None else result.masks

    @property
    def scores(self) -> np.ndarray | None:
        """SAM's predicted IoU of each candidate, float32 [M], or None."""
        result = self.result
        return None if result is None else result.scores

    @property
    def mask_index(self) -> int | None:
        """Index of the candidate shown (default the best-scoring one); None without a result."""
        result = self.result
        if result is None:
            return None
        return self._mask_index if self._mask_index is not None and self._mask_index < len(result.masks) \
            else result.best

    @mask_index.setter
    def mask_index(self, index: int) -> None:
        result = self.result
        if result is None or not 0 <= int(index) < len(result.masks):
            count = 0 if result is None else len(result.masks)
            raise IndexError(f"No candidate mask {index}: there are {count}.")
        self.controls["candidates"].value = int(index)

    @property
    def mask(self) -> np.ndarray | None:
        """The candidate mask shown, bool [H, W], or None."""
        result, index = self.result, self.mask_index
        return None if result is None else result.masks[index]

    def click(self, x: float, y: float, modifier: bool = False) -> None:
        """Do what a click at pixel (x, y) of the image does (``modifier``: with Alt held, the other kind)."""
        self.wait(self.display_timeout)
        try:
            self._on_click(x, y, modifier)
        except Exception as exc:
            self._show_error(exc, "adding a point")
            raise

    def drag_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Do what dragging a box from (x0, y0) to (x1, y1) in box mode does: set SAM's box prompt."""
        self.wait(self.display_timeout)
        self._edit(lambda: self.refiner.set_box(_ordered_box(x0, y0, x1, y1)), "set the box")

    def undo(self) -> bool:
        return bool(self._edit(self.refiner.undo, "undo"))

    def redo(self) -> bool:
        return bool(self._edit(self.refiner.redo, "redo"))

    def reset(self) -> None:
        """Back to the text's automatic points (undoable)."""
        points, labels = self._auto
        self._edit(lambda: self.refiner.reset_to(points, labels) if len(points) else self.refiner.clear(),
                   "reset to the automatic points")

    def clear(self) -> None:
        """Remove every point and the box (undoable)."""
        self._edit(self.refiner.clear, "clear the prompts")

    # --- controls ----------------------------------------------------------------------------

    def _build_controls(self, text: str, threshold: float, opacity: float, outline_only: bool, mode: str) -> None:
        def button(description: str, tooltip: str, icon: str) -> widgets.Button:
            return widgets.Button(description=description, tooltip=tooltip, icon=icon,
                                  layout=widgets.Layout(width="auto"))

        c = self.controls = {
            "text": widgets.Text(value=text, description="Text", continuous_update=False, style=_WIDE,
                                 placeholder="what to segment, e.g. cat (a+b combines targets)",
                                 layout=widgets.Layout(flex="1 1 320px")),
            "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
            "mode": widgets.ToggleButtons(options=MODES, value=_check(mode, [k for _, k in MODES], "mode"),
                                          style={"button_width": "auto"},
                                          tooltips=["Alt-click adds a negative point",
                                                    "Alt-click adds a positive point",
                                                    "Drag on the SAM panel; clicks add positive points"]),
            "undo": button("Undo", "Undo the last change of points or box", "undo"),
            "redo": button("Redo", "Redo", "repeat"),
            "reset": button("Automatic points", "Back to the points the text's map gives", "magic"),
            "clear": button("Clear", "Remove every point and the box", "times"),
            "candidates": widgets.ToggleButtons(options=[], description="Mask", style={"button_width": "auto",
                                                                                       "description_width": "initial"}),
            "opacity": widgets.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="Opacity",
                                           style=_WIDE, layout=widgets.Layout(width="240px")),
            "outline": widgets.Checkbox(value=outline_only, description="outline only", indent=False,
                                        layout=widgets.Layout(width="auto")),
            "threshold": widgets.FloatSlider(value=threshold, min=0.05, max=1.0, step=0.05, continuous_update=False,
                                             description="Point threshold", style=_WIDE,
                                             layout=widgets.Layout(width="280px")),
        }
        for name, control in c.items():  # stable CSS hooks for tests and custom styling
            control.add_class(f"csw-{name}")
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center", grid_gap="4px 12px")
        self._sam_html = widgets.HTML(layout=widgets.Layout(min_height="1.5em"))
        self._sam_html.add_class("csw-sam-status")
        self._progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="200px"))
        self._progress.add_class("csw-sam-progress")
        self._view_box = widgets.Box(layout=widgets.Layout(width="100%"))
        self._view_box.add_class("csw-plot")
        self.children = [
            widgets.HBox([c["text"], c["upload"]], layout=wrap),
            widgets.HBox([c["mode"], c["undo"], c["redo"], c["reset"], c["clear"]], layout=wrap),
            widgets.HBox([c["candidates"], c["opacity"], c["outline"], c["threshold"]], layout=wrap),
            self._status_html, widgets.HBox([self._progress, self._sam_html], layout=wrap),
            self._error_html, self._view_box,
        ]

    def _wire(self) -> None:
        c = self.controls
        c["text"].observe(self._guarded(lambda change: self._request_explanation(), "reading the text"), names="value")
        c["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")
        c["threshold"].observe(self._guarded(lambda change: self._on_threshold(), "placing the automatic points"),
                               names="value")
        c["mode"].observe(self._guarded(lambda change: self._on_mode(), "changing the mode"), names="value")
        c["candidates"].observe(self._guarded(self._on_candidate, "choosing a mask"), names="value")
        for name in ("opacity", "outline"):
            c[name].observe(self._guarded(lambda change: self._draw_mask(), "drawing the mask"), names="value")
        for name, action in (("undo", self.undo), ("redo", self.redo), ("reset", self.reset), ("clear", self.clear)):
            c[name].on_click(lambda button, action=action: action())

    def _on_mode(self) -> None:
        self._fig.layout.dragmode = "select" if self.mode == "box" else False

    def _on_candidate(self, change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        self._mask_index = int(change["new"])
        self._draw_sam()

    # --- the image and its SAM embedding -----------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work."""
        with self._lock:
            self._rgb = rgb
            self._image_version += 1
            self._explanation, self._scores = None, None
            self._auto = (np.zeros((0, 2), np.int64), np.zeros(0, np.uint8))
            self._auto_pending = False
            self._sam_ready, self._sam_key = False, None
            self._clear_error()
            self._draw_image()
            self._draw_heat()
            self._draw_sam()
        self._request_embedding()
        self._request_explanation()

    def _request_embedding(self) -> None:
        rgb, version = self._rgb, self._image_version

        def job(generation: int) -> None:
            def progress(fraction: float, message: str) -> None:
                if not self._embedder.is_current(generation):
                    raise _Superseded  # stops the image encoder at its next block
                self._show_progress(fraction, message)

            start = time.perf_counter()
            try:
                done = self.refiner.set_image(rgb, progress=progress)
            except _Superseded:
                return
            except Exception as exc:  # noqa: BLE001 - shown in the widget, which keeps working
                with self._lock:
                    if self._embedder.is_current(generation):
                        self._show_error(exc, "computing the SAM image embedding")
                        self._set_sam_status("SAM: the image embedding failed (see the error above).")
                return
            elapsed = time.perf_counter() - start
            with self._lock:
                if not done or not self._embedder.is_current(generation) or version != self._image_version:
                    return
                self._sam_key, self._sam_ready = self.refiner.image_key, True
                self._progress.value = 1.0
                self._set_sam_status(f"SAM ready: image embedding in {elapsed:.1f} s. Click the right panel to "
                                     f"add points.")
                self._apply_auto_points()
                self._draw_sam()

        with self._lock:
            self._progress.value = 0.0
            self._set_sam_status("SAM: computing the image embedding…", busy=True)
        self._embedder.submit(job)

    def _show_progress(self, fraction: float, message: str) -> None:
        self._progress.value = float(fraction)
        self._set_sam_status(f"SAM: {message} ({fraction:.0%}). Type a text or move sliders meanwhile; clicks "
                             f"work once it is ready.", busy=fraction < 1.0)

    def _set_sam_status(self, text: str, busy: bool = False) -> None:
        self._sam_status_text = text
        self._sam_html.value = f'<div style="color:#555;font-size:0.9em">{html.escape(text)}</div>'
        self._progress.layout.display = None if busy else "none"

    def _current(self) -> bool:
        """True when the refiner holds this widget's current image."""
        return self._sam_ready and self.refiner.image_key == self._sam_key

    # --- the text's map and its automatic points ---------------------------------------------

    def _request_explanation(self) -> None:
        if self._rgb is None:
            return
        text, rgb, size, version = self.text, self._rgb, self.size, self._image_version
        if not text:
            with self._lock:
                self._explanation, self._scores = None, None
                self._auto = (np.zeros((0, 2), np.int64), np.zeros(0, np.uint8))
                self._draw_heat()
                self._set_status("No text: click the image to give SAM points yourself.")
            return

        def work():
            parts = parse_target(text)
            explanation = self.explainer.explain(rgb, [text], method="surgery", size=size)
            scores = (self.explainer.target_part_scores(rgb, text, size=size) if len(parts) > 1
                      else explanation.surgery.patch_scores[:, 0])
            return version, explanation, np.asarray(scores)

        self._submit(work=work, apply=self._apply_explanation, busy_text=f"Explaining “{text}” at {size} px…",
                     doing="explaining the text",
                     done_text=lambda r, s: (f"“{text}”: {len(self._auto[0])} automatic points at threshold "
                                             f"{self.threshold:.2f} · {s:.2f} s"))

    def _apply_explanation(self, result) -> None:
        version, explanation, scores = result
        if version != self._image_version:
            return
        self._explanation, self._scores = explanation, scores
        self._place_auto_points()

    def _on_threshold(self) -> None:
        with self._lock:
            if self._explanation is not None:
                self._place_auto_points()

    def _place_auto_points(self) -> None:
        """Automatic points of the map at the current threshold (SPEC 6); they become SAM's prompts."""
        e = self._explanation
        if self._scores.ndim == 2:
            points, labels = combine_targets(self._scores, e.grid, e.image_size, self.threshold)
        else:
            points, labels = map_to_points(self._scores, e.grid, e.image_size, self.threshold)
        self._auto = (points, labels)
        self._auto_pending = True
        self._draw_heat()
        if self._sam_ready:
            self._apply_auto_points()
            self._draw_sam()

    def _apply_auto_points(self) -> None:
        if not self._auto_pending or not self._current():
            return
        self._auto_pending = False
        points, labels = self._auto
        self._mask_index = None
        if len(points):
            self.refiner.reset_to(points, labels)
        else:
            self.refiner.clear()
            self._set_status("The map gave no automatic points (it is flat): click the image to add points.")

    # --- editing -----------------------------------------------------------------------------

    def _radius(self) -> float:
        if self._remove_radius is not None:
            return float(self._remove_radius)
        return max(3.0, 0.015 * max(self._rgb.shape[:2]))

    def _require_sam(self, doing: str) -> bool:
        if self._rgb is None:
            raise ImageInputError("No image yet: upload one (or set widget.image) first.")
        if not self._sam_ready:
            self._set_status(f"SAM is still computing the image embedding ({self._progress.value:.0%}); "
                             f"{doing} once it is ready.")
            return False
        if self.refiner.image_key != self._sam_key:
            raise ClipSurgeryError("The refiner was given another image outside this widget; set widget.image "
                                   "again to continue here.")
        return True

    def _on_click(self, x: float, y: float, modifier: bool = False) -> None:
        start = time.perf_counter()
        with self._lock:
            if not self._require_sam("clicks work"):
                return
            height, width = self._rgb.shape[:2]
            if not (-0.5 <= x < width - 0.5 + 1e-9 and -0.5 <= y < height - 0.5 + 1e-9):
                raise ValueError(f"Point ({x:g}, {y:g}) lies outside the {width}x{height} image.")
            xi, yi = min(max(int(round(x)), 0), width - 1), min(max(int(round(y)), 0), height - 1)
            near = self.refiner.point_near(xi, yi, self._radius())
            if near is not None:
                action = "removed the point at ({}, {})".format(*self.refiner.points[near])
                self.refiner.remove_point(near)
            else:
                positive = (self.mode != "negative") != bool(modifier)
                action = f"added a {'positive' if positive else 'negative'} point at ({xi}, {yi})"
                self.refiner.add_point(xi, yi, positive)
            self._after_edit(action, start)

    def _on_box(self, selector: Any) -> None:
        xrange, yrange = getattr(selector, "xrange", None), getattr(selector, "yrange", None)
        self._clear_selection_outline()
        if xrange is None or yrange is None:
            return  # a box drawn on the heat panel
        start = time.perf_counter()
        with self._lock:
            if not self._require_sam("boxes work"):
                return
            self.refiner.set_box(_ordered_box(xrange[0], yrange[0], xrange[1], yrange[1]))
            self._after_edit("set the box", start)

    def _clear_selection_outline(self) -> None:
        """Remove the dotted outline plotly leaves after a box drag (our own box shape shows the box).

        The browser keeps that outline in its layout.selections without telling Python, where the
        list stays empty; setting it to empty would change nothing, so a placeholder goes first.
        """
        fig = self._fig
        fig.layout.selections = [dict(type="rect", xref="x", yref="y", x0=0, x1=0, y0=0, y1=0, opacity=0)]
        fig.layout.selections = ()

    def _edit(self, change, doing: str) -> Any:
        """Run a refiner edit from a button or the Python API, then redraw; errors go to the error area."""
        start = time.perf_counter()
        try:
            with self._lock:
                if not self._require_sam(f"{doing} works"):
                    return None
                outcome = change()
                self._after_edit(doing, start)
                return outcome
        except Exception as exc:  # noqa: BLE001 - shown in the widget
            self._show_error(exc, doing)
            return None

    def _after_edit(self, action: str, start: float) -> None:
        predicted = time.perf_counter()
        self._mask_index = None
        self._clear_error()
        self._draw_sam()
        done = time.perf_counter()
        self.last_click = {"action": action, "predict_ms": (predicted - start) * 1000,
                           "update_ms": (done - start) * 1000}
        labels = self.refiner.point_labels
        result = self.refiner.result
        summary = (f"{len(labels)} points ({int(labels.sum())} positive, {int((labels == 0).sum())} negative)"
                   + (", a box" if self.refiner.box is not None else ""))
        index = self.mask_index
        score = "no mask" if result is None else f"mask {index + 1} score {result.scores[index]:.3f}"
        self._set_status(f"{action[0].upper()}{action[1:]}: {summary} · {score} · SAM "
                         f"{self.last_click['predict_ms']:.0f} ms, update {self.last_click['update_ms']:.0f} ms")

    # --- drawing -----------------------------------------------------------------------------

    def _build_figure(self) -> go.FigureWidget:
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
            markers(figures_sam.POSITIVE_COLOR).update(name="auto positive"),
            markers(figures_sam.NEGATIVE_COLOR).update(name="auto negative"),
        ]
        image = dict(source=None, xanchor="left", yanchor="top", sizing="stretch", visible=False)
        images = [dict(image, xref="x", yref="y", layer="below", name="image"),
                  dict(image, xref="x", yref="y", layer="above", name="mask"),
                  dict(image, xref="x2", yref="y2", layer="below", name="heat image")]
        axis = dict(visible=False, showgrid=False, zeroline=False, constrain="domain", fixedrange=True)
        titles = [dict(text="", x=x, y=1.0, xref="paper", yref="paper", showarrow=False, yanchor="bottom",
                       font=dict(size=13)) for x in (0.755, 0.245)]
        fig = go.FigureWidget(data=traces, layout=dict(
            width=self.figure_width, height=440, margin=dict(l=8, r=8, t=30, b=8), dragmode=False,
            plot_bgcolor="white", showlegend=False, hovermode="closest", annotations=titles, images=images,
            xaxis=dict(axis, domain=[0.51, 1.0]), yaxis=dict(axis, scaleanchor="x", autorange="reversed"),
            xaxis2=dict(axis, domain=[0.0, 0.49]), yaxis2=dict(axis, scaleanchor="x2", autorange="reversed",
                                                              anchor="x2")))
        click = self._guarded(self._on_click, "adding a point")
        for index in (T_CATCH, H_HEAT):
            fig.data[index].on_click(lambda trace, points, state: points.point_inds and click(
                float(points.xs[0]), float(points.ys[0]), _modifier(state)))
        fig.data[T_SELECT].on_selection(self._guarded(lambda trace, points, selector: self._on_box(selector),
                                                      "setting the box"))
        return fig

    def _draw_image(self) -> None:
        rgb, fig = self._rgb, self._fig
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
            panel = 0.49 * (self.figure_width - 16)
            fig.layout.height = int(min(720, max(260, panel * height / width + 38)))
        self._drawn_mask = None

    def _draw_heat(self) -> None:
        e, fig = self._explanation, self._fig
        points, labels = self._auto
        with fig.batch_update():
            if e is None:
                fig.data[H_HEAT].update(z=None)
            else:
                step = display_step(e.image_size, self.heat_side)
                fig.data[H_HEAT].update(z=np.round(subsample(e.maps[0], step).astype(np.float64), 3),
                                        x0=step // 2, dx=step, y0=step // 2, dy=step)
            for trace, value in ((H_POS, 1), (H_NEG, 0)):
                chosen = points[labels == value]
                fig.data[trace].update(x=chosen[:, 0].tolist(), y=chosen[:, 1].tolist())
            title = (f"CLIP Surgery: {e.labels[0]}" if e is not None
                     else "CLIP Surgery: …" if self.text else "CLIP Surgery: type a text")
            fig.layout.annotations[1].text = html.escape(title)

    def _draw_sam(self) -> None:
        """SAM's points, box and mask, and the controls that depend on them."""
        fig, current, result = self._fig, self._current(), self.result
        with fig.batch_update():
            self._draw_mask()
            # A title that does not change with each click: the chosen mask and its score show in
            # the Mask buttons.
            title = ("SAM: computing the image embedding…" if self._rgb is not None and not self._sam_ready
                     else "SAM: click to add or remove points")
            if fig.layout.annotations[0].text != title:
                fig.layout.annotations[0].text = title
        self._sync_candidates(result)
        c = self.controls
        c["undo"].disabled = not (current and self.refiner.can_undo)
        c["redo"].disabled = not (current and self.refiner.can_redo)

    def _draw_mask(self) -> None:
        """The selected candidate as a transparent PNG over the image (or its outline), with the prompts.

        The filled view draws no outline: tracing it costs more than SAM's own prediction when a
        mask is ragged, and a click should feel instant.
        """
        fig, result = self._fig, self.result
        mask_image = fig.layout.images[IMG_MASK]
        outline = None
        with fig.batch_update():
            if result is None or self._rgb is None:
                mask_image.visible = False
                self._drawn_mask = None
            else:
                key = (id(result), self.mask_index)
                if self._drawn_mask is None or self._drawn_mask[0] != key:
                    shown, scale = self._display_mask(result.masks[self.mask_index])
                    self._drawn_mask = [key, shown, scale, _png_uri(shown, self.mask_color), None]
                _, shown, scale, uri, outline = self._drawn_mask
                if self.outline_only and outline is None:
                    outline = self._drawn_mask[4] = _outline_path(shown, scale)
                height, width = self._rgb.shape[:2]
                mask_image.update(source=uri, x=-0.5, y=-0.5, sizex=width, sizey=height, opacity=self.opacity,
                                  visible=not self.outline_only)
            fig.layout.shapes = self._prompt_shapes(outline if self.outline_only else None)

    def _prompt_shapes(self, outline: str | None) -> list[dict]:
        """Layout shapes of SAM's points (orange / blue circles), its box and the mask's outline."""
        shapes = []
        if outline:
            shapes.append(dict(type="path", path=outline, xref="x", yref="y", layer="above", name="outline",
                               line=dict(color=self.mask_color, width=2.5)))
        box = self.box
        if box is not None:
            shapes.append(dict(type="rect", x0=float(box[0]), y0=float(box[1]), x1=float(box[2]), y1=float(box[3]),
                               xref="x", yref="y", layer="above", name="box",
                               line=dict(color=figures_sam.BOX_COLOR, width=2.5)))
        r = MARKER_RADIUS
        for (x, y), label in zip(self.points.tolist(), self.point_labels.tolist()):
            shapes.append(dict(type="circle", xref="x", yref="y", xsizemode="pixel", ysizemode="pixel",
                               xanchor=x, yanchor=y, x0=-r, x1=r, y0=-r, y1=r, layer="above",
                               name="positive point" if label else "negative point",
                               fillcolor=figures_sam.POSITIVE_COLOR if label else figures_sam.NEGATIVE_COLOR,
                               line=dict(color="white", width=2)))
        return shapes

    def _display_mask(self, mask: np.ndarray) -> tuple[np.ndarray, float]:
        """The mask at the size the image is sent at: (bool [h, w], image pixels per sent pixel)."""
        height, width = mask.shape
        shrink = max(1.0, max(height, width) / self.image_side)
        size = (max(1, round(width / shrink)), max(1, round(height / shrink)))
        if size == (width, height):
            return mask, 1.0
        small = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize(size, Image.NEAREST)
        return np.asarray(small) > 127, width / size[0]

    def _sync_candidates(self, result) -> None:
        control = self.controls["candidates"]
        options = [] if result is None else [(f"{i + 1} · {s:.3f}" + (" ★" if i == result.best else ""), i)
                                             for i, s in enumerate(result.scores)]
        self._syncing = True
        try:
            if list(control.options) != options:
                control.options = options
            control.value = self.mask_index if options else None
        finally:
            self._syncing = False
        control.layout.visibility = "visible" if options else "hidden"

    # --- static figure -----------------------------------------------------------------------

    def _render_figure(self):
        if self._rgb is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image first.")
        heat, auto = self.heat, self._auto if self.heat is not None else (None, None)
        result, index = self.result, self.mask_index
        title = "SAM" if result is None else f"SAM: mask {index + 1} (score {result.scores[index]:.3f})"
        heat_title = None if heat is None else f"CLIP Surgery: {self._explanation.labels[0]}"
        return figures_sam.sam_figure(
            self._rgb, self.points, self.point_labels, self.mask, box=self.box, heat=heat, auto_points=auto[0],
            auto_labels=auto[1], title=title, heat_title=heat_title, mask_color=self.mask_color,
            opacity=self.opacity, outline_only=self.outline_only)

    def _static_png(self) -> bytes | None:
        # Unlike figure(), do not wait for the SAM embedding (vit_b: ~18 s on a CPU): the cell that
        # displays the widget would block that long. The PNG shows what is ready.
        try:
            self._runner.wait(self.display_timeout)
            with self._lock:
                return figure_bytes(self._render_figure(), "png", dpi=self.static_dpi)
        except Exception:  # noqa: BLE001 - no static copy is better than a broken display
            return None


def _png_uri(mask: np.ndarray, color: str) -> str:
    """A two-colour palette PNG (transparent, ``color``) as a data URI: small and fast to encode."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, *(round(c * 255) for c in to_rgb(color))])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0, compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _outline_path(mask: np.ndarray, scale: float) -> str:
    """SVG path of a display-size mask's outline, in image pixels (for a plotly path shape)."""
    parts = []
    for line in region_outline(mask.astype(np.float32), 0.5):
        points = np.round((line + 0.5) * scale - 0.5, 1)
        parts.append("M" + "L".join(f"{x:g},{y:g}" for x, y in points) + "Z")
    return "".join(parts)


def _modifier(state: Any) -> bool:
    """Alt (Option on a Mac) held during a click. plotly turns Shift-drags into pans and swallows
    Shift-clicks when no drag mode is set, but passes Shift on when one reaches us, so both count."""
    return bool(state is not None and (state.alt or state.shift))


def _ordered_box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _check(value: Any, allowed, what: str) -> Any:
    if value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(map(str, allowed))}.")
    return value
