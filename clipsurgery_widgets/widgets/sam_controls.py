"""The SamWidget's controls, their layout, and its second status line (SAM's image embedding)."""
from __future__ import annotations

import html
import time
from typing import Callable

import ipywidgets as widgets

from .base import precision_toggle

MODES = (("click adds positive", "positive"), ("click adds negative", "negative"), ("drag a box", "box"))
_WIDE = {"description_width": "initial"}


def build_controls() -> dict[str, widgets.Widget]:
    """The controls by name; each gets the CSS class ``csw-<name>`` (stable hooks for tests and styling).

    Values are set by the widget (``link_control``); "sam_status" and "sam_progress" are the SAM
    line (see :class:`EmbeddingLine`).
    """
    def button(description: str, tooltip: str, icon: str) -> widgets.Button:
        return widgets.Button(description=description, tooltip=tooltip, icon=icon, layout=widgets.Layout(width="auto"))

    controls = {
        "text": widgets.Text(description="Text", continuous_update=False, style=_WIDE,
                             placeholder="what to segment, e.g. cat (a+b combines targets)",
                             layout=widgets.Layout(flex="1 1 320px")),
        "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
        "mode": widgets.ToggleButtons(options=MODES, style={"button_width": "auto"},
                                      tooltips=["Alt-click adds a negative point", "Alt-click adds a positive point",
                                                "Drag on the SAM panel; clicks add positive points"]),
        "undo": button("Undo", "Undo the last change of points or box", "undo"),
        "redo": button("Redo", "Redo", "repeat"),
        "reset": button("Automatic points", "Back to the points the text's map gives", "magic"),
        "clear": button("Clear", "Remove every point and the box", "times"),
        "candidates": widgets.ToggleButtons(options=[], value=None, description="Mask",
                                            style={"button_width": "auto", "description_width": "initial"}),
        "opacity": widgets.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity", style=_WIDE,
                                       layout=widgets.Layout(width="240px")),
        "outline": widgets.Checkbox(description="outline only", indent=False, layout=widgets.Layout(width="auto")),
        # The slider spans the whole range the setting accepts, so any valid value shows as it is.
        "threshold": widgets.FloatSlider(min=0.0, max=1.0, step=0.05, continuous_update=False,
                                         description="Point threshold", style=_WIDE,
                                         layout=widgets.Layout(width="280px")),
        "sam_status": widgets.HTML(layout=widgets.Layout(min_height="1.5em")),
        "sam_progress": widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="200px")),
    }
    for name, control in controls.items():
        control.add_class(f"csw-{name.replace('_', '-')}")
    return controls


def arrange(controls: dict[str, widgets.Widget], status: widgets.Widget, error: widgets.Widget,
            plot: widgets.Widget) -> list[widgets.Widget]:
    """The widget's rows, top to bottom: text and upload, editing, display, status lines, error, plot."""
    c = controls
    wrap = widgets.Layout(flex_flow="row wrap", align_items="center", grid_gap="4px 12px")
    box = widgets.Box([plot], layout=widgets.Layout(width="100%"))
    box.add_class("csw-plot")
    return [
        widgets.HBox([c["text"], c["upload"]], layout=wrap),
        widgets.HBox([c["mode"], c["undo"], c["redo"], c["reset"], c["clear"]], layout=wrap),
        widgets.HBox([c["candidates"], c["opacity"], c["outline"], c["threshold"], precision_toggle(c)],
                     layout=wrap),
        status, widgets.HBox([c["sam_progress"], c["sam_status"]], layout=wrap),
        error, box,
    ]


class EmbeddingLine:
    """The SAM line under the status line: embedding progress (a bar), the expected time, and readiness,
    as plain text in ``text``.

    The expected time comes from the rate so far (elapsed / fraction) once a tenth is done, before that
    from how long the previous embedding took in this widget, if any.
    """

    def __init__(self, html_widget: widgets.HTML, bar: widgets.FloatProgress,
                 clock: Callable[[], float] = time.monotonic):
        self._html, self._bar = html_widget, bar
        self._clock = clock
        self._started: float | None = None
        self.last_seconds: float | None = None  # the previous embedding's duration
        self.text = ""

    def show(self, text: str, busy: bool = False) -> None:
        self.text = text
        self._html.value = f'<div style="color:#555;font-size:0.9em">{html.escape(text)}</div>'
        self._bar.layout.display = None if busy else "none"

    def started(self) -> None:
        self._bar.value = 0.0
        self._started = self._clock()
        expected = f" (about {_seconds(self.last_seconds)}, as the last image)" if self.last_seconds else ""
        self.show(f"SAM: computing the image embedding{expected}…", busy=True)

    def remaining(self, fraction: float) -> float | None:
        """Expected seconds left at ``fraction`` done, or None when there is nothing to go on yet."""
        if self._started is None:
            return None
        elapsed = self._clock() - self._started
        if fraction >= 0.1 and elapsed > 0:
            return elapsed * (1.0 - fraction) / fraction
        if self.last_seconds:
            return max(self.last_seconds - elapsed, 0.0)
        return None

    def progress(self, fraction: float, message: str) -> None:
        self._bar.value = float(fraction)
        left = self.remaining(float(fraction)) if fraction < 1.0 else None
        eta = f", about {_seconds(left)} left" if left is not None else ""
        self.show(f"SAM: {message} ({fraction:.0%}{eta}). Type a text or move sliders meanwhile; clicks work once "
                  f"it is ready.", busy=fraction < 1.0)

    def ready(self, seconds: float) -> None:
        self._bar.value = 1.0
        self.last_seconds = float(seconds)
        self._started = None
        self.show(f"SAM ready: image embedding in {seconds:.1f} s. Click the right panel to add points.")

    @property
    def fraction(self) -> float:
        """How much of the embedding is done, 0..1."""
        return float(self._bar.value)


def _seconds(value: float) -> str:
    """A duration for the SAM line: "12 s", "2 min 5 s"."""
    value = max(0, round(value))
    return f"{value} s" if value < 60 else f"{value // 60} min {value % 60} s"
