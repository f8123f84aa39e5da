"""The SamWidget's drawing: the heat panel, the SAM panel (or the instances), and the static figure.

:class:`SamDrawing` is a mixin of :class:`.sam.SamWidget`; it reads the widget's state and hands
plain arrays to :class:`.sam_view.SamView` (live) or ``figures.sam`` (static).
"""
from __future__ import annotations

from ..engine.errors import ClipSurgeryError
from ..figures import figure_bytes
from ..figures import sam as figures_sam


class SamDrawing:
    """Draws what the SamWidget holds."""

    def _draw_heat(self) -> None:
        e = self._explanation
        title = (f"CLIP Surgery: {e.labels[0]}" if e is not None
                 else "CLIP Surgery: …" if self.text.strip() else "CLIP Surgery: type a text")
        self.view.show_heat(self.heat, *self._auto, title)

    def _draw_sam(self) -> None:
        """SAM's points, box and mask (or the instances), and the controls that depend on them."""
        self._sync_candidates()
        self._show_instance_controls()
        # Hidden, not removed: the row keeps its height and the controls beside it stay where they are.
        self.controls["candidates"].layout.visibility = "hidden" if self.instances or self.result is None else "visible"
        if self.instances:
            self._draw_instances()
            return
        current, result = self._current(), self.result
        # A title that does not change with each click: the mask and its score show in the Mask buttons.
        title = ("SAM: computing the image embedding…" if self._rgb is not None and not self._sam_ready
                 else "SAM: no automatic mask (see the warning)" if self.absent and result is None
                 else "SAM: click to add or remove points")
        self.view.show_sam(title, self.mask, (id(result), self._shown_index()), self.points, self.point_labels,
                           self.box, self.opacity, self.outline_only)
        self.controls["undo"].disabled = not (current and self.refiner.can_undo)
        self.controls["redo"].disabled = not (current and self.refiner.can_redo)

    # --- static figure ---------------------------------------------------------------------------

    def _render_figure(self):
        if self._rgb is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image first.")
        heat, auto = self.heat, self._auto if self.heat is not None else (None, None)
        result, index = self.result, self._shown_index()
        title = "SAM" if index is None else f"SAM: mask {index + 1} (score {result.scores[index]:.3f})"
        heat_title = None if heat is None else f"CLIP Surgery: {self._explanation.labels[0]}"
        return figures_sam.sam_figure(
            self._rgb, self.points, self.point_labels, self.mask, box=self.box, heat=heat, auto_points=auto[0],
            auto_labels=auto[1], title=title, heat_title=heat_title, mask_color=self.mask_color,
            opacity=self.opacity, outline_only=self.outline_only)

    def _static_png(self) -> bytes | None:
        # Unlike figure(), do not wait for the SAM embedding (vit_b: ~18 s on a CPU): the cell that
        # displays the widget would block that long. The PNG shows what is ready.
        try:
            self.wait(self.display_timeout, name="explain")
            with self._lock:
                return figure_bytes(self._render_figure(), "png", dpi=self.static_dpi)
        except Exception:  # noqa: BLE001 - no static copy is better than a broken display
            return None
