"""The SamWidget's "one mask per region" mode: several objects, one SAM call and one mask each.

:class:`SamInstances` is a mixin of :class:`.sam.SamWidget`. With ``instances`` on, the text's map
is split into its connected regions at the point threshold (``engine.sam.instances``) and SAM is
asked once per region; the SAM panel shows every mask in its own colour, the prompts of the chosen
instance, and the editing controls (which change the single mask's prompts) are disabled. A click
on the SAM panel chooses the instance under it. Each mask can be saved (:meth:`save_instance`,
:meth:`save_instances`) or downloaded from its link under the controls. The refiner's own prompts
and result are left as they were, so turning the mode off shows the single mask again.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
import numpy as np
import traitlets

from ..engine.errors import ClipSurgeryError
from ..engine.sam.export import mask_to_png_bytes, result_to_dict, save_mask
from ..engine.sam.instances import InstanceMasks
from .sam_view import INSTANCE_COLORS
from .state import invalid

#: The single mask's editing controls, disabled while one mask per region is shown.
EDIT_CONTROLS = ("mode", "undo", "redo", "reset", "clear")


class SamInstances:
    """One mask per region of the map: computing, drawing, choosing and saving them."""

    max_instances: int = 8  # regions beyond the strongest eight are left out (one SAM call each)
    _instances: InstanceMasks | None = None
    _instance_key: int = 0  # changes with every new set of instances (names the mask image drawn)
    _instances_syncing = False  # True while the instance buttons are rebuilt

    @traitlets.validate("instance")
    def _valid_instance(self, proposal: dict) -> int | None:
        value, count = proposal["value"], len(self._instances or ())
        if value is not None and value >= count:
            raise invalid(self, "instance", value, f"an instance index below {count}" if count
                          else "None (there are no instances: turn on `instances` and wait for them)")
        return value

    @property
    def instance_masks(self) -> InstanceMasks | None:
        """The instances shown (``.masks`` bool [K, H, W], ``.scores`` [K], ``.prompts``), or None when
        the mode is off or nothing is ready."""
        return self._instances if self.instances else None

    def save_instance(self, index: int, path: str | os.PathLike) -> Path:
        """Write instance ``index``'s mask; the format follows the suffix (.png, .npy, .json = COCO RLE)."""
        found = self.instance_masks
        if found is None or not 0 <= index < len(found):
            count = 0 if found is None else len(found)
            raise ClipSurgeryError(f"No instance {index}: there are {count} (turn on `instances`, wait(), then use "
                                   f"an index below the count).")
        return save_mask(found.masks[index], path)

    def save_instances(self, folder: str | os.PathLike, stem: str = "instance", suffix: str = ".png") -> list[Path]:
        """Write every instance's mask as ``<stem>-<k>.<suffix>`` (k from 1) in ``folder``, and
        ``<stem>s.json``: per instance its prompts, SAM score and mask (COCO RLE). Returns the mask paths."""
        found = self.instance_masks
        if found is None or not len(found):
            raise ClipSurgeryError("No instances to save: turn on `instances` (one mask per region) and wait().")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [save_mask(mask, folder / f"{stem}-{k + 1}{suffix}") for k, mask in enumerate(found.masks)]
        summary = [result_to_dict(result) for result in found.results]
        (folder / f"{stem}s.json").write_text(json.dumps(summary, indent=1))
        return paths

    # --- internals (called by the widget under its lock) ------------------------------------------

    def _update_instances(self) -> None:
        """Ask SAM once per region of the current map, when the mode is on and everything is ready."""
        e = self._explanation
        if not (self.instances and self._current() and e is not None and not self.absent):
            self._set_instances(None)
            return
        found = self.refiner.predict_instances(
            e.mapset().patch_scores[:, 0], e.grid, threshold=self.threshold, threshold_mode=self.threshold_mode,
            points_per_instance=self.max_points or 3, max_instances=self.max_instances)
        self._set_instances(found)

    def _set_instances(self, found: InstanceMasks | None) -> None:
        self._instances = found
        self._instance_key += 1
        control = self.controls["instance_pick"]
        count = len(found or ())
        self._instances_syncing = True
        try:
            self.instance = None  # first, so that new options never meet an index they lack
            control.options = [(f"{k + 1} · {s:.3f}", k) for k, s in enumerate(found.scores)] if count else []
            self.instance = 0 if count else None
        finally:
            self._instances_syncing = False
        control.layout.display = None if count else "none"
        self.controls["instance_links"].value = self._links_html(found)

    def _links_html(self, found: InstanceMasks | None) -> str:
        """A download link per instance mask (PNG, full resolution), in the instance's colour."""
        if found is None or not len(found):
            return ""
        links = []
        for k, mask in enumerate(found.masks):
            data = base64.b64encode(mask_to_png_bytes(mask)).decode("ascii")
            color = INSTANCE_COLORS[k % len(INSTANCE_COLORS)]
            links.append(f'<a class="csw-instance-link" download="instance-{k + 1}.png" '
                         f'href="data:image/png;base64,{data}" style="color:{color};margin-right:10px" '
                         f'title="download mask {k + 1} (PNG)">⤓ mask {k + 1}</a>')
        return "<span>" + "".join(links) + "</span>"

    def _draw_instances(self) -> None:
        found, chosen = self._instances, self.instance
        masks = found.masks if found is not None and len(found) else np.zeros((0, 1, 1), bool)
        if chosen is not None and found is not None:
            prompt = found.prompts[chosen]
            points, labels = prompt.points, prompt.labels
        else:
            points, labels = np.zeros((0, 2), np.int64), np.zeros(0, np.uint8)
        if found is None:
            title = "SAM: one mask per region (waiting for the map and SAM)"
        else:
            title = f"SAM: {len(found)} region{'' if len(found) == 1 else 's'}, one mask each (click one to choose it)"
        self.view.show_instances(title, masks, self._instance_key, points, labels, self.opacity)
        for name in EDIT_CONTROLS:
            self.controls[name].disabled = True

    def _show_instance_controls(self) -> None:
        """The instance row: the chooser and links only while the mode is on."""
        on = bool(self.instances)
        for name in ("instance_pick", "instance_links"):
            self.controls[name].layout.display = None if on and self._instances else "none"
        if not on:
            for name in EDIT_CONTROLS:
                self.controls[name].disabled = False

    def _choose_instance_at(self, x: float, y: float) -> None:
        """A click in this mode: choose the instance whose mask holds pixel (x, y)."""
        found = self._instances
        if found is None or not len(found):
            self._set_status("No instances to choose from.")
            return
        height, width = found.masks.shape[1:]
        xi, yi = min(max(int(round(x)), 0), width - 1), min(max(int(round(y)), 0), height - 1)
        hits = [k for k in range(len(found)) if found.masks[k, yi, xi]]
        if not hits:
            self._set_status(f"No instance mask at ({xi}, {yi}); click inside a coloured mask to choose it.")
            return
        self.instance = hits[-1]  # the one drawn on top
        self._set_status(f"Instance {self.instance + 1} of {len(found)}: SAM score "
                         f"{found.scores[self.instance]:.3f}, {int(found.masks[self.instance].sum())} pixels.")
