"""The controls of HeatmapExplorer, and how each is tied to the widget's traits.

Most controls hold their trait's value as is (:func:`~.state.link_control`). Three need a
translation: the labels box holds text ("cat, dog") for a list of labels, the outline slider's 0
means "no outline" (None), and the input size is a menu of common sizes plus a text field for any
other size, square ("640") or not ("448x640").
"""
from __future__ import annotations

import re
from typing import Any, Callable

import ipywidgets as widgets
import traitlets

from ..data.presets import PRESETS
from ..engine.explainer import REDUNDANCY_MODES
from .heatmap_view import VIEWS
from .state import InvalidStateError, link_control

REDUNDANCY_TEXT = {"auto": "auto", "labels": "between labels", "empty": "empty string", "none": "none"}
SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
CUSTOM = "custom"
_WIDE = {"description_width": "initial"}


def build_controls(patch_size: int, max_depth: int | None) -> dict[str, widgets.Widget]:
    """Every control, unlinked, each with a stable CSS class ``csw-<name>`` for tests and styling."""
    controls = {
        "labels": widgets.Text(description="Labels", continuous_update=False, style=_WIDE,
                               placeholder="comma-separated, e.g. cat, dog, grass (a+b combines)",
                               layout=widgets.Layout(flex="1 1 320px")),
        "preset": widgets.Dropdown(options=[("preset…", "")] + [(k, k) for k in PRESETS], value="",
                                   layout=widgets.Layout(width="170px")),
        "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
        "view": widgets.ToggleButtons(options=[(text, name) for name, text in VIEWS.items()],
                                      style={"button_width": "auto"}),
        "label": widgets.Dropdown(options=[], description="Label", style=_WIDE, layout=widgets.Layout(width="220px")),
        "redundancy": widgets.Dropdown(options=[(REDUNDANCY_TEXT.get(m, m), m) for m in REDUNDANCY_MODES],
                                       description="Redundancy", style=_WIDE, layout=widgets.Layout(width="230px")),
        "size": widgets.Dropdown(options=[(str(s), s) for s in SIZES] + [(CUSTOM, CUSTOM)], value=SIZES[0],
                                 description="Input size", style=_WIDE, layout=widgets.Layout(width="170px")),
        "custom_size": widgets.Text(value="640", placeholder=f"S or HxW, ×{patch_size}", continuous_update=False,
                                    layout=widgets.Layout(width="90px", display="none")),
        "depth": widgets.IntSlider(value=1, min=1, max=max_depth or 12, description="Surgery depth", style=_WIDE,
                                   disabled=max_depth is None, continuous_update=False,
                                   layout=widgets.Layout(width="260px")),
        "cmap": widgets.Dropdown(options=CMAPS, description="Colours", style=_WIDE,
                                 layout=widgets.Layout(width="160px")),
        "opacity": widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="Opacity", style=_WIDE,
                                       layout=widgets.Layout(width="250px")),
        "threshold": widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="Outline ≥",
                                         style=_WIDE, layout=widgets.Layout(width="250px")),
    }
    for name, control in controls.items():
        control.add_class(f"csw-{name.replace('_', '-')}")
    return controls


def control_rows(c: dict[str, widgets.Widget]) -> list[widgets.Widget]:
    """The controls in rows that wrap on narrow screens."""
    wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
    return [widgets.HBox([c["labels"], c["preset"], c["upload"]], layout=wrap),
            widgets.HBox([c["view"], c["label"]], layout=wrap),
            widgets.HBox([c["redundancy"], c["size"], c["custom_size"], c["depth"]], layout=wrap),
            widgets.HBox([c["cmap"], c["opacity"], c["threshold"]], layout=wrap)]


def link_controls(owner: Any, c: dict[str, widgets.Widget]) -> None:
    """Tie each control to its trait of ``owner`` (a HeatmapExplorer) in both directions."""
    c["label"].options = list(owner.labels)
    owner.observe(lambda change: _offer(c["cmap"], change["new"]), names="cmap")  # before the link
    _offer(c["cmap"], owner.cmap)
    for name in ("view", "label", "redundancy", "depth", "cmap", "opacity"):
        link_control(owner, name, c[name])
    link_converted(owner, "labels", c["labels"], to_control=", ".join, to_owner=lambda text: text)
    link_converted(owner, "threshold", c["threshold"], to_control=lambda t: 0.0 if t is None else t,
                   to_owner=lambda v: None if v == 0 else v)
    link_size(owner, c["size"], c["custom_size"])


def link_converted(owner: traitlets.HasTraits, name: str, control: widgets.Widget,
                   to_control: Callable[[Any], Any], to_owner: Callable[[Any], Any]) -> None:
    """:func:`~.state.link_control` for a control that holds the trait's value in another form."""
    busy = [False]

    def push(change: dict) -> None:
        if not busy[0]:
            busy[0] = True
            try:
                control.value = to_control(change["new"])
            finally:
                busy[0] = False

    def pull(change: dict) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            setattr(owner, name, to_owner(change["new"]))
        except InvalidStateError as exc:
            control.value = to_control(getattr(owner, name))
            owner._show_error(exc, f"setting {name}")
        finally:
            busy[0] = False

    control.value = to_control(getattr(owner, name))
    owner.observe(push, names=name)
    control.observe(pull, names="value")


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
        try:
            owner.size = value
        except InvalidStateError as exc:
            owner._show_error(exc, "setting the input size")
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
