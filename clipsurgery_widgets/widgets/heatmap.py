"""HeatmapExplorer: text-to-image heat maps of CLIP Surgery and the other dense methods for labels you type.

The controller: the "explain" and "segment" background jobs, clicks, the static figure. The
settings and their checks live in :mod:`.heatmap_state`; what each view shows in
:mod:`.heatmap_plan`; how it is drawn in :mod:`.heatmap_view`; the controls in :mod:`.heatmap_controls`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import figures
from ..data.presets import PRESETS
from ..engine.errors import ClipSurgeryError
from ..engine.regions import patch_at
from ..engine.segmentation.label_segmentation import segment_labels
from ..figures.methods import methods_grid
from ..figures.segmentation import class_map_figure
from ..figures.style import method_name
from .base import ExplorerWidget
from .heatmap_controls import build_controls, control_rows, format_size, link_controls
from .heatmap_plan import (COMPARED_METHODS, DEFAULT_COMPARED, DEFAULT_COMPARED_RESNET, Plan, Style, methods_needed,
                           panel_plan)
from .heatmap_state import HeatmapSettings
from .heatmap_view import HeatmapView, has_maps, method_maps


class HeatmapExplorer(ExplorerWidget, HeatmapSettings):
    """Explore which image regions a CLIP model ties to each label, with any dense method.

    Args:
        explainer: an ``engine.Explainer``.
        image: path, array, PIL image or bytes (anything ``load_image`` accepts); or upload one.
        labels, view, label, method, compared, feature_surgery, redundancy, size, depth, cmap,
            opacity, threshold, heat_side, prob_thd, area_thd, pamr_steps, logit_scale: the initial
            values of the settings (see :class:`~.heatmap_state.HeatmapSettings`; depth defaults to
            min(6, number of blocks), compared to raw, CLIP Surgery, SCLIP and NACLIP on a ViT).

    Every setting is a trait, tied to its control: set it from Python or in the widget. A value
    the widget cannot take raises :class:`~.state.InvalidStateError` and changes nothing. The
    current result is ``explanation`` (and ``segmentation`` in the segmentation view);
    ``describe()`` says what is shown; ``figure()`` gives a static matplotlib figure.
    """

    def __init__(self, explainer: Any, image: Any = None, labels: Sequence[str] | str = ("cat", "dog", "grass", "sky"),
                 *, view: str = "overlay", label: str | None = None, method: str = "clip_surgery",
                 compared: Sequence[str] | None = None, feature_surgery: bool | None = None,
                 redundancy: str = "auto", size: int | tuple[int, int] = 224, depth: int | None = None,
                 cmap: str = "jet", opacity: float = 0.6, threshold: float | None = None, heat_side: int = 200,
                 prob_thd: float = 0.0, area_thd: float | None = None, pamr_steps: int = 0,
                 logit_scale: float = 40.0):
        super().__init__()
        self.explainer = explainer
        self._max_depth = explainer.model.num_blocks
        self._rgb: np.ndarray | None = None
        self._image_version = 0
        self._explanation = None
        self._explanation_version = 0
        self._segmentation: tuple[tuple, Any] | None = None  # (its settings key, LabelSegmentation)
        self._segmentation_asked: tuple | None = None  # the key of the newest segment job
        self._selected: dict | None = None
        self.labels = labels
        self.label = label if label is not None else self.labels[0]
        self.method = method
        vit = explainer.model.family == "vit"
        self.compared = compared if compared is not None else DEFAULT_COMPARED if vit else DEFAULT_COMPARED_RESNET
        self.view, self.feature_surgery, self.redundancy, self.size = view, feature_surgery, redundancy, size
        self.cmap, self.opacity, self.threshold, self.heat_side = cmap, opacity, threshold, heat_side
        self.prob_thd, self.area_thd, self.pamr_steps, self.logit_scale = prob_thd, area_thd, pamr_steps, logit_scale
        self.depth = depth if depth is not None else min(6, self._max_depth or 6)
        self.plots = HeatmapView(on_click=self._guarded(self._select, "reading the clicked point"))
        self.controls = build_controls(explainer.model.patch_size, self._max_depth, self.method_options())
        link_controls(self, self.controls)
        self.children = [*control_rows(self.controls), self._status_html, self._error_html,
                         self.plots.plot_box, self.plots.bar_box]
        self._wire()
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")
            self._render()

    # --- Python API --------------------------------------------------------------------------

    @property
    def explanation(self):
        """The Explanation on screen (None before the first one arrives)."""
        return self._explanation

    @property
    def selected(self) -> dict | None:
        """The last clicked point: x, y, panel, row, col, method and per-label ``scores``, or None."""
        return self._selected

    @property
    def segmentation(self):
        """The LabelSegmentation of the current image shown by the segmentation view, or None."""
        seg = self._segmentation
        return seg[1] if seg is not None and seg[0][0] == self._image_version else None

    def scores_at(self, x: float, y: float, method: str | None = None) -> dict[str, float]:
        """Every label's patch score at pixel (x, y) of the image (the patch under that pixel), for
        ``method`` (default the chosen method; it must be in the current explanation)."""
        self.wait(self.display_timeout)
        info = self._patch_info(x, y, method or self.method)
        return dict(zip(self._explanation.labels, info["scores"]))

    def click(self, x: float, y: float, panel: int = 0) -> dict[str, float]:
        """Do what a click at pixel (x, y) of ``panel`` does: show every label's score there."""
        self.wait(self.display_timeout)
        self._select(panel, x, y)
        return dict(zip(self._explanation.labels, self._selected["scores"]))

    def describe(self) -> dict:
        """What the widget shows, as plain values (see :meth:`HeatmapView.describe`)."""
        with self._lock:
            return self.plots.describe()

    @property
    def current_figure(self):
        """The plotly FigureWidget of the image panels."""
        return self.plots.figure

    @property
    def bar_chart(self):
        """The per-label bar chart FigureWidget (there from the start; empty until a point is clicked)."""
        return self.plots.bar_chart

    # --- reacting to the settings ------------------------------------------------------------

    def _wire(self) -> None:
        self.observe(self._guarded(self._on_labels, "reading the labels"), names="labels")
        self.observe(self._guarded(lambda change: self._request(), "reading the settings"),
                     names=["redundancy", "depth", "size", "feature_surgery"])
        self.observe(self._guarded(lambda change: self._refresh(), "reading the settings"),
                     names=["view", "method", "compared", "depth", "size", "prob_thd", "area_thd", "pamr_steps",
                            "logit_scale"])
        self.observe(self._guarded(lambda change: self._render(), "drawing the view"),
                     names=["label", "cmap", "opacity", "threshold", "heat_side"])
        self.controls["preset"].observe(self._guarded(self._on_preset, "choosing a preset"), names="value")
        self.controls["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")

    def _on_labels(self, change: dict) -> None:
        keep = self.label if self.label in change["new"] else change["new"][0]
        self.controls["label"].options = list(change["new"])  # may pick the first label for a while
        self.label = keep
        self._request()
        self._request_segmentation()

    def _on_preset(self, change: dict) -> None:
        if change["new"]:
            self.labels = list(PRESETS[change["new"]])

    def _refresh(self) -> None:
        """After a change of what is shown: ask for what is missing, draw what is there."""
        if not self._has_needed_maps():
            self._request()
        self._request_segmentation()
        self._render()

    def _has_needed_maps(self) -> bool:
        """Whether the explanation is of the chosen method and holds every map the view shows."""
        e = self._explanation
        return e is not None and e.method == self.method and \
            all(has_maps(e, m) for m in methods_needed(self.view, self.method, self.compared))

    # --- the "explain" and "segment" jobs ----------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work."""
        with self._lock:
            self._rgb = rgb
            self._image_version += 1
            self._explanation = None
            self._segmentation_asked = None
            self._selected = None
            self.plots.hide_scores()  # its patch belonged to the previous image
            self._render()
            self._request()  # inside the lock: a result for the old image can no longer land in between
            self._request_segmentation()

    def _request(self) -> None:
        if self._rgb is None:
            return
        rgb, labels, size, depth, redundancy = self._rgb, list(self.labels), self.size, self.depth, self.redundancy
        names, feature_surgery = methods_needed(self.view, self.method, self.compared), self.feature_surgery
        what = "Encoding the image and explaining" if self._explanation is None else "Explaining"
        shown = ", ".join(method_name(m) for m in names)
        self.submit(
            "explain",
            lambda job: self.explainer.explain(rgb, labels, method=names[0], methods=names[1:] or None,
                                               redundancy=redundancy, size=size, depth=depth,
                                               feature_surgery=feature_surgery),
            self._apply,
            busy_text=f"{what} {len(labels)} label{'s' * (len(labels) != 1)} at {format_size(size)} px ({shown})…",
            doing="explaining the image",
            done_text=lambda e, s: (f"{len(e.labels)} labels, grid {e.grid[0]}x{e.grid[1]}, {method_name(e.method)}, "
                                    f"redundancy '{e.redundancy}' · {s:.2f} s"))

    def _apply(self, explanation) -> None:
        self._explanation = explanation
        self._explanation_version += 1
        self._render()
        if self._selected is not None:  # the same point, with the new scores (on a panel still shown)
            panel = min(self._selected["panel"], len(self._plan().panels) - 1)
            if has_maps(explanation, self._plan().panels[panel].method):
                self._select(panel, self._selected["x"], self._selected["y"])
        if not self._has_needed_maps():  # the view changed while this was computed
            self._request()

    def _segmentation_key(self) -> tuple:
        return (self._image_version, tuple(self.labels), self.method, self.size,
                self.depth if self.method == "clip_surgery" else None, self.prob_thd, self.area_thd,
                self.pamr_steps, self.logit_scale)

    def _request_segmentation(self) -> None:
        """Segment the image with the chosen method and settings, when the segmentation view needs it."""
        if self._rgb is None or self.view != "segmentation":
            return
        key = self._segmentation_key()
        if key == self._segmentation_asked or (self._segmentation is not None and self._segmentation[0] == key):
            return
        self._segmentation_asked = key
        rgb, labels, method = self._rgb, list(self.labels), self.method
        settings = dict(size=self.size, depth=self.depth, prob_thd=self.prob_thd, area_thd=self.area_thd,
                        pamr_steps=self.pamr_steps, logit_scale=self.logit_scale)

        def work(job) -> tuple[tuple, Any]:
            try:
                return key, segment_labels(self.explainer, rgb, labels, method, **settings)
            except Exception:
                self._segmentation_asked = None  # the same settings may be asked again
                raise

        self.submit("segment", work, self._apply_segmentation,
                    busy_text=f"Segmenting into {len(labels)} labels with {method_name(method)}…",
                    doing="segmenting the image",
                    done_text=lambda r, s: (f"{method_name(r[1].method)} segmentation into {len(r[1].classes)} "
                                            f"labels · {s:.2f} s"))

    def _apply_segmentation(self, result: tuple[tuple, Any]) -> None:
        self._segmentation = result
        self._render()

    # --- drawing -----------------------------------------------------------------------------

    def _plan(self) -> Plan:
        return panel_plan(self.view, self._explanation.labels if self._explanation else (), self.label,
                          self.method, self.compared)

    def _render(self) -> None:
        with self._lock:
            marker, seg = self._selected, self.segmentation
            self.plots.show(self._plan(), Style(self.cmap, self.opacity, self.threshold, self.heat_side),
                            self._rgb, self._image_version, self._explanation, self._explanation_version,
                            marker=None if marker is None else (marker["x"], marker["y"], marker["panel"]),
                            segmentation=None if seg is None else (self._segmentation[0], seg))

    # --- clicks ------------------------------------------------------------------------------

    def _patch_info(self, x: float, y: float, method: str) -> dict:
        e = self._explanation
        if e is None:
            raise ClipSurgeryError("No maps yet: set an image and labels first.")
        row, col = patch_at(e.image_size, e.grid, x, y)
        maps = method_maps(e, method)
        return dict(x=x, y=y, row=row, col=col, method=method, scores=maps.patch_scores[row * e.grid[1] + col].tolist(),
                    normalised=maps.values_at(int(round(y)), int(round(x))).tolist())

    def _select(self, panel: int, x: float, y: float) -> None:
        """The clicked point (x, y) of ``panel``: marker there, every label's score at its patch."""
        with self._lock:
            plan = self._plan()
            if not 0 <= panel < len(plan.panels):
                raise ClipSurgeryError(f"Panel {panel} is not shown; the {self.view} view has "
                                       f"{len(plan.panels)} panel(s).")
            info = self._patch_info(x, y, plan.panels[panel].method)
            info["panel"] = panel
            self._selected = info
            self.plots.show_marker(x, y, panel)
            self.plots.show_scores(
                self._explanation.labels, info["scores"], info["normalised"], highlight=plan.panels[panel].label
                or self.label, title=(f"{method_name(info['method'])} score of every label at patch (row "
                                      f"{info['row']}, col {info['col']}) · pixel ({info['x']:.0f}, {info['y']:.0f})"))

    # --- static figure -----------------------------------------------------------------------

    def _render_figure(self):
        e, rgb = self._explanation, self._rgb
        if e is None or rgb is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image and labels, and wait for the maps.")
        label = self.label if self.label in e.labels else e.labels[0]
        if self.view == "grid":
            return figures.label_grid(rgb, e, self.method, None, self.cmap, self.opacity, self.threshold)
        if self.view == "compare":
            return figures.explanation_grid(rgb, e, COMPARED_METHODS, [label], self.cmap, self.opacity,
                                            self.threshold)
        if self.view == "methods":
            return methods_grid(rgb, e, list(self.compared), None, self.cmap, self.opacity)
        if self.view == "segmentation":
            seg = self.segmentation
            if seg is None:
                raise ClipSurgeryError("No segmentation yet: wait for it (the status line says when it is done).")
            return class_map_figure(rgb, seg.labels, seg.classes, self.opacity,
                                    title=f"{method_name(seg.method)} segmentation")
        return figures.overlay_figure(rgb, e, label, self.method, self.cmap, self.opacity, self.threshold)
