"""The SamWidget's controls, their layout, its second status line (SAM's image embedding) and the
absent-label warning."""
from __future__ import annotations

import html
import time
from typing import Callable

import ipywidgets as widgets

from ..engine import maps
from .base import precision_toggle

MODES = (("click adds positive", "positive"), ("click adds negative", "negative"), ("drag a box", "box"))
THRESHOLD_MODES = tuple((mode, mode) for mode in maps.THRESHOLD_MODES)
_WIDE = {"description_width": "initial"}
#: Height kept for the row of the Mask buttons, and width kept for the buttons, so that nothing
#: around them moves when the row empties (no mask yet, cleared prompts, a new text).
MASK_ROW_HEIGHT = "36px"
MASK_BUTTONS_WIDTH = "330px"


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
                                            tooltips=[], layout=widgets.Layout(min_width=MASK_BUTTONS_WIDTH),
                                            style={"button_width": "auto", "description_width": "initial"}),
        "opacity": widgets.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity", style=_WIDE,
                                       layout=widgets.Layout(width="240px")),
        "outline": widgets.Checkbox(description="outline only", indent=False, layout=widgets.Layout(width="auto")),
        # The slider spans the whole range the setting accepts, so any valid value shows as it is.
        "threshold": widgets.FloatSlider(min=0.0, max=1.0, step=0.05, continuous_update=False,
                                         description="Point threshold", style=_WIDE,
                                         tooltip="cells of the halved, min-max scaled map at or above this become "
                                                 "positive points (a quantile of the cells with 'quantile')",
                                         layout=widgets.Layout(width="280px")),
        "threshold_mode": widgets.ToggleButtons(
            options=THRESHOLD_MODES, style={"button_width": "auto"},
            tooltips=["the threshold is a level of the min-max scaled map (0.8: the paper's rule)",
                      "the threshold is a quantile of the map's cells (0.9: about the top tenth), "
                      "so a peaked map still gives points on every similar object"]),
        "max_points": widgets.BoundedIntText(min=0, max=100_000, description="Max points", style=_WIDE,
                                             tooltip="at most this many positive points (and as many negative); "
                                                     "0: no limit but half the cells",
                                             layout=widgets.Layout(width="150px")),
        "absent_below": widgets.FloatSlider(min=0.0, max=0.5, step=0.01, continuous_update=False,
                                            description="Absent below", style=_WIDE, readout_format=".2f",
                                            tooltip="the text counts as absent when its CLIP probability among "
                                                    "the comparison labels is below this: a warning instead of "
                                                    "the automatic mask (0: no check)",
                                            layout=widgets.Layout(width="260px")),
        "instances": widgets.Checkbox(description="one mask per region", indent=False,
                                      tooltip="several objects: SAM is asked once per region of the map",
                                      layout=widgets.Layout(width="auto")),
        "instance_pick": widgets.ToggleButtons(options=[], value=None, description="Instance",
                                               style={"button_width": "auto", "description_width": "initial"}),
        "instance_links": widgets.HTML(),
        "presence": widgets.HTML(layout=widgets.Layout(display="none")),
        "sam_status": widgets.HTML(layout=widgets.Layout(min_height="1.5em")),
        "sam_progress": widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="200px")),
    }
    for name, control in controls.items():
        control.add_class(f"csw-{name.replace('_', '-')}")
    return controls


def arrange(controls: dict[str, widgets.Widget], status: widgets.Widget, error: widgets.Widget,
            plot: widgets.Widget) -> list[widgets.Widget]:
    """The widget's rows, top to bottom: text and upload, editing, automatic points, mask display,
    instances, status lines, absent-label warning, error, plot."""
    c = controls

    def row(children: list, name: str, **layout: str) -> widgets.HBox:
        box = widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap", align_items="center",
                                                           grid_gap="4px 12px", **layout))
        box.add_class(f"csw-row-{name}")
        return box

    # A column box stretches the plot to its width, which plotly's autosize then measures (a row box
    # would leave the plot at its first drawn width).
    box = widgets.VBox([plot], layout=widgets.Layout(width="100%"))
    box.add_class("csw-plot")
    return [
        row([c["text"], c["upload"]], "text"),
        row([c["mode"], c["undo"], c["redo"], c["reset"], c["clear"]], "edit"),
        row([c["threshold"], c["threshold_mode"], c["max_points"], c["absent_below"]], "points"),
        row([c["candidates"], c["opacity"], c["outline"], precision_toggle(c)], "mask", min_height=MASK_ROW_HEIGHT),
        row([c["instances"], c["instance_pick"], c["instance_links"]], "instances", min_height=MASK_ROW_HEIGHT),
        status, row([c["sam_progress"], c["sam_status"]], "sam"),
        c["presence"], error, box,
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


def presence_html(text: str | None) -> tuple[str, str | None]:
    """The absent-label warning line: (HTML, CSS display) for a warning text, or hidden for None."""
    if not text:
        return "", "none"
    return ('<div style="border-left:4px solid #f0ad4e;background:#fcf8e3;color:#8a6d3b;padding:4px 10px;'
            f'margin:2px 0;font-size:0.9em"><b>Warning:</b> {html.escape(text)}</div>'), None
