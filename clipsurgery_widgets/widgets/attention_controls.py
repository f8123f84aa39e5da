"""The AttentionExplorer's controls: built here, tied to the explorer's traits (one value, two views of it)."""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..figures.attention import query_text
from ..figures.style import MARKER_COLOR
from .state import link_choice, link_control

SIZES = (224, 336, 448, 512)
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
MEAN = -1  # the head dropdown's value for "mean of heads" (ipywidgets reads None as "no selection")
_WIDE = {"description_width": "initial"}


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
        "global": widgets.Button(description="Query: global token", tooltip="Use the global (class) token as "
                                 "the query", layout=widgets.Layout(width="170px")),
        "query_text": widgets.HTML(),
        # Steps of whole cells (the Chebyshev distance is a whole number); Python may set any radius >= 0.
        "radius": widgets.FloatSlider(min=0, max=6, step=1, description="Radius (cells)", style=_WIDE,
                                      readout_format=".1f", continuous_update=False,
                                      layout=widgets.Layout(width="250px")),
        "cmap": widgets.Dropdown(options=[(c, c) for c in CMAPS], description="Colours", style=_WIDE,
                                 layout=widgets.Layout(width="160px")),
        "opacity": widgets.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity", style=_WIDE,
                                       layout=widgets.Layout(width="240px")),
    }
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
    explorer.observe(lambda change: show_layer_name(explorer, controls), names="layer")
    explorer.observe(lambda change: show_query(explorer, controls), names="query")
    show_layer_name(explorer, controls)
    show_query(explorer, controls)
    return controls


def control_rows(controls: dict[str, widgets.Widget]) -> list[widgets.HBox]:
    """The controls in two wrapping rows: image and model settings, then query and display settings."""
    c, wrap = controls, widgets.Layout(flex_flow="row wrap", align_items="center")
    return [widgets.HBox([c["upload"], c["size"], c["layer"], c["layer_name"], c["head"]], layout=wrap),
            widgets.HBox([c["global"], c["query_text"], c["radius"], c["cmap"], c["opacity"]], layout=wrap)]


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
