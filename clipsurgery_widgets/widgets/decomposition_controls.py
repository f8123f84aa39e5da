"""The DecompositionExplorer's controls, their layout, and their links to the explorer's traits.

Most controls hold their trait's value as is (:func:`~.state.link_control`). The labels box holds
text ("cat, dog") for a list; the label menu's options follow the labels; the A<l> / M<l> /
embedding toggles together show one trait, the ablation.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import ipywidgets as widgets

from ..engine.decomposition.ablation import Ablation
from .base import precision_toggle
from .state import (link_control, propose)

CLICK_MODES = (("inspect head", "inspect"), ("ablate head", "ablate"))
CLICK_TIPS = ["a click on a grid cell shows that head's TEXTSPAN texts and its map",
              "a click on a grid cell mean-ablates that head (a cross marks it); click again to restore it"]
_MEAN = "replace its direct contribution by its mean over the image set"
_WIDE = {"description_width": "initial"}
_TOGGLE = widgets.Layout(width="46px", padding="0px")


def build_controls(image_names: Sequence[str], num_layers: int) -> dict[str, widgets.Widget]:
    """Every control, unlinked, each with a stable CSS class ``csw-<name>`` (toggles: csw-attn-<l>, csw-mlp-<l>)."""
    c = {
        "image": widgets.Dropdown(options=image_options(image_names), value=0, description="Image", style=_WIDE,
                                  tooltip="the image shown: its decomposition fills the grid, the bars and the maps",
                                  layout=widgets.Layout(width="260px")),
        "upload": widgets.FileUpload(accept="image/*", multiple=False, description="Add image",
                                     tooltip="add an image to the set and show it",
                                     layout=widgets.Layout(width="auto")),
        "labels": widgets.Text(description="Labels", continuous_update=False, style=_WIDE,
                               placeholder="comma-separated zero-shot labels", layout=widgets.Layout(flex="1 1 300px"),
                               tooltip="the zero-shot candidate labels, separated by commas (Enter applies them)"),
        "label": widgets.Dropdown(options=[], description="Colour by", style=_WIDE,
                                  tooltip="the label the grid, the bars and the maps show contributions to",
                                  layout=widgets.Layout(width="220px")),
        "mode": widgets.ToggleButtons(options=CLICK_MODES, value="inspect", description="Click a head to",
                                      tooltips=CLICK_TIPS, style={**_WIDE, "button_width": "112px"}),
        "embedding": widgets.ToggleButton(value=False, description="Ablate embedding",
                                          tooltip="mean-ablate the embedding term: what the class token carries "
                                                  "from the input (patch and position embeddings, before any "
                                                  f"layer); {_MEAN}", layout=widgets.Layout(width="140px")),
        "clear": widgets.Button(description="Clear ablations", layout=widgets.Layout(width="120px"),
                                tooltip="restore everything: no head, attention layer, MLP or embedding ablated"),
        "last4": widgets.Button(description="Ablate all but last 4", layout=widgets.Layout(width="160px"),
                                tooltip="mean-ablate every attention layer except the last four (the paper's check)"),
        # Hidden (its place kept) until a stoppable job runs: ExplorerWidget._show_stop switches it.
        "stop": widgets.Button(description="Stop", icon="stop", disabled=True,
                               layout=widgets.Layout(width="80px", visibility="hidden"),
                               tooltip="stop the pass over the image set (what is done is kept; resume() or a "
                                       "head click continues); shown only while it runs"),
    }
    for kind, prefix, what, mark in (("attn", "A", "attention layer", "its row is hatched on the grid"),
                                     ("mlp", "M", "MLP of layer", "its cell in the grid's MLP column is crossed")):
        for l in range(num_layers):
            c[f"{kind}{l}"] = widgets.ToggleButton(value=False, description=f"{prefix}{l}", layout=_TOGGLE,
                                                   tooltip=f"mean-ablate {what} {l}: {_MEAN} ({mark})")
    for name, control in c.items():
        kind = name.rstrip("0123456789")
        control.add_class(f"csw-{kind}-{name[len(kind):]}" if kind in ("attn", "mlp") else f"csw-{name}")
    return c


def control_rows(c: dict[str, widgets.Widget], num_layers: int) -> list[widgets.Widget]:
    wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
    return [widgets.HBox([c["image"], c["upload"], c["labels"], c["label"]], layout=wrap),
            widgets.HBox([c["mode"], c["clear"], c["last4"], c["embedding"], precision_toggle(c), c["stop"]],
                         layout=wrap),
            widgets.HBox([widgets.Label("Mean-ablate attention layer:")] + [c[f"attn{l}"] for l in range(num_layers)],
                         layout=wrap),
            widgets.HBox([widgets.Label("Mean-ablate MLP of layer:")] + [c[f"mlp{l}"] for l in range(num_layers)],
                         layout=wrap)]


def image_options(names: Sequence[str]) -> list[tuple[str, int]]:
    return [(f"{i + 1}: {name}", i) for i, name in enumerate(names)]


def link_controls(owner: Any, c: dict[str, widgets.Widget], num_layers: int) -> None:
    """Tie every control to its trait, both ways."""
    c["label"].options = list(owner.labels)
    link_control(owner, "image_index", c["image"])
    link_control(owner, "mode", c["mode"])
    link_control(owner, "label", c["label"])
    _link_labels(owner, c["labels"])
    _link_ablation(owner, c, num_layers)


def replace_options(owner: Any, name: str, menu: widgets.Dropdown, options: list, value: Any) -> None:
    """New options for the menu linked to trait ``name``, then ``owner.<name> = value``. A menu selects
    its first option when its options change; holding the owner's notifications hides that step."""
    with owner.hold_trait_notifications():
        menu.options = options
        setattr(owner, name, value)


def _link_labels(owner: Any, box: widgets.Text) -> None:
    """The labels trait (a list) and the text box ("cat, dog")."""
    busy = [False]

    def push(change: dict) -> None:
        if not busy[0]:
            box.value = ", ".join(change["new"])

    def pull(change: dict) -> None:
        busy[0] = True
        try:
            propose(owner, "labels", change["new"], "setting labels",
                    undo=lambda: setattr(box, "value", ", ".join(owner.labels)))
        finally:
            busy[0] = False

    box.value = ", ".join(owner.labels)
    owner.observe(push, names="labels")
    box.observe(pull, names="value")


def _link_ablation(owner: Any, c: dict[str, widgets.Widget], num_layers: int) -> None:
    """The ablation trait and the A<l> / M<l> / embedding toggles (heads are set by grid clicks)."""
    syncing = [False]
    toggles = [c[f"{kind}{l}"] for kind in ("attn", "mlp") for l in range(num_layers)] + [c["embedding"]]

    def push(change: dict) -> None:
        ablation: Ablation = change["new"]
        syncing[0] = True
        try:
            for l in range(num_layers):
                c[f"attn{l}"].value = l in ablation.attn_layers
                c[f"mlp{l}"].value = l in ablation.mlps
            c["embedding"].value = ablation.embedding
        finally:
            syncing[0] = False

    def pull(change: dict) -> None:
        if syncing[0]:
            return
        current = owner.ablation
        owner.ablation = Ablation(heads=current.heads, embedding=c["embedding"].value,
                                  attn_layers={l for l in range(num_layers) if c[f"attn{l}"].value},
                                  mlps={l for l in range(num_layers) if c[f"mlp{l}"].value})

    push({"new": owner.ablation})
    owner.observe(push, names="ablation")
    for toggle in toggles:
        toggle.observe(owner._guarded(pull, "changing the ablation"), names="value")


def on_click(button: widgets.Button, action: Callable[[], Any], guard: Callable, doing: str) -> None:
    """Run ``action()`` when ``button`` is clicked; errors go to the widget's error area."""
    button.on_click(guard(lambda _: action(), doing))
