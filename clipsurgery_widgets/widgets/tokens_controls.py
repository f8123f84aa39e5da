"""The TokenExplorer's controls: caption box, upload, toggles, colour settings, size and depth."""
from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from .base import precision_toggle

SCORES = (("global token", "global"), ("max over patches", "max"))
MARKINGS = (("top three", "top3"), ("colour scale", "scale"))
SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
_WIDE = {"description_width": "initial"}


def size_label(size: int | tuple[int, int]) -> str:
    """How an input size reads in the dropdown: "336" or "448x224" (height x width)."""
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def offer(control: widgets.Dropdown, value: Any, label: str) -> None:
    """Make ``value`` one of a dropdown's options, so a custom setting shows as it is (no clamping).

    The new option goes first: when a dropdown's options change, ipywidgets selects the first one,
    so the control then moves straight to ``value`` instead of passing through another setting.
    """
    if not any(value == option for _, option in control.options):
        control.options = [(label, value)] + list(control.options)


def build_controls(caption: str, blocks: int | None, depth: int) -> dict[str, widgets.Widget]:
    """The controls of a TokenExplorer by name; each gets the CSS class ``csw-<name>``.

    Values are set by ``link_control`` afterwards; ``blocks`` is the ViT's number of blocks (the
    largest surgery depth), None for a ResNet (no depth setting: the slider is disabled).
    """
    controls = {
        "caption": widgets.Text(value=caption, description="Caption", continuous_update=False, style=_WIDE,
                                placeholder="type a caption and press Enter, e.g. a cat lying on a sofa",
                                layout=widgets.Layout(flex="1 1 420px")),
        "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
        "score": widgets.ToggleButtons(options=SCORES, description="Word score",
                                       tooltips=["a word's score is its score at the image's global token",
                                                 "a word's score is its highest score over the image's patches"],
                                       style={"button_width": "140px", **_WIDE}),
        "special": widgets.Checkbox(description="start/end tokens", indent=False,
                                    layout=widgets.Layout(width="auto")),
        "punctuation": widgets.Checkbox(description="punctuation", indent=False, layout=widgets.Layout(width="auto")),
        "marking": widgets.ToggleButtons(options=MARKINGS, description="Chip colours",
                                         tooltips=["colour the three best words red, yellow and cyan, as in the "
                                                   "paper (the others stay grey)",
                                                   "colour every word by its score on the colour map (Colours)"],
                                         style={"button_width": "105px", **_WIDE}),
        "cmap": widgets.Dropdown(options=[(c, c) for c in CMAPS], description="Colours", style=_WIDE,
                                 layout=widgets.Layout(width="160px")),
        "opacity": widgets.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity", style=_WIDE,
                                       layout=widgets.Layout(width="240px")),
        "size": widgets.Dropdown(options=[(size_label(s), s) for s in SIZES], description="Input size",
                                 style=_WIDE, layout=widgets.Layout(width="160px")),
        # A ResNet ignores the depth: its slider only has to hold the value, so its range is wide.
        "depth": widgets.IntSlider(value=depth, min=1, max=blocks or max(12, depth), description="Surgery depth",
                                   style=_WIDE, disabled=blocks is None, continuous_update=False,
                                   layout=widgets.Layout(width="260px")),
        "whole": widgets.Button(description="whole caption", icon="undo",
                                tooltip="show the caption's map and rank tokens over the whole image"),
    }
    for name, control in controls.items():  # stable CSS hooks for tests and custom styling
        control.add_class(f"csw-{name}")
    return controls


def arrange(controls: dict[str, widgets.Widget], status: widgets.Widget, error: widgets.Widget,
            chips: widgets.Widget, info: widgets.Widget, plot: widgets.Widget,
            reranked: widgets.Widget) -> list[widgets.Widget]:
    """The widget's rows: caption, toggles, display settings, status and error, then chips beside the map.

    The chips and the map share a row when the cell is wide enough (about 800 px) and stack
    otherwise; the map's box stretches its figure, which has no fixed width, to the box's width.
    """
    wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
    left = widgets.VBox([reranked, chips, info, controls["whole"]],
                        layout=widgets.Layout(flex="1 1 320px", min_width="260px", max_width="100%"))
    right = widgets.VBox([plot], layout=widgets.Layout(flex="1 1 440px", min_width="300px", max_width="100%"))
    right.add_class("csw-view")
    right.add_class("csw-plot")
    return [
        widgets.HBox([controls["caption"], controls["upload"]], layout=wrap),
        widgets.HBox([controls["score"], controls["special"], controls["punctuation"]], layout=wrap),
        widgets.HBox([*(controls[n] for n in ("marking", "cmap", "opacity", "size", "depth")),
                      precision_toggle(controls)], layout=wrap),
        status, error,
        widgets.HBox([left, right], layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start",
                                                          width="100%")),
    ]
