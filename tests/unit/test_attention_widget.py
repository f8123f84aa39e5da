"""AttentionExplorer driven from Python: set controls, dispatch the clicks a browser would, read what it shows."""
import base64
import datetime
import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from plotly.callbacks import Points

from clipsurgery_widgets.engine.attention import (
    AttentionInputError,
    capture_attention,
    cell_box,
)
from clipsurgery_widgets.engine.errors import ClipSurgeryError
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import preprocess, sample_image
from clipsurgery_widgets.widgets import attention as attention_module
from clipsurgery_widgets.widgets.attention import AttentionExplorer


@pytest.fixture(scope="module")
def cat():
    return sample_image("cat")  # 300 x 451


@pytest.fixture
def explorer(explainer, cat):
    w = AttentionExplorer(explainer, cat)
    assert w.wait(60)
    return w


def _reference(explainer, rgb, size=224):
    """The engine's capture of the image, made independently of the widget."""
    m = explainer.model
    return capture_attention(m, preprocess(rgb, size, m.mean, m.std, m.patch_size))


def _heat(w, panel):
    return np.asarray(w.plot.data[w.view.map_heat[panel]].z)


def _probabilities(w, panel):
    return np.asarray(w.plot.data[w.view.map_heat[panel]].customdata)


def _box(w, panel=0):
    trace = w.plot.data[w.view.map_box[panel]]
    return min(trace.x), min(trace.y), max(trace.x), max(trace.y)


def _click_trace(w, index, x, y):
    """What plotly's front end does on a click: dispatch the point to the trace's on_click callbacks."""
    trace = w.plot.data[index]
    trace._dispatch_on_click(Points(point_inds=[[0, 0]], xs=[x], ys=[y], trace_name=trace.name, trace_index=index),
                             None)


def _note(w, index):
    return w.plot.layout.annotations[index].text


def test_initial_view_shows_the_engine_rows(explorer, explainer, cat):
    w = explorer
    assert w.error is None and "6 layers" in w.status and "grid 14x14" in w.status
    assert w.query == (7, 7) and w.layer == 5 and w.head is None
    ref = _reference(explainer, cat).rows(5, (7, 7), None)
    np.testing.assert_allclose(_probabilities(w, 1), ref.qk, atol=1e-5)
    np.testing.assert_allclose(_probabilities(w, 2), ref.vv, atol=1e-5)
    np.testing.assert_allclose(_heat(w, 1), ref.qk / ref.qk.max(), atol=1e-4)
    images = w.plot.layout.images
    assert len(images) == 3 and all(i.source.startswith("data:image/png;base64,") for i in images)
    assert (images[0].sizex, images[0].sizey) == (cat.shape[1], cat.shape[0])
    assert "query (row 7, col 7)" in _note(w, 0)
    assert f"{ref.qk_global:.3f}" in _note(w, 1) and f"{ref.vv_global:.3f}" in _note(w, 2)
    assert "(row 7, col 7)" in w.controls["query_text"].value


def test_clicking_a_patch_moves_the_query_and_changes_both_maps(explorer, explainer, cat):
    w = explorer
    before_qk, before_vv = _heat(w, 1), _heat(w, 2)
    height, width = cat.shape[:2]
    # A click on the image panel at pixel (40, 250): the patch covering it.
    _click_trace(w, w.view.map_heat[0], 40.0, 250.0)
    expected = (int((250 + 0.5) * 14 / height), int((40 + 0.5) * 14 / width))
    assert w.query == expected and w.error is None
    x0, y0, x1, y1 = cell_box(expected, (height, width), (14, 14))
    for panel in range(3):
        assert _box(w, panel) == pytest.approx((x0, y0, x1, y1))
    assert not np.allclose(_heat(w, 1), before_qk) and not np.allclose(_heat(w, 2), before_vv)
    ref = _reference(explainer, cat).rows(5, expected, None)
    np.testing.assert_allclose(_probabilities(w, 2), ref.vv, atol=1e-5)
    # A click on the q-k map works the same way.
    assert w.click(width - 1, 0, panel=1) == (0, 13)


def test_layer_slider_changes_the_maps(explorer, explainer, cat):
    w = explorer
    before = _heat(w, 1), _heat(w, 2)
    w.controls["layer"].value = 2
    assert w.layer == 2 and "block 2" in w.controls["layer_name"].value
    ref = _reference(explainer, cat).rows(2, w.query, None)
    np.testing.assert_allclose(_probabilities(w, 1), ref.qk, atol=1e-5)
    np.testing.assert_allclose(_probabilities(w, 2), ref.vv, atol=1e-5)
    assert not np.allclose(_heat(w, 1), before[0]) and not np.allclose(_heat(w, 2), before[1])
    titles = [_note(w, i) for i in w.view.layer_titles]
    assert titles[2] == "<b>[block 2]</b>" and titles[5] == "block 5"
    assert {shape.x0 for shape in w.plot.layout.shapes} == {2}
    w.layer = -1
    assert w.controls["layer"].value == 5


def test_head_selector_and_mean_over_heads(explorer, explainer, cat):
    w = explorer
    ref = _reference(explainer, cat)
    w.head = 1
    assert w.controls["head"].value == 1
    np.testing.assert_allclose(_probabilities(w, 1), ref.rows(5, (7, 7), 1).qk, atol=1e-5)  # shown at once
    assert w.wait(30)
    assert w.all_stats is not None and w.all_stats.head == 1
    w.controls["head"].value = -1  # "mean of heads" in the dropdown
    assert w.head is None
    per_head = [ref.rows(5, (7, 7), h).vv for h in range(2)]
    np.testing.assert_allclose(_probabilities(w, 2), np.mean(per_head, axis=0), atol=1e-5)
    options = [label for label, _ in w.controls["head"].options]
    assert options == ["mean of heads", "head 0", "head 1"]


def test_small_multiples_show_every_layer_and_clicks_jump_there(explorer, explainer, cat):
    w = explorer
    ref = _reference(explainer, cat)
    for layer, (qk_index, vv_index) in enumerate(w.view.layer_heat):
        rows = ref.rows(layer, (7, 7), None)
        np.testing.assert_allclose(np.asarray(w.plot.data[qk_index].customdata), rows.qk, atol=1e-5)
        np.testing.assert_allclose(np.asarray(w.plot.data[vv_index].customdata), rows.vv, atol=1e-5)
    _click_trace(w, w.view.layer_heat[3][1], 2.0, 9.0)  # v-v map of block 3, cell (row 9, col 2)
    assert w.layer == 3 and w.query == (9, 2)
    np.testing.assert_allclose(_probabilities(w, 1), ref.rows(3, (9, 2), None).qk, atol=1e-5)


def test_global_token_button(explorer, explainer, cat):
    w = explorer
    w.controls["global"].click()
    assert w.query == "global"
    height, width = cat.shape[:2]
    assert _box(w, 1) == pytest.approx((-0.5, -0.5, width - 0.5, height - 0.5))
    ref = _reference(explainer, cat).rows(5, "global", None)
    np.testing.assert_allclose(_probabilities(w, 1), ref.qk, atol=1e-5)
    assert "global token" in _note(w, 0)


def test_statistics_chart(explorer, explainer, cat):
    w = explorer
    w.query = (2, 3)
    w.radius = 2
    assert w.wait(30)
    ref = _reference(explainer, cat)
    one, every = ref.stats((2, 3), None, 2), ref.stats("all", None, 2)
    lines = w.view.stat_lines
    for name in ("self", "local", "entropy", "global"):
        for kind in ("qk", "vv"):
            np.testing.assert_allclose(w.plot.data[lines[(name, "query", kind)]].y, one.kind(kind)[name], atol=1e-5)
            np.testing.assert_allclose(w.plot.data[lines[(name, "all", kind)]].y, every.kind(kind)[name], atol=1e-5)
    assert list(w.plot.data[lines[("self", "query", "qk")]].x) == list(range(6))
    assert "r = 2" in _note(w, w.view.stat_titles["local"])
    # The global query has no cell: its "local" line is empty (gaps), the others are drawn.
    w.query = "global"
    assert all(v is None for v in w.plot.data[lines[("local", "query", "vv")]].y)
    assert all(v is not None for v in w.plot.data[lines[("entropy", "query", "vv")]].y)


def test_bad_inputs_are_reported_and_the_widget_keeps_working(explorer):
    w = explorer
    with pytest.raises(AttentionInputError, match="outside the 14x14"):
        w.query = (14, 0)
    assert "outside" in w.error and w.query == (7, 7)
    with pytest.raises(AttentionInputError, match="layer=9"):
        w.layer = 9
    assert "layer=9" in w.error
    with pytest.raises(AttentionInputError, match="2 heads"):
        w.head = 2
    w.query = (1, 1)
    assert w.error is None and w.query == (1, 1)
    with pytest.raises(ClipSurgeryError, match="not found"):
        w.image = "/no/such/image.png"
    assert "not found" in w.error and w.image is not None  # the previous image stays
    with pytest.raises(ValueError, match="view"):
        w.figure("everything")


def test_input_size_and_capture_cache(explainer, cat, monkeypatch):
    calls = []
    real = attention_module.capture_attention
    monkeypatch.setattr(attention_module, "capture_attention", lambda *a: calls.append(1) or real(*a))
    w = AttentionExplorer(explainer, cat, query=(3, 4), layer=0, head=0)
    assert w.wait(60) and len(calls) == 1
    w.size = 448
    assert w.wait(60)
    assert w.capture.grid == (28, 28) and w.query == (3, 4) and len(calls) == 2
    assert _heat(w, 1).shape == (28, 28)
    w.size = 224
    assert w.wait(60)
    assert len(calls) == 2  # cached
    w.image = cat.copy()
    assert w.wait(60) and len(calls) == 2  # same pixels: same capture
    with pytest.raises(ValueError, match="patches"):
        w.size = 100


def test_upload_sets_the_image(explainer):
    w = AttentionExplorer(explainer)
    assert w.capture is None and "Upload an image" in w.status
    with pytest.raises(ClipSurgeryError, match="Nothing to draw"):
        w._render_figure()
    buffer = io.BytesIO()
    Image.fromarray(sample_image("coffee")).save(buffer, format="PNG")
    w.controls["upload"].value = ({"name": "<b>coffee</b>.png", "type": "image/png",
                                   "content": memoryview(buffer.getvalue()), "size": 1,
                                   "last_modified": datetime.datetime(2024, 1, 1)},)
    assert w.wait(60)
    assert w.image.shape == sample_image("coffee").shape and w.capture is not None and w.error is None


def test_resnet_offers_the_attention_pool_only(tiny_resnet, cat):
    w = AttentionExplorer(Explainer(tiny_resnet, cache_dir=False), cat)
    assert w.wait(60) and w.error is None
    assert w.layer_names == ("attention pool",) and w.controls["layer"].disabled
    assert len(w.view.layer_heat) == 1 and w.capture.grid == (7, 7) and w.query == (3, 3)
    assert len(w.controls["head"].options) == 1 + 16
    ref = _reference(Explainer(tiny_resnet, cache_dir=False), cat).rows(0, (3, 3), None)
    np.testing.assert_allclose(_probabilities(w, 2), ref.vv, atol=1e-5)
    with pytest.raises(AttentionInputError, match="attention pool"):
        w.layer = 1


def test_static_figures(explorer, cat):
    w = explorer
    fig = w.figure()
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert "block 5" in fig._suptitle.get_text() and "mean of heads" in fig._suptitle.get_text()
    paper = w.figure(images=[cat, sample_image("coffee"), sample_image("rocket")], queries=[(1, 1), "global", (5, 5)])
    assert len(paper.axes) == 9
    assert [ax.get_title() for ax in paper.axes[:3]] == ["query (row 1, col 1)", "query: global token",
                                                         "query (row 5, col 5)"]
    assert len(w.figure(images=[cat, cat], queries=(2, 2)).axes) == 6
    with pytest.raises(ValueError, match="2 queries for 3 images"):
        w.figure(images=[cat, cat, cat], queries=[(1, 1), (2, 2)])
    assert len(w.figure("layers").axes) == 2 * 6
    stats = w.figure("stats")
    assert len(stats.axes) == 4 and len(stats.axes[0].lines) == 4 + 1  # 2 kinds x (query, all) + layer line
    bundle = w._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")


def test_side_by_side_carries_a_static_png_of_both(explorer, explainer, cat):
    from clipsurgery_widgets.widgets.attention import SideBySide

    other = AttentionExplorer(explainer, cat, layer=0)
    pair = SideBySide(explorer, other)
    assert pair.panes == (explorer, other) and [box.children[0] for box in pair.children] == [explorer, other]
    png = base64.b64decode(pair._repr_mimebundle_()["image/png"])
    joined = Image.open(io.BytesIO(png))
    singles = [Image.open(io.BytesIO(w._static_png())) for w in (explorer, other)]
    assert joined.width == sum(s.width for s in singles) and joined.height == max(s.height for s in singles)
