"""AttentionExplorer driven from Python: set its settings, click through the public routes, read view.describe()."""
import base64
import datetime
import io

import numpy as np
import pytest
from conftest import mimebundle
from matplotlib.figure import Figure
from PIL import Image
from traitlets import TraitError

from clipsurgery_widgets.engine.attention import capture_attention, cell_box
from clipsurgery_widgets.engine.errors import ClipSurgeryError
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import preprocess, sample_image
from clipsurgery_widgets.widgets import attention as attention_module
from clipsurgery_widgets.widgets.attention import AttentionExplorer
from clipsurgery_widgets.widgets.state import InvalidStateError


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


def _png(widget) -> Image.Image:
    """The static PNG a widget's output carries (what nbconvert and GitHub show)."""
    return Image.open(io.BytesIO(base64.b64decode(mimebundle(widget)["image/png"])))


def test_initial_view_shows_the_engine_rows(explorer, explainer, cat):
    w = explorer
    assert w.error is None and "6 layers" in w.status and "grid 14x14" in w.status
    assert w.query == (7, 7) and w.layer == 5 and w.head is None
    ref = _reference(explainer, cat).rows(5, (7, 7), None)
    shown = w.view.describe()
    assert shown["panels"] == ("image", "qk", "vv")
    assert (shown["query"], shown["layer"], shown["head"]) == ((7, 7), 5, None)
    np.testing.assert_allclose(shown["maps"]["qk"], ref.qk, atol=1e-5)
    np.testing.assert_allclose(shown["maps"]["vv"], ref.vv, atol=1e-5)
    np.testing.assert_allclose(shown["relative"]["qk"], ref.qk / ref.qk.max(), atol=1e-4)
    assert shown["images"] == [cat.shape[:2]] * 3
    assert all(i.source.startswith("data:image/png;base64,") for i in w.plot.layout.images)
    assert "query (row 7, col 7)" in shown["titles"][0]
    assert shown["titles"][1].startswith("q-k attention, mean of heads")
    assert shown["titles"][2].startswith("v-v attention, mean of heads")
    assert f"{ref.qk_global:.3f}" in shown["titles"][1] and f"{ref.vv_global:.3f}" in shown["titles"][2]
    assert (shown["cmap"], shown["opacity"]) == ("jet", 0.6)
    assert "(row 7, col 7)" in w.controls["query_text"].value


def test_clicking_a_patch_moves_the_query_and_changes_both_maps(explorer, explainer, cat):
    w = explorer
    before = w.view.describe()["relative"]
    height, width = cat.shape[:2]
    # A click on the image panel at pixel (40, 250) (the route plotly's click handler takes): the patch covering it.
    w.view.click_map(0, 40.0, 250.0)
    expected = (int((250 + 0.5) * 14 / height), int((40 + 0.5) * 14 / width))
    assert w.query == expected and w.error is None
    shown = w.view.describe()
    x0, y0, x1, y1 = cell_box(expected, (height, width), (14, 14))
    assert shown["query_boxes"] == [pytest.approx((x0, y0, x1, y1))] * 3
    assert not np.allclose(shown["relative"]["qk"], before["qk"]) and not np.allclose(shown["relative"]["vv"],
                                                                                      before["vv"])
    ref = _reference(explainer, cat).rows(5, expected, None)
    np.testing.assert_allclose(shown["maps"]["vv"], ref.vv, atol=1e-5)
    # A click on the q-k map works the same way; so does the Python shortcut.
    assert w.click(width - 1, 0, panel=1) == (0, 13)
    with pytest.raises(ValueError, match="panel=3"):
        w.click(0, 0, panel=3)


def test_layer_slider_changes_the_maps(explorer, explainer, cat):
    w = explorer
    before = w.view.describe()["relative"]
    w.controls["layer"].value = 2
    assert w.layer == 2 and "block 2" in w.controls["layer_name"].value
    ref = _reference(explainer, cat).rows(2, w.query, None)
    shown = w.view.describe()
    np.testing.assert_allclose(shown["maps"]["qk"], ref.qk, atol=1e-5)
    np.testing.assert_allclose(shown["maps"]["vv"], ref.vv, atol=1e-5)
    assert not np.allclose(shown["relative"]["qk"], before["qk"]) and not np.allclose(shown["relative"]["vv"],
                                                                                      before["vv"])
    titles = shown["layers"]["titles"]
    assert titles[2] == "[block 2]" and titles[5] == "block 5" and shown["layers"]["current"] == 2
    assert shown["stats"]["marked_layer"] == 2
    w.layer = -1  # the engine's reading: the last layer
    assert w.layer == 5 and w.controls["layer"].value == 5


def test_head_selector_and_mean_over_heads(explorer, explainer, cat):
    w = explorer
    ref = _reference(explainer, cat)
    w.head = 1
    assert w.controls["head"].value == 1
    shown = w.view.describe()
    assert shown["head"] == 1 and "head 1" in shown["titles"][1]
    np.testing.assert_allclose(shown["maps"]["qk"], ref.rows(5, (7, 7), 1).qk, atol=1e-5)  # shown at once
    assert w.wait(30)
    assert w.all_stats is not None and w.all_stats.head == 1
    w.controls["head"].value = -1  # "mean of heads" in the dropdown
    assert w.head is None
    per_head = [ref.rows(5, (7, 7), h).vv for h in range(2)]
    np.testing.assert_allclose(w.view.describe()["maps"]["vv"], np.mean(per_head, axis=0), atol=1e-5)
    options = [label for label, _ in w.controls["head"].options]
    assert options == ["mean of heads", "head 0", "head 1"]


def test_small_multiples_show_every_layer_and_clicks_jump_there(explorer, explainer, cat):
    w = explorer
    ref = _reference(explainer, cat)
    layers = w.view.describe()["layers"]
    assert layers["titles"] == ["block 0", "block 1", "block 2", "block 3", "block 4", "[block 5]"]
    for layer, maps in enumerate(layers["maps"]):
        rows = ref.rows(layer, (7, 7), None)
        np.testing.assert_allclose(maps["qk"], rows.qk, atol=1e-5)
        np.testing.assert_allclose(maps["vv"], rows.vv, atol=1e-5)
    w.view.click_layer(3, 2.0, 9.0)  # a click on block 3's maps at cell (row 9, col 2)
    assert w.layer == 3 and w.query == (9, 2)
    shown = w.view.describe()
    assert (shown["layer"], shown["query"]) == (3, (9, 2))
    np.testing.assert_allclose(shown["maps"]["qk"], ref.rows(3, (9, 2), None).qk, atol=1e-5)


def test_global_token_button(explorer, explainer, cat):
    w = explorer
    w.controls["global"].click()
    assert w.query == "global"
    height, width = cat.shape[:2]
    shown = w.view.describe()
    assert shown["query_boxes"][1] == pytest.approx((-0.5, -0.5, width - 0.5, height - 0.5))
    ref = _reference(explainer, cat).rows(5, "global", None)
    np.testing.assert_allclose(shown["maps"]["qk"], ref.qk, atol=1e-5)
    assert "global token" in shown["titles"][0]


def test_statistics_chart(explorer, explainer, cat):
    w = explorer
    w.query = (2, 3)
    w.radius = 2
    assert w.wait(30)
    ref = _reference(explainer, cat)
    one, every = ref.stats((2, 3), None, 2), ref.stats("all", None, 2)
    stats = w.view.describe()["stats"]
    for name in ("self", "local", "entropy", "global"):
        for kind in ("qk", "vv"):
            np.testing.assert_allclose(stats["series"][(name, "query", kind)], one.kind(kind)[name], atol=1e-5)
            np.testing.assert_allclose(stats["series"][(name, "all", kind)], every.kind(kind)[name], atol=1e-5)
    assert stats["layers"] == list(range(6))
    assert "r = 2" in stats["titles"]["local"]
    # The global query has no cell: its "local" line is empty (gaps), the others are drawn.
    w.query = "global"
    series = w.view.describe()["stats"]["series"]
    assert all(v is None for v in series[("local", "query", "vv")])
    assert all(v is not None for v in series[("entropy", "query", "vv")])


def test_settings_take_what_the_engine_takes_and_nothing_is_clamped(explorer, explainer, cat):
    w = explorer
    w.radius = 99  # the engine counts any radius >= 0: accepted as given, the slider extends to show it
    assert w.radius == 99 and w.controls["radius"].value == 99
    assert w.wait(30) and w.all_stats.radius == 99
    assert "r = 99" in w.view.describe()["stats"]["titles"]["local"]
    w.radius = 1.5
    assert w.radius == 1.5 and w.controls["radius"].value == 1.5
    w.cmap = "plasma"  # any matplotlib colour map, offered in the dropdown from now on
    assert w.controls["cmap"].value == "plasma" and w.view.describe()["cmap"] == "plasma"
    w.controls["opacity"].value = 0.3
    assert w.opacity == 0.3 and w.view.describe()["opacity"] == 0.3
    w.query = [np.int64(3), 4]  # read as the engine reads it
    assert w.query == (3, 4)


def test_bad_inputs_raise_and_leave_the_widget_as_it_was(explorer):
    w = explorer
    before = (w.query, w.layer, w.head, w.size, w.radius, w.cmap, w.opacity)
    with pytest.raises(InvalidStateError, match="outside the 14x14"):
        w.query = (14, 0)
    with pytest.raises(InvalidStateError, match="layer = 9 .*0 to 5"):
        w.layer = 9
    with pytest.raises(InvalidStateError, match="2 heads"):
        w.head = 2
    for name, value in [("head", True), ("head", "0"), ("radius", -1), ("radius", "2"), ("opacity", 1.5),
                        ("cmap", "no-such-map"), ("size", (224, 100)), ("layer", 1.5), ("query", "centre")]:
        with pytest.raises(InvalidStateError) as caught:
            setattr(w, name, value)
        assert isinstance(caught.value, ValueError) and not isinstance(caught.value, TraitError)
        assert f".{name} = {value!r}" in str(caught.value)
    assert (w.query, w.layer, w.head, w.size, w.radius, w.cmap, w.opacity) == before
    assert w.view.describe()["query"] == before[0]
    w.query = (1, 1)
    assert w.error is None and w.query == (1, 1)
    with pytest.raises(ClipSurgeryError, match="not found"):
        w.image = "/no/such/image.png"
    assert "not found" in w.error and w.image is not None  # the previous image stays
    with pytest.raises(ValueError, match="view"):
        w.figure("everything")


def test_input_size_and_capture_cache(explainer, cat, monkeypatch):
    calls = []
    real = attention_module.capture_image_attention
    monkeypatch.setattr(attention_module, "capture_image_attention", lambda *a: calls.append(1) or real(*a))
    w = AttentionExplorer(explainer, cat, query=(3, 4), layer=0, head=0)
    assert w.wait(60) and len(calls) == 1
    w.size = 448
    assert w.wait(60)
    assert w.capture.grid == (28, 28) and w.query == (3, 4) and len(calls) == 2
    assert w.view.describe()["relative"]["qk"].shape == (28, 28)
    w.size = 224
    assert w.wait(60)
    assert len(calls) == 2  # cached
    w.image = cat.copy()
    assert w.wait(60) and len(calls) == 2  # same pixels: same capture
    with pytest.raises(ValueError, match="patches"):
        w.size = 100
    # Non-square sizes, as the engine takes them; a size not in the dropdown is added to it.
    w.query = (13, 13)
    w.size = (224, 160)
    assert w.size == (224, 160) and w.controls["size"].label == "224x160"
    assert w.query == (7, 5)  # (13, 13) is not on the 14x10 grid: the centre cell
    assert w.wait(60) and w.capture.grid == (14, 10) and w.error is None
    ref = _reference(explainer, cat, (224, 160)).rows(0, (7, 5), 0)
    np.testing.assert_allclose(w.view.describe()["maps"]["vv"], ref.vv, atol=1e-5)


def test_upload_sets_the_image(explainer):
    w = AttentionExplorer(explainer)
    assert w.capture is None and "Upload an image" in w.status and w.query is None
    assert w.view.describe()["images"] == [None] * 3
    with pytest.raises(ClipSurgeryError, match="Nothing to draw"):
        w.figure()
    with pytest.raises(ClipSurgeryError, match="No attention yet"):
        w.click(1, 1)
    buffer = io.BytesIO()
    Image.fromarray(sample_image("coffee")).save(buffer, format="PNG")
    w.controls["upload"].value = ({"name": "<b>coffee</b>.png", "type": "image/png",
                                   "content": memoryview(buffer.getvalue()), "size": 1,
                                   "last_modified": datetime.datetime(2024, 1, 1)},)
    assert w.wait(60)
    assert w.image.shape == sample_image("coffee").shape and w.capture is not None and w.error is None
    assert w.view.describe()["query"] == (7, 7)


def test_resnet_offers_the_attention_pool_only(tiny_resnet, cat):
    w = AttentionExplorer(Explainer(tiny_resnet, cache_dir=False), cat)
    assert w.wait(60) and w.error is None
    assert w.layer_names == ("attention pool",) and w.controls["layer"].disabled
    assert w.view.describe()["layers"]["titles"] == ["[attention pool]"]
    assert w.capture.grid == (7, 7) and w.query == (3, 3)
    assert len(w.controls["head"].options) == 1 + 16
    ref = _reference(Explainer(tiny_resnet, cache_dir=False), cat).rows(0, (3, 3), None)
    np.testing.assert_allclose(w.view.describe()["maps"]["vv"], ref.vv, atol=1e-5)
    with pytest.raises(InvalidStateError, match="attention pool"):
        w.layer = 1


def test_static_figures(explorer, cat):
    w = explorer
    fig = w.figure()
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert "block 5" in fig.get_suptitle() and "mean of heads" in fig.get_suptitle()
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
    assert _png(w).format == "PNG"


def test_side_by_side_carries_a_static_png_of_both(explorer, explainer, cat):
    from clipsurgery_widgets import SideBySide
    from clipsurgery_widgets.widgets.side_by_side import SideBySide as HomeSideBySide

    assert SideBySide is HomeSideBySide
    other = AttentionExplorer(explainer, cat, layer=0)
    assert other.wait(60)
    pair = SideBySide(explorer, other)
    assert pair.panes == (explorer, other) and [box.children[0] for box in pair.children] == [explorer, other]
    joined = _png(pair)
    singles = [_png(w) for w in (explorer, other)]
    assert joined.width == sum(s.width for s in singles) and joined.height == max(s.height for s in singles)


def test_the_view_draws_the_kinds_it_is_given(explainer, cat):
    """Panel kinds are data: a view for v-v only has one map per layer and v-v chart lines only."""
    from clipsurgery_widgets.widgets.attention_view import AttentionView

    capture = _reference(explainer, cat)
    view = AttentionView(capture.layer_names, on_map_click=None, on_layer_click=None, on_error=None, kinds=("vv",))
    view.set_image(cat)
    rows = capture.rows(2, (4, 5), None)
    view.show(cat.shape[:2], rows, capture.all_layers((4, 5), None), capture.stats((4, 5)), None, "viridis", 0.5)
    shown = view.describe()
    assert shown["panels"] == ("image", "vv") and list(shown["maps"]) == ["vv"] and len(shown["titles"]) == 2
    assert shown["titles"][1].startswith("v-v attention")
    np.testing.assert_allclose(shown["maps"]["vv"], rows.vv, atol=1e-5)
    assert [list(maps) for maps in shown["layers"]["maps"]] == [["vv"]] * 6
    assert {kind for _, _, kind in shown["stats"]["series"]} == {"vv"}
    assert all(not values for (_, scope, _), values in shown["stats"]["series"].items() if scope == "all")
    assert (shown["cmap"], shown["opacity"], shown["layer"]) == ("viridis", 0.5, 2)


# --- the attention each dense method uses (kinds beyond q-k and v-v) ------------------------------

ALL_KINDS = ("qk", "vv", "qq", "kk", "qq+kk", "kk+gauss", "gem")
# The method (with parameters) whose attention each kind is, and what its rows are divided by.
SOURCES = {"qk": ("raw", {}, 1), "vv": ("clip_surgery", {}, 1), "qq": ("clearclip", {"attention": "qq"}, 1),
           "kk": ("naclip", {"gaussian_std": 0}, 1), "qq+kk": ("sclip", {}, 2), "kk+gauss": ("naclip", {}, 1),
           "gem": ("gem", {}, 1)}
TITLES = {"qk": ("q-k attention", "raw CLIP"), "vv": ("v-v attention", "CLIP Surgery"),
          "qq": ("q-q attention", "ClearCLIP"), "kk": ("k-k attention", "NACLIP, no Gaussian"),
          "qq+kk": ("q-q + k-k attention", "SCLIP, ÷ 2"), "kk+gauss": ("k-k + Gaussian attention", "NACLIP"),
          "gem": ("GEM self-self attention", "GEM")}


def _method_row(explainer, rgb, kind, query, head=None, size=224):
    """[gh, gw] map of ``kind`` read straight from method_attention's last-block weights."""
    from clipsurgery_widgets.engine.towers.dense_attention import method_attention

    m = explainer.model
    method, params, divide = SOURCES[kind]
    result = method_attention(m, preprocess(rgb, size, m.mean, m.std, m.patch_size), method, **params)
    gh, gw = result.grid
    weights = result.weights[0, :, 1 + query[0] * gw + query[1]]  # [H, T]: the query's rows
    row = (weights.mean(0) if head is None else weights[head]) / divide
    return row[1:].reshape(gh, gw).numpy()


@pytest.fixture
def all_kinds(explainer, cat):
    w = AttentionExplorer(explainer, cat, kinds=ALL_KINDS)
    assert w.wait(60)
    return w


def test_every_kind_shows_the_rows_of_its_method(all_kinds, explainer, cat):
    w = all_kinds
    shown = w.view.describe()
    assert shown["panels"] == ("image",) + ALL_KINDS and shown["kinds"] == ALL_KINDS
    assert shown["map_shape"] == (2, 4)  # wrapped: four panels per row
    assert shown["images"] == [cat.shape[:2]] * 8 and w.error is None
    for kind in ALL_KINDS:
        first, method = TITLES[kind]
        title = shown["kind_titles"][kind]
        assert title.split("\n")[:2] == [f"{first}, mean of heads", f"{method} · block 5"], title
        np.testing.assert_allclose(shown["maps"][kind], _method_row(explainer, cat, kind, (7, 7)), atol=1e-5)
        assert w.kind_rows[kind].patches.sum() + w.kind_rows[kind].global_token == pytest.approx(1, abs=1e-4)
        assert f"global token {w.kind_rows[kind].global_token:.3f}" in title
    assert shown["blocks"] == dict.fromkeys(ALL_KINDS, 5)
    # One head: the methods' panels follow the head setting too.
    w.head = 1
    maps = w.view.describe()["maps"]
    for kind in ("qq+kk", "gem"):
        np.testing.assert_allclose(maps[kind], _method_row(explainer, cat, kind, (7, 7), head=1), atol=1e-5)


def test_clicking_any_panel_moves_the_query_in_every_panel(all_kinds, explainer, cat):
    w = all_kinds
    height, width = cat.shape[:2]
    before = w.view.describe()["maps"]
    for panel, (x, y) in enumerate([(5, 5), (40, 250), (440, 10), (200, 150), (300, 290), (10, 150),
                                    (100, 100), (420, 200)]):
        assert w.click(x, y, panel=panel) == (int((y + 0.5) * 14 / height), int((x + 0.5) * 14 / width))
    query = w.query
    assert query == (9, 13)
    shown = w.view.describe()
    assert shown["query"] == query and shown["query_boxes"] == [pytest.approx(cell_box(query, (height, width),
                                                                                       (14, 14)))] * 8
    for kind in ALL_KINDS:
        assert not np.allclose(shown["maps"][kind], before[kind])
        np.testing.assert_allclose(shown["maps"][kind], _method_row(explainer, cat, kind, query), atol=1e-5)
    with pytest.raises(ValueError, match="panel=8"):
        w.click(0, 0, panel=8)


def test_methods_stay_at_the_last_block_while_the_layer_moves(all_kinds, explainer, cat):
    w = all_kinds
    w.layer = 2
    shown = w.view.describe()
    assert shown["blocks"] == {**dict.fromkeys(ALL_KINDS, 5), "qk": 2, "vv": 2}
    assert "raw CLIP · block 2" in shown["kind_titles"]["qk"] and "GEM · block 5" in shown["kind_titles"]["gem"]
    np.testing.assert_allclose(shown["maps"]["qk"], _reference(explainer, cat).rows(2, (7, 7)).qk, atol=1e-5)
    np.testing.assert_allclose(shown["maps"]["qq"], _method_row(explainer, cat, "qq", (7, 7)), atol=1e-5)
    assert [list(maps) for maps in shown["layers"]["maps"]] == [["qk", "vv"]] * 6  # every layer: q-k, v-v only


def test_kind_toggles_and_the_all_methods_button(explorer, explainer, cat, monkeypatch):
    from clipsurgery_widgets.widgets import attention_kinds

    calls = []
    real = attention_kinds.image_kind_attention
    monkeypatch.setattr(attention_kinds, "image_kind_attention", lambda *a: calls.append(a[-1]) or real(*a))
    w = explorer
    toggles = dict(zip(ALL_KINDS, w.controls["kinds"].children))
    assert [k for k, t in toggles.items() if t.value] == ["qk", "vv"]
    old_plot = w.plot
    toggles["qq"].value = True
    assert w.kinds == ("qk", "vv", "qq") and w.wait(60)
    assert w.plot is not old_plot and w.view.describe()["panels"] == ("image", "qk", "vv", "qq")
    assert w.view.describe()["map_shape"] == (1, 4) and calls == ["qq"]
    np.testing.assert_allclose(w.view.describe()["maps"]["qq"], _method_row(explainer, cat, "qq", (7, 7)), atol=1e-5)
    w.controls["all_kinds"].click()
    assert w.kinds == ALL_KINDS and all(t.value for t in toggles.values()) and w.wait(60)
    assert sorted(calls) == sorted(["qq", "kk", "qq+kk", "kk+gauss", "gem"])  # qq was cached
    assert w.controls["all_kinds"].description == "q-k, v-v only"
    w.controls["all_kinds"].click()
    assert w.kinds == ("qk", "vv") and w.view.describe()["panels"] == ("image", "qk", "vv")
    w.kinds = ("gem", "qk")  # any order from Python, cached: no forward pass
    assert w.wait(60) and len(calls) == 5 and w.view.describe()["panels"] == ("image", "gem", "qk")
    assert [k for k, t in toggles.items() if t.value] == ["qk", "gem"]
    toggles["qk"].value = False
    toggles["gem"].value = False  # would leave nothing shown: refused, shown, and put back
    assert w.kinds == ("gem",) and toggles["gem"].value and "kinds" in w.error


def test_bad_kinds_raise_and_change_nothing(explorer, tiny_resnet, cat):
    w = explorer
    plot = w.plot
    for bad in [(), ("qk", "qk"), ("qk", "xx"), "qk", ["vv", None], 3]:
        with pytest.raises(InvalidStateError) as caught:
            w.kinds = bad
        assert isinstance(caught.value, ValueError) and not isinstance(caught.value, TraitError)
        assert f".kinds = {bad!r}" in str(caught.value)
    assert w.kinds == ("qk", "vv") and w.plot is plot
    w.kinds = ["vv", "qq"]  # a list is read as a tuple
    assert w.kinds == ("vv", "qq")
    resnet = AttentionExplorer(Explainer(tiny_resnet, cache_dir=False), cat)
    with pytest.raises(InvalidStateError, match="ViT"):
        resnet.kinds = ("qk", "qq")
    assert resnet.kinds == ("qk", "vv") and resnet.controls["all_kinds"].disabled
    assert [t.disabled for t in resnet.controls["kinds"].children] == [False, False] + [True] * 5
    assert resnet.wait(60)


def test_static_figure_has_one_map_per_kind(all_kinds, cat):
    w = all_kinds
    fig = w.figure()
    titles = [ax.get_title() for ax in fig.axes]
    maps = [t for t in titles if "attention" in t]
    assert len(fig.axes) == 8 and len(maps) == 7  # the image, then one map per kind
    for kind, title in zip(ALL_KINDS, maps):
        assert title.startswith(TITLES[kind][0]) and TITLES[kind][1] in title
    assert "query (row 7, col 7)" in fig.get_suptitle()
    paper = w.figure(images=[cat, sample_image("coffee")], queries=(3, 3))
    assert len(paper.axes) == 2 * 8  # one column per image: the image row, then a row per kind
    w.kinds = ("vv", "gem")
    assert len(w.figure().axes) == 3
