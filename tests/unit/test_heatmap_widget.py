"""HeatmapExplorer driven from Python: set traits, fire the handlers a click or keystroke fires, and
check what the widget shows (figure data, status line, error area)."""
import base64
import threading
from datetime import datetime, timezone

import numpy as np
import pytest
from matplotlib import colormaps

from clipsurgery_widgets.data.presets import COCO_80, PASCAL_CONTEXT_59
from clipsurgery_widgets.engine.errors import ImageInputError, TextInputError
from clipsurgery_widgets.engine.images import sample_image
from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer

HEAT, OUTLINE, PER_PANEL = 0, 1, 2
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


def positions(trace):
    """(rows, cols) in image pixels of a heat trace's cells, from its uniform grid."""
    z = np.asarray(trace.z)
    return ([trace.y0 + trace.dy * i for i in range(z.shape[0])],
            [trace.x0 + trace.dx * j for j in range(z.shape[1])])


def heat(w, panel=0):
    return w.current_figure.data[panel * PER_PANEL + HEAT]


def sent(figure):
    """Record the property paths a FigureWidget sends to the browser."""
    log = []

    def record(change):
        message = change["new"]
        if message:
            for key in ("restyle_data", "style_data", "relayout_data", "layout_data"):
                log.extend((message.get(key) or {}).keys())
    figure.observe(record, names=["_py2js_restyle", "_py2js_relayout", "_py2js_update"])
    return log


def click(figure, panel, x, y):
    """What the browser sends when a heat map is clicked."""
    figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"trace_indexes": [panel * PER_PANEL + HEAT], "point_indexes": [[0, 0]], "xs": [x], "ys": [y]},
        "device_state": {"alt": False, "ctrl": False, "meta": False, "shift": False, "button": 0, "buttons": 1},
        "selector": None}


def minmax_grid(patch_scores, t, grid):
    """SPEC 5 written out: one label's patch scores min-max normalised, on the patch grid."""
    s = patch_scores[:, t].astype(np.float64)
    return ((s - s.min()) / (s.max() - s.min())).reshape(grid)


def test_first_view_shows_the_surgery_map_of_the_first_label(explorer, cat):
    e = explorer.explanation
    assert e.labels == tuple(LABELS) and e.surgery is not None and e.raw is not None
    assert explorer.label == "cat" and list(explorer.controls["label"].options) == LABELS
    assert "4 labels" in explorer.status and "grid 14x14" in explorer.status and explorer.error is None
    trace = heat(explorer)
    # The patch grid travels; plotly interpolates it over the image with one cell per patch.
    assert np.abs(np.asarray(trace.z) - minmax_grid(e.surgery.patch_scores, 0, e.grid)).max() <= 5e-5
    assert np.allclose(np.asarray(trace.customdata), e.surgery.patch_scores[:, 0].reshape(e.grid), atol=5e-6)
    height, width = cat.shape[:2]
    assert trace.dx == pytest.approx(width / 14) and trace.dy == pytest.approx(height / 14)
    assert trace.x0 == pytest.approx(width / 28 - 0.5) and trace.y0 == pytest.approx(height / 28 - 0.5)
    assert trace.zsmooth == "best"  # bilinear between patch centres, as the engine resizes
    assert "normalised %{z" in trace.hovertemplate and "raw score %{customdata" in trace.hovertemplate
    image = explorer.current_figure.layout.images[0]
    assert image.source.startswith("data:image/png;base64,") and (image.sizex, image.sizey) == (width, height)


def test_a_label_change_sends_heat_data_but_not_the_image(explorer):
    figure = explorer.current_figure
    before = np.asarray(heat(explorer).z)
    log = sent(figure)
    explorer.controls["labels"].value = "cat, grass, sky, ground, dog"  # what pressing Enter sends
    explorer.wait(30)
    assert explorer.explanation.labels[-1] == "dog"
    assert not np.allclose(np.asarray(heat(explorer).z), before)  # multi-label surgery changed cat's map
    assert "z" in log and not any(key.startswith("images") for key in log)
    assert explorer.current_figure is figure  # same FigureWidget, updated in place


def test_style_changes_send_style_only(explorer):
    log = sent(explorer.current_figure)
    explorer.cmap = "viridis"
    explorer.opacity = 0.35
    trace = heat(explorer)
    reference = colormaps["viridis"](np.linspace(0, 1, len(trace.colorscale)))
    for (position, colour), rgba in zip(trace.colorscale, reference):
        assert colour == "rgb({},{},{})".format(*(int(v * 255) for v in rgba[:3]))
    assert trace.opacity == 0.35
    assert "z" not in log and "customdata" not in log and log


def test_threshold_outline_follows_the_level(explorer):
    explorer.threshold = 0.7
    outline = explorer.current_figure.data[OUTLINE]
    xs = np.array([v for v in outline.x if v is not None], float)
    ys = np.array([v for v in outline.y if v is not None], float)
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
    assert not [v for v in explorer.current_figure.data[OUTLINE].x if v is not None]


def test_views(explorer, cat):
    e = explorer.explanation
    explorer.view = "grid"
    figure = explorer.current_figure
    visible = [i for i in range(len(LABELS) + 1) if figure.data[i * PER_PANEL + HEAT].visible]
    assert visible == list(range(len(LABELS)))
    assert [a.text for a in figure.layout.annotations[:4]] == LABELS
    for i in range(len(LABELS)):
        assert np.abs(np.asarray(heat(explorer, i).z) - minmax_grid(e.surgery.patch_scores, i, e.grid)).max() <= 5e-5

    explorer.view = "compare"
    explorer.label = "sky"
    raw, surgery = heat(explorer, 0), heat(explorer, 1)
    assert np.abs(np.asarray(raw.z) - minmax_grid(e.raw.patch_scores, 2, e.grid)).max() <= 5e-5
    assert np.abs(np.asarray(surgery.z) - minmax_grid(e.surgery.patch_scores, 2, e.grid)).max() <= 5e-5
    assert [a.text for a in explorer.current_figure.layout.annotations[:2]] == ["raw CLIP: sky", "CLIP Surgery: sky"]
    assert not heat(explorer, 2).visible

    explorer.view = "segmentation"
    seg = heat(explorer, 0)
    expected = e.segmentation("surgery")[np.ix_(*positions(seg))]
    assert np.array_equal(np.asarray(seg.z), expected) and seg.zsmooth is False
    present = [LABELS[i] for i in np.unique(e.segmentation("surgery"))]
    figure = explorer.current_figure
    assert [t.name for t in figure.data if t.showlegend] == present and figure.layout.showlegend
    explorer.view = "overlay"
    assert not explorer.current_figure.layout.showlegend
    assert explorer.current_figure is figure  # one FigureWidget for every view


def test_click_shows_every_labels_score_at_that_patch(explorer, cat):
    e = explorer.explanation
    assert explorer.bar_chart is None
    click(explorer.current_figure, 0, 301, 52)
    bars = explorer.bar_chart.data[0]
    gh, gw = e.grid
    row, col = int(52.5 * gh / cat.shape[0]), int(301.5 * gw / cat.shape[1])
    assert list(bars.x) == LABELS
    assert np.allclose(bars.y, e.surgery.patch_scores[row * gw + col], atol=1e-5)
    assert f"(row {row}, col {col})" in explorer.bar_chart.layout.title.text
    assert explorer.selected["row"] == row and explorer.selected["col"] == col
    marker = explorer.current_figure.data[-1]
    assert list(marker.x) == [301] and list(marker.y) == [52]
    assert explorer._bar_box.layout.display is None
    # Compare view: the left panel is raw CLIP, so its click shows raw scores.
    explorer.view = "compare"
    scores = explorer.click(10, 10, panel=0)
    assert np.allclose(list(scores.values()), e.raw.patch_scores[0], atol=1e-6)
    assert explorer.bar_chart.layout.title.text.startswith("raw CLIP")
    assert explorer.scores_at(10, 10) == pytest.approx(dict(zip(LABELS, e.surgery.patch_scores[0])))


def test_empty_click_events_are_ignored_and_clicks_outside_report(explorer):
    explorer.current_figure._js2py_pointsCallback = {
        "event_type": "plotly_click", "points": {"trace_indexes": [], "point_indexes": [], "xs": [], "ys": []},
        "device_state": None, "selector": None}
    assert explorer.bar_chart is None and explorer.error is None
    click(explorer.current_figure, 0, 5000, 5)
    assert "outside" in explorer.error


def test_new_image_shows_progress_then_its_maps(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, cat, labels=LABELS)
    w.wait(30)
    click(w.current_figure, 0, 10, 10)
    gated.gate.clear()
    astronaut = sample_image("astronaut")[::4, ::4]
    w.image = astronaut
    assert w.busy and w.status.startswith("Encoding the image and explaining 4 labels")
    assert w.current_figure.layout.images[0].sizex == astronaut.shape[1]   # the image shows at once
    assert not heat(w).z and w._bar_box.layout.display == "none"          # old maps and bars are gone
    gated.gate.set()
    w.wait(30)
    assert w.explanation.image_size == astronaut.shape[:2] and len(heat(w).z) == 14


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
    assert "Type at least one label" in explorer.error
    explorer.controls["labels"].value = "cat, a++b"
    explorer.wait(30)
    assert "empty part" in explorer.error
    with pytest.raises(TextInputError, match="zebra"):
        explorer.label = "zebra"
    assert "zebra" in explorer.error
    explorer.controls["labels"].value = "cat, <img src=x onerror=alert(1)>"
    explorer.wait(30)
    explorer.label = "<img src=x onerror=alert(1)>"
    titles = [a.text for a in explorer.current_figure.layout.annotations]
    assert "<img" not in "".join(titles) and "&lt;img src=x" in titles[0]
    assert "<img" not in heat(explorer).hovertemplate


def test_settings_reach_the_explainer_and_bad_values_are_refused(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, cat, labels=["cat"], size=320, depth=3, redundancy="none")
    w.wait(30)
    e = w.explanation
    assert e.input_size == (320, 320) and e.grid == (20, 20) and e.redundancy == "none"
    assert w.controls["size"].value == "custom" and w.controls["custom_size"].layout.display is None
    w.redundancy = "auto"
    w.wait(30)
    assert w.explanation.redundancy == "empty"  # a single label: the empty-string redundancy
    w.controls["size"].value = 224
    w.wait(30)
    assert w.explanation.grid == (14, 14) and w.controls["custom_size"].layout.display == "none"
    with pytest.raises(ValueError, match="whole 16-pixel patches"):
        w.size = 100
    with pytest.raises(ValueError, match="between 1 and 6"):
        w.depth = 9
    with pytest.raises(ValueError, match="Unknown view"):
        w.view = "3d"
    with pytest.raises(ValueError, match="between 0.0 and 1.0"):
        w.opacity = 2
    with pytest.raises(ValueError, match="threshold"):
        w.threshold = 1.5


def test_presets_fill_the_labels():
    assert len(PASCAL_CONTEXT_59) == 59 and len(COCO_80) == 80
    assert "potted plant" in PASCAL_CONTEXT_59 and "toothbrush" in COCO_80


def test_preset_menu(explainer, cat):
    gated = Gated(explainer)
    w = HeatmapExplorer(gated, None)
    assert w.status.startswith("Upload an image") and w.explanation is None
    w.controls["preset"].value = "PASCAL Context (59)"
    assert w.labels == list(PASCAL_CONTEXT_59) and gated.calls == []  # nothing to explain without an image


def test_static_figure_and_png_fallback(explorer, tmp_path):
    bundle = explorer._repr_mimebundle_()
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
