"""The SamWidget's prompts: what SAM holds for the widget's image, and the edits that change it.

:class:`SamPrompts` is a mixin of :class:`.sam.SamWidget`, kept apart so that the controller
file stays short. It reads the widget's ``refiner``, ``_lock``, ``_rgb``, ``_sam_ready`` /
``_sam_key`` (whose image SAM holds), ``_auto`` (the text's automatic points), the ``mode`` and
``candidate`` traits, and redraws with ``_draw_sam``.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import traitlets

from ..engine.errors import ClipSurgeryError, ImageInputError
from .state import invalid

NO_POINTS = (np.zeros((0, 2), np.int64), np.zeros(0, np.uint8))


class SamPrompts:
    """SAM's prompts, result and shown candidate for the widget's image; clicks, boxes, undo and redo."""

    _remove_radius: float | None = None
    _candidate_of = None  # the SamResult whose candidates the Mask buttons offer
    _syncing = False  # True while those buttons are rebuilt
    last_click: dict | None = None  # what the last edit did and how long it took (ms)

    @traitlets.validate("candidate")
    def _valid_candidate(self, proposal: dict) -> int:
        value, result = proposal["value"], self.result
        count = 0 if result is None else len(result.masks)
        if value >= count:
            raise invalid(self, "candidate", value, f"a mask index below {count} (there are {count})" if count
                          else "None (there are 0 masks: SAM has no result yet)")
        return value

    @property
    def points(self) -> np.ndarray:
        """The points SAM gets, int64 [P, 2] (x, y) pixels (empty until the embedding is ready)."""
        return self.refiner.points if self._current() else NO_POINTS[0]

    @property
    def point_labels(self) -> np.ndarray:
        """uint8 [P]: 1 positive, 0 negative."""
        return self.refiner.point_labels if self._current() else NO_POINTS[1]

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
        return None if self.result is None else self.result.masks

    @property
    def scores(self) -> np.ndarray | None:
        """SAM's predicted IoU of each candidate, float32 [M], or None."""
        return None if self.result is None else self.result.scores

    @property
    def mask(self) -> np.ndarray | None:
        """The candidate mask shown, bool [H, W], or None."""
        index = self._shown_index()
        return None if index is None else self.result.masks[index]

    @property
    def remove_radius(self) -> float:
        """A click this close (image pixels) to a point removes it."""
        if self._remove_radius is not None:
            return float(self._remove_radius)
        return 0.0 if self._rgb is None else max(3.0, 0.015 * max(self._rgb.shape[:2]))

    def click(self, x: float, y: float, modifier: bool = False) -> None:
        """What a click at image pixel (x, y) does (the plotly click handler calls this too).

        Near a point it removes that point; elsewhere it adds one of the ``mode``'s kind (with
        ``modifier``, as with Alt held: the other kind). With one mask per region (``instances``) it
        chooses the instance under it instead. Until SAM's embedding is ready a click only says so in
        the status line (call :meth:`wait` first). Errors are shown and raised.
        """
        start = time.perf_counter()
        try:
            with self._lock:
                if not self._require_sam("clicks work"):
                    return
                if self.instances:
                    self._choose_instance_at(x, y)
                    return
                height, width = self._rgb.shape[:2]
                if not (-0.5 <= x < width - 0.5 + 1e-9 and -0.5 <= y < height - 0.5 + 1e-9):
                    raise ValueError(f"Point ({x:g}, {y:g}) lies outside the {width}x{height} image.")
                xi, yi = min(max(int(round(x)), 0), width - 1), min(max(int(round(y)), 0), height - 1)
                near = self.refiner.point_near(xi, yi, self.remove_radius)
                if near is not None:
                    action = "removed the point at ({}, {})".format(*self.refiner.points[near])
                    self.refiner.remove_point(near)
                else:
                    positive = (self.mode != "negative") != bool(modifier)
                    action = f"added a {'positive' if positive else 'negative'} point at ({xi}, {yi})"
                    self.refiner.add_point(xi, yi, positive)
                self._after_edit(action, start)
        except Exception as exc:
            self._show_error(exc, "adding a point")
            raise

    def drag_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """What dragging a box from (x0, y0) to (x1, y1) in box mode does: set SAM's box prompt."""
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        self._edit(lambda: self.refiner.set_box(box), "set the box")

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

    def _current(self) -> bool:
        """True when the refiner holds this widget's current image."""
        return self._sam_ready and self.refiner.image_key == self._sam_key

    def _require_sam(self, doing: str) -> bool:
        if self._rgb is None:
            raise ImageInputError("No image yet: upload one (or set widget.image) first.")
        if not self._sam_ready:
            self._set_status(f"SAM is still computing the image embedding ({self._embedding_line.fraction:.0%}); "
                             f"{doing} once it is ready.")
            return False
        if self.refiner.image_key != self._sam_key:
            raise ClipSurgeryError("The refiner was given another image outside this widget; set widget.image "
                                   "again to continue here.")
        return True

    def _edit(self, change: Callable[[], Any], doing: str) -> Any:
        """Run a refiner edit from a button or the Python API, then redraw; errors go to the error area."""
        start = time.perf_counter()
        try:
            with self._lock:
                if not self._require_sam(f"{doing} works"):
                    return None
                if self.instances:
                    self._set_status(f"One mask per region is shown: turn it off to {doing}.")
                    return None
                outcome = change()
                self._after_edit(doing, start)
                return outcome
        except Exception as exc:  # noqa: BLE001 - shown in the widget
            self._show_error(exc, doing)
            return None

    def _after_edit(self, action: str, start: float) -> None:
        predicted = time.perf_counter()
        self._clear_error()
        self._draw_sam()
        done = time.perf_counter()
        self.last_click = {"action": action, "predict_ms": (predicted - start) * 1000,
                           "update_ms": (done - start) * 1000}
        labels, result = self.refiner.point_labels, self.refiner.result
        summary = (f"{len(labels)} points ({int(labels.sum())} positive, {int((labels == 0).sum())} negative)"
                   + (", a box" if self.refiner.box is not None else ""))
        index = self._shown_index()
        score = "no mask" if index is None else f"mask {index + 1} score {result.scores[index]:.3f}"
        self._set_status(f"{action[0].upper()}{action[1:]}: {summary} · {score} · SAM "
                         f"{self.last_click['predict_ms']:.0f} ms, update {self.last_click['update_ms']:.0f} ms")

    def _shown_index(self) -> int | None:
        """Index of the candidate shown: the one chosen for the current result, else its best; None without one."""
        result = self.result
        if result is None:
            return None
        return self.candidate if self.candidate is not None and self._candidate_of is result else result.best

    def _sync_candidates(self) -> None:
        """A new SAM result: its candidates become the Mask buttons, its best one is shown."""
        result = self.result
        if result is self._candidate_of:
            return
        control = self.controls["candidates"]
        self._syncing = True
        try:
            self.candidate = None  # first, so that new options never meet an index they lack
            self._candidate_of = result
            control.options = [] if result is None else [
                (f"{i + 1} · {s:.3f}" + (" ★" if i == result.best else ""), i) for i, s in enumerate(result.scores)]
            self.candidate = None if result is None else result.best
        finally:
            self._syncing = False
