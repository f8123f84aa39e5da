"""HeatmapExplorer driven from Python: set traits or controls, click by the route a real click takes,
and check what the widget shows (its view's describe() and heat(), status line, error area)."""
import base64
import threading
from datetime import datetime, timezone

import numpy as np
import pytest
from conftest import mimebundle
from matplotlib import colormaps

from clipsurgery_widgets.data.presets import COCO_80, PASCAL_CONTEXT_59
from clipsurgery_widgets.engine.errors import ImageInputError
from clipsurgery_widgets.engine.images import sample_image
from clipsurgery_widgets.engine.maps import overlay
from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer
from clipsurgery_widgets.widgets.state import InvalidStateError

LABELS = ["cat", "grass", "sky", "ground"]


@pytest.fixture(scope="module")
def cat():
    return sample_image("cat")


@pytest.fixture
def explorer(explainer, cat):
    w = HeatmapExplorer(explainer, cat, labels=LABELS)
    assert w.wait(60)
    yield w
    w.wait(60)


class Gated:
    """Wraps an Explainer: explain() waits for ``gate`` and can be told to fail."""

    def __init__(self, real):
        self.real, self.model = real, real.model
        self.gate, self.fail, self.calls = threading.Event(), None, []
        self.gate.set()

    def prepare_image(self, image):
        return self.real.prepare_image(image)

    def explain(self, image, labels, **kwargs):
        self.calls.append(list(labels))
        assert self.gate.wait(20)
        if self.fail is not None:
            raise self.fail
        return self.real.explain(image, labels, **kwargs)


def sent(widget):
    """Record what the widget's figure sends to the browser: "heat", "style" or "image"."""
    log = []
    widget.plots.watch(log.append)
    return log


def click(widget, panel, x, y):
    """A click on a heat map, by the route a real click takes."""
    widget.plots.panels.click(panel, x, y)


def minmax_grid(patch_scores, t, grid):
    """docs/algorithms.md#similarity-maps written out: one label's patch scores min-max normalised, on the grid."""
    s = patch_scores[:, t].astype(np.float64)
    return ((s - s.min()) / (s.max() - s.min())).reshape(grid)


def engine_segmentation(model, rgb, method, **settings):
    """The engine's segment() of ``rgb`` into LABELS with the widget's defaults: one class per label,
    short side 224, 224-pixel windows 112 apart; labels int [H, W]."""
    from clipsurgery_widgets.engine.segmentation import segment

    settings = {"prob_thd": 0.0, "area_thd": None, "pamr_steps": 0, "logit_scale": 40.0, **settings}
    return segment(model, rgb, [[label] for label in LABELS], method, short_side=224, crop=224, stride=112,
                   **settings).labels.numpy()


def test_first_view_shows_the_surgery_map_of_the_first_label(explorer, cat):
    e = explorer.explanation
    assert e.labels == tuple(LABELS) and e.surgery is not None and e.raw is not None
    assert explorer.label == "cat" and list(explorer.controls["label"].options) == LABELS
    assert "4 labels" in explorer.status and "grid 14x14" in explorer.status and explorer.error is None
    shown = explorer.describe()
    assert shown["view"] == "overlay" and shown["panels"] == 1 and shown["titles"] == ["CLIP Surgery: cat"]
    heat = explorer.plots.heat(0)
    # The patch grid travels; plotly interpolates it over the image with one cell per patch.
    assert np.abs(heat["values"] - minmax_grid(e.surgery.patch_scores, 0, e.grid)).max() <= 5e-5
    assert np.allclose(heat["scores"], e.surgery.patch_scores[:, 0].reshape(e.grid), atol=5e-6)
    height, width = cat.shape[:2]
    assert np.allclose(heat["x"], (np.arange(14) + 0.5) * width / 14 - 0.5)   # patch centres
    assert np.allclose(heat["y"], (np.arange(14) + 0.5) * height / 14 - 0.5)
    assert heat["smooth"]  # bilinear between patch centres, as the engine resizes
    assert "normalised %{z" in heat["hover"] and "raw score %{customdata" in heat["hover"]
    assert shown["image_formats"] == ["png"] and shown["images"] == [(height, width)]


def test_a_label_change_sends_heat_data_but_not_the_image(explorer):
    figure = explorer.current_figure
    before = explorer.plots.heat(0)["values"]
    log = sent(explorer)
    explorer.controls["labels"].value = "cat, grass, sky, ground, dog"  # what pressing Enter sends
    explorer.wait(30)
    assert explorer.explanation.labels[-1] == "dog" and explorer.labels == LABELS + ["dog"]
    assert not np.allclose(explorer.plots.heat(0)["values"], before)  # multi-label surgery changed cat's map
    assert "heat" in log and "image" not in log
    assert explorer.current_figure is figure  # same FigureWidget, updated in place


def test_style_changes_send_style_only(explorer):
    log = sent(explorer)
    explorer.cmap = "viridis"
    explorer.opacity = 0.35
    shown = explorer.describe()
    reference = colormaps["viridis"](np.linspace(0, 1, len(shown["colorscale"][0])))
    for (position, colour), rgba in zip(shown["colorscale"][0], reference):
        assert colour == "rgb({},{},{})".format(*(int(v * 255) for v in rgba[:3]))
    assert shown["cmap"] == "viridis" and shown["opacity"] == 0.35
    assert explorer.controls["cmap"].value == "viridis" and explorer.controls["opacity"].value == 0.35
    assert "heat" not in log and "image" not in log and "style" in log


def test_any_matplotlib_colour_map_is_offered(explorer):
    explorer.cmap = "cividis"  # not in the menu: added to it
    assert explorer.controls["cmap"].value == "cividis" and explorer.describe()["cmap"] == "cividis"
    with pytest.raises(InvalidStateError, match="colour map"):
        explorer.cmap = "rainbowish"
    assert explorer.cmap == "cividis"


def test_threshold_outline_follows_the_level(explorer):
    explorer.threshold = 0.7
    assert explorer.controls["threshold"].value == 0.7 and explorer.describe()["outlined"] == [True]
    lines = explorer.plots.heat(0)["outline"]
    xs, ys = np.concatenate([l[:, 0] for l in lines]), np.concatenate([l[:, 1] for l in lines])
    assert len(xs) > 10
    heat_map = explorer.explanation.surgery.maps[0]
    # Every outline point lies on the 0.7 level of the map (bilinear reading between pixels).
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    x1, y1 = np.minimum(x0 + 1, heat_map.shape[1] - 1), np.minimum(y0 + 1, heat_map.shape[0] - 1)
    fx, fy = xs - x0, ys - y0
    value = (heat_map[y0, x0] * (1 - fx) * (1 - fy) + heat_map[y0, x1] * fx * (1 - fy)
             + heat_map[y1, x0] * (1 - fx) * fy + heat_map[y1, x1] * fx * fy)
    inside = (xs > 0.5) & (xs < heat_map.shape[1] - 1.5) & (ys > 0.5) & (ys < heat_map.shape[0] - 1.5)
    assert np.abs(value[inside] - 0.7).max() < 0.05
    explorer.threshold = None
    assert explorer.plots.heat(0)["outline"] == [] and explorer.controls["threshold"].value == 0.0
    explorer.controls["threshold"].value = 0.5  # the slider: 0 is "no outline"
    assert explorer.threshold == 0.5 and explorer.describe()["outlined"] == [True]
    explorer.controls["threshold"].value = 0.0
    assert explorer.threshold is None and explorer.describe()["outlined"] == [False]


def test_views(explorer, cat):
    e = explorer.explanation
    figure = explorer.current_figure
    explorer.view = "grid"
    shown = explorer.describe()
    assert shown["panels"] == len(LABELS) and shown["titles"] == LABELS and shown["methods"] == ["clip_surgery"] * 4
    for i in range(len(LABELS)):
        assert np.abs(explorer.plots.heat(i)["values"] - minmax_grid(e.surgery.patch_scores, i, e.grid)).max() <= 5e-5

    explorer.view = "compare"
    explorer.label = "sky"
    raw, surgery = explorer.plots.heat(0), explorer.plots.heat(1)
    assert np.abs(raw["values"] - minmax_grid(e.raw.patch_scores, 2, e.grid)).max() <= 5e-5
    assert np.abs(surgery["values"] - minmax_grid(e.surgery.patch_scores, 2, e.grid)).max() <= 5e-5
    shown = explorer.describe()
    assert shown["titles"] == ["raw CLIP: sky", "CLIP Surgery: sky"] and shown["panels"] == 2
    assert explorer.controls["label"].value == "sky" and explorer.controls["view"].value == "compare"

    explorer.view = "segmentation"
    assert explorer.wait(60)
    seg = explorer.plots.heat(0)
    expected = engine_segmentation(explorer.explainer.model, cat, "clip_surgery", depth=explorer.depth)
    rows, cols = np.round(seg["y"]).astype(int), np.round(seg["x"]).astype(int)
    assert np.array_equal(seg["values"], expected[np.ix_(rows, cols)]) and not seg["smooth"]
    present = [LABELS[i] for i in np.unique(expected)]
    assert explorer.describe()["legend"] == present
    explorer.view = "overlay"
    assert explorer.describe()["legend"] == []
    assert explorer.current_figure is figure  # one FigureWidget for every view


def test_click_shows_every_labels_score_at_that_patch(explorer, cat):
    e = explorer.explanation
    chart = explorer.bar_chart
    assert explorer.describe()["bars"] is None and explorer.describe()["bar_chart"]  # there, empty
    click(explorer, 0, 301, 52)
    assert explorer.bar_chart is chart  # the first click fills the chart made with the widget
    bars = explorer.describe()["bars"]
    gh, gw = e.grid
    row, col = int(52.5 * gh / cat.shape[0]), int(301.5 * gw / cat.shape[1])
    assert bars["labels"] == LABELS and bars["highlight"] == "cat"
    assert np.allclose(bars["values"], e.surgery.patch_scores[row * gw + col], atol=1e-5)
    assert f"(row {row}, col {col})" in bars["title"]
    assert explorer.selected["row"] == row and explorer.selected["col"] == col
    assert explorer.describe()["marker"] == (301, 52, 0)
    # Compare view: the left panel is raw CLIP, so its click shows raw scores.
    explorer.view = "compare"
    scores = explorer.click(10, 10, panel=0)
    assert np.allclose(list(scores.values()), e.raw.patch_scores[0], atol=1e-6)
    assert explorer.describe()["bars"]["title"].startswith("raw CLIP")
    assert explorer.describe()["marker"] == (10, 10, 0)
    assert explorer.scores_at(10, 10) == pytest.approx(dict(zip(LABELS, e.surgery.patch_scores[0])))


def test_clicks_on_hidden_panels_are_ignored_and_clicks_outside_report(explorer):
    click(explorer, 2, 10, 10)  # the overlay view shows one panel: like a click on nothing
    assert explorer.describe()["bars"] is None and explorer.error is None
    click(explorer, 0, 5000, 5)
    assert "outside" in explorer.error and explorer.describe()["bars"] is None


def test_new_image_shows_progress_then_its_maps(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, cat, labels=LABELS)
    w.wait(30)
    click(w, 0, 10, 10)
    gated.gate.clear()
    astronaut = sample_image("astronaut")[::4, ::4]
    w.image = astronaut
    assert w.busy and w.status.startswith("Encoding the image and explaining 4 labels")
    shown = w.describe()
    assert shown["images"] == [astronaut.shape[:2]]                # the image shows at once
    assert shown["heat"] == [None] and shown["bars"] is None       # old maps and bars are gone
    gated.gate.set()
    w.wait(30)
    assert w.explanation.image_size == astronaut.shape[:2] and w.describe()["heat"] == [(14, 14)]


def test_stale_results_are_discarded(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, cat, labels=LABELS)
    w.wait(30)
    gated.gate.clear()
    w.labels = "cat, dog"
    w.labels = "cat, grass"       # typed before the first answer came back
    gated.gate.set()
    w.wait(30)
    assert w.explanation.labels == ("cat", "grass")
    assert gated.calls[-1] == ["cat", "grass"]


def test_model_failure_is_shown_and_the_widget_recovers(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, cat, labels=LABELS)
    w.wait(30)
    gated.fail = RuntimeError("CUDA out of memory")
    w.labels = "cat, dog"
    w.wait(30)
    assert w.error == "Something went wrong while explaining the image: RuntimeError: CUDA out of memory"
    assert "<details" in w._error_html.value and w.explanation.labels == tuple(LABELS)  # old view kept
    gated.fail = None
    w.labels = "cat, dog, sky"
    w.wait(30)
    assert w.error is None and w.explanation.labels == ("cat", "dog", "sky")


def test_bad_images_are_reported_in_the_widget(explorer, tmp_path):
    with pytest.raises(ImageInputError, match="not found"):
        explorer.image = tmp_path / "missing.png"
    assert "not found" in explorer.error
    explorer.controls["upload"].value = ({"name": "x.png", "type": "image/png", "size": 4,
                                          "content": memoryview(b"junk"), "last_modified": datetime.now(timezone.utc)},)
    assert "Could not read the uploaded data as an image" in explorer.error
    assert explorer.explanation is not None  # the previous image and maps stay
    good = (tmp_path / "ok.png")
    from PIL import Image
    Image.fromarray(sample_image("coffee")[::4, ::4]).save(good)
    explorer.controls["upload"].value = ({"name": "ok.png", "type": "image/png", "size": good.stat().st_size,
                                          "content": memoryview(good.read_bytes()), "last_modified": datetime.now(timezone.utc)},)
    explorer.wait(30)
    assert explorer.error is None and explorer.explanation.image_size == explorer.image.shape[:2]
    assert explorer.controls["upload"].value == ()


def test_label_errors_are_plain_and_escaped(explorer):
    explorer.controls["labels"].value = " , ,"
    assert "at least one label" in explorer.error
    assert explorer.labels == LABELS and explorer.controls["labels"].value == ", ".join(LABELS)  # put back
    explorer.controls["labels"].value = "cat, a++b"
    assert "empty part" in explorer.error and explorer.labels == LABELS
    with pytest.raises(InvalidStateError, match="empty part"):
        explorer.labels = ["cat", "a++b"]
    with pytest.raises(InvalidStateError, match="zebra"):
        explorer.label = "zebra"
    assert explorer.label == "cat"  # unchanged
    explorer.controls["labels"].value = "cat, <img src=x onerror=alert(1)>"
    explorer.wait(30)
    assert explorer.error is None
    explorer.label = "<img src=x onerror=alert(1)>"
    assert explorer.describe()["titles"] == ["CLIP Surgery: <img src=x onerror=alert(1)>"]  # shown as text
    sent_titles = explorer.plots.panels.describe()["titles"]
    assert "<img" not in "".join(sent_titles) and "&lt;img src=x" in sent_titles[0]
    assert "<img" not in explorer.plots.heat(0)["hover"]


def test_labels_keep_or_move_the_chosen_label(explorer):
    explorer.label = "sky"
    explorer.labels = "sky, cat"
    assert explorer.label == "sky" and list(explorer.controls["label"].options) == ["sky", "cat"]
    explorer.labels = ["dog", "cat"]  # sky is gone: the first label is shown
    assert explorer.label == "dog" and explorer.controls["label"].value == "dog"
    explorer.wait(30)
    assert explorer.describe()["titles"] == ["CLIP Surgery: dog"]


def test_settings_reach_the_explainer_and_bad_values_are_refused(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, cat, labels=["cat"], size=320, depth=3, redundancy="none")
    w.wait(30)
    e = w.explanation
    assert e.input_size == (320, 320) and e.grid == (20, 20) and e.redundancy == "none"
    assert w.controls["size"].value == "custom" and w.controls["custom_size"].layout.display is None
    assert w.controls["custom_size"].value == "320" and w.controls["depth"].value == 3
    w.redundancy = "auto"
    w.wait(30)
    assert w.explanation.redundancy == "empty"  # a single label: the empty-string redundancy
    w.controls["size"].value = 224
    w.wait(30)
    assert w.size == 224 and w.explanation.grid == (14, 14) and w.controls["custom_size"].layout.display == "none"
    for name, value, message in [("size", 100, "whole 16-pixel patches"), ("size", "big", "size"),
                                 ("depth", 9, "from 1 to 6"), ("depth", 0, "from 1"), ("depth", 2.5, "whole number"),
                                 ("view", "3d", "one of 'overlay'"), ("opacity", 2, "from 0 to 1"),
                                 ("opacity", "high", "a number"), ("threshold", 1.5, "threshold"),
                                 ("threshold", 0, "None for no outline"), ("redundancy", "some", "redundancy")]:
        before = getattr(w, name)
        with pytest.raises(InvalidStateError, match=message):
            setattr(w, name, value)
        assert getattr(w, name) == before, name  # nothing changed
    assert w.controls["opacity"].value == 0.6 and w.controls["depth"].value == 3


def test_size_takes_non_square_sizes_and_any_depth(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, cat, labels=["cat", "grass"])
    w.wait(30)
    w.size = (160, 320)
    w.depth = 1
    w.wait(30)
    assert w.explanation.input_size == (160, 320) and w.explanation.grid == (10, 20)
    assert w.controls["size"].value == "custom" and w.controls["custom_size"].value == "160x320"
    assert w.controls["depth"].value == 1 and w.describe()["heat"] == [(10, 20)]
    w.controls["custom_size"].value = "96 x 128"  # typed in the text field
    w.wait(30)
    assert w.size == (96, 128) and w.explanation.grid == (6, 8)
    w.controls["custom_size"].value = "100x100"   # refused: put back, error shown
    assert w.size == (96, 128) and w.controls["custom_size"].value == "96x128" and "16-pixel" in w.error
    w.size = 336
    assert w.controls["size"].value == 336 and w.controls["custom_size"].layout.display == "none"
    w.wait(30)
    assert w.explanation.input_size == (336, 336)


def test_presets_fill_the_labels():
    assert len(PASCAL_CONTEXT_59) == 59 and len(COCO_80) == 80
    assert "potted plant" in PASCAL_CONTEXT_59 and "toothbrush" in COCO_80


def test_preset_menu(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, None)
    assert w.status.startswith("Upload an image") and w.explanation is None
    shown = w.describe()
    assert shown["panels"] == 1 and shown["images"] == [None] and shown["heat"] == [None]
    w.controls["preset"].value = "PASCAL Context (59)"
    assert w.labels == list(PASCAL_CONTEXT_59) and gated.calls == []  # nothing to explain without an image


def test_static_figure_and_png_fallback(explorer, tmp_path):
    bundle = mimebundle(explorer)
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    fig = explorer.figure()
    assert fig.axes[0].get_title() == "CLIP Surgery: cat"
    explorer.view = "compare"
    assert [ax.get_title() for ax in explorer.figure().axes[:3]] == ["image", "raw CLIP", "CLIP Surgery"]
    explorer.view = "grid"
    assert len([ax for ax in explorer.figure().axes if ax.images]) == len(LABELS)
    explorer.view = "segmentation"
    assert explorer.figure().legends
    assert explorer.save(tmp_path / "seg.pdf").read_bytes().startswith(b"%PDF")


def test_resnet_has_no_depth_setting(tiny_resnet, cat):
    from clipsurgery_widgets.engine.explainer import Explainer

    w = HeatmapExplorer(Explainer(tiny_resnet, cache_dir=False), cat[::2, ::2], labels="cat, grass", size=(224, 288))
    assert w.wait(60) and w.error is None
    assert w.controls["depth"].disabled and w.explanation.grid == (7, 9)
    w.depth = 20  # ignored by the ResNet's surgery, so any depth >= 1 is accepted
    with pytest.raises(InvalidStateError, match=">= 1"):
        w.depth = 0
    assert w.wait(60) and w.depth == 20 and w.error is None and w.describe()["heat"] == [(7, 9)]


# --- dense methods: the method menu, the "methods" view, segmentation with any method -------------

def grid_of(explanation, method, label):
    """The normalised patch grid of one label for one method, from the engine's Explanation."""
    maps = explanation.mapset(method)
    return minmax_grid(maps.patch_scores, explanation.labels.index(label), explanation.grid)


def test_method_switch_shows_exactly_the_explainers_maps(explorer, explainer, cat):
    assert explorer.method == "clip_surgery" and explorer.describe()["method"] == "clip_surgery"
    surgery = explorer.plots.heat(0)["values"]
    explorer.method = "naclip"
    assert explorer.wait(60) and explorer.error is None
    reference = explainer.explain(cat, LABELS, method="naclip")  # feature surgery as the papers use it: off
    assert explorer.explanation.method == "naclip" and explorer.explanation.redundancy == "none"
    heat = explorer.plots.heat(0)
    assert np.abs(heat["values"] - grid_of(reference, "naclip", "cat")).max() <= 5e-5
    assert np.allclose(heat["scores"], reference.mapset("naclip").patch_scores[:, 0].reshape(reference.grid), atol=5e-6)
    assert not np.allclose(heat["values"], surgery, atol=1e-3)  # another method, other maps
    shown = explorer.describe()
    assert shown["titles"] == ["NACLIP: cat"] and shown["method"] == "naclip" and shown["methods"] == ["naclip"]
    assert explorer.controls["method"].value == "naclip"
    assert ("SCLIP", "sclip") in explorer.controls["method"].options
    explorer.controls["method"].value = "sclip"  # the menu
    assert explorer.wait(60) and explorer.method == "sclip"
    explorer.view = "grid"
    reference = explainer.explain(cat, LABELS, method="sclip")
    for i, label in enumerate(LABELS):
        assert np.abs(explorer.plots.heat(i)["values"] - grid_of(reference, "sclip", label)).max() <= 5e-5
    assert explorer.describe()["methods"] == ["sclip"] * len(LABELS)
    fig = explorer.figure()  # the static grid reads the same method
    assert fig._suptitle.get_text() == "SCLIP" and [ax.get_title() for ax in fig.axes if ax.images] == LABELS
    assert np.abs(np.asarray(fig.axes[0].images[0].get_array(), float)
                  - overlay(cat, reference.map_for("cat", "sclip"), "jet", 0.6)).max() <= 1.0
    explorer.feature_surgery = True  # on for every method
    assert explorer.wait(60) and explorer.controls["feature_surgery"].value == "on for all"
    reference = explainer.explain(cat, LABELS, method="sclip", feature_surgery=True)
    assert explorer.explanation.redundancy == "labels"
    assert np.abs(explorer.plots.heat(1)["values"] - grid_of(reference, "sclip", "grass")).max() <= 5e-5
    explorer.controls["feature_surgery"].value = "off for all"
    assert explorer.feature_surgery is False and explorer.controls["redundancy"].disabled
    assert explorer.scores_at(10, 10) == pytest.approx(dict(zip(LABELS, explorer.explanation.mapset("sclip")
                                                                .patch_scores[0])))
    with pytest.raises(InvalidStateError, match="one of 'raw'"):
        explorer.method = "gradcam"
    assert explorer.method == "sclip"


def test_methods_view_is_labels_by_methods_from_one_pass(tiny_vit, cat, monkeypatch):
    from clipsurgery_widgets.engine import explainer as explainer_module
    from clipsurgery_widgets.engine.explainer import Explainer

    passes, real = [], explainer_module.encode_dense_many

    def counted(model, pixels, methods):
        passes.append([name for name, _ in methods])
        return real(model, pixels, methods)

    monkeypatch.setattr(explainer_module, "encode_dense_many", counted)
    fresh = Explainer(tiny_vit, cache_dir=False)  # nothing cached: every map comes from this widget's pass
    compared = ("raw", "clip_surgery", "sclip", "naclip")
    w = HeatmapExplorer(fresh, cat, labels=LABELS, view="methods", compared=compared)
    assert w.wait(60) and w.error is None
    assert passes == [["sclip", "naclip"]]  # one pass for the ViT-block methods (raw and surgery: their own one)
    shown = w.describe()
    names = ["raw CLIP", "CLIP Surgery", "SCLIP", "NACLIP"]
    assert shown["panels"] == len(LABELS) * len(compared) and shown["shape"] == (len(LABELS), len(compared))
    assert shown["titles"] == [f"{name}: {label}" for label in LABELS for name in names]
    assert shown["methods"] == list(compared) * len(LABELS) and shown["compared"] == list(compared)
    assert shown["labels"] == [label for label in LABELS for _ in compared]
    assert w.controls["methods_row"].layout.display is None and w.controls["segmentation_row"].layout.display == "none"
    reference = fresh.explain(cat, LABELS, method="clip_surgery", methods=list(compared))
    assert len(passes) == 1  # the reference reads the same cached tokens
    for panel, (method, label) in enumerate(zip(shown["methods"], shown["labels"])):
        assert np.abs(w.plots.heat(panel)["values"] - grid_of(reference, method, label)).max() <= 5e-5, panel
    # A click on row "grass", column SCLIP shows SCLIP's scores of every label there.
    scores = w.click(10, 10, panel=len(compared) + 2)
    assert np.allclose(list(scores.values()), reference.mapset("sclip").patch_scores[0], atol=1e-5)
    bars = w.describe()["bars"]
    assert bars["title"].startswith("SCLIP score") and bars["highlight"] == "grass"
    # The toggles: GEM joins at the right, from one more pass for GEM alone.
    toggles = dict(zip(w.method_choices, w.controls["compared"].children))
    assert [t.value for t in toggles.values()] == [m in compared for m in w.method_choices]
    toggles["gem"].value = True
    assert w.compared == compared + ("gem",) and w.wait(60)
    assert passes[1:] == [["gem"]] and w.describe()["shape"] == (len(LABELS), 5)
    fig = w.figure()
    assert [ax.get_title() for ax in fig.axes[:6]] == ["image", *names, "GEM"]
    assert [fig.axes[6 * row].get_ylabel() for row in range(len(LABELS))] == LABELS
    toggles["raw"].value = False
    assert w.compared == ("clip_surgery", "sclip", "naclip", "gem")
    w.compared = ("naclip",)
    toggles["naclip"].value = False  # the last one stays: refused, put back, error shown
    assert w.compared == ("naclip",) and toggles["naclip"].value and "compared" in w.error
    w.compared = ["surgery", "raw"]  # CLIP Surgery's short name is read as clip_surgery
    assert w.compared == ("clip_surgery", "raw")
    for bad in [(), ("raw", "raw"), ("raw", "gradcam"), 3]:
        with pytest.raises(InvalidStateError, match="compared"):
            w.compared = bad
    assert w.compared == ("clip_surgery", "raw")


def test_segmentation_view_uses_the_engine_segment_with_its_settings(explorer, cat):
    explorer.view = "segmentation"
    explorer.method = "sclip"
    explorer.prob_thd, explorer.area_thd, explorer.pamr_steps, explorer.logit_scale = 0.3, 0.2, 2, 60.0
    assert explorer.wait(120) and explorer.error is None
    expected = engine_segmentation(explorer.explainer.model, cat, "sclip", prob_thd=0.3, area_thd=0.2, pamr_steps=2,
                                   logit_scale=60.0)
    assert np.array_equal(explorer.segmentation.labels, expected)
    heat = explorer.plots.heat(0)
    rows, cols = np.round(heat["y"]).astype(int), np.round(heat["x"]).astype(int)
    assert np.array_equal(heat["values"], expected[np.ix_(rows, cols)])
    shown = explorer.describe()
    assert shown["legend"] == [LABELS[i] for i in np.unique(expected)] and shown["titles"] == ["SCLIP: segmentation"]
    assert shown["segmentation"] == {"method": "sclip", "classes": LABELS, "short_side": 224, "crop": 224,
                                     "stride": 112, "logit_scale": 60.0, "prob_thd": 0.3, "area_thd": 0.2,
                                     "pamr_steps": 2}
    c = explorer.controls
    assert (c["prob_thd"].value, c["area_thd"].value, c["pamr_steps"].value, c["logit_scale"].value) == (0.3, 0.2, 2,
                                                                                                        60.0)
    assert c["segmentation_row"].layout.display is None and c["methods_row"].layout.display == "none"
    fig = explorer.figure()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == shown["legend"]
    assert fig.axes[1].get_title() == "SCLIP segmentation"
    c["area_thd"].value = 0.0  # the slider's 0 is "off"
    c["prob_thd"].value = 1.0  # no pixel is that sure: everything is the first label
    assert explorer.area_thd is None and explorer.wait(120)
    assert explorer.describe()["legend"] == ["cat"] and explorer.describe()["segmentation"]["area_thd"] is None
    for name, value in [("logit_scale", 0), ("pamr_steps", -1), ("prob_thd", 1.5), ("area_thd", -0.1)]:
        before = getattr(explorer, name)
        with pytest.raises(InvalidStateError, match=name):
            setattr(explorer, name, value)
        assert getattr(explorer, name) == before


def test_class_names_are_sent_to_plotly_as_text(explainer, cat):
    labels = ["<b>cat</b>", "grass & <i>sky</i>"]
    w = HeatmapExplorer(explainer, cat, labels=labels, view="segmentation")
    assert w.wait(120) and w.error is None
    sent = w.plots.panels.describe()["legend"]
    assert sent and not any("<" in name for name in sent)
    present = [labels[i] for i in np.unique(w.segmentation.labels)]
    assert w.describe()["legend"] == present and w.describe()["titles"] == ["CLIP Surgery: segmentation"]
    w.view = "methods"
    assert w.wait(60)
    assert not any("<" in t for t in w.plots.panels.describe()["titles"])
    assert w.describe()["titles"][0] == "raw CLIP: <b>cat</b>"


def test_resnet_refuses_vit_only_methods(tiny_resnet, cat):
    from clipsurgery_widgets.engine.explainer import Explainer

    resnet = Explainer(tiny_resnet, cache_dir=False)
    w = HeatmapExplorer(resnet, cat[::2, ::2], labels="cat, grass", size=(224, 288))
    assert w.wait(60) and w.compared == ("raw", "clip_surgery")
    assert list(w.controls["method"].options) == [("raw CLIP", "raw"), ("CLIP Surgery", "clip_surgery")]
    for name, value in [("method", "sclip"), ("compared", ("raw", "naclip"))]:
        before = getattr(w, name)
        with pytest.raises(InvalidStateError, match="ViT|one of"):
            setattr(w, name, value)
        assert getattr(w, name) == before
    with pytest.raises(InvalidStateError, match="ViT"):
        HeatmapExplorer(resnet, cat, method="gem")
    w.method, w.view = "raw", "methods"
    assert w.wait(60) and w.error is None and w.explanation.method == "raw"
    assert w.describe()["shape"] == (2, 2) and w.describe()["heat"] == [(7, 9)] * 4


# --- issue 15: a figure sized to the view, clear controls, nothing computed in the constructor ---------------------

def test_the_figure_drops_a_big_grid_when_the_view_needs_few_panels(explorer):
    small = explorer.describe()
    assert small["panels"] == 1 and small["traces"] == 2 * small["capacity"] + 1 and small["capacity"] <= 4
    explorer.labels = list(PASCAL_CONTEXT_59)
    explorer.view = "grid"
    assert explorer.wait(60)
    grid = explorer.describe()
    assert grid["panels"] == 59 and grid["traces"] >= 2 * 59 + 1 and grid["shape"] == (10, 6)
    explorer.labels = "cat, dog, tree, sky"
    explorer.view = "overlay"
    assert explorer.wait(60)
    after = explorer.describe()
    assert after["panels"] == 1 and after["traces"] == small["traces"]  # not the grid's 121
    assert after["heat"][0] is not None and after["titles"] == ["CLIP Surgery: cat"]
    explorer.view = "compare"  # the small views share the small figure
    assert explorer.describe()["traces"] == small["traces"]


def test_the_figure_follows_the_cell_width_and_leaves_room_for_the_toolbar(explorer):
    from clipsurgery_widgets.widgets.plotting import MODEBAR_ROOM

    layout = explorer.current_figure.layout
    assert layout.width is None and layout.autosize is not False  # plotly fills the cell
    assert layout.margin.t >= MODEBAR_ROOM >= 34
    assert explorer.current_figure._config.get("responsive") is True  # redrawn when the window resizes


@pytest.mark.parametrize("n, shape", [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)),
                                      (9, (3, 3)), (16, (4, 4)), (59, (10, 6))])
def test_grids_are_balanced(n, shape):
    from clipsurgery_widgets.widgets.heatmap_plan import panel_plan

    assert panel_plan("grid", [f"label {i}" for i in range(n)], None).shape == shape


def test_four_labels_are_a_two_by_two_grid(explorer):
    explorer.view = "grid"
    shown = explorer.describe()
    assert shown["shape"] == (2, 2)
    domains = [(explorer.current_figure.layout[f"xaxis{'' if p == 0 else p + 1}"].domain,
                explorer.current_figure.layout[f"yaxis{'' if p == 0 else p + 1}"].domain) for p in range(4)]
    assert len({x for x, _ in domains}) == 2 and len({y for _, y in domains}) == 2


def test_the_bar_chart_is_there_before_the_first_click(explainer, cat):
    w = HeatmapExplorer(explainer, cat, labels=LABELS)
    chart = w.bar_chart
    assert chart is not None and chart in w.plots.bar_box.children and w.describe()["bars"] is None
    assert w.wait(60)
    w.click(100, 80)
    assert w.bar_chart is chart and w.describe()["bars"]["labels"] == LABELS
    w.image = sample_image("coffee")  # a new image: the chart empties again, and stays
    assert w.describe()["bars"] is None and w.bar_chart is chart and len(chart.data[0].x) == 0
    w.wait(60)


def test_controls_that_do_nothing_in_a_view_are_disabled(explorer):
    c = explorer.controls
    expected = {"overlay": dict(label=False, cmap=False, threshold=False, method=False),
                "grid": dict(label=True, cmap=False, threshold=False, method=False),
                "compare": dict(label=False, cmap=False, threshold=False, method=True),
                "methods": dict(label=True, cmap=False, threshold=False, method=True),
                "segmentation": dict(label=True, cmap=True, threshold=True, method=False)}
    for view, disabled in expected.items():
        explorer.view = view
        assert {name: c[name].disabled for name in disabled} == disabled, view
    explorer.wait(60)


def test_every_toggle_and_menu_says_what_it_does(explorer):
    c = explorer.controls
    for name in ("preset", "upload", "label", "method", "feature_surgery", "redundancy", "size", "depth", "cmap",
                 "opacity", "threshold", "prob_thd", "area_thd", "pamr_steps", "logit_scale", "precision"):
        assert len(c[name].tooltip or "") > 10, name
    assert len(c["view"].tooltips) == len(c["view"].options) and all(len(t) > 10 for t in c["view"].tooltips)
    assert all("methods view" in t.tooltip for t in c["compared"].children)


def test_preset_menu_returns_to_custom_when_the_labels_are_edited(explorer):
    menu = explorer.controls["preset"]
    assert menu.value == "" and dict(menu.options)["custom"] == ""
    menu.value = "COCO (80)"
    assert explorer.labels == list(COCO_80) and menu.value == "COCO (80)"
    explorer.controls["labels"].value = explorer.controls["labels"].value + ", unicorn"  # edited by hand
    assert menu.value == "" and "unicorn" in explorer.labels
    explorer.labels = list(PASCAL_CONTEXT_59)  # set from Python: the menu names the preset
    assert menu.value == "PASCAL Context (59)"
    explorer.wait(60)


def test_the_constructor_returns_before_the_first_result_with_progress_shown(explainer, cat):
    gated = Gated(explainer)
    gated.gate.clear()  # the explanation cannot finish until the gate opens
    w = HeatmapExplorer(gated, cat, labels=LABELS)
    try:
        assert w.explanation is None and w.busy and "Encoding the image" in w.status
        shown = w.describe()
        assert shown["images"] == [cat.shape[:2]] and shown["heat"] == [None]  # the photo shows at once
    finally:
        gated.gate.set()
    assert w.wait(60) and w.describe()["heat"][0] is not None


def test_the_bar_chart_has_no_toolbar_over_its_title():
    from clipsurgery_widgets.widgets.plotting import bar_figure

    config = bar_figure()._config
    assert config["displayModeBar"] is False and config["responsive"] is True
