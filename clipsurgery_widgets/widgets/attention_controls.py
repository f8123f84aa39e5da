"""The AttentionExplorer's controls: built here, tied to the explorer's traits (one value, two views of it)."""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..engine.attention import KIND_LABELS, KINDS
from ..engine.method_rows import KIND_METHODS, METHOD_KINDS, is_capture_kind
from ..figures.attention import kind_title, query_text
from ..figures.style import MARKER_COLOR, method_name
from .base import precision_toggle
from .state import InvalidStateError, accept, link_choice, link_control, refuse

SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
MEAN = -1  # the head dropdown's value for "mean of heads" (ipywidgets reads None as "no selection")
_WIDE = {"description_width": "initial"}
TOOLTIPS = {
    "upload": "Load an image file to explore",
    "size": "Input size of the model in pixels: the image is resized to it (larger: a finer patch grid)",
    "layer": "The attention layer of the maps (0: the first block); or click a map under 'Every layer'",
    "head": "One attention head, or the mean of the heads' attention rows",
    "global": "Make the global (class) token the query: its row shows how CLIP pools the image into its "
              "embedding (click a patch to go back to a patch query)",
    "radius": "Radius in cells of the 'mass within the radius' statistic (1: the 3x3 block around the query)",
    "cmap": "Colour map of the attention maps",
    "opacity": "How strongly the maps cover the image (0: the image only, 1: the maps only)",
    "all_kinds": "Show the attention of every dense method, or back to q-k and v-v only",
}


def build_controls(explorer: Any) -> dict[str, widgets.Widget]:
    """The controls of ``explorer`` (an AttentionExplorer), linked to its traits, with CSS hooks csw-<name>."""
    count, heads = len(explorer.layer_names), explorer.num_heads
    controls = {
        "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Image…"),
        "size": widgets.Dropdown(options=[(str(s), s) for s in SIZES], description="Input size", style=_WIDE,
                                 layout=widgets.Layout(width="170px")),
        "layer": widgets.IntSlider(min=0, max=max(count - 1, 0), description="Layer", style=_WIDE,
                                   disabled=count == 1, continuous_update=True, layout=widgets.Layout(width="300px")),
        "layer_name": widgets.HTML(),
        "head": widgets.Dropdown(options=[("mean of heads", MEAN)] + [(f"head {h}", h) for h in range(heads)],
                                 description="Head", style=_WIDE, layout=widgets.Layout(width="190px")),
        "global": widgets.Button(description="Query: global token", layout=widgets.Layout(width="170px")),
        "query_text": widgets.HTML(),
        # Steps of whole cells (the Chebyshev distance is a whole number); Python may set any radius >= 0.
        "radius": widgets.FloatSlider(min=0, max=6, step=1, description="Radius (cells)", style=_WIDE,
                                      readout_format=".1f", continuous_update=False,
                                      layout=widgets.Layout(width="250px")),
        "cmap": widgets.Dropdown(options=[(c, c) for c in CMAPS], description="Colours", style=_WIDE,
                                 layout=widgets.Layout(width="160px")),
        "opacity": widgets.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity", style=_WIDE,
                                       layout=widgets.Layout(width="240px")),
        "kinds_label": widgets.HTML("Attention shown:", layout=widgets.Layout(margin="0 6px 0 0")),
        "kinds": _kind_toggles(explorer.explainer.model.family == "vit"),
        "all_kinds": widgets.Button(disabled=explorer.explainer.model.family != "vit",
                                    layout=widgets.Layout(width="150px")),
    }
    for name, tip in TOOLTIPS.items():  # every control says what it does, on hover
        controls[name].tooltip = tip
    for name, control in controls.items():  # stable CSS hooks for tests and custom styling
        control.add_class(f"csw-{name.replace('_', '-')}")
    link_choice(explorer, "size", controls["size"], size_label)
    link_choice(explorer, "cmap", controls["cmap"], str)
    link_choice(explorer, "head", controls["head"], lambda head: f"head {head}",
                encode=lambda head: MEAN if head is None else head,
                decode=lambda value: None if value == MEAN else value)
    link_control(explorer, "layer", controls["layer"])
    explorer.observe(lambda change: _raise_max(controls["radius"], change["new"]), names="radius")
    _raise_max(controls["radius"], explorer.radius)
    link_control(explorer, "radius", controls["radius"])
    link_control(explorer, "opacity", controls["opacity"])
    link_kinds(explorer, controls)
    explorer.observe(lambda change: show_layer_name(explorer, controls), names="layer")
    explorer.observe(lambda change: show_query(explorer, controls), names="query")
    show_layer_name(explorer, controls)
    show_query(explorer, controls)
    return controls


def control_rows(controls: dict[str, widgets.Widget]) -> list[widgets.HBox]:
    """The controls in three wrapping rows: image and model settings, query and display settings, kinds shown."""
    c, wrap = controls, widgets.Layout(flex_flow="row wrap", align_items="center")
    return [widgets.HBox([c["upload"], c["size"], c["layer"], c["layer_name"], c["head"], precision_toggle(c)],
                         layout=wrap),
            widgets.HBox([c["global"], c["query_text"], c["radius"], c["cmap"], c["opacity"]], layout=wrap),
            widgets.HBox([c["kinds_label"], c["kinds"], c["all_kinds"]], layout=wrap)]


def _kind_toggles(vit: bool) -> widgets.HBox:
    """One toggle per attention kind (CSS hook csw-kind-<kind>, "+" as "-"); the methods' kinds need a ViT."""
    toggles = []
    for kind in METHOD_KINDS:
        method = method_name(KIND_METHODS[kind][0])
        toggle = widgets.ToggleButton(description=KIND_LABELS[kind], tooltip=f"{kind_title(kind)}, as {method} "
                                      f"uses it", disabled=not (vit or is_capture_kind(kind)),
                                      layout=widgets.Layout(width="auto"))
        toggle.add_class(f"csw-kind-{kind.replace('+', '-')}")
        toggles.append(toggle)
    return widgets.HBox(toggles, layout=widgets.Layout(flex_flow="row wrap"))


def link_kinds(explorer: Any, controls: dict[str, widgets.Widget]) -> None:
    """Tie the kind toggles and the "all methods" button to ``explorer.kinds`` (both directions)."""
    toggles = dict(zip(METHOD_KINDS, controls["kinds"].children))
    every = controls["all_kinds"]
    busy = [False]

    def to_controls(change: dict | None = None) -> None:
        busy[0] = True
        try:
            for kind, toggle in toggles.items():
                toggle.value = kind in explorer.kinds
            every.description = "q-k, v-v only" if set(explorer.kinds) == set(METHOD_KINDS) else "all methods"
        finally:
            busy[0] = False

    def to_owner(change: dict) -> None:
        if busy[0]:
            return
        try:
            explorer.kinds = tuple(kind for kind in METHOD_KINDS if toggles[kind].value)
        except InvalidStateError as exc:  # e.g. the last toggle switched off: put it back, say why
            to_controls()
            refuse(explorer, exc, "choosing the attention kinds")
        else:
            accept(explorer)

    def on_every(button: widgets.Button) -> None:
        explorer.kinds = KINDS if set(explorer.kinds) == set(METHOD_KINDS) else METHOD_KINDS

    to_controls()
    explorer.observe(to_controls, names="kinds")
    for toggle in toggles.values():
        toggle.observe(to_owner, names="value")
    every.on_click(explorer._guarded(on_every, "choosing the attention kinds"))


def show_layer_name(explorer: Any, controls: dict[str, widgets.Widget]) -> None:
    name = explorer.layer_names[explorer.layer]
    controls["layer_name"].value = f"<span style='color:#555'>{html.escape(name)}</span>"


def show_query(explorer: Any, controls: dict[str, widgets.Widget]) -> None:
    text = query_text(explorer.query) if explorer.query is not None else "query: click a patch"
    controls["query_text"].value = f"<b style='color:{MARKER_COLOR}'>&#9633;</b> {html.escape(text)}"


def size_label(size: int | tuple[int, int]) -> str:
    """"224" for a square size, "224x336" for (height, width)."""
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def _raise_max(slider: widgets.FloatSlider, value: float) -> None:
    """Let ``slider`` show ``value`` (a slider would pull a larger value down to its maximum)."""
    if value > slider.max:
        slider.max = value
