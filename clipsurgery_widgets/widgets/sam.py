"""SamWidget: a text's CLIP Surgery map gives SAM its points; your clicks refine the mask.

Two panels (drawn by :class:`.sam_view.SamView`). Left: the CLIP Surgery map of the text with the
automatic points it gives (docs/algorithms.md#points-for-sam). Right: the image with SAM's prompts
and mask; clicking it adds or removes points. Two named background jobs: "embedding" (SAM's image
embedding, about 18 s for vit_b on a CPU, with its own progress line) and "explain" (the text's
map and CLIP's probability of the text among the comparison labels), so typing a text or moving a
slider keeps working meanwhile; a newer image abandons an older embedding. Nothing is computed in
the constructor: the widget shows at once and its jobs report in the status lines.

The automatic points follow the threshold (a level, or a quantile of the map's cells) and at most
``max_points``; a text CLIP finds absent (probability below ``absent_below``) gets a warning and no
automatic mask; ``instances`` gives one mask per region of the map (see :mod:`.sam_instances`). The
widget only routes events: points, masks, maps and probabilities come from the engine
(``SamRefiner``, ``Explainer``, ``engine.sam.prompts``, ``engine.sam.presence``).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import traitlets

from ..engine.errors import ClipSurgeryError
from ..engine.sam.presence import DEFAULT_ABSENT_BELOW, DEFAULT_COMPARISON, LabelPresence
from ..engine.sam.prompts import map_point_scores, points_from_map
from ..engine.sam.refiner import SamRefiner
from ..engine.text.labels import parse_target
from ..figures import sam as figures_sam
from .base import ExplorerWidget
from .sam_controls import EmbeddingLine, arrange, build_controls
from .sam_drawing import SamDrawing
from .sam_editing import NO_POINTS, SamPrompts
from .sam_instances import SamInstances
from .sam_presence import SamPresence
from .sam_view import IMG_MASK, SamView  # noqa: F401  (IMG_MASK: for the end-to-end test)
from .state import (Choice, Flag, InputSize, Integer, InvalidStateError, LabelList, Number, Text, link_control,
                    link_with)


class _Superseded(ClipSurgeryError):
    """A newer image replaced the one whose embedding was being computed."""


class SamWidget(SamDrawing, SamPresence, SamInstances, SamPrompts, ExplorerWidget):
    """Segment with SAM from a text: CLIP Surgery points first, then your clicks.

    Args:
        explainer: an ``engine.Explainer`` (gives the text's surgery map).
        refiner: an ``engine.sam.SamRefiner`` (e.g. ``load_sam_from_env()``).
        image: path, array, PIL image or bytes (anything ``load_image`` accepts); or upload one.
        text, threshold, threshold_mode, max_points, absent_below, compare_with, instances, opacity,
            outline_only, mode, size: the settings below.
        mask_color: colour of the mask.   figure_width: the width the plot's height is planned for (the
            plot itself fills its cell's width).   max_instances: at most this many regions get a mask.
        image_side: the image and mask are sent at about this many pixels on the long side.
        heat_side, click_side: the same for the heat map, and the grid clicks resolve on.
        remove_radius: a click this close (image pixels) to a point removes it; default 1.5 % of
            the long side, at least 3 pixels.

    From Python: ``points``, ``point_labels``, ``box``, ``mask`` (the shown candidate), ``masks``,
    ``scores``, ``auto_points``, ``explanation``, ``presence``, ``warning``, ``instance_masks`` and
    ``refiner`` at any time; ``save_instance``, ``save_instances``, ``click``,
    ``drag_box``, ``undo``, ``redo``, ``reset``, ``clear`` do what the controls do; ``view.describe()``
    says what is shown; ``figure()`` is the paper-style static figure.
    """

    text = Text("", help='What to segment ("" for none: click points yourself; "a+b" combines targets).')
    threshold = Number(0.8, low=0.0, high=1.0, help="Level of the automatic points (cells >= it after min-max), "
                                                    "or with threshold_mode 'quantile' a quantile of the cells.")
    threshold_mode = Choice(("value", "quantile"), help='"value": the threshold is a level of the min-max scaled '
                                                        'map; "quantile": a quantile of its cells (0.9: top tenth).')
    max_points = Integer(None, low=1, allow_none=True, help="At most this many positive points (and as many "
                                                            "negative); None: up to half the cells.")
    absent_below = Number(DEFAULT_ABSENT_BELOW, low=0.0, high=0.5,
                          help="A text whose CLIP probability among compare_with is below this is called absent: "
                               "a warning, and no automatic mask (0: no check).")
    compare_with = LabelList(DEFAULT_COMPARISON, help="The labels the text's CLIP probability is computed among.")
    instances = Flag(False, help="One mask per region of the map (several objects) instead of one mask.")
    instance = Integer(None, low=0, allow_none=True, help="Which instance is chosen (one mask per region).")
    opacity = Number(0.5, low=0.0, high=1.0, help="Weight of the mask over the image.")
    outline_only = Flag(False, help="Draw only the mask's outline.")
    mode = Choice(("positive", "negative", "box"), help='What a click adds (Alt-click: the other kind); "box": drag.')
    candidate = Integer(None, low=0, allow_none=True, help="Which of SAM's candidate masks is shown (None: no mask).")
    size = InputSize(224, help="CLIP input size: an int S or (H, W), multiples of the patch size.")
    #: a refused text pauses the text's map; SAM's image embedding does not depend on it and goes on.
    input_jobs = ("explain",)

    def __init__(self, explainer: Any, refiner: SamRefiner, image: Any = None, text: str | None = None, *,
                 threshold: float = 0.8, threshold_mode: str = "value", max_points: int | None = None,
                 absent_below: float = DEFAULT_ABSENT_BELOW, compare_with: Any = DEFAULT_COMPARISON,
                 instances: bool = False, opacity: float = 0.5, outline_only: bool = False, mode: str = "positive",
                 size: int | tuple[int, int] = 224, mask_color: str = figures_sam.MASK_COLOR, image_side: int = 640,
                 heat_side: int = 200, click_side: int = 320, remove_radius: float | None = None,
                 figure_width: int = 960, max_instances: int = SamInstances.max_instances):
        if not isinstance(refiner, SamRefiner):
            raise TypeError(f"SamWidget needs a SamRefiner, not {type(refiner).__name__}: use "
                            f"clipsurgery_widgets.engine.sam.refiner.load_sam_from_env() or SamRefiner(sam_model).")
        super().__init__()
        self.explainer, self.refiner, self.mask_color = explainer, refiner, mask_color
        self.text, self.threshold, self.opacity, self.outline_only, self.mode, self.size = (
            text or "", threshold, opacity, outline_only, mode, size)
        self.threshold_mode, self.max_points, self.absent_below, self.compare_with, self.instances = (
            threshold_mode, max_points, absent_below, compare_with, instances)
        self.max_instances = int(max_instances)
        self._remove_radius = remove_radius
        self._image_version = 0
        self._explanation, self._scores = None, None  # the text's Explanation and its point scores
        self._presence: LabelPresence | Exception | None = None  # CLIP's probability of the text (or why not)
        self._auto, self._auto_pending = NO_POINTS, False
        self._sam_key: str | None = None
        self._sam_ready = False
        self.view = SamView(self._guarded(self.click, "adding a point"),
                            self._guarded(self.drag_box, "setting the box"), width=figure_width,
                            image_side=image_side, heat_side=heat_side, click_side=click_side, mask_color=mask_color)
        self.controls = c = build_controls()
        self._embedding_line = EmbeddingLine(c["sam_status"], c["sam_progress"])
        self.children = arrange(c, self._status_html, self._error_html, self.view.fig)
        self._wire()
        self._embedding_line.show("SAM: waiting for an image.")
        self.view.set_box_mode(self.mode == "box")
        if image is not None:
            self.image = image
        else:
            self._set_status("Upload an image (or set .image) to start.")

    def _wire(self) -> None:
        c = self.controls
        for name, control in (("text", "text"), ("threshold", "threshold"), ("opacity", "opacity"),
                              ("outline_only", "outline"), ("mode", "mode"), ("candidate", "candidates"),
                              ("threshold_mode", "threshold_mode"), ("absent_below", "absent_below"),
                              ("instances", "instances"), ("instance", "instance_pick")):
            link_control(self, name, c[control])
        link_with(self, "max_points", c["max_points"], lambda v: setattr(c["max_points"], "value", v or 0),
                  read=lambda v: v or None)  # the box shows "no limit" as 0
        c["upload"].observe(self._guarded(self._on_upload, "reading the uploaded image"), names="value")
        self._react(("text", "size", "compare_with"), lambda: self._request_explanation(), "explaining the text")
        self._react(("threshold", "threshold_mode", "max_points", "absent_below"), self._on_threshold,
                    "placing the automatic points")
        self._react(("instances",), self._on_instances, "switching one mask per region")
        self._react(("instance",), lambda: None if self._instances_syncing else self._draw_sam(),
                    "choosing an instance")
        self._react(("mode",), lambda: self.view.set_box_mode(self.mode == "box"), "changing the mode")
        self._react(("opacity", "outline_only"), self._draw_sam, "drawing the mask")
        self._react(("candidate",), lambda: None if self._syncing else self._draw_sam(), "choosing a mask")
        for name, action in (("undo", self.undo), ("redo", self.redo), ("reset", self.reset), ("clear", self.clear)):
            c[name].on_click(lambda button, action=action: action())

    def _react(self, names: tuple[str, ...], handler: Callable[[], Any], doing: str) -> None:
        """Run ``handler`` (under the lock, errors shown) when one of the traits ``names`` changes."""
        def run(change: dict) -> None:
            with self._lock:
                handler()
        self.observe(self._guarded(run, doing), names=list(names))

    # --- validation of settings that depend on the widget --------------------------------------

    @traitlets.validate("text")
    def _valid_text(self, proposal: dict) -> str:
        value = proposal["value"]
        if value.strip():
            try:
                parse_target(value)
            except ValueError as exc:
                raise InvalidStateError(f"{type(self).__name__}.text = {value!r} is not valid: {exc}") from None
        return value


    # --- Python API ------------------------------------------------------------------------------

    @property
    def sam_ready(self) -> bool:
        """True when SAM's embedding of the current image is ready (clicks work)."""
        return self._sam_ready

    @property
    def sam_status(self) -> str:
        """The SAM line (embedding progress) as plain text."""
        return self._embedding_line.text

    @property
    def explanation(self):
        """The Explanation of the text (None before it arrives or without a text)."""
        return self._explanation

    @property
    def heat(self) -> np.ndarray | None:
        """The text's CLIP Surgery map, float32 [H, W] in [0, 1], or None."""
        return None if self._explanation is None else self._explanation.mapset().map_at(0)

    @property
    def auto_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The automatic points of the text's map: (int64 [P, 2] (x, y), uint8 [P] labels)."""
        return self._auto

    # --- the image and its SAM embedding ---------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """Show a new image (RGB uint8 [H, W, 3]) and start its two jobs."""
        with self._lock:
            self._rgb = rgb
            self._image_version += 1
            self._explanation, self._scores, self._presence = None, None, None
            self._auto, self._auto_pending = NO_POINTS, False
            self._sam_ready, self._sam_key = False, None
            self._set_instances(None)
            self._show_warning()
            self._clear_error()
            self.view.show_image(rgb)
            self._draw_heat()
            self._draw_sam()
            self._request_embedding()  # under the lock: the older embedding is stale before it can report
        self._request_explanation()

    def _request_embedding(self) -> None:
        rgb, version = self._rgb, self._image_version

        def progress(job, fraction: float, message: str) -> None:
            if job.stopped.is_set() or version != self._image_version:
                raise _Superseded("A newer image replaced this one.")  # stops the image encoder at its next block
            self._embedding_line.progress(fraction, message)

        def work(job) -> tuple[bool, int, float]:
            start = time.perf_counter()
            try:
                done = self.refiner.set_image(rgb, progress=lambda f, m: progress(job, f, m))
            except _Superseded:
                raise
            except Exception:
                with self._lock:
                    if version == self._image_version:
                        self._embedding_line.show("SAM: the image embedding failed (see the error above).")
                raise
            return done, version, time.perf_counter() - start

        self._embedding_line.started()
        self.submit("embedding", work, self._apply_embedding, busy_text=self.status or "Computing SAM's embedding…",
                    doing="computing the SAM image embedding",
                    done_text=lambda result, seconds: self.status)  # the SAM line reports it; keep the status

    def _apply_embedding(self, result: tuple[bool, int, float]) -> None:
        done, version, seconds = result
        if not done or version != self._image_version:
            return
        self._sam_key, self._sam_ready = self.refiner.image_key, True
        self._embedding_line.ready(seconds)
        self._apply_auto_points()
        self._update_instances()
        self._draw_sam()

    # --- the text's map and its automatic points -------------------------------------------------

    def _request_explanation(self) -> None:
        if self._rgb is None:
            return
        text, rgb, size, version = self.text.strip(), self._rgb, self.size, self._image_version
        if not text:
            self.cancel("explain")  # an older text's map must not arrive after this
            with self._lock:
                self._explanation, self._scores, self._auto, self._presence = None, None, NO_POINTS, None
                self._set_instances(None)
                self._show_warning()
                self._draw_heat()
                self._draw_sam()
                self._set_status("No text: click the image to give SAM points yourself.")
            return
        compare_with = list(self.compare_with)

        def work(job) -> tuple:
            explanation, scores = map_point_scores(self.explainer, rgb, text, size)
            return version, explanation, scores, self._presence_of(rgb, text, compare_with, size)

        self.submit("explain", work, self._apply_explanation, busy_text=f"Explaining “{text}” at {size} px…",
                    doing="explaining the text",
                    done_text=lambda r, s: (f"“{text}”: {len(self._auto[0])} automatic points at threshold "
                                            f"{self.threshold:.2f} · {s:.2f} s"))

    def _apply_explanation(self, result) -> None:
        version, explanation, scores, presence = result
        if version != self._image_version:
            return
        self._explanation, self._scores, self._presence = explanation, scores, presence
        self._place_auto_points()

    def _on_threshold(self) -> None:
        if self._explanation is not None:
            self._place_auto_points()

    def _on_instances(self) -> None:
        self._update_instances()
        self._show_warning()
        self._draw_sam()  # also shows or hides the instance row

    def _place_auto_points(self) -> None:
        """The map's automatic points at the current threshold; they become SAM's prompts once it is ready."""
        e = self._explanation
        self._auto = points_from_map(self._scores, e.grid, e.image_size, self.threshold,
                                     threshold_mode=self.threshold_mode, max_points=self.max_points)
        self._auto_pending = True
        self._show_warning()
        self._draw_heat()
        if self._sam_ready:
            self._apply_auto_points()
            self._update_instances()
            self._draw_sam()

    def _apply_auto_points(self) -> None:
        if not self._auto_pending or not self._current():
            return
        self._auto_pending = False
        points, labels = self._auto
        if self.absent:
            self.refiner.clear()  # a warning instead of a confident mask (the warning line says why)
        elif len(points):
            self.refiner.reset_to(points, labels)
        else:
            self.refiner.clear()
            self._set_status("The map gave no automatic points (it is flat): click the image to add points.")
