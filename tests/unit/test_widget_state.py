"""The one validation rule for widget state (widgets/state.py): refuse with InvalidStateError, change nothing."""
from __future__ import annotations

import ipywidgets as widgets
import pytest
import traitlets

from clipsurgery_widgets.widgets.state import (Choice, ColourMap, Flag, InputSize, Integer, InvalidStateError,
                                               LabelList, Number, OneOf, OptionalNumber, link_control)


class Owner(traitlets.HasTraits):
    opacity = Number(0.6, low=0.0, high=1.0)
    depth = Integer(6, low=1, high=12)
    view = Choice(("overlay", "grid"))
    outline = Flag(False)
    threshold = OptionalNumber(None, low=0.0, high=1.0)
    size = InputSize(224)
    labels = LabelList(("cat", "dog"), targets=True)
    label = OneOf("labels", "cat")
    cmap = ColourMap("jet")

    def __init__(self):
        super().__init__()
        self.explainer = type("E", (), {"model": type("M", (), {"patch_size": 16})()})()
        self.shown = []

    def _show_error(self, exc, doing):
        self.shown.append(str(exc))


@pytest.mark.parametrize("name,bad", [
    ("opacity", 2), ("opacity", float("nan")), ("opacity", True), ("opacity", "0.5"),
    ("depth", 0), ("depth", 13), ("depth", 2.5), ("view", "segmentation"), ("outline", 1),
    ("threshold", -0.1), ("size", 230), ("size", (224, 0)), ("size", "big"), ("labels", " , "),
    ("labels", "cat+"), ("label", "zebra"), ("cmap", "nocolours"),
])
def test_bad_values_raise_and_change_nothing(name, bad):
    owner = Owner()
    before = getattr(owner, name)
    with pytest.raises(InvalidStateError, match=f"Owner.{name} = .* is not valid: "):
        setattr(owner, name, bad)
    assert getattr(owner, name) == before
    assert isinstance(InvalidStateError("x"), ValueError)


def test_good_values_are_kept_as_the_engine_takes_them():
    owner = Owner()
    owner.depth = 3.0
    owner.size = [160, 256]
    owner.labels = "cat, sofa, cat"
    owner.threshold = None
    assert (owner.depth, owner.size, owner.labels, owner.threshold) == (3, (160, 256), ["cat", "sofa"], None)
    owner.label = "sofa"
    assert owner.label == "sofa"


def test_linked_control_follows_and_a_refused_edit_is_put_back_and_shown():
    owner, slider = Owner(), widgets.FloatSlider(min=0, max=1)
    link_control(owner, "opacity", slider)
    assert slider.value == 0.6
    owner.opacity = 0.3
    assert slider.value == 0.3
    text = widgets.Text()
    link_control(owner, "cmap", text)
    text.value = "nocolours"  # typed in the box: refused, put back, shown by the owner
    assert owner.cmap == "jet" and text.value == "jet" and "nocolours" in owner.shown[-1]
