"""The "fast (bf16)" toggle and the ``precision`` setting that every widget shares (mixed into ExplorerWidget)."""
from __future__ import annotations

import ipywidgets as widgets
import traitlets

from .state import Choice


def precision_toggle(controls: dict[str, widgets.Widget]) -> widgets.ToggleButton:
    """The shared "fast (bf16)" toggle of a widget's controls (made once, kept as ``controls["precision"]``).

    Each widget's layout places it with this call; the widget ties it to its ``precision`` trait.
    """
    if "precision" not in controls:
        toggle = widgets.ToggleButton(value=False, description="fast (bf16)", icon="bolt",
                                      tooltip="compute in bfloat16: about 2x faster on CPUs with bf16 units and on "
                                              "GPUs, maps within about 1% of fp32 (off: auto = fp32 on the CPU, "
                                              "bf16 on a CUDA GPU)",
                                      layout=widgets.Layout(width="auto"))
        toggle.add_class("csw-precision")
        controls["precision"] = toggle
    return controls["precision"]


class PrecisionSetting(traitlets.HasTraits):
    """The ``precision`` every widget computes in, its "fast (bf16)" toggle and the controls that hold it."""

    precision = Choice(("auto", "bf16", "fp32", "fp16"),
                       help='Precision of everything the widget computes: "auto" (the explainer\'s own setting, '
                            'else bf16 on a CUDA GPU and fp32 on the CPU), "bf16", "fp32" or "fp16" (CUDA only). '
                            'The "fast (bf16)" toggle switches between "bf16" and "auto".')

    @property
    def controls(self) -> dict[str, widgets.Widget]:
        """The widget's controls by name (``controls["precision"]`` is the shared "fast (bf16)" toggle)."""
        return self._controls

    @controls.setter
    def controls(self, controls: dict[str, widgets.Widget]) -> None:
        self._controls = controls
        toggle = precision_toggle(controls)
        toggle.value = self.precision == "bf16"
        toggle.observe(self._guarded(lambda change: setattr(self, "precision", "bf16" if change["new"] else "auto"),
                                     "changing the precision"), names="value")
        self._show_stop()

    def _show_stop(self) -> None:
        """Show the widget's Stop control (if any) only while a job it stops runs (ExplorerWidget does)."""

    @traitlets.observe("precision")
    def _on_precision(self, change: dict) -> None:
        self._guarded(self._recompute_in_precision, "changing the precision")()

    def _recompute_in_precision(self) -> None:
        """Show the precision on the toggle and compute the current image again in it (results are
        cached per precision, so going back to an earlier setting is quick)."""
        toggle = getattr(self, "_controls", {}).get("precision")
        if toggle is not None:
            toggle.value = self.precision == "bf16"
        if self._rgb is not None and getattr(self, "session", None) is None:  # a decomposition set is kept
            self._use_image(self._rgb)
