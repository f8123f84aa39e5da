"""SamWidget driven from Python (the public routes plotly clicks take), read back through view.describe(),
and the paper-style SAM figure."""
from __future__ import annotations

import base64
import threading

import numpy as np
import pytest
from conftest import mimebundle
from matplotlib.colors import to_rgba

from clipsurgery_widgets.engine import maps
from clipsurgery_widgets.engine.errors import ClipSurgeryError, ImageInputError
from clipsurgery_widgets.engine.sam.refiner import SamRefiner
from clipsurgery_widgets.figures.sam import (
    BOX_COLOR,
    MASK_COLOR,
    NEGATIVE_COLOR,
    POSITIVE_COLOR,
    mask_overlay,
    mask_rgba,
    sam_figure,
)
from clipsurgery_widgets.widgets.sam import SamWidget
from clipsurgery_widgets.widgets.state import InvalidStateError

H, W = 96, 144
INJECTION = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


@pytest.fixture
def widget(explainer, tiny_sam, image):
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text="cat")
    assert w.wait(60)
    assert w.error is None, w.error
    return w


class PredictSpy:
    """Records the prompts of every SAM call of one refiner (an instance attribute, nothing global)."""

    def __init__(self, refiner: SamRefiner) -> None:
        self.wrapped = refiner.predictor.predict
        self.calls: list[dict] = []
        refiner.predictor.predict = self

    def __call__(self, point_coords=None, point_labels=None, box=None, **kwargs):
        self.calls.append({"points": None if point_coords is None else np.array(point_coords),
                           "labels": None if point_labels is None else np.array(point_labels),
                           "box": None if box is None else np.array(box)})
        return self.wrapped(point_coords=point_coords, point_labels=point_labels, box=box, **kwargs)


class GatedRefiner(SamRefiner):
    """A refiner whose embedding waits for the test's go-ahead: a stand-in for an 18 s computation."""

    def __init__(self, sam) -> None:
        super().__init__(sam)
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def set_image(self, image, progress=None):
        if progress is not None:
            progress(0.0, "waiting for the test")
        self.waiting.set()
        assert self.gate.wait(30)
        return super().set_image(image, progress)


def shown(w) -> dict:
    return w.view.describe()


def as_points(points: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(map(float, p)) for p in points]


# --- text -> map -> points -> mask -----------------------------------------------------------------

def test_text_gives_heat_points_and_mask(widget, explainer, image):
    e = explainer.explain(image, ["cat"], method="surgery")
    np.testing.assert_allclose(widget.heat, e.maps[0])
    d = shown(widget)
    step = d["heat_step"]
    assert step >= 1 and d["image"] == (H, W)
    np.testing.assert_allclose(d["heat"], e.maps[0][step // 2::step, step // 2::step], atol=1e-3)
    points, labels = maps.map_to_points(e.surgery.patch_scores[:, 0], e.grid, (H, W), threshold=0.8)
    assert len(points) > 0 and {0, 1} <= set(labels.tolist())
    np.testing.assert_array_equal(widget.auto_points[0], points)
    # The same points: in the heat panel, in what SAM holds, and in the SAM panel.
    assert d["auto_points"]["positive"] == as_points(points[labels == 1])
    assert d["auto_points"]["negative"] == as_points(points[labels == 0])
    np.testing.assert_array_equal(widget.points, points)
    np.testing.assert_array_equal(widget.point_labels, labels)
    assert d["points"]["positive"] == as_points(points[labels == 1])
    assert d["points"]["negative"] == as_points(points[labels == 0])
    assert d["colors"]["positive"] == [POSITIVE_COLOR] and d["colors"]["negative"] == [NEGATIVE_COLOR]
    assert d["colors"]["auto_positive"] == POSITIVE_COLOR and d["colors"]["auto_negative"] == NEGATIVE_COLOR
    # The best of SAM's three masks is shown, at full resolution for this small image.
    result = widget.result
    assert result.masks.shape == (3, H, W) and widget.candidate == result.best
    np.testing.assert_array_equal(widget.mask, result.masks[result.best])
    np.testing.assert_array_equal(widget.mask, widget.refiner.mask)
    np.testing.assert_array_equal(d["mask"], widget.mask)
    assert d["mask_visible"]
    assert widget.sam_ready and "SAM ready" in widget.sam_status
    assert "automatic points" in widget.status


def test_combined_target_uses_part_scores(explainer, tiny_sam, image):
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text="cat+grass")
    assert w.wait(60) and w.error is None, w.error
    parts = explainer.target_part_scores(image, "cat+grass")
    e = w.explanation
    points, labels = maps.combine_targets(parts, e.grid, (H, W), 0.8)
    np.testing.assert_array_equal(w.points, points)
    np.testing.assert_array_equal(w.point_labels, labels)


def test_threshold_moves_the_automatic_points_and_undo_brings_back(widget):
    before = widget.points.copy()
    spy = PredictSpy(widget.refiner)
    widget.threshold = 0.5
    e = widget.explanation
    points, labels = maps.map_to_points(e.surgery.patch_scores[:, 0], e.grid, (H, W), threshold=0.5)
    assert len(points) > len(before)
    np.testing.assert_array_equal(widget.points, points)
    np.testing.assert_array_equal(spy.calls[-1]["points"], points)
    assert shown(widget)["auto_points"]["positive"] == as_points(points[labels == 1])
    assert widget.controls["threshold"].value == 0.5
    assert widget.undo()
    np.testing.assert_array_equal(widget.points, before)


# --- clicks ----------------------------------------------------------------------------------------

def test_click_adds_a_positive_point_shown_and_sent_to_sam(widget):
    spy = PredictSpy(widget.refiner)
    before_result, before_mask = widget.result, shown(widget)["mask"]
    count = len(widget.points)
    widget.view.click(40.5, 30.5)  # what a browser click on the SAM panel does
    assert len(widget.points) == count + 1
    assert widget.points[-1].tolist() == [40, 30] and widget.point_labels[-1] == 1
    np.testing.assert_array_equal(spy.calls[-1]["points"][-1], [40, 30])
    d = shown(widget)
    assert (40.0, 30.0) in d["points"]["positive"]
    assert widget.result is not before_result
    np.testing.assert_array_equal(d["mask"], widget.mask)
    assert not np.array_equal(d["mask"], before_mask) or np.array_equal(before_result.mask, widget.mask)
    assert widget.last_click["action"] == "added a positive point at (40, 30)"
    assert "Added a positive point at (40, 30)" in widget.status


def test_clicking_the_heat_panel_also_adds_points(widget, explainer, tiny_sam, image):
    count = len(widget.points)
    widget.view.click(100, 70, panel="heat")
    assert widget.points[-1].tolist() == [100, 70] and len(widget.points) == count + 1
    with pytest.raises(ValueError, match="panel must be one of"):
        widget.view.click(1, 1, panel="left")
    w = SamWidget(explainer, SamRefiner(tiny_sam), image)  # no text: the heat panel shows nothing to click
    assert w.wait(60) and shown(w)["heat"] is None
    w.view.click(100, 70, panel="heat")
    assert len(w.points) == 0
    w.view.click(100, 70)
    assert w.points.tolist() == [[100, 70]]


def test_negative_points_by_mode_or_modifier_key(widget):
    widget.view.click(10, 10, alt=True)
    assert widget.point_labels[-1] == 0
    assert (10.0, 10.0) in shown(widget)["points"]["negative"]
    widget.mode = "negative"
    assert widget.controls["mode"].value == "negative"
    widget.view.click(130, 10)
    assert widget.point_labels[-1] == 0
    widget.view.click(130, 85, alt=True)  # the modifier flips the mode
    assert widget.point_labels[-1] == 1
    widget.view.click(70, 85, shift=True)  # Shift too, when plotly passes it on
    assert widget.point_labels[-1] == 1
    widget.controls["mode"].value = "positive"  # the control sets the mode too
    assert widget.mode == "positive"
    widget.view.click(70, 20, shift=True)
    assert widget.point_labels[-1] == 0
    widget.click(75, 25, modifier=True)  # the Python route
    assert widget.point_labels[-1] == 0


def test_click_near_a_point_removes_it(widget):
    widget.clear()
    widget.click(20, 20)
    widget.click(100, 60, modifier=True)
    assert widget.points.tolist() == [[20, 20], [100, 60]] and widget.point_labels.tolist() == [1, 0]
    radius = widget.remove_radius
    assert radius == pytest.approx(max(3.0, 0.015 * W))
    widget.view.click(100 + radius * 0.6, 60)
    assert widget.points.tolist() == [[20, 20]]
    assert shown(widget)["points"]["negative"] == []
    assert "Removed the point at (100, 60)" in widget.status
    widget.view.click(20 + radius * 1.5, 20)  # not close enough: a new point
    assert len(widget.points) == 2


def test_undo_redo_reset_clear_buttons(widget):
    auto = widget.points.copy()
    widget.click(5, 5)
    widget.click(6, 90)
    c = widget.controls
    assert not c["undo"].disabled and c["redo"].disabled
    c["undo"].click()
    assert len(widget.points) == len(auto) + 1 and not c["redo"].disabled
    c["redo"].click()
    assert widget.points[-1].tolist() == [6, 90]
    c["clear"].click()
    d = shown(widget)
    assert len(widget.points) == 0 and widget.mask is None and not d["mask_visible"]
    assert d["points"] == {"positive": [], "negative": []} and d["box"] is None and d["outline"] == []
    c["reset"].click()
    np.testing.assert_array_equal(widget.points, auto)
    assert widget.mask is not None


def test_box_drag(widget):
    widget.mode = "box"
    assert shown(widget)["box_mode"]
    spy = PredictSpy(widget.refiner)
    widget.view.select_box([90.2, 20.0], [10.0, 70.7])  # what plotly reports for a box drawn on the SAM panel
    np.testing.assert_allclose(widget.box, [20.0, 10.0, 90.2, 70.7], atol=1e-4)
    np.testing.assert_allclose(spy.calls[-1]["box"], [20.0, 10.0, 90.2, 70.7], atol=1e-4)
    assert widget.error is None, widget.error
    d = shown(widget)
    np.testing.assert_allclose(d["box"], [20.0, 10.0, 90.2, 70.7], atol=1e-4)
    assert d["colors"]["box"] == BOX_COLOR
    calls = len(spy.calls)
    widget.view.select_box(None, None)  # a box on the heat panel has no x/y range: ignored
    assert len(spy.calls) == calls and widget.error is None
    widget.drag_box(10, 60, 50, 20)  # the Python route
    np.testing.assert_allclose(widget.box, [10, 20, 50, 60])
    widget.mode = "positive"
    assert not shown(widget)["box_mode"]


# --- candidates and display --------------------------------------------------------------------------

def test_candidate_masks_are_selectable(widget):
    result = widget.result
    control = widget.controls["candidates"]
    assert [value for _, value in control.options] == [0, 1, 2] and control.value == result.best
    for (text, _), score in zip(control.options, result.scores):
        assert f"{score:.3f}" in text
    other = (result.best + 1) % 3
    control.value = other
    assert widget.candidate == other
    np.testing.assert_array_equal(widget.mask, result.masks[other])
    np.testing.assert_array_equal(shown(widget)["mask"], result.masks[other])
    third = (other + 1) % 3
    widget.candidate = third  # from Python: the control follows
    assert control.value == third
    np.testing.assert_array_equal(shown(widget)["mask"], result.masks[third])
    widget.click(7, 7)  # a new prediction shows its best mask again
    assert widget.candidate == widget.result.best == control.value
    with pytest.raises(InvalidStateError, match="there are 3"):
        widget.candidate = 3
    assert widget.candidate == widget.result.best  # unchanged


def test_opacity_and_outline_only(widget):
    widget.opacity = 0.25
    assert widget.controls["opacity"].value == 0.25
    d = shown(widget)
    assert d["mask_opacity"] == 0.25
    assert d["outline"] == []  # the filled view has no outline
    widget.outline_only = True
    d = shown(widget)
    assert not d["mask_visible"]
    rings = d["outline"]
    assert len(rings) >= 1
    vertices = np.concatenate(rings)
    assert len(vertices) > 4
    mask = widget.mask
    # Every outline vertex lies between a mask pixel and a background pixel.
    for x, y in vertices:
        cols = [int(np.floor(x)), int(np.ceil(x))]
        rows = [int(np.floor(y)), int(np.ceil(y))]
        window = mask[np.clip(rows, 0, H - 1)][:, np.clip(cols, 0, W - 1)]
        assert window.any() and (not window.all() or x in (0, W - 1) or y in (0, H - 1))
    assert d["colors"]["outline"] == MASK_COLOR
    widget.controls["outline"].value = False
    d = shown(widget)
    assert not widget.outline_only and d["mask_visible"] and d["outline"] == []


# --- background embedding ---------------------------------------------------------------------------

def test_widget_stays_usable_while_the_embedding_computes(explainer, tiny_sam, image):
    refiner = GatedRefiner(tiny_sam)
    w = SamWidget(explainer, refiner, image, text="cat")
    assert refiner.waiting.wait(10)
    assert not w.sam_ready and "SAM: waiting for the test" in w.sam_status
    assert w.controls["sam_progress"].layout.display is None  # the progress bar shows
    assert w.busy
    assert w.wait(30, name="explain")  # the text's map arrives while SAM is still busy
    assert w.heat is not None and len(w.auto_points[0]) > 0
    w.text = "dog"
    assert w.wait(30, name="explain") and w.explanation.labels == ("dog",)
    w.threshold = 0.6
    assert len(w.points) == 0 and w.mask is None  # nothing for SAM yet
    w.click(10, 10)  # a click now only explains why nothing happens
    assert "still computing the image embedding" in w.status and len(refiner.points) == 0
    refiner.gate.set()
    assert w.wait(30) and w.sam_ready and w.error is None, w.error
    assert not w.busy
    np.testing.assert_array_equal(w.points, w.auto_points[0])  # dog's points at 0.6, applied once ready
    assert w.mask is not None and w.controls["sam_progress"].layout.display == "none"


def test_a_newer_image_discards_the_older_embedding(explainer, tiny_sam, image):
    refiner = GatedRefiner(tiny_sam)
    w = SamWidget(explainer, refiner, image, text="cat")
    assert refiner.waiting.wait(10)
    newer = image[::-1].copy()
    w.image = newer
    refiner.gate.set()
    assert w.wait(30) and w.error is None, w.error
    assert refiner.embeddings_computed == 1  # the first image's encoder run was abandoned
    assert refiner.image_key == refiner.image_key_of(newer) and w.sam_ready
    np.testing.assert_array_equal(w.image, newer)
    assert w.mask is not None


def test_points_read_empty_when_the_refiner_holds_another_image(widget, image):
    widget.refiner.set_image(image[:, ::-1].copy())  # someone uses the refiner elsewhere
    assert len(widget.points) == 0 and widget.mask is None
    with pytest.raises(ClipSurgeryError, match="another image outside this widget"):
        widget.click(3, 3)
    widget.image = image
    assert widget.wait(30) and widget.sam_ready
    widget.click(3, 3)
    assert widget.points[-1].tolist() == [3, 3]


# --- bad inputs ---------------------------------------------------------------------------------------

def test_errors_are_shown_and_the_widget_keeps_working(widget):
    with pytest.raises(ImageInputError):
        widget.image = np.zeros((4, 5, 7))
    assert widget.error and widget.image.shape == (H, W, 3)
    with pytest.raises(InvalidStateError, match="empty part"):
        widget.text = "cat+"
    assert widget.text == "cat"
    widget.controls["text"].value = "cat+"  # typed in the box: refused, shown, and the box put back
    assert "empty part" in widget.error and widget.text == "cat" and widget.controls["text"].value == "cat"
    widget.text = "dog"
    assert widget.controls["text"].value == "dog"
    assert widget.wait(30) and widget.error is None and widget.explanation.labels == ("dog",)
    with pytest.raises(ValueError, match="outside the 144x96 image"):
        widget.click(W + 5, 3)
    assert "outside" in widget.error
    widget.click(3, 3)
    assert widget.error is None and widget.points[-1].tolist() == [3, 3]
    for name, value, allowed in (("mode", "lasso", "one of 'positive'"), ("threshold", 1.5, "from 0 to 1"),
                                 ("opacity", -0.1, "from 0 to 1"), ("outline_only", 1, "True or False"),
                                 ("size", 100, "whole 16-pixel patches"), ("candidate", -1, ">= 0")):
        before = getattr(widget, name)
        with pytest.raises(InvalidStateError, match=allowed):
            setattr(widget, name, value)
        assert getattr(widget, name) == before  # nothing changed
    with pytest.raises(TypeError, match="needs a SamRefiner"):
        SamWidget(widget.explainer, object())


def test_non_square_input_size(explainer, tiny_sam, image):
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text="cat", size=(160, 224))
    assert w.wait(60) and w.error is None, w.error
    assert w.explanation.input_size == (160, 224) and w.explanation.grid == (10, 14)
    w.size = 192
    assert w.wait(60) and w.explanation.grid == (12, 12)


def test_user_text_is_escaped_in_titles(explainer, tiny_sam, image):
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text=INJECTION)
    assert w.wait(60)
    title = shown(w)["titles"]["heat"]
    assert "<img" not in title and "&lt;img" in title
    assert "<img" not in w._status_html.value


def test_no_text_means_clicks_only(explainer, tiny_sam, image):
    w = SamWidget(explainer, SamRefiner(tiny_sam), image)
    assert w.wait(60) and w.error is None
    assert w.heat is None and len(w.points) == 0 and w.mask is None
    assert "type a text" in shown(w)["titles"]["heat"]
    w.click(50, 50)
    assert w.points.tolist() == [[50, 50]] and w.mask is not None


# --- static output ----------------------------------------------------------------------------------

def test_figure_shows_points_in_paper_colours_and_the_mask(widget, image):
    widget.click(30, 40, modifier=True)
    fig = widget.figure()
    heat_ax, sam_ax = fig.axes[:2]
    positives = widget.points[widget.point_labels == 1]
    negatives = widget.points[widget.point_labels == 0]
    colours = {}
    for collection in sam_ax.collections:
        colours[tuple(np.round(collection.get_facecolor()[0], 3))] = collection.get_offsets()
    np.testing.assert_array_equal(colours[tuple(np.round(to_rgba(POSITIVE_COLOR), 3))], positives)
    np.testing.assert_array_equal(colours[tuple(np.round(to_rgba(NEGATIVE_COLOR), 3))], negatives)
    shown = sam_ax.images[0].get_array()
    np.testing.assert_array_equal(shown, mask_overlay(image, widget.mask, MASK_COLOR, widget.opacity))
    auto = widget.auto_points[0]
    offsets = np.concatenate([c.get_offsets() for c in heat_ax.collections])
    assert sorted(map(tuple, offsets.tolist())) == sorted(map(tuple, auto.astype(float).tolist()))
    assert heat_ax.get_title() == "CLIP Surgery: cat"


def test_display_carries_a_static_png(widget):
    bundle = mimebundle(widget)
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(b"\x89PNG")


def test_mask_overlay_and_rgba_planted():
    rgb = np.full((4, 5, 3), 100, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    out = mask_overlay(rgb, mask, "#ff0000", 0.5)
    np.testing.assert_array_equal(out[~mask], rgb[~mask])
    np.testing.assert_array_equal(out[mask], np.tile([178, 50, 50], (4, 1)))  # 0.5 * 100 + 0.5 * (255, 0, 0)
    rgba = mask_rgba(mask, "#00ff00")
    np.testing.assert_array_equal(rgba[mask], np.tile([0, 255, 0, 255], (4, 1)))
    assert (rgba[~mask] == 0).all()


def test_sam_figure_bad_inputs():
    rgb = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match the image's"):
        sam_figure(rgb, mask=np.zeros((12, 10), bool))
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        sam_figure(rgb, [[1, 1], [2, 2]], [1])
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        sam_figure(rgb, [[1, 1, 1]])
    with pytest.raises(ValueError, match="uint8"):
        sam_figure(rgb.astype(float))
    fig = sam_figure(rgb, [[1, 1]], [1], np.ones((10, 12), bool), box=[1, 1, 5, 5])
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 1
