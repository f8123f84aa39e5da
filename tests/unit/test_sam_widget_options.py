"""SamWidget's point options (threshold level / quantile, max points), the absent-label warning, one mask
per region with its exports, the steady mask row, and a constructor that computes nothing itself."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from clipsurgery_widgets.engine import maps
from clipsurgery_widgets.engine.sam.export import load_mask, rle_to_mask
from clipsurgery_widgets.engine.sam.presence import DEFAULT_ABSENT_BELOW, label_presence
from clipsurgery_widgets.engine.sam.refiner import SamRefiner
from clipsurgery_widgets.widgets import sam as sam_module
from clipsurgery_widgets.widgets.sam import SamWidget
from clipsurgery_widgets.widgets.sam_controls import MASK_ROW_HEIGHT
from clipsurgery_widgets.widgets.state import InvalidStateError

H, W = 96, 144


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


@pytest.fixture
def widget(explainer, tiny_sam, image):
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text="cat")
    assert w.wait(60) and w.error is None, w.error
    return w


def expected_points(w, **rule):
    e = w.explanation
    return maps.map_to_points(e.surgery.patch_scores[:, 0], e.grid, (H, W), threshold=w.threshold, **rule)


def settle(w):
    assert w.wait(60) and w.error is None, w.error


# --- threshold as a level or a quantile, at most N points -------------------------------------------

def test_quantile_and_max_points_controls_set_the_automatic_points(widget):
    w, c = widget, widget.controls
    c["threshold_mode"].value = "quantile"
    settle(w)
    assert w.threshold_mode == "quantile"
    points, labels = expected_points(w, threshold_mode="quantile")
    np.testing.assert_array_equal(w.auto_points[0], points)
    np.testing.assert_array_equal(w.points, points)  # and SAM was given them
    c["max_points"].value = 2
    settle(w)
    assert w.max_points == 2
    points, labels = expected_points(w, threshold_mode="quantile", max_points=2)
    assert labels.tolist() == [1, 1, 0, 0]
    np.testing.assert_array_equal(w.points, points)
    d = w.view.describe()
    assert len(d["auto_points"]["positive"]) == 2 and len(d["points"]["positive"]) == 2
    c["max_points"].value = 0  # the box's "no limit"
    assert w.max_points is None
    np.testing.assert_array_equal(w.points, expected_points(w, threshold_mode="quantile")[0])
    w.threshold_mode = "value"
    assert c["threshold_mode"].value == "value"
    np.testing.assert_array_equal(w.points, expected_points(w)[0])


def test_bad_point_settings_are_refused_with_the_widget_unchanged(widget):
    before = widget.points.copy()
    for name, value in (("max_points", 0), ("max_points", -3), ("threshold_mode", "percent"),
                        ("absent_below", 0.7), ("threshold", 1.5)):
        with pytest.raises(InvalidStateError, match=name):
            setattr(widget, name, value)
    np.testing.assert_array_equal(widget.points, before)
    assert widget.error is None and widget.max_points is None and widget.controls["max_points"].value == 0


# --- the absent-label warning -----------------------------------------------------------------------

def test_absent_text_gets_a_warning_instead_of_a_mask(explainer, tiny_sam, image):
    presence = label_presence(explainer, image, "dog")
    cutoff = round(presence.probability + 0.01, 2)  # just above dog's probability: dog counts as absent
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text="dog", absent_below=cutoff)
    settle(w)
    np.testing.assert_allclose(w.presence.probs, presence.probs, atol=1e-6)
    assert w.absent and w.warning and "dog" in w.warning and f"{presence.probability:.1%}" in w.warning
    line = w.controls["presence"]
    assert line.layout.display is None and "dog" in line.value and "Warning" in line.value
    assert len(w.auto_points[0]) > 0  # the map's points are shown on the heat panel ...
    assert w.mask is None and len(w.points) == 0  # ... but SAM got none: no confident mask
    d = w.view.describe()
    assert not d["mask_visible"] and "no automatic mask" in d["titles"]["sam"]
    w.reset()  # "Automatic points": segment anyway
    assert w.mask is not None and len(w.points) == len(w.auto_points[0])
    w.absent_below = 0.0  # the check off: the warning goes and the points are applied
    assert not w.absent and w.warning is None and line.layout.display == "none"
    np.testing.assert_array_equal(w.points, w.auto_points[0])


def test_present_text_and_the_default_cutoff(widget):
    assert widget.absent_below == DEFAULT_ABSENT_BELOW == widget.controls["absent_below"].value
    assert widget.presence is not None and widget.presence.text == "cat"
    assert widget.presence.probability >= DEFAULT_ABSENT_BELOW and not widget.absent  # random weights: spread out
    assert widget.warning is None and widget.controls["presence"].layout.display == "none"
    assert widget.mask is not None


def test_nothing_to_compare_with_still_shows_the_map(explainer, tiny_sam, image):
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text="cat", compare_with=["cat"])
    settle(w)
    assert w.presence is None and w.heat is not None and w.mask is not None
    assert "No absent-label check" in w.warning and "at least one other label" in w.warning
    w.compare_with = "cat, dog"
    settle(w)
    assert w.presence.labels == ("cat", "dog") and w.warning is None


# --- one mask per region ----------------------------------------------------------------------------

def test_instances_mode_one_mask_per_region(widget, tmp_path):
    w, c = widget, widget.controls
    single = w.mask.copy()
    w.threshold_mode, w.threshold = "quantile", 0.6
    c["instances"].value = True
    settle(w)
    e = w.explanation
    expected = w.refiner.predict_instances(e.surgery.patch_scores[:, 0], e.grid, threshold=0.6,
                                           threshold_mode="quantile", points_per_instance=3, max_instances=8)
    found = w.instance_masks
    assert len(found) == len(expected) >= 2
    np.testing.assert_array_equal(found.masks, expected.masks)
    assert all(c[name].disabled for name in ("mode", "undo", "redo", "reset", "clear"))
    assert c["candidates"].layout.visibility == "hidden"
    assert [v for _, v in c["instance_pick"].options] == list(range(len(found))) and w.instance == 0
    assert c["instance_links"].value.count('download="instance-') == len(found)
    d = w.view.describe()
    assert d["mask_visible"] and set(np.unique(d["mask_labels"])) - {0} <= set(range(1, len(found) + 1))
    np.testing.assert_array_equal(d["mask_labels"] > 0, found.masks.any(axis=0))
    assert "regions" in d["titles"]["sam"]
    prompt = found.prompts[0]
    assert d["points"]["positive"] == [tuple(map(float, p)) for p in prompt.points[prompt.labels == 1]]

    # A click inside instance k's own pixels chooses it; the interactive prompts are untouched.
    before = w.refiner.points.copy()
    k = len(found) - 1
    only = found.masks[k] & ~found.masks[k + 1:].any(axis=0)
    ys, xs = np.nonzero(only)
    w.view.click(float(xs[0]), float(ys[0]))
    assert w.instance == k and c["instance_pick"].value == k and f"Instance {k + 1}" in w.status
    np.testing.assert_array_equal(w.refiner.points, before)
    w.undo()  # editing is off in this mode
    np.testing.assert_array_equal(w.refiner.points, before)

    # Exports: one file per instance, and a summary with prompts, scores and masks.
    paths = w.save_instances(tmp_path)
    assert [p.name for p in paths] == [f"instance-{i + 1}.png" for i in range(len(found))]
    for path, mask in zip(paths, found.masks):
        np.testing.assert_array_equal(load_mask(path), mask)
    import json

    summary = json.loads((tmp_path / "instances.json").read_text())
    np.testing.assert_array_equal(rle_to_mask(summary[1]["mask"]), found.masks[1])
    np.testing.assert_array_equal(load_mask(w.save_instance(1, tmp_path / "one.json")), found.masks[1])
    with pytest.raises(Exception, match="No instance"):
        w.save_instance(len(found), tmp_path / "x.png")

    c["instances"].value = False  # back to the single mask, as it was
    assert w.instance_masks is None and not c["mode"].disabled and not c["clear"].disabled
    assert c["instance_pick"].layout.display == "none" and c["instance_links"].layout.display == "none"
    assert c["candidates"].layout.visibility == "visible"
    assert w.mask is not None and w.view.describe()["mask_visible"]
    assert set(np.unique(w.view.describe()["mask_labels"])) <= {0, 1}
    assert single.shape == w.mask.shape


def test_instances_refused_index(widget):
    with pytest.raises(InvalidStateError, match="instance"):
        widget.instance = 0  # the mode is off: there are none


# --- layout: the steady mask row, a plot that follows its cell ----------------------------------------

def test_mask_row_keeps_its_place_when_it_empties(widget):
    c = widget.controls
    mask_row = next(child for child in widget.children if "csw-row-mask" in child._dom_classes)
    assert mask_row.layout.min_height == MASK_ROW_HEIGHT
    assert c["candidates"].layout.min_width  # the buttons' width is kept, so the sliders beside stay put
    assert c["candidates"].layout.visibility == "visible" and len(c["candidates"].options) == 3
    widget.clear()
    assert widget.mask is None and c["candidates"].layout.visibility == "hidden"
    assert c["candidates"].layout.display != "none"  # hidden, not removed: its box stays


def test_plot_fills_its_cell_and_has_no_toolbar(widget):
    fig = widget.view.fig
    assert fig.layout.width is None and fig.layout.autosize is True
    assert fig._config.get("displayModeBar") is False


def test_constructor_returns_before_the_map_is_computed(explainer, tiny_sam, image, monkeypatch):
    gate, entered = threading.Event(), threading.Event()
    real = sam_module.map_point_scores

    def slow(*args, **kwargs):
        entered.set()
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(sam_module, "map_point_scores", slow)
    w = SamWidget(explainer, SamRefiner(tiny_sam), image, text="cat")
    try:
        assert w.explanation is None and w.busy  # the constructor returned while the map is still to come
        assert entered.wait(30)
        assert "Explaining" in w.status
    finally:
        gate.set()
    settle(w)
    assert w.explanation is not None and w.mask is not None
