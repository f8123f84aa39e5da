"""HeatmapExplorer: text-to-image heat maps of CLIP Surgery (and raw CLIP) for labels you type.

The controller: public state as traits, the "explain" background job, clicks. What is drawn and
how lives in :mod:`.heatmap_view`; the controls and their links in :mod:`.heatmap_controls`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import traitlets
from matplotlib import colormaps

from .. import figures
from ..data.presets import PRESETS
from ..engine.errors import ClipSurgeryError, TextInputError
from ..engine.explainer import REDUNDANCY_MODES
from ..engine.images import check_input_size
from ..engine.regions import patch_at
from ..engine.text.labels import parse_labels, parse_target
from .base import ExplorerWidget
from .heatmap_controls import build_controls, control_rows, format_size, link_controls
from .heatmap_view import (
    COMPARED_METHODS,
    VIEWS,
    HeatmapView,
    Plan,
    Style,
    method_maps,
    method_title,
    panel_plan,
)
from .state import (
    Choice,
    Integer,
    InvalidStateError,
    Number,
    OptionalNumber,
    Text,
    invalid,
)


class HeatmapExplorer(ExplorerWidget):
    """Explore which image regions a CLIP model ties to each label.

    Args:
        explainer: an ``engine.Explainer``.
        image: path, array, PIL image or bytes (anything ``load_image`` accepts); or upload one.
        labels, view, label, redundancy, size, depth, cmap, opacity, threshold, heat_side: the
            initial values of the settings below (depth defaults to min(6, number of blocks)).

    Every setting is a trait, tied to its control: set it from Python or in the widget. A value
    the widget cannot take raises :class:`~.state.InvalidStateError` and changes nothing. The
    current result is ``explanation``; ``describe()`` says what is shown; ``figure()`` gives a
    static matplotlib figure.
    """

    labels = traitlets.Any(help="The labels: a list, or one comma-separated string (read back as a list); "
                                "'a+b' combines targets.")
    label = Text("", help="The label of the one-label and raw-vs-surgery views; one of the labels.")
    view = Choice(tuple(VIEWS), help='"overlay" (one label), "grid" (every label), "compare" (raw CLIP vs '
                                     'CLIP Surgery) or "segmentation" (argmax label per pixel).')
    redundancy = Choice(REDUNDANCY_MODES, help='Feature-surgery mode: "auto", "labels", "empty" or "none".')
    size = traitlets.Any(224, help="Model input size: an int S or (H, W), multiples of the patch size.")
    depth = Integer(6, help="Surgery depth: how many final blocks get the v-v path (ViT), 1..number of blocks.")
    cmap = Text("jet", help="Colour map of the heat maps: a matplotlib name.")
    opacity = Number(0.6, low=0.0, high=1.0, help="Weight of the heat map over the image.")
    threshold = OptionalNumber(None, low=0.0, high=1.0, help="Outline where the map >= threshold, in (0, 1]; "
                                                             "None: no outline.")
    heat_side = Integer(200, low=16, help="The segmentation view is sent at about this many pixels on its long "
                                          "side (heat maps travel as their patch grid).")

    def __init__(self, explainer: Any, image: Any = None, labels: Sequence[str] | str = ("cat", "dog", "grass", "sky"),
                 *, view: str = "overlay", label: str | None = None, redundancy: str = "auto",
                 size: int | tuple[int, int] = 224, depth: int | None = None, cmap: str = "jet",
                 opacity: float = 0.6, threshold: float | None = None, heat_side: int = 200):
        super().__init__()
        self.explainer = explainer
        self._max_depth = explainer.model.num_blocks
        self._rgb: np.ndarray | None = None
        self._image_version = 0
        self._explanation = None
        self._explanation_version = 0
        self._selected: dict | None = None
        self.labels = labels
        self.label = label if label is not None else self.labels[0]
        self.view, self.redundancy, self.size, self.cmap = view, redundancy, size, cmap
        self.opacity, self.threshold, self.heat_side = opacity, threshold, heat_side
        self.depth = depth if depth is not None else min(6, self._max_depth or 6)
        self.plots = HeatmapView(on_click=self._guarded(self._select, "reading the clicked point"))
        self.controls = build_controls(explainer.model.patch_size, self._max_depth)
        link_controls(self, self.controls)
        self.children = [*control_rows(self.controls), self._status_html, self._error_html,
                         self.plots.plot_box, self.plots.bar_box]
        self._wire()
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")
            self._render()

    # --- validation: the one rule of state.py, for settings that depend on the model or labels ------

    @traitlets.validate("labels")
    def _valid_labels(self, proposal: dict) -> list[str]:
        try:
            labels = parse_labels(proposal["value"])
            for label in labels:
                parse_target(label)
        except TextInputError as exc:
            raise InvalidStateError(f"{type(self).__name__}.labels = {proposal['value']!r} is not valid: "
                                    f"{exc}") from None
        return labels

    @traitlets.validate("label")
    def _valid_label(self, proposal: dict) -> str:
        if proposal["value"] not in self.labels:
            raise invalid(self, "label", proposal["value"],
                          f"one of the labels ({', '.join(self.labels)}), or add it to the labels first")
        return proposal["value"]

    @traitlets.validate("size")
    def _valid_size(self, proposal: dict) -> int | tuple[int, int]:
        value = proposal["value"]
        try:
            height, width = check_input_size(value, self.explainer.model.patch_size)
        except ValueError as exc:
            raise InvalidStateError(f"{type(self).__name__}.size = {value!r} is not valid: {exc}") from None
        return height if isinstance(value, (int, np.integer)) else (height, width)

    @traitlets.validate("depth")
    def _valid_depth(self, proposal: dict) -> int:
        value, top = proposal["value"], self._max_depth
        if value < 1 or (top is not None and value > top):  # the range depends on the model
            raise invalid(self, "depth", value, "a whole number >= 1 (the ResNet ignores it)" if top is None
                          else f"a whole number from 1 to {top} (this model has {top} blocks)")
        return value

    @traitlets.validate("cmap")
    def _valid_cmap(self, proposal: dict) -> str:
        if proposal["value"] not in colormaps:
            raise invalid(self, "cmap", proposal["value"], "a matplotlib colour map name such as 'jet' or 'viridis'")
        return proposal["value"]

    @traitlets.validate("threshold")
    def _valid_threshold(self, proposal: dict) -> float | None:
        if proposal["value"] == 0:
            raise invalid(self, "threshold", proposal["value"], "a number in (0, 1], or None for no outline")
        return proposal["value"]

    # --- Python API --------------------------------------------------------------------------

    @property
    def explanation(self):
        """The Explanation on screen (None before the first one arrives)."""
        return self._explanation

    @property
    def selected(self) -> dict | None:
        """The last clicked point: x, y, panel, row, col, method and per-label ``scores``, or None."""
        return self._selected

    def scores_at(self, x: float, y: float, method: str = "surgery") -> dict[str, float]:
        """Every label's patch score at pixel (x, y) of the image (the patch under that pixel)."""
        self.wait(self.display_timeout)
        info = self._patch_info(x, y, method)
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
        """The per-label bar chart FigureWidget (None until a point is clicked)."""
        return self.plots.bar_chart

    # --- reacting to the settings ------------------------------------------------------------

    def _wire(self) -> None:
        self.observe(self._guarded(self._on_labels, "reading the labels"), names="labels")
        self.observe(self._guarded(lambda change: self._request(), "reading the settings"),
                     names=["redundancy", "depth", "size"])
        self.observe(self._guarded(lambda change: self._render(), "drawing the view"),
                     names=["view", "label", "cmap", "opacity", "threshold", "heat_side"])
        self.controls["preset"].observe(self._guarded(self._on_preset, "choosing a preset"), names="value")
        self.controls["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")

    def _on_labels(self, change: dict) -> None:
        keep = self.label if self.label in change["new"] else change["new"][0]
        self.controls["label"].options = list(change["new"])  # may pick the first label for a while
        self.label = keep
        self._request()

    def _on_preset(self, change: dict) -> None:
        if change["new"]:
            self.labels = list(PRESETS[change["new"]])

    # --- the "explain" job -------------------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its work."""
        with self._lock:
            self._rgb = rgb
            self._image_version += 1
            self._explanation = None
            self._selected = None
            self.plots.hide_scores()  # its patch belonged to the previous image
            self._render()
            self._request()  # inside the lock: a result for the old image can no longer land in between

    def _request(self) -> None:
        if self._rgb is None:
            return
        rgb, labels, size, depth, redundancy = self._rgb, list(self.labels), self.size, self.depth, self.redundancy
        what = "Encoding the image and explaining" if self._explanation is None else "Explaining"
        self.submit(
            "explain",
            lambda job: self.explainer.explain(rgb, labels, method="both", redundancy=redundancy, size=size,
                                               depth=depth),
            self._apply,
            busy_text=f"{what} {len(labels)} label{'s' * (len(labels) != 1)} at {format_size(size)} px…",
            doing="explaining the image",
            done_text=lambda e, s: (f"{len(e.labels)} labels, grid {e.grid[0]}x{e.grid[1]}, "
                                    f"redundancy '{e.redundancy}' · {s:.2f} s"))

    def _apply(self, explanation) -> None:
        self._explanation = explanation
        self._explanation_version += 1
        self._render()
        if self._selected is not None:  # the same point, with the new scores (on a panel still shown)
            panel = min(self._selected["panel"], len(self._plan().panels) - 1)
            self._select(panel, self._selected["x"], self._selected["y"])

    # --- drawing -----------------------------------------------------------------------------

    def _plan(self) -> Plan:
        return panel_plan(self.view, self._explanation.labels if self._explanation else (), self.label)

    def _render(self) -> None:
        with self._lock:
            marker = self._selected
            self.plots.show(self._plan(), Style(self.cmap, self.opacity, self.threshold, self.heat_side),
                            self._rgb, self._image_version, self._explanation, self._explanation_version,
                            marker=None if marker is None else (marker["x"], marker["y"], marker["panel"]))

    # --- clicks ------------------------------------------------------------------------------

    def _patch_info(self, x: float, y: float, method: str) -> dict:
        e = self._explanation
        if e is None:
            raise ClipSurgeryError("No maps yet: set an image and labels first.")
        row, col = patch_at(e.image_size, e.grid, x, y)
        maps = method_maps(e, method)
        return dict(x=x, y=y, row=row, col=col, method=method, scores=maps.patch_scores[row * e.grid[1] + col].tolist(),
                    normalised=maps.maps[:, int(round(y)), int(round(x))].tolist())

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
                self._explanation.labels, info["scores"], info["normalised"], highlight=self.label,
                title=(f"{method_title(info['method'])} score of every label at patch (row {info['row']}, "
                       f"col {info['col']}) · pixel ({info['x']:.0f}, {info['y']:.0f})"))

    # --- static figure -----------------------------------------------------------------------

    def _render_figure(self):
        e, rgb = self._explanation, self._rgb
        if e is None or rgb is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image and labels, and wait for the maps.")
        label = self.label if self.label in e.labels else e.labels[0]
        if self.view == "grid":
            return figures.label_grid(rgb, e, "surgery", None, self.cmap, self.opacity, self.threshold)
        if self.view == "compare":
            return figures.explanation_grid(rgb, e, COMPARED_METHODS, [label], self.cmap, self.opacity,
                                            self.threshold)
        if self.view == "segmentation":
            return figures.segmentation_figure(rgb, e, "surgery", self.opacity)
        return figures.overlay_figure(rgb, e, label, "surgery", self.cmap, self.opacity, self.threshold)
