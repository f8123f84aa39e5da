"""The SamWidget's absent-label check: CLIP's probability of the text, and the warning it may give.

:class:`SamPresence` is a mixin of :class:`.sam.SamWidget`. The probability comes from the engine
(``engine.sam.presence.label_presence``: the softmax of CLIP's global prediction over the text and
``compare_with``), computed in the "explain" job with the text's map. Below ``absent_below`` the
text is called absent: the warning line says so, and the automatic points are not sent to SAM (the
"Automatic points" button sends them anyway).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.sam.presence import LabelPresence, label_presence
from .sam_controls import presence_html


class SamPresence:
    """CLIP's probability of the widget's text among comparison labels, and the absent-label warning."""

    _presence: LabelPresence | Exception | None = None  # the probability, or why there is none

    def _presence_of(self, rgb: np.ndarray, text: str, compare_with: list[str], size: Any) -> LabelPresence | Exception:
        """The text's probability (in the explain job); a refused comparison list is returned, not raised,
        so that the map still shows."""
        try:
            return label_presence(self.explainer, rgb, text, compare_with, size)
        except ValueError as exc:  # e.g. nothing left to compare with
            return exc

    @property
    def presence(self) -> LabelPresence | None:
        """CLIP's probability of the text among ``compare_with`` (None before it arrives or without a text)."""
        return self._presence if isinstance(self._presence, LabelPresence) else None

    @property
    def absent(self) -> bool:
        """True when CLIP finds the text absent: its probability is below ``absent_below``."""
        presence = self.presence
        return presence is not None and self.absent_below > 0 and presence.absent(self.absent_below)

    @property
    def warning(self) -> str | None:
        """The absent-label warning shown (plain text), or None."""
        if isinstance(self._presence, Exception):
            return f"No absent-label check: {self._presence}"
        if not self.absent:
            return None
        fix = ("lower “Absent below” to segment anyway" if self.instances
               else "click “Automatic points” to segment anyway, or lower “Absent below”")
        return (f"“{self.presence.text}” may not be in the image: {self.presence.describe()}, below the cut-off "
                f"{self.absent_below:.0%}. No automatic mask; {fix}.")

    def _show_warning(self) -> None:
        self.controls["presence"].value, self.controls["presence"].layout.display = presence_html(self.warning)
