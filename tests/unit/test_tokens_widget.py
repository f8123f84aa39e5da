"""TokenExplorer driven from Python, and the static token figures."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import mimebundle
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.text import Text

from clipsurgery_widgets.engine.attribution import token_attributions
from clipsurgery_widgets.engine.errors import ImageInputError
from clipsurgery_widgets.engine.regions import display_step
from clipsurgery_widgets.figures import figure_bytes
from clipsurgery_widgets.figures.tokens import TOP_COLORS, token_colors, token_figure
from clipsurgery_widgets.widgets import plotting
from clipsurgery_widgets.widgets.state import InvalidStateError
from clipsurgery_widgets.widgets.tokens import TokenExplorer

CAPTION = "A cat, lying on a soft sofa."
INJECTION = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def image():
    gen = np.random.default_rng(1)
    return gen.integers(0, 256, size=(96, 144, 3), dtype=np.uint8)


@pytest.fixture
def widget(explainer, image):
    w = TokenExplorer(explainer, image, CAPTION)
    assert w.wait(30)
    assert w.error is None, w.error
    return w


def shown(w) -> dict:
    return w.view.describe()


def heat_values(w) -> np.ndarray:
    return shown(w)["heat_values"]


# --- chips ---------------------------------------------------------------------------------------

def test_chips_are_the_shown_tokens_marked_top_three(widget, explainer, image):
    expected = token_attributions(explainer, image, CAPTION)
    shown = np.flatnonzero(expected.shown)
    chips = widget.chips
    assert [c["token"] for c in chips] == list(shown)
    assert [c["text"] for c in chips] == ["A", "cat", ",", "lying", "on", "a", "soft", "sofa", "."]
    colors = {c["token"]: c["color"] for c in chips}
    for color, token in zip(TOP_COLORS, expected.order[:3]):
        assert colors[token] == color
    assert sum(c is not None for c in colors.values()) == 3
    for chip in chips:  # the score is on hover, with the rank
        t = chip["token"]
        assert f"{expected.scores[t]:+.4f}" in chip["tooltip"]
        assert chip["rank"] == int(expected.rank[t]) + 1
    assert "9 words shown" in widget.status and "11 BPE tokens" in widget.status


def test_colour_scale_marks_every_chip(widget, explainer, image):
    widget.marking = "scale"
    widget.cmap = "viridis"
    expected = token_attributions(explainer, image, CAPTION)
    colors = {c["token"]: c["color"] for c in widget.chips}
    assert all(c is not None for c in colors.values())
    assert colors[expected.order[0]] == to_hex(colormaps["viridis"](1.0))
    assert colors[expected.order[-1]] == to_hex(colormaps["viridis"](0.0))


def test_toggles_for_special_tokens_punctuation_and_score_source(widget, explainer, image):
    widget.include_special = True
    texts = [c["text"] for c in widget.chips]
    assert len(texts) == 11 and texts[0] == "<start>" and texts[-1] == "<end>"
    widget.include_punctuation = False
    assert [c["text"] for c in widget.chips] == ["<start>", "A", "cat", "lying", "on", "a", "soft", "sofa", "<end>"]
    widget.include_special = False
    widget.include_punctuation = True
    widget.score = "max"
    expected = token_attributions(explainer, image, CAPTION, score="max")
    assert {c["token"]: c["rank"] for c in widget.chips} == {int(t): int(expected.rank[t]) + 1
                                                            for t in np.flatnonzero(expected.shown)}
    assert widget.attribution.score_source == "max"
    with pytest.raises(ValueError, match="score"):
        widget.score = "mean"


def test_invalid_settings_raise_and_change_nothing(widget):
    before = {name: getattr(widget, name) for name in ("score", "marking", "cmap", "opacity", "size", "depth",
                                                        "include_special", "selected_token", "point")}
    chips = widget.chips
    for name, value in [("score", "mean"), ("marking", "bold"), ("cmap", "no-such-map"), ("opacity", 1.5),
                        ("size", 100), ("size", (224, 100)), ("size", "224"), ("depth", 0), ("depth", 7),
                        ("depth", 2.5), ("include_special", 1), ("selected_token", 99), ("selected_token", -1),
                        ("point", (5000, 10)), ("point", "middle")]:
        with pytest.raises(InvalidStateError, match=name):
            setattr(widget, name, value)
    assert {name: getattr(widget, name) for name in before} == before
    assert widget.chips == chips and not widget.busy
    with pytest.raises(ValueError, match="from 1 to 6"):  # tiny-random-vit has 6 blocks
        widget.depth = 7


def test_controls_follow_the_traits_and_back(widget):
    c = widget.controls
    widget.opacity = 0.35
    assert c["opacity"].value == 0.35 and shown(widget)["opacity"] == [0.35]
    c["marking"].value = "scale"  # a control edit sets the trait
    assert widget.marking == "scale" and all(chip["color"] for chip in widget.chips)
    c["depth"].value = 3
    assert widget.depth == 3
    widget.wait(30)
    assert widget.error is None and widget.attribution is not None
    widget.cmap = "plasma"  # any matplotlib map, offered in the dropdown as it is
    assert c["cmap"].value == "plasma" and widget.cmap == "plasma"
    assert shown(widget)["colorscale"][0] == tuple(tuple(v) for v in plotting.plotly_colorscale("plasma"))


def test_any_input_size_the_engine_takes(widget, explainer, image):
    widget.size = (160, 256)  # not square and not in the dropdown: kept as it is
    assert widget.wait(30) and widget.error is None
    assert widget.size == (160, 256) and widget.controls["size"].value == (160, 256)
    assert widget.controls["size"].label == "160x256"
    assert widget.attribution.grid == (10, 16)
    expected = token_attributions(explainer, image, CAPTION, size=(160, 256))
    np.testing.assert_allclose(widget.attribution.scores, expected.scores, atol=1e-5)
    widget.controls["size"].value = 336
    assert widget.size == 336 and widget.wait(30) and widget.attribution.grid == (21, 21)


def test_selected_token_and_point_are_state(widget):
    a = widget.attribution
    widget.selected_token = 2
    assert shown(widget)["map_token"] == 2 and widget.heat_title == f"Map of “{a.tokens.texts[2]}”"
    widget.point = (10, 20)
    assert shown(widget)["marker"] == (10.0, 20.0, 0)
    np.testing.assert_array_equal(widget.region.order, a.tokens_at(a.patch_at(10, 20)).order)
    widget.reset()
    assert widget.selected_token is None and widget.point is None and widget.region is None


def test_a_new_image_keeps_the_caption_and_clears_the_click(widget, image):
    widget.click(10, 10)
    widget.image = image[::-1].copy()
    assert widget.point is None and shown(widget)["marker"] is None
    assert widget.wait(30) and widget.error is None
    assert [c["text"] for c in widget.chips][:2] == ["A", "cat"]
    assert shown(widget)["images"] == [image.shape[:2]]


def test_resnet_has_no_depth_setting(tiny_resnet, image):
    w = TokenExplorer(tiny_resnet, image, "a cat")
    assert w.wait(30) and w.error is None
    assert w.controls["depth"].disabled and [c["text"] for c in w.chips] == ["a", "cat"]
    w.depth = 20  # ignored by a ResNet, but shown as set
    assert w.controls["depth"].value == 20


def test_clicking_a_chip_shows_its_map(widget):
    a = widget.attribution
    caption_z = heat_values(widget)
    step = display_step(a.image_size, widget.heat_side)
    np.testing.assert_allclose(caption_z, a.caption_map[::step, ::step], atol=1e-3)
    position = 1  # the chip of "cat"
    widget.chip_buttons[position].click()
    token = widget.chips[position]["token"]
    assert widget.selected_token == token and a.tokens.texts[token] == "cat"
    z = heat_values(widget)
    np.testing.assert_allclose(z, a.image_map(token)[::step, ::step], atol=1e-3)
    assert not np.allclose(z, caption_z, atol=1e-3)
    assert shown(widget)["titles"] == ["Map of “cat”"]
    assert shown(widget)["map_token"] == token and shown(widget)["selected"] == token
    assert [c["selected"] for c in shown(widget)["chips"]] == [c["token"] == token for c in widget.chips]
    widget.chip_buttons[position].click()  # a second click: back to the caption
    assert widget.selected_token is None and shown(widget)["map_token"] is None
    np.testing.assert_allclose(heat_values(widget), caption_z)
    widget.click_chip(position)  # the public route the chip's handler takes
    assert widget.selected_token == token


def test_clicking_the_image_reranks_the_tokens_for_that_patch(widget):
    a = widget.attribution
    x, y = 120.0, 10.0
    widget.view.panel.click(0, x, y)  # the route a plotly click on the heat map takes
    assert widget.error is None
    patch = a.patch_at(x, y)
    expected = a.tokens_at(patch)
    np.testing.assert_array_equal(widget.region.order, expected.order)
    ranks = {c["token"]: c["rank"] for c in widget.chips}
    assert [t for t, _ in sorted(ranks.items(), key=lambda kv: kv[1])] == list(expected.order)
    top = {c["token"]: c["color"] for c in widget.chips if c["color"]}
    assert top == {int(t): color for t, color in zip(expected.order[:3], TOP_COLORS)}
    assert shown(widget)["marker"] == (x, y, 0) and widget.point == (x, y)
    gw = a.grid[1]
    assert f"row {patch // gw}, col {patch % gw}" in shown(widget)["info"]
    # options re-rank at the same patch
    widget.score = "max"
    np.testing.assert_array_equal(widget.region.order, widget.attribution.tokens_at(patch).order)
    widget.size = 336  # a new grid: the ranking follows the clicked pixel
    widget.wait(30)
    assert widget.attribution.grid == (21, 21)
    np.testing.assert_array_equal(widget.region.order,
                                  widget.attribution.tokens_at(widget.attribution.patch_at(x, y)).order)
    widget.controls["whole"].click()  # the "whole caption" button
    assert widget.region is None and widget.selected_token is None and shown(widget)["marker"] is None


def test_a_click_outside_the_image_is_reported(widget):
    with pytest.raises(ValueError, match="outside"):
        widget.click(5000, 10)
    assert "outside" in widget.error and widget.region is None
    widget.click(10, 10)  # still working
    assert widget.region is not None and widget.error is None


def test_empty_caption_shows_an_error_and_the_widget_keeps_working(widget):
    with pytest.raises(InvalidStateError, match="empty"):
        widget.caption = "   "
    widget.controls["caption"].value = "   "  # typed in the box: refused, shown in the widget
    widget.wait(30)
    assert widget.error is not None and "empty" in widget.error
    assert widget.chips  # the previous view stays
    widget.caption = "a dog in the snow"
    widget.wait(30)
    assert widget.error is None
    assert [c["text"] for c in widget.chips] == ["a", "dog", "in", "the", "snow"]


def test_no_caption_yet_is_not_an_error(explainer, image):
    w = TokenExplorer(explainer, image)
    w.wait(30)
    assert w.error is None and "caption" in w.status.lower() and w.chips == []


def test_user_strings_are_escaped(widget):
    widget.caption = f"a cat {INJECTION} & <b>bold</b>"
    widget.wait(30)
    assert widget.error is None
    info = shown(widget)["info"]
    texts = [c["text"] for c in widget.chips]
    # chips are button labels (DOM text nodes): the caption's characters as typed
    assert "<" in texts and "img" in texts
    for token_text in texts:
        widget.select_token(widget.chips[texts.index(token_text)]["token"])
        title = shown(widget)["titles"][0]
        assert "<" not in title and ">" not in title
        html_parts = shown(widget)["info"]
        assert "<img" not in html_parts and "<b>" not in html_parts
    assert "<img" not in info and "<b>bold" not in info
    widget.select_token(widget.chips[texts.index("<")]["token"])
    assert shown(widget)["titles"] == ["Map of “&lt;”"]
    assert "<" in shown(widget)["chip_texts"]  # chips carry the raw text (button labels are not HTML)


def test_long_caption_reports_the_truncation(widget):
    widget.caption = " ".join(["cat"] * 90)
    widget.wait(30)
    assert widget.error is None
    assert "truncated" in widget.status and "dropped" in shown(widget)["info"]
    assert len(widget.chips) == 75


def test_bad_image_is_reported(widget):
    with pytest.raises(ImageInputError):
        widget.image = np.zeros((4, 4, 7), dtype=np.uint8)
    assert widget.error is not None
    assert widget.chips  # still showing the last good result


def test_figure_of_the_current_view_and_of_several_pairs(widget, image):
    fig = widget.figure()
    assert len(fig.axes) == 2
    texts = {t.get_text() for t in fig.findobj(Text)}
    assert {"A", "cat", "sofa"} <= texts
    widget.select_token(2)
    fig = widget.figure()
    assert any("map of" in t.get_text() for t in fig.findobj(Text))
    other = image[::2, ::2].copy()
    grid = widget.figure(pairs=[(image, "a cat"), (other, "a sofa"), (image, "snow on a roof")], ncols=2)
    assert len(grid.axes) == 6
    words = {t.get_text() for t in grid.findobj(Text)}
    assert {"cat", "sofa", "roof"} <= words
    assert figure_bytes(grid, "png", dpi=40)[:4] == b"\x89PNG"


def test_display_leaves_a_static_png(widget):
    bundle = mimebundle(widget)
    assert "image/png" in bundle


# --- static figures ------------------------------------------------------------------------------

def test_token_colors():
    scores = np.array([0.0, 0.5, 0.2, 0.9, -0.3])
    shown = np.array([False, True, True, True, True])
    order = np.array([3, 1, 2, 4])
    assert token_colors(scores, order, shown, "top3") == [None, TOP_COLORS[1], TOP_COLORS[2], TOP_COLORS[0], None]
    scaled = token_colors(scores, order, shown, "scale", "gray")
    assert scaled[0] is None
    assert scaled[3] == to_hex(colormaps["gray"](1.0)) and scaled[4] == to_hex(colormaps["gray"](0.0))
    with pytest.raises(ValueError, match="marking"):
        token_colors(scores, order, shown, "bold")


def test_figure_text_is_not_parsed_as_math(explainer, image):
    a = token_attributions(explainer, image, "$x^2$ costs $5")
    fig = token_figure((image, a))
    figure_bytes(fig, "png", dpi=40)  # mathtext would fail or render x²
    assert "$" in {t.get_text() for t in fig.findobj(Text)}


def test_figure_input_errors(explainer, image):
    a = token_attributions(explainer, image, "a cat")
    with pytest.raises(ValueError, match="computed for"):
        token_figure((image[:50], a))
    with pytest.raises(ValueError, match="one per pair"):
        token_figure([(image, a), (image, a)], tokens=[1])
    with pytest.raises(ValueError, match="at least one"):
        token_figure([])
