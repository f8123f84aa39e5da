"""DecompositionExplorer: ablation marks on the grid, controls that say what they do, Stop only while
something runs, a constructor that computes nothing, image names that tell images apart, widths
that follow the cell."""
from __future__ import annotations

import datetime
import io
import threading

import numpy as np
import pytest
from PIL import Image

from clipsurgery_widgets.engine.decomposition import session as session_module
from clipsurgery_widgets.engine.decomposition.names import image_names
from clipsurgery_widgets.engine.decomposition.session import DecompositionSession
from clipsurgery_widgets.widgets.decomposition import DecompositionExplorer

POOL = [f"texture number {i}" for i in range(20)] + ["a red car", "a dog", "a blue sky"]
LABELS = ["cat", "dog", "car"]
GRID_LAYERS, GRID_MLP_CELLS, GRID_MLP_CROSSES = 3, 4, 5  # grid traces (0-2: heat, head crosses, selection)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (64, 80 + 8 * i, 3), dtype=np.uint8) for i in range(3)]


@pytest.fixture
def explorer(explainer, images, tmp_path):
    w = DecompositionExplorer(explainer, images, texts=POOL, labels=LABELS, cache_dir=tmp_path)
    assert w.wait(60) and w.error is None, w.error
    return w


def _png(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


# --- ablation marks on the grid ---------------------------------------------------------------------

def test_ablated_layers_are_hatched_across_their_row_and_mlps_crossed_in_their_column(explorer):
    heads = explorer.session.num_heads
    explorer.toggle_layer(3)
    explorer.controls["attn1"].value = True  # the toggle button is the same state
    explorer.toggle_layer(4, "mlp")
    grid = explorer.view.describe()["grid"]
    assert grid["ablated_layers"] == [1, 3] and grid["ablated_mlps"] == [4] and grid["ablated"] == []
    layers = explorer.view.grid.data[GRID_LAYERS]
    xs = [x for x in layers.x if x is not None]
    ys = [y for y in layers.y if y is not None]
    # The hatched frames cover whole rows (every head of the layer) and only the ablated rows.
    assert (min(xs), max(xs)) == (-0.5, heads - 0.5)
    assert sorted(set(ys)) == [0.5, 1.5, 2.5, 3.5] and layers.fillpattern.shape == "/"
    mlp = explorer.view.grid.data[GRID_MLP_CELLS]
    assert [row[0] for row in mlp.z] == [0.0 if l == 4 else 1.0 for l in range(6)]
    assert list(explorer.view.grid.data[GRID_MLP_CROSSES].x) == [mlp.x0] and mlp.x0 > heads - 0.5
    # Hover says so too.
    heat_text = explorer.view.grid.data[0].text
    assert "attention layer 3" in heat_text[3][0] and heat_text[2][0] == ""
    assert "mean-ablated" in mlp.text[4][0] and "mean-ablated" not in mlp.text[3][0]
    assert "contribution" in mlp.text[4][0]
    # The MLP column is labelled on the axis.
    assert list(explorer.view.grid.layout.xaxis.ticktext)[-1] == "MLP"


def test_marks_follow_every_way_of_changing_the_ablation(explorer):
    explorer.controls["last4"].click()
    assert explorer.view.describe()["grid"]["ablated_layers"] == [0, 1]
    explorer.controls["mlp0"].value = True
    explorer.controls["mode"].value = "ablate"
    explorer.click_cell(5, 1)
    grid = explorer.view.describe()["grid"]
    assert grid == {**grid, "ablated_layers": [0, 1], "ablated_mlps": [0], "ablated": [(5, 1)]}
    explorer.toggle_layer(0)  # restoring a layer removes its hatching, leaves the others
    assert explorer.view.describe()["grid"]["ablated_layers"] == [1]
    explorer.controls["clear"].click()
    grid = explorer.view.describe()["grid"]
    assert grid["ablated_layers"] == [] and grid["ablated_mlps"] == [] and grid["ablated"] == []
    assert all(row == [1.0] for row in explorer.view.grid.data[GRID_MLP_CELLS].z)
    assert all(t == "" for row in explorer.view.grid.data[0].text for t in row)


def test_a_cell_in_a_hatched_row_still_answers_a_click(explorer):
    explorer.toggle_layer(2)
    explorer.click_cell(2, 1)
    assert explorer.selected_head == (2, 1)
    assert explorer.view.describe()["grid"]["selected"] == (2, 1)


# --- controls say what they do; Stop only while something runs -------------------------------------

def test_every_control_says_what_it_does(explorer):
    for name, control in explorer.controls.items():
        tips = getattr(control, "tooltips", None)
        tip = control.tooltip
        assert (tip and len(tip) > 15) or (tips and all(len(t) > 15 for t in tips)), name
    embedding = explorer.controls["embedding"]
    assert "mean-ablate e" != embedding.tooltip and "embedding term" in embedding.tooltip
    assert "ablate" in embedding.description.lower() and "mean over the image set" in embedding.tooltip
    assert "hatched" in explorer.controls["attn2"].tooltip and "MLP column" in explorer.controls["mlp2"].tooltip


def test_stop_shows_only_while_the_pass_runs_and_the_constructor_computes_nothing(explainer, images, tmp_path,
                                                                                  monkeypatch):
    release = threading.Event()
    entered = {"contributions": threading.Event(), "pass": threading.Event()}
    contributions = DecompositionSession.contributions
    original_pass = session_module.decompose_images

    def slow_contributions(self, *args, **kwargs):
        entered["contributions"].set()
        assert release.wait(60)
        return contributions(self, *args, **kwargs)

    def slow_pass(*args, **kwargs):
        entered["pass"].set()
        assert release.wait(60)
        return original_pass(*args, **kwargs)

    monkeypatch.setattr(DecompositionSession, "contributions", slow_contributions)
    monkeypatch.setattr(session_module, "decompose_images", slow_pass)
    w = DecompositionExplorer(explainer, images, texts=POOL, labels=LABELS, cache_dir=tmp_path)
    # The constructor returned while both jobs are held: nothing was computed on the caller's thread.
    assert not release.is_set() and w.busy and w.stoppable
    assert entered["pass"].wait(30) and entered["contributions"].wait(30)
    assert "Decomposing" in w.status
    shown = w.view.describe()
    assert np.all(np.asarray(shown["grid"]["values"]) == 0) and shown["readout"] is None
    assert w.controls["stop"].layout.visibility == "visible"  # shown: the pass over the set runs
    assert w.controls["stop"].layout.display != "none" and not w.controls["stop"].disabled
    release.set()
    assert w.wait(60) and w.error is None
    assert not w.stoppable and w.controls["stop"].layout.visibility == "hidden"
    assert np.any(np.asarray(w.view.describe()["grid"]["values"]) != 0)
    w.select_head(5, 0)  # the texts job: quick here, and Stop hides again when it ends
    assert w.wait(60) and w.controls["stop"].layout.visibility == "hidden"


def test_stop_button_hides_itself(explainer, images, tmp_path, monkeypatch):
    release = threading.Event()
    original_pass = session_module.decompose_images

    def held_pass(*args, stop=None, **kwargs):
        release.wait(30)
        return original_pass(*args, stop=stop, **kwargs)

    monkeypatch.setattr(session_module, "decompose_images", held_pass)
    w = DecompositionExplorer(explainer, images, texts=POOL, labels=LABELS, cache_dir=tmp_path)
    assert w.controls["stop"].layout.visibility == "visible"
    w.controls["stop"].click()
    assert w.controls["stop"].layout.visibility == "hidden" and "Stopped" in w.status
    release.set()
    assert w.wait(60)
    assert w.controls["stop"].layout.visibility == "hidden"
    w.resume()
    assert w.wait(60) and w.set_terms is not None and w.controls["stop"].layout.visibility == "hidden"


# --- image names -----------------------------------------------------------------------------------

def test_image_names_tell_the_images_apart(tmp_path):
    for colour in ("red", "green", "blue"):
        (tmp_path / colour).mkdir()
    red, blue = _png(tmp_path / "red" / "circle.png", 0), _png(tmp_path / "blue" / "circle.png", 1)
    square = _png(tmp_path / "green" / "square.png", 2)
    array = np.zeros((8, 8, 3), np.uint8)
    with Image.open(square) as opened:
        names = image_names([array, red, blue, str(square), opened])
    assert names == ["image 1", "red/circle.png", "blue/circle.png", "square.png (4)", "square.png (5)"]
    assert image_names([array, array], given={0: "cat", 1: "cat"}) == ["cat (1)", "cat (2)"]
    # Same file name and same folder name: as many folders as it takes.
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x").mkdir(parents=True)
    deep = image_names([tmp_path / "a" / "x" / "p.png", tmp_path / "b" / "x" / "p.png"])
    assert deep == ["a/x/p.png", "b/x/p.png"]
    long = image_names([array], given={0: "d" * 80 + "/photo.png"})[0]
    assert long.endswith("d/photo.png") and long.startswith("…") and len(long) <= 40


def test_the_image_menu_names_files_samples_and_uploads(explainer, tmp_path):
    for colour in ("red", "blue"):
        (tmp_path / colour).mkdir()
    files = [_png(tmp_path / c / "circle.png", i) for i, c in enumerate(("red", "blue"))]
    photo = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    w = DecompositionExplorer(explainer, {"cat": photo, "red circle": files[0], "blue circle": files[1]},
                              texts=POOL, labels=LABELS, cache_dir=tmp_path / "cache")
    assert w.image_names == ["cat", "red circle", "blue circle"]
    assert [label for label, _ in w.controls["image"].options] == ["1: cat", "2: red circle", "3: blue circle"]
    assert len(w.images) == 3 and w.images[1] == files[0]
    w.cancel()
    plain = DecompositionExplorer(explainer, files, texts=POOL, labels=LABELS, cache_dir=tmp_path / "cache")
    assert plain.image_names == ["red/circle.png", "blue/circle.png"]
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    plain.controls["upload"].value = ({"name": "my photo.png", "type": "image/png", "size": len(buffer.getvalue()),
                                       "content": memoryview(buffer.getvalue()),
                                       "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert plain.image_index == 2 and plain.image_names[2] == "my photo.png"
    assert plain.controls["image"].options[2][0] == "3: my photo.png"
    plain.image = photo  # from Python: no file name
    assert plain.image_names[3] == "image 4"
    assert plain.wait(60) and plain.error is None


# --- TEXTSPAN order -----------------------------------------------------------------------------------

def test_the_texts_list_says_its_shares_follow_the_greedy_order(explorer):
    texts = explorer.select_head(5, 1)
    html = explorer.view.texts.value
    assert "In the order TEXTSPAN chose them" in html and "greedily" in html
    positions = [html.index(text.replace("<", "&lt;")) for text, _ in texts]
    assert positions == sorted(positions)  # listed in the engine's (greedy) order, not re-sorted
    assert f"Together: {100 * sum(f for _, f in texts):.1f}%" in html


# --- widths follow the cell ---------------------------------------------------------------------------

def test_figures_have_no_fixed_width_and_titles_sit_below_the_toolbar(explorer):
    view = explorer.view
    for fig in (view.grid, view.bars, view.maps.fig):
        assert fig.layout.width is None
    for fig in (view.grid, view.bars):
        assert fig.layout.autosize is True and fig._config.get("responsive") is True  # redrawn at the box's width
        title = fig.layout.title
        assert title.yref == "container" and (1 - title.y) * fig.layout.height >= 28 and title.xanchor == "left"
        assert fig.layout.margin.t >= (1 - title.y) * fig.layout.height + 18  # room for the title's line
    assert view.bars.layout.legend.yref == "container" and view.bars.layout.legend.y == 0
    texts_box = view.grid_box.children[1]
    assert texts_box.layout.width is None and texts_box.layout.flex.startswith("1 1")
    assert view.grid_box.layout.flex_flow == "row wrap"
