"""DecompositionExplorer driven from Python: what the grid, bars, maps, texts and readout show."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import mimebundle
import torch
from matplotlib.figure import Figure

from clipsurgery_widgets.engine.decomposition import session as session_module
from clipsurgery_widgets.engine.decomposition.ablation import Ablation
from clipsurgery_widgets.engine.decomposition.terms import decompose
from clipsurgery_widgets.engine.decomposition.textspan import (
    encode_text_pool,
    text_span,
)
from clipsurgery_widgets.engine.errors import ImageInputError, UnsupportedModelError
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import preprocess
from clipsurgery_widgets.engine.text.encoding import TEMPLATES
from clipsurgery_widgets.widgets.decomposition import DecompositionExplorer
from clipsurgery_widgets.widgets.state import InvalidStateError

POOL = [f"texture number {i}" for i in range(30)] + ["a <script>alert(1)</script> sign", "a red car", "a dog"]
LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64 + 16 * i, 96, 3), dtype=np.uint8) for i in range(4)]


@pytest.fixture
def explorer(explainer, images, tmp_path):
    w = DecompositionExplorer(explainer, images, texts=POOL, labels=LABELS, cache_dir=tmp_path)
    assert w.wait(60)
    assert w.error is None, w.error
    return w


def reference_decomposition(explainer, rgb):
    model = explainer.model
    return decompose(model, preprocess(rgb, 224, model.mean, model.std, 16), spatial=True)


def probs(embedding, features, scale):
    emb = embedding / embedding.norm()
    return torch.softmax(scale * emb @ features.T, -1).numpy()


def test_grid_and_bars_show_each_heads_contribution_to_the_label(explorer, explainer, images):
    d = reference_decomposition(explainer, images[0])
    feature = explainer.label_features(["cat"], TEMPLATES)[0]
    assert explorer.label == "cat"
    shown = explorer.view.describe()
    np.testing.assert_allclose(shown["grid"]["values"], (d.head_terms()[0] @ feature).numpy(), atol=1e-4)
    np.testing.assert_allclose(shown["bars"]["attention"], (d.layer_terms()[0] @ feature).numpy(), atol=1e-4)
    np.testing.assert_allclose(shown["bars"]["mlp"], (d.mlp[0, 1:] @ feature).numpy(), atol=1e-4)
    np.testing.assert_allclose(explorer.contributions, (d.head_terms()[0] @ feature).numpy(), atol=1e-5)
    explorer.label = "car"
    car = explainer.label_features(["car"], TEMPLATES)[0]
    shown = explorer.view.describe()
    np.testing.assert_allclose(shown["grid"]["values"], (d.head_terms()[0] @ car).numpy(), atol=1e-4)
    assert "car" in shown["grid"]["title"] and "car" in shown["bars"]["title"]
    assert shown["maps"]["titles"][0] == "all heads: car"


def test_selecting_a_head_shows_its_texts_and_map(explorer, explainer):
    texts = explorer.select_head(5, 1)
    pool = encode_text_pool(explainer, POOL, progress=False)
    expected = text_span(explorer.set_terms.attn[:, 5, 1], pool, POOL, m=10, rank=80)
    assert [t for t, _ in texts] == [t for t, _ in expected] and texts
    html = explorer.view.texts.value
    assert "Layer 5, head 1" in html and all(t.replace("<", "&lt;") in html for t, _ in texts[:3])
    shown = explorer.view.describe()
    assert shown["texts"] == {"head": (5, 1), "texts": [t for t, _ in texts], "busy": False}
    assert shown["grid"]["selected"] == (5, 1) and explorer.selected_head == (5, 1)
    assert shown["maps"]["panels"] == 2 and shown["maps"]["heat"][1] is not None
    assert shown["maps"]["heat_max"][1] == pytest.approx(1.0, abs=0.05)
    assert "layer 5, head 1" in shown["maps"]["titles"][1]


def test_clicking_a_cell_inspects_or_ablates(explorer):
    explorer.click_cell(4, 0)
    assert explorer.selected_head == (4, 0) and explorer.ablation.empty
    explorer.controls["mode"].value = "ablate"
    assert explorer.mode == "ablate"
    explorer.click_cell(3, 1)
    assert explorer.ablation.heads == {(3, 1)}
    shown = explorer.view.describe()
    assert shown["grid"]["ablated"] == [(3, 1)] and shown["readout"]["ablated"] == "1 head"
    assert "1 head" in explorer.view.readout.value
    explorer.click_cell(3, 1)
    assert explorer.ablation.empty and explorer.view.describe()["grid"]["ablated"] == []


def test_ablation_toggles_update_the_prediction(explorer, explainer, images):
    before = explorer.prediction
    np.testing.assert_allclose(before["before"], before["after"], atol=1e-6)  # nothing ablated yet
    assert explorer.view.describe()["readout"]["ablated"] == "nothing"
    explorer.toggle_layer(5)
    assert explorer.ablation.attn_layers == {5} and explorer.controls["attn5"].value
    # literal: replace layer 5's attention term by its mean over the image set
    d = reference_decomposition(explainer, images[0])
    set_mean = explorer.set_terms.attn[:, 5].sum(1).mean(0)
    ablated = d.total()[0] - d.layer_terms()[0, 5] + set_mean
    features = explainer.label_features(LABELS, TEMPLATES)
    scale = float(explainer.model.model.logit_scale.detach().exp())
    np.testing.assert_allclose(explorer.prediction["after"], probs(ablated, features, scale), atol=1e-5)
    np.testing.assert_allclose(explorer.prediction["before"], probs(d.total()[0], features, scale), atol=1e-5)
    shown = explorer.view.describe()
    assert shown["readout"]["ablated"] == "attention 5" and "attention 5" in explorer.view.readout.value
    assert shown["bars"]["ablated_layers"] == [5] and shown["bars"]["ablated_mlps"] == []
    explorer.toggle_layer(2, "mlp")
    assert explorer.ablation.mlps == {2} and "MLP 2" in explorer.view.describe()["readout"]["ablated"]
    assert explorer.view.describe()["bars"]["ablated_mlps"] == [2]
    explorer.controls["mlp2"].value = False  # the toggle button is the same state
    assert explorer.ablation.mlps == set()
    explorer.controls["clear"].click()
    assert explorer.ablation.empty and not any(explorer.controls[f"attn{l}"].value for l in range(6))


def test_ablating_everything_predicts_the_set_mean(explorer, explainer):
    explorer.ablation = Ablation.everything(6, 2)
    mean_embedding = explorer.set_terms.embeddings().mean(0)
    features = explainer.label_features(LABELS, TEMPLATES)
    scale = float(explainer.model.model.logit_scale.detach().exp())
    np.testing.assert_allclose(explorer.prediction["after"], probs(mean_embedding, features, scale), atol=1e-5)
    assert all(explorer.controls[f"mlp{l}"].value for l in range(6)) and explorer.controls["embedding"].value


def test_all_but_last_four(explorer):
    explorer.controls["last4"].click()
    assert explorer.ablation.attn_layers == {0, 1}
    assert [explorer.controls[f"attn{l}"].value for l in range(6)] == [True, True, False, False, False, False]


def test_changing_image_and_labels(explorer, explainer, images):
    explorer.image_index = 2
    assert explorer.wait(30) and explorer.error is None
    d = reference_decomposition(explainer, images[2])
    torch.testing.assert_close(explorer.decomposition.attn, d.attn, atol=1e-5, rtol=1e-4)
    assert explorer.view.describe()["maps"]["images"][0] == images[2].shape[:2]
    explorer.labels = "tree, <b>sky</b>"
    assert explorer.wait(30)
    assert list(explorer.controls["label"].options) == ["tree", "<b>sky</b>"] and explorer.label == "tree"
    assert explorer.view.describe()["readout"]["labels"] == ["tree", "<b>sky</b>"]
    html = explorer.view.readout.value
    assert "&lt;b&gt;sky&lt;/b&gt;" in html and "<b>sky</b>" not in html
    with pytest.raises(ValueError, match="image_index"):
        explorer.image_index = 9
    assert explorer.image_index == 2 and explorer.controls["image"].value == 2


def test_setting_an_image_adds_it_to_the_set_and_shows_it(explorer, explainer):
    rgb = np.random.default_rng(7).integers(0, 256, (80, 48, 3), dtype=np.uint8)
    explorer.image = rgb
    assert explorer.wait(60) and explorer.error is None
    assert explorer.image_index == 4 and explorer.controls["image"].value == 4
    assert len(explorer.controls["image"].options) == 5 and len(explorer.images) == 5
    np.testing.assert_array_equal(explorer.image, rgb)
    torch.testing.assert_close(explorer.decomposition.attn, reference_decomposition(explainer, rgb).attn,
                               atol=1e-5, rtol=1e-4)
    assert explorer.set_terms.attn.shape[0] == 5  # the means now include it
    assert explorer.prediction is not None and explorer.view.describe()["maps"]["images"][0] == (80, 48)
    with pytest.raises(ImageInputError):
        explorer.image = np.zeros((3,), np.uint8)
    assert explorer.image_index == 4 and len(explorer.images) == 5


def test_invalid_settings_raise_and_change_nothing(explorer):
    cases = {"opacity": 2.0, "cmap": "no-such-map", "label": "zebra", "selected_head": (9, 0), "mode": "poke",
             "ablation": Ablation(heads={(0, 5)}), "m": 0, "labels": " , ", "heat_side": 4}
    for name, value in cases.items():
        before = getattr(explorer, name)
        with pytest.raises(InvalidStateError, match=name):
            setattr(explorer, name, value)
        assert getattr(explorer, name) == before, name
    explorer.cmap, explorer.opacity = "viridis", 0.3
    shown = explorer.view.describe()["maps"]
    assert shown["opacity"][0] == 0.3 and shown["colorscale"][0][-1][1] == "rgb(253,231,36)"  # viridis' end


def test_errors_are_shown_and_the_widget_keeps_working(explorer):
    explorer.controls["labels"].value = " , "  # typed in the box: refused, shown, box put back
    assert explorer.error is not None and "at least one label" in explorer.error
    assert explorer.controls["labels"].value == "cat, dog, car" and explorer.labels == LABELS
    explorer.labels = "cat, dog"
    assert explorer.wait(30) and explorer.error is None
    explorer.mode = "inspect"
    explorer.click_cell(9, 0)  # the route a click on the grid takes
    assert "no head (9, 0)" in explorer.error
    explorer.click_cell(2, 1)
    assert explorer.selected_head == (2, 1)


def test_constructor_refusals(explainer, tiny_resnet):
    with pytest.raises(ImageInputError, match="No images"):
        DecompositionExplorer(explainer, [], texts=POOL)
    with pytest.raises(UnsupportedModelError, match="vision transformers"):
        DecompositionExplorer(Explainer(tiny_resnet, cache_dir=False), [np.zeros((8, 8, 3), np.uint8)], texts=POOL)
    with pytest.raises(InvalidStateError, match="label"):
        DecompositionExplorer(explainer, [np.zeros((8, 8, 3), np.uint8)], texts=POOL, labels=LABELS, label="zebra")


def test_stopped_pass_resumes(explainer, images, tmp_path, monkeypatch):
    original = session_module.decompose_images
    made = threading.Event()
    holder = {}

    def stop_after_two(*args, on_image=None, **kwargs):
        def hook(done, total):
            on_image(done, total)
            if done == 2 and "stopped" not in holder:
                made.wait(30)
                holder["widget"].wait(30, name="image")  # so that the image's status line comes first
                holder["stopped"] = True
                holder["widget"].stop()  # what the Stop button does mid-pass
        return original(*args, on_image=hook, **kwargs)

    monkeypatch.setattr(session_module, "decompose_images", stop_after_two)
    w = holder["widget"] = DecompositionExplorer(explainer, images, texts=POOL, labels=LABELS, cache_dir=tmp_path)
    made.set()
    assert w.wait(60)
    assert holder["stopped"] and "Stopped" in w.status and "resume" in w.status and w.set_terms is None
    assert w.prediction is None and w.view.describe()["readout"] is None
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    w.resume()
    assert w.wait(60)
    assert w.error is None and w.set_terms.attn.shape[0] == 4 and w.prediction is not None


def test_shipped_pool_and_static_figure(explainer, images, tmp_path):
    w = DecompositionExplorer(explainer, images[:2], labels=LABELS, cache_dir=tmp_path)
    w.wait(60)
    texts = w.select_head(5, 0)
    assert texts and all(isinstance(t, str) for t, _ in texts)
    w.toggle_head(5, 1)
    fig = w.figure()
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("cat" in t for t in titles) and any(t.startswith("layer 5, head 0") for t in titles)
    assert "image/png" in mimebundle(w)
