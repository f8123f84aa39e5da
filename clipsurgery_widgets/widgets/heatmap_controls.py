"""The controls of HeatmapExplorer, and how each is tied to the widget's traits.

Most controls hold their trait's value as is (:func:`~.state.link_control`). Some need a
translation: the labels box holds text ("cat, dog") for a list of labels, the outline and area-rule
sliders' 0 means "off" (None), the feature-surgery menu names None/True/False, the input size is a
menu of common sizes plus a text field for any other size, square ("640") or not ("448x640"), and
the compared methods are one toggle button per method (a method switched on joins at the right).
The methods row shows in the "methods" view only, the segmentation row in the "segmentation" view;
controls that change nothing in the current view are disabled (Label outside the one-label and
raw-vs-surgery views, Method in raw vs surgery, Colours and Outline in the segmentation view). The
preset menu names the preset the labels are, and reads "custom" once they are edited.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import ipywidgets as widgets
import traitlets

from ..data.presets import PRESETS
from ..engine.explainer import REDUNDANCY_MODES
from .base import precision_toggle
from .heatmap_plan import VIEWS
from .state import (link_control, link_with, propose)

REDUNDANCY_TEXT = {"auto": "auto", "labels": "between labels", "empty": "empty string", "none": "none"}
SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
CUSTOM = "custom"
#: what each view button shows (its tooltip).
VIEW_TIPS = {"overlay": "one label's map over the image (choose it with Label)",
             "grid": "a small map of every label",
             "compare": "raw CLIP next to CLIP Surgery, for the chosen label",
             "methods": "a table: one row per label, one column per compared method",
             "segmentation": "every pixel coloured by the label that wins there"}
#: the views in which the Label menu, the Method menu, the colour map and the outline change nothing.
LABEL_UNUSED, METHOD_UNUSED, COLOURS_UNUSED = ("grid", "methods", "segmentation"), ("compare", "methods"), \
    ("segmentation",)
FEATURE_SURGERY = {"as in the papers": None, "on for all": True, "off for all": False}
_WIDE = {"description_width": "initial"}


def build_controls(patch_size: int, max_depth: int | None,
                   methods: list[tuple[str, str]]) -> dict[str, widgets.Widget]:
    """Every control, unlinked, each with a stable CSS class ``csw-<name>`` for tests and styling.

    methods: (display name, method) of the methods the model has, for the method menu and the
    compared-methods toggles (each toggle has the class ``csw-compared-<method>``).
    """
    toggles = [widgets.ToggleButton(description=text, tooltip=f"on: the methods view has a column of {text} maps",
                                    layout=widgets.Layout(width="auto")) for text, _ in methods]
    for (_, method), toggle in zip(methods, toggles):
        toggle.add_class(f"csw-compared-{method.replace('_', '-')}")
    controls = {
        "labels": widgets.Text(description="Labels", continuous_update=False, style=_WIDE,
                               placeholder="comma-separated, e.g. cat, dog, grass (a+b combines)",
                               tooltip="the labels to explain, separated by commas; Enter applies them",
                               layout=widgets.Layout(flex="1 1 320px")),
        "preset": widgets.Dropdown(options=[(CUSTOM, "")] + [(k, k) for k in PRESETS], value="",
                                   description="Preset", style=_WIDE,
                                   tooltip="fill the labels with a benchmark's class names; 'custom' once edited",
                                   layout=widgets.Layout(width="230px")),
        "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…",
                                     tooltip="explain an image from your computer"),
        "view": widgets.ToggleButtons(options=[(text, name) for name, text in VIEWS.items()],
                                      tooltips=[VIEW_TIPS[name] for name in VIEWS], style={"button_width": "auto"}),
        "label": widgets.Dropdown(options=[], description="Label", style=_WIDE, layout=widgets.Layout(width="220px"),
                                  tooltip="the label of the one-label and raw-vs-surgery views"),
        "redundancy": widgets.Dropdown(options=[(REDUNDANCY_TEXT.get(m, m), m) for m in REDUNDANCY_MODES],
                                       description="Redundancy", style=_WIDE, layout=widgets.Layout(width="230px"),
                                       tooltip="what feature surgery subtracts: auto = the labels' shared part "
                                               "(the empty text for one label)"),
        "size": widgets.Dropdown(options=[(str(s), s) for s in SIZES] + [(CUSTOM, CUSTOM)], value=SIZES[0],
                                 description="Input size", style=_WIDE, layout=widgets.Layout(width="170px"),
                                 tooltip="the image is resized to this before the model sees it"),
        "custom_size": widgets.Text(value="640", placeholder=f"S or HxW, ×{patch_size}", continuous_update=False,
                                    layout=widgets.Layout(width="90px", display="none")),
        "depth": widgets.IntSlider(value=1, min=1, max=max_depth or 12, description="Surgery depth", style=_WIDE,
                                   disabled=max_depth is None, continuous_update=False,
                                   tooltip="how many final blocks get the v-v stream of architecture surgery",
                                   layout=widgets.Layout(width="260px")),
        "cmap": widgets.Dropdown(options=CMAPS, description="Colours", style=_WIDE,
                                 tooltip="colour map of the heat maps",
                                 layout=widgets.Layout(width="160px")),
        "opacity": widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="Opacity", style=_WIDE,
                                       tooltip="how strongly the map covers the image",
                                       layout=widgets.Layout(width="250px")),
        "threshold": widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="Outline ≥",
                                         tooltip="outline where the map is at least this (0: no outline)",
                                         style=_WIDE, layout=widgets.Layout(width="250px")),
        "method": widgets.Dropdown(options=methods, description="Method", style=_WIDE,
                                   tooltip="the dense method of the one-label, grid and segmentation views",
                                   layout=widgets.Layout(width="210px")),
        "feature_surgery": widgets.Dropdown(options=list(FEATURE_SURGERY), description="Feature surgery",
                                            tooltip="subtract the features every label shares (the papers use it "
                                                    "for CLIP Surgery only)",
                                            style=_WIDE, layout=widgets.Layout(width="270px")),
        "compared": widgets.HBox(toggles, layout=widgets.Layout(flex_flow="row wrap")),
        "prob_thd": widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="Background <",
                                        tooltip="pixels whose best label is less likely than this get the first "
                                                "label", style=_WIDE, layout=widgets.Layout(width="260px")),
        "area_thd": widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="Area rule ≤",
                                        tooltip="drop labels winning at most this share of the pixels (0: off)",
                                        style=_WIDE, layout=widgets.Layout(width="260px")),
        "pamr_steps": widgets.IntText(value=0, description="PAMR steps", style=_WIDE,
                                      tooltip="steps of PAMR refinement along the image's edges (0: off)",
                                      layout=widgets.Layout(width="150px")),
        "logit_scale": widgets.FloatText(value=40.0, description="Logit scale", style=_WIDE,
                                         tooltip="multiplies the similarities before the softmax over labels",
                                         layout=widgets.Layout(width="160px")),
    }
    wrap = dict(flex_flow="row wrap", align_items="center")
    # The rows of one view each (shown by link_controls).
    controls["methods_row"] = widgets.HBox([widgets.Label("Compare:"), controls["compared"]],
                                           layout=widgets.Layout(**wrap))
    controls["segmentation_row"] = widgets.HBox([controls[n] for n in ("prob_thd", "area_thd", "pamr_steps",
                                                                       "logit_scale")], layout=widgets.Layout(**wrap))
    for name, control in controls.items():
        control.add_class(f"csw-{name.replace('_', '-')}")
    return controls


def control_rows(c: dict[str, widgets.Widget]) -> list[widgets.Widget]:
    """The controls in rows that wrap on narrow screens; the last two belong to one view each."""
    def wrap() -> widgets.Layout:
        return widgets.Layout(flex_flow="row wrap", align_items="center")
    return [widgets.HBox([c["labels"], c["preset"], c["upload"]], layout=wrap()),
            widgets.HBox([c["view"], c["label"]], layout=wrap()),
            widgets.HBox([c["method"], c["feature_surgery"], c["redundancy"]], layout=wrap()),
            widgets.HBox([c["size"], c["custom_size"], c["depth"], precision_toggle(c)], layout=wrap()),
            widgets.HBox([c["cmap"], c["opacity"], c["threshold"]], layout=wrap()),
            c["methods_row"], c["segmentation_row"]]


def link_controls(owner: Any, c: dict[str, widgets.Widget]) -> None:
    """Tie each control to its trait of ``owner`` (a HeatmapExplorer) in both directions."""
    c["label"].options = list(owner.labels)
    owner.observe(lambda change: _offer(c["cmap"], change["new"]), names="cmap")  # before the link
    _offer(c["cmap"], owner.cmap)
    for name in ("view", "label", "method", "redundancy", "depth", "cmap", "opacity", "prob_thd", "pamr_steps",
                 "logit_scale"):
        link_control(owner, name, c[name])
    link_converted(owner, "labels", c["labels"], to_control=", ".join, to_owner=lambda text: text)
    for name in ("threshold", "area_thd"):
        link_converted(owner, name, c[name], to_control=lambda t: 0.0 if t is None else t,
                       to_owner=lambda v: None if v == 0 else v)
    by_value = {v: k for k, v in FEATURE_SURGERY.items()}
    link_converted(owner, "feature_surgery", c["feature_surgery"], to_control=lambda v: by_value[v],
                   to_owner=FEATURE_SURGERY.__getitem__)
    link_size(owner, c["size"], c["custom_size"])
    link_compared(owner, dict(zip(owner.method_choices, c["compared"].children)))

    def follow(change: Any = None) -> None:  # the rows of one view; redundancy only matters with feature surgery
        c["methods_row"].layout.display = None if owner.view == "methods" else "none"
        c["segmentation_row"].layout.display = None if owner.view == "segmentation" else "none"
        c["redundancy"].disabled = owner.feature_surgery is False
        c["label"].disabled = owner.view in LABEL_UNUSED
        c["method"].disabled = owner.view in METHOD_UNUSED
        c["cmap"].disabled = c["threshold"].disabled = owner.view in COLOURS_UNUSED

    def match_preset(change: Any = None) -> None:
        c["preset"].value = next((k for k, v in PRESETS.items() if list(v) == list(owner.labels)), "")

    follow()
    match_preset()
    owner.observe(follow, names=["view", "feature_surgery"])
    owner.observe(match_preset, names="labels")


def link_compared(owner: Any, toggles: dict[str, widgets.ToggleButton]) -> None:
    """The ``compared`` trait as one toggle per method: on = compared; switching one on adds it at
    the right end, switching it off removes it (the last one cannot go: the trait refuses)."""
    busy = [False]

    def show(compared: tuple[str, ...]) -> None:
        busy[0] = True
        try:
            for method, toggle in toggles.items():
                toggle.value = method in compared
        finally:
            busy[0] = False

    def toggled(method: str, on: bool) -> None:
        if busy[0]:
            return
        current = list(owner.compared)
        wanted = current + [method] if on and method not in current else [m for m in current if m != method]
        propose(owner, "compared", tuple(wanted), "choosing the compared methods")
        show(owner.compared)

    show(owner.compared)
    owner.observe(lambda change: show(change["new"]), names="compared")
    for method, toggle in toggles.items():
        toggle.observe(lambda change, m=method: toggled(m, change["new"]), names="value")


def link_converted(owner: traitlets.HasTraits, name: str, control: widgets.Widget,
                   to_control: Callable[[Any], Any], to_owner: Callable[[Any], Any]) -> None:
    """:func:`~.state.link_control` for a control that holds the trait's value in another form."""
    link_with(owner, name, control, lambda value: setattr(control, "value", to_control(value)), read=to_owner)


def link_size(owner: Any, menu: widgets.Dropdown, text: widgets.Text) -> None:
    """The size trait shown as a menu entry, or as "custom" plus the size in the text field."""
    busy = [False]

    def show(size: Any) -> None:
        busy[0] = True
        try:
            square = size if isinstance(size, int) else (size[0] if size[0] == size[1] else None)
            if square in SIZES:
                menu.value = square
            else:
                text.value = format_size(size)
                menu.value = CUSTOM
            text.layout.display = None if menu.value == CUSTOM else "none"
        finally:
            busy[0] = False

    def choose(value: Any) -> None:
        if busy[0]:
            return
        propose(owner, "size", value, "setting the input size")
        show(owner.size)

    show(owner.size)
    owner.observe(lambda change: show(change["new"]), names="size")
    menu.observe(lambda change: choose(parse_size(text.value) if change["new"] == CUSTOM else change["new"]),
                 names="value")
    text.observe(lambda change: menu.value == CUSTOM and choose(parse_size(change["new"])), names="value")


def format_size(size: int | tuple[int, int]) -> str:
    """224 -> "224"; (448, 640) -> "448x640"."""
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def parse_size(text: str) -> int | tuple[int, int] | str:
    """"640" -> 640, "448x640" (also "448 × 640", "448, 640") -> (448, 640); anything else is returned
    as typed, for the size trait to refuse with its message."""
    parts = [p for p in re.split(r"\s*[x×X,]\s*", text.strip()) if p]
    if parts and all(p.isdigit() for p in parts) and len(parts) in (1, 2):
        return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    return text


def _offer(menu: widgets.Dropdown, value: str) -> None:
    """Add ``value`` to a menu's options when it is not there (a custom colour map)."""
    if value not in menu.options:
        menu.options = list(menu.options) + [value]
